"""Populate an object store with the data the dashboard reads (for its tests and its benchmark).

Everything is written through :class:`ObjectStore` at the keys of :mod:`medqa_assets.storage.layout`,
in the shapes the pipeline writes (see the dashboard brief): split JSON Lines and metadata,
production sets, retraining versions with metadata, quarantine and the version tracker.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # the tests import the dashboard package from the repository root
    sys.path.insert(0, str(REPO_ROOT))

from medqa_assets.storage import layout  # noqa: E402
from medqa_assets.storage.object_store import ObjectStore, frame_to_jsonl, jsonl_to_frame  # noqa: E402

QUESTION_TYPES = ["information", "symptoms", "treatment", "causes", "inheritance", "frequency", "exams and tests"]
TEMPLATES = {
    "information": "What is (are) {focus} ?",
    "symptoms": "What are the symptoms of {focus} ?",
    "treatment": "What are the treatments for {focus} ?",
    "causes": "What causes {focus} ?",
    "inheritance": "Is {focus} inherited ?",
    "frequency": "How many people are affected by {focus} ?",
    "exams and tests": "How to diagnose {focus} ?",
}
WORDS = (  # noqa: SIM905 - a word list reads better as text
    "blood cells bone marrow disease condition genetic mutation gene protein treatment therapy symptoms pain "
    "fever fatigue infection inflammation chronic acute syndrome disorder diagnosis patients risk doctor tissue "
    "cancer tumor heart lung kidney liver brain nerve muscle skin immune system hormone"
).split()
START = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
CORRUPT_JSON = b'{"source": "bundled", "initial_records": 47441, '  # truncated: not valid JSON


# A field name a log can carry: rendered as Markdown it would make every viewer's browser fetch a URL.
MARKDOWN_FIELD_NAME = "![x](http://127.0.0.1:9/pixel.png)"


def split_frame(n: int, seed: int, name: str) -> pd.DataFrame:
    """``n`` synthetic MedQuAD-like rows (split columns), distinct focuses per split (no leakage)."""
    rng = np.random.default_rng(seed)
    types = rng.choice(QUESTION_TYPES, size=n)
    rows = []
    for index, question_type in enumerate(types):
        focus = f"{name.title()} Condition {index // 2}"
        answer_words = rng.choice(WORDS, size=int(rng.integers(20, 160)))
        rows.append(
            {
                "row_id": hashlib.blake2b(f"{name}-{index}".encode(), digest_size=8).hexdigest(),
                "question_id": f"{index:07d}-{index % 3}",
                "document_id": f"{name[:3]}{index // 2:05d}",  # one document per focus, none shared
                "document_source": "GHR" if index % 2 else "CancerGov",
                "question_type": str(question_type),
                "question_focus": focus,
                "synonyms": None,
                "question": TEMPLATES[str(question_type)].format(focus=focus),
                "answer": f"{focus} is " + " ".join(answer_words) + ".",
            }
        )
    return pd.DataFrame(rows)


def populate_offline(store: ObjectStore, sizes: tuple[int, int, int] = (120, 40, 40), sets: int = 3) -> dict:
    """Splits, their metadata and ``sets`` production sets cut from the evaluation split."""
    named = zip(layout.SPLIT_NAMES, sizes, strict=True)
    frames = {name: split_frame(n, seed, name) for seed, (name, n) in enumerate(named)}
    return write_offline(store, frames, sets=sets)


def write_offline(store: ObjectStore, frames: dict[str, pd.DataFrame], sets: int = 3) -> dict:
    files = {}
    for name, frame in frames.items():
        written = store.write_jsonl(layout.SPLIT_KEYS[name], frame)
        digest = hashlib.sha256(written).hexdigest()
        files[name] = {"key": layout.SPLIT_KEYS[name], "rows": len(frame), "sha256": digest}
    evaluation = frames["evaluation"]
    for number in range(1, sets + 1):
        part = evaluation.iloc[number - 1 :: sets]
        store.write_jsonl(layout.production_set_key(layout.production_set_name(number)), part)
    final = sum(len(f) for f in frames.values())
    dropped = {
        "missing_question": 0,
        "missing_answer": 31034,
        "question_type_not_allowed": 0,
        "duplicate_question_answer": 48,
    }
    metadata = {
        "source": "bundled",
        "provenance": {"source": "MedQuAD original XML distribution", "rows": final + 31082, "sha256": "ab" * 32},
        "initial_records": final + sum(dropped.values()),
        "final_records": final,
        "split_counts": {name: len(frame) for name, frame in frames.items()},
        "dropped": {**dropped, "total_dropped": sum(dropped.values())},
        "ratios": {"training": 0.6, "validation": 0.2, "evaluation": 0.2},
        "ratio_deviation": {"training": 0.0, "validation": 0.0, "evaluation": 0.0},
        "leakage": split_leakage(frames),
        "files": files,
        "created": START.isoformat(),
    }
    store.write_json(layout.SPLIT_METADATA, metadata)
    return metadata


def split_leakage(frames: dict[str, pd.DataFrame]) -> dict:
    """The ``leakage`` entry of the split metadata, computed by the platform's own functions."""
    from medqa_assets.splitting.leakage import held_out_sharing, leakage_groups, leakage_metadata

    rows = pd.concat(frames.values(), ignore_index=True)
    split_of_row = np.concatenate([np.full(len(frame), name, dtype=object) for name, frame in frames.items()])
    groups = leakage_groups(rows)
    return leakage_metadata(groups, held_out_sharing(groups.keys, groups.hubs, split_of_row))


def retraining_lines(pool: pd.DataFrame, n: int, seed: int, start: datetime, hours: float = 30.0) -> bytes:
    """``n`` retraining records (JSON Lines bytes) drawn from ``pool`` (question, answer, row_id), fast."""
    rng = np.random.default_rng(seed)
    encoded_q = [orjson.dumps(q).decode() for q in pool["question"]]
    encoded_a = [orjson.dumps(a).decode() for a in pool["answer"]]
    encoded_id = [orjson.dumps(r).decode() for r in pool["row_id"]]
    picks = rng.integers(0, len(pool), size=n)
    seconds = np.sort(rng.uniform(0, hours * 3600, size=n)).astype("timedelta64[s]")
    stamps = np.datetime_as_string(np.datetime64(start.replace(tzinfo=None), "s") + seconds, unit="s")
    sets = rng.integers(1, 4, size=n)
    lines = [
        f'{{"question":{encoded_q[p]},"answer":{encoded_a[p]},"timestamp":"{t}+00:00",'
        f'"source_file":"log-{s}.jsonl","production_set":"set{s}","row_id":{encoded_id[p]},"slice":null}}\n'
        for p, t, s in zip(picks.tolist(), stamps.tolist(), sets.tolist(), strict=True)
    ]
    return "".join(lines).encode("utf-8")


_EVALUATIONS: dict[str, tuple[dict | None, dict]] = {}
EVALUATED_RECORDS = 40  # enough for every field of the real evaluation; small, because chrF is slow


def evaluation_metadata(store: ObjectStore, data: bytes) -> tuple[dict | None, dict]:
    """``answer_quality`` and ``contamination`` as the platform computes them for this version's
    records (the first EVALUATED_RECORDS, every other answer swapped for another's); cached by input."""
    from medqa_assets.evaluation.contamination import contamination_counts
    from medqa_assets.evaluation.online import answer_quality
    from medqa_assets.text import alnum_fingerprints

    stored = {name: store.read_bytes(key) for name, key in layout.SPLIT_KEYS.items() if store.exists(key)}
    digest = hashlib.sha256(data + b"".join(stored.values())).hexdigest()
    if digest not in _EVALUATIONS:
        from dashboard.data import parse_jsonl  # Arrow's reader: a 1 GB version in seconds

        splits = {name: jsonl_to_frame(content) for name, content in stored.items()}
        records = parse_jsonl(data, ["question", "answer", "row_id"])[0]
        head = records.head(EVALUATED_RECORDS).copy()
        head.loc[head.index[1::2], "answer"] = head["answer"].iloc[::-1].to_numpy()[1::2]
        references = splits["evaluation"][["row_id", "question_type", "answer"]].rename(columns={"answer": "reference"})
        scored = head[["row_id", "answer"]].merge(references, on="row_id")
        quality = answer_quality(scored, splits["training"][["question_type", "answer"]])
        contamination = contamination_counts(alnum_fingerprints(records["question"]), records["row_id"], splits)
        _EVALUATIONS[digest] = (quality, contamination)
    return _EVALUATIONS[digest]


def version_metadata(
    version: str, rows: int, data: bytes, created: datetime, *, quality: bool = True, store: ObjectStore | None = None
) -> dict:
    key = layout.retraining_data_key(version)
    quarantined = 3
    evaluated = evaluation_metadata(store, data) if store is not None else (None, None)
    return {
        "version": version,
        "created": created.isoformat(),
        "records_in": rows + quarantined + 5,
        "records_out": rows,
        "quarantined": quarantined,
        "duplicates_removed": 5,
        "rejections": {"missing_question": 2, "not_an_object": 1},
        "pii_redactions": {"email": 4, "phone": 2, "ssn": 0, "url": 7, "date": 1},
        "source_files": [
            {
                "key": f"{layout.archive_prefix(version)}log-{i}.jsonl",
                "name": f"log-{i}.jsonl",
                "size": 1000 + i,
                "sha256": hashlib.sha256(f"{version}-{i}".encode()).hexdigest(),
                "records": rows // 3,
                "status": "archived",
                "reason": None,
            }
            for i in (1, 2, 3)
        ]
        + [
            {
                "key": f"{layout.quarantine_prefix(version)}files/broken.csv",
                "name": "broken.csv",
                "size": 42,
                "sha256": "cd" * 32,
                "records": 0,
                "status": "quarantined",
                "reason": "not_json",
            }
        ],
        "output": {"key": key, "sha256": hashlib.sha256(data).hexdigest(), "rows": rows, "bytes": len(data)},
        "fields_dropped": ["latency_ms", "q_tags", MARKDOWN_FIELD_NAME],
        "answer_quality": evaluated[0] if quality else None,
        "contamination": evaluated[1],
        "timestamps": {"min": created.isoformat(), "max": (created + timedelta(hours=30)).isoformat()},
    }


def write_version(
    store: ObjectStore, number: int, pool: pd.DataFrame, rows: int, *, quality: bool = True, seed: int = 0
) -> dict:
    """Version ``vN``: data, metadata and quarantine, as retraining_etl writes them (tracker not touched)."""
    version = layout.version_name(number)
    created = START + timedelta(days=number)
    data = retraining_lines(pool, rows, seed + number, created)
    store.write_bytes(layout.retraining_data_key(version), data)
    metadata = version_metadata(version, rows, data, created, quality=quality, store=store)
    store.write_json(layout.retraining_metadata_key(version), metadata)
    quarantine = pd.DataFrame(
        [
            {
                "source_file": "log-1.jsonl",
                "index": 3,
                "reason": "missing_question",
                "record": json.dumps({"answer": "orphan answer"}),
            },
            {"source_file": "log-2.jsonl", "index": 8, "reason": "missing_question", "record": json.dumps({"ts": 1})},
            {"source_file": "log-2.jsonl", "index": 9, "reason": "not_an_object", "record": "[1, 2]"},
        ]
    )
    prefix = layout.quarantine_prefix(version)
    store.write_bytes(f"{prefix}records.jsonl", frame_to_jsonl(quarantine))
    store.write_bytes(f"{prefix}files/broken.csv", b"question,answer\nno,json\n")
    store.write_json(f"{prefix}files/broken.csv.reason.json", {"reason": "not_json", "detail": "line 1 is not JSON"})
    return metadata


def populate_retraining(store: ObjectStore, pool: pd.DataFrame, versions: int = 2, rows: int = 300) -> None:
    """``versions`` complete versions (the last without answer quality) and the tracker."""
    for number in range(1, versions + 1):
        write_version(store, number, pool, rows + 50 * number, quality=number < versions or versions == 1)
    store.write_bytes(layout.VERSION_TRACKER, f"{versions}\n".encode())


def populate_store(store: ObjectStore, versions: int = 2) -> None:
    """A small but complete store: offline data and ``versions`` retraining versions."""
    populate_offline(store)
    evaluation = store.read_jsonl(layout.SPLIT_KEYS["evaluation"], ["question", "answer", "row_id"])
    populate_retraining(store, evaluation, versions=versions)


def corrupt_metadata(store: ObjectStore) -> None:
    """Invalid JSON in the split metadata and in v1's metadata."""
    store.write_bytes(layout.SPLIT_METADATA, CORRUPT_JSON)
    store.write_bytes(layout.retraining_metadata_key("v1"), CORRUPT_JSON)
