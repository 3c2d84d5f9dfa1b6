"""LoRA fine-tuning on Tinker: the `tinker` SDK does the training remotely, we get a PEFT adapter back.

Flow (tinker 0.38): ServiceClient -> create_lora_training_client(base_model, rank) -> per batch
forward_backward([Datum], "cross_entropy") with per-token weights + optim_step(AdamParams) ->
forward() on the validation set each epoch -> save_state (resumable on Tinker) ->
save_weights_external -> RestClient.get_external_weights_urls -> download -> convert Tinker's tensor
names into a PEFT adapter (training.tinker_adapter) -> close the session.

Tinker's cross_entropy is a sum of -logprob * weight over target tokens; the loss we report is that
sum divided by the summed weights (mean loss per trained token), like the local backend's.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal, cast

from training.tinker_adapter import TinkerAdapterError, convert_tinker_adapter
from training.types import TokenizedExample

API_KEY_PREFIX = "tml-"
LR_SCHEDULES = ("constant", "linear", "cosine")
CHECKPOINT_NAME = "final"
# How many optimizer steps may be queued on Tinker ahead of the one we wait for: overlapping keeps
# the remote GPU busy while we read results (the SDK executes requests in submission order).
STEPS_IN_FLIGHT = 2


class TinkerTrainingError(RuntimeError):
    """Training on Tinker failed; the message says why in one line."""


class TinkerUnavailableError(TinkerTrainingError):
    """Tinker cannot be used: unreachable, no answer, or no valid API key."""


@dataclass(frozen=True)
class _Batch:
    epoch: int
    step: int
    data: list[Any]  # tinker.types.Datum
    weights: list[list[float]]  # per datum, aligned with its target tokens


@dataclass(frozen=True)
class _InFlight:
    """One optimizer step submitted to Tinker, with the futures of its results."""

    batch: _Batch
    learning_rate: float
    forward: Any
    optim: Any
    validate: Any  # forward() on the validation set after an epoch's last step, else None
    submitted: float


def resolve_api_key(api_key: str | None) -> str:
    key = api_key or os.environ.get("TINKER_API_KEY") or ""
    if not key:
        raise TinkerUnavailableError(
            "No Tinker API key: pass one or set TINKER_API_KEY (keys start with 'tml-')."
        )
    if not key.startswith(API_KEY_PREFIX):
        raise TinkerUnavailableError(
            f"The Tinker API key must start with '{API_KEY_PREFIX}'; the one given starts with "
            f"{key[:4]!r}. Check TINKER_API_KEY."
        )
    return key


def resolve_base_url(base_url: str | None) -> str:
    from tinker.lib.base_url import resolve_base_url as sdk_resolve

    return sdk_resolve(base_url or None)


def _unreachable_reason(base_url: str, timeout_s: float) -> str | None:
    """Why nothing answers at base_url, or None when it answers (any HTTP status will do)."""
    import httpx

    try:
        httpx.get(f"{base_url}/api/v1/healthz", timeout=timeout_s)
    except httpx.HTTPError as exc:
        return str(exc) or type(exc).__name__
    return None


def check_reachable(base_url: str, timeout_s: float = 10.0) -> None:
    """Fail fast when nothing answers at base_url (the SDK would retry connection errors for minutes)."""
    reason = _unreachable_reason(base_url, timeout_s)
    if reason is not None:
        raise TinkerUnavailableError(
            f"Cannot reach the Tinker service at {base_url} ({reason}). "
            "Check TINKER_BASE_URL and the network."
        )


class _Waiter:
    """Waits for SDK futures, and gives up when the Tinker host stops answering.

    The SDK retries connection errors while it polls a result, without end; a queue on a busy but
    reachable service can legitimately take long. So we wait in slices and probe the host between
    them: unreachable for `unreachable_after_s` (or no result within `timeout_s`) ends the wait.
    """

    def __init__(self, url: str, *, timeout_s: float, unreachable_after_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.unreachable_after_s = unreachable_after_s
        self.slice_s = min(10.0, max(unreachable_after_s / 2, 0.5))

    def __call__(self, future: Any) -> Any:
        deadline = time.monotonic() + self.timeout_s
        unreachable_since: float | None = None
        while True:
            remaining = deadline - time.monotonic()
            try:
                return future.result(timeout=max(min(self.slice_s, remaining), 0.01))
            except FutureTimeout:
                now = time.monotonic()
                if now >= deadline:
                    raise TinkerUnavailableError(
                        f"Tinker at {self.url} gave no result within {self.timeout_s:.0f} s"
                    ) from None
                if _unreachable_reason(self.url, timeout_s=min(self.slice_s, 10.0)) is None:
                    unreachable_since = None
                    continue
                unreachable_since = unreachable_since or now
                if now - unreachable_since >= self.unreachable_after_s:
                    raise TinkerUnavailableError(
                        f"Lost the connection to Tinker at {self.url}: no answer for "
                        f"{now - unreachable_since:.0f} s. Check the network and TINKER_BASE_URL."
                    ) from None


def learning_rate_at(step: int, total_steps: int, base: float, schedule: str, warmup_steps: int = 0) -> float:
    """Learning rate for 0-based optimizer step `step`: linear warmup, then the schedule's decay.

    The same curves as transformers' get_scheduler (cosine, linear, constant_with_warmup) that the
    local backend uses, so both backends train with the same learning rates.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose one of {LR_SCHEDULES}")
    if step < warmup_steps:
        return base * step / max(1, warmup_steps)
    if schedule == "constant":
        return base
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "linear":
        return base * max(0.0, 1.0 - progress)
    return base * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


@dataclass(frozen=True)
class _Plan:
    """How many optimizer steps, and the optimizer settings of each."""

    total_steps: int
    steps_per_epoch: int
    learning_rate: float
    lr_schedule: str
    warmup_steps: int
    weight_decay: float

    def adam_params(self, step: int) -> Any:
        from tinker import types

        lr = learning_rate_at(step, self.total_steps, self.learning_rate, self.lr_schedule, self.warmup_steps)
        return types.AdamParams(learning_rate=lr, weight_decay=self.weight_decay)

    def ends_epoch(self, batch: _Batch) -> bool:
        """Last step of an epoch, or of the run when max_steps cuts an epoch short."""
        return batch.step + 1 in (batch.epoch * self.steps_per_epoch, self.total_steps)


def _datum(example: TokenizedExample) -> tuple[Any, list[float]]:
    """Next-token datum: input ids[:-1], targets ids[1:], weights[1:] (see TokenizedExample)."""
    from tinker import types

    weights = [float(w) for w in example.weights[1:]]
    datum = types.Datum(
        model_input=types.ModelInput.from_ints(list(example.input_ids[:-1])),
        # Datum annotates loss_fn_inputs as dict[str, TensorData], but its __post_init__ converts
        # lists (int64 targets, float32 weights) to TensorData itself.
        loss_fn_inputs=cast(Any, {"target_tokens": list(example.input_ids[1:]), "weights": weights}),
    )
    return datum, weights


def _check_examples(examples: Sequence[TokenizedExample], what: str) -> None:
    for index, example in enumerate(examples):
        if len(example.input_ids) < 2:
            raise ValueError(f"{what} example {index} ({example.example_id}) has fewer than 2 tokens")


def _mean_loss(output: Any, weights: list[list[float]]) -> float:
    """Summed -logprob * weight over the batch, divided by the summed weights."""
    import numpy as np

    total = 0.0
    for datum_output, datum_weights in zip(output.loss_fn_outputs, weights, strict=True):
        logprobs = np.asarray(datum_output["logprobs"].data, dtype=np.float64)
        total += float(-(logprobs * np.asarray(datum_weights, dtype=np.float64)).sum())
    trained = sum(sum(w) for w in weights)
    return total / trained if trained > 0 else 0.0


def _error_detail(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])
    return str(getattr(exc, "message", "") or exc)


@contextlib.contextmanager
def _tinker_errors(base_url: str) -> Iterator[None]:
    """SDK exceptions -> one clear TinkerTrainingError line (no SDK traceback chain)."""
    import tinker

    try:
        yield
    except (tinker.AuthenticationError, tinker.PermissionDeniedError) as exc:
        raise TinkerUnavailableError(
            f"Tinker at {base_url} rejected the API key (HTTP {exc.status_code}: {_error_detail(exc)}). "
            "Check TINKER_API_KEY."
        ) from None
    except tinker.APIConnectionError as exc:
        raise TinkerUnavailableError(f"Lost the connection to Tinker at {base_url}: {exc.message}") from None
    except tinker.RequestFailedError as exc:
        message = exc.message.removeprefix("Request failed: ").split(" for self.request_id=")[0]
        raise TinkerTrainingError(f"Tinker could not carry out a request: {message}") from None
    except tinker.APIStatusError as exc:
        raise TinkerTrainingError(f"Tinker answered HTTP {exc.status_code}: {_error_detail(exc)}") from None
    except tinker.TinkerError as exc:
        raise TinkerTrainingError(f"Tinker error: {exc}") from None
    except ValueError as exc:
        # The SDK's future polling reports non-retryable HTTP errors as ValueError from an APIStatusError.
        cause = exc.__cause__
        if isinstance(cause, tinker.APIStatusError):
            raise TinkerTrainingError(
                f"Tinker answered HTTP {cause.status_code}: {_error_detail(cause)}"
            ) from None
        raise


def _download(urls: dict[str, str], target: Path, timeout_s: float) -> None:
    """Fetch the signed URLs of an external-weights checkpoint (no API key: they are pre-signed)."""
    import httpx

    target.mkdir(parents=True, exist_ok=True)
    with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
        for relative, url in urls.items():
            path = PurePosixPath(relative)
            if path.is_absolute() or ".." in path.parts or not path.parts:
                raise TinkerTrainingError(f"Tinker listed an unsafe file name {relative!r}")
            destination = target.joinpath(*path.parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                with client.stream("GET", url) as response:
                    response.raise_for_status()
                    with destination.open("wb") as out:
                        for chunk in response.iter_bytes():
                            out.write(chunk)
            except httpx.HTTPError as exc:
                raise TinkerUnavailableError(f"Downloading {relative} from Tinker failed: {exc}") from None


class _MetricsLog:
    """JSON Lines metrics (one object per line), or nothing when no path is given."""

    def __init__(self, path: Path | None) -> None:
        self._stream: IO[str] | None = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._stream = Path(path).open("w", encoding="utf-8")  # noqa: SIM115 - closed in __exit__

    def write(self, record: dict[str, Any]) -> None:
        if self._stream is not None:
            self._stream.write(json.dumps({"backend": "tinker", **record}) + "\n")
            self._stream.flush()

    def __enter__(self) -> _MetricsLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._stream is not None:
            self._stream.close()


def _check_arguments(
    examples: list[TokenizedExample],
    validation: list[TokenizedExample],
    *,
    rank: int,
    learning_rate: float,
    epochs: int,
    batch_size: int,
    lr_schedule: str,
    warmup_ratio: float,
    weight_decay: float,
    max_steps: int | None,
) -> None:
    if not examples:
        raise ValueError("no training examples")
    if rank < 1 or epochs < 1 or batch_size < 1 or learning_rate <= 0:
        raise ValueError("rank, epochs, batch_size must be >= 1 and learning_rate > 0")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {lr_schedule!r}; choose one of {LR_SCHEDULES}")
    if not 0 <= warmup_ratio < 1 or weight_decay < 0 or (max_steps is not None and max_steps < 1):
        raise ValueError("warmup_ratio must be in [0, 1), weight_decay >= 0 and max_steps >= 1")
    _check_examples(examples, "training")
    _check_examples(validation, "validation")
    if not any(any(w > 0 for w in example.weights[1:]) for example in examples):
        raise ValueError("no training token carries a loss weight: nothing to learn")


_Data = list[tuple[Any, list[float]]]  # (tinker Datum, its target weights)


def _batches(
    train_data: _Data, epochs: int, batch_size: int, seed: int, total_steps: int
) -> Iterator[_Batch]:
    """Shuffled batches, a fresh deterministic order per epoch, total_steps of them at most."""
    step = 0
    for epoch in range(1, epochs + 1):
        order = list(range(len(train_data)))
        random.Random(seed + epoch).shuffle(order)
        for start in range(0, len(order), batch_size):
            if step == total_steps:
                return
            chosen = [train_data[i] for i in order[start : start + batch_size]]
            yield _Batch(epoch, step, [d for d, _ in chosen], [w for _, w in chosen])
            step += 1


def _train_steps(
    client: Any,
    batches: Iterator[_Batch],
    val_data: _Data,
    *,
    plan: _Plan,
    wait: _Waiter,
    metrics: _MetricsLog,
    summary: dict[str, Any],
) -> None:
    """forward_backward + optim_step per batch, a validation forward() after each epoch."""
    from tqdm.auto import tqdm

    in_flight: deque[_InFlight] = deque()
    last_result = time.monotonic()
    with tqdm(total=plan.total_steps, desc="Tinker LoRA", unit="step") as progress:
        while True:
            while len(in_flight) < STEPS_IN_FLIGHT and (batch := next(batches, None)) is not None:
                adam = plan.adam_params(batch.step)
                forward = client.forward_backward(batch.data, "cross_entropy")
                optim = client.optim_step(adam)
                # Submitted right behind the epoch's last optimizer step, so it sees those weights.
                validate = None
                if plan.ends_epoch(batch) and val_data:
                    validate = client.forward([d for d, _ in val_data], "cross_entropy")
                in_flight.append(
                    _InFlight(batch, adam.learning_rate, forward, optim, validate, time.monotonic())
                )
            if not in_flight:
                return
            step = in_flight.popleft()
            batch = step.batch
            loss = _mean_loss(wait(step.forward), batch.weights)
            wait(step.optim)
            # Steps overlap on Tinker: a step's time runs from the later of its submission and the
            # previous step's result to its own result.
            now = time.monotonic()
            seconds = max(now - max(step.submitted, last_result), 1e-9)
            last_result = now
            tokens = sum(len(w) for w in batch.weights)
            metrics.write(
                {
                    "epoch": batch.epoch,
                    "step": batch.step + 1,
                    "loss": loss,
                    "learning_rate": step.learning_rate,
                    "tokens": tokens,
                    "tokens_per_s": tokens / seconds,
                }
            )
            summary["train_loss"] = loss
            progress.update(1)
            progress.set_postfix(epoch=batch.epoch, loss=f"{loss:.4f}")
            if step.validate is not None:
                val_loss = _mean_loss(wait(step.validate), [w for _, w in val_data])
                summary["val_loss"].append(val_loss)
                metrics.write({"epoch": batch.epoch, "step": batch.step + 1, "val_loss": val_loss})
                progress.write(f"epoch {batch.epoch}: validation loss {val_loss:.4f}")


def _fetch_adapter(
    client: Any, *, url: str, key: str, output_dir: Path, base_model: str, wait: _Waiter, summary: dict
) -> Path:
    """Save on Tinker, download the external-format weights, convert them to a PEFT adapter."""
    import tinker

    with _tinker_errors(url):
        summary["state_path"] = wait(client.save_state(CHECKPOINT_NAME)).path
        external = wait(client.save_weights_external(CHECKPOINT_NAME))
        summary["external_weights_path"] = external.path
        rest = tinker.RestClient(base_url=url, api_key=key)
        listing = wait(rest.get_external_weights_urls(external.path))
    raw_dir = output_dir / "tinker_checkpoint"
    _download(listing.urls, raw_dir, wait.timeout_s)
    try:
        return convert_tinker_adapter(raw_dir, output_dir / "adapter", base_model=base_model)
    except TinkerAdapterError as exc:
        raise TinkerTrainingError(f"The adapter Tinker returned cannot be converted: {exc}") from None


def train_tinker(
    *,
    examples: list[TokenizedExample],
    validation: list[TokenizedExample],
    base_model: str,
    rank: int,
    learning_rate: float,
    epochs: int,
    batch_size: int,
    output_dir: Path,
    metrics_path: Path | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    seed: int = 0,
    lr_schedule: str = "constant",
    warmup_ratio: float = 0.0,
    weight_decay: float = 0.0,
    max_steps: int | None = None,
    train_unembed: bool = False,
    request_timeout_s: float = 1800.0,
    unreachable_after_s: float = 120.0,
) -> Path:
    """Train a LoRA on Tinker and return output_dir/"adapter", a PEFT adapter for base_model.

    base_model is the Tinker model name (e.g. "meta-llama/Llama-3.2-1B"). The examples' token ids
    must come from that model's tokenizer. train_unembed also puts a LoRA on the output layer; it
    is off by default, matching the local backend's linear-layer targets, and because merging it
    into a tied embedding (SmolLM2, Gemma 3) needs the output layer untied first.
    base_url / api_key default to TINKER_BASE_URL / TINKER_API_KEY. metrics_path gets one JSON
    object per optimizer step (loss, learning_rate, tokens, tokens_per_s) and per epoch (val_loss).
    Also writes output_dir/"tinker_checkpoint" (Tinker's raw export) and output_dir/"tinker_run.json".
    Waits up to request_timeout_s for any one result, and gives up once the host has not answered
    for unreachable_after_s. Raises ValueError (bad arguments), TinkerUnavailableError (unreachable,
    bad or missing API key, no answer) or TinkerTrainingError (Tinker refused or failed a request).
    """
    _check_arguments(
        examples,
        validation,
        rank=rank,
        learning_rate=learning_rate,
        epochs=epochs,
        batch_size=batch_size,
        lr_schedule=lr_schedule,
        warmup_ratio=warmup_ratio,
        weight_decay=weight_decay,
        max_steps=max_steps,
    )
    key = resolve_api_key(api_key)
    url = resolve_base_url(base_url)
    check_reachable(url)

    import tinker

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    train_data = [_datum(example) for example in examples]
    val_data = [_datum(example) for example in validation]
    steps_per_epoch = math.ceil(len(train_data) / batch_size)
    total_steps = min(steps_per_epoch * epochs, max_steps or steps_per_epoch * epochs)
    plan = _Plan(
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        learning_rate=learning_rate,
        lr_schedule=lr_schedule,
        warmup_steps=round(warmup_ratio * total_steps),
        weight_decay=weight_decay,
    )
    summary: dict[str, Any] = {"base_model": base_model, "rank": rank, "steps": total_steps, "val_loss": []}
    wait = _Waiter(url, timeout_s=request_timeout_s, unreachable_after_s=unreachable_after_s)
    service = tinker.ServiceClient(base_url=url, api_key=key)
    status: Literal["success", "errored", "interrupted", "unreachable"] = "errored"
    try:
        with _MetricsLog(metrics_path) as metrics, _tinker_errors(url):
            client = wait(
                service.create_lora_training_client(
                    base_model=base_model, rank=rank, seed=seed, train_unembed=train_unembed
                )
            )
            summary["model_id"] = client.model_id
            _train_steps(
                client,
                _batches(train_data, epochs, batch_size, seed, total_steps),
                val_data,
                plan=plan,
                wait=wait,
                metrics=metrics,
                summary=summary,
            )
        adapter_dir = _fetch_adapter(
            client,
            url=url,
            key=key,
            output_dir=output_dir,
            base_model=base_model,
            wait=wait,
            summary=summary,
        )
        (output_dir / "tinker_run.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        status = "success"
        return adapter_dir
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except TinkerUnavailableError:
        status = "unreachable"
        raise
    finally:
        # Finishing the session is best effort: a host that is gone must not hold the caller up.
        finish_wait = {"success": 30.0, "unreachable": 0.5}.get(status, 5.0)
        with contextlib.suppress(Exception):
            service.close("errored" if status == "unreachable" else status).result(timeout=finish_wait)
