"""Pure transforms, without Dagster or storage: cleaning, splitting, log parsing (PII: test_privacy.py)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from medqa_assets.medquad.clean import EmptyResultError, clean_medquad
from medqa_assets.medquad.xml_reader import LAVITA_COLUMNS
from medqa_assets.retraining.parsing import UnparseableFile, parse_log_bytes
from medqa_assets.retraining.transforms import transform_files
from medqa_assets.splitting.leakage import leakage_groups
from medqa_assets.splitting.transforms import (
    cross_split_leakage,
    cut_production_sets,
    production_sets_coverage,
    split_dataset,
    split_ratio_tolerance,
)


def raw_rows(rows: list[dict[str, str | None]]) -> pd.DataFrame:
    return pd.DataFrame([{c: r.get(c) for c in LAVITA_COLUMNS} for r in rows]).astype("string")


def synthetic_raw(n: int = 3000) -> pd.DataFrame:
    rows = []
    for i in range(n):
        focus = f"Condition {i // 3}"
        rows.append(
            {
                "document_source": "GHR",
                "question_id": f"{i}",
                "question_focus": focus,
                "question_type": ["information", "symptoms", "treatment"][i % 3],
                "question": f"What about {focus} number {i % 3} ?",
                "answer": f"Answer {i}",
            }
        )
    return raw_rows(rows)


def test_clean_counts_every_drop_by_reason() -> None:
    raw = raw_rows(
        [
            {"question": "  What   is X ? ", "answer": "It\tis  X.", "question_type": "information"},
            {"question": "What is X ?", "answer": "It is X.", "question_type": "information"},  # duplicate
            {"question": "   ", "answer": "a", "question_type": "information"},
            {"question": None, "answer": "a", "question_type": "information"},
            {"question": "q", "answer": None, "question_type": "information"},
            {"question": "q2", "answer": "", "question_type": "information"},
            {"question": "q3", "answer": "a3", "question_type": "treatment"},
        ]
    )
    result = clean_medquad(raw)
    assert result.dropped == {
        "missing_question": 2,
        "missing_answer": 2,
        "question_type_not_allowed": 0,
        "duplicate_question_answer": 1,
    }
    assert sorted(result.frame["question"]) == ["What is X ?", "q3"]
    assert sorted(result.frame["answer"]) == ["It is X.", "a3"]
    assert result.frame["row_id"].is_unique
    filtered = clean_medquad(raw, ["Treatment"])
    assert filtered.dropped["question_type_not_allowed"] == 2 and list(filtered.frame["question"]) == ["q3"]


def test_allow_list_matching_nothing_is_loud() -> None:
    with pytest.raises(EmptyResultError, match="question_types"):
        clean_medquad(synthetic_raw(30), ["factoid", "yesno", "list"])


def test_split_is_leakage_free_deterministic_and_near_the_ratios() -> None:
    clean = clean_medquad(synthetic_raw()).frame
    result = split_dataset(clean)
    splits = result.splits
    assert sum(len(f) for f in splits.values()) == len(clean)
    assert cross_split_leakage(splits) == {"question": 0, "focus": 0, "document": 0, "answer": 0}
    tolerance = split_ratio_tolerance(result)
    for name, ratio in {"training": 0.6, "validation": 0.2, "evaluation": 0.2}.items():
        assert abs(len(splits[name]) / len(clean) - ratio) <= tolerance
    shuffled = split_dataset(clean.sample(frac=1.0, random_state=3)).splits
    assert {n: set(f["row_id"]) for n, f in shuffled.items()} == {n: set(f["row_id"]) for n, f in splits.items()}


def test_rows_keep_their_split_when_the_dataset_grows() -> None:
    """Added rows move the row-weighted cut points a little: only groups right at a cut may move."""
    small = clean_medquad(synthetic_raw(1500)).frame
    large = clean_medquad(synthetic_raw(3000)).frame
    before = {row: name for name, frame in split_dataset(small).splits.items() for row in frame["row_id"]}
    after = {row: name for name, frame in split_dataset(large).splits.items() for row in frame["row_id"]}
    moved = sum(after[row] != name for row, name in before.items())
    assert moved / len(before) <= 0.05, moved


def test_shared_question_text_links_different_focuses() -> None:
    raw = raw_rows(
        [
            {"question": "How is it treated?", "answer": "a1", "question_focus": "A", "question_type": "treatment"},
            {"question": "how is it  treated", "answer": "a2", "question_focus": "B", "question_type": "treatment"},
            {"question": "What is B?", "answer": "a3", "question_focus": "B", "question_type": "information"},
        ]
    )
    groups = leakage_groups(clean_medquad(raw).frame)
    assert groups.labels.nunique() == 1


def test_production_sets_partition_the_evaluation_split() -> None:
    evaluation = split_dataset(clean_medquad(synthetic_raw()).frame).splits["evaluation"]
    sets = cut_production_sets(evaluation, 4)
    assert list(sets) == ["set1", "set2", "set3", "set4"]
    assert production_sets_coverage(evaluation, sets) == {"missing": 0, "in_several_sets": 0, "not_in_evaluation": 0}
    assert all(len(s) > 0 for s in sets.values())


@pytest.mark.parametrize(
    ("data", "shape", "records", "rejected"),
    [
        (b'{"question": "a"}\n{"question": "b"}\n', "json_lines", 2, 0),
        (b'[{"question": "a"}, 3]', "json_array", 1, 1),
        (b'{"question": "a", "answer": "b"}', "json_object", 1, 0),
        (b'{"question": "a"}\n{broken\n', "json_lines", 1, 1),
    ],
)
def test_log_shapes(data: bytes, shape: str, records: int, rejected: int) -> None:
    parsed = parse_log_bytes(data)
    assert (parsed.shape, len(parsed.records), len(parsed.rejected)) == (shape, records, rejected)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty_file"),
        (b"  \n", "empty_file"),
        (b"\xff\xfe{}", "invalid_utf8"),
        (b"3.5", "json_scalar"),
        (b'[{"a": 1', "truncated_json"),
        (b"a,b\n1,2", "not_json"),
    ],
)
def test_unparseable_files(data: bytes, reason: str) -> None:
    with pytest.raises(UnparseableFile) as error:
        parse_log_bytes(data)
    assert error.value.reason == reason


def test_an_array_damaged_by_two_writers_keeps_its_complete_records() -> None:
    from medqa_assets_tests.serving_apps import cut_off_array

    records = [{"timestamp": "2026-11-01T10:00:00Z", "question": f"q{i}", "model_response": f"a{i}"} for i in range(50)]
    whole = json.dumps(records, indent=2).encode()
    damaged = whole[: whole.index(b'"q49"') + 3]  # cut off inside the last record
    parsed = parse_log_bytes(damaged)
    assert [r["question"] for r in parsed.records] == [f"q{i}" for i in range(49)]
    [(index, reason, text)] = parsed.rejected
    assert reason == "damaged_json" and index == 49 and text.startswith(f"from byte {parsed.damage_offset}:")
    assert damaged[parsed.damage_offset : parsed.damage_offset + 1] == b"{"
    stand_in = parse_log_bytes(cut_off_array(records, 30, bom=True, line_ending="\r\n"))  # the stand-in's own damage
    assert [r["question"] for r in stand_in.records] == [f"q{i}" for i in range(30)]


def test_windows_files_and_python_json_are_read_as_written() -> None:
    bom_crlf = b"\xef\xbb\xbf" + b'{"question": "q1", "answer": "a1"}\r\n{"question": "q2", "answer": "a2"}\r\n'
    assert [r["question"] for r in parse_log_bytes(bom_crlf).records] == ["q1", "q2"]
    python_json = json.dumps([{"question": "q", "model_response": "a", "latency_ms": float("nan")}]).encode()
    assert b"NaN" in python_json
    assert parse_log_bytes(python_json).records[0]["question"] == "q"
    lines = b'{"question": "q", "answer": "a", "score": Infinity}\n'
    assert parse_log_bytes(lines).records[0]["answer"] == "a"


def test_non_answers_are_rejected_with_their_own_reason() -> None:
    records = [
        {"question": "q1", "answer": "Timed out waiting for model response."},
        {"question": "q2", "answer": "   "},
        {"question": "q3", "answer": "a real answer", "status": 500},
        {"question": "q4", "model_response": None, "status": "timeout"},
        {"question": "q5", "answer": "fine", "status": 200},
        {"question": "q6", "answer": "SERVICE BUSY"},
    ]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    default = transform_files([("k", data, False)])
    assert default.rejections == {"non_answer": 4}
    configured = transform_files([("k", data, False)], non_answers=("service busy",))
    assert configured.rejections == {"non_answer": 4}  # the timeout text is no longer listed, "service busy" is
    assert sorted(json.loads(line)["question"] for line in configured.lines) == ["q1", "q5"]


def test_rejected_records_are_scrubbed_before_they_are_quarantined() -> None:
    records = [
        {"question": "My SSN is 123-45-6789, mail jo@example.com", "answer": "   "},  # non_answer
        {"question": "Call me at 555-123-4567", "answer": "ok", "timestamp": "not a time"},
    ]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records) + b'{"question": "ssn 987-65-4321" broken\n'
    result = transform_files([("k", data, False)])
    stored = " ".join(entry["record"] for entry in result.rejected)
    assert len(result.rejected) == 3
    for secret in ("123-45-6789", "jo@example.com", "555-123-4567", "987-65-4321"):
        assert secret not in stored
    assert "[SSN]" in stored and "[EMAIL]" in stored and "[PHONE]" in stored


def test_a_timestamp_without_offset_is_utc_whatever_comes_before_it() -> None:
    records = [
        {"question": "q1", "answer": "a1", "timestamp": "2026-03-01T12:15:00+02:00"},
        {"question": "q2", "answer": "a2", "timestamp": "2026-03-01 10:15:00"},
        {"question": "q3", "answer": "a3", "timestamp": "2026-03-01T10:15:00-05:00"},
        {"question": "q4", "answer": "a4", "timestamp": "2026-03-01"},
        {"question": "q5", "answer": "a5", "timestamp": "2026-03-01 12:15:00 +02:00"},
        {"question": "q6", "answer": "a6", "timestamp": "2026-03-01 10:15"},
    ]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    lines = [json.loads(line) for line in transform_files([("k", data, False)]).lines]
    assert [line["timestamp"] for line in lines] == [
        "2026-03-01T10:15:00.000Z",
        "2026-03-01T10:15:00.000Z",
        "2026-03-01T15:15:00.000Z",
        "2026-03-01T00:00:00.000Z",
        "2026-03-01T10:15:00.000Z",
        "2026-03-01T10:15:00.000Z",
    ]
