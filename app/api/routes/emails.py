from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from app.api.deps import ReadSessionDep, SubmissionWriterDep
from app.api.routes.enhance import queue_full_error
from app.api.schemas import EmailHeaderOut, EmailOut, ErrorOut, JobRef, StoryOut
from app.api.submissions import EmailSubmission, QueueFull, StoryRef, Submission
from app.core.db import read_session_scope
from app.core.logging import current_request_id
from app.crud import SubmittedStory, email_stories, get_email
from app.mail import EmailUnreadable
from app.mail.intake import prepare_email
from app.models import Email

router = APIRouter(prefix="/emails", tags=["emails"])

EMAIL_MEDIA_TYPE = "message/rfc822"


def _email_out(email: Email, stories: list[StoryRef]) -> EmailOut:
    refs = [
        StoryOut(
            item_id=story.item_id,
            headline=story.headline,
            url=story.url,
            section=story.section,
            position=story.position,
            sponsored=story.sponsored,
            job=JobRef(id=story.job[0], status=story.job[1]) if story.job else None,
            job_created=story.job_created,
        )
        for story in stories
    ]
    return EmailOut(
        email=EmailHeaderOut.from_row(email),
        stories=refs,
        jobs=[ref.job for ref in refs if ref.job is not None],
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EmailOut,
    responses={
        413: {"model": ErrorOut, "description": "The e-mail is larger than ENHANCER_MAX_EMAIL_BYTES"},
        415: {"model": ErrorOut, "description": f"The body is not sent as {EMAIL_MEDIA_TYPE}"},
        422: {"model": ErrorOut, "description": "The bytes hold no newsletter text (the message says why)"},
        429: {
            "model": ErrorOut,
            "description": "Too many queued jobs, or over the API key's rate limit; see Retry-After",
        },
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {EMAIL_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def post_email(request: Request, response: Response, writer: SubmissionWriterDep) -> EmailOut:
    """One raw newsletter e-mail (RFC 5322): split into stories, one enhancement job per story.

    Idempotent by Message-ID (or the sha256 of the bytes when there is none): the same e-mail
    posted again answers with the same e-mail, stories and jobs (`Idempotent-Replayed: true`).
    Sponsor blocks are stored and listed, marked `sponsored`, and get no job."""
    media_type = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media_type != EMAIL_MEDIA_TYPE:
        raise HTTPException(
            status_code=415,
            detail=f"send the raw e-mail as Content-Type: {EMAIL_MEDIA_TYPE} (got {media_type or 'none'})",
        )
    raw = await request.body()  # the size limit is app.api.limits.BodySizeLimit's, per path
    try:
        prepared = await run_in_threadpool(prepare_email, raw)
    except EmailUnreadable as unreadable:
        detail = f"not a readable newsletter e-mail: {unreadable}"
        raise HTTPException(status_code=422, detail=detail) from None
    submission = Submission(
        prepared.items,
        email=EmailSubmission(prepared.fields, prepared.placements),
        request_id=current_request_id(),
    )
    try:
        accepted = await writer.submit(submission)
    except QueueFull as full:
        raise queue_full_error(full) from None
    if accepted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/emails/{accepted.email_id}"
    email = await run_in_threadpool(_read_email, accepted.email_id or "")
    if email is None:  # committed before the answer: only a concurrent delete could do this
        raise HTTPException(status_code=404, detail=f"e-mail {accepted.email_id} not found")
    return _email_out(email, accepted.stories)


def _read_email(email_id: str) -> Email | None:
    with read_session_scope() as session:
        email = get_email(session, email_id=email_id)
        if email is not None:
            session.expunge(email)
        return email


@router.get("/{email_id}", response_model=EmailOut, responses={404: {"model": ErrorOut}})
def read_email(email_id: str, session: ReadSessionDep) -> EmailOut:
    """An e-mail posted to /v1/emails, its stories in reading order and each story's job status."""
    email = get_email(session, email_id=email_id)
    if email is None:
        raise HTTPException(status_code=404, detail=f"e-mail {email_id} not found")
    stories: list[SubmittedStory] = email_stories(session, email_id=email.id)
    return _email_out(email, [StoryRef.of(story) for story in stories])
