"""Sensor benchmark: the time of one raw_logs_sensor tick with 100 pending files, and with 100
pending beside 100,000 archived ones (the archive must not make a tick slower).

    python bench/sensor.py [--pending 100] [--archived 100000] [--repeat 5]

Target: under 1 s for both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fill_archive(root: Path, count: int) -> None:
    """Write ``count`` small archived log files straight to disk (setup, not measured)."""
    from medqa_assets.storage import layout

    per_version = 1000
    for version in range(count // per_version):
        directory = root / layout.archive_prefix(f"v{version + 1}")
        directory.mkdir(parents=True, exist_ok=True)
        for index in range(per_version):
            (directory / f"{index:05d}-log.jsonl").write_bytes(b'{"question": "q", "answer": "a"}\n')


def tick_seconds(store_dir: str, pending: int, repeat: int) -> list[float]:
    import dagster as dg

    from medqa_assets.resources import ObjectStoreResource
    from medqa_assets.retraining.assets import raw_logs_sensor
    from medqa_assets.storage import layout
    from medqa_assets.storage.object_store import ObjectStore

    store = ObjectStore(store_dir)
    times = []
    with dg.instance_for_test() as instance:
        for _ in range(repeat):
            for index in range(pending):
                store.write_bytes(layout.new_raw_log_key(f"log{index}.jsonl"), b'{"question": "q", "answer": "a"}\n')
            context = dg.build_sensor_context(
                instance=instance, resources={"store": ObjectStoreResource(store_url=store_dir)}
            )
            start = time.perf_counter()
            result = raw_logs_sensor(context)
            times.append(time.perf_counter() - start)
            assert len(result.run_requests) == 1, result
            for info in store.list(layout.RAW_LOGS_PREFIX):  # reset for the next repetition
                store.delete(info.key)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pending", type=int, default=100)
    parser.add_argument("--archived", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ["MEDQA_SENSOR_SETTLE_SECONDS"] = "0"
    with tempfile.TemporaryDirectory() as store_dir:
        alone = tick_seconds(store_dir, args.pending, args.repeat)
    with tempfile.TemporaryDirectory() as store_dir:
        start = time.perf_counter()
        fill_archive(Path(store_dir), args.archived)
        print(f"(wrote {args.archived} archived files in {time.perf_counter() - start:.1f} s)")
        beside = tick_seconds(store_dir, args.pending, args.repeat)
    print(
        f"tick, {args.pending} pending:                      median {statistics.median(alone):.3f} s, "
        f"max {max(alone):.3f} s"
    )
    print(
        f"tick, {args.pending} pending + {args.archived} archived:   median {statistics.median(beside):.3f} s, "
        f"max {max(beside):.3f} s   ratio {statistics.median(beside) / statistics.median(alone):.2f}x"
    )
    print("target: < 1 s for both")
    return 0


if __name__ == "__main__":
    sys.exit(main())
