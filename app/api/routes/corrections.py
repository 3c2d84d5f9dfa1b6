"""PUT/DELETE /v1/records/{id}/correction: reviewer labels, validated by the metadata contract."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException
from fastapi.responses import JSONResponse

from app.api.deps import SessionDep
from app.api.schemas import ErrorOut, RecordOut
from app.contract import generated_json_schema
from app.corrections import CorrectionInvalid, clear_correction, save_correction, validate_correction
from app.crud import get_record

router = APIRouter(prefix="/records", tags=["records"])
_SCHEMA = generated_json_schema()
_BODY = "Every generated field (see `enhancer schema --generated`)."


@router.put(
    "/{record_id}/correction",
    response_model=RecordOut,
    responses={400: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _SCHEMA}}}},
)
def put_correction(
    record_id: str,
    session: SessionDep,
    body: Annotated[dict[str, Any], Body(description=_BODY)],
) -> RecordOut | JSONResponse:
    """Store a corrected copy of the generated fields and mark the record reviewed.

    The model's output stays in `metadata`; the correction is `corrected_metadata` and wins in exports.
    """
    record = get_record(session, record_id=record_id)
    if record is None:
        raise HTTPException(status_code=404, detail=f"record {record_id} not found")
    try:
        metadata = validate_correction(body)
    except CorrectionInvalid as invalid:
        detail = [{"loc": ["body", e.field], "msg": e.message, "type": "value_error"} for e in invalid.errors]
        return JSONResponse({"detail": detail, "message": str(invalid)}, status_code=422)
    save_correction(session, record=record, metadata=metadata)
    session.commit()
    return RecordOut.from_row(record)


@router.delete("/{record_id}/correction", response_model=RecordOut, responses={404: {"model": ErrorOut}})
def delete_correction(record_id: str, session: SessionDep) -> RecordOut:
    """Drop the correction: the record is unreviewed again and exports use the model output."""
    record = get_record(session, record_id=record_id)
    if record is None:
        raise HTTPException(status_code=404, detail=f"record {record_id} not found")
    clear_correction(session, record=record)
    session.commit()
    return RecordOut.from_row(record)
