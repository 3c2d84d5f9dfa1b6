"""Silver labels for the enum fields no person labelled (categories, sentiment, urgency_level).

A zero-shot labeller: an instruct model answers one question per field about the item, and every
allowed answer is scored by its full log-probability (the answer's tokens and the end of the turn),
so the label is always one of the schema's values: constrained, like every generation here, but
exact over the whole option instead of greedy token by token. Small models prefer some answers
whatever the input (the "prior" of a label word); each score is calibrated by subtracting the
score the same answer gets for a content-free item (Zhao et al., 2021, "Calibrate Before Use").

The item is the shared prefix of the three questions: it is run once per item (KV cache), each
question and its options run on a copy of that cache.

The labels file is JSONL, one object per story: {"key": <story key>, "labels": {...}, "scores":
{field: {option: probability}}}. The key is the training data's story identity (a hash, no item
text), so a labels file can be committed beside the adapter it trained.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.contract import CATEGORIES, PromptItem
from app.contract.metadata import CATEGORIES_MAX_ITEMS, Sentiment, Urgency
from app.contract.prompt import item_message
from training.data.examples import LabeledExample
from training.data.record_rows import validate_metadata
from training.errors import DataError, TrainingError

LABELLER_SYSTEM_PROMPT = (
    "You label one newsletter item for a reader who follows AI and technology. "
    "Answer with exactly one of the allowed labels."
)
# Categories beside the best one are kept while their calibrated probability is at least this share
# of the best one's: a story can be both a model release and open source.
SECOND_CATEGORY_SHARE = 0.5


@dataclass(frozen=True)
class FieldQuestion:
    field: str
    question: str
    options: tuple[str, ...]
    multi: bool = False


FIELD_QUESTIONS: tuple[FieldQuestion, ...] = (
    FieldQuestion(
        field="categories",
        question=(
            "Which category fits this item best? research: a paper, study or benchmark result. "
            "model_release: a new or updated AI model. product_launch: a new product or feature. "
            "funding_business: money, deals, revenue, hiring, companies' strategy. "
            "infrastructure_hardware: chips, data centres, compute, energy. open_source: openly "
            "released code or weights. developer_tools: libraries, APIs, frameworks for builders. "
            "policy_regulation: laws, governments, courts. safety_security: AI safety, misuse, "
            "vulnerabilities, privacy. opinion_analysis: commentary, essays, forecasts. tutorial: a "
            "how-to or guide. other: none of these. Answer with the label only."
        ),
        options=CATEGORIES,
        multi=True,
    ),
    FieldQuestion(
        field="sentiment",
        question=(
            "What is the tone of this item? positive: good news (a launch, a gain, progress). "
            "negative: bad news (harm, failure, a lawsuit, layoffs, a risk). mixed: both good and bad. "
            "neutral: plain facts with neither. Answer with the label only."
        ),
        options=tuple(Sentiment),
    ),
    FieldQuestion(
        field="urgency_level",
        question=(
            "How urgent is this item for the reader? high: act or know today (a security flaw, a "
            "deadline, a breaking change). medium: worth knowing this week (a notable release or "
            "deal). low: background reading that can wait. Answer with the label only."
        ),
        options=tuple(Urgency),
    ),
)
LABELLED_FIELDS: tuple[str, ...] = tuple(q.field for q in FIELD_QUESTIONS)
CONTENT_FREE_ITEM = PromptItem(source="newsletter", headline="N/A", text="N/A")


def _softmax(scores: Mapping[str, float]) -> dict[str, float]:
    top = max(scores.values())
    exp = {name: math.exp(score - top) for name, score in scores.items()}
    total = sum(exp.values())
    return {name: value / total for name, value in exp.items()}


def choose(question: FieldQuestion, probabilities: Mapping[str, float]) -> Any:
    """The label(s) for calibrated option probabilities: the best one, and for a multi-valued field
    the runners-up within SECOND_CATEGORY_SHARE of it ("other" never beside a real category)."""
    # Ties go to the earlier option of the schema, whatever order the probabilities come in.
    ranked = sorted(question.options, key=lambda name: -probabilities[name])
    if not question.multi:
        return ranked[0]
    best = probabilities[ranked[0]]
    kept = [ranked[0]]
    if ranked[0] != "other":
        kept += [
            name for name in ranked[1:CATEGORIES_MAX_ITEMS]
            if name != "other" and probabilities[name] >= SECOND_CATEGORY_SHARE * best
        ]  # fmt: skip
    return kept


class FieldLabeller:
    """Scores every option of every question for one item; holds the model and the calibration."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise TrainingError("the labeller needs an instruct model with a chat template")
        self.model = model
        self.tokenizer = tokenizer
        self.option_ids = {
            q.field: [self._answer_ids(option) for option in q.options] for q in FIELD_QUESTIONS
        }
        self._calibration = self._raw_scores(CONTENT_FREE_ITEM)

    def _render(self, item: PromptItem, question: str, answer: str | None = None) -> str:
        messages = [
            {"role": "system", "content": LABELLER_SYSTEM_PROMPT},
            {"role": "user", "content": f"{item_message(item)}\n\nQuestion: {question}"},
        ]
        if answer is None:
            return str(
                self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            )
        messages.append({"role": "assistant", "content": answer})
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False))

    def _answer_ids(self, option: str) -> list[int]:
        """The tokens the template puts after the generation prompt for this answer (the answer and
        the end of the turn): an option that is a prefix of another cannot win by stopping early."""
        prompt = self._render(CONTENT_FREE_ITEM, "?")
        full = self._render(CONTENT_FREE_ITEM, "?", option)
        if not full.startswith(prompt):
            raise TrainingError("the chat template renders an answer that does not extend its prompt")
        return list(self._encode(full[len(prompt) :].rstrip("\n")))

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, item: PromptItem) -> tuple[list[int], dict[str, list[int]]]:
        """The item's tokens (shared by every question) and each question's tokens after them."""
        marker = "\n\nQuestion: "
        prefix_text = self._render(item, "").split(marker)[0] + marker
        questions = {
            q.field: self._encode(self._render(item, q.question)[len(prefix_text) :]) for q in FIELD_QUESTIONS
        }
        return self._encode(prefix_text), questions

    def _raw_scores(self, item: PromptItem) -> dict[str, dict[str, float]]:
        import torch

        prefix_ids, question_ids = self.prompt_ids(item)
        with torch.inference_mode():
            prefix = self.model(torch.tensor([prefix_ids]), use_cache=True)
            scores: dict[str, dict[str, float]] = {}
            for question in FIELD_QUESTIONS:
                cache = copy.deepcopy(prefix.past_key_values)
                asked = self.model(
                    torch.tensor([question_ids[question.field]]), past_key_values=cache, use_cache=True
                )
                logprobs = self._option_logprobs(asked, self.option_ids[question.field])
                scores[question.field] = dict(zip(question.options, logprobs, strict=True))
        return scores

    def _option_logprobs(self, asked: Any, options: list[list[int]]) -> list[float]:
        """Sum of log-probabilities of each option's tokens after the question, all options in one
        batch (right-padded: a causal model's scores at real positions never see the padding)."""
        import torch

        first = torch.log_softmax(asked.logits[0, -1].float(), dim=-1)
        width = max(len(ids) for ids in options)
        if width == 1:
            return [float(first[ids[0]]) for ids in options]
        batch = torch.tensor([ids + [ids[-1]] * (width - len(ids)) for ids in options])
        cache = asked.past_key_values
        cache.batch_repeat_interleave(len(options))
        logits = torch.log_softmax(self.model(batch, past_key_values=cache).logits.float(), dim=-1)
        return [
            float(first[ids[0]]) + sum(float(logits[row, j - 1, ids[j]]) for j in range(1, len(ids)))
            for row, ids in enumerate(options)
        ]

    def label(self, item: PromptItem) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
        """(labels, calibrated probability of every option) for one item."""
        raw = self._raw_scores(item)
        labels: dict[str, Any] = {}
        probabilities: dict[str, dict[str, float]] = {}
        for question in FIELD_QUESTIONS:
            calibrated = {
                option: raw[question.field][option] - self._calibration[question.field][option]
                for option in question.options
            }
            probabilities[question.field] = {k: round(v, 4) for k, v in _softmax(calibrated).items()}
            labels[question.field] = choose(question, probabilities[question.field])
        return labels, probabilities


def build_field_labeller(model_location: str, *, cpu_threads: int | None = None) -> FieldLabeller:
    """The labeller on a HF model directory (fp32 on the CPU: this runs once, before training)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if cpu_threads:
        torch.set_num_threads(cpu_threads)
    tokenizer = AutoTokenizer.from_pretrained(model_location)
    model = AutoModelForCausalLM.from_pretrained(model_location, dtype=torch.float32)
    model.eval()
    return FieldLabeller(model, tokenizer)


def write_field_labels(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write rows atomically (a crash leaves the old file, never half a new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    partial.replace(path)


def _check_labels(labels: Any) -> tuple[dict[str, Any], list[str]]:
    """(labels, problems): only the labelled fields, each checked by the schema's own field rules."""
    if not isinstance(labels, dict):
        return {}, ["`labels` must be an object"]
    checked: dict[str, Any] = {}
    problems = []
    for name, value in labels.items():
        if name not in LABELLED_FIELDS:
            problems.append(f"unknown field {name!r} (expected {', '.join(LABELLED_FIELDS)})")
            continue
        valid, field_problems = validate_metadata({name: value})
        checked.update(valid)
        problems += [f"{problem} (got {value!r})" for problem in field_problems]
    return checked, problems


def read_field_labels(path: Path) -> dict[str, dict[str, Any]]:
    """Labels by story key, or DataError listing every bad line."""
    if not path.is_file():
        raise TrainingError(f"{path}: no such field-labels file")
    by_key: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(f"line {number}: not JSON ({error.msg})")
            continue
        if not isinstance(row, dict) or not isinstance(row.get("key"), str):
            problems.append(f"line {number}: expected an object with a string `key`")
            continue
        labels, row_problems = _check_labels(row.get("labels"))
        problems += [f"line {number}: {problem}" for problem in row_problems]
        if not row_problems:
            by_key[row["key"]] = labels
    if problems:
        raise DataError(path, problems)
    return by_key


def with_field_labels(
    examples: list[LabeledExample], labels_by_key: Mapping[str, Mapping[str, Any]]
) -> tuple[list[LabeledExample], int]:
    """Examples with the file's labels added where the data leaves a field unlabelled (a label in the
    data always wins), and how many examples gained a label."""
    merged = []
    gained = 0
    for example in examples:
        extra = {k: v for k, v in labels_by_key.get(example.key, {}).items() if k not in example.labels}
        if extra:
            gained += 1
            example = dataclasses.replace(example, labels={**example.labels, **extra})
        merged.append(example)
    return merged, gained


def label_distribution(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Per field, how many stories got each label (most common first)."""
    counts: dict[str, Counter[str]] = {field: Counter() for field in LABELLED_FIELDS}
    for row in rows:
        for field in LABELLED_FIELDS:
            value = row["labels"][field]
            counts[field].update(value if isinstance(value, list) else [value])
    return {field: dict(counter.most_common()) for field, counter in counts.items()}


def label_data_file(
    data: Path, *, model: str, output: Path, limit: int | None = None, cpu_threads: int | None = None
) -> dict[str, Any]:
    """Label every story of a data file (its last line per story) and write the labels file."""
    from tqdm import tqdm

    from app.core.config import get_settings
    from training.data.loading import load_examples
    from training.train import resolve_base_model

    examples = load_examples(data).examples[:limit]
    location = resolve_base_model(model, get_settings()).location
    started = time.perf_counter()
    labeller = build_field_labeller(location, cpu_threads=cpu_threads)
    rows = []
    for example in tqdm(examples, desc="labelling", unit="story"):
        labels, scores = labeller.label(example.item)
        rows.append({"key": example.key, "labels": labels, "scores": scores})
    write_field_labels(output, rows)
    return {"stories": len(rows), "seconds": time.perf_counter() - started,
            "distribution": label_distribution(rows)}  # fmt: skip
