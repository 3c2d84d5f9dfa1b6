"""Item -> prompt -> constrained generation -> validated NewsMetadata (or a readable reason)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol

import jsonschema
from pydantic import ValidationError

from app.contract import (
    GeneratedMetadata,
    NewsMetadata,
    PromptItem,
    derive_fields,
    news_metadata_json_schema,
    render_prompt,
    strip_tracking,
)
from app.contract.derived import DerivedFields
from app.contract.field_guards import (
    ACTION_ITEM_REPEATS_LABEL,
    SUMMARY_FROM_ITEM,
    TOPIC_FROM_ENTITY,
    TOPIC_REPEATS_WORDS,
    GuardRejection,
    collapse_repeats,
    guard_rejection,
    kept_action_items,
    lead_sentences,
    summary_rejection,
    topics_with_lead_entities,
)
from app.contract.grounding import dedupe, is_grounded, normalize_text
from app.contract.prompt import MAX_PROMPT_TEXT_CHARS
from app.crud import as_utc
from worker.runtime.base import CallTiming, GenerationResult, ModelRuntime
from worker.runtime.schema_budget import decoding_attempts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemInput:
    source: str
    headline: str
    content: str
    date: datetime | None = None
    url: str | None = None
    links: list[str] = field(default_factory=list)
    has_html: bool | None = None

    @classmethod
    def from_submitted(cls, item: SubmittedItem) -> ItemInput:
        """The input of an item as POST /v1/enhance takes it (the stored row or the validated body)."""
        return cls(
            source=item.source,
            headline=item.subject,
            content=item.content,
            date=as_utc(item.date),
            url=str(item.url) if item.url else None,
            links=list(item.links or []),
            has_html=item.has_html,
        )


class SubmittedItem(Protocol):
    """app.models.Item and app.contract.EnhanceItem: the fields the worker reads."""

    @property
    def source(self) -> str: ...

    @property
    def subject(self) -> str: ...

    @property
    def content(self) -> str: ...

    @property
    def date(self) -> datetime | None: ...

    @property
    def url(self) -> Any: ...

    @property
    def links(self) -> Any: ...

    @property
    def has_html(self) -> bool | None: ...


@dataclass
class EnhanceOutcome:
    metadata: NewsMetadata | None = None
    error: str | None = None
    attempts: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    entities_generated: int = 0
    entities_dropped: int = 0
    # Why each rejected attempt was rejected (reason codes, in attempt order), what the accepted
    # attempt had dropped, and what `repair` mended, by reason: bench and eval count these.
    rejections: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    repairs: dict[str, int] = field(default_factory=dict)
    # One per attempt: where its generate call's time went (shared with the call's other rows).
    timings: list[CallTiming] = field(default_factory=list)


def tally(counts: dict[str, int], reason: str, count: int = 1) -> None:
    counts[reason] = counts.get(reason, 0) + count


class HasReasons(Protocol):
    rejections: list[str]
    dropped: dict[str, int]
    repairs: dict[str, int]


def count_reasons(outcomes: Iterable[HasReasons]) -> dict[str, dict[str, int]]:
    """Rejections by attempt and reason ("attempt 1: summary_is_headline"), drops and repairs by reason."""
    counts: dict[str, dict[str, int]] = {"rejections": {}, "dropped": {}, "repairs": {}}
    for outcome in outcomes:
        rejected = {f"attempt {n}: {reason}": 1 for n, reason in enumerate(outcome.rejections, start=1)}
        for name, counted in (
            ("rejections", rejected),
            ("dropped", outcome.dropped),
            ("repairs", outcome.repairs),
        ):
            for reason, count in counted.items():
                tally(counts[name], reason, count)
    return {name: dict(sorted(counted.items())) for name, counted in counts.items()}


class OutputRejected(ValueError):
    """Model output that is not a valid record; the message is the job's error text."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class GuardRejected(OutputRejected):
    """A valid record that a field guard rejects; kept in case no attempt does better."""

    def __init__(self, rejection: GuardRejection, record: NewsMetadata) -> None:
        super().__init__(rejection.message, reason=rejection.reason)
        self.record = record
        self.field = rejection.field


@lru_cache
def _record_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(news_metadata_json_schema())


def _derive(item: ItemInput) -> DerivedFields:
    links = [*item.links, *([item.url] if item.url else [])]
    return derive_fields(content=item.content, links=links, has_html=item.has_html)


# Prompt tokens at most: ~3000 characters of English (MAX_PROMPT_TEXT_CHARS) plus the system prompt
# take ~900; this only bites for text that tokenises badly (emoji, CJK, base64), which would
# otherwise slow every step of the batch and could overrun a small model's context.
MAX_PROMPT_TOKENS = 1536


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Text any tokenizer and database accepts: lone surrogates (from JSON '\\ud800') become U+FFFD."""
    return _SURROGATE_RE.sub("\ufffd", text)


def clean_item(item: ItemInput) -> ItemInput:
    return replace(
        item,
        source=clean_text(item.source),
        headline=clean_text(item.headline),
        content=clean_text(item.content),
        url=clean_text(item.url) if item.url else item.url,
        links=[clean_text(link) for link in item.links],
    )


def _added_tokens(tokenizer: Any) -> list[str]:
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    return sorted({str(getattr(token, "content", token)) for token in added.values()} - {""}, key=len)[::-1]


def neutralize_special_tokens(text: str, tokenizer: Any) -> str:
    """Item text that spells a special token ("<|im_end|>") must not become that token: a zero-width
    space after its first character keeps the text readable and the chat structure intact."""
    for token in _added_tokens(tokenizer):
        if token in text:
            text = text.replace(token, f"{token[0]}\u200b{token[1:]}")
    return text


def _count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def build_prompt(
    item: ItemInput, derived: DerivedFields, tokenizer: Any, *, max_tokens: int = MAX_PROMPT_TOKENS
) -> str:
    """The contract's prompt; text, then headline, then link shortened until it fits `max_tokens`."""
    full_text = neutralize_special_tokens(derived.text, tokenizer)
    parts = {
        "text": full_text[: MAX_PROMPT_TEXT_CHARS + 1],
        "headline": neutralize_special_tokens(item.headline, tokenizer),
        "url": item.url or "",
    }

    def render() -> str:
        prompt_item = PromptItem(
            source=neutralize_special_tokens(item.source, tokenizer),
            headline=parts["headline"],
            text=parts["text"] if len(parts["text"]) <= MAX_PROMPT_TEXT_CHARS else full_text,
            url=parts["url"] or None,
            date=item.date.date().isoformat() if item.date else None,
        )
        return render_prompt(prompt_item, tokenizer)

    prompt = render()
    for _ in range(16):  # each round cuts to the measured ratio, so few rounds are ever needed
        tokens = _count_tokens(tokenizer, prompt) if callable(tokenizer) else 0
        shrinkable = [name for name in ("text", "headline", "url") if parts[name]]
        if tokens <= max_tokens or not shrinkable:
            break
        name = shrinkable[0]
        parts[name] = parts[name][: int(len(parts[name]) * max_tokens / tokens * 0.9)]
        prompt = render()
    return prompt


def finalize(
    result: GenerationResult,
    item: ItemInput,
    derived: DerivedFields,
    outcome: EnhanceOutcome,
    *,
    guards: bool = True,
) -> NewsMetadata:
    """Parse, clean (de-duplicate, ground entities), validate with pydantic and jsonschema, and
    apply the field guards (`guards=False` only to measure what they change)."""
    if result.finish_reason == "length":
        raise OutputRejected(f"output did not finish within {result.new_tokens} tokens", reason="length")
    if result.finish_reason == "repetition":
        raise OutputRejected("output stopped in a repetition loop", reason="repetition")
    try:
        data = json.loads(result.text)
    except json.JSONDecodeError as error:
        raise OutputRejected(
            f"output is not JSON ({error.msg} at char {error.pos})", reason="not_json"
        ) from error
    if not isinstance(data, dict):
        raise OutputRejected("output is not a JSON object", reason="not_json")
    # Clean only well-typed lists; anything else is left for validation to reject with a reason
    # (constrained decoding never produces it, but a crash here would fail the whole batch).
    for name in ("key_topics", "entities", "categories", "action_items"):
        values = data.get(name)
        if isinstance(values, list) and all(isinstance(v, str) for v in values):
            data[name] = dedupe(values) if name != "categories" else list(dict.fromkeys(values))
    source_text = normalize_text(f"{item.headline}\n{derived.text}")
    entities = data.get("entities")
    if not (isinstance(entities, list) and all(isinstance(e, str) for e in entities)):
        raise OutputRejected("output failed validation at entities: not a list of strings", reason="schema")
    grounded = [entity for entity in entities if is_grounded(entity, source_text)]
    outcome.entities_generated += len(entities)
    outcome.entities_dropped += len(entities) - len(grounded)
    data["entities"] = grounded
    record = _validated_record(data, item, derived)
    if not guards:
        return record
    kept = kept_action_items(record.action_items, key_topics=record.key_topics, entities=record.entities)
    if len(kept) < len(record.action_items):
        tally(outcome.dropped, ACTION_ITEM_REPEATS_LABEL, len(record.action_items) - len(kept))
        record = record.model_copy(update={"action_items": kept})
    rejection = _guard(record)
    if rejection is not None:
        raise GuardRejected(rejection, record)
    return record


def _guard(record: NewsMetadata) -> GuardRejection | None:
    return guard_rejection(
        summary=record.summary,
        key_topics=record.key_topics,
        entities=record.entities,
        headline=record.headline,
    )


def _validated_record(data: dict[str, Any], item: ItemInput, derived: DerivedFields) -> NewsMetadata:
    """Generated fields + computed fields, valid under pydantic and the record's JSON Schema."""
    try:
        generated = GeneratedMetadata.model_validate(data)
        record = NewsMetadata(
            **generated.model_dump(),
            source=item.source,
            headline=item.headline,
            date=item.date,
            url=strip_tracking(item.url) if item.url else None,
            links=derived.links,
            content_length=derived.content_length,
            link_count=derived.link_count,
            word_count=derived.word_count,
            reading_time_minutes=derived.reading_time_minutes,
            has_html=derived.has_html,
        )
    except ValidationError as error:
        raise _validation_rejection(error) from error
    problems = sorted(_record_validator().iter_errors(record.model_dump(mode="json")), key=str)
    if problems:
        raise OutputRejected(f"record failed JSON Schema: {problems[0].message}", reason="schema")
    return record


def keep_unrejected_fields(rejected: GuardRejected, retry: NewsMetadata) -> NewsMetadata:
    """The greedy attempt's output with only the field a guard rejected taken from the retry.

    The retry is sampled (it has to differ): it is the better source for the field the guard
    objected to, and the worse one for everything else (entities and topics suffer most).
    """
    merged = rejected.record.model_copy(update={rejected.field: getattr(retry, rejected.field)})
    return merged if _guard(merged) is None else retry


def repair(
    record: NewsMetadata, item: ItemInput, derived: DerivedFields, outcome: EnhanceOutcome
) -> NewsMetadata:
    """The last resort for output that only the guards rejected, on every attempt: a story keeps its
    record (its entities, topics and scores are still worth having) with the guarded fields mended
    where the item allows: stuttering topics collapsed, the summary replaced by the item's first
    sentence that passes the guards. What cannot be mended is kept and counted."""
    data = record.model_dump(include=set(GeneratedMetadata.model_fields))
    topics = dedupe([collapse_repeats(topic) for topic in record.key_topics])
    if topics != record.key_topics:
        data["key_topics"] = topics
        tally(outcome.repairs, TOPIC_REPEATS_WORDS)
    labels = [*topics, *record.entities]
    if summary_rejection(record.summary, headline=item.headline, labels=labels) is not None:
        for sentence in lead_sentences(derived.text):
            if summary_rejection(sentence, headline=item.headline, labels=labels) is None:
                data["summary"] = sentence
                tally(outcome.repairs, SUMMARY_FROM_ITEM)
                break
    repaired = _validated_record(data, item, derived)
    rejection = _guard(repaired)
    if rejection is not None:
        tally(outcome.repairs, f"kept_{rejection.reason}")
    return repaired


def _validation_rejection(error: ValidationError) -> OutputRejected:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return OutputRejected(f"output failed validation at {where}: {first['msg']}", reason="schema")


def unguarded_metadata(results: list[GenerationResult], item: ItemInput) -> NewsMetadata | None:
    """What the pipeline would have stored without the field guards, given one row's results of
    every attempt in order (greedy first attempt, deterministic retry): the first that validates."""
    item = clean_item(item)
    derived = _derive(item)
    for result in results:
        try:
            return finalize(result, item, derived, EnhanceOutcome(), guards=False)
        except OutputRejected:
            continue
    return None


def enhance_items(runtime: ModelRuntime, items: list[ItemInput]) -> list[EnhanceOutcome]:
    """One batched generate call; rows that fail get a second, differently decoded attempt."""
    items = [clean_item(item) for item in items]
    derived = [_derive(item) for item in items]
    prompts = [build_prompt(item, d, runtime.tokenizer) for item, d in zip(items, derived, strict=True)]
    outcomes = [EnhanceOutcome() for _ in items]
    pending = list(range(len(items)))
    guarded: dict[int, GuardRejected] = {}  # rows whose latest rejection was only a field guard's
    for attempt in decoding_attempts():
        if not pending:
            break
        started = time.perf_counter()
        results = runtime.generate(
            [prompts[i] for i in pending],
            max_new_tokens=attempt.max_new_tokens,
            schema=attempt.schema,
            sampling=attempt.sampling,
            stop_on_repetition=attempt.stop_on_repetition,
        )
        elapsed = time.perf_counter() - started
        still_pending = []
        for index, result in zip(pending, results, strict=True):
            outcome = outcomes[index]
            outcome.attempts += 1
            outcome.new_tokens += result.new_tokens
            outcome.seconds += elapsed
            if result.timing is not None:
                outcome.timings.append(result.timing)
            try:
                record = finalize(result, items[index], derived[index], outcome)
                if index in guarded:
                    record = keep_unrejected_fields(guarded.pop(index), record)
                outcome.metadata = record
                outcome.error = None
            except OutputRejected as error:
                outcome.error = str(error)
                outcome.rejections.append(error.reason)
                if isinstance(error, GuardRejected):  # the greedy one is the better base for mending
                    guarded.setdefault(index, error)
                log.info("attempt %d rejected: %s", outcome.attempts, error)
                still_pending.append(index)
        pending = still_pending
    for index in pending:
        if index in guarded:
            outcome = outcomes[index]
            try:
                outcome.metadata = repair(guarded[index].record, items[index], derived[index], outcome)
                outcome.error = None
            except OutputRejected as error:  # not expected: repair only writes bounded fields
                outcome.error = f"{outcome.error}; repair failed: {error}"
    for outcome in outcomes:
        if outcome.metadata is not None:
            outcome.metadata = with_lead_entity_topics(outcome.metadata, outcome)
    return outcomes


def with_lead_entity_topics(record: NewsMetadata, outcome: EnhanceOutcome) -> NewsMetadata:
    """The stored record's topics name its lead entities (field_guards.topics_with_lead_entities).
    Applied once, to the record that is kept: the guards' verdicts do not change (they already
    read the entities beside the topics)."""
    topics = topics_with_lead_entities(record.key_topics, record.entities)
    if len(topics) == len(record.key_topics):
        return record
    tally(outcome.repairs, TOPIC_FROM_ENTITY, len(topics) - len(record.key_topics))
    return record.model_copy(update={"key_topics": topics})
