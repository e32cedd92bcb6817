"""Retraining on S3: one whole version (plan_tick -> prepare_version -> build_version) on a SeaweedFS
server, with this tree and with the code of an earlier git revision, side by side on the same files.

    python bench/retraining_s3.py [--records 300000] [--files 300] [--baseline 5be0ee1] [--rounds 2]

The files are bench/retraining.py's synthetic logs. Each run is a fresh process (PYTHONPATH at this
tree, or at a temporary git worktree of the baseline) writing to its own bucket of one shared
server; runs alternate old/new and the best of ``--rounds`` counts, as the machine's load drifts.
Client CPU is the run's own user+sys time and its worker processes', never the server's.
Targets: >= 1.4x the baseline's records/s, client CPU per record at most half the baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cpu_seconds() -> float:
    """user+sys of this process and of its finished children (the build's worker processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_child(files_dir: Path, store_url: str, endpoint_url: str) -> dict:
    """One version on ``store_url``, with whichever medqa_assets PYTHONPATH names."""
    import medqa_assets
    from medqa_assets.retraining.build import build_version
    from medqa_assets.retraining.decide import plan_tick
    from medqa_assets.retraining.snapshot import prepare_version
    from medqa_assets.storage import layout
    from medqa_assets.storage.object_store import ObjectStore

    store = ObjectStore(
        store_url,
        endpoint_url=endpoint_url,
        key=os.environ["AWS_ACCESS_KEY_ID"],
        secret=os.environ["AWS_SECRET_ACCESS_KEY"],
    )
    for path in sorted(files_dir.iterdir()):
        store.write_bytes(layout.RAW_LOGS_PREFIX + path.name, path.read_bytes())
    cpu, start = _cpu_seconds(), time.perf_counter()
    decision = plan_tick(store, settle_seconds=0).decision
    manifest = prepare_version(store, decision.version, decision, settle_seconds=0, log=lambda _: None)
    metadata = build_version(store, decision.version, manifest, log=lambda _: None)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "code": str(Path(medqa_assets.__file__).parents[1]),
        "seconds": seconds,
        "records": metadata["records_in"],
        "cpu_seconds": cpu,
        "peak_mb": max(own, children) / 1024,
    }


def run_once(tree: Path, files_dir: Path, server, bucket: str) -> dict:
    from s3_server import make_bucket

    make_bucket(server, bucket)
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_DEFAULT_REGION": server.region,
    }
    command = [sys.executable, str(Path(__file__)), "--child", str(files_dir), f"s3://{bucket}/medqa"]
    completed = subprocess.run(
        command + [server.endpoint_url], cwd=tree, env=env, capture_output=True, text=True, check=False
    )
    if completed.returncode:
        raise SystemExit(f"the run with {tree} failed:\n{completed.stderr[-4000:]}")
    result = json.loads(completed.stdout.splitlines()[-1])
    if Path(result["code"]).resolve() != tree.resolve():
        raise SystemExit(f"the run meant for {tree} imported medqa_assets from {result['code']}")
    return result


def describe(name: str, result: dict) -> str:
    rate = result["records"] / result["seconds"]
    per_100k = result["cpu_seconds"] / result["records"] * 100_000
    return (
        f"{name:<14} {result['seconds']:7.2f} s  {rate:>9.0f} records/s  "
        f"client CPU {result['cpu_seconds']:6.2f} s ({per_100k:5.2f} s per 100k records)  "
        f"peak {result['peak_mb']:5.0f} MB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--baseline", default="5be0ee1", metavar="REV", help="the git revision to compare with")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each, alternated; the best counts")
    parser.add_argument("--child", nargs=3, metavar=("FILES", "STORE_URL", "ENDPOINT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(Path(args.child[0]), args.child[1], args.child[2])))
        return 0

    sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "medqa_assets_tests")]
    from retraining import make_files
    from s3_server import run_seaweedfs

    with tempfile.TemporaryDirectory() as work:
        files_dir, baseline = Path(work, "files"), Path(work, "baseline")
        files_dir.mkdir()
        files = make_files(args.records, args.files)
        for name, data in files:
            (files_dir / name).write_bytes(data)
        total = sum(len(data) for _, data in files)
        del files
        print(f"{args.records} records in {args.files} files, {total / 1e6:.0f} MB, {os.cpu_count()} cores")
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(baseline), args.baseline], check=True
        )
        try:
            with run_seaweedfs(Path(work, "s3")) as server:
                results: dict[str, list[dict]] = {"old": [], "new": []}
                for round_ in range(args.rounds):
                    for name, tree in (("old", baseline), ("new", ROOT)):
                        result = run_once(tree, files_dir, server, f"bench-{name}-{round_}")
                        results[name].append(result)
                        print(describe(f"{name} (run {round_ + 1})", result), flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)], check=False)
    best = {name: min(runs, key=lambda r: r["seconds"]) for name, runs in results.items()}
    cpu = {name: min(r["cpu_seconds"] / r["records"] * 100_000 for r in runs) for name, runs in results.items()}
    print(describe(f"old {args.baseline} best", best["old"]))
    print(describe("new best", best["new"]))
    speedup = best["old"]["seconds"] / best["new"]["seconds"]
    print(
        f"new/old: {speedup:.2f}x records/s (target >= 1.4x); client CPU per record "
        f"{cpu['new'] / cpu['old']:.2f}x the baseline's (target <= 0.5x); each the best of its runs"
    )
    summary = {
        name: {
            "seconds": round(best[name]["seconds"], 2),
            "records_per_s": round(best[name]["records"] / best[name]["seconds"]),
            "cpu_s_per_100k": round(cpu[name], 2),
            "peak_mb": round(max(r["peak_mb"] for r in results[name])),
        }
        for name in ("old", "new")
    } | {"speedup": round(speedup, 2), "cpu_ratio": round(cpu["new"] / cpu["old"], 2)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
