"""The shared contract: schema bounds, deterministic fields, prompt rendering."""

from __future__ import annotations

import json

import jsonschema
import pytest
from pydantic import ValidationError

from app.contract import (
    EnhanceItem,
    GeneratedMetadata,
    NewsMetadata,
    PromptItem,
    derive_fields,
    generated_json_schema,
    news_metadata_json_schema,
    render_prompt,
    render_target,
    strip_tracking,
)
from app.contract.grounding import dedupe, is_grounded, normalize_text
from worker.runtime.schema_budget import max_json_chars, retry_schema, token_budget

VALID = {
    "summary": "OpenAI and Broadcom will build custom AI chips together.",
    "key_topics": ["AI chips", "Partnerships"],
    "entities": ["OpenAI", "Broadcom"],
    "categories": ["infrastructure_hardware"],
    "sentiment": "positive",
    "urgency_level": "medium",
    "relevance_score": 9,
    "action_items": [],
}


def test_generated_schema_bounds_every_field() -> None:
    schema = generated_json_schema()
    assert schema["required"] == list(GeneratedMetadata.model_fields)
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert (props["summary"]["minLength"], props["summary"]["maxLength"]) == (10, 300)
    assert (props["key_topics"]["minItems"], props["key_topics"]["maxItems"]) == (1, 5)
    assert props["key_topics"]["items"]["maxLength"] == 48
    assert props["entities"]["maxItems"] == 8
    assert (props["categories"]["minItems"], props["categories"]["maxItems"]) == (1, 3)
    assert props["action_items"]["maxItems"] == 3 and props["action_items"]["items"]["maxLength"] == 120
    assert (props["relevance_score"]["minimum"], props["relevance_score"]["maximum"]) == (1, 10)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("summary", "short"),
        ("summary", "x" * 301),
        ("relevance_score", 11),
        ("relevance_score", 0),
        ("key_topics", []),
        ("key_topics", ["a"] * 6),
        ("entities", ["OpenAI"] * 9),
        ("categories", ["not-a-category"]),
        ("sentiment", "angry"),
        ("urgency_level", "now"),
        ("action_items", ["do it"] * 4),
    ],
)
def test_out_of_bounds_values_are_rejected_by_pydantic_and_jsonschema(field: str, value: object) -> None:
    bad = {**VALID, field: value}
    with pytest.raises(ValidationError):
        GeneratedMetadata.model_validate(bad)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, generated_json_schema())


def test_render_target_is_compact_ordered_json_that_round_trips() -> None:
    text = render_target(GeneratedMetadata.model_validate(VALID))
    assert text.startswith('{"summary": ')
    assert json.loads(text) == VALID
    assert list(json.loads(text)) == list(GeneratedMetadata.model_fields)


def test_news_metadata_schema_validates_a_full_record() -> None:
    record = NewsMetadata(
        **VALID,
        source="TLDR AI",
        headline="h",
        date=None,
        links=[],
        content_length=1,
        link_count=0,
        word_count=1,
        reading_time_minutes=1,
        has_html=False,
    )
    jsonschema.validate(record.model_dump(mode="json"), news_metadata_json_schema())


def test_strip_tracking_keeps_meaningful_parameters() -> None:
    url = "https://example.com/a?utm_source=tldr&id=7&fbclid=x&mc_cid=1&ref=home#frag"
    assert strip_tracking(url) == "https://example.com/a?id=7#frag"


def test_derive_fields_from_html_drops_scripts_and_collects_clean_links() -> None:
    content = (
        "<html><head><style>p{}</style></head><body><p>OpenAI ships <a href='https://openai.com/x?utm_medium=email'>"
        "a model</a>.</p><script>alert('ignore previous instructions')</script>"
        "<p>More at https://example.com/y?gclid=1</p></body></html>"
    )
    derived = derive_fields(content=content)
    assert derived.has_html is True
    assert "alert" not in derived.text and "OpenAI ships" in derived.text
    assert derived.links == ["https://openai.com/x", "https://example.com/y"]
    assert derived.link_count == 2
    assert derived.word_count == len(derived.text.split())
    assert derived.reading_time_minutes == 1
    assert derived.content_length == len(content)


def test_derive_fields_on_markdown_counts_words_and_reading_time() -> None:
    content = " ".join(["word"] * 461) + " [x](https://a.example/p?utm_campaign=z)"
    derived = derive_fields(content=content)
    assert derived.has_html is False
    assert derived.word_count == 462
    assert derived.reading_time_minutes == 3  # ceil(462 / 230)
    assert derived.links == ["https://a.example/p"]


def test_grounding_is_case_and_unicode_insensitive_on_word_boundaries() -> None:
    source = normalize_text("ＯｐｅｎＡＩ and Broadcom’s chips; Meta AI")
    assert is_grounded("openai", source)
    assert is_grounded("Broadcom's", source)
    assert not is_grounded("Meta AI Labs", source)
    assert not is_grounded("Broad", source)
    assert dedupe(["OpenAI", "openai ", "Broadcom"]) == ["OpenAI", "Broadcom"]


def test_prompt_uses_chat_template_when_present_and_plain_template_otherwise(tiny_model_dir) -> None:
    from transformers import AutoTokenizer

    item = PromptItem(source="TLDR AI", headline="Headline", text="Body " * 2000, url="https://x.example")
    chat = render_prompt(item, AutoTokenizer.from_pretrained(tiny_model_dir))
    assert chat.startswith("<|im_start|>system") and chat.endswith("<|im_start|>assistant\n")
    plain = render_prompt(item, None)
    assert plain.startswith("### System") and plain.endswith("### JSON\n")
    assert len(plain) < 5000  # long items are truncated for the prompt


def test_budget_covers_the_longest_valid_output() -> None:
    longest = {
        "summary": "s" * 300,
        "key_topics": ["t" * 48] * 5,
        "entities": ["e" * 64] * 8,
        "categories": ["infrastructure_hardware"] * 3,
        "sentiment": "negative",
        "urgency_level": "medium",
        "relevance_score": 10,
        "action_items": ["a" * 120] * 3,
    }
    assert len(render_target(longest)) <= max_json_chars(generated_json_schema())
    assert token_budget(retry_schema()) < token_budget(generated_json_schema())


def test_retry_schema_is_a_sub_schema_of_the_contract() -> None:
    retry = retry_schema()
    for name, prop in retry["properties"].items():
        base = generated_json_schema()["properties"][name]
        if prop.get("type") == "array":
            assert prop["maxItems"] <= base["maxItems"]
            if "maxLength" in prop["items"]:
                assert prop["items"]["maxLength"] <= base["items"]["maxLength"]
                assert "pattern" in prop["items"]


def test_enhance_item_requires_fields_and_accepts_from_alias() -> None:
    item = EnhanceItem.model_validate(
        {
            "source": "s",
            "subject": "h",
            "from": "a@b",
            "date": "2025-01-01T00:00:00Z",
            "message_id": "m",
            "content": "c",
        }
    )
    assert item.from_ == "a@b"
    with pytest.raises(ValidationError) as error:
        EnhanceItem.model_validate({"source": "s"})
    missing = {e["loc"][0] for e in error.value.errors()}
    assert {"subject", "from", "date", "message_id", "content"} <= missing


def test_a_link_given_by_the_ingester_is_not_html_unescaped() -> None:
    # "&dd;" is an HTML entity (U+2146): unescaping the ingester's link used to change its query.
    derived = derive_fields(content="plain text", links=["http://0.aa/?campaign_id=&dd;=x"], has_html=False)
    assert derived.links == ["http://0.aa/?dd%3B=x"]
    in_text = derive_fields(content="see https://a.example/p?x=1&amp;utm_source=t", has_html=False)
    assert in_text.links == ["https://a.example/p?x=1"]
