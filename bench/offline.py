"""Offline pipeline benchmark: the whole Dagster graph (checks included) on the full MedQuAD XML,
in one process, next to a plain-pandas script doing only the seed's transform on the same source.

    python bench/offline.py [--source ../shared/medquad]

Prints wall time, peak memory and rows/s per asset, and the ratio to the plain script.
Targets: whole pipeline <= 10 s and <= 1.5 GB peak on 2 cores, within 3x of the plain script.
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
DEFAULT_SOURCE = ROOT.parent / "shared" / "medquad"

PLAIN_SCRIPT = r"""
import glob, os, sys, time, xml.etree.ElementTree as ET
import pandas as pd
start = time.perf_counter()
rows = []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "**", "*.xml"), recursive=True)):
    root = ET.parse(path).getroot()
    for pair in root.iter("QAPair"):
        q, a = pair.find("Question"), pair.find("Answer")
        rows.append({"question": q.text if q is not None else None, "answer": a.text if a is not None else None,
                     "question_type": q.get("qtype") if q is not None else None})
frame = pd.DataFrame(rows)[["question", "answer", "question_type"]]
frame = frame.dropna(subset=["question", "answer"])
frame = frame[(frame["question"].str.strip() != "") & (frame["answer"].str.strip() != "")]
frame = frame.sample(frac=1.0, random_state=42).reset_index(drop=True)
n = len(frame)
parts = {"training": frame[: int(0.6 * n)], "validation": frame[int(0.6 * n): int(0.8 * n)],
         "evaluation": frame[int(0.8 * n):]}
out = sys.argv[2]
for name, part in parts.items():
    os.makedirs(os.path.join(out, name), exist_ok=True)
    part.to_json(os.path.join(out, name, name + ".json"), orient="records", lines=True)
import resource
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, n)
"""


def run_plain(source: Path) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as out:
        completed = subprocess.run(
            [sys.executable, "-c", PLAIN_SCRIPT, str(source), out], capture_output=True, text=True, check=True
        )
    seconds, peak_mb, rows = completed.stdout.split()
    return float(seconds), float(peak_mb), int(rows)


def run_pipeline(source: Path, lineage: bool = True) -> dict[str, object]:
    """Materialize every offline asset in this process and read step times from the event log."""
    with tempfile.TemporaryDirectory() as store_dir:
        os.environ["MEDQA_STORE_URL"] = store_dir
        os.environ["MEDQA_MEDQUAD_SOURCE"] = str(source)
        import dagster as dg

        from medqa_assets.lineage import MlflowLineageResource
        from medqa_assets.medquad.assets import medquad_clean, medquad_raw
        from medqa_assets.resources import build_resources
        from medqa_assets.settings import Settings
        from medqa_assets.splitting.assets import build_splitting_assets
        from medqa_assets.storage import layout
        from medqa_assets.storage.object_store import ObjectStore

        assets = [medquad_raw, medquad_clean, *build_splitting_assets(Settings.from_env())]
        resources = {**build_resources(), "mlflow": MlflowLineageResource(enabled=lineage)}
        with dg.instance_for_test() as instance:
            start = time.perf_counter()
            result = dg.materialize(assets, resources=resources, instance=instance)
            wall = time.perf_counter() - start
            assert result.success
            steps: dict[str, dict[str, float]] = {}
            for entry in instance.all_logs(result.run_id):
                event = entry.dagster_event
                if event is None or event.step_key is None:
                    continue
                if event.event_type_value == "STEP_START":
                    steps.setdefault(event.step_key, {})["start"] = entry.timestamp
                elif event.event_type_value == "STEP_SUCCESS":
                    steps.setdefault(event.step_key, {})["end"] = entry.timestamp
        store = ObjectStore.from_settings()
        metadata = store.read_json(layout.SPLIT_METADATA)
        rows = {
            "medquad_raw": metadata["initial_records"],
            "medquad_clean": metadata["initial_records"],
            "dataset_split": metadata["final_records"],
            "production_sets": metadata["split_counts"]["evaluation"],
        }
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_step = {key: (times["end"] - times["start"], rows.get(key, 0)) for key, times in steps.items()}
    return {"wall": wall, "peak_mb": peak_mb, "steps": per_step, "metadata": metadata}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="MedQuAD XML directory")
    parser.add_argument("--no-lineage", action="store_true", help="without MLflow lineage (to see its share)")
    args = parser.parse_args()
    if not args.source.is_dir():
        print(f"error: {args.source} is not the MedQuAD XML directory; pass --source", file=sys.stderr)
        return 2

    plain_seconds, plain_peak, plain_rows = run_plain(args.source)
    pipeline = run_pipeline(args.source, lineage=not args.no_lineage)

    lineage = "without" if args.no_lineage else "with"
    print(f"offline pipeline on {args.source} ({os.cpu_count()} cores, {lineage} MLflow lineage)")
    print(f"{'asset':<18}{'seconds':>9}{'rows':>9}{'rows/s':>11}")
    for step, (seconds, rows) in pipeline["steps"].items():
        print(f"{step:<18}{seconds:>9.2f}{rows:>9}{rows / seconds if seconds else 0:>11.0f}")
    ratio = pipeline["wall"] / plain_seconds
    print(f"{'whole pipeline':<18}{pipeline['wall']:>9.2f}  (checks included)   peak {pipeline['peak_mb']:.0f} MB")
    print(f"{'plain pandas seed':<18}{plain_seconds:>9.2f}  ({plain_rows} rows, no checks) peak {plain_peak:.0f} MB")
    print(f"ratio pipeline / plain: {ratio:.2f}x   (targets: <= 10 s, <= 1536 MB, <= 3x)")
    print(
        json.dumps(
            {
                "wall_s": round(pipeline["wall"], 2),
                "peak_mb": round(pipeline["peak_mb"]),
                "plain_s": round(plain_seconds, 2),
                "ratio": round(ratio, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
