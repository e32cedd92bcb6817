"""Calibration of the online evaluation: what each metric gives answers of known quality.

    python bench/evaluation.py [--set set1] [--sets 5]

Splits the bundled MedQuAD as the offline pipeline does, takes one production set's rows as the
traffic, and scores several answerers against the references, each next to the random baseline
(a training answer of the same question type) with bootstrap 95% intervals of the lift:

- the reference model behind `medqa serve` (nearest training question);
- random training answers of the same type (another draw than the baseline's): no lift expected;
- the first sentence of the reference (correct but short);
- the reference itself; the reference with three negations inserted; with every number x10
  (what lexical metrics cannot see).
Prints a table and the scoring throughput.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "medqa_assets" / "medquad" / "bundled" / "medquad.parquet"


def negate(text: str, count: int = 3) -> str:
    """Insert "not" after the first ``count`` copulas/modals: the meaning flips, the words barely change."""
    pattern = re.compile(r"\b(is|are|can|may|will|does|do)\b")
    return pattern.sub(lambda m: f"{m.group(1)} not", text, count=count)


def times_ten(text: str) -> str:
    return re.sub(r"\d+(?:\.\d+)?", lambda m: f"{float(m.group(0)) * 10:g}", text)


def first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="set1", help="which production set is the traffic")
    parser.add_argument("--sets", type=int, default=5, help="production sets the evaluation split is cut into")
    args = parser.parse_args()

    from medqa_assets.evaluation.online import answer_quality
    from medqa_assets.medquad.clean import clean_medquad
    from medqa_assets.serving.baseline import NearestQuestionBaseline
    from medqa_assets.splitting.transforms import cut_production_sets, split_dataset

    splits = split_dataset(clean_medquad(pd.read_parquet(BUNDLED).astype("string")).frame).splits
    training = splits["training"]
    traffic = cut_production_sets(splits["evaluation"], args.sets)[args.set]
    model = NearestQuestionBaseline().fit(training)
    pools = {t: g.tolist() for t, g in training.groupby("question_type")["answer"]}
    draw = random.Random(2026)
    references = traffic["answer"].tolist()
    answerers = {
        "reference model (medqa serve)": [model.answer(q) for q in traffic["question"]],
        "random answer of the same type": [draw.choice(pools[t]) for t in traffic["question_type"]],
        "first sentence of the reference": [first_sentence(r) for r in references],
        "the reference": references,
        "the reference, 3 negations": [negate(r) for r in references],
        "the reference, numbers x10": [times_ten(r) for r in references],
    }
    pool = training[["question_type", "answer"]]
    print(f"{len(traffic)} questions of {args.set}; baseline: random training answer of the same type")
    header = f"{'answers':<34}" + "".join(f"{m:>33}" for m in ("rougeL_f1 (lift [95% CI])", "token_f1", "chrf"))
    print(header)
    seconds = 0.0
    for name, answers in answerers.items():
        records = traffic[["row_id", "question_type"]].assign(answer=answers, reference=references)
        start = time.perf_counter()
        quality = answer_quality(records, pool)
        seconds += time.perf_counter() - start
        cells = []
        for metric in ("rougeL_f1", "token_f1", "chrf"):
            entry = quality["metrics"][metric]
            low, high = entry["lift_ci95"]
            cells.append(f"{entry['mean']:.3f} ({entry['lift']:+.3f} [{low:+.3f},{high:+.3f}])")
        print(f"{name:<34}" + "".join(f"{c:>33}" for c in cells))
    from medqa_assets.evaluation.online import BASELINE_DRAWS

    pairs = (1 + BASELINE_DRAWS) * len(traffic) * len(answerers)
    print(f"scored {pairs} pairs (answers and baseline) in {seconds:.1f} s: {pairs / seconds:.0f} pairs/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
