"""training.seed_data: where the seed data is looked for, and what a missing file says.

The `seed` tests at the end read the real seed data (../shared/data/seed or ENHANCER_SEED_DIR)
and skip when it is absent: they check facts of that data that the code documents (its repeated
stories, its overlap with the test file), nothing the hand-written items of tests/data do not cover.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures import LABELLED, labelled_rows
from training import seed_data
from training.seed_data import (
    SEED_DIR_ENV,
    SeedDataMissing,
    load_seed_requests,
    seed_dir,
    seed_file,
    seed_to_request,
)


def test_seed_dir_defaults_to_shared_beside_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SEED_DIR_ENV, raising=False)
    checkout = Path(seed_data.__file__).resolve().parents[1]
    assert seed_dir() == checkout.parent / "shared" / "data" / "seed"
    monkeypatch.setenv(SEED_DIR_ENV, "")  # empty is unset
    assert seed_dir() == checkout.parent / "shared" / "data" / "seed"


def test_env_overrides_the_seed_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "annotated_train.jsonl").write_text(LABELLED.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "other.jsonl").write_text("{}\n", encoding="utf-8")
    monkeypatch.setenv(SEED_DIR_ENV, str(tmp_path))
    assert seed_dir() == tmp_path
    assert seed_file() == tmp_path / "annotated_train.jsonl"
    assert seed_file("other.jsonl") == tmp_path / "other.jsonl"


def test_a_missing_seed_file_says_where_to_put_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(SEED_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(SeedDataMissing) as raised:
        seed_file("unannotated_test.jsonl")
    message = str(raised.value)
    assert isinstance(raised.value, FileNotFoundError)
    assert str(tmp_path / "nowhere" / "unannotated_test.jsonl") in message
    assert "ENHANCER_SEED_DIR" in message and "../shared/data/seed" in message
    assert f"ENHANCER_SEED_DIR={tmp_path / 'nowhere'}" in message  # what it was set to

    monkeypatch.delenv(SEED_DIR_ENV)
    monkeypatch.setattr(seed_data, "DEFAULT_SEED_DIR", tmp_path / "no-shared")
    with pytest.raises(SeedDataMissing, match=r"ENHANCER_SEED_DIR is not set.*\.\./shared/data/seed"):
        seed_file()


def test_seed_rows_become_enhance_bodies() -> None:
    first = labelled_rows(1)[0]
    body = seed_to_request(first, 7)
    assert body == {
        "source": "TLDR AI",
        "subject": "Broadcom to co-design Meta's next inference accelerator",
        "from": "digest@example.com",
        "date": "2025-11-24T07:02:11Z",
        "message_id": "<seed-7@example.com>",
        "content": body["content"],
        "url": "https://www.theinformation.com/articles/broadcom-meta-inference-accelerator?utm_source=tldrai",
    }
    assert body["content"].startswith("Meta has chosen Broadcom") and "JSON only" not in body["content"]
    bodies = load_seed_requests(LABELLED)
    assert len(bodies) == 28 and len({b["message_id"] for b in bodies}) == 28
    assert bodies[13]["subject"].startswith("\U0001f4f0 **Claude")  # the decorated headline is sent as is


# ---------------------------------------------------------------------------------------------
# The real seed data (skipped without it)


def _seed(name: str) -> Path:
    try:
        return seed_file(name)
    except SeedDataMissing as error:
        pytest.skip(str(error))


@pytest.mark.seed
def test_seed_file_repeats_12_stories_labelled_twice() -> None:
    """The seed README's facts that the evaluation and training docs quote (80 lines, 68 stories)."""
    from training.data.loading import load_examples
    from training.evaluation.agreement import label_agreement

    loaded = load_examples(_seed("annotated_train.jsonl"))
    assert (loaded.lines, len(loaded.examples), loaded.duplicates_removed) == (80, 68, 12)
    assert label_agreement(_seed("annotated_train.jsonl"))["stories_labelled_twice"] == 12


@pytest.mark.seed
def test_seed_test_file_overlaps_the_training_file() -> None:
    """The seed README: 51 of the unannotated test items repeat training items; all are caught."""
    from training.evaluation.composite import composite_items

    _items, counts = composite_items(_seed("unannotated_test.jsonl"), [_seed("annotated_train.jsonl")])
    assert counts["in_training_data"] >= 51
