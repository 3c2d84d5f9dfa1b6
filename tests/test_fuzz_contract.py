"""Property tests (hypothesis) on the contract and the deterministic field extraction.

- Request parsing: any JSON value either parses or fails with a validation error (422), never
  anything else; every well-formed item parses, and a parsed item survives a round trip.
- Metadata: whatever the JSON Schema accepts pydantic accepts, and what pydantic accepts dumps to
  something the JSON Schema accepts; the worker's finalize() turns any output for any valid item
  into a schema-valid record or a readable rejection, never a crash.
- derive_fields / strip_tracking: never crash, links are http(s), unique, free of tracking
  parameters, and the counts agree with the text.
"""

from __future__ import annotations

import json
import math
from datetime import timedelta, timezone
from urllib.parse import parse_qsl, urlsplit

import jsonschema
import pytest
from fastapi.exceptions import RequestValidationError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.api.routes.enhance import check_item_limits, parse_enhance_body
from app.contract import (
    CATEGORIES,
    EnhanceItem,
    GeneratedMetadata,
    NewsMetadata,
    derive_fields,
    generated_json_schema,
    news_metadata_json_schema,
    render_target,
    strip_tracking,
)
from app.contract import metadata as bounds
from app.contract.derived import _TRACKING_KEYS, _TRACKING_PREFIXES, MAX_LINKS, WORDS_PER_MINUTE
from app.contract.request import MAX_BATCH_ITEMS, MAX_CONTENT_CHARS
from worker.pipeline import EnhanceOutcome, ItemInput, OutputRejected, finalize
from worker.runtime.base import GenerationResult

pytestmark = pytest.mark.filterwarnings("ignore")
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that looks like newsletters: words, URLs with tracking parameters, HTML, odd Unicode.
TRACKING = sorted(_TRACKING_KEYS) + [f"{prefix}x" for prefix in _TRACKING_PREFIXES] + ["UTM_Source"]
query_pairs = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(TRACKING), st.text("abcdefgh_%+=&;", max_size=8)), st.text(max_size=8)
    ),
    max_size=5,
)
hosts = st.from_regex(r"\A[a-z0-9]{1,10}(\.[a-z]{2,5}){1,2}\Z")
urls = st.builds(
    lambda scheme, host, path, pairs, fragment: (
        f"{scheme}://{host}/{path}?" + "&".join(f"{k}={v}" for k, v in pairs) + fragment
    ),
    st.sampled_from(["http", "https", "HTTPS"]),
    hosts,
    st.text(st.characters(blacklist_categories=["Cs", "Zs", "Cc"]), max_size=12),
    query_pairs,
    st.sampled_from(["", "#top", "#utm_source=x", "#"]),
)
fragments = st.one_of(
    st.text(max_size=40),
    urls,
    st.sampled_from(
        ['<a href="', '">', "</a>", "<p>", "<script>x()</script>", "<br>", "&amp;", "<!", "<![", "]]>"]
    ),
    st.sampled_from(["(", ")", ".", ",", "\n", " ", "\t", "«", "»", "\u200b", "\x00"]),
)
contents = st.lists(fragments, max_size=30).map("".join)


def _query_keys(url: str) -> set[str]:
    return {key.lower() for key, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)}


def _is_tracking(key: str) -> bool:
    return key in _TRACKING_KEYS or key.startswith(_TRACKING_PREFIXES)


# Deterministic fields ---------------------------------------------------------------------------


@FUZZ
@given(url=st.one_of(urls, st.text(max_size=60)))
def test_strip_tracking_removes_every_tracking_parameter_and_is_idempotent(url: str) -> None:
    try:
        cleaned = strip_tracking(url)
    except ValueError:  # urlsplit refuses some malformed netlocs; callers catch exactly this
        return
    assert not any(_is_tracking(key) for key in _query_keys(cleaned)), cleaned
    assert strip_tracking(cleaned) == cleaned


@FUZZ
@given(content=contents, links=st.lists(st.one_of(urls, st.text(max_size=30)), max_size=5),
       has_html=st.sampled_from([None, True, False]))  # fmt: skip
def test_derive_fields_never_crashes_and_is_consistent(
    content: str, links: list[str], has_html: bool | None
) -> None:
    derived = derive_fields(content=content, links=links, has_html=has_html)
    assert derived.content_length == len(content)
    assert derived.link_count == len(derived.links) <= MAX_LINKS
    assert len(set(derived.links)) == len(derived.links)
    for link in derived.links:
        assert link.lower().startswith(("http://", "https://")), link
        assert not any(_is_tracking(key) for key in _query_keys(link)), link
    assert derived.word_count == len(derived.text.split())
    assert derived.reading_time_minutes == math.ceil(derived.word_count / WORDS_PER_MINUTE)
    if has_html is not None:
        assert derived.has_html is has_html


@FUZZ
@given(url=urls)
def test_links_given_by_the_ingester_come_back_clean(url: str) -> None:
    derived = derive_fields(content="plain text", links=[url], has_html=False)
    expected = strip_tracking(url.rstrip(".,;:!?*"))
    assert derived.links == [expected]


# Request parsing ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
ITEM_KEYS = [
    "source",
    "subject",
    "from",
    "date",
    "message_id",
    "content",
    "url",
    "links",
    "has_html",
    "items",
]
item_like = st.dictionaries(st.sampled_from(ITEM_KEYS), json_values, max_size=10)


@FUZZ
@given(body=st.one_of(json_values, item_like, st.builds(lambda items: {"items": items}, st.lists(item_like))))
def test_any_json_body_parses_or_is_a_422(body: object) -> None:
    try:
        check_item_limits(body, max_items=MAX_BATCH_ITEMS, max_chars=MAX_CONTENT_CHARS)
        items, single = parse_enhance_body(body)
    except RequestValidationError as error:
        assert error.errors() and all("loc" in e and "msg" in e for e in error.errors())
        return
    assert items and all(isinstance(item, EnhanceItem) for item in items)
    assert single == (not (isinstance(body, dict) and "items" in body))


# ISO 8601 offsets are whole minutes (historic zones with seconds are not valid ISO 8601).
offsets = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
visible_text = st.text(st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=60)
well_formed_items = st.fixed_dictionaries(
    {
        "source": visible_text.filter(lambda s: s.strip()).map(lambda s: s[:200]),
        "subject": st.text(max_size=100),
        "from": st.emails(),
        "date": st.datetimes(timezones=offsets).map(lambda d: d.isoformat()),
        "message_id": visible_text.filter(lambda s: s.strip()),
        "content": contents.filter(lambda s: s.replace("\x00", "").strip()),
    },
    optional={
        "url": urls,
        "links": st.lists(urls, max_size=3),
        "has_html": st.booleans() | st.none(),
    },
)


@FUZZ
@given(item=well_formed_items)
def test_well_formed_items_parse_and_round_trip(item: dict) -> None:
    (parsed,), single = parse_enhance_body(json.loads(json.dumps(item)))
    assert single
    again = EnhanceItem.model_validate(parsed.model_dump(mode="json", by_alias=True))
    assert again == parsed
    assert "\x00" not in parsed.content
    if parsed.url is not None:
        strip_tracking(str(parsed.url))  # what the worker does with it: must not raise


# Metadata ------------------------------------------------------------------------------------------

topic = st.text(min_size=bounds.TOPIC_MIN, max_size=bounds.TOPIC_MAX)
generated = st.fixed_dictionaries(
    {
        "summary": st.text(min_size=bounds.SUMMARY_MIN, max_size=bounds.SUMMARY_MAX),
        "key_topics": st.lists(topic, min_size=bounds.TOPICS_MIN_ITEMS, max_size=bounds.TOPICS_MAX_ITEMS),
        "entities": st.lists(
            st.text(min_size=bounds.ENTITY_MIN, max_size=bounds.ENTITY_MAX),
            max_size=bounds.ENTITIES_MAX_ITEMS,
        ),
        "categories": st.lists(
            st.sampled_from(CATEGORIES),
            min_size=bounds.CATEGORIES_MIN_ITEMS,
            max_size=bounds.CATEGORIES_MAX_ITEMS,
        ),
        "sentiment": st.sampled_from(["positive", "neutral", "negative", "mixed"]),
        "urgency_level": st.sampled_from(["low", "medium", "high"]),
        "relevance_score": st.integers(1, 10),
        "action_items": st.lists(
            st.text(min_size=bounds.ACTION_MIN, max_size=bounds.ACTION_MAX), max_size=bounds.ACTIONS_MAX_ITEMS
        ),
    }
)


def _mutations(data: dict) -> st.SearchStrategy[dict]:
    """A valid object with one thing broken (or not): a key dropped or added, a value replaced."""
    keys = sorted(data)
    return st.one_of(
        st.just(data),
        st.sampled_from(keys).map(lambda k: {n: v for n, v in data.items() if n != k}),
        st.just({**data, "extra": 1}),
        st.tuples(st.sampled_from(keys), json_values).map(lambda kv: {**data, kv[0]: kv[1]}),
    )


@FUZZ
@given(data=generated.flatmap(_mutations))
def test_pydantic_and_json_schema_agree_on_generated_metadata(data: dict) -> None:
    schema_ok = jsonschema.Draft202012Validator(generated_json_schema()).is_valid(data)
    try:
        model = GeneratedMetadata.model_validate(data)
    except ValidationError:
        assert not schema_ok, f"the JSON Schema accepts what pydantic rejects: {data}"
        return
    # pydantic may coerce (e.g. "5" -> 5); what it hands on always satisfies the schema.
    assert jsonschema.Draft202012Validator(generated_json_schema()).is_valid(model.model_dump(mode="json"))
    assert json.loads(render_target(model)) == model.model_dump(mode="json")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    item=well_formed_items, output=generated.flatmap(_mutations), finish=st.sampled_from(["stop", "length"])
)
def test_finalize_turns_any_output_into_a_valid_record_or_a_reason(
    item: dict, output: dict, finish: str
) -> None:
    (parsed,), _ = parse_enhance_body(item)
    item_input = ItemInput(
        source=parsed.source, headline=parsed.subject, content=parsed.content, date=parsed.date,
        url=str(parsed.url) if parsed.url else None, links=list(parsed.links), has_html=parsed.has_html,
    )  # fmt: skip
    derived = derive_fields(
        content=item_input.content,
        links=[*item_input.links, *([item_input.url] if item_input.url else [])],
        has_html=item_input.has_html,
    )
    result = GenerationResult(text=json.dumps(output), new_tokens=10, finish_reason=finish)
    try:
        record = finalize(result, item_input, derived, EnhanceOutcome())
    except OutputRejected as rejection:
        assert str(rejection)
        return
    assert finish == "stop"
    assert isinstance(record, NewsMetadata)
    jsonschema.validate(record.model_dump(mode="json"), news_metadata_json_schema())
    assume(record.links)
    assert not any(_is_tracking(key) for link in record.links for key in _query_keys(link))
