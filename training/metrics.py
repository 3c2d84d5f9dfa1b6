"""The metrics log of a training run (`metrics.jsonl`): one schema, written the same way by both backends.

One JSON object per line, appended and flushed as it goes (`tail -f` it), each with `event` and
`time` (Unix seconds):

- `validation`: before training; `epoch` 0, `validation_loss` (null without validation examples),
  `train_examples`, `validation_examples`, `total_steps`, `device`, and what the backend adds.
- `resume`: a resumed run continues (local backend): `checkpoint`, `epoch`, `step`.
- `step`: per optimizer step; `epoch`, `step` (1-based), `loss`, `learning_rate` (the one the step
  used), `tokens`, `tokens_per_second`.
- `epoch`: per epoch; the fields of training.types.EpochMetrics.
- `done`: `steps`, `adapter_dir`.

Losses are mean cross-entropy per weighted token.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

from training.types import EpochMetrics

METRICS_FILE: Final = "metrics.jsonl"


class MetricsLog:
    """Append-only JSONL; every line is flushed so a running job can be followed with `tail -f`."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path

    def write(self, event: str, **values: Any) -> None:
        line = json.dumps({"event": event, "time": round(time.time(), 3), **values})
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def step(
        self, *, epoch: int, step: int, loss: float, learning_rate: float, tokens: int, seconds: float
    ) -> None:
        self.write(
            "step",
            epoch=epoch,
            step=step,
            loss=round(loss, 5),
            learning_rate=learning_rate,
            tokens=tokens,
            tokens_per_second=round(tokens / max(seconds, 1e-9), 1),
        )

    def epoch(self, metrics: EpochMetrics) -> None:
        self.write("epoch", **asdict(metrics))

    def end_epoch(
        self,
        *,
        epoch: int,
        loss_total: float,
        weight_total: float,
        validation_loss: float | None,
        seconds: float,
        tokens: int,
        steps: int,
        progress: Any,
    ) -> EpochMetrics:
        """An epoch's metrics from its running sums: logged, shown above the progress bar, returned."""
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=loss_total / max(weight_total, 1e-9),
            validation_loss=validation_loss,
            seconds=round(seconds, 2),
            tokens_per_second=round(tokens / max(seconds, 1e-9), 1),
            steps=steps,
        )
        self.epoch(metrics)
        shown = "-" if validation_loss is None else f"{validation_loss:.4f}"
        progress.write(
            f"epoch {epoch}: train loss {metrics.train_loss:.4f}, validation loss {shown}, {seconds:.0f} s"
        )
        return metrics


def read_metrics(path: Path, event: str | None = None) -> list[dict[str, Any]]:
    """The lines of a metrics log (those of one `event` when given)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row for row in rows if event is None or row.get("event") == event]
