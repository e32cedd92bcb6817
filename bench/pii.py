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
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medqa_assets.privacy.recognizers import KINDS  # noqa: E402
from medqa_assets.privacy.scrub import candidate_mask, find_spans, scrub_array  # noqa: E402

DATA = ROOT / "medqa_assets_tests" / "data" / "pii"


@dataclass
class Scores:
    found: Counter = field(default_factory=Counter)
    labelled: Counter = field(default_factory=Counter)
    right: Counter = field(default_factory=Counter)
    predicted: Counter = field(default_factory=Counter)
    same_kind: int = 0
    misses: list[str] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)

    def recall(self, kind: str | None = None) -> float:
        found = sum(self.found.values()) if kind is None else self.found[kind]
        total = sum(self.labelled.values()) if kind is None else self.labelled[kind]
        return found / total if total else 1.0

    def precision(self, kind: str | None = None) -> float:
        right = sum(self.right.values()) if kind is None else self.right[kind]
        total = sum(self.predicted.values()) if kind is None else self.predicted[kind]
        return right / total if total else 1.0


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines() if line.strip()]


def label_spans(record: dict) -> list[tuple[int, int, str]]:
    """Character spans of the labelled values (a value listed twice is its 1st and 2nd occurrence)."""
    spans, seen = [], Counter()
    for span in record["spans"]:
        value, text, start = span["value"], record["text"], -1
        for _ in range(seen[value] + 1):
            start = text.find(value, start + 1)
        seen[value] += 1
        spans.append((start, start + len(value), span["kind"]))
    return spans


def score(records: list[dict]) -> Scores:
    scores = Scores()
    for record in records:
        text = record["text"]
        predicted = find_spans(text)
        covered = bytearray(len(text))
        for start, end, _ in predicted:
            covered[start:end] = b"\x01" * (end - start)
        labels = label_spans(record)
        for start, end, kind in labels:
            scores.labelled[kind] += 1
            if all(covered[i] or text[i].isspace() for i in range(start, end)):
                scores.found[kind] += 1
                if any(p[2] == kind and p[0] < end and start < p[1] for p in predicted):
                    scores.same_kind += 1
            else:
                scores.misses.append(f"{record['id']} {kind}: {text[start:end]!r}  in  {text[:160]!r}")
        for start, end, kind in predicted:
            scores.predicted[kind] += 1
            if any(s < end and start < e for s, e, _ in labels):
                scores.right[kind] += 1
            else:
                scores.false_alarms.append(f"{record['id']} {kind}: {text[start:end]!r}  in  {text[:160]!r}")
    return scores


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
    import pyarrow as pa
    import pyarrow.compute as pc

    import pandas as pd

    from medqa_assets.medquad.sources import bundled_dir

    frame = pd.read_parquet(bundled_dir() / "medquad.parquet", columns=["question", "answer"])
    for column in ("question", "answer"):
        values = pa.array(frame[column].dropna().drop_duplicates().tolist(), type=pa.large_string())
        start = time.perf_counter()
        scrubbed, counts = scrub_array(values)
        seconds = time.perf_counter() - start
        changed = pc.sum(pc.not_equal(values, scrubbed)).as_py() or 0
        candidates = pc.sum(candidate_mask(values)).as_py() or 0
        kinds = ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "none"
        print(
            f"MedQuAD {column}s: {changed}/{len(values)} changed ({changed / len(values):.3%}); "
            f"{candidates} candidates ({candidates / len(values):.1%}); {len(values) / seconds:,.0f} texts/s; redactions: {kinds}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=["labelled", "holdout", "both"], default="both")
    parser.add_argument("--show-misses", action="store_true")
    parser.add_argument("--skip-medquad", action="store_true")
    args = parser.parse_args()
    for name in ["labelled", "holdout"] if args.set == "both" else [args.set]:
        scores = score(load(name))
        report(name, scores)
        if args.show_misses:
            print("misses:", *scores.misses, sep="\n  ")
            print("false alarms:", *scores.false_alarms, sep="\n  ")
    if not args.skip_medquad:
        medquad_changes()


if __name__ == "__main__":
    main()
