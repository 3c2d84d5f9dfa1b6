"""The Tinker backend end to end: the real tinker SDK over real HTTP against a local fake Tinker
(tests/fake_tinker) that trains a LoRA on the tiny Llama, then the downloaded adapter in PEFT."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.contract.prompt import PromptItem, render_prompt
from tests.fake_tinker import TINKER_LORA_ALPHA, FakeTinkerServer
from tests.fixtures import labelled_rows
from training.tinker_backend import (
    TinkerTrainingError,
    TinkerUnavailableError,
    learning_rate_at,
    train_tinker,
)
from training.types import TokenizedExample

BASE_MODEL = "tiny-llama"


@pytest.fixture(scope="module")
def fake_tinker(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeTinkerServer]:
    storage = tmp_path_factory.mktemp("tinker-storage")
    with FakeTinkerServer(base_models={BASE_MODEL: tiny_model_dir}, storage_dir=storage) as server:
        yield server


@pytest.fixture(scope="module")
def examples(tiny_model_dir: Path) -> list[TokenizedExample]:
    """Seed-format items as chat prompts + labelled JSON targets: weight 0 on the prompt, 1 on the reply."""
    from transformers import AutoTokenizer

    from app.contract.metadata import render_target
    from training.seed_data import seed_to_request

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = labelled_rows(16)
    result = []
    for index, row in enumerate(rows):
        request = seed_to_request(row, index)
        item = PromptItem(
            source=request["source"], headline=request["subject"], text=request["content"], url=request["url"]
        )
        label = row["annotation"]
        target = {
            "key_topics": label["topics"],
            "entities": label["companies"],
            "relevance_score": label["relevance_score"],
        }
        prompt = tokenizer(render_prompt(item, tokenizer), add_special_tokens=False)["input_ids"]
        reply = tokenizer(render_target(target) + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        result.append(
            TokenizedExample(
                input_ids=prompt + reply,
                weights=[0.0] * len(prompt) + [1.0] * len(reply),
                example_id=f"seed-{index}",
            )
        )
    return result


def _weighted_loss(model: object, examples: list[TokenizedExample]) -> float:
    """Mean -logprob per weighted target token, as Tinker's cross_entropy over the same datums."""
    import torch

    total, trained = 0.0, 0.0
    with torch.no_grad():
        for example in examples:
            ids = torch.tensor(example.input_ids)
            logits = model(input_ids=ids[None, :-1]).logits[0]  # type: ignore[operator]
            logprobs = torch.log_softmax(logits.float(), -1).gather(1, ids[1:, None])[:, 0]
            weights = torch.tensor(example.weights[1:])
            total += float(-(logprobs * weights).sum())
            trained += float(weights.sum())
    return total / trained


# Expected: the tiny Llama ties lm_head to the input embeddings and this run trains an lm_head LoRA.
@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`:UserWarning")
def test_train_tinker_end_to_end_yields_a_peft_adapter(
    fake_tinker: FakeTinkerServer, examples: list[TokenizedExample], tiny_model_dir: Path, tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    train, validation = examples[:12], examples[12:14]
    metrics_path = tmp_path / "metrics.jsonl"
    adapter_dir = train_tinker(
        examples=train,
        validation=validation,
        base_model=BASE_MODEL,
        rank=4,
        learning_rate=5e-3,
        epochs=3,
        batch_size=4,
        output_dir=tmp_path / "run",
        metrics_path=metrics_path,
        base_url=fake_tinker.base_url,
        api_key=fake_tinker.api_key,
        train_unembed=True,
    )

    records = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    val_losses = [r["val_loss"] for r in records if "val_loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 10))
    assert len(val_losses) == 3
    first_epoch = sum(r["loss"] for r in steps[:3]) / 3
    last_epoch = sum(r["loss"] for r in steps[-3:]) / 3
    assert last_epoch < 0.9 * first_epoch, (first_epoch, last_epoch)
    assert val_losses[-1] < val_losses[0]

    # Tinker's export used Tinker names; the adapter we return uses PEFT's.
    raw = load_file(str(tmp_path / "run" / "tinker_checkpoint" / "adapter_model.safetensors"))
    assert "base_model.model.model.unembed_tokens.lora_A.weight" in raw
    converted = load_file(str(adapter_dir / "adapter_model.safetensors"))
    assert "base_model.model.lm_head.lora_A.weight" in converted
    assert not any("unembed_tokens" in name for name in converted)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (4, TINKER_LORA_ALPHA)
    assert {"q_proj", "down_proj", "lm_head"} <= set(config["target_modules"])

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    probe = torch.tensor([validation[0].input_ids[:64]])
    with torch.no_grad():
        base_logits = base(input_ids=probe).logits
    tuned = PeftModel.from_pretrained(base, adapter_dir).eval()
    with torch.no_grad():
        tuned_logits = tuned(input_ids=probe).logits
    assert (tuned_logits - base_logits).abs().max() > 1e-3
    # The loaded adapter reproduces what Tinker computed with its own weights: names, scaling and
    # the output-layer LoRA all converted correctly.
    assert _weighted_loss(tuned, validation) == pytest.approx(val_losses[-1], rel=1e-4)

    summary = json.loads((tmp_path / "run" / "tinker_run.json").read_text())
    assert summary["external_weights_path"].startswith(f"tinker://{summary['model_id']}/external_weights/")
    assert summary["state_path"] == f"tinker://{summary['model_id']}/weights/final"

    # The SDK went through the real protocol: protobuf forward_backward, futures polled, session closed.
    log = fake_tinker.service.request_log
    assert ("POST", "/api/v1/forward_backward", "application/x-protobuf") in log
    assert sum(path == "/api/v1/retrieve_future" for _, path, _ in log) >= 9 * 2
    assert any(path.startswith("/storage/") for _, path, _ in log)
    session = next(s for s in fake_tinker.service.sessions.values() if s["finished"] is not None)
    assert session["finished"]["reason"] == {"type": "success"}


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train(data: list[TokenizedExample], tmp_path: Path, **overrides: object) -> Path:
    arguments: dict = {
        "examples": data[:2],
        "validation": [],
        "base_model": BASE_MODEL,
        "rank": 2,
        "learning_rate": 1e-3,
        "epochs": 1,
        "batch_size": 2,
        "output_dir": tmp_path / "run",
    }
    return train_tinker(**{**arguments, **overrides})


def test_unreachable_tinker_gives_one_clear_error(examples: list[TokenizedExample], tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_unused_port()}"
    started = time.monotonic()
    with pytest.raises(TinkerUnavailableError, match="Cannot reach the Tinker service") as caught:
        _train(examples, tmp_path, base_url=url, api_key="tml-anything")
    assert url in str(caught.value)
    assert "\n" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    assert time.monotonic() - started < 15


def test_rejected_api_key_gives_one_clear_error(
    fake_tinker: FakeTinkerServer, examples: list[TokenizedExample], tmp_path: Path
) -> None:
    started = time.monotonic()
    with pytest.raises(TinkerUnavailableError, match="rejected the API key") as caught:
        _train(examples, tmp_path, base_url=fake_tinker.base_url, api_key="tml-not-a-valid-key")
    assert "401" in str(caught.value)
    assert time.monotonic() - started < 15


def test_api_key_must_start_with_tml(
    examples: list[TokenizedExample], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(TinkerUnavailableError, match="must start with 'tml-'"):
        _train(examples, tmp_path, base_url="http://127.0.0.1:9", api_key="sk-abc")
    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    with pytest.raises(TinkerUnavailableError, match="No Tinker API key"):
        _train(examples, tmp_path, base_url="http://127.0.0.1:9")


def test_unknown_base_model_is_reported_by_name(
    fake_tinker: FakeTinkerServer, examples: list[TokenizedExample], tmp_path: Path
) -> None:
    with pytest.raises(TinkerTrainingError, match="'no-such/model' is not supported") as caught:
        _train(
            examples,
            tmp_path,
            base_model="no-such/model",
            base_url=fake_tinker.base_url,
            api_key=fake_tinker.api_key,
        )
    assert not isinstance(caught.value, TinkerUnavailableError)
    assert "request_id" not in str(caught.value)


def test_tinker_going_away_mid_training_gives_one_clear_error(
    tiny_model_dir: Path, examples: list[TokenizedExample], tmp_path: Path
) -> None:
    """The SDK retries a dead connection without end; train_tinker notices the host is gone."""
    doomed = FakeTinkerServer(
        base_models={BASE_MODEL: tiny_model_dir}, storage_dir=tmp_path / "storage"
    ).start()
    metrics_path = tmp_path / "metrics.jsonl"

    def stop_after_first_step() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if metrics_path.exists() and metrics_path.read_text().strip():
                break
            time.sleep(0.05)
        doomed.stop()

    killer = threading.Thread(target=stop_after_first_step, daemon=True)
    killer.start()
    started = time.monotonic()
    with pytest.raises(TinkerUnavailableError, match="Lost the connection to Tinker") as caught:
        _train(
            examples,
            tmp_path,
            examples=examples[:8],
            epochs=3,
            metrics_path=metrics_path,
            base_url=doomed.base_url,
            api_key=doomed.api_key,
            unreachable_after_s=2,
        )
    killer.join(timeout=5)
    assert doomed.base_url in str(caught.value)
    assert len(metrics_path.read_text().splitlines()) < 12  # it stopped early
    assert time.monotonic() - started < 45


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_learning_rates_match_the_local_backends_schedules(schedule: str) -> None:
    """The local backend uses transformers' schedulers; Tinker gets the same rate per step."""
    import torch
    from transformers import get_scheduler

    total, warmup = 9, 2
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    name = {"constant": "constant_with_warmup"}.get(schedule, schedule)
    scheduler = get_scheduler(name, optimizer=optimizer, num_warmup_steps=warmup, num_training_steps=total)
    for step in range(total):
        assert learning_rate_at(step, total, 0.1, schedule, warmup) == pytest.approx(
            scheduler.get_last_lr()[0]
        )
        optimizer.step()
        scheduler.step()


def test_max_steps_stops_early_and_still_validates(
    fake_tinker: FakeTinkerServer, examples: list[TokenizedExample], tmp_path: Path
) -> None:
    metrics_path = tmp_path / "metrics.jsonl"
    _train(
        examples,
        tmp_path,
        examples=examples[:8],
        validation=examples[8:9],
        batch_size=4,
        epochs=3,
        max_steps=3,
        lr_schedule="linear",
        warmup_ratio=0.34,
        metrics_path=metrics_path,
        base_url=fake_tinker.base_url,
        api_key=fake_tinker.api_key,
    )
    records = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in records if "loss" in r] == [(1, 1), (1, 2), (2, 3)]
    # Validation after each epoch's last step, and after the step that ends the run.
    assert [r["step"] for r in records if "val_loss" in r] == [2, 3]
    assert [r["learning_rate"] for r in records if "loss" in r] == pytest.approx([0.0, 1e-3, 5e-4])
