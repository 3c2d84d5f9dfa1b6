"""Silver labels for the unlabelled enum fields: the zero-shot labeller on the tiny real model, the
labels file, and training on it (the labels are learned with weight, gold labels win)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tests.fixtures import LABELLED, labelled_lines
from training.data.loading import load_examples, parse_lines
from training.data.tokens import encode_example
from training.errors import DataError
from training.field_labels import (
    CONTENT_FREE_ITEM,
    FIELD_QUESTIONS,
    LABELLED_FIELDS,
    build_field_labeller,
    choose,
    read_field_labels,
    with_field_labels,
    write_field_labels,
)


@pytest.fixture(scope="module")
def labeller(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    return build_field_labeller(str(tiny_model_dir), cpu_threads=1)


def test_label_fields_labels_every_story_with_schema_values(
    tmp_path: Path, tiny_model_dir: Path, capsys
) -> None:
    from app.cli import main

    output = tmp_path / "labels.jsonl"
    code = main(["label-fields", "--data", str(LABELLED), "--model", str(tiny_model_dir),
                 "--output", str(output), "--cpu-threads", "1",
                 "--data-dir", str(tmp_path / "data")])  # fmt: skip
    assert code == 0
    assert "labelled 24 stories" in capsys.readouterr().out
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    stories = {example.key for example in load_examples(LABELLED).examples}
    assert {row["key"] for row in rows} == stories and len(rows) == len(stories)
    by_key = read_field_labels(output)  # every label is one of the schema's values
    for row in rows:
        assert set(row["labels"]) == set(LABELLED_FIELDS)
        for question in FIELD_QUESTIONS:
            probabilities = row["scores"][question.field]
            assert set(probabilities) == set(question.options)
            assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-3)
            assert by_key[row["key"]][question.field] == choose(question, probabilities)
    assert not output.with_name(output.name + ".partial").exists()


def test_the_content_free_item_scores_every_option_alike(labeller) -> None:  # type: ignore[no-untyped-def]
    """Calibration subtracts the content-free item's own scores: on it, no option is preferred."""
    _, probabilities = labeller.label(CONTENT_FREE_ITEM)
    for question in FIELD_QUESTIONS:
        assert max(probabilities[question.field].values()) == pytest.approx(
            1 / len(question.options), abs=1e-3
        )
    raw = labeller._raw_scores(CONTENT_FREE_ITEM)
    assert len({round(v, 3) for v in raw["categories"].values()}) > 1  # the raw scores did differ


def test_cached_option_scores_equal_one_full_forward_pass(labeller) -> None:  # type: ignore[no-untyped-def]
    """The shared-prefix cache and the padded option batch are exact: each option's score is what the
    model gives prompt + answer in one pass."""
    import torch

    (example,) = parse_lines(labelled_lines(1)).examples
    raw = labeller._raw_scores(example.item)
    question = next(q for q in FIELD_QUESTIONS if q.field == "categories")
    prefix_ids, question_ids = labeller.prompt_ids(example.item)
    prompt_ids = prefix_ids + question_ids["categories"]
    for option, answer_ids in zip(question.options, labeller.option_ids["categories"], strict=True):
        with torch.inference_mode():
            logits = labeller.model(torch.tensor([prompt_ids + answer_ids])).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        full = sum(float(logprobs[len(prompt_ids) - 1 + j, t]) for j, t in enumerate(answer_ids))
        assert raw["categories"][option] == pytest.approx(full, abs=1e-3), option
    assert len({len(ids) for ids in labeller.option_ids["categories"]}) > 1  # padding was exercised


def test_choose_keeps_close_runners_up_and_other_only_alone() -> None:
    categories = next(q for q in FIELD_QUESTIONS if q.multi)
    sentiment = next(q for q in FIELD_QUESTIONS if q.field == "sentiment")
    uniform = {name: 0.01 for name in categories.options}
    assert choose(categories, {**uniform, "research": 0.4, "open_source": 0.25, "tutorial": 0.1}) == [
        "research", "open_source"]  # fmt: skip
    assert choose(categories, {**uniform, "other": 0.4, "research": 0.39}) == ["other"]
    assert choose(categories, {**uniform, "research": 0.4, "other": 0.39, "tutorial": 0.3}) == [
        "research", "tutorial"]  # fmt: skip
    assert choose(sentiment, {"positive": 0.2, "neutral": 0.5, "negative": 0.2, "mixed": 0.1}) == "neutral"


def test_a_bad_labels_file_names_every_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text(
        "\n".join([
            json.dumps({"key": "a", "labels": {"sentiment": "positive"}}),
            "{oops",
            json.dumps({"key": "b", "labels": {"sentiment": "happy"}}),
            json.dumps({"key": "c", "labels": {"categories": []}}),
            json.dumps({"key": "d", "labels": {"mood": "low"}}),
            json.dumps({"labels": {}}),
        ]) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    with pytest.raises(DataError) as raised:
        read_field_labels(path)
    lines = sorted({p.split(":")[0] for p in raised.value.problems})
    assert lines == ["line 2", "line 3", "line 4", "line 5", "line 6"]
    assert any("'happy'" in p and "positive" in p for p in raised.value.problems)
    assert any("unknown field 'mood'" in p for p in raised.value.problems)


def test_training_learns_the_field_labels_and_gold_labels_win(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from app.cli import main
    from app.core.hashing import file_sha256
    from app.registry import read_manifest

    rows = [json.loads(line) for line in labelled_lines(8)]
    rows[0]["annotation"]["relevance_score"] = 7
    data = tmp_path / "seed.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    examples = load_examples(data).examples
    labels_file = tmp_path / "labels.jsonl"
    silver = {"categories": ["research", "open_source"], "sentiment": "mixed", "urgency_level": "high"}
    write_field_labels(labels_file, [{"key": e.key, "labels": silver} for e in examples])

    merged, gained = with_field_labels(examples, read_field_labels(labels_file))
    assert gained == len(examples)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    encoded = encode_example(merged[0], tokenizer, field_weights={"sentiment": 2.0})
    assert not encoded.placeholders & set(LABELLED_FIELDS)  # no longer zero-weight placeholders
    start, end = encoded.field_spans["sentiment"]
    assert encoded.completion_text[start:end] == '"mixed"'
    inside = [w for (a, b), w in zip(encoded.completion_offsets, encoded.completion_weights, strict=True)
              if a < end and start < b]  # fmt: skip
    assert inside and set(inside) == {2.0}
    gold = {**examples[0].labels, "sentiment": "negative"}  # a label in the data wins over the file's
    file_labels = read_field_labels(labels_file)
    (kept,), _ = with_field_labels([dataclasses.replace(examples[0], labels=gold)], file_labels)
    assert kept.labels["sentiment"] == "negative" and kept.labels["urgency_level"] == "high"

    code = main(["train", "--data", str(data), "--base-model", str(tiny_model_dir),
                 "--field-labels", str(labels_file), "--max-steps", "1", "--validation-fraction", "0",
                 "--version-id", "tiny-silver", "--cpu-threads", "1",
                 "--data-dir", str(tmp_path / "data")])  # fmt: skip
    assert code == 0
    manifest = read_manifest(tmp_path / "data" / "models" / "tiny-silver")
    assert manifest["field_labels"] == {"file": "labels.jsonl", "sha256": file_sha256(labels_file),
                                        "examples_labelled": len(examples)}  # fmt: skip
    from training.package_adapter import FIELD_LABELS_FILE, _ship_field_labels

    shipped = _ship_field_labels(manifest["training"]["config"], manifest["field_labels"], tmp_path / "pkg")
    assert shipped["file"] == FIELD_LABELS_FILE
    assert file_sha256(tmp_path / "pkg" / FIELD_LABELS_FILE) == manifest["field_labels"]["sha256"]
    changed = labels_file.read_text(encoding="utf-8").replace("mixed", "neutral")
    labels_file.write_text(changed, encoding="utf-8")
    with pytest.raises(SystemExit, match="not the field-labels file the run trained on"):
        _ship_field_labels(manifest["training"]["config"], manifest["field_labels"], tmp_path / "pkg")
