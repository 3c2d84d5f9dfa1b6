"""The field guards: bad summaries and stuttering topics are rejected, label-only action items dropped."""

from __future__ import annotations

import json

import pytest

from app.contract.field_guards import (
    ACTION_ITEM_REPEATS_LABEL,
    SUMMARY_COPIES_INSTRUCTIONS,
    SUMMARY_FROM_ITEM,
    SUMMARY_IS_HEADLINE,
    SUMMARY_IS_LABEL,
    SUMMARY_TOO_FEW_WORDS,
    TOPIC_FROM_ENTITY,
    TOPIC_REPEATS_WORDS,
    guard_rejection,
    kept_action_items,
    repeats_labels,
    topics_with_lead_entities,
)
from app.contract.prompt import SYSTEM_PROMPT
from worker.pipeline import (
    EnhanceOutcome,
    ItemInput,
    OutputRejected,
    _derive,
    count_reasons,
    enhance_items,
    finalize,
)
from worker.runtime.base import GenerationResult, RuntimeInfo

HEADLINE = "Nvidia releases Nemotron open reasoning models"
GOOD = {
    "summary": "Nvidia released the Nemotron family of open reasoning models for agents.",
    "key_topics": ["Open Models", "Reasoning"],
    "entities": ["Nvidia", "Nemotron"],
    "categories": ["model_release"],
    "sentiment": "positive",
    "urgency_level": "medium",
    "relevance_score": 8,
    "action_items": ["Try the Nemotron models on an agent benchmark"],
}
# No topic of GOOD names its entities: every record stored from it lists them among its topics too.
LEAD_ENTITIES = ["Nvidia", "Nemotron"]


def _check(**changes: object) -> str | None:
    fields = {**GOOD, **changes}
    rejection = guard_rejection(
        summary=fields["summary"],  # type: ignore[arg-type]
        key_topics=fields["key_topics"],  # type: ignore[arg-type]
        entities=fields["entities"],  # type: ignore[arg-type]
        headline=HEADLINE,
    )
    return rejection.reason if rejection else None


@pytest.mark.parametrize(
    ("summary", "reason"),
    [
        ("AI Guide", SUMMARY_TOO_FEW_WORDS),
        ("Nvidia ships models.", SUMMARY_TOO_FEW_WORDS),
        ("One factual sentence.", SUMMARY_COPIES_INSTRUCTIONS),
        ("organisations, people and products named in the item", SUMMARY_COPIES_INSTRUCTIONS),
        ("Nvidia releases Nemotron open reasoning models.", SUMMARY_IS_HEADLINE),
        ("NVIDIA releases  Nemotron open-reasoning models", None),  # not the same words: a hyphen joins
        ("Open Models", SUMMARY_IS_LABEL),
        ("Nemotron", SUMMARY_IS_LABEL),
        (GOOD["summary"], None),
        ("Nvidia released open Nemotron models that reason step by step.", None),
    ],
)
def test_summary_guard(summary: str, reason: str | None) -> None:
    assert _check(summary=summary) == reason


@pytest.mark.parametrize(
    ("topic", "rejected"),
    [
        ("AI Technique Technique", True),
        ("Nvidia Deepmind LLM LLM", True),
        ("AI Tools AI Tools", True),
        ("agents agents", True),
        ("AI Technique", False),
        ("Bora Bora resort AI", True),  # a real name can stutter too; rare enough to retry
        ("LLM evaluation", False),
        ("GPT-4 vs GPT-4o", False),
    ],
)
def test_topic_guard(topic: str, rejected: bool) -> None:
    assert (_check(key_topics=["Reasoning", topic]) == TOPIC_REPEATS_WORDS) is rejected


def test_action_items_that_only_repeat_labels_are_dropped() -> None:
    topics, entities = ["AI Tooling", "AI Infrastructure"], ["Nvidia"]
    actions = [
        "AI Tooling, AI Infrastructure",
        "ai tooling",
        "Nvidia",
        "AI Tooling and Nvidia",
        "Benchmark Nvidia's new models against AI Tooling you use",
    ]
    assert kept_action_items(actions, key_topics=topics, entities=entities) == [actions[-1]]
    assert not repeats_labels("Read the paper", topics)


def test_the_system_prompt_itself_counts_as_copied() -> None:
    assert _check(summary=SYSTEM_PROMPT[:200]) == SUMMARY_COPIES_INSTRUCTIONS


def _finalize(fields: dict, outcome: EnhanceOutcome, *, guards: bool = True):  # type: ignore[no-untyped-def]
    item = ItemInput(
        source="TLDR AI",
        headline=HEADLINE,
        content="Nvidia released Nemotron, a family of open reasoning models for building agents.",
    )
    result = GenerationResult(text=json.dumps(fields), new_tokens=80, finish_reason="stop")
    return finalize(result, item, _derive(item), outcome, guards=guards)


def test_pipeline_rejects_a_headline_summary_with_its_reason_and_counts_it() -> None:
    outcome = EnhanceOutcome()
    with pytest.raises(OutputRejected) as raised:
        _finalize({**GOOD, "summary": HEADLINE}, outcome)
    assert raised.value.reason == SUMMARY_IS_HEADLINE
    assert "repeats the headline" in str(raised.value)
    # Without the guards the same output is a valid record (that is what eval compares against).
    assert _finalize({**GOOD, "summary": HEADLINE}, EnhanceOutcome(), guards=False).summary == HEADLINE


def test_pipeline_drops_label_action_items_and_counts_the_drop() -> None:
    outcome = EnhanceOutcome()
    fields = {**GOOD, "action_items": ["Open Models, Reasoning", "Try the models on an agent benchmark"]}
    record = _finalize(fields, outcome)
    assert record.action_items == ["Try the models on an agent benchmark"]
    assert outcome.dropped == {ACTION_ITEM_REPEATS_LABEL: 1}
    outcome.rejections = ["length", SUMMARY_IS_HEADLINE]
    assert count_reasons([outcome, EnhanceOutcome(rejections=[SUMMARY_IS_HEADLINE])]) == {
        "rejections": {
            "attempt 1: length": 1,
            f"attempt 1: {SUMMARY_IS_HEADLINE}": 1,
            f"attempt 2: {SUMMARY_IS_HEADLINE}": 1,
        },
        "dropped": {ACTION_ITEM_REPEATS_LABEL: 1},
        "repairs": {},
    }


@pytest.mark.parametrize(
    ("topics", "entities", "expected"),
    [
        (["AI Chip"], ["OpenAI", "Broadcom", "TSMC"], ["AI Chip", "OpenAI", "Broadcom"]),  # the first two
        (["OpenAI Sora", "Video"], ["OpenAI", "Sora"], ["OpenAI Sora", "Video"]),  # already named
        (["Agents"], ["Google DeepMind"], ["Agents", "Google DeepMind"]),
        (["Google"], ["Google DeepMind"], ["Google"]),  # the topic's words are the entity's
        (["A", "B", "C", "D"], ["Nvidia", "Arm"], ["A", "B", "C", "D", "Nvidia"]),  # at most 5 topics
        (["A", "B", "C", "D", "E"], ["Nvidia"], ["A", "B", "C", "D", "E"]),
        (["Chips"], ["X", "A" * 49], ["Chips"]),  # out of the contract's 2-48 characters
        (["Chips"], [], ["Chips"]),
    ],
)
def test_the_lead_entities_are_key_topics_when_no_topic_names_them(
    topics: list[str], entities: list[str], expected: list[str]
) -> None:
    assert topics_with_lead_entities(topics, entities) == expected


def test_the_stored_record_names_its_lead_entities_among_its_topics_counted_once() -> None:
    # The first attempt is guard-rejected, the retry's summary is taken: the topics gain the lead
    # entities once, on the record that is kept.
    runtime = ScriptedRuntime([{**GOOD, "summary": "AI Guide Agents"}], [GOOD])
    [outcome] = enhance_items(runtime, [ITEM])  # type: ignore[arg-type]
    assert outcome.metadata is not None
    assert outcome.metadata.key_topics == ["Open Models", "Reasoning", "Nvidia", "Nemotron"]
    assert outcome.repairs == {TOPIC_FROM_ENTITY: 2}


class ScriptedRuntime:
    """Answers each generate call with the next scripted texts: the pipeline's logic is under test
    here, not a model (the real runtimes are tested in test_runtime.py)."""

    def __init__(self, *calls: list[dict]) -> None:
        self.calls = list(calls)
        self.tokenizer = None
        self.info = RuntimeInfo("scripted", "torch", "cpu", "fp32")

    def generate(self, prompts: list[str], **kwargs: object) -> list[GenerationResult]:
        texts = self.calls.pop(0)
        assert len(texts) == len(prompts)
        return [GenerationResult(text=json.dumps(t), new_tokens=60, finish_reason="stop") for t in texts]


ITEM = ItemInput(
    source="TLDR AI",
    headline=HEADLINE,
    content="Nvidia released Nemotron, a family of open reasoning models for building agents. "
    "The models come in three sizes.",
)


def test_a_retry_replaces_only_the_field_the_guard_rejected() -> None:
    # The sampled retry writes a good summary but worse entities and topics: keep the greedy ones.
    retry = {**GOOD, "entities": ["Nvidia"], "key_topics": ["Chips"]}
    runtime = ScriptedRuntime([{**GOOD, "summary": "AI Guide Agents"}], [retry])
    [outcome] = enhance_items(runtime, [ITEM])  # type: ignore[arg-type]
    record = outcome.metadata
    assert record is not None and record.summary == GOOD["summary"]
    assert record.entities == GOOD["entities"]
    assert record.key_topics == [*GOOD["key_topics"], *LEAD_ENTITIES]  # the greedy topics
    assert outcome.rejections == [SUMMARY_TOO_FEW_WORDS] and outcome.attempts == 2
    assert outcome.repairs == {TOPIC_FROM_ENTITY: 2}


def test_a_merge_the_guards_reject_takes_the_whole_retry() -> None:
    # The retry's summary is one of the first attempt's topics: merged, it would fail the guard.
    first = {**GOOD, "summary": "AI Guide Agents", "key_topics": ["Open reasoning models for agents", "AI"]}
    retry = {**GOOD, "summary": "Open reasoning models for agents", "key_topics": ["Reasoning"]}
    [outcome] = enhance_items(ScriptedRuntime([first], [retry]), [ITEM])  # type: ignore[arg-type]
    assert outcome.metadata is not None
    assert outcome.metadata.summary == retry["summary"]
    assert outcome.metadata.key_topics == ["Reasoning", *LEAD_ENTITIES]


def test_when_every_attempt_is_guard_rejected_the_record_is_mended_not_lost() -> None:
    stutter = {**GOOD, "summary": HEADLINE, "key_topics": ["AI Technique Technique", "Reasoning"]}
    runtime = ScriptedRuntime([stutter], [{**stutter, "summary": "One factual sentence."}])
    [outcome] = enhance_items(runtime, [ITEM])  # type: ignore[arg-type]
    record = outcome.metadata
    assert record is not None, outcome.error
    assert outcome.rejections == [TOPIC_REPEATS_WORDS, TOPIC_REPEATS_WORDS]
    assert record.key_topics == ["AI Technique", "Reasoning", *LEAD_ENTITIES]
    assert (
        record.summary == "Nvidia released Nemotron, a family of open reasoning models for building agents."
    )
    assert outcome.repairs == {TOPIC_REPEATS_WORDS: 1, SUMMARY_FROM_ITEM: 1, TOPIC_FROM_ENTITY: 2}
    assert (
        guard_rejection(
            summary=record.summary, key_topics=record.key_topics, entities=record.entities, headline=HEADLINE
        )
        is None
    )


def test_a_summary_the_item_cannot_mend_is_kept_and_counted() -> None:
    item = ItemInput(source="TLDR AI", headline=HEADLINE, content=HEADLINE)
    runtime = ScriptedRuntime([{**GOOD, "summary": HEADLINE}], [{**GOOD, "summary": HEADLINE}])
    [outcome] = enhance_items(runtime, [item])  # type: ignore[arg-type]
    assert outcome.metadata is not None and outcome.metadata.summary == HEADLINE
    assert outcome.repairs == {f"kept_{SUMMARY_IS_HEADLINE}": 1, TOPIC_FROM_ENTITY: 2}


def test_schema_failures_still_fail_the_job() -> None:
    runtime = ScriptedRuntime([{**GOOD, "relevance_score": 11}], [{**GOOD, "sentiment": "angry"}])
    [outcome] = enhance_items(runtime, [ITEM])  # type: ignore[arg-type]
    assert outcome.metadata is None and "sentiment" in (outcome.error or "")
    assert outcome.rejections == ["schema", "schema"]
