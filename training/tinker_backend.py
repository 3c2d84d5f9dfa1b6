"""LoRA fine-tuning on Tinker: the `tinker` SDK does the training remotely, we get a PEFT adapter back.

Flow (tinker 0.38): ServiceClient -> create_lora_training_client(base_model, rank) -> per batch
forward_backward([Datum], "cross_entropy") with per-token weights + optim_step(AdamParams) ->
forward() on the validation set each epoch -> save_state (resumable on Tinker) ->
save_weights_external -> RestClient.get_external_weights_urls -> download -> convert Tinker's tensor
names into a PEFT adapter (training.tinker_adapter) -> finish the session and release the client
(also when training failed or the host went away: _close_session).

Tinker's cross_entropy is a sum of -logprob * weight over target tokens; the loss we report is that
sum divided by the summed weights (mean loss per trained token), like the local backend's.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, cast

from training.config import ALL_LINEAR, TrainConfig
from training.metrics import MetricsLog
from training.schedule import ADAM_BETAS, ADAM_EPS, GRAD_CLIP_NORM, Schedule, epoch_batches
from training.tinker_adapter import TinkerAdapterError, convert_tinker_adapter
from training.types import EpochMetrics, RunResult, TokenizedExample

API_KEY_PREFIX = "tml-"
CHECKPOINT_NAME = "final"
# Tinker's LoRA layer groups (create_lora_training_client's train_attn, train_mlp, train_unembed).
ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
UNEMBED_MODULE = "lm_head"
DEVICE = "tinker"  # RunResult.device and the metrics log's
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
    tokens: int  # of the examples (as the local backend counts them)


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


def _adam_params(schedule: Schedule, step: int, weight_decay: float) -> Any:
    """The AdamParams of 0-based optimizer step `step`: the local backend's AdamW settings."""
    from tinker import types

    return types.AdamParams(
        learning_rate=schedule.learning_rate_at(step),
        beta1=ADAM_BETAS[0],
        beta2=ADAM_BETAS[1],
        eps=ADAM_EPS,
        weight_decay=weight_decay,
        grad_clip_norm=GRAD_CLIP_NORM,
    )


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


def _loss_sums(output: Any, weights: list[list[float]]) -> tuple[float, float]:
    """(summed -logprob * weight over the batch, summed weights)."""
    import numpy as np

    total = 0.0
    for datum_output, datum_weights in zip(output.loss_fn_outputs, weights, strict=True):
        logprobs = np.asarray(datum_output["logprobs"].data, dtype=np.float64)
        total += float(-(logprobs * np.asarray(datum_weights, dtype=np.float64)).sum())
    return total, float(sum(sum(w) for w in weights))


def _mean_loss(output: Any, weights: list[list[float]]) -> float:
    """Summed -logprob * weight over the batch, divided by the summed weights."""
    total, trained = _loss_sums(output, weights)
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


def lora_layers(target_modules: list[str] | str) -> tuple[bool, bool, bool]:
    """TrainConfig.target_modules -> Tinker's (train_attn, train_mlp, train_unembed).

    Tinker puts a LoRA on whole groups of layers, so a list must name whole groups (Llama-style
    names). "all-linear" is attention + MLP: PEFT's all-linear, which the local backend uses, leaves
    the output layer out (merging a LoRA into a tied output layer needs it untied first).
    """
    if target_modules == ALL_LINEAR:
        return True, True, False
    chosen = set(target_modules)
    unknown = chosen - {*ATTENTION_MODULES, *MLP_MODULES, UNEMBED_MODULE}
    if unknown or not chosen:
        raise ValueError(
            f"Tinker cannot train target_modules {sorted(chosen)}: it trains {ALL_LINEAR} or whole groups, "
            f"attention ({','.join(ATTENTION_MODULES)}), MLP ({','.join(MLP_MODULES)}), {UNEMBED_MODULE}"
        )
    for group in (ATTENTION_MODULES, MLP_MODULES):
        part = chosen & set(group)
        if part and len(part) < len(group):
            raise ValueError(
                f"Tinker trains all of {','.join(group)} or none; target_modules has only "
                f"{','.join(m for m in group if m in part)}"
            )
    return bool(chosen & set(ATTENTION_MODULES)), bool(chosen & set(MLP_MODULES)), UNEMBED_MODULE in chosen


def _check_run(
    config: TrainConfig, examples: list[TokenizedExample], validation: list[TokenizedExample]
) -> str:
    """The Tinker base model name, or ValueError for what Tinker cannot do as the config says."""
    base_model = config.tinker_base_model or config.base_model
    if not base_model:
        raise ValueError("no base model: set tinker_base_model (Tinker's name for it)")
    if config.resume:
        raise ValueError(
            "a Tinker run cannot be resumed here; start a new run (resume is for the local backend)"
        )
    lora_layers(config.target_modules)
    if not examples:
        raise ValueError("no training examples")
    _check_examples(examples, "training")
    _check_examples(validation, "validation")
    if not any(any(w > 0 for w in example.weights[1:]) for example in examples):
        raise ValueError("no training token carries a loss weight: nothing to learn")
    return base_model


_Data = list[tuple[Any, list[float]]]  # (tinker Datum, its target weights)


def _batches(
    train_data: _Data, lengths: list[int], batch_size: int, seed: int, schedule: Schedule
) -> Iterator[_Batch]:
    """The shared batch order (training.schedule.epoch_batches), schedule.total_steps batches at most."""
    step = 0
    for epoch in range(1, math.ceil(schedule.total_steps / schedule.steps_per_epoch) + 1):
        for indices in epoch_batches(lengths, batch_size, seed, epoch):
            if step == schedule.total_steps:
                return
            chosen = [train_data[i] for i in indices]
            tokens = sum(lengths[i] for i in indices)
            yield _Batch(epoch, step, [d for d, _ in chosen], [w for _, w in chosen], tokens)
            step += 1


def _train_steps(
    client: Any,
    batches: Iterator[_Batch],
    val_data: _Data,
    *,
    schedule: Schedule,
    weight_decay: float,
    wait: _Waiter,
    metrics: MetricsLog,
) -> list[EpochMetrics]:
    """forward_backward + optim_step per batch, a validation forward() after each epoch."""
    from tqdm.auto import tqdm

    in_flight: deque[_InFlight] = deque()
    history: list[EpochMetrics] = []
    last_result = epoch_started = time.monotonic()
    loss_total = weight_total = 0.0
    tokens = steps = 0
    with tqdm(total=schedule.total_steps, desc="Tinker LoRA", unit="step") as progress:
        while True:
            while len(in_flight) < STEPS_IN_FLIGHT and (batch := next(batches, None)) is not None:
                adam = _adam_params(schedule, batch.step, weight_decay)
                forward = client.forward_backward(batch.data, "cross_entropy")
                optim = client.optim_step(adam)
                # Submitted right behind the epoch's last optimizer step, so it sees those weights.
                validate = None
                if schedule.ends_epoch(batch.epoch, batch.step) and val_data:
                    validate = client.forward([d for d, _ in val_data], "cross_entropy")
                in_flight.append(
                    _InFlight(batch, adam.learning_rate, forward, optim, validate, time.monotonic())
                )
            if not in_flight:
                return history
            step = in_flight.popleft()
            batch = step.batch
            loss_sum, weight_sum = _loss_sums(wait(step.forward), batch.weights)
            loss = loss_sum / weight_sum if weight_sum > 0 else 0.0
            wait(step.optim)
            # Steps overlap on Tinker: a step's time runs from the later of its submission and the
            # previous step's result to its own result.
            now = time.monotonic()
            seconds = max(now - max(step.submitted, last_result), 1e-9)
            last_result = now
            metrics.step(
                epoch=batch.epoch,
                step=batch.step + 1,
                loss=loss,
                learning_rate=step.learning_rate,
                tokens=batch.tokens,
                seconds=seconds,
            )
            loss_total, weight_total = loss_total + loss_sum, weight_total + weight_sum
            tokens, steps = tokens + batch.tokens, steps + 1
            progress.update(1)
            progress.set_postfix(epoch=batch.epoch, loss=f"{loss:.4f}")
            if not schedule.ends_epoch(batch.epoch, batch.step):
                continue
            validation_loss = None
            if step.validate is not None:
                validation_loss = _mean_loss(wait(step.validate), [w for _, w in val_data])
            epoch_seconds = time.monotonic() - epoch_started
            epoch_metrics = metrics.end_epoch(
                epoch=batch.epoch,
                loss_total=loss_total,
                weight_total=weight_total,
                validation_loss=validation_loss,
                seconds=epoch_seconds,
                tokens=tokens,
                steps=steps,
                progress=progress,
            )
            history.append(epoch_metrics)
            epoch_started = time.monotonic()
            loss_total = weight_total = 0.0
            tokens = steps = 0


def _fetch_adapter(
    client: Any, *, url: str, key: str, output_dir: Path, base_model: str, wait: _Waiter, summary: dict
) -> Path:
    """Save on Tinker, download the external-format weights, convert them to a PEFT adapter."""
    import tinker

    with _tinker_errors(url):
        summary["state_path"] = wait(client.save_state(CHECKPOINT_NAME)).path
        external = wait(client.save_weights_external(CHECKPOINT_NAME))
        summary["external_weights_path"] = external.path
        # Session-less (no heartbeat): the SDK shares its connections per URL and key for the process,
        # and it has nothing to close.
        rest = tinker.RestClient(base_url=url, api_key=key)
        listing = wait(rest.get_external_weights_urls(external.path))
    raw_dir = output_dir / "tinker_checkpoint"
    _download(listing.urls, raw_dir, wait.timeout_s)
    try:
        return convert_tinker_adapter(raw_dir, output_dir / "adapter", base_model=base_model)
    except TinkerAdapterError as exc:
        raise TinkerTrainingError(f"The adapter Tinker returned cannot be converted: {exc}") from None


def train_tinker(
    config: TrainConfig,
    *,
    examples: list[TokenizedExample],
    validation: list[TokenizedExample],
    output_dir: Path,
    metrics_path: Path,
    api_key: str | None = None,
    request_timeout_s: float = 1800.0,
    unreachable_after_s: float = 120.0,
) -> RunResult:
    """Train a LoRA on Tinker as `config` says; the result's adapter_dir is output_dir/"adapter", a PEFT
    adapter.

    The Tinker model is config.tinker_base_model (default config.base_model), e.g.
    "meta-llama/Llama-3.2-1B"; the examples' token ids must come from its tokenizer. The steps, learning
    rates, batch order and AdamW settings are the local backend's (training.schedule): rank, seed,
    learning_rate, lr_schedule, warmup_ratio, weight_decay, epochs, batch_size and max_steps apply as
    there; target_modules picks Tinker's layer groups (lora_layers). Tinker has no LoRA dropout and
    chooses the LoRA alpha itself: a dropout above 0 and an alpha other than the one Tinker used are
    in the result's not_applied. resume is refused. URL: config.tinker_base_url, else TINKER_BASE_URL;
    api_key defaults to TINKER_API_KEY. metrics_path gets the metrics log (training.metrics), as
    the local backend writes it. Also writes output_dir/"tinker_checkpoint" (Tinker's raw export)
    and output_dir/"tinker_run.json".
    Waits up to request_timeout_s for any one result, and gives up once the host has not answered
    for unreachable_after_s. Raises ValueError (settings Tinker cannot carry out, bad examples),
    TinkerUnavailableError (unreachable, bad or missing API key, no answer) or TinkerTrainingError
    (Tinker refused or failed a request).
    """
    base_model = _check_run(config, examples, validation)
    train_attn, train_mlp, train_unembed = lora_layers(config.target_modules)
    key = resolve_api_key(api_key)
    url = resolve_base_url(config.tinker_base_url)
    check_reachable(url)

    import tinker

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    train_data = [_datum(example) for example in examples]
    val_data = [_datum(example) for example in validation]
    schedule = Schedule.for_run(config, len(examples))
    summary: dict[str, Any] = {"base_model": base_model, "rank": config.rank, "steps": schedule.total_steps}
    metrics = MetricsLog(metrics_path)
    wait = _Waiter(url, timeout_s=request_timeout_s, unreachable_after_s=unreachable_after_s)
    service = tinker.ServiceClient(base_url=url, api_key=key)
    status: Literal["success", "errored", "interrupted", "unreachable"] = "errored"
    try:
        with _tinker_errors(url):
            client = wait(
                service.create_lora_training_client(
                    base_model=base_model,
                    rank=config.rank,
                    seed=config.seed,
                    train_attn=train_attn,
                    train_mlp=train_mlp,
                    train_unembed=train_unembed,
                )
            )
            summary["model_id"] = client.model_id
            initial_validation = None
            if val_data:
                initial_validation = _mean_loss(
                    wait(client.forward([d for d, _ in val_data], "cross_entropy")), [w for _, w in val_data]
                )
            metrics.write(
                "validation",
                epoch=0,
                validation_loss=initial_validation,
                train_examples=len(examples),
                validation_examples=len(validation),
                total_steps=schedule.total_steps,
                device=DEVICE,
                model_id=client.model_id,
            )
            lengths = [len(example.input_ids) for example in examples]
            history = _train_steps(
                client,
                _batches(train_data, lengths, config.batch_size, config.seed, schedule),
                val_data,
                schedule=schedule,
                weight_decay=config.weight_decay,
                wait=wait,
                metrics=metrics,
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
        metrics.write("done", steps=schedule.total_steps, adapter_dir=str(adapter_dir))
        status = "success"
        return RunResult(
            adapter_dir=adapter_dir,
            epochs=history,
            steps=schedule.total_steps,
            initial_validation_loss=initial_validation,
            device=DEVICE,
            not_applied=not_applied(config, adapter_dir),
        )
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except TinkerUnavailableError:
        status = "unreachable"
        raise
    finally:
        _close_session(service, status)


def _close_session(service: Any, status: Literal["success", "errored", "interrupted", "unreachable"]) -> None:
    """Finish the Tinker session and release the ServiceClient, whatever happened.

    Finishing is best effort: a host that is gone must not hold the caller up. The SDK releases the
    client (session heartbeat, result pollers, connections) once the finish request is done, and
    retries that request for minutes against a dead host, meanwhile heartbeating to it; cancelling
    the request after a short wait makes it release the client at once.
    """
    finish_wait = {"success": 30.0, "unreachable": 0.5}.get(status, 5.0)
    closing = service.close("errored" if status == "unreachable" else status)
    try:
        with contextlib.suppress(Exception):  # not finished in time (the host is gone), or failed
            closing.result(timeout=finish_wait)
    finally:
        closing.future().cancel()  # a no-op once it finished


def not_applied(config: TrainConfig, adapter_dir: Path) -> dict[str, str]:
    """The LoRA settings of `config` that the Tinker run did not apply, with the reason."""
    skipped = {}
    if config.dropout > 0:
        skipped["dropout"] = f"Tinker has no LoRA dropout (config: {config.dropout}; trained with 0)"
    used_alpha = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))["lora_alpha"]
    if float(used_alpha) != config.alpha:
        skipped["alpha"] = (
            f"Tinker chooses the LoRA alpha (config: {config.alpha}; trained with {used_alpha})"
        )
    return skipped
