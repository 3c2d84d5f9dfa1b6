"""Training with the local backend: data rules, loss weights, resume, and train -> export -> serve.

Everything is real: the tiny random Llama trains with PEFT on seed-format rows (tests/data), is
merged, exported to OpenVINO IR, registered and activated, and a real worker process picks it up on
its next job.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.contract import GeneratedMetadata, derive_fields
from app.contract.metadata import CATEGORIES
from app.core.hashing import file_sha256
from app.main import create_app
from tests.conftest import API_HEADERS, apply_env, wait_for_jobs
from tests.fixtures import LABELLED, labelled_lines
from training.config import TrainConfig, load_config
from training.data.examples import PLACEHOLDERS
from training.data.loading import load_examples, parse_lines
from training.data.record_rows import training_row
from training.data.split import split_examples
from training.data.tokens import encode_example, tokenize_examples
from training.errors import ConfigError, DataError, TrainingError


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def record_line(**metadata: object) -> str:
    item = {
        "source": "Import AI",
        "headline": "Anthropic ships a model",
        "content": "Anthropic released Claude.",
    }
    return json.dumps({"item": item, "metadata": metadata})


# --- data -------------------------------------------------------------------------------------


def test_malformed_lines_are_all_named_and_nothing_trains(
    tmp_path: Path, tiny_model_dir: Path, capsys
) -> None:
    from app.cli import main

    lines = [
        labelled_lines(1)[0],  # 1: fine
        "{not json",  # 2
        record_line(relevance_score=11),  # 3: out of bounds
        json.dumps({"foo": 1}),  # 4: neither format
        "",  # blank lines are skipped, and still counted
        record_line(),  # 6: nothing labelled
        record_line(key_topics=["ok topic"], topics=["typo"]),  # 7: unknown field
        json.dumps({"messages": [{"role": "user", "content": "no headline here"}], "annotation": {}}),  # 8
        record_line(relevance_score=7, categories=["research"]),  # 9: fine
    ]
    data = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataError) as raised:
        load_examples(data)
    named = sorted({int(p.split(":")[0].removeprefix("line ")) for p in raised.value.problems})
    assert named == [2, 3, 4, 6, 7, 8]
    assert any(p.startswith("line 3: metadata.relevance_score") for p in raised.value.problems)
    assert any("line 7: metadata.topics: unknown field" in p for p in raised.value.problems)

    output_dir = tmp_path / "run"
    code = main(
        ["train", "--data", str(data), "--base-model", str(tiny_model_dir),
         "--output-dir", str(output_dir), "--data-dir", str(tmp_path / "data")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "6 problem(s), nothing was trained" in err and "line 2: not valid JSON" in err
    assert not output_dir.exists()


def test_unknown_base_model_is_one_clear_message(tmp_path: Path, capsys) -> None:
    from app.cli import main

    missing = tmp_path / "no-such-model.gguf"
    data = write_lines(tmp_path / "seed.jsonl", labelled_lines(3))
    code = main(
        ["train", "--data", str(data), "--base-model", str(missing), "--data-dir", str(tmp_path / "d")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: unknown base model") and str(missing) in err[0]


def test_split_is_deterministic_and_independent_of_line_order(tmp_path: Path) -> None:
    lines = labelled_lines()
    examples = parse_lines(lines).examples
    train, validation = split_examples(examples, validation_fraction=0.2, seed=7)
    again = split_examples(parse_lines(reversed(lines)).examples, validation_fraction=0.2, seed=7)
    assert len(validation) == 5 and len(train) == 19  # 24 stories (28 lines): round(24 * 0.2) validate
    assert {e.key for e in validation} == {e.key for e in again[1]}
    assert not {e.key for e in train} & {e.key for e in validation}
    other_seed = split_examples(examples, validation_fraction=0.2, seed=8)[1]
    assert {e.key for e in validation} != {e.key for e in other_seed}


def test_duplicates_removed_and_the_later_line_wins(tmp_path: Path) -> None:
    # The labelled file repeats 3 stories under a decorated headline ("📰 **...**") and 1 under another
    # tracking parameter, each labelled twice.
    seed = parse_lines(labelled_lines())
    assert (len(seed.examples), seed.duplicates_removed) == (24, 4)
    memory = next(e for e in seed.examples if e.item.headline.startswith("Claude gets project memory"))
    assert memory.line == 14 and memory.labels["relevance_score"] == 5  # line 2 said 8
    assert not any("**" in e.item.headline for e in seed.examples)
    rebellions = next(e for e in seed.examples if "Rebellions" in e.item.headline)
    assert rebellions.line == 26 and rebellions.labels["relevance_score"] == 4  # line 21 said 5

    first, second = labelled_lines(2)
    changed = json.loads(first)
    changed["annotation"]["relevance_score"] = 2
    changed["messages"][0]["content"] = changed["messages"][0]["content"].replace(
        "utm_source=", "utm_medium="
    )
    record_a = record_line(relevance_score=3)
    record_b = record_line(relevance_score=9, sentiment="positive")
    loaded = parse_lines([first, second, json.dumps(changed), record_a, record_b])
    assert len(loaded.examples) == 3
    assert loaded.duplicates_removed == 2
    by_line = {e.line: e for e in loaded.examples}
    assert by_line[3].labels["relevance_score"] == 2  # same link once tracking parameters are gone
    assert dict(by_line[5].labels) == {"relevance_score": 9, "sentiment": "positive"}
    assert any(note.startswith("line 3: same story as line 1") for note in loaded.notes)


def test_training_row_is_the_record_format() -> None:
    from datetime import UTC, datetime

    item = {
        "source": "TLDR AI",
        "subject": "OpenAI and Broadcom team up",
        "content": "<p>OpenAI will design chips with <b>Broadcom</b>.</p>",
        "url": "https://openai.com/x?utm_source=tldr",
        "date": datetime(2025, 10, 16, tzinfo=UTC),
        "has_html": True,
        "message_id": "<ignored@example.com>",
    }
    record = {  # a whole stored record: computed fields are dropped, null means unlabelled
        "summary": "OpenAI and Broadcom will build custom AI chips together.",
        "key_topics": ["AI chips"],
        "entities": ["OpenAI", "Broadcom"],
        "categories": ["infrastructure_hardware"],
        "sentiment": None,
        "relevance_score": 8,
        "word_count": 9,
        "links": [],
    }
    row = training_row(item, record)
    assert row["item"] == {
        "source": "TLDR AI",
        "headline": "OpenAI and Broadcom team up",
        "content": item["content"],
        "url": item["url"],
        "date": "2025-10-16T00:00:00+00:00",
        "has_html": True,
    }
    assert list(row["metadata"]) == ["summary", "key_topics", "entities", "categories", "relevance_score"]
    (example,) = parse_lines([json.dumps(row)]).examples
    assert dict(example.labels) == row["metadata"]
    # The prompt text is what the worker derives from the same item: HTML already turned into text.
    assert (
        example.item.text == derive_fields(content=item["content"], links=[item["url"]], has_html=True).text
    )
    assert example.item.text.startswith("OpenAI will design chips with Broadcom")
    with pytest.raises(ValueError, match=r"metadata.categories\[0\]"):
        training_row(item, {"categories": ["not-a-category"]})
    with pytest.raises(ValueError, match="no labelled field"):
        training_row(item, {"sentiment": None})


def test_unlabelled_fields_get_zero_weight(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    seed = json.loads(labelled_lines(1)[0])
    seed["annotation"]["summary"] = ""  # unlabelled, like most seed rows
    (example,) = parse_lines([json.dumps(seed)]).examples
    encoded = encode_example(example, tokenizer)
    assert encoded.placeholders == {"summary", "categories", "sentiment", "urgency_level", "action_items"}
    labelled = set(GeneratedMetadata.model_fields) - encoded.placeholders

    def covered(span: tuple[int, int], weight: float) -> set[int]:
        return {
            c
            for (start, end), w in zip(encoded.completion_offsets, encoded.completion_weights, strict=True)
            if w == weight
            for c in range(max(start, span[0]), min(end, span[1]))
        }

    for name in labelled:  # every character of a gold value is learned
        start, end = encoded.field_spans[name]
        assert covered((start, end), 1.0) == set(range(start, end)), name
    for name in encoded.placeholders:  # no character of a placeholder is
        start, end = encoded.field_spans[name]
        assert covered((start, end), 1.0) == set(), name

    weighted = tokenizer.decode(
        [t for t, w in zip(encoded.completion_ids, encoded.completion_weights, strict=True) if w]
    )
    unweighted = tokenizer.decode(
        [t for t, w in zip(encoded.completion_ids, encoded.completion_weights, strict=True) if not w]
    )
    for name in labelled:
        assert json.dumps(example.labels[name], ensure_ascii=False, separators=(", ", ": ")) in weighted
    assert '"other"' not in weighted and '"neutral"' not in weighted and '"low"' not in weighted
    assert example.item.headline in unweighted  # the summary placeholder is built from the headline
    assert "other" in unweighted and "neutral" in unweighted and "low" in unweighted
    assert PLACEHOLDERS["categories"] == ["other"] and "other" in CATEGORIES

    row = encoded.to_tokenized("x")
    assert row.input_ids[-1] == tokenizer.eos_token_id and row.weights[-1] == 1.0  # learns to stop
    assert set(row.weights[: len(encoded.prompt_ids)]) == {0.0}  # never the prompt
    prompt = tokenizer.decode(encoded.prompt_ids)
    assert prompt.endswith("<|im_start|>assistant\n") and example.item.headline in prompt


def test_field_weights_scale_a_labelled_field_and_never_a_placeholder(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    (example,) = parse_lines(labelled_lines(1)).examples
    plain = encode_example(example, tokenizer)
    weighted = encode_example(example, tokenizer, field_weights={"entities": 3.0, "categories": 5.0})
    assert "entities" not in plain.placeholders and "categories" in plain.placeholders
    start, end = weighted.field_spans["entities"]
    changed = set()
    for index, ((a, b), before, after) in enumerate(
        zip(weighted.completion_offsets, plain.completion_weights, weighted.completion_weights, strict=True)
    ):
        if a < end and start < b:
            assert after == 3.0, (index, tokenizer.decode([weighted.completion_ids[index]]))
            changed.add(index)
        else:  # other fields, keys and punctuation unchanged; the placeholder stays at 0
            assert after == before, index
    assert changed
    cat_start, cat_end = weighted.field_spans["categories"]
    assert all(
        w == 0.0
        for (a, b), w in zip(weighted.completion_offsets, weighted.completion_weights, strict=True)
        if a < cat_end and cat_start < b
    )
    with pytest.raises(ValidationError, match="unknown field"):
        TrainConfig(data=Path("x.jsonl"), field_weights="entity=3")
    assert TrainConfig(data=Path("x.jsonl"), field_weights="entities=3, key_topics=2").field_weights == {
        "entities": 3.0,
        "key_topics": 2.0,
    }


def test_config_file_then_flags(tmp_path: Path) -> None:
    config_file = tmp_path / "train.toml"
    config_file.write_text(
        '[train]\ndata = "seed.jsonl"\nrank = 4\nepochs = 5\ntarget_modules = "q_proj,v_proj"\n'
    )
    config = load_config(config_file, epochs=1, learning_rate=None)
    assert (config.data, config.rank, config.epochs) == (tmp_path / "seed.jsonl", 4, 1)
    assert config.target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError, match="lr_schedule"):
        load_config(config_file, lr_schedule="exponential")
    with pytest.raises(ConfigError, match="resume needs output_dir"):
        load_config(config_file, resume=True)


# --- local backend ----------------------------------------------------------------------------


def _tiny_examples(tiny_model_dir: Path, count: int):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = parse_lines(labelled_lines(count)).examples
    train, validation = split_examples(examples, validation_fraction=0.25, seed=0)
    return (
        tokenize_examples(train, tokenizer, max_length=2048)[0],
        tokenize_examples(validation, tokenizer, max_length=2048)[0],
        tokenizer.pad_token_id,
    )


def test_resume_continues_exactly_where_it_stopped(tmp_path: Path, tiny_model_dir: Path) -> None:
    import torch
    from peft.utils import load_peft_weights

    from training.local_backend import train_local

    train, validation, pad_id = _tiny_examples(tiny_model_dir, 6)
    config = load_config(data=LABELLED, base_model=str(tiny_model_dir), epochs=2, batch_size=2, rank=4,
                         learning_rate=1e-2, output_dir=tmp_path / "run", cpu_threads=1)  # fmt: skip

    def run(config, output_dir: Path):  # type: ignore[no-untyped-def]
        return train_local(
            examples=train,
            validation=validation,
            base_location=str(tiny_model_dir),
            pad_id=pad_id,
            config=config,
            output_dir=output_dir,
            metrics_path=output_dir / "metrics.jsonl",
            fingerprint=config.fingerprint(),
        )

    full = run(config, tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "epoch-2")  # as if it died during epoch 2
    resumed = run(config.model_copy(update={"resume": True}), tmp_path / "run")
    assert resumed.resumed_from_epoch == 1 and [e.epoch for e in resumed.epochs] == [1, 2]
    assert resumed.epochs[0] == full.epochs[0]
    assert resumed.epochs[1].validation_loss == pytest.approx(full.epochs[1].validation_loss, rel=1e-5)
    expected = load_peft_weights(str(tmp_path / "run" / "checkpoints" / "epoch-1"))  # epoch 1 state
    final = load_peft_weights(str(resumed.adapter_dir))
    assert any(not torch.equal(expected[k], final[k]) for k in final)  # it trained epoch 2 again
    events = [
        json.loads(line)["event"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert "resume" in events

    with pytest.raises(TrainingError, match="learning_rate"):
        run(config.model_copy(update={"resume": True, "learning_rate": 1e-3}), tmp_path / "run")


def test_train_export_register_activate_and_serve(
    service_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    start_worker,
    tmp_path: Path,
    tiny_model_dir: Path,
) -> None:
    """The registry serves: a worker started on one version serves the newly trained one next."""
    import torch
    from safetensors.torch import load_file

    from app.cli import main
    from app.core.config import get_settings
    from app.core.db import session_scope
    from app.core.migrate import upgrade_database
    from app.registry import read_manifest, register_version_dir, write_manifest
    from training.export import directory_sha256

    apply_env(monkeypatch, service_env, ENHANCER_MODEL=None, ENHANCER_BACKEND="openvino-genai")  # the default
    settings = get_settings()
    settings.ensure_dirs()
    upgrade_database(settings.sqlalchemy_url)
    base_dir = settings.models_dir / "tiny-base"
    shutil.copytree(tiny_model_dir, base_dir / "hf")
    write_manifest(base_dir, {"version_id": "tiny-base", "base_model": "tiny random llama", "evaluation": {}})
    with session_scope() as session:
        register_version_dir(session, version_id="tiny-base", version_dir=base_dir, activate=True)

    data = write_lines(tmp_path / "seed.jsonl", labelled_lines(12))
    seed_items = [json.loads(line) for line in labelled_lines(3)]
    from training.seed_data import seed_to_request

    requests = [seed_to_request(row, i) for i, row in enumerate(seed_items)]
    start_worker(service_env)
    with TestClient(create_app(), headers=API_HEADERS) as client:
        first = client.post("/v1/enhance", json=requests[0]).json()["jobs"][0]["id"]
        (job,) = wait_for_jobs(client, [first])
        assert job["status"] == "succeeded", job
        assert client.get(job["record_url"]).json()["model_version_id"] == "tiny-base"

        code = main(
            ["train", "--data", str(data), "--base-model", str(base_dir), "--epochs", "3", "--batch-size",
             "4", "--lr", "0.01", "--rank", "8", "--validation-fraction", "0.25", "--version-id",
             "tiny-tuned", "--cpu-threads", "1", "--activate"]
        )  # fmt: skip
        assert code == 0

        version_dir = settings.models_dir / "tiny-tuned"
        manifest = read_manifest(version_dir)
        training = manifest["training"]
        losses = [e["validation_loss"] for e in training["epochs"]]
        assert len(losses) == 3 and losses[-1] < training["initial_validation_loss"]  # it learned
        assert training["epochs"][-1]["train_loss"] < training["epochs"][0]["train_loss"]
        assert manifest["data_sha256"] == file_sha256(data)
        assert manifest["adapter_sha256"] == directory_sha256(version_dir / "adapter")
        assert manifest["evaluation"] == {} and manifest["created_at"]
        assert manifest["base_model"].startswith("tiny-base: tiny random llama")
        assert (version_dir / "openvino-int8" / "openvino_model.xml").exists()
        assert (version_dir / "openvino-int8" / "tokenizer.json").exists()
        assert (
            manifest["openvino_tokenizer"]
            and (version_dir / "openvino-int8" / "openvino_tokenizer.xml").exists()
        )
        merged, base = (
            load_file(version_dir / "hf" / "model.safetensors"),
            load_file(base_dir / "hf" / "model.safetensors"),
        )
        name = "model.layers.0.self_attn.q_proj.weight"
        assert merged[name].shape == base[name].shape and not torch.allclose(merged[name], base[name])

        again = main(
            ["train", "--data", str(data), "--base-model", str(base_dir), "--version-id", "tiny-tuned"]
        )
        assert again == 2  # refused before training: the version exists

        # No restart: the same worker serves the newly activated version from its next job on.
        second = client.post("/v1/enhance", json=requests[1]).json()["jobs"][0]["id"]
        (job,) = wait_for_jobs(client, [second])
        assert job["status"] == "succeeded", job
        record = client.get(job["record_url"]).json()
        assert record["model_version_id"] == "tiny-tuned"
        generated = {k: v for k, v in record["metadata"].items() if k in GeneratedMetadata.model_fields}
        GeneratedMetadata.model_validate(generated)
