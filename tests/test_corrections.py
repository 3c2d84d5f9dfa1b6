"""Corrections through the JSON API and the review form: one contract, inline errors, labels kept apart."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.db import reset_caches
from tests.conftest import API_HEADERS, TEST_API_KEY
from tests.export_helpers import insert_records

VALID = {
    "summary": "Intel ships a new NPU driver that doubles local inference speed.",
    "key_topics": ["NPU", "local inference"],
    "entities": ["Intel"],
    "categories": ["infrastructure_hardware"],
    "sentiment": "positive",
    "urgency_level": "medium",
    "relevance_score": 7,
    "action_items": ["Update the NPU driver"],
}


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, list[str]]]:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("ENHANCER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ENHANCER_API_KEYS", TEST_API_KEY)
    reset_caches()
    ids = insert_records(20, weeks=1)
    from app.main import create_app

    with TestClient(create_app(), headers=API_HEADERS) as test_client:
        yield test_client, ids
    reset_caches()


def test_put_correction_validates_with_the_contract_and_keeps_the_model_output(
    client: tuple[TestClient, list[str]],
) -> None:
    api, ids = client
    before = api.get(f"/v1/records/{ids[0]}").json()

    bad = api.put(f"/v1/records/{ids[0]}/correction", json={**VALID, "relevance_score": 11, "colour": "red"})
    assert bad.status_code == 422
    fields = {tuple(error["loc"]) for error in bad.json()["detail"]}
    assert fields == {("body", "relevance_score"), ("body", "colour")}
    assert "relevance_score" in bad.json()["message"]
    assert api.get(f"/v1/records/{ids[0]}").json()["reviewed"] is False

    missing = api.put(f"/v1/records/{ids[0]}/correction", json={"summary": VALID["summary"]})
    assert missing.status_code == 422 and "key_topics" in missing.json()["message"]
    assert api.put(f"/v1/records/{ids[0]}/correction", json=["not", "an", "object"]).status_code == 422
    assert api.put("/v1/records/nope/correction", json=VALID).status_code == 404

    # Whitespace trimmed and repeated list entries dropped before validation, like the worker does.
    body = {**VALID, "key_topics": [" NPU ", "NPU", "local inference"], "summary": f"  {VALID['summary']}  "}
    saved = api.put(f"/v1/records/{ids[0]}/correction", json=body)
    assert saved.status_code == 200
    record = saved.json()
    assert record["reviewed"] is True
    assert record["corrected_metadata"] == VALID
    assert record["metadata"] == before["metadata"]  # the model output stays as it was

    cleared = api.delete(f"/v1/records/{ids[0]}/correction")
    assert cleared.status_code == 200
    assert cleared.json()["reviewed"] is False and cleared.json()["corrected_metadata"] is None


def test_review_form_shows_the_same_errors_inline_and_saves_nothing(
    client: tuple[TestClient, list[str]],
) -> None:
    api, ids = client
    page = api.get("/review")  # the client sends the key as a header
    assert page.status_code == 200 and ids[1] in page.text
    # Item and model text is escaped: generated headlines carry "<b>html</b>".
    assert "&lt;b&gt;html&lt;/b&gt;" in page.text and "<b>html</b>" not in page.text
    form = {
        "summary": "too short", "key_topics": "", "entities": "x", "categories": ["research", "tutorial",
        "other", "opinion_analysis"], "sentiment": "gloomy", "urgency_level": "low", "relevance_score": "ten",
        "action_items": "ok", "action": "save",
    }  # fmt: skip
    response = api.post(f"/review/records/{ids[1]}", data=form, headers={"Origin": "http://testserver"})
    assert response.status_code == 422
    errors = dict(re.findall(r'id="error-(\w+)">([^<]+)<', response.text))
    assert set(errors) == {
        "summary", "key_topics", "entities", "categories", "sentiment", "relevance_score", "action_items"
    }  # fmt: skip
    assert "at least 10 characters" in errors["summary"]
    assert 'value="ten"' in response.text  # what the person typed stays in the form
    assert api.get(f"/v1/records/{ids[1]}").json()["reviewed"] is False

    # The same payload through the API fails on the same fields.
    api_body: dict[str, Any] = {
        "summary": "too short", "key_topics": [], "entities": ["x"],
        "categories": ["research", "tutorial", "other", "opinion_analysis"], "sentiment": "gloomy",
        "urgency_level": "low", "relevance_score": "ten", "action_items": ["ok"],
    }  # fmt: skip
    api_errors = api.put(f"/v1/records/{ids[1]}/correction", json=api_body).json()["detail"]
    assert {error["loc"][1] for error in api_errors} == set(errors)
