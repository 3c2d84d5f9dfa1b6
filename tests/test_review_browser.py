"""The review page in real headless Chromium: filter, open a record, correct it (first invalidly),
save, and find the correction in `enhancer export --format training`.

Chromium is Debian's (`scripts/install-system-deps.sh` installs it); Playwright only drives it
(no `playwright install`, which would download a browser of its own).
Set ENHANCER_UPDATE_SCREENSHOT=1 to refresh docs/review-page.png.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.core.db import reset_caches, session_scope
from app.models import Record
from tests.conftest import TEST_API_KEY
from tests.export_helpers import insert_seed_records
from tests.fixtures import LABELLED, labelled_rows
from training.seed_data import load_seed_requests

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("ENHANCER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SEED_RECORDS = 10
NEW_SUMMARY = "Broadcom will co-design Meta's next inference accelerator, with first silicon in late 2026."


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def review_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A real uvicorn serving the app on a free port, over a SQLite database with records of tests/data."""
    env = {"ENHANCER_DATA_DIR": str(tmp_path / "data"), "ENHANCER_API_KEYS": TEST_API_KEY}
    monkeypatch.delenv("DATABASE_URL", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_caches()
    annotations = [row["annotation"] for row in labelled_rows(SEED_RECORDS)]
    requests = load_seed_requests(LABELLED)[:SEED_RECORDS]
    ids = insert_seed_records(requests, annotations)
    port = _free_port()
    log = (tmp_path / "uvicorn.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=REPO_ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                output = (tmp_path / "uvicorn.log").read_text(errors="replace")
                raise RuntimeError(f"uvicorn exited: {output}")
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start")
            time.sleep(0.2)
        yield {"base": base, "ids": ids, "requests": requests, "annotations": annotations, "tmp": tmp_path}
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        reset_caches()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: run scripts/install-system-deps.sh (installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _record(record_id: str) -> Record:
    with session_scope() as session:
        record = session.get(Record, record_id)
        session.expunge(record)
        return record


def test_review_page_filter_correct_save_and_export_for_training(
    review_server: dict[str, Any], browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    base = review_server["base"]
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.set_default_timeout(20_000)

    # Sign in with the key in the form: the browser keeps a session cookie, never the key.
    page.goto(f"{base}/review")
    assert page.url.endswith("/review/login")
    page.fill("#api_key", TEST_API_KEY)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/review")
    assert all(TEST_API_KEY not in c["value"] for c in page.context.cookies())
    rows = page.locator("#records tbody tr[data-record-id]")
    expect(rows).to_have_count(SEED_RECORDS)

    # Filter by source and topic: exactly the matching records remain.
    with session_scope() as session:
        records = list(session.scalars(select(Record)))
    wanted = {
        r.id for r in records
        if r.source == "TLDR AI" and "ai infrastructure" in {t.casefold() for t in r.data["key_topics"]}
    }  # fmt: skip
    assert wanted
    page.select_option("select[name=source]", "TLDR AI")
    page.fill("input[name=topic]", "AI Infrastructure")
    page.click("#filters button[type=submit]")
    expect(rows).to_have_count(len(wanted))
    assert {rows.nth(i).get_attribute("data-record-id") for i in range(len(wanted))} == wanted

    # Open the Broadcom/Meta record: its source text is beside the form.
    target = next(r for r in records if r.id in wanted and "Broadcom" in r.item.subject)
    page.click(f"tr[data-record-id='{target.id}'] a")
    expect(page.locator("#source pre.source-text")).to_contain_text("Broadcom")
    expect(page.locator("#summary")).to_have_value(target.data["summary"])

    # An invalid correction: inline error, typed values kept, nothing saved.
    page.fill("#summary", NEW_SUMMARY)
    page.fill("#relevance_score", "42")
    page.click("#save")
    expect(page.locator("#form-error")).to_be_visible()
    expect(page.locator("#error-relevance_score")).to_contain_text("less than or equal to 10")
    expect(page.locator("#summary")).to_have_value(NEW_SUMMARY)
    assert not _record(target.id).reviewed

    # Fix it, change a few more fields, save: stored as a label, the model output kept.
    page.fill("#relevance_score", "8")
    page.select_option("#sentiment", "positive")
    page.check("input[name=categories][value=infrastructure_hardware]")
    page.fill("#action_items", "Track Broadcom's custom accelerator roadmap")
    page.click("#save")
    expect(page.locator("#saved")).to_be_visible()
    expect(page.locator("#correction .badge.reviewed")).to_be_visible()
    expect(page.locator("#summary")).to_have_value(NEW_SUMMARY)
    stored = _record(target.id)
    assert stored.reviewed and stored.reviewed_at is not None
    assert stored.corrected_data["summary"] == NEW_SUMMARY
    assert stored.corrected_data["relevance_score"] == 8
    assert stored.corrected_data["categories"] == ["product_launch", "infrastructure_hardware"]
    assert stored.data["summary"] == target.data["summary"]  # the model output is untouched

    screenshot = tmp_path / "review-page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("ENHANCER_UPDATE_SCREENSHOT") == "1":
        (REPO_ROOT / "docs").mkdir(exist_ok=True)
        page.screenshot(path=str(REPO_ROOT / "docs" / "review-page.png"), full_page=True)

    # The list shows it as reviewed.
    page.click("text=Back to the list")
    page.select_option("select[name=reviewed]", "yes")
    page.fill("input[name=topic]", "")
    page.click("#filters button[type=submit]")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".badge.reviewed")).to_be_visible()
    if os.environ.get("ENHANCER_UPDATE_SCREENSHOT") == "1":
        page.select_option("select[name=reviewed]", "")
        page.select_option("select[name=source]", "")
        page.click("#filters button[type=submit]")
        expect(rows).to_have_count(SEED_RECORDS)
        page.screenshot(path=str(REPO_ROOT / "docs" / "review-list.png"), full_page=True)

    # The training export holds the correction as the label, in training.data's row format.
    from app.cli import main

    out = tmp_path / "training.jsonl"
    assert main(["export", "--format", "training", "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 1
    row = lines[0]
    assert row["item"]["headline"] == target.item.subject
    assert row["item"]["content"] == target.item.content
    assert row["metadata"]["summary"] == NEW_SUMMARY
    assert row["metadata"]["relevance_score"] == 8
    assert row["metadata"]["sentiment"] == "positive"
    assert row["metadata"]["action_items"] == ["Track Broadcom's custom accelerator roadmap"]

    from training.data.loading import parse_lines

    loaded = parse_lines(out.read_text(encoding="utf-8").splitlines(), source=out)
    assert len(loaded.examples) == 1  # `enhancer train` reads it back as one labelled example


def test_review_page_needs_the_key_and_refuses_cross_site_posts(review_server: dict[str, Any]) -> None:
    base = review_server["base"]
    record_id = review_server["ids"][0]
    assert httpx.get(f"{base}/review").status_code == 401
    signed_in = httpx.post(f"{base}/review/login", data={"api_key": TEST_API_KEY}, headers={"Origin": base})
    cookies = {"enhancer_review_session": signed_in.cookies["enhancer_review_session"]}
    form = {
        "summary": "A summary that is long enough.", "key_topics": "AI", "categories": "research",
        "sentiment": "neutral", "urgency_level": "low", "relevance_score": "5", "action": "save",
    }  # fmt: skip
    evil = httpx.post(f"{base}/review/records/{record_id}", data=form, cookies=cookies,
                      headers={"Origin": "https://evil.example"})  # fmt: skip
    assert evil.status_code == 403
    assert not _record(record_id).reviewed
    no_origin = httpx.post(f"{base}/review/records/{record_id}", data=form, cookies=cookies)
    assert no_origin.status_code == 403  # a post that says nothing of where it comes from
    no_token = httpx.post(
        f"{base}/review/records/{record_id}", data=form, cookies=cookies, headers={"Referer": base}
    )
    assert no_token.status_code == 403 and "CSRF token" in no_token.json()["message"]
    assert not _record(record_id).reviewed
    page = httpx.get(f"{base}/review/records/{record_id}", cookies=cookies)
    csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text).group(1)  # type: ignore[union-attr]
    ok = httpx.post(
        f"{base}/review/records/{record_id}",
        data={**form, "csrf_token": csrf},
        cookies=cookies,
        headers={"Referer": base},
    )
    assert ok.status_code == 303
    assert _record(record_id).corrected_data["key_topics"] == ["AI"]
    missing = httpx.get(f"{base}/review/records/nope", cookies=cookies)
    assert missing.status_code == 404


def test_swagger_ui_and_redoc_render_from_this_server_alone(
    review_server: dict[str, Any], browser: Any
) -> None:
    """/docs and /redoc in Chromium: both render, every request stays on this server (the one other
    address, ReDoc's footer logo, is blocked by the page's CSP and ReDoc hides it), no other CSP
    violation or script error."""
    from playwright.sync_api import expect

    base = review_server["base"]
    redoc_logo = "https://cdn.redoc.ly/redoc/logo-mini.svg"  # hard-coded in redoc.standalone.js
    page = browser.new_page()
    page.set_default_timeout(20_000)
    answered: list[str] = []
    blocked: list[tuple[str, str | None]] = []
    problems: list[str] = []
    page.on("response", lambda response: answered.append(response.url))
    page.on("requestfailed", lambda request: blocked.append((request.url, request.failure)))
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))

    page.goto(f"{base}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("newsletter-enhancer")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()  # the operations, from /openapi.json
    page.goto(f"{base}/redoc")
    expect(page.locator("h1").first).to_contain_text("newsletter-enhancer")
    expect(page.get_by_text("/v1/records", exact=False).first).to_be_attached()
    expect(page.locator("img[alt='redocly logo']")).to_have_count(0)

    elsewhere = [url for url in answered if not url.startswith((base + "/", "data:", "blob:"))]
    assert not elsewhere, elsewhere
    assert f"{base}/openapi.json" in answered and f"{base}/docs/assets/swagger-ui-bundle.js" in answered
    assert all(url == redoc_logo and failure == "csp" for url, failure in blocked), blocked
    problems = [text for text in problems if redoc_logo not in text]
    assert not problems, problems  # a script or style the CSP blocked would show here
