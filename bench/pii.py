"""Personal-data scrubber: precision and recall per kind on the hand-labelled sets, the share of
MedQuAD questions and answers it changes, and its speed.

    python bench/pii.py [--set labelled|holdout|both] [--show-misses]

A labelled value counts as caught when every one of its characters (but white space) falls in a
redaction; a redaction counts as right when it overlaps a labelled value (of any kind: the kind
shown in its placeholder is reported separately). Targets (issue: privacy): recall >= 0.97
overall and >= 0.9 per kind, precision >= 0.95 per kind, MedQuAD changed <= 0.05%.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402

from medqa_assets.privacy.evaluation import Scores, changed_texts, load_labelled, score  # noqa: E402
from medqa_assets.privacy.recognizers import KINDS  # noqa: E402
from medqa_assets.privacy.scrub import candidate_mask, forget_clean  # noqa: E402

DATA = ROOT / "medqa_assets_tests" / "data" / "pii"


def report(name: str, scores: Scores) -> None:
    print(f"\n{name}: {sum(scores.labelled.values())} labelled values")
    print(f"{'kind':<10} {'recall':>8} {'precision':>10} {'caught':>8} {'redactions':>11}")
    for kind in KINDS:
        print(
            f"{kind:<10} {scores.recall(kind):>8.3f} {scores.precision(kind):>10.3f} "
            f"{scores.found[kind]:>4}/{scores.labelled[kind]:<3} {scores.right[kind]:>5}/{scores.predicted[kind]:<5}"
        )
    print(f"{'overall':<10} {scores.recall():>8.3f} {scores.precision():>10.3f}")
    print(f"caught with the right kind: {scores.same_kind}/{sum(scores.found.values())}")


def medquad_changes() -> None:
    import pandas as pd

    from medqa_assets.medquad.sources import bundled_dir

    frame = pd.read_parquet(bundled_dir() / "medquad.parquet", columns=["question", "answer"])
    for column in ("question", "answer"):
        texts = frame[column].dropna().drop_duplicates().tolist()
        forget_clean()
        start = time.perf_counter()
        changed, counts = changed_texts(texts)
        seconds = time.perf_counter() - start
        candidates = sum(candidate_mask(pa.array(texts, type=pa.large_string())).to_pylist())
        kinds = ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "none"
        print(
            f"MedQuAD {column}s: {changed}/{len(texts)} changed ({changed / len(texts):.3%}); "
            f"{candidates} trigger a recognizer ({candidates / len(texts):.1%}); "
            f"{len(texts) / seconds:,.0f} distinct texts/s scrubbed cold; redactions: {kinds}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=["labelled", "holdout", "both"], default="both")
    parser.add_argument("--show-misses", action="store_true")
    parser.add_argument("--skip-medquad", action="store_true")
    args = parser.parse_args()
    for name in ["labelled", "holdout"] if args.set == "both" else [args.set]:
        scores = score(load_labelled(DATA / f"{name}.jsonl"))
        report(name, scores)
        if args.show_misses:
            print("misses:", *scores.misses, sep="\n  ")
            print("false alarms:", *scores.false_alarms, sep="\n  ")
    if not args.skip_medquad:
        medquad_changes()


if __name__ == "__main__":
    main()
