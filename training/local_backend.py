"""Local backend: PEFT LoRA on torch (CPU, or CUDA when present), weighted token loss.

Checkpoints at the end of every epoch (adapter + optimiser + scheduler) let `--resume` continue a
run; metrics go to the shared metrics log (training.metrics).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from training.config import ALL_LINEAR, TrainConfig
from training.errors import TrainingError
from training.metrics import MetricsLog
from training.schedule import ADAM_BETAS, ADAM_EPS, GRAD_CLIP_NORM, Schedule, epoch_batches
from training.types import EpochMetrics, RunResult, TokenizedExample

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
ADAPTER_DIR = "adapter"
STATE_FILE = "training_state.pt"


def pick_device(requested: str) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device cuda requested but torch sees no CUDA device")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


# ---------------------------------------------------------------------------------------------
# Builders


def build_lora_model(base_location: str, config: TrainConfig, device: str) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(config.seed)
    base = AutoModelForCausalLM.from_pretrained(base_location, dtype=torch.float32)
    lora = LoraConfig(
        r=config.rank,
        # peft annotates lora_alpha as int, but only divides by it (scaling = alpha / r): a float works.
        lora_alpha=config.alpha,  # type: ignore[arg-type]
        lora_dropout=config.dropout,
        target_modules=ALL_LINEAR if config.target_modules == ALL_LINEAR else list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        model = get_peft_model(base, lora)
    except ValueError as error:  # e.g. target modules that the architecture does not have
        raise TrainingError(f"cannot apply LoRA to {base_location}: {error}") from error
    return model.to(device)


def build_optimizer(model: Any, config: TrainConfig) -> Any:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        params, lr=config.learning_rate, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=config.weight_decay
    )


def build_scheduler(optimizer: Any, schedule: Schedule) -> Any:
    """The shared schedule (training.schedule) as a torch scheduler: its state goes into checkpoints."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule.factor(step))


# ---------------------------------------------------------------------------------------------
# Batches and loss (the batch order is training.schedule.epoch_batches)


def shared_prefix_length(rows: list[TokenizedExample]) -> int:
    """Tokens every row starts with (the system prompt, at least) and that carry no loss weight.

    One short of that, so the logits predicting the first weighted token come from the suffix pass.
    """
    if len(rows) < 2:
        return 0
    first = rows[0].input_ids
    common = min(len(row.input_ids) for row in rows)
    for row in rows[1:]:
        ids = row.input_ids
        common = next((i for i in range(common) if ids[i] != first[i]), common)
    first_weighted = min(
        next((i for i, w in enumerate(row.weights) if w > 0), len(row.weights)) for row in rows
    )
    return max(min(common, first_weighted) - 1, 0)


def collate(rows: list[TokenizedExample], pad_id: int, device: str) -> dict[str, Any]:
    """A batch as (shared prefix, left-padded suffixes).

    The prefix every row shares (the contract's system prompt: ~40% of a SmolLM2 example) is run once
    per batch, not once per row. Suffixes are left-padded so every completion ends at the last column
    and the loss needs logits for the last few columns only (see `weighted_loss`). Row r predicts
    targets[r, t] (weight weights[r, t]) from input_ids[r, :t + 1] after the prefix.
    """
    import torch

    prefix = shared_prefix_length(rows)
    width = max(len(row.input_ids) - 1 - prefix for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    weights = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, row in enumerate(rows):
        n = len(row.input_ids) - 1 - prefix
        ids[i, width - n :] = torch.tensor(row.input_ids[prefix:-1])
        targets[i, width - n :] = torch.tensor(row.input_ids[prefix + 1 :])
        mask[i, width - n :] = 1
        weights[i, width - n :] = torch.tensor(row.weights[prefix + 1 :])
    positions = prefix + (mask.cumsum(-1) - 1).clamp(min=0)
    return {
        "prefix_ids": torch.tensor([rows[0].input_ids[:prefix]], dtype=torch.long).to(device),
        "input_ids": ids.to(device),
        "targets": targets.to(device),
        "attention_mask": mask.to(device),
        "position_ids": positions.to(device),
        "weights": weights.to(device),
        "tokens": sum(len(row.input_ids) for row in rows),
    }


def weighted_loss(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """(sum of weighted token losses, sum of weights) for a `collate` batch.

    The shared prefix runs once and its keys/values (with their gradient) are repeated for every row;
    only the columns from the first weighted target on get logits (`logits_to_keep`): the vocabulary
    projection over the prompt would cost a fifth of the step and carries no loss.
    """
    import torch
    import torch.nn.functional as F

    ids, mask, weights, targets = (
        batch["input_ids"],
        batch["attention_mask"],
        batch["weights"],
        batch["targets"],
    )
    rows, prefix = ids.shape[0], batch["prefix_ids"].shape[1]
    cache = None
    if prefix:
        cache = model(input_ids=batch["prefix_ids"], use_cache=True, logits_to_keep=1).past_key_values
        cache.batch_repeat_interleave(rows)
        mask = torch.cat([mask.new_ones((rows, prefix)), mask], dim=1)
    weighted_columns = (weights > 0).any(dim=0).nonzero()
    keep = ids.shape[1] - (int(weighted_columns[0]) if len(weighted_columns) else ids.shape[1] - 1)
    logits = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=batch["position_ids"],
        past_key_values=cache,
        use_cache=cache is not None,
        logits_to_keep=keep,
    ).logits.float()
    losses = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets[:, -keep:].reshape(-1), reduction="none"
    )
    token_weights = weights[:, -keep:].reshape(-1)
    return (losses * token_weights).sum(), token_weights.sum()


def evaluate(
    model: Any, rows: list[TokenizedExample], *, batch_size: int, pad_id: int, device: str
) -> float | None:
    """Weighted mean token loss over `rows` (None when there are none)."""
    import torch

    if not rows:
        return None
    model.eval()
    total = weight = 0.0
    ordered = sorted(rows, key=lambda r: len(r.input_ids))
    with torch.no_grad():
        for start in range(0, len(ordered), batch_size):
            loss_sum, weight_sum = weighted_loss(
                model, collate(ordered[start : start + batch_size], pad_id, device)
            )
            total += float(loss_sum)
            weight += float(weight_sum)
    model.train()
    return total / max(weight, 1e-9)


# ---------------------------------------------------------------------------------------------
# Checkpoints


def latest_checkpoint(output_dir: Path) -> Path | None:
    root = output_dir / CHECKPOINTS_DIR
    done = [p for p in root.glob("epoch-*") if (p / STATE_FILE).exists()] if root.is_dir() else []
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def save_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any]) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save(
        {
            **state,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        },
        tmp / STATE_FILE,
    )
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def load_checkpoint(
    path: Path, model: Any, optimizer: Any, scheduler: Any, fingerprint: dict[str, Any]
) -> dict:
    import torch
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    if state.get("fingerprint") != fingerprint:
        changed = sorted(
            key
            for key in set(fingerprint) | set(state.get("fingerprint", {}))
            if fingerprint.get(key) != state.get("fingerprint", {}).get(key)
        )
        raise TrainingError(
            f"cannot resume from {path}: the run used different settings or data ({', '.join(changed)}); "
            "use a new output directory for a new run"
        )
    set_peft_model_state_dict(
        model, load_peft_weights(str(path), device=str(next(model.parameters()).device))
    )
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return state


# ---------------------------------------------------------------------------------------------
# The loop


def train_local(
    config: TrainConfig,
    *,
    examples: list[TokenizedExample],
    validation: list[TokenizedExample],
    base_location: str,
    pad_id: int,
    output_dir: Path,
    metrics_path: Path,
    fingerprint: dict[str, Any],
) -> RunResult:
    """Train a LoRA adapter; returns where it is (output_dir/adapter) and the per-epoch metrics."""
    import torch
    from tqdm import tqdm

    if not examples:
        raise TrainingError("no training examples left after the split and the max_length filter")
    device = pick_device(config.device)
    if device == "cpu" and config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics = MetricsLog(metrics_path)
    schedule = Schedule.for_run(config, len(examples))
    total_steps = schedule.total_steps

    model = build_lora_model(base_location, config, device)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, schedule)
    trainable, total = model.get_nb_trainable_parameters()

    start_epoch, global_step = 1, 0
    history: list[EpochMetrics] = []
    initial_validation: float | None = None
    checkpoint = latest_checkpoint(output_dir) if config.resume else None
    if config.resume and checkpoint is None:
        log.warning("no checkpoint in %s: starting from the beginning", output_dir)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, model, optimizer, scheduler, fingerprint)
        start_epoch, global_step = state["epoch"] + 1, state["global_step"]
        history = [EpochMetrics(**h) for h in state["history"]]
        initial_validation = state.get("initial_validation_loss")
        metrics.write("resume", checkpoint=str(checkpoint), epoch=state["epoch"], step=global_step)
        log.info("resuming after epoch %d (step %d) from %s", state["epoch"], global_step, checkpoint)
    else:
        initial_validation = evaluate(
            model, validation, batch_size=config.batch_size, pad_id=pad_id, device=device
        )
        metrics.write(
            "validation",
            epoch=0,
            validation_loss=initial_validation,
            train_examples=len(examples),
            validation_examples=len(validation),
            trainable_parameters=trainable,
            total_parameters=total,
            device=device,
            total_steps=total_steps,
        )

    lengths = [len(row.input_ids) for row in examples]
    model.train()
    progress = tqdm(total=total_steps, initial=global_step, desc="train", unit="step", mininterval=1.0)
    try:
        for epoch in range(start_epoch, config.epochs + 1):
            if global_step >= total_steps:
                break
            epoch_started = time.perf_counter()
            loss_total = weight_total = 0.0
            tokens = steps = 0
            for batch_indices in epoch_batches(lengths, config.batch_size, config.seed, epoch):
                if global_step >= total_steps:
                    break
                step_started = time.perf_counter()
                learning_rate = schedule.learning_rate_at(global_step)
                batch = collate([examples[i] for i in batch_indices], pad_id, device)
                loss_sum, weight_sum = weighted_loss(model, batch)
                loss = loss_sum / weight_sum.clamp(min=1.0)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"loss is {float(loss)} at step {global_step + 1}: lower the learning rate"
                    )
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                global_step += 1
                steps += 1
                batch_tokens = batch["tokens"]
                tokens += batch_tokens
                loss_total += float(loss_sum.detach())
                weight_total += float(weight_sum)
                metrics.step(
                    epoch=epoch,
                    step=global_step,
                    loss=float(loss.detach()),
                    learning_rate=learning_rate,
                    tokens=batch_tokens,
                    seconds=time.perf_counter() - step_started,
                )
                progress.update(1)
                progress.set_postfix(epoch=epoch, loss=f"{float(loss.detach()):.3f}")
            seconds = time.perf_counter() - epoch_started
            validation_loss = evaluate(
                model, validation, batch_size=config.batch_size, pad_id=pad_id, device=device
            )
            epoch_metrics = metrics.end_epoch(
                epoch=epoch,
                loss_total=loss_total,
                weight_total=weight_total,
                validation_loss=validation_loss,
                seconds=seconds,
                tokens=tokens,
                steps=steps,
                progress=progress,
            )
            history.append(epoch_metrics)
            save_checkpoint(
                output_dir / CHECKPOINTS_DIR / f"epoch-{epoch}",
                model,
                optimizer,
                scheduler,
                {
                    "epoch": epoch,
                    "global_step": global_step,
                    "fingerprint": fingerprint,
                    "history": [asdict(h) for h in history],
                    "initial_validation_loss": initial_validation,
                },
            )
    finally:
        progress.close()

    adapter_dir = output_dir / ADAPTER_DIR
    shutil.rmtree(adapter_dir, ignore_errors=True)
    model.save_pretrained(adapter_dir)
    metrics.write("done", steps=global_step, adapter_dir=str(adapter_dir))
    return RunResult(
        adapter_dir=adapter_dir,
        epochs=history,
        steps=global_step,
        initial_validation_loss=initial_validation,
        resumed_from_epoch=start_epoch - 1,
        device=device,
    )
