"""Training data: seed rows and corrected records -> labelled examples -> weighted token sequences.

Two line formats, detected per line (see docs/training.md):
- seed: `{"messages": [...], "annotation": {...}}` (../shared/data/seed/README.md); the item is parsed
  out of the seed user prompt, the labels come from `annotation`.
- record: `{"item": {...}, "metadata": {...}}`, written by `training_row` (the review page's
  `enhancer export --format training`); `metadata` holds any subset of GeneratedMetadata fields.

The prompt is always rendered by the shared contract (`render_prompt`) from the same fields the
worker uses, and the target is `render_target` of a complete GeneratedMetadata object. Fields the
example has no label for get a schema-valid placeholder so the JSON stays whole, and zero loss
weight on its tokens: the model sees realistic context but never learns the placeholder.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from app.contract import (
    JSON_SEPARATORS,
    GeneratedMetadata,
    NewsMetadata,
    PromptItem,
    derive_fields,
    render_prompt,
    render_target,
    strip_tracking,
)
from app.contract.field_guards import lead_sentences, summary_rejection
from app.contract.grounding import dedupe, normalize_text
from app.contract.metadata import (
    ENTITIES_MAX_ITEMS,
    ENTITY_MAX,
    ENTITY_MIN,
    SUMMARY_MAX,
    SUMMARY_MIN,
    TOPIC_MAX,
    TOPIC_MIN,
    TOPICS_MAX_ITEMS,
)
from app.core.hashing import file_sha256  # noqa: F401  (re-exported: training's data identity)
from training.errors import DataError, TrainingError
from training.types import TokenizedExample

GENERATED_FIELDS: tuple[str, ...] = tuple(GeneratedMetadata.model_fields)
# Record fields the code computes (NewsMetadata minus GeneratedMetadata): ignored in `metadata`, so a
# whole stored record can be passed as metadata.
COMPUTED_FIELDS = frozenset(NewsMetadata.model_fields) - frozenset(GENERATED_FIELDS)
ITEM_FIELDS = ("source", "headline", "content", "url", "date", "has_html")


def _field_adapter(info: FieldInfo) -> TypeAdapter[Any]:
    # A type built at run time from the field's annotation and FieldInfo: mypy accepts only static
    # type expressions as a TypeForm, so the built type is held as Any.
    annotated: Any = Annotated[info.annotation, info]
    return TypeAdapter(annotated)


_FIELD_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    name: _field_adapter(info) for name, info in GeneratedMetadata.model_fields.items()
}

# Placeholders for unlabelled fields: schema-valid, zero loss weight. The summary placeholder is
# built from the headline (see `_placeholder_summary`), the closest thing to a summary we have.
PLACEHOLDERS: dict[str, Any] = {
    "key_topics": ["news"],
    "entities": [],
    "categories": ["other"],
    "sentiment": "neutral",
    "urgency_level": "low",
    "relevance_score": 5,
    "action_items": [],
}

# The seed user prompt: "Analyze: <source>\n\n### <headline>\n...🔗 **Source:** <url>\n\n"
# "**Summary:** <text>\n\nJSON only:..."
_SEED_SOURCE = re.compile(r"^Analyze: (.+)$", re.M)
_SEED_HEADLINE = re.compile(r"^### (.+)$", re.M)
_SEED_URL = re.compile(r"\*\*Source:\*\* (\S+)")
_SEED_SUMMARY = re.compile(r"\*\*Summary:\*\* (.+?)(?:\n\nJSON only:|\Z)", re.S)
# Some seed headlines are decorated: "📰 **<headline>**". The ingester sends plain headlines.
_SEED_DECORATED_HEADLINE = re.compile(r"[^\w*]*\*\*(.+?)\*\*\s*")


@dataclass(frozen=True)
class LabeledExample:
    """One item and its gold labels (a subset of GeneratedMetadata fields)."""

    item: PromptItem
    labels: Mapping[str, Any]
    line: int
    key: str

    def target(self, *, silver_summaries: bool = False) -> tuple[dict[str, Any], frozenset[str]]:
        """A complete metadata dict (labels + placeholders) and the names of the placeholder fields.

        `silver_summaries`: an item without a gold summary learns its own first sentence that the
        field guards accept (newsletter blurbs lead with what happened), instead of a placeholder."""
        target: dict[str, Any] = {}
        placeholders = set()
        for name in GENERATED_FIELDS:
            if name in self.labels:
                target[name] = self.labels[name]
            elif name == "summary" and silver_summaries and (silver := self.silver_summary()) is not None:
                target[name] = silver
            else:
                target[name] = _placeholder_summary(self.item) if name == "summary" else PLACEHOLDERS[name]
                placeholders.add(name)
        return target, frozenset(placeholders)

    def silver_summary(self) -> str | None:
        labels = [*self.labels.get("key_topics", []), *self.labels.get("entities", [])]
        for sentence in lead_sentences(self.item.text):
            if summary_rejection(sentence, headline=self.item.headline, labels=labels) is None:
                return sentence
        return None


@dataclass
class LoadedData:
    examples: list[LabeledExample]
    lines: int
    duplicates_removed: int
    formats: dict[str, int]
    notes: list[str] = field(default_factory=list)
    # Examples a later line of the same story replaced, in file order (label agreement reads them).
    superseded: list[LabeledExample] = field(default_factory=list)


@dataclass(frozen=True)
class EncodedExample:
    """Everything about one tokenized example, for training and for inspecting the weights."""

    prompt_ids: list[int]
    completion_ids: list[int]
    completion_offsets: list[tuple[int, int]]
    completion_text: str
    field_spans: dict[str, tuple[int, int]]
    placeholders: frozenset[str]
    completion_weights: list[float]
    eos_id: int

    def to_tokenized(self, example_id: str) -> TokenizedExample:
        input_ids = [*self.prompt_ids, *self.completion_ids, self.eos_id]
        weights = [0.0] * len(self.prompt_ids) + self.completion_weights + [1.0]
        return TokenizedExample(input_ids=input_ids, weights=weights, example_id=example_id)


# ---------------------------------------------------------------------------------------------
# Items and the prompt


def _placeholder_summary(item: PromptItem) -> str:
    headline = " ".join(item.headline.split())
    if len(headline) > SUMMARY_MAX:
        headline = headline[: SUMMARY_MAX - 3].rsplit(" ", 1)[0] + "..."
    return headline if len(headline) >= SUMMARY_MIN else "News item from " + item.source[: SUMMARY_MAX - 20]


def _iso_date(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str):
        datetime.fromisoformat(value.replace("Z", "+00:00"))  # raises ValueError when it is not ISO 8601
        return value
    raise ValueError(f"date must be an ISO 8601 string, not {type(value).__name__}")


def normalize_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """The item part of a training row: source, headline (or `subject`), content, url, date, has_html."""
    problems = []
    source = item.get("source")
    headline = item.get("headline", item.get("subject"))
    content = item.get("content")
    url = item.get("url")
    has_html = item.get("has_html")
    if not isinstance(source, str) or not source.strip():
        problems.append("item.source must be a non-empty string")
    if not isinstance(headline, str):
        problems.append("item.headline (or item.subject) must be a string")
    if not isinstance(content, str) or not content.strip():
        problems.append("item.content must be a non-empty string")
    if url is not None and not isinstance(url, str):
        problems.append("item.url must be a string or null")
    if has_html is not None and not isinstance(has_html, bool):
        problems.append("item.has_html must be true, false or null")
    try:
        item_date = _iso_date(item.get("date"))
    except ValueError as error:
        problems.append(f"item.date: {error}")
        item_date = None
    if problems:
        raise ValueError("; ".join(problems))
    return {
        "source": source.strip(),  # type: ignore[union-attr]
        "headline": headline,
        "content": content,
        "url": str(url) if url else None,
        "date": item_date,
        "has_html": has_html,
    }


def prompt_item(item: Mapping[str, Any]) -> PromptItem:
    """The PromptItem the worker builds for this item (same text extraction, see worker.pipeline)."""
    url = item.get("url")
    derived = derive_fields(
        content=item["content"], links=[url] if url else [], has_html=item.get("has_html")
    )
    item_date = item.get("date")
    day = datetime.fromisoformat(item_date.replace("Z", "+00:00")).date().isoformat() if item_date else None
    return PromptItem(source=item["source"], headline=item["headline"], text=derived.text, url=url, date=day)


def item_key(item: PromptItem) -> str:
    """Identity of a story: its link without tracking parameters, else its normalised headline and text.

    Digests repeat a story under a decorated headline (the seed file holds 12 such pairs, labelled
    twice): one story is one example, and never on both sides of the train/validation split.
    """
    if item.url:
        identity = "url:" + strip_tracking(item.url).rstrip("/")
    else:
        identity = "text:" + json.dumps(
            [normalize_text(item.headline), normalize_text(item.text)], ensure_ascii=False
        )
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Labels


def validate_metadata(metadata: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(labels, problems) for a partial GeneratedMetadata object; null means 'no label'."""
    labels: dict[str, Any] = {}
    problems = []
    for name, value in metadata.items():
        if name in COMPUTED_FIELDS:
            continue
        if name not in _FIELD_ADAPTERS:
            problems.append(
                f"metadata.{name}: unknown field (expected some of {', '.join(GENERATED_FIELDS)})"
            )
            continue
        if value is None:
            continue
        if name == "relevance_score" and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"metadata.relevance_score: must be an integer 1-10, got {value!r}")
            continue
        adapter = _FIELD_ADAPTERS[name]
        try:
            labels[name] = adapter.dump_python(adapter.validate_python(value), mode="json")
        except ValidationError as error:
            first = error.errors()[0]
            where = "".join(f"[{p}]" for p in first["loc"])
            problems.append(f"metadata.{name}{where}: {first['msg']}")
    return labels, problems


def training_row(item: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, Any]:
    """One line of the record training format (the review page's export writes exactly this).

    `item`: source, headline or subject, content, url, date (str or datetime), has_html; other keys
    are ignored. `metadata`: any subset of GeneratedMetadata fields (a full stored record works:
    computed fields are dropped; null or missing fields are unlabelled). Raises ValueError naming
    every problem.
    """
    normalized = normalize_item(item)
    labels, problems = validate_metadata(metadata)
    if not labels and not problems:
        problems.append("metadata has no labelled field")
    if problems:
        raise ValueError("; ".join(problems))
    ordered = {name: labels[name] for name in GENERATED_FIELDS if name in labels}
    return {"item": normalized, "metadata": ordered}


def _clean_strings(values: list[str], *, min_len: int, max_len: int, max_items: int) -> tuple[list[str], int]:
    cleaned = dedupe([" ".join(v.split()) for v in values])
    kept = [v for v in cleaned if min_len <= len(v) <= max_len]
    return kept[:max_items], len(values) - len(kept[:max_items])


def _seed_labels(annotation: Any, notes: list[str], line: int) -> tuple[dict[str, Any], list[str]]:
    """Seed annotation -> labels. topics -> key_topics, companies -> entities (see docs/training.md)."""
    if not isinstance(annotation, dict):
        return {}, ["no `annotation` object: seed rows need the human labels"]
    labels: dict[str, Any] = {}
    problems = []
    score = annotation.get("relevance_score")
    if score is not None:
        if isinstance(score, int) and not isinstance(score, bool) and 1 <= score <= 10:
            labels["relevance_score"] = score
        else:
            problems.append(f"annotation.relevance_score must be an integer 1-10, got {score!r}")
    for source_name, target_name, min_len, max_len, max_items in (
        ("topics", "key_topics", TOPIC_MIN, TOPIC_MAX, TOPICS_MAX_ITEMS),
        ("companies", "entities", ENTITY_MIN, ENTITY_MAX, ENTITIES_MAX_ITEMS),
    ):
        values = annotation.get(source_name)
        if values is None:
            continue
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            problems.append(f"annotation.{source_name} must be a list of strings")
            continue
        kept, dropped = _clean_strings(values, min_len=min_len, max_len=max_len, max_items=max_items)
        if dropped:
            notes.append(
                f"line {line}: annotation.{source_name}: kept {len(kept)} of {len(values)} (schema bounds)"
            )
        # An empty companies list is not "no entities" (people and products count too): unlabelled.
        if kept:
            labels[target_name] = kept
    summary = annotation.get("summary")
    if isinstance(summary, str) and summary.strip():
        summary = " ".join(summary.split())
        if SUMMARY_MIN <= len(summary) <= SUMMARY_MAX:
            labels["summary"] = summary
        else:
            notes.append(
                f"line {line}: annotation.summary has {len(summary)} chars, "
                f"outside {SUMMARY_MIN}-{SUMMARY_MAX}: unlabelled"
            )
    elif summary is not None and not isinstance(summary, str):
        problems.append("annotation.summary must be a string")
    return labels, problems


def _seed_item(row: dict[str, Any]) -> dict[str, Any]:
    messages = row.get("messages")
    if not isinstance(messages, list):
        raise ValueError("`messages` must be a list")
    user = next((m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"), None)
    if not isinstance(user, str):
        raise ValueError("no user message with text content")
    headline = _SEED_HEADLINE.search(user)
    summary = _SEED_SUMMARY.search(user)
    if headline is None or summary is None:
        raise ValueError("user prompt lacks '### <headline>' or '**Summary:** <text>'")
    source = _SEED_SOURCE.search(user)
    url = _SEED_URL.search(user)
    plain = _SEED_DECORATED_HEADLINE.fullmatch(headline.group(1).strip())
    created = (row.get("metadata") or {}).get("created_at")
    return normalize_item(
        {
            "source": source.group(1).strip() if source else "newsletter",
            "headline": (plain.group(1) if plain else headline.group(1)).strip(),
            "content": summary.group(1).strip(),
            "url": url.group(1) if url else None,
            "date": created if isinstance(created, str) else None,
        }
    )


def _parse_line(row: Any, line: int, notes: list[str]) -> tuple[str, LabeledExample | None, list[str]]:
    """(format, example, problems) for one parsed JSON line."""
    if not isinstance(row, dict):
        return "?", None, ["expected a JSON object"]
    problems: list[str] = []
    if "item" in row:
        kind = "record"
        unknown = set(row) - {"item", "metadata"}
        if unknown:
            problems.append(f"unknown key(s) {', '.join(sorted(unknown))} (expected item, metadata)")
        if not isinstance(row.get("item"), dict):
            return kind, None, [*problems, "`item` must be an object"]
        if not isinstance(row.get("metadata"), dict):
            return kind, None, [*problems, "`metadata` must be an object"]
        try:
            item = normalize_item(row["item"])
        except ValueError as error:
            problems.append(str(error))
            item = None
        labels, label_problems = validate_metadata(row["metadata"])
        problems += label_problems
    elif "messages" in row:
        kind = "seed"
        try:
            item = _seed_item(row)
        except ValueError as error:
            problems.append(str(error))
            item = None
        labels, label_problems = _seed_labels(row.get("annotation"), notes, line)
        problems += label_problems
    else:
        return (
            "?",
            None,
            ["neither a seed row (`messages` + `annotation`) nor a record row (`item` + `metadata`)"],
        )
    if not problems and not labels:
        problems.append("no labelled field: nothing to learn from this line")
    if problems or item is None:
        return kind, None, problems
    prompt = prompt_item(item)
    return kind, LabeledExample(item=prompt, labels=labels, line=line, key=item_key(prompt)), []


def parse_lines(lines: Iterable[str], *, source: object = "data") -> LoadedData:
    """All examples, or DataError listing every problem as 'line N: problem' (1-based lines)."""
    problems: list[str] = []
    notes: list[str] = []
    formats: dict[str, int] = {}
    by_key: dict[str, LabeledExample] = {}
    superseded: list[LabeledExample] = []
    count = duplicates = 0
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        count += 1
        try:
            row = json.loads(text)
        except json.JSONDecodeError as error:
            problems.append(f"line {number}: not valid JSON ({error.msg} at column {error.colno})")
            continue
        kind, example, line_problems = _parse_line(row, number, notes)
        problems += [f"line {number}: {problem}" for problem in line_problems]
        if example is None:
            continue
        formats[kind] = formats.get(kind, 0) + 1
        if example.key in by_key:
            # A later line for the same story supersedes the earlier one (a later correction wins).
            duplicates += 1
            notes.append(
                f"line {number}: same story as line {by_key[example.key].line}; the later line is used"
            )
            superseded.append(by_key[example.key])
        by_key[example.key] = example
    if not count:
        problems.append("line 1: the file has no examples")
    if problems:
        raise DataError(source, problems)
    return LoadedData(
        list(by_key.values()),
        lines=count,
        duplicates_removed=duplicates,
        formats=formats,
        notes=notes,
        superseded=superseded,
    )


def load_examples(path: Path) -> LoadedData:
    if not path.is_file():
        raise TrainingError(f"{path}: no such data file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(path, [f"line {text_line(path, error.start)}: not UTF-8 text"]) from error
    return parse_lines(text.splitlines(), source=path)


def text_line(path: Path, byte_offset: int) -> int:
    return path.read_bytes()[:byte_offset].count(b"\n") + 1


# ---------------------------------------------------------------------------------------------
# Split


def split_examples(
    examples: list[LabeledExample], *, validation_fraction: float, seed: int
) -> tuple[list[LabeledExample], list[LabeledExample]]:
    """Deterministic: order by a seeded hash of the item, the first round(n * fraction) validate.

    Depends only on the items and the seed, not on line order. At least one example of each side
    when fraction > 0 and there are two or more examples.
    """
    if validation_fraction <= 0 or len(examples) < 2:
        return list(examples), []
    ranked = sorted(examples, key=lambda e: hashlib.sha256(f"{seed}:{e.key}".encode()).hexdigest())
    count = min(len(examples) - 1, max(1, round(len(examples) * validation_fraction)))
    validation_keys = {e.key for e in ranked[:count]}
    train = [e for e in examples if e.key not in validation_keys]
    validation = [e for e in examples if e.key in validation_keys]
    return train, validation


# ---------------------------------------------------------------------------------------------
# Tokens and loss weights


def field_spans(text: str, target: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """Character span of each field's JSON value inside render_target(target)."""
    spans: dict[str, tuple[int, int]] = {}
    cursor = 0
    for name in GENERATED_FIELDS:
        if name not in target:
            continue
        key_text = json.dumps(name) + JSON_SEPARATORS[1]
        value_text = json.dumps(target[name], ensure_ascii=False, separators=JSON_SEPARATORS)
        found = text.find(key_text + value_text, cursor)
        if found < 0:
            raise AssertionError(f"render_target layout changed: cannot find field {name!r}")
        start = found + len(key_text)
        spans[name] = (start, start + len(value_text))
        cursor = start + len(value_text)
    return spans


def encode_example(
    example: LabeledExample,
    tokenizer: Any,
    *,
    field_weights: Mapping[str, float] | None = None,
    silver_summaries: bool = False,
) -> EncodedExample:
    """Prompt and completion tokenized separately, exactly as the worker sees the prompt.

    A completion token gets weight 0 when any of its characters lies inside a placeholder value:
    no placeholder character is ever learned (the JSON keys and punctuation around it still are).
    Otherwise a token inside a labelled field's value gets that field's `field_weights` entry
    (default 1.0; the largest where a token straddles two fields), and JSON keys and punctuation 1.0.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TrainingError("training needs a fast tokenizer (character offsets of tokens)")
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise TrainingError("the tokenizer has no EOS token: cannot teach the model to stop")
    target, placeholders = example.target(silver_summaries=silver_summaries)
    completion = render_target(target)
    spans = field_spans(completion, target)
    zero_spans = [spans[name] for name in placeholders]
    prompt_ids = tokenizer(render_prompt(example.item, tokenizer), add_special_tokens=False)["input_ids"]
    encoded = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [(int(start), int(end)) for start, end in encoded["offset_mapping"]]
    weighted_spans = [(span, (field_weights or {}).get(name, 1.0)) for name, span in spans.items()]
    weights = [
        0.0
        if any(start < b and a < end for a, b in zero_spans)
        else max([w for (a, b), w in weighted_spans if start < b and a < end], default=1.0)
        for start, end in offsets
    ]
    return EncodedExample(
        prompt_ids=list(prompt_ids),
        completion_ids=list(encoded["input_ids"]),
        completion_offsets=offsets,
        completion_text=completion,
        field_spans=spans,
        placeholders=placeholders,
        completion_weights=weights,
        eos_id=int(eos_id),
    )


def tokenize_examples(
    examples: list[LabeledExample],
    tokenizer: Any,
    *,
    max_length: int,
    field_weights: Mapping[str, float] | None = None,
    silver_summaries: bool = False,
) -> tuple[list[TokenizedExample], list[str]]:
    """(tokenized examples, notes about the ones left out because they exceed max_length)."""
    tokenized = []
    skipped = []
    for example in examples:
        encoded = encode_example(
            example, tokenizer, field_weights=field_weights, silver_summaries=silver_summaries
        )
        row = encoded.to_tokenized(example.key[:16])
        if len(row.input_ids) > max_length:
            skipped.append(
                f"line {example.line}: {len(row.input_ids)} tokens > max_length {max_length}, left out"
            )
            continue
        tokenized.append(row)
    return tokenized, skipped
