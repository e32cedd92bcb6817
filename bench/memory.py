"""Peak memory of one retraining version built from one large JSON Lines log file.

    python bench/memory.py --megabytes 1024

Writes a log file of the given size (distinct records of about 200 bytes) into a temporary
local store, then decides, snapshots and builds the version in a child process and prints the
child's peak resident memory beside the file size. The target: under 1.5 GB for a 1 GB file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import os, resource, sys, time
from medqa_assets.retraining.build import build_version
from medqa_assets.retraining.decide import plan_tick
from medqa_assets.retraining.snapshot import prepare_version
from medqa_assets.storage.object_store import ObjectStore
store = ObjectStore(sys.argv[1])
start = time.perf_counter()
decision = plan_tick(store, settle_seconds=0).decision
manifest = prepare_version(store, decision.version, decision, settle_seconds=0, log=lambda _: None)
metadata = build_version(store, decision.version, manifest, log=lambda _: None)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(metadata["records_in"], metadata["records_out"], f"{seconds:.1f}", f"{peak:.0f}")
"""


def write_log(path: Path, megabytes: int) -> int:
    target = megabytes * 1024 * 1024
    written = records = 0
    with open(path, "wb") as handle:
        while written < target:
            block = b"".join(
                json.dumps(
                    {
                        "ts": "2026-11-01T10:00:00Z",
                        "question": f"What are the treatments for condition number {records + i}?",
                        "answer": f"Treatment {records + i} depends on the cause; see a doctor about it.",
                        "slice": "bench",
                        "latency_ms": 12,
                    }
                ).encode()
                + b"\n"
                for i in range(10_000)
            )
            handle.write(block)
            written += len(block)
            records += 10_000
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        raw = Path(root, "data/production/retraining_data_raw")
        raw.mkdir(parents=True)
        records = write_log(raw / "big.jsonl", args.megabytes)
        time.sleep(0.01)
        env_python = sys.executable
        result = subprocess.run(
            [env_python, "-c", CHILD, root],
            capture_output=True,
            text=True,
            check=True,
            env={"MEDQA_RETRAINING_WORKERS": "1", "PATH": "/usr/bin:/bin"},
        )
    records_in, records_out, seconds, peak = result.stdout.split()
    print(
        f"file {args.megabytes} MB, {records:,} records: records_in {int(records_in):,}, "
        f"records_out {int(records_out):,}, {seconds} s, peak {peak} MB "
        f"({float(peak) / args.megabytes:.2f} x the file)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
