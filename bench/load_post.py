"""Bounded loopback load test of POST /v1/enhance (single items) with a worker running.

Starts a private service - `enhancer serve --no-worker` (uvicorn, as users run it) plus one
`enhancer worker` on the tiny test model (or --model) - in a temporary data directory, sends one
warm-up item through to its record (the worker's model and embedder load on first use), then
offers POSTs at a fixed rate (open loop: request i is due at start + i/rate, and its latency is
counted from that moment, so a stalled server cannot hide its queueing) over keep-alive
connections for --duration seconds, for each rate in --rates. Reports requests/s held and
p50/p90/p99/max latency per rate, checks that every accepted item has exactly one job in the
database, and prints one JSON line per rate.

    python bench/load_post.py --rates 100,200,300 --duration 15
    python bench/load_post.py --broker redis://127.0.0.1:6379/15 --rates 200

The load generator is a minimal asyncio HTTP/1.1 client (uvloop when present) so that its own CPU
use stays small next to the server's on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-" + uuid.uuid4().hex


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def item_body(run_id: str, index: int) -> bytes:
    return json.dumps(
        {
            "source": "TLDR AI",
            "subject": f"OpenAI and Broadcom announce a chip deal #{index}",
            "from": "dan@tldrnewsletter.com",
            "date": "2025-10-16T08:00:00Z",
            "message_id": f"<{run_id}-{index}@bench>",
            "content": "OpenAI will design custom AI chips with Broadcom, to be deployed from 2026. " * 4,
            "url": "https://openai.com/index/openai-and-broadcom/?utm_source=tldr",
        }
    ).encode()


def request_bytes(port: int, body: bytes) -> bytes:
    head = (
        f"POST /v1/enhance HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


@dataclass
class RateResult:
    rate: float
    duration: float
    offered: int = 0
    accepted: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    service_ms: list[float] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    wall: float = 0.0

    def summary(self) -> dict[str, object]:
        def pct(values: list[float], q: float) -> float:
            if not values:
                return float("nan")
            ordered = sorted(values)
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

        return {
            "target_rps": self.rate,
            "held_rps": round(self.accepted / self.wall, 1) if self.wall else 0.0,
            "offered": self.offered,
            "accepted_202": self.accepted,
            "errors": self.errors,
            "p50_ms": pct(self.latencies_ms, 0.50),
            "p90_ms": pct(self.latencies_ms, 0.90),
            "p99_ms": pct(self.latencies_ms, 0.99),
            "max_ms": round(max(self.latencies_ms), 2) if self.latencies_ms else None,
            "service_p50_ms": pct(self.service_ms, 0.50),
            "service_p99_ms": pct(self.service_ms, 0.99),
            "mean_ms": round(statistics.fmean(self.latencies_ms), 2) if self.latencies_ms else None,
        }


async def offer_load(port: int, rate: float, duration: float, connections: int, run_id: str) -> RateResult:
    """Open loop: request i is due at t0 + i/rate; a free connection sends the next due request."""
    result = RateResult(rate=rate, duration=duration)
    total = int(rate * duration)
    bodies = [request_bytes(port, item_body(run_id, i)) for i in range(total)]
    queue: asyncio.Queue[int] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2

    async def schedule() -> None:
        for index in range(total):
            delay = start + index / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait(index)
        for _ in range(connections):
            queue.put_nowait(-1)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (index := await queue.get()) >= 0:
                due = start + index / rate
                sent = loop.time()
                try:
                    writer.write(bodies[index])
                    status, body = await read_response(reader)
                except (OSError, asyncio.IncompleteReadError) as error:
                    key = type(error).__name__
                    result.errors[key] = result.errors.get(key, 0) + 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                done = loop.time()
                result.offered += 1
                if status == 202:
                    result.accepted += 1
                    result.job_ids.append(json.loads(body)["jobs"][0]["id"])
                else:
                    result.errors[str(status)] = result.errors.get(str(status), 0) + 1
                result.latencies_ms.append((done - max(due, start)) * 1000)
                result.service_ms.append((done - sent) * 1000)
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(schedule(), *(connection() for _ in range(connections)))
    result.wall = time.perf_counter() - began - 0.2
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Service:
    """API (`enhancer serve --no-worker`) and one worker, in a temporary data directory.

    With `code_dir`, the service runs from that copy of the code (a baseline exported from git)
    instead of this checkout: the same venv, but its own `app`, `worker` and `migrations`.
    """

    def __init__(self, args: argparse.Namespace, code_dir: Path = REPO_ROOT) -> None:
        self.code_dir = code_dir
        self.data_dir = Path(tempfile.mkdtemp(prefix="enhancer-bench-"))
        self.port = free_port()
        self.env = {
            **os.environ,
            "ENHANCER_DATA_DIR": str(self.data_dir),
            "ENHANCER_API_KEYS": API_KEY,
            "ENHANCER_BACKEND": args.backend,
            "ENHANCER_MAX_QUEUED_JOBS": str(10**7),  # measure the write path, not the 429
            "ENHANCER_RATE_LIMIT_PER_SECOND": "0",  # one key offers 100-300/s: no per-key rate limit
        }
        if args.broker:
            self.env["BROKER_URL"] = args.broker
        model = args.model or self._tiny_model()
        self.env["ENHANCER_MODEL"] = model
        if code_dir != REPO_ROOT:
            self.env["PYTHONPATH"] = str(code_dir)  # ahead of the editable install's finder
        self.processes: list[subprocess.Popen[bytes]] = []
        self.api: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.args = args

    def _tiny_model(self) -> str:
        sys.path.insert(0, str(REPO_ROOT))
        from bench.tiny_model import build_tiny_llama

        return str(build_tiny_llama(self.data_dir / "tiny-model"))

    def start(self) -> None:
        cli = [sys.executable, "-m", "app.cli"]
        subprocess.run([*cli, "migrate"], env=self.env, cwd=self.code_dir, check=True, capture_output=True)
        log = (self.data_dir / "worker.log").open("wb")
        if not self.args.no_worker:
            worker = [*cli, "worker"]
            if self.args.worker_nice:
                worker = ["nice", "-n", str(self.args.worker_nice), *worker]
            self.worker = subprocess.Popen(
                worker, env=self.env, cwd=self.code_dir, stdout=log, stderr=subprocess.STDOUT
            )
            self.processes.append(self.worker)
        api_log = (self.data_dir / "api.log").open("wb")
        serve = [*cli, "serve", "--no-worker", "--port", str(self.port)]
        self.api = subprocess.Popen(
            serve, env=self.env, cwd=self.code_dir, stdout=api_log, stderr=subprocess.STDOUT
        )
        self.processes.append(self.api)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    if conn.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError((self.data_dir / "api.log").read_text(errors="replace")[-3000:])

    def warm_up(self, timeout: float = 180.0) -> None:
        """One item through to its record before any load: the worker loads its model and the MiniLM
        embedder on its first jobs, which would otherwise compete for the CPU in the measured seconds."""
        import urllib.request

        headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
        base = f"http://127.0.0.1:{self.port}"
        post = urllib.request.Request(f"{base}/v1/enhance", item_body("warm-up", 0), headers, method="POST")
        with urllib.request.urlopen(post, timeout=30) as response:
            job_id = json.loads(response.read())["jobs"][0]["id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(
                urllib.request.Request(f"{base}/v1/jobs/{job_id}", headers=headers)
            ) as r:
                status = json.loads(r.read())["status"]
            if status in ("succeeded", "failed"):
                time.sleep(2.0)  # its record's indexing (the embedder's first load) follows the job
                return
            time.sleep(0.2)
        raise TimeoutError(f"the warm-up job {job_id} did not finish in {timeout:.0f} s")

    def jobs_per_item(self, job_ids: list[str]) -> tuple[int, int]:
        """(jobs found for the accepted ids, items with more than one job) - read from the database."""
        os.environ.update({k: v for k, v in self.env.items() if k.startswith(("ENHANCER_", "DATABASE_"))})
        sys.path.insert(0, str(REPO_ROOT))
        from sqlalchemy import func, select

        from app.core.db import reset_caches, session_scope
        from app.models import Job

        reset_caches()
        found = 0
        with session_scope() as session:
            for start in range(0, len(job_ids), 500):
                chunk = job_ids[start : start + 500]
                found += session.scalar(select(func.count()).select_from(Job).where(Job.id.in_(chunk))) or 0
            duplicates = session.scalar(
                select(func.count()).select_from(
                    select(Job.item_id).group_by(Job.item_id).having(func.count() > 1).subquery()
                )
            )
        return found, int(duplicates or 0)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
        if not self.args.keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="200", help="comma-separated target requests/s, run in order")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per rate")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--broker", help="BROKER_URL (default: the embedded SQLite broker)")
    parser.add_argument("--model", help="model source for the worker (default: a tiny random Llama)")
    parser.add_argument("--backend", default="torch", choices=["torch", "openvino"])
    parser.add_argument("--no-worker", action="store_true", help="API only")
    parser.add_argument("--worker-nice", type=int, default=0, help="run the worker under `nice -n N`")
    parser.add_argument("--keep", action="store_true", help="keep the data directory (logs)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between start-up and load")
    parser.add_argument(
        "--baseline-ref", help="also run the code at this git ref (before/after ratios in one run)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="alternate baseline and current this often")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    variants: list[tuple[str, Path]] = [("current", REPO_ROOT)]
    if args.baseline_ref:
        variants.insert(0, (args.baseline_ref, export_tree(args.baseline_ref)))
    rates = [float(r) for r in args.rates.split(",")]
    results: dict[tuple[str, float], list[dict[str, object]]] = {}
    failed = False
    for round_number in range(args.rounds):
        for name, code_dir in variants:
            for summary in run_service(args, code_dir, rates):
                summary.update(code=name, round=round_number + 1)
                print(json.dumps(summary), flush=True)
                results.setdefault((name, float(summary["target_rps"])), []).append(summary)  # type: ignore[arg-type]
                failed |= summary["jobs_in_database"] != summary["accepted_202"]
                failed |= summary["items_with_several_jobs"] != 0
    if args.baseline_ref:
        for rate in rates:
            before = results[(args.baseline_ref, rate)]
            after = results[("current", rate)]
            print(json.dumps({"target_rps": rate, "ratio_current_over_baseline": ratios(before, after)}))
    return 1 if failed else 0


def ratios(before: list[dict[str, object]], after: list[dict[str, object]]) -> dict[str, float]:
    """Median of each measure after / before: < 1 is better for times, > 1 for held_rps."""
    out = {}
    for key in ("held_rps", "p50_ms", "p99_ms", "api_cpu_ms_per_request"):
        b = statistics.median(float(r[key]) for r in before)  # type: ignore[arg-type]
        a = statistics.median(float(r[key]) for r in after)  # type: ignore[arg-type]
        out[key] = round(a / b, 3) if b else float("nan")
    return out


def export_tree(ref: str) -> Path:
    """The repository at `ref`, extracted (read-only use of git: `git archive`)."""
    target = Path(tempfile.mkdtemp(prefix="enhancer-baseline-"))
    archive = subprocess.run(["git", "archive", ref], cwd=REPO_ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def run_service(args: argparse.Namespace, code_dir: Path, rates: list[float]) -> list[dict[str, object]]:
    service = Service(args, code_dir)
    service.start()
    run_id = uuid.uuid4().hex[:8]
    summaries = []
    try:
        time.sleep(args.settle)  # let the worker finish starting: its model load competes for the CPU
        if service.worker is not None:
            service.warm_up()
        for rate in rates:
            api_cpu = cpu_seconds(service.api.pid)  # type: ignore[union-attr]
            worker_cpu = cpu_seconds(service.worker.pid) if service.worker else 0.0
            result = asyncio.run(
                offer_load(service.port, rate, args.duration, args.connections, f"{run_id}-{rate}")
            )
            summary = result.summary()
            api_cpu = cpu_seconds(service.api.pid) - api_cpu  # type: ignore[union-attr]
            worker_cpu = (cpu_seconds(service.worker.pid) - worker_cpu) if service.worker else 0.0
            found, duplicates = service.jobs_per_item(result.job_ids)
            summary.update(
                load_average_1m=round(os.getloadavg()[0], 2),
                api_cpu_ms_per_request=round(1000 * api_cpu / max(1, result.offered), 3),
                api_cpu_share=round(api_cpu / result.wall, 2),
                worker_cpu_share=round(worker_cpu / result.wall, 2),
                jobs_in_database=found,
                items_with_several_jobs=duplicates,
                broker=args.broker or "embedded",
                worker=not args.no_worker,
            )
            summaries.append(summary)
    finally:
        service.stop()
    return summaries


if __name__ == "__main__":
    raise SystemExit(main())
