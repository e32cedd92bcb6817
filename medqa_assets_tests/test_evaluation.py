"""Online evaluation and contamination of retraining versions, from replayed traffic to metadata.

The splits are the bundled MedQuAD split as the offline pipeline cuts it; traffic is replayed with
``medqa simulate``'s engine against the real reference endpoint, or written as a serving app's
log with known answers (random training answers of the same type; the references themselves).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from medqa_assets.cli import main
from medqa_assets.evaluation.metrics import rouge_l_f1, rouge_tokens, squad_tokens, token_f1
from medqa_assets.medquad.clean import clean_medquad
from medqa_assets.retraining.tick import tick_and_run
from medqa_assets.serving.baseline import NearestQuestionBaseline
from medqa_assets.serving.endpoint import create_app, serve_in_background
from medqa_assets.serving.simulator import run_simulation
from medqa_assets.splitting.transforms import cut_production_sets, split_dataset
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore

BUNDLED = Path(__file__).resolve().parents[1] / "medqa_assets" / "medquad" / "bundled" / "medquad.parquet"
METRICS = ("rougeL_f1", "token_f1", "chrf")


@pytest.fixture(scope="module")
def offline() -> dict[str, pd.DataFrame]:
    splits = split_dataset(clean_medquad(pd.read_parquet(BUNDLED).astype("string")).frame).splits
    return {**splits, **cut_production_sets(splits["evaluation"], 10)}  # ~330 questions a set


@pytest.fixture
def store(local_retraining_store: ObjectStore, offline: dict[str, pd.DataFrame]) -> ObjectStore:
    for name, frame in offline.items():
        key = layout.SPLIT_KEYS[name] if name in layout.SPLIT_KEYS else layout.production_set_key(name)
        local_retraining_store.write_jsonl(key, frame)
    return local_retraining_store


def build_next_version(store: ObjectStore) -> dict:
    with dg.instance_for_test() as instance:
        outcomes = dict(tick_and_run(instance))
    assert list(outcomes.values()) == [True], outcomes
    return store.read_json(layout.retraining_metadata_key(max(outcomes, key=layout.version_number)))


def write_log(store: ObjectStore, rows: pd.DataFrame, answers: list[str], set_name: str, copies: int = 1) -> None:
    """A serving app's JSON Lines log of ``rows`` answered with ``answers`` (``copies`` times each)."""
    records = [
        {"question": q, "model_response": a, "production_set": set_name, "row_id": r, "status": 200}
        for q, a, r in zip(rows["question"], answers, rows["row_id"], strict=True)
    ] * copies
    data = "".join(json.dumps(record) + "\n" for record in records).encode()
    store.write_bytes(layout.new_raw_log_key(f"{set_name}-app.jsonl"), data)


def lifts(quality: dict) -> dict[str, list[float]]:
    return {name: quality["metrics"][name]["lift_ci95"] for name in METRICS}


def fingerprint(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


ROUGE_SCORER = """
import json, sys
from rouge_score import rouge_scorer
pairs = json.load(sys.stdin)
scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
print(json.dumps([scorer.score(reference, answer)["rougeL"].fmeasure for answer, reference in pairs]))
"""


def test_rouge_l_is_rouge_scores_own_figure(offline: dict[str, pd.DataFrame]) -> None:
    """The fast ROUGE-L (rapidfuzz LCS on rouge-score's stemmed tokens) equals rouge-score's.

    rouge-score runs in a child process: its rouge_scorer imports absl, whose log handler closes
    the stream it was created with when Dagster reconfigures logging, and under pytest that stream
    is pytest's capture.
    """
    answers = offline["training"]["answer"].head(40).tolist()
    references = offline["evaluation"]["answer"].head(40).tolist()
    pairs = list(zip(answers, references, strict=True))
    completed = subprocess.run(
        [sys.executable, "-c", ROUGE_SCORER], input=json.dumps(pairs), capture_output=True, text=True, check=True
    )
    expected = json.loads(completed.stdout)
    ours = [rouge_l_f1(rouge_tokens(answer), rouge_tokens(reference)) for answer, reference in pairs]
    assert ours == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [("The cat sat.", "a cat sat down", 2 * (1.0 * 2 / 3) / (1.0 + 2 / 3)), ("yes", "no", 0.0), ("A b", "b a", 1.0)],
)
def test_token_f1_is_squads(prediction: str, reference: str, expected: float) -> None:
    assert token_f1(squad_tokens(prediction), squad_tokens(reference)) == pytest.approx(expected)


def test_reference_endpoint_replay_is_scored_and_counted_as_contamination(
    store: ObjectStore, offline: dict[str, pd.DataFrame], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model = NearestQuestionBaseline().fit(offline["training"])
    with serve_in_background(create_app(model)) as url:
        summary = asyncio.run(
            run_simulation("set1", url, rate=2000.0, arrivals="uniform", progress=False, batch_size=1000)
        )
    set1 = offline["set1"]
    assert summary.ok == len(set1)
    metadata = build_next_version(store)
    quality = metadata["answer_quality"]
    assert quality["pairs_scored"] == quality["n_with_reference"] == len(set1)
    assert quality["baseline"] and set(quality["metrics"]) == set(METRICS)
    # no evaluation answer is in training any more: the model cannot return a reference verbatim
    assert quality["exact_reference_match_rate"] == 0.0
    print("reference model lift over the random baseline:", lifts(quality))

    contamination = metadata["contamination"]["by_split"]
    assert contamination["evaluation"]["rows_with_split_question"] == metadata["records_out"]
    assert contamination["evaluation"]["rows_with_split_row_id"] == metadata["records_out"]
    assert contamination["training"]["rows_with_split_question"] == 0
    assert contamination["validation"]["rows_with_split_question"] == 0

    touched = {fingerprint(q) for q in set1["question"]}
    expected = offline["evaluation"][~offline["evaluation"]["question"].map(fingerprint).isin(touched)]
    untouched = metadata["contamination"]["untouched_evaluation"]
    assert untouched["rows"] == len(expected) < len(offline["evaluation"])
    stored = store.read_jsonl(untouched["key"])
    assert set(stored["row_id"]) == set(expected["row_id"])

    output = tmp_path / "clean-test.json"
    assert main(["untouched-evaluation", "--output", str(output)]) == 0
    assert f"{len(expected)} of {len(offline['evaluation'])} evaluation rows" in capsys.readouterr().out
    assert set(pd.read_json(output, lines=True)["row_id"]) == set(expected["row_id"])


def test_random_answers_show_no_lift_and_the_references_do(store: ObjectStore, offline) -> None:
    training = offline["training"]
    pools = {t: g.tolist() for t, g in training.groupby("question_type")["answer"]}
    draw = random.Random(99)
    set2, set3 = offline["set2"], offline["set3"]
    write_log(store, set2, [draw.choice(pools[t]) for t in set2["question_type"]], "set2")
    random_version = build_next_version(store)
    assert all(low <= 0 <= high for low, high in lifts(random_version["answer_quality"]).values())

    write_log(store, set3, set3["answer"].tolist(), "set3", copies=2)  # every record twice
    oracle = build_next_version(store)
    quality = oracle["answer_quality"]
    assert oracle["records_out"] == len(set3) and oracle["duplicates_removed"] == len(set3)
    assert quality["pairs_scored"] == 2 * len(set3)  # duplicates are scored too
    assert quality["exact_reference_match_rate"] == 1.0
    assert all(low > 0 for low, _ in lifts(quality).values())
    # both versions' questions are now touched
    touched = {fingerprint(q) for q in pd.concat([set2["question"], set3["question"]])}
    evaluation = offline["evaluation"]
    expected = int((~evaluation["question"].map(fingerprint).isin(touched)).sum())
    assert oracle["contamination"]["untouched_evaluation"]["rows"] == expected


def test_untouched_evaluation_without_splits_is_one_clear_line(
    local_retraining_store: ObjectStore, capsys: pytest.CaptureFixture
) -> None:
    assert main(["untouched-evaluation"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: the evaluation split is missing") and error.count("\n") == 1
