"""Retraining benchmark: 1,000,000 log records in 1,000 files of mixed shapes into one version,
on the local store and on a SeaweedFS S3 server, next to the seed's transform on the same files.

    python bench/retraining.py [--records 1000000] [--files 1000] [--skip-s3] [--compare-with REV]

Prints records/s and peak memory (this process plus its workers) and the ratio to the seed
script (json.load per file, pandas drop of empty fields). Targets: >= 200,000 records/s local,
>= 100,000 on S3, <= 2 GB peak, >= 5x the seed script. ``--compare-with REV`` also runs this
benchmark as it was at git revision REV (a temporary worktree) on the same files, in the same run,
and prints the ratio of the local rates (a change's cost measured side by side).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEED_SCRIPT = r"""
import glob, json, os, sys, time, resource
import pandas as pd
start = time.perf_counter()
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
print(time.perf_counter() - start, len(records), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def make_files(records: int, files: int, seed: int = 7) -> list[tuple[str, bytes]]:
    """Synthetic production logs in the four contract shapes, with some PII and duplicates."""
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
        for j in range(per_file if shape != 3 or per_file == 1 else per_file):
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


def peak_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def run_version(store, files: list[tuple[str, bytes]]) -> tuple[float, float, dict]:
    """Upload, decide, claim and snapshot, then time building the version."""
    from medqa_assets.retraining.build import build_version
    from medqa_assets.retraining.decide import plan_tick
    from medqa_assets.retraining.snapshot import prepare_version
    from medqa_assets.storage import layout

    for name, data in files:
        store.write_bytes(layout.RAW_LOGS_PREFIX + name, data)
    start = time.perf_counter()
    decision = plan_tick(store, settle_seconds=0).decision
    manifest = prepare_version(store, decision.version, decision, settle_seconds=0, log=lambda _: None)
    claim_seconds = time.perf_counter() - start
    start = time.perf_counter()
    metadata = build_version(store, decision.version, manifest, log=lambda _: None)
    return time.perf_counter() - start, claim_seconds, metadata


def run_seed(files: list[tuple[str, bytes]]) -> tuple[float, int, float]:
    with tempfile.TemporaryDirectory() as raw, tempfile.TemporaryDirectory() as out:
        for name, data in files:
            Path(raw, name).write_bytes(data)
        completed = subprocess.run(
            [sys.executable, "-c", SEED_SCRIPT, raw, out], capture_output=True, text=True, check=True
        )
    seconds, count, peak = completed.stdout.split()
    return float(seconds), int(count), float(peak)


def run_revision(revision: str, records: int, files: int, skip_seed: bool = False) -> dict:
    """This benchmark as it was at ``revision`` (local store only), in a temporary git worktree."""
    with tempfile.TemporaryDirectory() as parent:
        tree = Path(parent) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), revision], check=True)
        try:
            completed = subprocess.run(
                [sys.executable, "bench/retraining.py", "--records", str(records), "--files", str(files), "--skip-s3"]
                + (["--skip-seed"] if skip_seed else []),
                cwd=tree,
                env={**os.environ, "PYTHONPATH": str(tree)},
                capture_output=True,
                text=True,
                check=True,
            )
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    print("\n".join(f"  [{revision}] {line}" for line in completed.stdout.splitlines()[:-1]))
    return json.loads(completed.stdout.splitlines()[-1])


def run_version_in_child(records: int, files: int) -> float:
    """This tree's local rate again, in a fresh process (as the baseline runs)."""
    completed = subprocess.run(
        [sys.executable, str(Path(__file__)), "--records", str(records), "--files", str(files)]
        + ["--skip-s3", "--skip-seed"],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(completed.stdout.splitlines()[-1])["local"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--skip-s3", action="store_true", help="only the local store")
    parser.add_argument(
        "--compare-with",
        metavar="REV",
        help="also run the benchmark of git revision REV, before and after this tree's (the machine's load drifts)",
    )
    parser.add_argument("--skip-seed", action="store_true", help="do not run the seed script")
    args = parser.parse_args()

    from medqa_assets.storage.object_store import ObjectStore

    files = make_files(args.records, args.files)
    total = sum(len(d) for _, d in files)
    print(f"{args.records} records in {args.files} files, {total / 1e6:.0f} MB, {os.cpu_count()} cores")
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        seconds, claim_seconds, metadata = run_version(ObjectStore(directory), files)
    rate = metadata["records_in"] / seconds
    results["local"] = rate
    print(
        f"local store       {seconds:7.2f} s  {rate:>10.0f} records/s  peak {peak_mb():.0f} MB  "
        f"(claim {claim_seconds:.2f} s, out {metadata['records_out']}, "
        f"duplicates {metadata['duplicates_removed']}, pii {sum(metadata['pii_redactions'].values())})"
    )
    if not args.skip_s3:
        sys.path.insert(0, str(ROOT / "medqa_assets_tests"))
        from s3_server import make_bucket, run_seaweedfs

        with tempfile.TemporaryDirectory() as work, run_seaweedfs(Path(work)) as server:
            make_bucket(server, "bench")
            os.environ["AWS_ACCESS_KEY_ID"] = server.access_key
            os.environ["AWS_SECRET_ACCESS_KEY"] = server.secret_key
            store = ObjectStore(
                "s3://bench/medqa", endpoint_url=server.endpoint_url, key=server.access_key, secret=server.secret_key
            )
            seconds, claim_seconds, metadata = run_version(store, files)
        rate = metadata["records_in"] / seconds
        results["s3"] = rate
        print(
            f"SeaweedFS S3      {seconds:7.2f} s  {rate:>10.0f} records/s  peak {peak_mb():.0f} MB  "
            f"(claim {claim_seconds:.2f} s)"
        )
    # Peak of this process and its workers (and the SeaweedFS server), measured before the seed runs;
    # it includes the ~{total} bytes of generated input this script holds in memory.
    platform_peak = peak_mb()
    baselines = []
    if args.compare_with:  # measured after this tree's peak was read: its processes are children too
        baselines = [run_revision(args.compare_with, args.records, args.files) for _ in range(2)]
        again = run_version_in_child(args.records, args.files)
        results["local"] = max(results["local"], again)
        print(f"local store (again, after the baseline) {again:>10.0f} records/s")
    if args.skip_seed:
        print(json.dumps({k: round(v) for k, v in results.items()} | {"peak_mb": round(platform_peak)}))
        return 0
    seed_seconds, seed_records, seed_peak = run_seed(files)
    seed_rate = seed_records / seed_seconds
    print(f"seed script       {seed_seconds:7.2f} s  {seed_rate:>10.0f} records/s  peak {seed_peak:.0f} MB")
    for name, rate in results.items():
        print(f"ratio {name}: {rate / seed_rate:.1f}x the seed")
    if baselines:
        best = max(b["local"] for b in baselines)
        print(
            f"local store at {args.compare_with} (best of 2, run between this tree's runs): {best} records/s; "
            f"this tree (best of 2) {results['local']:.0f} records/s = {results['local'] / best:.2f}x"
        )
    print(f"platform peak (this process, its workers and the S3 server): {platform_peak:.0f} MB")
    print("targets: local >= 200000/s, S3 >= 100000/s, peak <= 2048 MB, >= 5x seed")
    summary = {k: round(v) for k, v in results.items()} | {"seed": round(seed_rate), "peak_mb": round(platform_peak)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
