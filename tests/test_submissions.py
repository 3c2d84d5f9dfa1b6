"""The API's writer thread: submissions stored together in one transaction still get their own answers."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.api.routes.enhance import request_sha256
from app.api.submissions import Accepted, IdempotencyKeyReused, QueueFull, Submission, SubmissionWriter
from app.contract import EnhanceItem
from tests.conftest import apply_env
from tests.reliability_helpers import read_ledger


def _item(n: int) -> EnhanceItem:
    return EnhanceItem.model_validate(
        {
            "source": "TLDR AI",
            "subject": f"Item {n}",
            "from": "a@b.c",
            "date": "2025-10-16T08:00:00Z",
            "message_id": f"<m{n}@x>",
            "content": f"Text of item {n}.",
        }
    )


@pytest.fixture
def writer(service_env, database_url, monkeypatch):  # type: ignore[no-untyped-def]
    apply_env(monkeypatch, service_env, DATABASE_URL=database_url, ENHANCER_MAX_QUEUED_JOBS="3")
    from app.core.config import get_settings
    from app.core.migrate import upgrade_database

    settings = get_settings()
    settings.ensure_dirs()
    upgrade_database(settings.sqlalchemy_url)
    published: list[list[str]] = []

    class Recorder:  # stands in for the broker: what the writer hands on after each commit
        def publish(self, ids: list[str]) -> None:
            if ids:
                published.append(ids)

        def close(self, timeout: float = 0) -> None:
            pass

    writer = SubmissionWriter(settings, publisher=Recorder())  # type: ignore[arg-type]
    writer.published = published  # type: ignore[attr-defined]
    yield writer
    writer.close()


async def _submit_as_one_group(writer: SubmissionWriter, submissions: list[Submission]) -> list[object]:
    """Queue everything while the writer waits for the write lock, so it takes them as one group."""
    from app.core import db

    with db._SQLITE_WRITERS:
        tasks = [asyncio.ensure_future(writer.submit(s)) for s in submissions]
        await asyncio.sleep(0.3)
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_one_group_mixes_accepted_replayed_and_refused_submissions(writer: SubmissionWriter) -> None:
    async def scenario() -> tuple[Accepted, list[object]]:
        keyed = Submission([_item(0)], "key-a", request_sha256({"n": 0}))
        first = await writer.submit(keyed)
        outcomes = await _submit_as_one_group(
            writer,
            [
                Submission([_item(1)]),  # new
                Submission([_item(2), _item(1)]),  # one new, one already in this group
                Submission([_item(3)], "key-a", request_sha256({"n": 3})),  # reused key: 422
                Submission([_item(0)], "key-a", request_sha256({"n": 0})),  # retry: the stored jobs
                Submission([_item(4)]),  # new: a 4th queued job with the limit 3: 429
            ],
        )
        return first, outcomes

    first, (one, two, reused, replay, over) = asyncio.run(scenario())
    assert isinstance(one, Accepted) and len(one.created) == 1
    assert isinstance(two, Accepted) and len(two.created) == 1
    assert two.jobs[1] == one.jobs[0]  # the same item maps to the same job, even within a group
    assert isinstance(reused, IdempotencyKeyReused)  # the route answers 422 (test_security.py)
    assert "already used with a different payload" in str(reused)
    assert isinstance(replay, Accepted) and replay.replayed and replay.jobs == first.jobs
    assert isinstance(over, QueueFull) and over.retry_after > 0  # the route answers 429
    ledger = read_ledger()
    assert sum(ledger.statuses.values()) == 3  # items 0, 1, 2: nothing of the refused ones
    published = [job for ids in writer.published for job in ids]  # type: ignore[attr-defined]
    assert sorted(published) == sorted(ledger.job_status)  # every stored job handed to the broker once


def test_a_group_maps_items_stored_before_and_items_repeated_in_it_to_one_job_each(
    writer: SubmissionWriter,
) -> None:
    """The group's one lookup and one insert (crud.KnownItems) keep what per-item queries gave."""

    async def scenario() -> tuple[Accepted, list[object]]:
        earlier = await writer.submit(Submission([_item(0)]))
        grouped = await _submit_as_one_group(
            writer,
            [
                Submission([_item(0), _item(1)]),  # stored in an earlier group + new
                Submission([_item(1)]),  # new in this group, from another request
                Submission([_item(1), _item(0)]),  # both again
            ],
        )
        return earlier, grouped

    earlier, (first, second, third) = asyncio.run(scenario())
    assert isinstance(first, Accepted) and isinstance(second, Accepted) and isinstance(third, Accepted)
    assert first.jobs[0] == earlier.jobs[0] and first.created == [first.jobs[1][0]]
    assert second.jobs == [first.jobs[1]] and not second.created
    assert third.jobs == [first.jobs[1], earlier.jobs[0]] and not third.created
    ledger = read_ledger()
    assert sorted(ledger.job_status) == sorted([earlier.jobs[0][0], first.jobs[1][0]])
    assert set(ledger.job_status.values()) == {"queued"}


def test_a_retry_of_a_keyed_request_in_the_same_group_gets_its_jobs(writer: SubmissionWriter) -> None:
    keyed = [Submission([_item(1), _item(2)], "key-b", request_sha256({"n": 1})) for _ in range(2)]
    first, retry = asyncio.run(_submit_as_one_group(writer, keyed))
    assert isinstance(first, Accepted) and isinstance(retry, Accepted)
    assert len(first.jobs) == 2 and retry.jobs == first.jobs  # never an empty replay
    assert sorted(read_ledger().job_status) == sorted(job for job, _ in first.jobs)


def test_answers_wait_for_the_commit(writer: SubmissionWriter) -> None:
    """A 202 means stored: the answer comes only after the group's transaction committed."""

    async def scenario() -> tuple[float, Accepted]:
        from app.core import db

        started = time.monotonic()
        with db._SQLITE_WRITERS:
            task = asyncio.ensure_future(writer.submit(Submission([_item(9)])))
            await asyncio.sleep(0.5)
            assert not task.done()
        accepted = await task
        return time.monotonic() - started, accepted

    waited, accepted = asyncio.run(scenario())
    assert waited >= 0.5
    assert read_ledger().job_status[accepted.jobs[0][0]] == "queued"


def test_reads_do_not_wait_for_a_writer(service_env) -> None:
    """SQLite: GET routes read a snapshot (deferred BEGIN) while another process holds the write lock."""
    import sqlite3
    from pathlib import Path

    from fastapi.testclient import TestClient

    from app.main import create_app
    from tests.conftest import API_HEADERS

    with TestClient(create_app(), headers=API_HEADERS) as client:
        job_id = client.post("/v1/enhance", json=_item(1).model_dump(mode="json", by_alias=True)).json()
        job_id = job_id["jobs"][0]["id"]
        holder = sqlite3.connect(Path(service_env["ENHANCER_DATA_DIR"]) / "enhancer.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # a worker in the middle of a write transaction
        try:
            started = time.monotonic()
            assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
            assert client.get("/v1/records").status_code == 200
            assert time.monotonic() - started < 2  # not the 30 s busy timeout
        finally:
            holder.execute("ROLLBACK")
            holder.close()


def _reject_on_insert(database_url: str | None, *, message_id: str, message: str) -> None:
    """A trigger that makes the database itself refuse inserting one item (SQLite or PostgreSQL)."""
    import sqlite3
    from pathlib import Path

    from sqlalchemy import create_engine, text

    from app.core.config import get_settings

    if database_url is None:
        with sqlite3.connect(Path(get_settings().data_dir) / "enhancer.db") as conn:
            conn.execute(
                f"CREATE TRIGGER reject_poison BEFORE INSERT ON items WHEN NEW.message_id = '{message_id}' "
                f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
            )
        return
    engine = create_engine(get_settings().sqlalchemy_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION reject_poison() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.message_id = '{message_id}' THEN RAISE EXCEPTION '{message}'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER reject_poison BEFORE INSERT ON items "
                "FOR EACH ROW EXECUTE FUNCTION reject_poison()"
            )
        )
    engine.dispose()


def test_a_submission_failing_part_way_fails_alone(writer: SubmissionWriter, database_url) -> None:
    """The database rejects one item mid-group: the group is redone with a savepoint each."""
    _reject_on_insert(database_url, message_id="<poison>", message="poison item")
    poison = EnhanceItem.model_validate({**_item(5).model_dump(by_alias=True), "message_id": "<poison>"})
    outcomes = asyncio.run(
        _submit_as_one_group(
            writer, [Submission([_item(1)]), Submission([_item(2), poison]), Submission([_item(3)])]
        )
    )
    first, failed, third = outcomes
    assert isinstance(first, Accepted) and isinstance(third, Accepted)
    assert isinstance(failed, Exception) and "poison item" in str(failed)
    ledger = read_ledger()
    assert sorted(ledger.job_status) == sorted([first.jobs[0][0], third.jobs[0][0]])  # item 2 undone too


def test_a_writer_loop_takes_what_waits_as_batches_and_drops_nothing_before_the_stop() -> None:
    import queue

    from app.core.batches import batches_until_stopped

    pending: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    for value in [1, 2, 3, 4, 5, None, 6]:
        pending.put(value)
    assert list(batches_until_stopped(pending, max_size=2)) == [[1, 2], [3, 4], [5]]
    assert pending.get_nowait() == 6  # put after the stop: left for no one, as close() means
