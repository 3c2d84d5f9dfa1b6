"""`enhancer bench`: the same items through every backend and weight precision, side by side.

Each configuration runs in a fresh subprocess (`python -m worker.bench --one NAME ...`) so that its
peak RSS is its own and no configuration warms caches for the next. Every run goes through the
production path: `load_runtime` + `enhance_items` (constrained decoding, repetition stop, retry,
de-duplication, grounding, validation), batched like the worker batches jobs.

The constraint overhead is measured apart, one item at a time: each item is generated with the
grammar (no repetition stop), then without it for exactly as many tokens, in the same process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from worker.bench_breakdown import breakdown, limit_share, machine_limits

# name -> (backend, weight precision). "torch-fp32" is the baseline of ratio_vs_torch_fp32.
CONFIGS: dict[str, tuple[str, str]] = {
    "torch-fp32": ("torch", "fp32"),
    "openvino-fp32": ("openvino", "fp32"),
    "openvino-int8": ("openvino", "int8"),
    "openvino-int4": ("openvino", "int4"),
    "openvino-genai-fp32": ("openvino-genai", "fp32"),
    "openvino-genai-int8": ("openvino-genai", "int8"),
    "openvino-genai-int4": ("openvino-genai", "int4"),
}
DEFAULT_CONFIGS = [
    "torch-fp32",
    "openvino-fp32",
    "openvino-int8",
    "openvino-int4",
    "openvino-genai-int8",
    "openvino-genai-int4",
]
BASELINE = "torch-fp32"
# The instruction sets int8/fp32 kernels pick from: two VMs of one name can differ 2-3x by these.
SPEED_FLAGS = {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8"}
UNCONSTRAINED_SUFFIX = "/unconstrained"
# The keys every entry of `configs` has (docs/performance.md); extra keys follow them.
ENTRY_KEYS = (
    "name",
    "backend",
    "precision",
    "items_per_s",
    "tokens_per_s",
    "p50_s",
    "p95_s",
    "peak_rss_mb",
    "schema_valid_rate",
    "ratio_vs_torch_fp32",
)


@dataclass
class RunOptions:
    model: str
    data: str | None
    items: int | None
    batch: int
    threads: int | None
    hostile: bool
    cache_dir: str
    ov_config: dict[str, str]
    overhead_items: int


def nearest_rank_percentile(values: list[float], q: float) -> float:
    """The value at rank round(q x (n - 1)) of the sorted values, q in 0-1 (p95 of 16 items: the 15th)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _peak_rss_mb() -> float:
    # Linux reports KiB, macOS bytes.
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / (1024 * 1024)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _load(name: str, options: RunOptions) -> Any:
    from worker.runtime import load_runtime

    backend, precision = CONFIGS[name]
    if options.threads and backend != "openvino-genai":  # genai runs no torch ops
        import torch

        torch.set_num_threads(options.threads)
    ov_config: dict[str, Any] = dict(options.ov_config)
    if options.threads:
        ov_config.setdefault("INFERENCE_NUM_THREADS", options.threads)
    return load_runtime(
        options.model,
        backend=backend,
        precision=precision,
        cache_dir=Path(options.cache_dir),
        ov_config=ov_config or None,
    )


def _bench_items(options: RunOptions) -> list[Any]:
    from worker.bench_items import SEED_FILE, hostile_items, load_items

    path = Path(options.data) if options.data else SEED_FILE
    if not path.is_file():
        raise SystemExit(f"error: no item file at {path} (pass --data)")
    items = load_items(path)[: options.items] if options.items else load_items(path)
    if options.hostile:
        items += hostile_items()
    return items


def run_pipeline(name: str, options: RunOptions) -> dict[str, Any]:
    """One configuration through the worker's pipeline, in batches of `options.batch`."""
    from worker.pipeline import count_reasons, enhance_items

    bench_items = _bench_items(options)
    load_started = time.perf_counter()
    runtime = _load(name, options)
    load_s = time.perf_counter() - load_started
    accepted = [b for b in bench_items if b.item is not None]
    latencies: list[float] = []
    outcomes = []
    load_before = os.getloadavg()[0]
    cpu_before, started = _cpu_seconds(), time.perf_counter()
    for first in range(0, len(accepted), options.batch):
        batch = accepted[first : first + options.batch]
        batch_started = time.perf_counter()
        outcomes += enhance_items(runtime, [b.item for b in batch])
        latencies += [time.perf_counter() - batch_started] * len(batch)
    seconds, cpu_s = time.perf_counter() - started, _cpu_seconds() - cpu_before
    tokens = sum(o.new_tokens for o in outcomes)
    valid = [o for o in outcomes if o.metadata is not None]
    generated = sum(o.entities_generated for o in outcomes)
    dropped = sum(o.entities_dropped for o in outcomes)
    backend, precision = CONFIGS[name]
    return {
        "name": name,
        "backend": backend,
        "precision": precision,
        "items_per_s": len(outcomes) / seconds if seconds else None,
        "tokens_per_s": tokens / seconds if seconds else None,
        "p50_s": statistics.median(latencies) if latencies else None,
        "p95_s": nearest_rank_percentile(latencies, 0.95) if latencies else None,
        "peak_rss_mb": _peak_rss_mb(),
        "schema_valid_rate": len(valid) / len(outcomes) if outcomes else None,
        "ratio_vs_torch_fp32": None,
        "items": len(outcomes),
        "rejected_4xx": [{"name": b.name, "reason": b.rejection} for b in bench_items if b.item is None],
        "batch_size": options.batch,
        "threads": options.threads,
        "seconds": seconds,
        "cpu_seconds": cpu_s,
        "tokens": tokens,
        "load_s": load_s,
        "first_attempt_valid_rate": sum(o.attempts == 1 for o in valid) / len(outcomes) if outcomes else None,
        "entities_generated": generated,
        "entities_kept": generated - dropped,
        "grounding_rate": (generated - dropped) / generated if generated else None,
        **count_reasons(outcomes),
        "errors": sorted({o.error for o in outcomes if o.metadata is None and o.error}),
        "invalid_items": [b.name for b, o in zip(accepted, outcomes, strict=True) if o.metadata is None],
        "load_avg_1m": [load_before, os.getloadavg()[0]],
        "weight_bytes": runtime.info.weight_bytes,
        "breakdown": breakdown(outcomes),
    }


def run_overhead(name: str, options: RunOptions) -> dict[str, Any]:
    """Grammar vs free generation of exactly the same number of tokens, one item at a time."""
    import jsonschema

    from app.contract import generated_json_schema
    from worker.pipeline import _derive, build_prompt
    from worker.runtime.schema_budget import token_budget

    items = [b.item for b in _bench_items(options) if b.item is not None][: options.overhead_items]
    runtime = _load(name, options)
    schema = generated_json_schema()
    validator = jsonschema.Draft202012Validator(schema)
    constrained_s = free_s = 0.0
    tokens = 0
    free_latencies: list[float] = []
    free_valid = 0
    load_before = os.getloadavg()[0]
    for item in items:
        prompt = build_prompt(item, _derive(item), runtime.tokenizer)
        started = time.perf_counter()
        (constrained,) = runtime.generate(
            [prompt], max_new_tokens=token_budget(schema), schema=schema, stop_on_repetition=False
        )
        constrained_s += time.perf_counter() - started
        n = max(1, constrained.new_tokens)
        started = time.perf_counter()
        (free,) = runtime.generate(
            [prompt], max_new_tokens=n, schema=None, stop_on_repetition=False, min_new_tokens=n
        )
        free_latencies.append(time.perf_counter() - started)
        free_s += free_latencies[-1]
        tokens += n
        with contextlib.suppress(json.JSONDecodeError):
            free_valid += validator.is_valid(json.loads(free.text))
    backend, precision = CONFIGS[name]
    return {
        "entry": {
            "name": name + UNCONSTRAINED_SUFFIX,
            "backend": backend,
            "precision": precision,
            "items_per_s": len(items) / free_s if free_s else None,
            "tokens_per_s": tokens / free_s if free_s else None,
            "p50_s": statistics.median(free_latencies) if free_latencies else None,
            "p95_s": nearest_rank_percentile(free_latencies, 0.95) if free_latencies else None,
            "peak_rss_mb": _peak_rss_mb(),
            "schema_valid_rate": free_valid / len(items) if items else None,
            "ratio_vs_torch_fp32": None,
            "items": len(items),
            "batch_size": 1,
            "threads": options.threads,
            "seconds": free_s,
            "tokens": tokens,
            "load_avg_1m": [load_before, os.getloadavg()[0]],
        },
        "constraint_overhead": {
            "config": name,
            "items": len(items),
            "batch_size": 1,
            "tokens": tokens,
            "constrained_s": constrained_s,
            "unconstrained_s": free_s,
            "overhead_pct": 100 * (constrained_s / free_s - 1) if free_s else None,
        },
    }


def _run_child(name: str, options: RunOptions, *, overhead: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "worker.bench", "--one", name, "--out", str(out)]
        command += ["--options", json.dumps(asdict(options))]
        if overhead:
            command.append("--overhead")
        completed = subprocess.run(command, stdout=sys.stderr, stderr=sys.stderr, check=False)
        if completed.returncode != 0 or not out.exists():
            return {"name": name, "error": f"bench subprocess exited with {completed.returncode}"}
        return json.loads(out.read_text())


def machine() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or platform.machine()
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = sorted(set(line.split(":", 1)[1].split()) & SPEED_FLAGS)
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in ("openvino", "openvino-genai", "optimum-intel", "torch", "transformers", "xgrammar"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu,
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "versions": versions,
    }


def run_bench(names: list[str], options: RunOptions, *, overhead_config: str | None) -> dict[str, Any]:
    started_load = os.getloadavg()
    limits = machine_limits()  # before the configurations, while nothing else runs
    entries: list[dict[str, Any]] = []
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        entries.append(_run_child(name, options, overhead=False))
    overhead = None
    if overhead_config:
        print(f"[bench] {overhead_config}{UNCONSTRAINED_SUFFIX} ...", file=sys.stderr, flush=True)
        result = _run_child(overhead_config, options, overhead=True)
        if "entry" in result:
            entries.append(result["entry"])
            overhead = result["constraint_overhead"]
        else:
            entries.append(result)
    baseline = next((e for e in entries if e.get("name") == BASELINE and e.get("items_per_s")), None)
    for entry in entries:
        if baseline and entry.get("items_per_s"):
            entry["ratio_vs_torch_fp32"] = entry["items_per_s"] / baseline["items_per_s"]
        if "breakdown" in entry:
            entry["limit_share"] = limit_share(entry, limits)
    return {
        "machine": {
            **machine(),
            "load_avg_at_start": list(started_load),
            "load_avg_at_end": list(os.getloadavg()),
            "limits": limits,
        },
        "options": asdict(options),
        "configs": entries,
        "constraint_overhead": overhead,
    }


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(report: dict[str, Any]) -> str:
    header = [
        "config",
        "items/s",
        "tokens/s",
        "p50 s",
        "p95 s",
        "RSS MB",
        "valid",
        "x torch",
        "1st ok",
        "grounded",
    ]
    rows = [header]
    for e in report["configs"]:
        if "error" in e:
            rows.append([e["name"], e["error"], *[""] * (len(header) - 2)])
            continue
        rows.append(
            [
                e["name"],
                _fmt(e["items_per_s"], 3),
                _fmt(e["tokens_per_s"], 1),
                _fmt(e["p50_s"], 1),
                _fmt(e["p95_s"], 1),
                _fmt(e["peak_rss_mb"], 0),
                _fmt(e["schema_valid_rate"] * 100 if e["schema_valid_rate"] is not None else None, 1) + "%",
                _fmt(e["ratio_vs_torch_fp32"], 2),
                _fmt((e.get("first_attempt_valid_rate") or 0) * 100, 0) + "%"
                if "first_attempt_valid_rate" in e
                else "-",
                _fmt((e.get("grounding_rate") or 0) * 100, 0) + "%"
                if e.get("grounding_rate") is not None
                else "-",
            ]
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for e in report["configs"]:
        counted = {
            **e.get("rejections", {}),
            **{f"dropped {k}": v for k, v in e.get("dropped", {}).items()},
            **{f"repaired {k}": v for k, v in e.get("repairs", {}).items()},
        }
        if counted:
            lines.append(f"{e['name']}: " + ", ".join(f"{key} x{count}" for key, count in counted.items()))
    overhead = report.get("constraint_overhead")
    if overhead and overhead.get("overhead_pct") is not None:
        lines.append(
            f"\nconstraint overhead ({overhead['config']}, batch 1, {overhead['items']} items, "
            f"{overhead['tokens']} tokens): {overhead['overhead_pct']:+.1f}% "
            f"({overhead['constrained_s']:.1f} s constrained vs {overhead['unconstrained_s']:.1f} s free)"
        )
    return "\n".join(lines)


def resolve_model(model: str | None) -> str:
    """`--model`, else what the service serves (ENHANCER_MODEL or the active version)."""
    from app.core.config import get_settings
    from app.registry import UnknownModelError
    from app.registry import resolve_model as resolve

    try:
        return resolve(get_settings(), model)
    except UnknownModelError as error:
        raise SystemExit(f"error: {error}") from error


def _parse_ov_config(pairs: list[str]) -> dict[str, str]:
    config = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: --ov-config expects KEY=VALUE, got {pair!r}")
        config[key.strip()] = value.strip()
    return config


def cmd_bench(args: argparse.Namespace) -> int:
    from app.core.config import get_settings
    from app.core.db import use_data_dir

    use_data_dir(getattr(args, "data_dir", None))
    settings = get_settings()
    names = [n.strip() for n in args.configs.split(",")] if args.configs else list(DEFAULT_CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        print(f"error: unknown config(s) {unknown}; known: {', '.join(CONFIGS)}", file=sys.stderr)
        return 2
    options = RunOptions(
        model=resolve_model(args.model),
        data=str(args.data) if args.data else None,
        items=args.items,
        batch=args.batch or settings.max_batch_size,
        threads=args.threads,
        hostile=args.hostile,
        cache_dir=str(settings.models_dir / "cache"),
        ov_config=_parse_ov_config(args.ov_config),
        overhead_items=args.overhead_items,
    )
    overhead_config = None if args.no_overhead else (args.overhead_config or default_config_name())
    report = run_bench(names, options, overhead_config=overhead_config)
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    failed = [e["name"] for e in report["configs"] if "error" in e]
    return 1 if failed else 0


def default_config_name() -> str:
    """The configuration the worker serves with the current settings."""
    from app.core.config import get_settings

    settings = get_settings()
    name = f"{settings.model_backend}-{settings.weight_precision}"
    return name if name in CONFIGS else "openvino-genai-int8"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    help_text = "Benchmark backends and precisions on the same items (docs/performance.md)."
    bench = sub.add_parser("bench", help=help_text, description=help_text)
    bench.set_defaults(handler=cmd_bench)
    bench.add_argument("--data-dir", help="data directory (default: $ENHANCER_DATA_DIR or ./data)")
    bench.add_argument(
        "--model", help="HF id, HF dir, .gguf, OpenVINO IR dir or registry version (id or dir)"
    )
    bench.add_argument("--items", type=int, help="first N items (default: all seed items)")
    bench.add_argument(
        "--data", type=Path, help="JSONL of seed rows or /v1/enhance bodies (default: seed items)"
    )
    bench.add_argument(
        "--hostile", action="store_true", help="add the hostile inputs (worker/bench_items.py)"
    )
    bench.add_argument("--configs", help=f"comma-separated subset of: {', '.join(CONFIGS)}")
    bench.add_argument("--batch", type=int, help="items per generate call (default: ENHANCER_MAX_BATCH)")
    bench.add_argument("--threads", type=int, help="CPU threads per configuration (default: the library's)")
    bench.add_argument(
        "--ov-config", action="append", default=[], metavar="KEY=VALUE", help="OpenVINO property, repeatable"
    )
    bench.add_argument(
        "--overhead-config", help="configuration of the constraint-overhead run (default: served)"
    )
    bench.add_argument("--overhead-items", type=int, default=8, help="items of the overhead run (default 8)")
    bench.add_argument("--no-overhead", action="store_true", help="skip the constraint-overhead run")
    bench.add_argument("--json", action="store_true", help="print the report as JSON")


def _child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.bench")
    parser.add_argument("--one", required=True, choices=list(CONFIGS))
    parser.add_argument("--options", required=True, help="RunOptions as JSON")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--overhead", action="store_true")
    args = parser.parse_args(argv)
    options = RunOptions(**json.loads(args.options))
    result = run_overhead(args.one, options) if args.overhead else run_pipeline(args.one, options)
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1:]))
