"""Ours against llama.cpp's server on the same model, items, prompts, schema, token budget and
concurrency, in one run, with the ratio.

    python bench/peer_llamacpp.py --llama-server build/bin/llama-server \\
        --llama-quantize build/bin/llama-quantize --items 16 --rounds 2 --json reports/peer.json

What is the same on both sides:
- the model: `--gguf` (default: the fast preset's base GGUF in the data dir) is what llama.cpp
  serves, natively and as Q8_0 made with `llama-quantize` from it; ours is `--model` (default: the
  registry version built from that GGUF, OpenVINO int8 of its de-quantised weights). For a tuned
  version, convert its merged `hf/` directory with llama.cpp's `convert_hf_to_gguf.py --outtype
  q8_0` and pass that file as `--q8-gguf` with the version as `--model`;
- the prompts: `worker.pipeline.build_prompt` with the model's own tokenizer and chat template,
  sent to llama.cpp as text (`/completion`, special tokens parsed), checked to give the same
  prompt token count;
- the schema and budget: the first attempt's (`decoding_attempts()[0]`: the contract's generated
  schema, greedy, `token_budget` new tokens), as llama.cpp's `json_schema`;
- the concurrency: ours is `enhancer bench` with batches of `--concurrency` (default: the worker's
  `ENHANCER_MAX_BATCH`); llama.cpp gets that many parallel slots and that many requests in flight.

What is not: ours retries a row that fails validation (on the bounded retry schema) and stops a
looping string; llama.cpp does neither, so a llama.cpp output is counted valid when it parses and
validates against the schema, as it came. Ours is timed end to end per item, retries included.

Rounds alternate the engines (ours, Q8_0, native; then the reverse), so that a machine that slows
down does not favour one. `peer_ratio` = ours' items/s / llama.cpp Q8_0 items/s, means over rounds.
It is a benchmark, not a test: llama.cpp is built by hand (docs/performance.md says how).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.load_post import free_port  # noqa: E402
from worker.bench import nearest_rank_percentile  # noqa: E402  (the p95 rule of our side, for both)

OURS_CONFIG = "openvino-genai-int8"
PEER_Q8 = "llama.cpp-Q8_0"


def _post(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as error:  # llama-server says why in the body
        raise SystemExit(
            f"error: {url}: HTTP {error.code}: {error.read().decode(errors='replace')}"
        ) from error


def default_sources(data_dir: Path) -> tuple[Path, Path]:
    """(GGUF, our model) of the fast preset's base in the data dir."""
    from worker.presets import BASE_MODEL

    version = data_dir / "models" / BASE_MODEL.version_id
    return version / BASE_MODEL.gguf, version


def quantize_q8(llama_quantize: Path, gguf: Path, out_dir: Path) -> Path:
    """Q8_0 of `gguf` (a quantised source is re-quantised: the same weights ours de-quantises)."""
    target = out_dir / (gguf.stem + ".Q8_0.gguf")
    if not target.exists():
        command = [str(llama_quantize), "--allow-requantize", str(gguf), str(target), "Q8_0"]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    return target


def build_prompts(model: Path, items: int | None, cache_dir: Path) -> tuple[list[str], list[int]]:
    """The pipeline's first-attempt prompts for the bench items, and their token counts."""
    from transformers import AutoTokenizer

    from worker.bench_items import SEED_FILE, load_items
    from worker.pipeline import _derive, build_prompt
    from worker.runtime.loading import classify_source, ensure_hf_dir

    tokenizer = AutoTokenizer.from_pretrained(ensure_hf_dir(classify_source(str(model)), cache_dir))
    bench_items = [b.item for b in load_items(SEED_FILE) if b.item is not None]
    bench_items = bench_items[:items] if items else bench_items
    prompts = [build_prompt(item, _derive(item), tokenizer) for item in bench_items]
    counts = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    return prompts, counts


class LlamaServer:
    """llama.cpp's server on one GGUF, `slots` parallel sequences, on a free loopback port."""

    def __init__(
        self, binary: Path, gguf: Path, *, slots: int, threads: int, ctx_per_slot: int, log: Path
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["-t", str(threads), "-tb", str(threads), "-np", str(slots)]
        command += ["-c", str(slots * ctx_per_slot), "--no-webui"]
        self.log = log
        with log.open("wb") as out:  # the child keeps its own descriptor
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def __enter__(self) -> LlamaServer:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise SystemExit(f"error: llama-server exited with {self.process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        raise SystemExit("error: llama-server did not become healthy in 120 s")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def peak_rss_mb(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None


def run_peer(
    name: str, server: LlamaServer, prompts: list[str], prompt_counts: list[int], *, concurrency: int
) -> dict[str, Any]:
    import jsonschema

    from worker.runtime.schema_budget import decoding_attempts

    first = decoding_attempts()[0]
    validator = jsonschema.Draft202012Validator(first.schema)

    def one(prompt: str) -> tuple[float, dict[str, Any]]:
        body = {
            "prompt": prompt,
            "n_predict": first.max_new_tokens,
            "temperature": 0.0,  # greedy, as our first attempt
            "json_schema": first.schema,
            "cache_prompt": True,
        }
        started = time.perf_counter()
        result = _post(server.url + "/completion", body, timeout=600)
        return time.perf_counter() - started, result

    _post(server.url + "/completion", {"prompt": prompts[0], "n_predict": 1}, timeout=600)  # warm up
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, prompts))
    seconds = time.perf_counter() - started
    valid = 0
    for _, result in results:
        with contextlib.suppress(json.JSONDecodeError, KeyError):
            valid += validator.is_valid(json.loads(result["content"]))
    latencies = [latency for latency, _ in results]
    timings = [result.get("timings", {}) for _, result in results]
    generated = sum(int(t.get("predicted_n", 0)) for t in timings)
    evaluated = [int(r.get("tokens_evaluated", 0)) for _, r in results]
    return {
        "name": name,
        "items": len(results),
        "items_per_s": len(results) / seconds,
        "tokens_per_s": generated / seconds,
        "p50_s": statistics.median(latencies),
        "p95_s": nearest_rank_percentile(latencies, 0.95),
        "schema_valid_rate": valid / len(results),
        "peak_rss_mb": server.peak_rss_mb(),
        "seconds": seconds,
        "tokens": generated,
        "per_item": {
            "prompt_tokens": round(sum(evaluated) / len(results), 1),
            "prompt_tokens_ours": round(sum(prompt_counts) / len(prompt_counts), 1),
            "prefill_s": round(sum(float(t.get("prompt_ms", 0)) for t in timings) / 1000 / len(results), 3),
            "decode_s": round(sum(float(t.get("predicted_ms", 0)) for t in timings) / 1000 / len(results), 3),
            "decode_tokens": round(generated / len(results), 1),
        },
        "single_stream_decode_tokens_per_s": statistics.median(
            float(t["predicted_per_second"]) for t in timings if t.get("predicted_per_second")
        ),
    }


def run_ours(
    model: Path, *, items: int | None, concurrency: int, threads: int, data_dir: Path
) -> dict[str, Any]:
    enhancer = Path(sys.executable).with_name("enhancer")  # the venv's console script
    command = [str(enhancer), "bench", "--model", str(model), "--configs", OURS_CONFIG]
    command += ["--batch", str(concurrency), "--threads", str(threads), "--no-overhead", "--json"]
    command += ["--data-dir", str(data_dir)]
    if items:
        command += ["--items", str(items)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO_ROOT)
    if completed.returncode != 0:
        raise SystemExit(f"error: enhancer bench failed:\n{completed.stderr[-3000:]}")
    report = json.loads(completed.stdout)
    entry = dict(report["configs"][0])
    entry["machine"] = report["machine"]
    return entry


def summarise(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    names = list(rounds[0])
    engines = {}
    for name in names:
        runs = [r[name] for r in rounds]
        engines[name] = {
            "items_per_s": statistics.mean(r["items_per_s"] for r in runs),
            "items_per_s_runs": [round(r["items_per_s"], 4) for r in runs],
            "tokens_per_s": statistics.mean(r["tokens_per_s"] for r in runs),
            "p95_s": max(r["p95_s"] for r in runs),
            "schema_valid_rate": min(r["schema_valid_rate"] for r in runs),
            "peak_rss_mb": max((r.get("peak_rss_mb") or 0) for r in runs) or None,
        }
    ours, peer = engines[OURS_CONFIG]["items_per_s"], engines[PEER_Q8]["items_per_s"]
    return {"peer_ratio": ours / peer, "engines": engines}


def format_table(summary: dict[str, Any]) -> str:
    base = summary["engines"][PEER_Q8]["items_per_s"]
    header = ["engine", "items/s (each round)", "generated tok/s", "p95 s", "peak RSS MB", "schema-valid"]
    header.append("x llama.cpp Q8_0")
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, e in summary["engines"].items():
        runs = " / ".join(f"{v:.3f}" for v in e["items_per_s_runs"])
        rss = f"{e['peak_rss_mb']:.0f}" if e["peak_rss_mb"] else "-"
        cells = [name, f"{e['items_per_s']:.3f} ({runs})", f"{e['tokens_per_s']:.1f}", f"{e['p95_s']:.1f}"]
        cells += [rss, f"{100 * e['schema_valid_rate']:.0f}%", f"{e['items_per_s'] / base:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\npeer_ratio (ours int8 / llama.cpp Q8_0 items/s): {summary['peer_ratio']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-server", type=Path, required=True, help="llama.cpp's server binary")
    parser.add_argument("--llama-quantize", type=Path, required=True, help="llama.cpp's quantizer")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("ENHANCER_DATA_DIR", "data")))
    parser.add_argument("--gguf", type=Path, help="GGUF for llama.cpp (default: fast preset's base)")
    parser.add_argument(
        "--q8-gguf", type=Path, help="llama.cpp's Q8_0 as is (no requantize, no native run); with --model"
    )
    parser.add_argument("--model", type=Path, help="our model (default: the version built from that GGUF)")
    parser.add_argument("--items", type=int, default=16, help="first N seed items (default 16)")
    parser.add_argument(
        "--concurrency", type=int, help="requests in flight and our batch (default: ENHANCER_MAX_BATCH)"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="CPU threads per engine")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    parser.add_argument("--json", type=Path, help="also write the full report here")
    args = parser.parse_args(argv)

    if args.concurrency is None:
        from app.core.config import get_settings

        args.concurrency = get_settings().max_batch_size
    default_gguf, default_model = default_sources(args.data_dir)
    gguf, model = args.q8_gguf or args.gguf or default_gguf, args.model or default_model
    for path in (args.llama_server, args.llama_quantize, gguf, model):
        if not path.exists():
            raise SystemExit(f"error: {path} does not exist (pull the model with `enhancer model pull`)")
    prompts, counts = build_prompts(model, args.items, args.data_dir / "models" / "cache")
    with tempfile.TemporaryDirectory() as tmp:
        if args.q8_gguf:  # made elsewhere (a tuned model: convert_hf_to_gguf.py --outtype q8_0)
            peers = {PEER_Q8: args.q8_gguf}
        else:
            q8 = quantize_q8(args.llama_quantize, gguf, Path(tmp))
            peers = {PEER_Q8: q8, f"llama.cpp-native ({gguf.name})": gguf}
        ctx = max(counts) + 1024
        rounds: list[dict[str, dict[str, Any]]] = []
        for number in range(args.rounds):
            order = [OURS_CONFIG, *peers] if number % 2 == 0 else [*reversed(peers), OURS_CONFIG]
            results: dict[str, dict[str, Any]] = {}
            for name in order:
                print(f"[peer] round {number + 1}: {name} ...", file=sys.stderr, flush=True)
                if name == OURS_CONFIG:
                    results[name] = run_ours(
                        model,
                        items=args.items,
                        concurrency=args.concurrency,
                        threads=args.threads,
                        data_dir=args.data_dir,
                    )
                    continue
                server = LlamaServer(
                    args.llama_server,
                    peers[name],
                    slots=args.concurrency,
                    threads=args.threads,
                    ctx_per_slot=ctx,
                    log=Path(tmp) / "llama-server.log",
                )
                with server:
                    results[name] = run_peer(name, server, prompts, counts, concurrency=args.concurrency)
            rounds.append({name: results[name] for name in [OURS_CONFIG, *peers]})
    summary = summarise(rounds)
    print(format_table(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {**summary, "options": {k: str(v) for k, v in vars(args).items()}, "rounds": rounds}
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
