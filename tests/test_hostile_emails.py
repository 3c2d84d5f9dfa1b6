"""Hostile e-mails: every one gets a clear 4xx or is stored as text (never a 500); the service stays
up; `enhancer ingest` reports each refused one and goes on."""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import API_HEADERS, apply_env
from tests.hostile_emails import hostile_emails

MAX_EMAIL_BYTES = 2_000_000
CASES = hostile_emails(MAX_EMAIL_BYTES)


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_model_dir) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    monkeypatch = pytest.MonkeyPatch()
    env = {
        "ENHANCER_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "ENHANCER_MODEL": str(tiny_model_dir),
        "ENHANCER_API_KEYS": API_HEADERS["X-API-Key"],
        "ENHANCER_MAX_EMAIL_BYTES": str(MAX_EMAIL_BYTES),
    }
    apply_env(monkeypatch, {}, **env, DATABASE_URL=None, BROKER_URL=None)
    with TestClient(create_app(), headers=API_HEADERS, raise_server_exceptions=False) as test_client:
        yield test_client
    monkeypatch.undo()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_hostile_email_gets_a_clear_answer(client: TestClient, case) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/v1/emails", content=case.raw, headers={"Content-Type": "message/rfc822"})
    assert response.status_code == case.status, response.text[:500]
    if case.status >= 400:
        assert case.says in response.json()["message"]
    else:
        body = response.json()
        assert body["stories"], body
        header = body["email"]
        for text in (header["subject"], header["from"], *(s["headline"] for s in body["stories"])):
            assert not any(c in text for c in "\r\n\x00\u202e"), text  # no header injection, no bidi tricks
    assert client.get("/healthz").status_code == 200


def test_header_injection_stays_one_subject_line(client: TestClient) -> None:
    (case,) = [c for c in CASES if c.name == "header-injection"]
    body = client.post("/v1/emails", content=case.raw, headers={"Content-Type": "message/rfc822"}).json()
    assert body["email"]["subject"] == "Hi Bcc: victim@example.com evil"


def test_ingest_reports_each_refused_email_and_goes_on(service_env, tmp_path: Path) -> None:
    from tests.test_ingest_cli import _ingest, _summary

    box = mailbox.mbox(tmp_path / "hostile.mbox")
    small = [case for case in CASES if case.status != 413]
    for case in small:
        box.add(case.raw)
    box.flush()
    result = _ingest(service_env, str(tmp_path / "hostile.mbox"), "--local")
    counts = _summary(result.stdout)
    assert counts["e-mails read"] == len(small)
    assert counts["failures"] == sum(1 for case in small if case.status >= 400), result.stdout
    assert result.returncode == 1 and "Traceback" not in result.stderr


HOSTILE_FILES = sorted((Path(__file__).parent / "data" / "emails" / "hostile").glob("*.eml"))


@pytest.mark.parametrize("path", HOSTILE_FILES, ids=[path.stem for path in HOSTILE_FILES])
def test_the_stored_hostile_emails_get_a_4xx_or_a_clean_record(client: TestClient, path: Path) -> None:
    """tests/data/emails/README.md says, per file, what a robust parser does with it."""
    response = client.post(
        "/v1/emails", content=path.read_bytes(), headers={"Content-Type": "message/rfc822"}
    )
    assert response.status_code in (202, 413, 422), response.text[:500]
    if response.status_code == 202:
        body = response.json()
        texts = [body["email"]["subject"], body["email"]["from"], *(s["headline"] for s in body["stories"])]
        assert not any(c in text for text in texts for c in "\r\n\x00\x1b\u202e\u2066"), texts
        assert all(s["url"] is None or s["url"].startswith("http") for s in body["stories"])  # no javascript:
    else:
        assert response.json()["message"]
