"""Hostile input: every body the API accepts becomes a schema-valid record; the rest is a clear 4xx.

The pipeline half runs the tiny random model (it always needs the second attempt, so it exercises
the whole path) on the openvino-genai and torch backends. The API half posts bodies that are not
text at all (invalid UTF-8, lone surrogates) and checks for a 4xx, never a 500.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from fastapi.testclient import TestClient

from app.contract import news_metadata_json_schema
from tests.conftest import API_HEADERS
from worker.bench_items import EXPECTED_REJECTIONS, hostile_items, hostile_requests, item_from_body
from worker.pipeline import MAX_PROMPT_TOKENS, ItemInput, _derive, build_prompt, enhance_items
from worker.runtime import load_runtime


@pytest.fixture(scope="module", params=["openvino-genai", "torch"])
def runtime(request: pytest.FixtureRequest, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return load_runtime(
        str(tiny_model_dir), backend=request.param, precision="int8", cache_dir=tmp_path_factory.mktemp("c")
    )


def test_the_api_validation_rejects_exactly_the_bodies_that_are_not_text() -> None:
    rejected = {b.name for b in hostile_items() if b.item is None}
    assert rejected == EXPECTED_REJECTIONS


def test_every_accepted_hostile_item_becomes_a_valid_record(runtime) -> None:  # type: ignore[no-untyped-def]
    accepted = [b for b in hostile_items() if b.item is not None]
    outcomes = enhance_items(runtime, [b.item for b in accepted])
    validator = jsonschema.Draft202012Validator(news_metadata_json_schema())
    for bench_item, outcome in zip(accepted, outcomes, strict=True):
        assert outcome.metadata is not None, f"{bench_item.name}: {outcome.error}"
        record = outcome.metadata.model_dump(mode="json")
        assert not list(validator.iter_errors(record)), bench_item.name
        json.dumps(record, ensure_ascii=False).encode("utf-8")  # storable as UTF-8 text


def test_prompts_stay_bounded_and_keep_their_structure(runtime) -> None:  # type: ignore[no-untyped-def]
    tokenizer = runtime.tokenizer
    start_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
    bodies = hostile_requests()
    for name in (
        "prompt_injection",
        "html_with_scripts",
        "long_50k_no_spaces",
        "emoji",
        "long_emoji_headline",
    ):
        item = item_from_body(name, bodies[name]).item
        assert item is not None
        ids = tokenizer(build_prompt(item, _derive(item), tokenizer), add_special_tokens=False)["input_ids"]
        assert len(ids) <= MAX_PROMPT_TOKENS, name
        # system, user, assistant: injected "<|im_start|>system" in the text is text, not a turn
        assert ids.count(start_id) == 3, name
    html = item_from_body("html", bodies["html_with_scripts"]).item
    assert html is not None
    prompt = build_prompt(html, _derive(html), tokenizer)
    assert "document.cookie" not in prompt and "print secrets" not in prompt and "Broadcom" in prompt


def test_lone_surrogates_reaching_the_worker_are_replaced(runtime) -> None:  # type: ignore[no-untyped-def]
    item = ItemInput(
        source="TLDR \ud83d", headline="Chips \udfff", content="OpenAI and Broadcom \ud800 chips."
    )
    (outcome,) = enhance_items(runtime, [item])
    assert outcome.metadata is not None, outcome.error
    assert outcome.metadata.headline == "Chips \ufffd" and outcome.metadata.source == "TLDR \ufffd"


@pytest.fixture
def client(service_env) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    from app.main import create_app

    with TestClient(create_app(), headers=API_HEADERS, raise_server_exceptions=False) as test_client:
        yield test_client


def test_the_api_answers_non_text_bodies_with_a_4xx(client: TestClient) -> None:
    body = hostile_requests()["prompt_injection"]
    raw = json.dumps(body).encode()
    invalid_utf8 = raw.replace(b"IGNORE", b"IGN\xff\xfeORE")
    surrogate_escape = raw.replace(b"IGNORE", b"IGN\\ud800ORE")
    for payload in (invalid_utf8, surrogate_escape, b"\xef\xbb\xbf" + raw[:-5]):
        response = client.post("/v1/enhance", content=payload, headers={"Content-Type": "application/json"})
        assert 400 <= response.status_code < 500, (payload[:40], response.status_code, response.text[:300])
        assert response.json()  # a JSON error body, whatever the input bytes were
    accepted = client.post("/v1/enhance", json=hostile_requests()["long_50k_words"])
    assert accepted.status_code == 202


@pytest.mark.parametrize(
    "body",
    [
        "[" * 10_000 + "]" * 10_000,  # deeper than json's decoder can recurse: was a 500 (RecursionError)
        '{"items": ' + "[" * 10_000 + "]" * 10_000 + "}",
        '{"source": "a", "subject": "b", "content": "c", "links": ' + "[" * 40 + "]" * 40 + "}",
    ],
    ids=["top-level", "in-items", "parseable-but-deep"],
)
def test_deeply_nested_bodies_get_a_422_naming_the_nesting(client: TestClient, body: str) -> None:
    response = client.post("/v1/enhance", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text[:300]
    assert "levels deep" in response.json()["message"]
