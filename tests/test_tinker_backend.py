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
from tests.fixtures import labelled_lines, labelled_rows
from training.config import TrainConfig
from training.metrics import read_metrics
from training.schedule import lr_factor
from training.tinker_backend import (
    ATTENTION_MODULES,
    MLP_MODULES,
    TinkerTrainingError,
    TinkerUnavailableError,
    lora_layers,
    train_tinker,
)
from training.types import RunResult, TokenizedExample

BASE_MODEL = "tiny-llama"


def tinker_config(**overrides: object) -> TrainConfig:
    """A Tinker run's TrainConfig (data is read by train() only, not by train_tinker)."""
    values: dict = {"data": Path("unused.jsonl"), "backend": "tinker", "tinker_base_model": BASE_MODEL}
    return TrainConfig.model_validate({**values, **overrides})


def _open_tinker_sessions() -> list[object]:
    """The session heartbeat tasks running on the tinker SDK's event loop thread: one per session whose
    client was not closed (it keeps calling the server after the test, and after the server is gone)."""
    import asyncio

    from tinker.lib.internal_client_holder import _internal_client_holder_thread_singleton

    loop = _internal_client_holder_thread_singleton.get_loop()
    return [
        task
        for task in asyncio.all_tasks(loop)
        if getattr(task.get_coro(), "__qualname__", "").endswith("_session_heartbeat")
    ]


@pytest.fixture(autouse=True)
def every_tinker_client_is_closed() -> Iterator[None]:
    yield
    deadline = time.monotonic() + 10
    while _open_tinker_sessions() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _open_tinker_sessions(), "a Tinker session was left open: its heartbeat outlives the test"


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
    config = tinker_config(
        rank=4,
        learning_rate=5e-3,
        lr_schedule="constant",
        warmup_ratio=0,
        epochs=3,
        batch_size=4,
        target_modules=[*ATTENTION_MODULES, *MLP_MODULES, "lm_head"],
        tinker_base_url=fake_tinker.base_url,
    )
    run = train_tinker(
        config,
        examples=train,
        validation=validation,
        output_dir=tmp_path / "run",
        metrics_path=metrics_path,
        api_key=fake_tinker.api_key,
    )
    adapter_dir = run.adapter_dir
    assert run.device == "tinker" and run.steps == 9 and [e.epoch for e in run.epochs] == [1, 2, 3]
    assert run.not_applied.keys() == {"dropout"}  # the config's 0.05; the alpha is Tinker's 32

    steps = read_metrics(metrics_path, "step")
    (before,) = read_metrics(metrics_path, "validation")
    val_losses = [r["validation_loss"] for r in read_metrics(metrics_path, "epoch")]
    assert [r["step"] for r in steps] == list(range(1, 10))
    assert len(val_losses) == 3
    assert before["validation_loss"] > val_losses[0]
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


def _train(
    data: list[TokenizedExample],
    tmp_path: Path,
    *,
    examples: list[TokenizedExample] | None = None,
    validation: list[TokenizedExample] | None = None,
    metrics_path: Path | None = None,
    api_key: str | None = None,
    unreachable_after_s: float = 120.0,
    **settings: object,
) -> RunResult:
    """train_tinker on 2 examples, 1 epoch of batch 2, rank 2, unless `settings` (TrainConfig fields) say."""
    config = tinker_config(**{"rank": 2, "learning_rate": 1e-3, "epochs": 1, "batch_size": 2, **settings})
    return train_tinker(
        config,
        examples=data[:2] if examples is None else examples,
        validation=validation or [],
        output_dir=tmp_path / "run",
        metrics_path=metrics_path or tmp_path / "metrics.jsonl",
        api_key=api_key,
        unreachable_after_s=unreachable_after_s,
    )


def test_unreachable_tinker_gives_one_clear_error(examples: list[TokenizedExample], tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_unused_port()}"
    started = time.monotonic()
    with pytest.raises(TinkerUnavailableError, match="Cannot reach the Tinker service") as caught:
        _train(examples, tmp_path, tinker_base_url=url, api_key="tml-anything")
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
        _train(examples, tmp_path, tinker_base_url=fake_tinker.base_url, api_key="tml-not-a-valid-key")
    assert "401" in str(caught.value)
    assert time.monotonic() - started < 15


def test_api_key_must_start_with_tml(
    examples: list[TokenizedExample], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(TinkerUnavailableError, match="must start with 'tml-'"):
        _train(examples, tmp_path, tinker_base_url="http://127.0.0.1:9", api_key="sk-abc")
    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    with pytest.raises(TinkerUnavailableError, match="No Tinker API key"):
        _train(examples, tmp_path, tinker_base_url="http://127.0.0.1:9")


def test_unknown_base_model_is_reported_by_name(
    fake_tinker: FakeTinkerServer, examples: list[TokenizedExample], tmp_path: Path
) -> None:
    with pytest.raises(TinkerTrainingError, match="'no-such/model' is not supported") as caught:
        _train(
            examples,
            tmp_path,
            tinker_base_model="no-such/model",
            tinker_base_url=fake_tinker.base_url,
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
            if metrics_path.exists() and '"event": "step"' in metrics_path.read_text():
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
            tinker_base_url=doomed.base_url,
            api_key=doomed.api_key,
            unreachable_after_s=2,
        )
    killer.join(timeout=5)
    assert doomed.base_url in str(caught.value)
    assert len(metrics_path.read_text().splitlines()) < 12  # it stopped early
    assert time.monotonic() - started < 45


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_the_shared_schedule_has_transformers_curves(schedule: str) -> None:
    """Both backends take their learning rates from training.schedule: the curves of transformers'
    schedulers, which the local backend used before."""
    import torch
    from transformers import get_scheduler

    total, warmup = 9, 2
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    name = {"constant": "constant_with_warmup"}.get(schedule, schedule)
    scheduler = get_scheduler(name, optimizer=optimizer, num_warmup_steps=warmup, num_training_steps=total)
    for step in range(total):
        assert 0.1 * lr_factor(step, total, schedule, warmup) == pytest.approx(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()


def test_target_modules_map_to_tinkers_layer_groups() -> None:
    assert lora_layers("all-linear") == (True, True, False)
    assert lora_layers([*MLP_MODULES, "lm_head"]) == (False, True, True)
    with pytest.raises(ValueError, match="all of q_proj,k_proj,v_proj,o_proj or none"):
        lora_layers(["q_proj", "v_proj"])
    with pytest.raises(ValueError, match="cannot train target_modules"):
        lora_layers(["c_attn"])


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
        tinker_base_url=fake_tinker.base_url,
        api_key=fake_tinker.api_key,
    )
    steps = read_metrics(metrics_path, "step")
    assert [(r["epoch"], r["step"]) for r in steps] == [(1, 1), (1, 2), (2, 3)]
    # Validation after each epoch's last step, and after the step that ends the run.
    epochs = read_metrics(metrics_path, "epoch")
    assert [(r["epoch"], r["steps"]) for r in epochs] == [(1, 2), (2, 1)]
    assert all(r["validation_loss"] is not None for r in epochs)
    assert [r["learning_rate"] for r in steps] == pytest.approx([0.0, 1e-3, 5e-4])


def test_train_on_tinker_applies_the_whole_config(
    fake_tinker: FakeTinkerServer,
    service_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    """`train(config)` with the Tinker backend trains with every optimisation setting of the config
    (issue 14: warmup_ratio, weight_decay and max_steps never reached Tinker, the manifest said they did)."""
    from app.core.config import get_settings
    from app.registry import read_manifest
    from training.config import TrainConfig
    from training.train import train

    monkeypatch.setenv("TINKER_API_KEY", fake_tinker.api_key)
    data = tmp_path / "seed.jsonl"
    data.write_text("\n".join(labelled_lines(10)) + "\n", encoding="utf-8")
    config = TrainConfig(
        data=data,
        backend="tinker",
        base_model=str(tiny_model_dir),
        tinker_base_model=BASE_MODEL,
        tinker_base_url=fake_tinker.base_url,
        rank=2,
        learning_rate=1e-2,
        lr_schedule="linear",
        warmup_ratio=0.4,  # 2 of 5 steps
        weight_decay=0.1,
        epochs=3,
        batch_size=2,
        max_steps=5,  # of 3 epochs' worth (12 steps)
        validation_fraction=0.2,
        version_id="tiny-tinker",
        output_dir=tmp_path / "run",
        precision="fp32",
    )
    result = train(config)

    assert result.train_examples == 8  # 4 steps an epoch: max_steps ends the run in epoch 2
    summary = json.loads((tmp_path / "run" / "tinker_run.json").read_text())
    sent = fake_tinker.service.runs[summary["model_id"]].adam_params
    # Linear warmup over 2 steps, then linear decay to 0 at step 5.
    expected_rates = [0.0, 5e-3, 1e-2, 1e-2 * 2 / 3, 1e-2 / 3]
    assert [p["learning_rate"] for p in sent] == pytest.approx(expected_rates)
    assert [p["weight_decay"] for p in sent] == pytest.approx([0.1] * 5)
    assert [(e["epoch"], e["steps"]) for e in result.epochs] == [(1, 4), (2, 1)]
    # The metrics log (one schema for both backends) says the same.
    steps = read_metrics(result.metrics_path, "step")
    assert [(r["epoch"], r["step"]) for r in steps] == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 5)]
    assert [r["learning_rate"] for r in steps] == pytest.approx(expected_rates)
    assert [e["event"] for e in read_metrics(result.metrics_path)] == [
        "validation", *["step"] * 4, "epoch", "step", "epoch", "done"
    ]  # fmt: skip
    assert result.initial_validation_loss is not None

    manifest = read_manifest(get_settings().models_dir / "tiny-tinker")
    assert manifest["training"]["backend"] == "tinker"
    assert manifest["training"]["config"]["max_steps"] == 5
    assert [e["steps"] for e in manifest["training"]["epochs"]] == [4, 1]
    # What Tinker cannot do as configured is said, not recorded as used.
    assert set(manifest["training"]["not_applied"]) == {"dropout"}
    assert manifest["training"]["device"] == "tinker"
