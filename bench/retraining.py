"""Retraining benchmark: what a user waits for, beside the original course project's naive transform.

    python bench/retraining.py [--records 500000] [--files 500] [--compare-with REV]
                               [--peak-records 1000000] [--rounds 2]

On the same synthetic production logs (FastAPI-shaped JSON Lines, arrays and single objects, with
personal data and duplicates), each measured in a fresh process:

* end to end: ``medqa tick`` on a new store and a new Dagster instance: the sensor decides, then
  ``retraining_etl`` claims, snapshots, transforms, evaluates, publishes and records lineage in
  MLflow (the embedded SQLite default). Beside it the naive script (json per file or line, pandas
  drop of empty fields, JSON Lines out), interpreter start and imports included for both;
* the transform alone: ``build_version`` after the claim, in a fresh process;
* with ``--compare-with REV``, the same two for git revision REV, run from a temporary git
  worktree in this run, alternating with this tree's runs (the machine's load drifts); best of
  ``--rounds``;
* the peak memory (resident set) of ``medqa tick`` at ``--peak-records`` (0: skip).

Targets (issue 14): end to end >= 1.5x the naive script at 500k records; the transform alone
>= 1.5x REV's; peak <= 1 GB at 1M records. Prints a JSON summary as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAW_PREFIX = Path("data/production/retraining_data_raw")

NAIVE_SCRIPT = r"""
import glob, json, os, sys
import pandas as pd
records = []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*"))):
    with open(path) as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError:
            handle.seek(0)
            data = [json.loads(line) for line in handle if line.strip()]
    records.extend(data if isinstance(data, list) else [data])
frame = pd.DataFrame(records)
frame["answer"] = frame["model_response"].fillna(frame["answer"]) if "model_response" in frame else frame["answer"]
frame = frame.dropna(subset=["question", "answer"])
frame = frame[(frame["question"] != "") & (frame["answer"] != "")]
frame[["question", "answer"]].to_json(os.path.join(sys.argv[2], "out.json"), orient="records", lines=True)
print(len(records))
"""

# run in a fresh process with the tree under test first on sys.path: claim, then time build_version
TRANSFORM_SCRIPT = r"""
import json, sys, time
from medqa_assets.retraining.build import build_version
from medqa_assets.retraining.decide import plan_tick
from medqa_assets.retraining.snapshot import prepare_version
from medqa_assets.storage.object_store import ObjectStore
store = ObjectStore(sys.argv[1])
decision = plan_tick(store, settle_seconds=0).decision
manifest = prepare_version(store, decision.version, decision, settle_seconds=0, log=lambda _: None)
start = time.perf_counter()
metadata = build_version(store, decision.version, manifest, log=lambda _: None)
print(json.dumps({"seconds": time.perf_counter() - start, "records_in": metadata["records_in"],
                  "records_out": metadata["records_out"]}))
"""


def make_files(records: int, files: int, seed: int = 7) -> list[tuple[str, bytes]]:
    """Synthetic production logs in the contract's shapes, with some personal data and duplicates."""
    import pandas as pd

    bundled = pd.read_parquet(ROOT / "medqa_assets" / "medquad" / "bundled" / "medquad.parquet")
    answered = bundled.dropna(subset=["answer"])
    questions = answered["question"].tolist()
    answers = [a[:600] for a in answered["answer"].tolist()]
    rng = random.Random(seed)
    per_file = records // files
    out = []
    for index in range(files):
        shape = index % 4
        rows = []
        for j in range(per_file):
            q = rng.choice(questions)
            a = rng.choice(answers)
            if j % 97 == 0:
                q = f"{q} my email is user{j}@example.com"
            ts = 1_790_000_000 + index * 60 + j
            if shape == 0:
                rows.append({"ts": ts, "question": q, "slice": "bench", "answer": a, "latency_ms": 12.5})
            elif shape == 1:
                rows.append({"ts": ts, "question": q, "symptoms": ["fever"], "answer": a, "lat_ms": 9, "q_tags": []})
            else:
                rows.append({"timestamp": ts, "question": q, "model_response": a})
        if shape in (0, 1):
            data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
            name = f"log-{index:04d}.jsonl"
        else:
            data = json.dumps(rows).encode()
            name = f"log-{index:04d}.json"
        out.append((name, data))
    return out


def write_raw(directory: Path, files: list[tuple[str, bytes]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files:
        (directory / name).write_bytes(data)


@contextmanager
def fresh_store(raw: Path) -> Iterator[Path]:
    """A new store holding a copy of the raw logs (a run consumes its store)."""
    with tempfile.TemporaryDirectory() as directory:
        store = Path(directory, "store")
        shutil.copytree(raw, store / RAW_PREFIX)
        yield store


def run_child(args: list[str], tree: Path, env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak resident MB and stdout of a fresh process running ``tree``'s code."""
    environment = {**os.environ, **(env or {}), "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    process = subprocess.Popen(args, cwd=tree, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    stdout, stderr = process.stdout.read().decode(), process.stderr.read().decode()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{' '.join(args[:3])} failed in {tree}:\n{stderr[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, stdout


def end_to_end(tree: Path, raw: Path) -> dict[str, float]:
    """``medqa tick`` in a fresh process: sensor, claim, snapshot, transform, publish, lineage.

    As a user runs it: on an instance and an MLflow database that exist already (a first tick on
    a tiny version creates them, timed apart as ``first_tick_s``), the batch is version 2.
    """
    with fresh_store(raw) as store, tempfile.TemporaryDirectory() as home:
        Path(home, "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        env = {"DAGSTER_HOME": home, "MEDQA_STORE_URL": str(store), "MEDQA_SENSOR_SETTLE_SECONDS": "0"}
        batch = store / "batch"
        (store / RAW_PREFIX).rename(batch)
        first = store / RAW_PREFIX / "first.jsonl"
        first.parent.mkdir(parents=True)
        first.write_text(json.dumps({"question": "What is asthma?", "answer": "A disease of the airways."}) + "\n")
        first_seconds, _, stdout = run_child([sys.executable, "-m", "medqa_assets.cli", "tick"], tree, env)
        if "v1: complete" not in stdout:
            raise SystemExit(f"medqa tick did not publish v1 in {tree}: {stdout[-2000:]}")
        for path in batch.iterdir():
            path.rename(store / RAW_PREFIX / path.name)
        seconds, peak, stdout = run_child([sys.executable, "-m", "medqa_assets.cli", "tick"], tree, env)
        if "v2: complete" not in stdout:
            raise SystemExit(f"medqa tick did not publish v2 in {tree}: {stdout[-2000:]}")
    return {"seconds": seconds, "peak_mb": peak, "first_tick_s": first_seconds}


def transform_alone(tree: Path, raw: Path) -> dict[str, float]:
    with fresh_store(raw) as store:
        _, peak, stdout = run_child([sys.executable, "-c", TRANSFORM_SCRIPT, str(store)], tree)
    return json.loads(stdout.splitlines()[-1]) | {"peak_mb": peak}


def naive(raw: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        seconds, peak, stdout = run_child([sys.executable, "-c", NAIVE_SCRIPT, str(raw), out], ROOT)
    return {"seconds": seconds, "peak_mb": peak, "records": int(stdout.split()[-1])}


@contextmanager
def worktree(revision: str | None) -> Iterator[Path | None]:
    if revision is None:
        yield None
        return
    with tempfile.TemporaryDirectory() as parent:
        tree = Path(parent) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), revision], check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    return min(runs, key=lambda run: run["seconds"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--compare-with", metavar="REV", help="also measure git revision REV, alternating")
    parser.add_argument("--peak-records", type=int, default=1_000_000, help="records for the peak memory run (0: skip)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each measurement; the best is reported")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    summary: dict[str, object] = {"records": args.records, "cores": os.cpu_count(), "load_before": round(load, 2)}
    with tempfile.TemporaryDirectory() as work, worktree(args.compare_with) as old_tree:
        raw = Path(work, "raw")
        files = make_files(args.records, args.files)
        write_raw(raw, files)
        size = sum(len(data) for _, data in files)
        del files
        print(
            f"{args.records} records in {args.files} files, {size / 1e6:.0f} MB; {os.cpu_count()} cores, "
            f"load average {load:.2f} before the runs"
        )
        trees = {"this tree": ROOT} | ({f"at {args.compare_with}": old_tree} if old_tree else {})
        runs: dict[str, dict[str, list[dict[str, float]]]] = {name: {"e2e": [], "transform": []} for name in trees}
        naive_runs = []
        for _ in range(args.rounds):  # alternate, so that drifting load hits every contender alike
            naive_runs.append(naive(raw))
            for name, tree in trees.items():
                runs[name]["e2e"].append(end_to_end(tree, raw))
                runs[name]["transform"].append(transform_alone(tree, raw))
        naive_best = best(naive_runs)
        print(f"\nbest of {args.rounds}, seconds (fresh process each):")
        print(
            f"  naive transform (json, pandas, JSON Lines out) {naive_best['seconds']:7.2f} s  "
            f"peak {naive_best['peak_mb']:.0f} MB"
        )
        for name in trees:
            e2e, transform = best(runs[name]["e2e"]), best(runs[name]["transform"])
            ratio = naive_best["seconds"] / e2e["seconds"]
            print(
                f"  {name:<10} end to end (medqa tick) {e2e['seconds']:7.2f} s  peak {e2e['peak_mb']:.0f} MB  "
                f"= {ratio:.2f}x the naive script"
            )
            print(
                f"  {name:<10} transform alone (build_version) {transform['seconds']:7.2f} s  "
                f"({transform['records_in'] / transform['seconds']:,.0f} records/s, out {transform['records_out']})"
            )
            key = "this" if name == "this tree" else "old"
            summary |= {
                f"{key}_e2e_s": round(e2e["seconds"], 2),
                f"{key}_e2e_peak_mb": round(e2e["peak_mb"]),
                f"{key}_e2e_vs_naive": round(ratio, 2),
                f"{key}_first_tick_s": round(e2e["first_tick_s"], 2),
                f"{key}_transform_s": round(transform["seconds"], 2),
            }
        summary["naive_s"] = round(naive_best["seconds"], 2)
        if old_tree:
            speedup = summary["old_transform_s"] / summary["this_transform_s"]
            e2e_speedup = summary["old_e2e_s"] / summary["this_e2e_s"]
            print(f"  transform alone: this tree {speedup:.2f}x {args.compare_with}; end to end {e2e_speedup:.2f}x")
            summary |= {"transform_speedup": round(speedup, 2), "e2e_speedup": round(e2e_speedup, 2)}
    if args.peak_records:
        with tempfile.TemporaryDirectory() as work:
            raw = Path(work, "raw")
            write_raw(raw, make_files(args.peak_records, args.peak_records // 1000))
            peak = end_to_end(ROOT, raw)
        print(
            f"  this tree at {args.peak_records:,} records: end to end {peak['seconds']:.2f} s, "
            f"peak {peak['peak_mb']:.0f} MB"
        )
        summary |= {"peak_records": args.peak_records, "peak_mb_at_peak_records": round(peak["peak_mb"])}
    summary["load_after"] = round(os.getloadavg()[0], 2)
    print("targets: end to end >= 1.5x naive at 500k; transform alone >= 1.5x the old code; peak <= 1024 MB at 1M")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
