"""`evaluate(model_source, items)`: run a model the way the worker does and score what it stores.

Generation goes through worker.runtime.load_runtime and worker.pipeline.enhance_items (constrained
decoding, retry, de-duplication, entity grounding, validation): the metrics describe the records
the service would store. A thin recorder around the runtime also keeps the raw text of the first
attempt, so validity is reported twice: raw model (first attempt, before any repair) and pipeline.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from app.contract import generated_json_schema, render_target
from app.contract.field_guards import guard_rejection, kept_action_items
from training.evaluation import metrics as m
from training.evaluation.items import EvalItem, Gold
from training.evaluation.overlap import check_no_overlap, trained_items
from training.evaluation.summary_judgement import summary_failure
from worker.pipeline import EnhanceOutcome, count_reasons, enhance_items, unguarded_metadata
from worker.runtime.base import GenerationResult, ModelRuntime

log = logging.getLogger(__name__)

# The keys `enhancer eval --json` always prints (issue 5), in this order.
SUMMARY_KEYS = (
    "n_items",
    "json_valid_rate",
    "schema_valid_rate",
    "entities_f1_strict",
    "entities_f1_fuzzy",
    "key_topics_f1_fuzzy",
    "relevance_mae",
    "relevance_within_1",
    "summary_sentence_rate",
    "summary_rouge_l",
    "summary_cosine",
    "consistency",
    "p50_s",
    "p95_s",
)


class RecordingRuntime:
    """Delegates to a runtime and keeps every generate call's results, in call order."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime
        self.info = runtime.info
        self.tokenizer = runtime.tokenizer
        self.calls: list[list[GenerationResult]] = []

    def generate(self, prompts: list[str], **kwargs: Any) -> list[GenerationResult]:
        results = self.runtime.generate(prompts, **kwargs)
        self.calls.append(results)
        return results


@dataclass
class Prediction:
    """One item in one run: the first attempt's raw text and what the pipeline stored."""

    key: str
    raw_text: str
    raw_finish: str
    final_text: str
    metadata: dict[str, Any] | None
    error: str | None
    attempts: int
    seconds: float
    rejections: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    repairs: dict[str, int] = field(default_factory=dict)
    # The record the pipeline would have stored without the field guards (to measure them).
    unguarded: dict[str, Any] | None = None

    @property
    def signature(self) -> str:
        """What consistency compares: the stored generated fields, or the failure."""
        if self.metadata is not None:
            return render_target(self.metadata)
        return f"error: {self.error} | {self.final_text}"


@dataclass
class EvalReport:
    model: str
    runtime: dict[str, Any]
    metrics: dict[str, Any]
    predictions: list[Prediction] = field(default_factory=list)  # first run
    runs: int = 1
    notes: list[str] = field(default_factory=list)
    all_runs: list[list[Prediction]] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        return {key: self.metrics.get(key) for key in SUMMARY_KEYS} | {
            k: v for k, v in self.metrics.items() if k not in SUMMARY_KEYS
        }

    def to_json(self, *, with_predictions: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {"model": self.model, "runtime": self.runtime, **_finite(self.summary())}
        if self.notes:
            data["notes"] = self.notes
        if with_predictions:
            data["predictions"] = [asdict(p) for p in self.predictions]
        return data


def _finite(values: dict[str, Any]) -> dict[str, Any]:
    """NaN (no item to score) becomes null in JSON."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}


@lru_cache
def _schema_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(generated_json_schema())


def parse_json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def raw_schema_valid(text: str) -> bool:
    """The first attempt, as the model wrote it, is a valid GeneratedMetadata (no repair, no grounding)."""
    value = parse_json_object(text)
    return value is not None and not any(True for _ in _schema_validator().iter_errors(value))


def _predictions_for_batch(
    batch: list[EvalItem], outcomes: list[EnhanceOutcome], calls: list[list[GenerationResult]]
) -> list[Prediction]:
    """enhance_items calls generate once for the whole batch, then once per retry for the rows left."""
    first = calls[0]
    per_row: dict[int, list[GenerationResult]] = {i: [result] for i, result in enumerate(first)}
    for attempt, results in enumerate(calls[1:], start=1):
        pending = [i for i, outcome in enumerate(outcomes) if outcome.attempts > attempt]
        for index, result in zip(pending, results, strict=True):
            per_row[index].append(result)
    predictions = []
    for index, (item, outcome) in enumerate(zip(batch, outcomes, strict=True)):
        final_result = per_row[index][-1]
        unguarded = unguarded_metadata(per_row[index], item.item_input())
        predictions.append(
            Prediction(
                key=item.key,
                raw_text=first[index].text,
                raw_finish=first[index].finish_reason,
                final_text=final_result.text,
                metadata=outcome.metadata.model_dump(mode="json") if outcome.metadata is not None else None,
                error=outcome.error,
                attempts=outcome.attempts,
                seconds=round(outcome.seconds, 3),
                rejections=list(outcome.rejections),
                dropped=dict(outcome.dropped),
                repairs=dict(outcome.repairs),
                unguarded=unguarded.model_dump(mode="json") if unguarded is not None else None,
            )
        )
    return predictions


def flagged_fields(metadata: dict[str, Any] | None, headline: str) -> dict[str, bool]:
    """Which read fields of a stored record the guards object to (all False for no record)."""
    if metadata is None:
        return {"summary_or_topic": False, "action_items": False}
    topics, entities = metadata["key_topics"], metadata["entities"]
    rejection = guard_rejection(
        summary=metadata["summary"], key_topics=topics, entities=entities, headline=headline
    )
    actions = metadata["action_items"]
    kept = kept_action_items(actions, key_topics=topics, entities=entities)
    return {"summary_or_topic": rejection is not None, "action_items": len(kept) < len(actions)}


def run_model(runtime: ModelRuntime, items: list[EvalItem], *, batch_size: int) -> list[Prediction]:
    """One pass over the items, in batches as the worker forms them."""
    predictions: list[Prediction] = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        recorder = RecordingRuntime(runtime)
        outcomes = enhance_items(recorder, [item.item_input() for item in batch])  # type: ignore[arg-type]
        predictions += _predictions_for_batch(batch, outcomes, recorder.calls)
        done = start + len(batch)
        log.info("evaluated %d/%d items", done, len(items))
    return predictions


def _field(prediction: Prediction, name: str) -> Any:
    return (prediction.metadata or {}).get(name)


def score(items: list[EvalItem], runs: list[list[Prediction]]) -> dict[str, Any]:
    """All label metrics from the first run; consistency and latency from all runs."""
    from app.knowledge.embeddings import get_minilm

    first = runs[0]
    n = len(items)
    pairs = list(zip(items, first, strict=True))
    results: dict[str, Any] = {"n_items": n}
    results["json_valid_rate"] = m.mean(
        float(p.metadata is not None or parse_json_object(p.final_text) is not None) for p in first
    )
    results["schema_valid_rate"] = m.mean(float(p.metadata is not None) for p in first)
    results["raw_json_valid_rate"] = m.mean(float(parse_json_object(p.raw_text) is not None) for p in first)
    results["raw_schema_valid_rate"] = m.mean(float(raw_schema_valid(p.raw_text)) for p in first)
    results["retried_rate"] = m.mean(float(p.attempts > 1) for p in first)

    entity_pairs = [(_field(p, "entities") or [], i.gold.entities) for i, p in pairs]
    topic_pairs = [(_field(p, "key_topics") or [], i.gold.key_topics) for i, p in pairs]
    for name, fuzzy in (("strict", False), ("fuzzy", True)):
        ent = m.micro_prf(entity_pairs, fuzzy=fuzzy, entity=True)
        top = m.micro_prf(topic_pairs, fuzzy=fuzzy, entity=False)
        results[f"entities_precision_{name}"] = ent.precision
        results[f"entities_recall_{name}"] = ent.recall
        results[f"entities_f1_{name}"] = ent.f1
        results[f"key_topics_precision_{name}"] = top.precision
        results[f"key_topics_recall_{name}"] = top.recall
        results[f"key_topics_f1_{name}"] = top.f1
        results["entities_n_items"] = ent.items
        results["key_topics_n_items"] = top.items

    # The field guards, measured on the same generations: what the records would be without them.
    for name in ("entities", "key_topics"):
        prf = m.micro_prf(
            [((p.unguarded or {}).get(name) or [], getattr(i.gold, name)) for i, p in pairs],
            fuzzy=True,
            entity=name == "entities",
        )
        results[f"{name}_f1_fuzzy_unguarded"] = prf.f1
    for label, pick in (("", lambda p: p.metadata), ("_unguarded", lambda p: p.unguarded)):
        flags = [flagged_fields(pick(p), i.prompt.headline) for i, p in pairs]
        results[f"flagged_summary_or_topic_rate{label}"] = m.mean(float(f["summary_or_topic"]) for f in flags)
        results[f"flagged_action_items_rate{label}"] = m.mean(float(f["action_items"]) for f in flags)
    results["schema_valid_rate_unguarded"] = m.mean(float(p.unguarded is not None) for p in first)
    counted = count_reasons(first)
    results.update(counted)  # rejections, dropped, repairs: by reason

    mae, within_1, n_relevance = m.relevance_errors(
        (_field(p, "relevance_score"), i.gold.relevance_score) for i, p in pairs
    )
    results.update(relevance_mae=mae, relevance_within_1=within_1, relevance_n_items=n_relevance)
    results["relevance_n_gold"] = sum(i.gold.relevance_score is not None for i in items)
    results["relevance_within_1_best_constant"] = m.best_constant_within_1(
        i.gold.relevance_score for i in items
    )

    # Every item counts: no record is no sentence (training.evaluation.summary_judgement states the rule).
    failures = [
        summary_failure(_field(p, "summary"), headline=i.prompt.headline, text=i.prompt.text)
        for i, p in pairs
    ]
    results["summary_sentence_rate"] = m.mean(float(f is None) for f in failures)
    results["summary_failures"] = dict(Counter(f for f in failures if f is not None).most_common())

    summaries = [(_field(p, "summary"), i.gold.summary) for i, p in pairs if i.gold.summary]
    scored = [(s or "", g) for s, g in summaries]
    results["summary_n_items"] = len(scored)
    results["summary_rouge_l"] = m.mean(m.rouge_l(s, g) for s, g in scored) if scored else math.nan
    if scored:
        cosines = get_minilm().cosine([s for s, _ in scored], [g for _, g in scored])
        # A missing summary scores 0, not the similarity of an empty string.
        results["summary_cosine"] = m.mean(c if s else 0.0 for c, (s, _) in zip(cosines, scored, strict=True))
    else:
        results["summary_cosine"] = math.nan

    # Repeats may cover only the first items (`consistency_items`): compare over what every run has.
    common = min(len(run) for run in runs)
    results["consistency"] = (
        m.consistency([[p.signature for p in run[:common]] for run in runs]) if len(runs) > 1 else math.nan
    )
    results["consistency_n_items"] = common if len(runs) > 1 else 0
    latencies = [p.seconds for run in runs for p in run]
    results["p50_s"] = m.percentile(latencies, 50)
    results["p95_s"] = m.percentile(latencies, 95)
    results["mean_attempts"] = m.mean(p.attempts for p in first)
    results["runs"] = len(runs)
    return {k: (round(v, 4) if isinstance(v, float) and not math.isnan(v) else v) for k, v in results.items()}


def load_eval_runtime(
    model_source: str,
    *,
    backend: str | None = None,
    device: str | None = None,
    precision: str | None = None,
    cache_dir: Path | None = None,
) -> ModelRuntime:
    """The runtime the worker would load, with the service's settings unless overridden."""
    from app.core.config import get_settings
    from worker.runtime import load_runtime

    settings = get_settings()
    return load_runtime(
        model_source,
        backend=backend or settings.model_backend,
        device=device or settings.model_device,
        precision=precision or settings.weight_precision,
        cache_dir=cache_dir or settings.models_dir / "cache",
    )


def evaluate(
    model_source: str | Path,
    items: list[EvalItem],
    *,
    limit: int | None = None,
    repeats: int = 2,
    batch_size: int | None = None,
    runtime: ModelRuntime | None = None,
    backend: str | None = None,
    device: str | None = None,
    precision: str | None = None,
    trained_on: Path | None = None,
    consistency_items: int | None = None,
) -> EvalReport:
    """Score a model on items it was not trained on (TrainTestOverlapError otherwise).

    `repeats` passes over the items (consistency needs 2 or more); passes after the first cover
    only the first `consistency_items` items (rounded up to whole batches, so every batch is the
    same as in the first pass) when given. `batch_size` defaults to the worker's
    ENHANCER_MAX_BATCH. Pass `runtime` to reuse a loaded model.
    """
    from app.core.config import get_settings

    source = str(model_source)
    check_no_overlap(items, trained_items(source, trained_on=trained_on), model=source)
    if limit is not None:
        items = items[:limit]
    if not items:
        raise ValueError("no items to evaluate")
    if runtime is None:
        runtime = load_eval_runtime(source, backend=backend, device=device, precision=precision)
    batch_size = batch_size or get_settings().max_batch_size
    runs = []
    started = time.perf_counter()
    repeat_count = len(items)
    if consistency_items is not None:
        repeat_count = min(len(items), -(-max(1, consistency_items) // batch_size) * batch_size)
    for repeat in range(max(1, repeats)):
        subset = items if repeat == 0 else items[:repeat_count]
        log.info("run %d of %d over %d items", repeat + 1, repeats, len(subset))
        runs.append(run_model(runtime, subset, batch_size=batch_size))
    seconds = time.perf_counter() - started
    metrics = score(items, runs)
    metrics["wall_s"] = round(seconds, 1)
    info = runtime.info
    runtime_info = {
        "name": info.name,
        "backend": info.backend,
        "device": info.device,
        "precision": info.precision,
        "batch_size": batch_size,
    }
    report = EvalReport(
        model=source,
        runtime=runtime_info,
        metrics=metrics,
        predictions=runs[0],
        runs=len(runs),
        all_runs=runs,
    )
    # The composite belongs to reference-only test sets (upstream's templated replies), not to labelled ones.
    if any(item.reference for item in items) and not any(item.gold != Gold() for item in items):
        from training.evaluation.composite import composite_scores

        report.metrics.update(composite_scores(items, runs[0]))
    return report
