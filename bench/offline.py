"""Offline pipeline benchmark: the whole Dagster graph (checks included) next to a plain-pandas
script doing only the seed's transform on the same source, in the same run, on both sources a
user meets: the bundled snapshot (the default, no setting) and the full MedQuAD XML.

    python bench/offline.py [--xml ../shared/medquad] [--repeat 3] [--compare-with REV] [--lineage]

Every measurement runs in its own process (peak memory is that process's), interleaved and
repeated; the best of the repeats counts, since other work on the machine only adds time.
``--compare-with REV`` runs the graph of git revision REV (its package exported to a temporary
directory) in the same rounds, so before and after are measured side by side. CPU seconds are
printed beside wall time: on a busy machine they move less. MLflow lineage is off unless
``--lineage``: importing MLflow costs about 2.3 s once per process, whatever the data.
Targets: the graph within 3x of the plain script on the default source and 4x on the full XML,
on 2 cores; the whole pipeline <= 10 s and <= 1.5 GB peak.
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
DEFAULT_XML = ROOT.parent / "shared" / "medquad"
BUNDLED_FILE = ROOT / "medqa_assets" / "medquad" / "bundled" / "medquad.parquet"
TARGET_RATIO = {"default": 3.0, "xml": 4.0}
TARGET_WALL_S = 10.0
TARGET_PEAK_MB = 1536

PLAIN_SCRIPT = r"""
import glob, os, sys, time, xml.etree.ElementTree as ET
import pandas as pd
start = time.perf_counter()
source = sys.argv[1]
if source.endswith(".parquet"):
    frame = pd.read_parquet(source, columns=["question", "answer", "question_type"])
else:
    rows = []
    for path in sorted(glob.glob(os.path.join(source, "**", "*.xml"), recursive=True)):
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


def run_plain(source: str) -> dict[str, float]:
    """The plain script in a fresh process; its own clock starts after its imports."""
    plain_source = str(BUNDLED_FILE) if source == "bundled" else source
    with tempfile.TemporaryDirectory() as out:
        completed = subprocess.run(
            [sys.executable, "-c", PLAIN_SCRIPT, plain_source, out], capture_output=True, text=True, check=True
        )
    seconds, peak_mb, rows = completed.stdout.split()
    return {"wall": float(seconds), "peak_mb": float(peak_mb), "rows": int(rows)}


def run_graph(source: str, lineage: bool, code_root: Path | None = None) -> dict[str, object]:
    """This file's ``--graph`` mode in a fresh process, on the package at ``code_root`` (default: this checkout)."""
    env = dict(os.environ)
    if code_root is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code_root), env.get("PYTHONPATH")]))
    command = [sys.executable, __file__, "--graph", source, *(["--lineage"] if lineage else [])]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"the graph failed on {source}:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def graph_in_this_process(source: str, lineage: bool) -> dict[str, object]:
    """Materialize every offline asset here (clock started after the imports), with step times
    from the event log of a SQLite instance like a user's ``DAGSTER_HOME``."""
    with tempfile.TemporaryDirectory() as store_dir:
        os.environ["MEDQA_STORE_URL"] = store_dir
        os.environ["MEDQA_MEDQUAD_SOURCE"] = source
        import dagster as dg

        import medqa_assets
        from medqa_assets.lineage import MlflowLineageResource
        from medqa_assets.medquad.assets import medquad_clean, medquad_raw
        from medqa_assets.resources import build_resources
        from medqa_assets.settings import Settings
        from medqa_assets.splitting.assets import build_splitting_assets

        assets = [medquad_raw, medquad_clean, *build_splitting_assets(Settings.from_env())]
        resources = {**build_resources(), "mlflow": MlflowLineageResource(enabled=lineage)}
        with dg.instance_for_test() as instance:
            start, cpu_start = time.perf_counter(), time.process_time()
            result = dg.materialize(assets, resources=resources, instance=instance)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            if not result.success:
                raise RuntimeError(f"the offline graph failed on {source}")
            steps: dict[str, dict[str, float]] = {}
            events = 0
            for entry in instance.all_logs(result.run_id):
                events += 1
                event = entry.dagster_event
                if event is None or event.step_key is None:
                    continue
                if event.event_type_value == "STEP_START":
                    steps.setdefault(event.step_key, {})["start"] = entry.timestamp
                elif event.event_type_value == "STEP_SUCCESS":
                    steps.setdefault(event.step_key, {})["end"] = entry.timestamp
    return {
        "wall": wall,
        "cpu": cpu,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "steps": {key: times["end"] - times["start"] for key, times in steps.items()},
        "events": events,
        "package": str(Path(medqa_assets.__file__).parent),
    }


def export_package(revision: str, into: Path) -> Path:
    """The ``medqa_assets`` package of git revision ``revision`` under ``into`` (run through PYTHONPATH)."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision, "medqa_assets"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda run: run["wall"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--xml", type=Path, default=DEFAULT_XML, help="the full MedQuAD XML directory")
    parser.add_argument("--repeat", type=int, default=2, help="rounds; the best of them counts")
    parser.add_argument("--compare-with", metavar="REV", help="also run the graph of this git revision")
    parser.add_argument("--lineage", action="store_true", help="with MLflow lineage (adds its import)")
    parser.add_argument("--graph", metavar="SOURCE", help=argparse.SUPPRESS)  # one measurement, JSON out
    args = parser.parse_args()
    if args.graph:
        print(json.dumps(graph_in_this_process(args.graph, args.lineage)))
        return 0

    sources = {"default": "bundled"}
    if args.xml.is_dir():
        sources["xml"] = str(args.xml.resolve())
    else:
        print(f"note: {args.xml} is not the MedQuAD XML directory (--xml); measuring the default source only")

    with tempfile.TemporaryDirectory() as scratch:
        old_root = export_package(args.compare_with, Path(scratch) / "old") if args.compare_with else None
        runs: dict[str, dict[str, list[dict]]] = {name: {"plain": [], "graph": [], "old": []} for name in sources}
        for _ in range(args.repeat):
            for name, source in sources.items():
                runs[name]["plain"].append(run_plain(source))
                runs[name]["graph"].append(run_graph(source, args.lineage))
                if old_root is not None:
                    runs[name]["old"].append(run_graph(source, args.lineage, old_root))

    lineage = "with" if args.lineage else "without"
    print(f"offline graph vs plain pandas, best of {args.repeat} ({os.cpu_count()} cores, {lineage} MLflow lineage)")
    summary: dict[str, object] = {}
    for name, source in sources.items():
        plain, graph = best(runs[name]["plain"]), best(runs[name]["graph"])
        ratio = graph["wall"] / plain["wall"]
        print(f"\n{name} source: {source}")
        print(f"  {'step':<18}{'seconds':>9}")
        for step, seconds in graph["steps"].items():
            print(f"  {step:<18}{seconds:>9.2f}")
        print(
            f"  {'graph':<18}{graph['wall']:>9.2f}  CPU {graph['cpu']:.2f} s, peak {graph['peak_mb']:.0f} MB, "
            f"{graph['events']} events"
        )
        print(f"  {'plain pandas':<18}{plain['wall']:>9.2f}  peak {plain['peak_mb']:.0f} MB, {plain['rows']} rows")
        print(f"  ratio graph / plain: {ratio:.2f}x (target <= {TARGET_RATIO[name]:.0f}x)")
        entry = {
            "plain_s": round(plain["wall"], 2),
            "wall_s": round(graph["wall"], 2),
            "cpu_s": round(graph["cpu"], 2),
            "ratio": round(ratio, 2),
            "peak_mb": round(graph["peak_mb"]),
            "target_ratio": TARGET_RATIO[name],
        }
        if runs[name]["old"]:
            old = best(runs[name]["old"])
            old_ratio = old["wall"] / plain["wall"]
            print(
                f"  {args.compare_with}: {old['wall']:.2f} s, {old_ratio:.2f}x, CPU {old['cpu']:.2f} s, "
                f"peak {old['peak_mb']:.0f} MB, {old['events']} events"
            )
            entry.update(
                old_wall_s=round(old["wall"], 2),
                old_cpu_s=round(old["cpu"], 2),
                old_ratio=round(old_ratio, 2),
                old_peak_mb=round(old["peak_mb"]),
            )
        summary[name] = entry
    print(f"\ntargets: <= 3x (default), <= 4x (xml), <= {TARGET_WALL_S:.0f} s, <= {TARGET_PEAK_MB} MB peak")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
