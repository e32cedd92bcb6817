"""Concept-level leakage: a labelled set of row pairs, and the splits of the whole of MedQuAD.

``data/leakage_pairs.jsonl`` was written from the definition of a leak alone (by hand, not by
this code): pairs that must land in one split (the same disease up to case, possessive, plural,
brackets, punctuation or word order; a focus that is the other's synonym; one UMLS concept; one
source document; one answer; one question) and pairs that must stay free (different diseases,
"Type 1" vs "Type 2", a document id repeated by another source).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import datasets
import pandas as pd
import pytest

from medqa_assets.medquad.clean import clean_medquad
from medqa_assets.splitting.leakage import GroupingRule, fold_name, leakage_groups
from medqa_assets.splitting.transforms import split_dataset, split_ratio_deviation, split_ratio_tolerance
from medqa_assets.storage.object_store import frame_to_jsonl

DATA = Path(__file__).parent / "data"
BUNDLED = Path(__file__).resolve().parents[1] / "medqa_assets" / "medquad" / "bundled" / "medquad.parquet"
PAIRS = [json.loads(line) for line in (DATA / "leakage_pairs.jsonl").read_text().splitlines() if line.strip()]


def pair_frame(pairs: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([row for pair in pairs for row in (pair["a"], pair["b"])]).astype("string")


@pytest.mark.parametrize("pair", PAIRS, ids=[f"{i}-{p['reason']}" for i, p in enumerate(PAIRS)])
def test_a_labelled_pair_is_linked_exactly_when_it_leaks(pair: dict) -> None:
    labels = leakage_groups(pair_frame([pair])).labels
    assert (labels.nunique() == 1) == pair["linked"], (pair["reason"], pair["a"]["question_focus"])


def test_all_labelled_pairs_together_keep_their_labels() -> None:
    """Rows of other pairs do not bridge unrelated rows (no pair shares anything with another)."""
    labels = leakage_groups(pair_frame(PAIRS)).labels.tolist()
    for index, pair in enumerate(PAIRS):
        assert (labels[2 * index] == labels[2 * index + 1]) == pair["linked"], pair["reason"]
    assert len(set(labels)) == sum(1 if p["linked"] else 2 for p in PAIRS)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("Alzheimer disease", "Alzheimer's Disease"),
        ("Crohn disease", "Crohn's Disease"),
        ("Diabetes Type 1", "type 1 diabetes"),
        ("Peripheral Arterial Disease (P.A.D.)", "peripheral arterial disease"),
        ("Kidney Stones", "kidney stone"),
    ],
)
def test_issue_examples_fold_to_one_name(left: str, right: str) -> None:
    assert fold_name(left) == fold_name(right)


@pytest.mark.parametrize(("left", "right"), [("Type 1 diabetes", "Type 2 diabetes"), ("Hepatitis A", "Hepatitis B")])
def test_distinguishing_letters_and_numbers_survive_folding(left: str, right: str) -> None:
    assert fold_name(left) != fold_name(right)


def test_boilerplate_answers_are_hubs_and_their_groups_go_to_training() -> None:
    boilerplate = "These resources address the diagnosis or management of this condition."
    rows = [
        {"question_focus": f"Disease {i}", "question": f"How to diagnose Disease {i} ?", "answer": boilerplate}
        for i in range(5)
    ] + [{"question_focus": "Disease 0", "question": "What is Disease 0 ?", "answer": "A rare disorder."}]
    frame = pd.DataFrame(rows).assign(document_source="GARD", document_id=None, question_type="information")
    groups = leakage_groups(frame.astype("string"), GroupingRule(answer_hub_foci=3))
    assert groups.labels.nunique() == 5  # the shared answer does not link; Disease 0's two rows do
    assert groups.to_training.all()  # every group holding the hub answer goes to training
    assert set(groups.hubs["kind"]) == {"answer"} and groups.hubs["foci"].tolist() == [5]


@pytest.fixture(scope="module")
def medquad_split() -> tuple[pd.DataFrame, object]:
    clean = clean_medquad(pd.read_parquet(BUNDLED).astype("string")).frame
    return clean, split_dataset(clean)


def test_medquad_held_out_rows_share_nothing_blocking_with_training(medquad_split) -> None:
    clean, result = medquad_split
    sharing = result.sharing()
    assert sharing["blocking"] == {"question": 0, "focus": 0, "document": 0, "answer": 0}
    assert sharing["residual"]["concept"]["rows"] <= 200
    summary = result.groups.summary
    assert summary["largest_held_out_group_rows"] <= 0.01 * len(clean)
    counts = {name: len(frame) for name, frame in result.splits.items()}
    assert sum(counts.values()) == len(clean)
    tolerance = split_ratio_tolerance(result)
    assert all(abs(d) <= tolerance for d in split_ratio_deviation(counts).values())
    # the reference model can no longer answer an evaluation question with its exact reference
    training_answers = set(result.splits["training"]["answer"].str.lower())
    assert not result.splits["evaluation"]["answer"].str.lower().isin(training_answers).any()


def test_medquad_splits_do_not_depend_on_row_order(medquad_split, tmp_path: Path) -> None:
    clean, result = medquad_split
    raw = pd.read_parquet(BUNDLED).astype("string")
    shuffled = split_dataset(clean_medquad(raw.sample(frac=1.0, random_state=11)).frame)
    digest = {n: hashlib.sha256(frame_to_jsonl(f)).hexdigest() for n, f in result.splits.items()}
    assert {n: hashlib.sha256(frame_to_jsonl(f)).hexdigest() for n, f in shuffled.splits.items()} == digest
    for name, frame in result.splits.items():
        path = tmp_path / f"{name}.json"
        path.write_bytes(frame_to_jsonl(frame))
        loaded = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))
        assert loaded.num_rows == len(frame)
        assert {"question", "answer", "document_url", "umls_cui"} <= set(loaded.column_names)
