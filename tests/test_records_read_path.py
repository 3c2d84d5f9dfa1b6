"""One read path for records (issue 14): GET /v1/records, the export and the review page filter topic and
entity on the effective metadata (a reviewer's correction wins over the model output), paged in SQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.db import read_session_scope, reset_caches
from app.crud import as_utc
from app.models import Record
from app.record_query import effective_metadata
from tests.conftest import API_HEADERS, TEST_API_KEY
from tests.export_helpers import insert_records

CORRECTION = {
    "summary": "A reviewer rewrote this summary after reading the item.",
    "key_topics": ["Corrected Topic"],
    "entities": ["Corrected Entity"],
    "categories": ["research"],
    "sentiment": "neutral",
    "urgency_level": "low",
    "relevance_score": 4,
    "action_items": [],
}


@pytest.fixture
def api(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, database_url: str | None
) -> Iterator[tuple[TestClient, list[str]]]:
    monkeypatch.setenv("ENHANCER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ENHANCER_API_KEYS", TEST_API_KEY)
    if database_url:
        monkeypatch.setenv("DATABASE_URL", database_url)
    else:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    reset_caches()
    ids = insert_records(60, weeks=3, seed=14)
    from app.main import create_app

    with TestClient(create_app(), headers=API_HEADERS, raise_server_exceptions=False) as client:
        yield client, ids
    reset_caches()


def _rows() -> list[dict[str, Any]]:
    """Every record as (id, date, source, effective metadata), newest first (the API's order)."""
    with read_session_scope() as session:
        records = session.scalars(select(Record)).all()
        rows = [
            {
                "id": r.id, "date": as_utc(r.date), "source": r.source,
                "meta": effective_metadata(r.data, r.corrected_data),
            }
            for r in records
        ]  # fmt: skip
    return sorted(rows, key=lambda r: (r["date"], r["id"]), reverse=True)


def _walk(client: TestClient, limit: int, **params: str) -> tuple[list[str], int]:
    """Every page of GET /v1/records for `params`; checks each page's shape and total."""
    ids: list[str] = []
    totals: set[int] = set()
    offset = 0
    while True:
        response = client.get("/v1/records", params={**params, "limit": limit, "offset": offset})
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"items", "total", "limit", "offset"}
        assert page["limit"] == limit and page["offset"] == offset and len(page["items"]) <= limit
        totals.add(page["total"])
        ids += [item["id"] for item in page["items"]]
        offset += limit
        if offset >= page["total"]:
            break
    assert len(totals) == 1, f"total changed between pages: {totals}"
    return ids, totals.pop()


def _export_ids(client: TestClient, **params: str) -> set[str]:
    response = client.get("/v1/export", params={"format": "jsonl", **params})
    assert response.status_code == 200, response.text
    return {json.loads(line)["id"] for line in response.text.splitlines()}


def _with(rows: list[dict[str, Any]], field: str, value: str) -> list[str]:
    return [r["id"] for r in rows if value.casefold() in {v.casefold() for v in r["meta"][field]}]


def test_records_filter_on_the_correction_page_in_sql_and_agree_with_export(
    api: tuple[TestClient, list[str]],
) -> None:
    client, _ = api
    before = _rows()
    corrected = next(r for r in before if r["meta"]["entities"])  # has a model topic and entity
    model_topic, model_entity = corrected["meta"]["key_topics"][0], corrected["meta"]["entities"][0]
    saved = client.put(f"/v1/records/{corrected['id']}/correction", json=CORRECTION)
    assert saved.status_code == 200, saved.text
    rows = _rows()

    for field, param, new, old in (
        ("key_topics", "topic", "Corrected Topic", model_topic),
        ("entities", "entity", "Corrected Entity", model_entity),
    ):
        # The correction's value finds the record, case-insensitively; the model's no longer does.
        ids, total = _walk(client, 5, **{param: new.upper()})
        assert ids == [corrected["id"]] and total == 1
        ids, total = _walk(client, 3, **{param: old})
        expected = _with(rows, field, old)
        assert corrected["id"] not in ids
        assert ids == expected and total == len(expected) and expected, (param, old)
        # The export reads the same records for the same filter.
        assert _export_ids(client, **{param: old}) == set(expected)
        assert _export_ids(client, **{param: new}) == {corrected["id"]}

    # Unfiltered pages: every record once, newest first; an offset past the end is an empty page.
    ids, total = _walk(client, 7)
    assert ids == [r["id"] for r in rows] and total == len(rows) == 60
    past = client.get("/v1/records", params={"offset": 500}).json()
    assert past["items"] == [] and past["total"] == 60

    # Filters combine with AND, also with the source filter, the topic and the entity.
    source = "The Batch"
    ids, total = _walk(client, 2, source=source, topic=model_topic)
    expected = _with([r for r in rows if r["source"] == source], "key_topics", model_topic)
    assert ids == expected and total == len(expected)

    # The review page lists the corrected record under the corrected topic, and only it.
    review = client.get(
        "/review", params={"api_key": TEST_API_KEY, "topic": "corrected topic"}, follow_redirects=True
    )
    assert review.status_code == 200
    listed = {i for i in (r["id"] for r in rows) if f'data-record-id="{i}"' in review.text}
    assert listed == {corrected["id"]}


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"offset": -1}, "offset"),
        ({"offset": 10**30}, "offset"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"topic": "x" * 201}, "topic"),
        ({"topic": "a\x00b"}, "topic"),
        ({"entity": "a\x00b"}, "entity"),
        ({"since": "2025-02-01", "until": "2025-01-01"}, "since"),
    ],
)
def test_bad_record_query_params_get_a_clear_422(
    api: tuple[TestClient, list[str]], params: dict[str, Any], name: str
) -> None:
    client, _ = api
    response = client.get("/v1/records", params=params)
    assert response.status_code == 422, response.text
    assert name in response.json()["message"]
