from __future__ import annotations

from fastapi import APIRouter, HTTPException

from app.api.deps import ReadSessionDep
from app.api.schemas import ErrorOut, JobOut
from app.crud import get_job, record_for_job

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobOut, responses={404: {"model": ErrorOut}})
def read_job(job_id: str, session: ReadSessionDep) -> JobOut:
    job = get_job(session, job_id=job_id)
    if job is None:
        raise HTTPException(status_code=404, detail=f"job {job_id} not found")
    return JobOut.from_row(job, record_for_job(session, job_id=job_id))
