"""Where a bench configuration's time goes, and how far it runs from this machine's limits.

`breakdown` sums the generate calls' own clocks (worker.runtime.base.CallTiming: tokenising,
prefill passes, decode passes, grammar masks where Python sees them) and the share of the time spent
on second attempts. `machine_limits` measures, once per bench, a float32 GEMM rate and a copy
bandwidth with numpy; `limit_share` sets a configuration's rates against them:
- a decode pass reads every weight once, so passes/s cannot pass bandwidth / weight bytes;
- a token costs about 2 FLOPs per weight, so tokens/s cannot pass GEMM rate / (2 x weights), for
  decoding and for prefill alike. A prefill share above 1 means prompt tokens were not computed:
  the prefix cache served them.
The GEMM is float32: an int8 model's kernels may run faster or slower than it on a given CPU.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the bench's parent process never loads the pipeline
    from worker.pipeline import EnhanceOutcome
    from worker.runtime.base import CallTiming

BYTES_PER_WEIGHT = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5}


def breakdown(outcomes: Sequence[EnhanceOutcome]) -> dict[str, Any] | None:
    """Per item (a call's time split over its rows) and per call; None when no runtime timed itself."""
    calls: dict[int, tuple[CallTiming, int]] = {}  # id -> (timing, attempt number)
    for outcome in outcomes:
        for attempt, timing in enumerate(outcome.timings, start=1):
            calls.setdefault(id(timing), (timing, attempt))
    if not calls or not outcomes:
        return None
    timings = [timing for timing, _ in calls.values()]

    def total(name: str) -> float:
        return sum(getattr(t, name) or 0.0 for t in timings)

    wall = total("tokenize_s") + total("prefill_s") + total("decode_s")
    decode_s = total("decode_s")
    retry_wall = sum(t.tokenize_s + t.prefill_s + t.decode_s for t, attempt in calls.values() if attempt > 1)
    grammar = [t.grammar_s for t in timings if t.grammar_s is not None]
    items = len(outcomes)
    return {
        "calls": len(timings),
        "rows": int(total("rows")),
        "per_item": {
            "prompt_tokens": round(total("prompt_tokens") / items, 1),
            "tokenize_s": round(total("tokenize_s") / items, 4),
            "prefill_s": round(total("prefill_s") / items, 3),
            "decode_s": round(total("decode_s") / items, 3),
            "grammar_s": round(sum(grammar) / items, 4) if grammar else None,
        },
        "per_call": {
            "rows": round(total("rows") / len(timings), 2),
            "prefill_passes": round(total("prefill_steps") / len(timings), 2),
            "decode_passes": round(total("decode_steps") / len(timings), 1),
        },
        "prefill_tokens_per_s": _rate(total("prompt_tokens"), total("prefill_s")),
        "decode_passes_per_s": _rate(total("decode_steps"), total("decode_s")),
        "decode_share": round(total("decode_s") / wall, 3) if wall else None,
        "grammar_share_of_decode": round(sum(grammar) / decode_s, 4) if grammar and decode_s else None,
        "retry_share": round(retry_wall / wall, 3) if wall else None,
        "seconds": {"prefill": round(total("prefill_s"), 3), "decode": round(total("decode_s"), 3)},
    }


def _rate(amount: float, seconds: float) -> float | None:
    return round(amount / seconds, 2) if seconds else None


def machine_limits(*, gemm_size: int = 1024, copy_mb: int = 256, repeats: int = 5) -> dict[str, float]:
    """This machine's float32 GEMM rate (GFLOP/s) and copy bandwidth (GB/s read), best of `repeats`."""
    import numpy as np

    a = np.random.default_rng(0).random((gemm_size, gemm_size), dtype=np.float32)
    b = a.T.copy()
    np.matmul(a, b)  # warm the BLAS threads
    gemm_s = min(_timed(lambda: np.matmul(a, b)) for _ in range(repeats))
    source = np.ones(copy_mb * 2**20 // 4, dtype=np.float32)
    target = np.empty_like(source)
    np.copyto(target, source)
    copy_s = min(_timed(lambda: np.copyto(target, source)) for _ in range(repeats))
    return {
        "gemm_gflops_fp32": round(2 * gemm_size**3 / gemm_s / 1e9, 1),
        "copy_read_gb_s": round(source.nbytes / copy_s / 1e9, 2),
    }


def _timed(work: Any) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def limit_share(entry: dict[str, Any], limits: dict[str, float]) -> dict[str, Any] | None:
    """A configuration's decode and prefill rates as shares of the machine's limits (see above)."""
    split, weight_bytes = entry.get("breakdown"), entry.get("weight_bytes")
    if not split or not weight_bytes or entry.get("precision") not in BYTES_PER_WEIGHT:
        return None
    weights = weight_bytes / BYTES_PER_WEIGHT[entry["precision"]]
    passes_limit = limits["copy_read_gb_s"] * 1e9 / weight_bytes
    tokens_limit = limits["gemm_gflops_fp32"] * 1e9 / (2 * weights)
    decode_s = split["seconds"]["decode"]
    # Every row's first token comes out of its prefill pass; the rest, of decode passes.
    decode_tokens = max(0, entry.get("tokens", 0) - split["rows"])
    decode_tokens_per_s = decode_tokens / decode_s if decode_s else None
    prefill_rate = split.get("prefill_tokens_per_s")
    return {
        "decode_passes_per_s_limit_bandwidth": round(passes_limit, 1),
        "tokens_per_s_limit_compute": round(tokens_limit, 1),
        "decode_bandwidth_share": _share(split.get("decode_passes_per_s"), passes_limit),
        "decode_compute_share": _share(decode_tokens_per_s, tokens_limit),
        "prefill_compute_share": _share(prefill_rate, tokens_limit),
    }


def _share(rate: float | None, limit: float) -> float | None:
    return round(rate / limit, 3) if rate is not None and limit else None
