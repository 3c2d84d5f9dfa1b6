"""`enhancer ingest SOURCE...`: e-mails from files, mbox, Maildir or IMAP into the service.

Each e-mail goes to a running service (`POST /v1/emails` at `--url`) or, with `--local`, straight
into the database through the same code the API runs (split, store, publish). Idempotency is the
service's: an e-mail already ingested maps to its stored e-mail and jobs, so re-running a source is
safe. A message the service refuses (4xx) is reported and skipped; an unreachable or overloaded
service (connection error, 429, 5xx) is retried, then ends the run, so nothing is skipped that a
later run would not retry.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from app.mail.sources import (
    IMAP_PASSWORD_ENV,
    IngestState,
    RawEmail,
    SourceError,
    file_emails,
    imap_emails,
    parse_imap_url,
    since_filter,
)

RETRIES = 4


class Refused(Exception):
    """The service refused this e-mail for good (4xx): report it, skip it."""


class Unavailable(Exception):
    """The service could not take the e-mail now (down, 429, 5xx): stop the run, retry later."""


@dataclass(frozen=True)
class Delivered:
    stories: int
    new_jobs: int
    replayed: bool


class HttpDelivery:
    def __init__(self, url: str, api_key: str, timeout: float = 60.0) -> None:
        import httpx

        self._client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, headers={"X-API-Key": api_key})

    def deliver(self, raw: bytes) -> Delivered:
        import httpx

        for attempt in range(RETRIES):
            try:
                response = self._client.post(
                    "/v1/emails", content=raw, headers={"Content-Type": "message/rfc822"}
                )
            except httpx.HTTPError as error:
                reason = f"service unreachable: {error}"
            else:
                if response.status_code == 202:
                    body = response.json()
                    return Delivered(
                        stories=len(body["stories"]),
                        new_jobs=sum(1 for story in body["stories"] if story.get("job_created")),
                        replayed=response.headers.get("Idempotent-Replayed") == "true",
                    )
                reason = f"HTTP {response.status_code}: {_message(response)}"
                if response.status_code < 500 and response.status_code != 429:
                    raise Refused(reason)
                if response.status_code == 429:
                    time.sleep(min(float(response.headers.get("Retry-After", "5")), 30.0))
            if attempt < RETRIES - 1:
                time.sleep(2**attempt)
        raise Unavailable(reason)

    def close(self) -> None:
        self._client.close()


def _message(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("message") or body.get("detail"))[:300]


class LocalDelivery:
    """The API's path without HTTP: prepare_email, store_submission in one transaction, publish."""

    def __init__(self) -> None:
        from app.api.submissions import QueueDepth
        from app.core.config import get_settings

        self.settings = get_settings()
        self.queue_depth = QueueDepth()

    def deliver(self, raw: bytes) -> Delivered:
        from app.api.submissions import EmailSubmission, QueueFull, Submission, store_submission
        from app.core.broker import enqueue_jobs
        from app.core.db import write_session_scope
        from app.mail import EmailUnreadable
        from app.mail.intake import prepare_email

        if len(raw) > self.settings.max_email_bytes:
            raise Refused(f"larger than ENHANCER_MAX_EMAIL_BYTES ({self.settings.max_email_bytes} bytes)")
        try:
            prepared = prepare_email(raw)
        except EmailUnreadable as error:
            raise Refused(f"not a readable newsletter e-mail: {error}") from None
        submission = Submission(prepared.items, email=EmailSubmission(prepared.fields, prepared.placements))
        try:
            with write_session_scope() as session:
                accepted = store_submission(session, self.settings, self.queue_depth, submission)
        except QueueFull as full:
            raise Unavailable(str(full)) from None
        enqueue_jobs(accepted.created)  # a failed send is the reconciler's: the jobs are committed
        return Delivered(len(accepted.stories), len(accepted.created), accepted.replayed)

    def close(self) -> None:
        pass


@dataclass
class Summary:
    emails: int = 0
    stories: int = 0
    new_jobs: int = 0
    duplicates: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [
            f"e-mails read: {self.emails}",
            f"stories: {self.stories}",
            f"new jobs: {self.new_jobs}",
            f"duplicates skipped (already ingested): {self.duplicates}",
            f"failures: {len(self.failures)}",
        ]
        reasons = Counter(reason for _, reason in self.failures)
        lines += [f"  {label}: {reason}" for label, reason in self.failures[:50]]
        if len(self.failures) > 50:
            lines.append(f"  ... and {len(self.failures) - 50} more ({len(reasons)} distinct reasons)")
        return lines


def _password() -> str:
    password = os.environ.get(IMAP_PASSWORD_ENV)
    if password:
        return password
    if not sys.stdin.isatty():
        raise SourceError(f"set {IMAP_PASSWORD_ENV}: no terminal to ask for the IMAP password")
    return getpass.getpass("IMAP password: ")


def _emails(args: argparse.Namespace, state: IngestState | None, progress: Any) -> Iterator[RawEmail]:
    for source in args.sources:
        if source.lower().startswith("imap://"):
            url = parse_imap_url(source, starttls=args.starttls)
            assert state is not None
            yield from imap_emails(
                url,
                _password(),
                state,
                since=args.since,
                mark_seen=args.mark_seen,
                starttls=args.starttls,
                cafile=args.cafile,
                count=lambda n: setattr(progress, "total", (progress.total or 0) + n),
            )
        else:
            yield from since_filter(file_emails(Path(source).expanduser()), args.since)


def ingest(
    args: argparse.Namespace, delivery: HttpDelivery | LocalDelivery, state: IngestState | None
) -> int:
    from tqdm import tqdm

    summary = Summary()
    progress = tqdm(desc="ingest", unit="e-mail", disable=args.quiet, file=sys.stderr)
    stopped: str | None = None
    try:
        for message in _emails(args, state, progress):
            summary.emails += 1
            progress.update(1)
            if message.raw is None:
                summary.failures.append((message.label, message.error or "unreadable"))
                continue
            try:
                delivered = delivery.deliver(message.raw)
            except Refused as refused:
                summary.failures.append((message.label, str(refused)))
                message.accepted()  # refused for good: a later run would be refused again
                continue
            except Unavailable as unavailable:
                stopped = f"stopped at {message.label}: {unavailable}"
                break
            message.accepted()
            summary.stories += delivered.stories
            summary.new_jobs += delivered.new_jobs
            summary.duplicates += delivered.replayed
    except SourceError as error:
        stopped = str(error)
    finally:
        progress.close()
        delivery.close()
    for line in summary.lines():
        print(line)
    if stopped:
        print(f"error: {stopped}; run again to resume", file=sys.stderr)
        return 1
    return 1 if summary.failures else 0


def _api_key() -> str:
    key = os.environ.get("ENHANCER_API_KEY")
    if key:
        return key
    from app.core.config import get_settings

    path = get_settings().api_key_file
    try:
        return path.read_text(encoding="utf-8").split(",")[0].strip()
    except OSError:
        raise SourceError(
            f"no API key: set ENHANCER_API_KEY or start the service once to create {path}"
        ) from None


def cmd_ingest(args: argparse.Namespace) -> int:
    from app.core.config import get_settings
    from app.core.db import use_data_dir
    from app.core.migrate import migrate_data_dir

    use_data_dir(args.data_dir)
    settings = get_settings()
    try:
        needs_state = any(source.lower().startswith("imap://") for source in args.sources)
        state = IngestState(settings.data_dir / "ingest-state.json") if needs_state else None
        if args.local:
            migrate_data_dir()
            delivery: HttpDelivery | LocalDelivery = LocalDelivery()
        else:
            delivery = HttpDelivery(args.url, _api_key())
    except SourceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return ingest(args, delivery, state)


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    command = sub.add_parser(
        "ingest",
        help="Ingest newsletter e-mails: .eml files, directories, mbox, Maildir, imap://user@host/Folder.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.set_defaults(handler=cmd_ingest)
    command.add_argument("sources", nargs="+", metavar="SOURCE")
    command.add_argument("--data-dir", help="data directory (default: $ENHANCER_DATA_DIR or ./data)")
    target = command.add_mutually_exclusive_group()
    target.add_argument(
        "--url", default="http://127.0.0.1:8000", help="the running service (default: %(default)s)"
    )
    target.add_argument("--local", action="store_true", help="write to the data dir's database directly")
    command.add_argument("--since", type=_day, help="only e-mails sent on or after this date (YYYY-MM-DD)")
    command.add_argument(
        "--mark-seen", action="store_true", help="IMAP: flag each e-mail \\Seen once the service accepted it"
    )
    command.add_argument(
        "--starttls", action="store_true", help="IMAP: STARTTLS on port 143 instead of TLS on 993"
    )
    command.add_argument(
        "--cafile", help="IMAP: CA certificate to verify the server with (a self-signed server)"
    )
    command.add_argument("--quiet", action="store_true", help="no progress bar")
