"""Benchmark: the traffic simulator against the reference endpoint, end to end on this machine.

    .venv/bin/python bench/simulate.py [--rate 500] [--duration 20] [--concurrency 256] [--workers 2]

Starts ``medqa serve`` in a subprocess on a free loopback port, fitted on the real training
split when the configured store (MEDQA_STORE_URL) has one, otherwise on a synthetic split of
``--rows`` MedQuAD-like rows written to a temporary local store. The production set it replays
(``rate * duration`` questions drawn from the training questions) and the logs the simulator
writes live in that temporary store, never in the real one. Prints the achieved rate, its ratio
to the asked rate, scheduling lag and latency percentiles, and stops the server by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medqa_assets.serving.simulator import simulate  # noqa: E402
from medqa_assets.storage import layout  # noqa: E402
from medqa_assets.storage.object_store import ObjectStore  # noqa: E402

TEMPLATES = [
    "What is (are) {x} ?",
    "What are the symptoms of {x} ?",
    "What causes {x} ?",
    "How to diagnose {x} ?",
    "What are the treatments for {x} ?",
    "Is {x} inherited ?",
    "How many people are affected by {x} ?",
    "What are the genetic changes related to {x} ?",
    "Who is at risk for {x}? ?",
    "How to prevent {x} ?",
    "What is the outlook for {x} ?",
    "What research (or clinical trials) is being done for {x} ?",
]
SYLLABLES = [a + b for a in "bcdfklmnprstvz" for b in "aeiou"]
SUFFIXES = ["itis", "osis", "emia", "oma", "pathy", "syndrome", "disease", "deficiency", "dystrophy", "plasia"]
WORDS = str.split(
    "the a of and to in is are with may be can cause patients symptoms treatment disease doctor blood cells "
    "gene mutation risk children adults pain fever therapy medication surgery diagnosis test condition body "
    "muscle nerve brain heart liver kidney skin bone infection chronic acute rare common inherited"
)


def synthetic_training(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = random.Random(seed)
    names = set()
    while len(names) < max(1, rows // 4):
        stem = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        names.add(f"{stem}{rng.choice(SUFFIXES)}" if rng.random() < 0.7 else f"{stem} {rng.choice(SUFFIXES)}")
    names = sorted(names)
    frame = pd.DataFrame(
        {
            "question": [rng.choice(TEMPLATES).format(x=rng.choice(names)) for _ in range(rows)],
            "answer": [" ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 200))) for _ in range(rows)],
        }
    )
    frame["question_id"] = [f"syn-{i:06d}" for i in range(rows)]
    return frame


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live children (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            total += sum(process_cpu_seconds(int(child)) for child in children.read_text().split())
    return total


def wait_settled(pid: int, timeout: float = 60.0, window: float = 0.5, busy: float = 0.1) -> None:
    """Wait until the server's processes stop using CPU: every worker has fitted its baseline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = process_cpu_seconds(pid)
        time.sleep(window)
        if process_cpu_seconds(pid) - before < busy * window:
            return


def wait_healthy(base_url: str, process: subprocess.Popen, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the endpoint exited with code {process.returncode} before it was ready")
        try:
            response = httpx.get(f"{base_url}/healthz", timeout=1.0)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the endpoint at {base_url} was not ready after {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of traffic")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--arrivals", choices=["poisson", "uniform"], default="poisson")
    parser.add_argument("--rows", type=int, default=10_000, help="rows of the synthetic training split")
    parser.add_argument("--synthetic", action="store_true", help="use a synthetic split even if a real one exists")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes of the endpoint")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="medqa-bench-") as temp:
        bench_store = ObjectStore(temp)
        server_env = dict(os.environ)
        training_key = layout.SPLIT_KEYS["training"]
        real_store = None if args.synthetic else _real_store()
        if real_store is not None and real_store.exists(training_key):
            training = real_store.read_jsonl(training_key, columns=["question", "answer"])
            server_env["MEDQA_STORE_URL"] = real_store.url  # absolute: the server runs in another directory
            source = f"real split {real_store.uri(training_key)} ({len(training)} rows)"
        else:
            training = synthetic_training(args.rows)
            bench_store.write_jsonl(training_key, training)
            server_env["MEDQA_STORE_URL"] = temp
            source = f"synthetic split of {len(training)} rows"

        count = max(1, round(args.rate * args.duration))
        questions = training["question"].dropna().astype(str).tolist()
        rng = random.Random(1)
        production = pd.DataFrame(
            {
                "question": [rng.choice(questions) for _ in range(count)],
                "answer": ["(reference answer, never logged)"] * count,
                "question_id": [f"bench-{i:06d}" for i in range(count)],
            }
        )
        bench_store.write_jsonl(layout.production_set_key("bench"), production)

        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "medqa_assets.cli", "serve", "--port", str(port), "--log-level", "warning"]
        command += ["--workers", str(args.workers)]
        process = subprocess.Popen(command, env=server_env, cwd=str(ROOT))
        try:
            health = wait_healthy(base_url, process)
            wait_settled(process.pid)  # /healthz answers once the first worker is up; let the others finish
            print(f"endpoint {base_url}: {source}, device {health.get('device')}, {args.workers} worker(s)")
            print(
                f"replaying {count} questions at {args.rate:g} req/s ({args.arrivals}), "
                f"concurrency {args.concurrency}, httpx connection pool"
            )
            load_before = " ".join(f"{value:.2f}" for value in os.getloadavg())
            server_cpu_before, client_cpu_before = process_cpu_seconds(process.pid), time.process_time()
            summary = simulate(
                "bench",
                base_url,
                rate=args.rate,
                concurrency=args.concurrency,
                arrivals=args.arrivals,
                batch_size=args.batch_size,
                store=bench_store,
                progress=not args.no_progress,
            )
            server_cpu = process_cpu_seconds(process.pid) - server_cpu_before
            client_cpu = time.process_time() - client_cpu_before
            load_after = " ".join(f"{value:.2f}" for value in os.getloadavg())
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

        print(summary.format())
        print()
        print(f"cores                 {os.cpu_count()}  (load average before/after: {load_before} / {load_after})")
        print(f"asked rate            {summary.asked_rate:.1f} req/s")
        print(f"schedule rate         {summary.scheduled_rate:.1f} req/s  (the {args.arrivals} arrival times drawn)")
        print(f"achieved rate         {summary.achieved_rate:.1f} req/s  (ratio {summary.rate_ratio:.3f})")
        print(f"completed rate        {summary.completion_rate:.1f} req/s")
        print(f"ok / sent             {summary.ok} / {summary.sent}  errors {summary.errors or 'none'}")
        print(
            f"scheduling lag ms     p50 {summary.lag_ms_p50:.2f}  p99 {summary.lag_ms_p99:.2f}  "
            f"max {summary.lag_ms_max:.2f}"
        )
        if summary.latency_ms_p50 is not None:
            print(
                f"latency ms            p50 {summary.latency_ms_p50:.2f}  p95 {summary.latency_ms_p95:.2f}  "
                f"p99 {summary.latency_ms_p99:.2f}"
            )
        if summary.sent:
            print(
                f"cpu per request       client {client_cpu / summary.sent * 1e6:.0f} us, "
                f"server {server_cpu / summary.sent * 1e6:.0f} us (all worker processes)"
            )
        print(f"log objects written   {len(summary.log_keys)} ({summary.records_written} records)")
        within = abs(1 - summary.rate_ratio) <= 0.05
        print(f"within 5% of asked    {'yes' if within else 'NO'}")
        return 0 if within and summary.ok == summary.sent else 1


def _real_store() -> ObjectStore | None:
    try:
        return ObjectStore.from_settings()
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
