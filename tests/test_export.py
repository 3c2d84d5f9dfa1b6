"""Exports on 5,000 generated records: NotebookLM limits, well-formed Markdown, JSONL/CSV round trips."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from markdown_it import MarkdownIt
from sqlalchemy import select

from app.contract import GeneratedMetadata, NewsMetadata
from app.core.db import reset_caches, session_scope
from app.corrections import save_correction, validate_correction
from app.crud import as_utc
from app.export import ExportTooLarge, NotebookLimits, open_export
from app.export.notebooklm import INDEX_NAME
from app.export.rows import CSV_COLUMNS
from app.models import Record
from app.record_query import RecordFilter, effective_metadata
from tests.conftest import API_HEADERS, TEST_API_KEY
from tests.export_helpers import insert_records

ENV_KEYS = ("ENHANCER_DATA_DIR", "DATABASE_URL", "ENHANCER_API_KEYS")
RECORDS = 5000
CORRECTED = 25
ITEM_FIELDS = ("Source", "Date", "Summary", "Topics", "Entities", "Categories", "Sentiment", "Urgency",
               "Relevance", "Action items")  # fmt: skip


def _use(data_dir: Path, database_url: str | None = None) -> None:
    os.environ["ENHANCER_DATA_DIR"] = str(data_dir)
    os.environ["ENHANCER_API_KEYS"] = TEST_API_KEY
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    else:
        os.environ.pop("DATABASE_URL", None)
    reset_caches()


def _correction(index: int) -> dict[str, Any]:
    return {
        "summary": f"Corrected summary number {index} written by a reviewer.",
        "key_topics": ["reviewed topic", "open source"],
        "entities": ["Hugging Face"],
        "categories": ["open_source"],
        "sentiment": "positive",
        "urgency_level": "high",
        "relevance_score": 9,
        "action_items": [f"Follow up on correction {index}"],
    }


@pytest.fixture(scope="module")
def big_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """5,000 records over 26 weeks and 7 sources; the first CORRECTED carry a reviewer correction."""
    saved = {key: os.environ.get(key) for key in ENV_KEYS}
    data_dir = tmp_path_factory.mktemp("export-data")
    _use(data_dir)
    started = time.perf_counter()
    ids = insert_records(RECORDS, weeks=26)
    seconds = time.perf_counter() - started
    with session_scope() as session:
        for index, record_id in enumerate(ids[:CORRECTED]):
            record = session.get(Record, record_id)
            save_correction(session, record=record, metadata=validate_correction(_correction(index)))
    yield {
        "data_dir": data_dir,
        "ids": ids,
        "corrected": set(ids[:CORRECTED]),
        "insert_seconds": seconds,
    }
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset_caches()


@pytest.fixture
def db(big_db: dict[str, Any]) -> dict[str, Any]:
    _use(big_db["data_dir"])
    return big_db


def _db_rows() -> dict[str, dict[str, Any]]:
    with session_scope() as session:
        return {
            r.id: {
                "source": r.source, "date": as_utc(r.date), "data": r.data, "corrected": r.corrected_data,
                "reviewed": r.reviewed, "content": r.item.content, "subject": r.item.subject,
            }
            for r in session.scalars(select(Record))
        }  # fmt: skip


def _zip(filters: RecordFilter = RecordFilter(), limits: NotebookLimits | None = None) -> zipfile.ZipFile:
    stream = open_export("notebooklm", filters, limits=limits)
    return zipfile.ZipFile(io.BytesIO(b"".join(stream.chunks)))


# Markdown structure ------------------------------------------------------------------------

_MD = MarkdownIt("commonmark")


def _plain(inline_token: Any) -> str:
    return "".join(c.content for c in inline_token.children if c.type in ("text", "code_inline"))


def parse_markdown(text: str) -> list[dict[str, Any]]:
    """Check a document's structure and return its items: headline plus `Key: value` fields.

    One h1 first; headings never skip a level going down; every h4 (an item) is followed by a
    bullet list holding exactly the item fields; no raw HTML, code or non-http link leaks in.
    """
    tokens = _MD.parse(text)
    headings = [int(t.tag[1]) for t in tokens if t.type == "heading_open"]
    assert headings and headings[0] == 1 and headings.count(1) == 1, "one h1, first"
    for previous, level in itertools.pairwise(headings):
        assert level <= previous + 1, f"heading jumps from h{previous} to h{level}"
    forbidden = {
        "html_block",
        "html_inline",
        "code_block",
        "fence",
        "code_inline",
        "image",
        "hr",
        "blockquote_open",
    }
    for token in tokens:
        assert token.type not in forbidden, f"unexpected {token.type}: {token.content[:80]!r}"
        for child in token.children or []:
            assert child.type not in forbidden, f"unexpected {child.type} in {token.content[:80]!r}"
            if child.type == "link_open":
                assert child.attrs["href"].startswith(("http://", "https://")), child.attrs
    items: list[dict[str, Any]] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.type == "heading_open" and token.tag == "h4":
            item = {"headline": _plain(tokens[index + 1]), "fields": {}}
            assert tokens[index + 3].type == "bullet_list_open", (
                f"item {item['headline']!r} has no field list"
            )
            index += 4
            depth, key = 1, None
            while depth:
                token = tokens[index]
                if token.type == "bullet_list_open":
                    depth += 1
                elif token.type == "bullet_list_close":
                    depth -= 1
                elif token.type == "inline":
                    line = _plain(token)
                    if depth == 1:
                        key, _, value = line.partition(":")
                        item["fields"][key] = value.strip()
                    else:
                        assert key == "Action items", f"nested list under {key!r}"
                        if not isinstance(item["fields"][key], list):
                            item["fields"][key] = []
                        item["fields"][key].append(line)
                index += 1
            missing = [name for name in ITEM_FIELDS if name not in item["fields"]]
            assert not missing, f"item {item['headline']!r} lacks {missing}"
            items.append(item)
            continue  # index is already past the item's list
        index += 1
    return items


def _item_count(text: str) -> int:
    """Items by their headings: the cheap count for tests whose structure check is elsewhere."""
    return sum(1 for line in text.splitlines() if line.startswith("#### "))


def _words(text: str) -> int:
    return len(text.split())


def _check_limits(archive: zipfile.ZipFile, limits: NotebookLimits) -> list[str]:
    names = archive.namelist()
    assert INDEX_NAME in names
    assert len(names) <= limits.max_files
    assert len(set(names)) == len(names)
    for name in names:
        words = _words(archive.read(name).decode("utf-8"))
        assert words < limits.max_words, f"{name}: {words} words"
    return [n for n in names if n != INDEX_NAME]


# Tests -----------------------------------------------------------------------------------------


def test_notebooklm_export_of_5000_records_respects_limits_and_keeps_every_item(db: dict[str, Any]) -> None:
    started = time.perf_counter()
    archive = _zip()
    seconds = time.perf_counter() - started
    files = _check_limits(archive, NotebookLimits())
    assert (NotebookLimits().max_files, NotebookLimits().max_words) == (50, 500_000)
    rows = _db_rows()
    headlines: list[str] = []
    for name in files:
        items = parse_markdown(archive.read(name).decode("utf-8"))
        assert items, f"{name} is empty"
        headlines += [item["headline"] for item in items]
    # Every record exactly once, headline text intact after escaping (brackets, #, backticks...).
    assert sorted(headlines) == sorted(" ".join(r["data"]["headline"].split()) for r in rows.values())
    index = archive.read(INDEX_NAME).decode("utf-8")
    parse_markdown(index)
    for name in files:
        assert f"| {name} |" in index
    assert f"{RECORDS} items in {len(files)} source files" in index
    # 26 weeks of data fit one file per week.
    assert "layout: one file per week" in index
    assert 26 <= len(files) <= 27
    print(f"\nnotebooklm export of {RECORDS} records: {seconds:.2f} s, {len(files)} files "
          f"(insert {db['insert_seconds']:.2f} s)")  # fmt: skip


def test_more_weeks_than_files_merges_adjacent_weeks(db: dict[str, Any]) -> None:
    limits = NotebookLimits(max_files=8, max_words=100_000)  # 26 weeks of ~16,000 words
    archive = _zip(limits=limits)
    files = _check_limits(archive, limits)
    assert len(files) <= 7
    index = archive.read(INDEX_NAME).decode("utf-8")
    assert "layout: adjacent weeks merged" in index
    spans = []
    total = 0
    for name in files:
        text = archive.read(name).decode("utf-8")
        total += _item_count(text)
        weeks = [line.split()[2] for line in text.splitlines() if line.startswith("## Week ")]
        assert weeks == sorted(weeks) and len(weeks) == len(set(weeks)), name
        spans.append(weeks)
    assert total == RECORDS
    flat = [week for span in spans for week in span]
    assert flat == sorted(flat) and len(flat) == len(set(flat)) >= 26  # adjacent, in order, none twice
    assert any(len(span) > 1 for span in spans)


def test_week_too_big_for_one_file_is_split_by_source(db: dict[str, Any]) -> None:
    limits = NotebookLimits(max_words=12_000)  # a week here is about 16,000 words
    filters = RecordFilter(since=datetime(2025, 2, 3, tzinfo=UTC), until=datetime(2025, 4, 7, tzinfo=UTC))
    archive = _zip(filters, limits=limits)
    files = _check_limits(archive, limits)
    assert "layout: one file per week" in archive.read(INDEX_NAME).decode("utf-8")
    assert [name for name in files if "-part2" in name], files
    sources_by_week: dict[str, list[str]] = {}
    total = 0
    for name in files:
        text = archive.read(name).decode("utf-8")
        total += _item_count(text)
        weeks = [line.split()[2] for line in text.splitlines() if line.startswith("## Week ")]
        assert len(weeks) == 1, f"{name}: a split week shares its file with no other week"
        sources = [
            line.removeprefix("### Source: ") for line in text.splitlines() if line.startswith("### Source: ")
        ]
        listed = sources_by_week.setdefault(weeks[0], [])
        listed += [s for s in sources if not listed or listed[-1] != s]  # a source cut in two continues
    # Parts of a week hold its sources in order, each source in one run.
    for week, sources in sources_by_week.items():
        assert sources == sorted(set(sources), key=str.casefold), (week, sources)
    rows = _db_rows()
    assert total == sum(1 for r in rows.values() if filters.since <= r["date"] < filters.until)


def test_impossible_limits_fail_before_any_byte_with_a_clear_message(db: dict[str, Any]) -> None:
    with pytest.raises(ExportTooLarge, match="narrow the export"):
        open_export("notebooklm", RecordFilter(), limits=NotebookLimits(max_files=4, max_words=9_000))


def test_markdown_export_is_well_formed_and_corrections_win(db: dict[str, Any]) -> None:
    stream = open_export("markdown", RecordFilter(source="The Batch"))
    text = b"".join(stream.chunks).decode("utf-8")
    items = parse_markdown(text)
    rows = {i: r for i, r in _db_rows().items() if r["source"] == "The Batch"}
    assert len(items) == len(rows)
    by_headline = {" ".join(r["data"]["headline"].split()): r for r in rows.values()}
    checked_corrected = 0
    for item in items:
        row = by_headline[item["headline"]]
        effective = effective_metadata(row["data"], row["corrected"])
        assert item["fields"]["Summary"] == " ".join(effective["summary"].split())
        assert item["fields"]["Topics"] == ", ".join(" ".join(t.split()) for t in effective["key_topics"])
        assert item["fields"]["Sentiment"] == effective["sentiment"]
        assert item["fields"]["Urgency"] == effective["urgency_level"]
        actions = item["fields"]["Action items"]
        assert actions == ([" ".join(a.split()) for a in effective["action_items"]] or "none")
        assert item["fields"]["Source"].startswith(row["source"])
        if row["corrected"]:
            checked_corrected += 1
            assert item["fields"]["Summary"].startswith("Corrected summary number")
            assert "Reviewed" in item["fields"]
    assert checked_corrected == sum(1 for i in db["corrected"] if i in rows) > 0


def _traced_export(fmt: str, filters: RecordFilter, out: Path) -> tuple[int, int]:
    """(bytes written, peak bytes traced) of one export streamed to a file."""
    tracemalloc.start()
    try:
        size = 0
        with out.open("wb") as handle:
            for chunk in open_export(fmt, filters).chunks:
                handle.write(chunk)
                size += len(chunk)
        return size, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_exports_stream_in_bounded_memory(db: dict[str, Any], tmp_path: Path) -> None:
    """Peak memory does not grow with the number of records: 6x the records, about the same peak."""
    few = RecordFilter(until=datetime(2025, 1, 20, tzinfo=UTC))  # 2 of the 26 weeks
    many = RecordFilter(until=datetime(2025, 3, 31, tzinfo=UTC))  # 12 weeks (tracing is slow)
    for fmt in ("jsonl", "notebooklm"):
        _traced_export(fmt, few, tmp_path / "warm-up")  # first-use caches (imports, compiled SQL)
        few_size, few_peak = _traced_export(fmt, few, tmp_path / f"few.{fmt}")
        many_size, many_peak = _traced_export(fmt, many, tmp_path / f"many.{fmt}")
        assert many_size > 4 * few_size
        assert many_peak < 2 * few_peak, f"{fmt}: peak {few_peak} -> {many_peak}, {few_size} -> {many_size} B"


def test_jsonl_round_trips_every_field(db: dict[str, Any], tmp_path: Path) -> None:
    stream = open_export("jsonl", RecordFilter())
    chunks = list(stream.chunks)
    assert len(chunks) > 10, "jsonl streams in chunks"
    lines = b"".join(chunks).splitlines()
    records = [json.loads(line) for line in lines]
    rows = _db_rows()
    assert len(records) == RECORDS == len(rows)
    with session_scope() as session:
        db_records = {r.id: r for r in session.scalars(select(Record))}
        for record in records:
            original = db_records[record["id"]]
            assert record["job_id"] == original.job_id and record["item_id"] == original.item_id
            assert record["source"] == original.source
            assert datetime.fromisoformat(record["date"]) == as_utc(original.date)
            assert datetime.fromisoformat(record["created_at"]) == as_utc(original.created_at)
            assert record["model_version_id"] == original.model_version_id
            assert record["generation_seconds"] == original.generation_seconds
            assert record["reviewed"] is original.reviewed
            assert record["model_metadata"] == original.data
            assert record["corrected_metadata"] == original.corrected_data
            assert record["metadata"] == effective_metadata(original.data, original.corrected_data)
            NewsMetadata.model_validate(record["metadata"])  # the export is still the contract
            item = original.item
            assert record["item"] == {
                "subject": item.subject, "sender": item.sender, "message_id": item.message_id,
                "date": as_utc(item.date).isoformat(), "url": item.url, "links": item.links,
                "has_html": item.has_html, "content": item.content,
            }  # fmt: skip
            if original.reviewed:
                assert datetime.fromisoformat(record["reviewed_at"]) == as_utc(original.reviewed_at)


def test_csv_has_every_field(db: dict[str, Any]) -> None:
    stream = open_export("csv", RecordFilter())
    text = b"".join(stream.chunks).decode("utf-8")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    assert header == list(CSV_COLUMNS)
    for name in [*NewsMetadata.model_fields, "id", "job_id", "item_id", "reviewed", "reviewed_at",
                 "generation_seconds", "model_version_id", "created_at", "item_content", "item_subject",
                 "model_metadata", "corrected_metadata"]:  # fmt: skip
        assert name in header, name
    rows = list(reader)
    assert len(rows) == RECORDS
    db_rows = _db_rows()
    for row in rows:
        original = db_rows[row["id"]]
        effective = effective_metadata(original["data"], original["corrected"])
        assert row["item_content"] == original["content"]  # newlines and quotes survive
        assert json.loads(row["key_topics"]) == effective["key_topics"]
        assert json.loads(row["entities"]) == effective["entities"]
        assert int(row["relevance_score"]) == effective["relevance_score"]
        assert row["summary"] == effective["summary"]
        assert row["reviewed"] == ("true" if original["reviewed"] else "false")
        assert json.loads(row["model_metadata"]) == original["data"]


def test_api_export_filters_formats_and_errors(db: dict[str, Any]) -> None:
    from app.main import create_app

    rows = _db_rows()
    since, until = datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC)
    with TestClient(create_app(), headers=API_HEADERS) as client:
        bad = client.get("/v1/export", params={"format": "pdf"})
        assert bad.status_code == 422
        assert all(name in bad.json()["message"] for name in ("notebooklm", "markdown", "jsonl", "csv"))
        assert (
            client.get("/v1/export", params={"since": "2025-05-01", "until": "2025-04-01"}).status_code == 422
        )

        params = {
            "format": "jsonl",
            "since": since.isoformat(),
            "until": until.isoformat(),
            "source": "Import AI",
        }
        response = client.get("/v1/export", params=params)
        assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
        assert "attachment" in response.headers["content-disposition"]
        got = {json.loads(line)["id"] for line in response.text.splitlines()}
        expected = {i for i, r in rows.items() if r["source"] == "Import AI" and since <= r["date"] < until}
        assert got == expected and expected

        response = client.get("/v1/export", params={"format": "jsonl", "topic": "REVIEWED TOPIC"})
        assert {json.loads(line)["id"] for line in response.text.splitlines()} == db["corrected"]

        response = client.get("/v1/export", params={"format": "jsonl", "entity": "intel"})
        got = {json.loads(line)["id"] for line in response.text.splitlines()}
        expected = {
            i for i, r in rows.items()
            if "intel" in {e.casefold() for e in effective_metadata(r["data"], r["corrected"])["entities"]}
        }  # fmt: skip
        assert got == expected and expected

        response = client.get("/v1/export", params={"format": "notebooklm", "source": "TLDR AI"})
        assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(response.content))
        files = _check_limits(archive, NotebookLimits())
        items = [i for name in files for i in parse_markdown(archive.read(name).decode("utf-8"))]
        assert len(items) == sum(1 for r in rows.values() if r["source"] == "TLDR AI")

        for fmt, media in (("markdown", "text/markdown"), ("csv", "text/csv")):
            response = client.get("/v1/export", params={"format": fmt, "source": "TLDR AI"})
            assert response.status_code == 200 and response.headers["content-type"].startswith(media)


def test_cli_export_writes_files(
    db: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    out = tmp_path / "notebook.zip"
    assert main(["export", "--format", "notebooklm", "--out", str(out), "--since", "2025-02-01"]) == 0
    archive = zipfile.ZipFile(out)
    files = _check_limits(archive, NotebookLimits())
    items = sum(_item_count(archive.read(name).decode("utf-8")) for name in files)
    assert items == sum(1 for r in _db_rows().values() if r["date"] >= datetime(2025, 2, 1, tzinfo=UTC))
    assert not list(tmp_path.glob("*.partial"))

    out = tmp_path / "records.csv"
    assert main(["export", "--format", "csv", "--out", str(out), "--source", "The Batch", "--reviewed"]) == 0
    reviewed_rows = list(csv.DictReader(out.open(newline="", encoding="utf-8")))
    assert reviewed_rows and all(
        r["reviewed"] == "true" and r["source"] == "The Batch" for r in reviewed_rows
    )
    assert main(["export", "--format", "jsonl", "--since", "2025-05-01", "--until", "2025-04-01"]) == 2


def test_export_reads_the_same_on_postgresql(database_url: str | None, tmp_path: Path) -> None:
    """Keyset chunks, filters and the NotebookLM plan on both databases (small set)."""
    saved = {key: os.environ.get(key) for key in ENV_KEYS}
    try:
        _use(tmp_path / "data", database_url)
        ids = insert_records(600, weeks=60, seed=3)
        limits = NotebookLimits(max_files=12)
        archive = _zip(limits=limits)
        files = _check_limits(archive, limits)
        items = [i for name in files for i in parse_markdown(archive.read(name).decode("utf-8"))]
        assert len(items) == 600
        stream = open_export("jsonl", RecordFilter(source="Meta"))
        assert b"".join(stream.chunks) == b""  # a source nobody has
        empty = _zip(RecordFilter(source="Meta"))
        assert empty.namelist() == [INDEX_NAME]
        assert "No records match this export." in empty.read(INDEX_NAME).decode("utf-8")
        walked = [json.loads(line)["id"] for line in b"".join(open_export("jsonl").chunks).splitlines()]
        assert sorted(walked) == sorted(ids) and len(walked) == len(set(walked))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset_caches()


def test_generated_metadata_contract_is_what_corrections_store(db: dict[str, Any]) -> None:
    with session_scope() as session:
        record = session.get(Record, db["ids"][0])
        assert set(record.corrected_data) == set(GeneratedMetadata.model_fields)
        assert record.data["summary"] != record.corrected_data["summary"]  # the model output is kept


def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_text() -> None:
    from app.export.rows import csv_cell

    for hostile in ('=HYPERLINK("http://x","y")', "+1+2", "-2+3", "@SUM(A1)", "\tcmd", "\r=1"):
        assert csv_cell(hostile) == "'" + hostile
    assert csv_cell("A headline") == "A headline"
    assert csv_cell(-0.5) == "-0.5"  # a number is not a formula
    assert csv_cell(["=x"]) == '["=x"]'  # JSON cells start with [ or {
