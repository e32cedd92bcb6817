"""The online loop's exactly-once retraining versions, against a local store and real S3."""

from __future__ import annotations

import contextlib
import hashlib
import json

import dagster as dg
import datasets
import pytest

from medqa_assets.resources import build_resources
from medqa_assets.retraining import publish as publish_module
from medqa_assets.retraining.assets import raw_logs, retraining_data, versions_partitions
from medqa_assets.retraining.control import read_control_state, read_tracker
from medqa_assets.retraining.decide import plan_tick
from medqa_assets.retraining.tick import evaluate_sensor, tick_and_run
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore

GOOD_JSONL = (
    b'{"ts": "2026-11-01T10:00:00Z", "question": "What  is flu?", "slice": "a", "answer": "A virus.", '
    b'"latency_ms": 5}\n'
    b'{"ts": 1793000000, "question": "Mail me at jo@example.com", "symptoms": ["x"], "answer": "ok", '
    b'"lat_ms": 3, "q_tags": ["t"]}\n'
)
GOOD_ARRAY = json.dumps(
    [
        {"timestamp": "2026-11-01T10:00:00Z", "question": "What is flu?", "model_response": "A virus."},  # duplicate
        {
            "timestamp": "2026-11-01T11:00:00+01:00",
            "question": "Call 555-123-4567",
            "model_response": "SSN 123-45-6789",
        },
    ]
).encode()
SINGLE_OBJECT = b'{"timestamp": "2026-11-02T00:00:00Z", "question": "single", "model_response": "object"}'
BAD_RECORDS = json.dumps(
    [
        {"timestamp": "2026-11-02T00:00:00Z", "model_response": "no question"},
        {"timestamp": "2026-11-02T00:00:00Z", "question": "no answer"},
        {"timestamp": "2026-11-02T00:00:00Z", "question": 42, "model_response": "non-string question"},
        {"timestamp": "2026-11-02T00:00:00Z", "question": "huge", "model_response": "x" * 200_000},
        {"timestamp": "not a time", "question": "bad time", "model_response": "r"},
        "a string, not an object",
    ]
).encode()
BAD_FILES = {
    "empty.json": b"",
    "truncated.json": b'[{"question": "cut',
    "latin1.json": "{'question': 'caf\u00e9'}".encode("latin-1") + b"\xff",
    "scalar.json": b"42",
    "logs.csv": b"question,answer\nwhat,that\n",
}
MIXED_JSONL = b'{"question": "fine", "answer": "line"}\n{not json\n'


def write_raw(store: ObjectStore, name: str, data: bytes) -> str:
    key = layout.new_raw_log_key(name)
    store.write_bytes(key, data)
    return key


def write_all_shapes(store: ObjectStore) -> list[str]:
    files = {
        "serving a.jsonl": GOOD_JSONL,
        "../array.json": GOOD_ARRAY,
        "single.json": SINGLE_OBJECT,
        "bad records.json": BAD_RECORDS,
        "mixed.jsonl": MIXED_JSONL,
        **BAD_FILES,
    }
    return [write_raw(store, name, data) for name, data in files.items()]


@pytest.fixture
def store(retraining_store: ObjectStore) -> ObjectStore:
    return retraining_store


def tick(instance: dg.DagsterInstance) -> dict[str, bool]:
    """One `medqa tick`: version -> whether its run succeeded."""
    return dict(tick_and_run(instance))


def everything(store: ObjectStore) -> dict[str, bytes]:
    """Every object in the store with its bytes: to show that something changed nothing."""
    return {info.key: store.read_bytes(info.key) for info in store.list("")}


def snapshot(store: ObjectStore, version: str) -> dict[str, object]:
    return {
        "output": store.read_bytes(layout.retraining_data_key(version)),
        "raw": [i.key for i in store.list(layout.RAW_LOGS_PREFIX)],
        "archive": sorted(i.key.rsplit("/", 1)[-1] for i in store.list(layout.archive_prefix(version))),
        "tracker": read_tracker(store),
    }


def test_every_shape_and_bad_input_is_accounted_for(store: ObjectStore) -> None:
    keys = write_all_shapes(store)
    with dg.instance_for_test() as instance:
        assert tick(instance) == {"v1": True}

    metadata = store.read_json(layout.retraining_metadata_key("v1"))
    assert metadata["records_in"] == metadata["records_out"] + metadata["quarantined"] + metadata["duplicates_removed"]
    # records of the unreadable files count too: truncated 1, latin1 1, scalar 1, csv 2 (empty holds none)
    assert metadata["records_in"] == 2 + 2 + 1 + 6 + 2 + 5
    assert metadata["records_out"] == 5  # flu, mail, call, single, fine
    assert metadata["duplicates_removed"] == 1
    assert metadata["rejections"] == {
        "invalid_json": 1,
        "invalid_timestamp": 1,
        "missing_answer": 1,
        "missing_question": 1,
        "non_string_field": 1,
        "not_an_object": 1,
        "record_too_large": 1,
        "unreadable_file": 5,
    }
    assert metadata["pii_redactions"]["email"] == 1
    assert metadata["pii_redactions"]["phone"] == 1
    assert metadata["pii_redactions"]["ssn"] == 1
    assert {"latency_ms", "lat_ms", "q_tags", "symptoms"} <= set(metadata["fields_dropped"])
    by_reason = {f["name"].split("-", 2)[-1]: f["reason"] for f in metadata["source_files"]}
    assert by_reason["empty.json"] == "empty_file"
    assert by_reason["truncated.json"] == "truncated_json"
    assert by_reason["latin1.json"] == "invalid_utf8"
    assert by_reason["scalar.json"] == "json_scalar"
    assert by_reason["logs.csv"] == "not_json"
    assert by_reason["array.json"] is None

    rows = store.read_jsonl(layout.retraining_data_key("v1"))
    text = " ".join(rows["question"]) + " ".join(rows["answer"])
    assert "jo@example.com" not in text and "555-123-4567" not in text and "123-45-6789" not in text
    assert "What is flu?" in set(rows["question"])  # whitespace normalized
    assert set(rows.columns) >= {"question", "answer", "timestamp"}
    assert "model_response" not in rows.columns
    assert (
        metadata["output"]["sha256"] == hashlib.sha256(store.read_bytes(layout.retraining_data_key("v1"))).hexdigest()
    )

    # every raw file left raw: parseable ones archived, unparseable ones quarantined with a reason
    assert store.list(layout.RAW_LOGS_PREFIX) == []
    archived = store.list(layout.archive_prefix("v1"))
    quarantined = [i.key for i in store.list(layout.quarantine_prefix("v1") + "files/")]
    assert len(archived) + len(BAD_FILES) == len(keys)
    assert sum(k.endswith(".reason.json") for k in quarantined) == len(BAD_FILES)
    reasons = " ".join(store.read_text(k) for k in quarantined if k.endswith(".reason.json"))
    assert "question" not in reasons and "what,that" not in reasons  # a reason never quotes the content
    records = store.read_jsonl(layout.quarantine_prefix("v1") + "records.jsonl")
    assert len(records) == metadata["quarantined"] - metadata["rejections"]["unreadable_file"]
    assert store.read_text(layout.VERSION_TRACKER).strip() == "1"


def test_output_loads_with_datasets(store: ObjectStore, tmp_path) -> None:
    write_raw(store, "a.jsonl", GOOD_JSONL)
    with dg.instance_for_test() as instance:
        assert tick(instance) == {"v1": True}
    local = tmp_path / "retraining_data.json"
    local.write_bytes(store.read_bytes(layout.retraining_data_key("v1")))
    loaded = datasets.load_dataset("json", data_files=str(local), split="train")
    assert loaded.num_rows == 2 and {"question", "answer"} <= set(loaded.column_names)


def test_nothing_pending_spends_no_version_and_second_batch_is_v2(store: ObjectStore) -> None:
    with dg.instance_for_test() as instance:
        empty = evaluate_sensor(instance)
        assert empty.run_requests == [] and empty.skip_reason
        write_raw(store, "a.jsonl", GOOD_JSONL)
        assert tick(instance) == {"v1": True}
        assert tick(instance) == {}  # v1's files are consumed, nothing new
        write_raw(store, "b.jsonl", SINGLE_OBJECT)
        assert tick(instance) == {"v2": True}
    assert read_tracker(store) == 2
    assert [i.key.rsplit("-", 1)[-1] for i in store.list(layout.archive_prefix("v2"))] == ["b.jsonl"]


def test_evaluating_the_sensor_writes_nothing(store: ObjectStore) -> None:
    """A tick, a UI preview or a test evaluation decides; only the run acts."""
    write_raw(store, "a.jsonl", GOOD_JSONL)
    before = everything(store)
    with dg.instance_for_test() as instance:
        first = evaluate_sensor(instance)
        again = evaluate_sensor(instance, cursor=first.cursor)  # the decision waits for its run
        preview = evaluate_sensor(instance)  # a preview without the cursor decides the same version
    assert everything(store) == before
    assert [r.partition_key for r in first.run_requests] == ["v1"]
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in first.run_requests]
    assert [r.partition_key for r in preview.run_requests] == ["v1"]


def test_one_version_at_a_time_and_no_file_in_two_versions(store: ObjectStore) -> None:
    write_raw(store, "a.jsonl", GOOD_JSONL)
    with dg.instance_for_test() as instance:
        first = evaluate_sensor(instance)
        write_raw(store, "b.jsonl", SINGLE_OBJECT)
        second = evaluate_sensor(instance, cursor=first.cursor)  # v1 not run yet: nothing new decided
        assert [r.run_key for r in second.run_requests] == [r.run_key for r in first.run_requests]
        assert tick(instance) == {"v1": True}  # `medqa tick` keeps its own cursor: it decides afresh
        write_raw(store, "c.jsonl", MIXED_JSONL)
        assert tick(instance) == {"v2": True}
    files = [
        {f["key"] for f in store.read_json(layout.retraining_metadata_key(v))["source_files"]} for v in ("v1", "v2")
    ]
    assert len(files[0]) == 2 and len(files[1]) == 1 and not files[0] & files[1]


def test_a_partition_added_by_hand_is_refused_and_skips_no_number(store: ObjectStore) -> None:
    write_raw(store, "a.jsonl", GOOD_JSONL)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(versions_partitions.name, ["v9"])
        result = dg.materialize(
            [raw_logs, retraining_data],
            partition_key="v9",
            instance=instance,
            resources=build_resources(),
            raise_on_error=False,
        )
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert "versions come from the sensor" in failure.event_specific_data.error.message
        assert tick(instance) == {"v1": True}
    assert read_tracker(store) == 1


def test_unsettled_files_wait(store: ObjectStore) -> None:
    write_raw(store, "a.jsonl", GOOD_JSONL)
    assert plan_tick(store, settle_seconds=3600).decision is None
    assert plan_tick(store, settle_seconds=3600).skip_reason.startswith("1 file(s)")
    assert plan_tick(store, settle_seconds=0).decision is not None


CRASH_POINTS = ["manifest", "output", "metadata", "quarantine_move", "update_ledger", "close_claim", "advance_tracker"]


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_crash_at_each_step_then_rerun_finishes_exactly_once(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch, crash_at: str
) -> None:
    for name, data in (("a.jsonl", GOOD_JSONL), ("b.json", GOOD_ARRAY), ("c.csv", BAD_FILES["logs.csv"])):
        write_raw(store, name, data)

    class Crash(RuntimeError):
        pass

    original_move_many = ObjectStore.move_many
    original_write_json = ObjectStore.write_json
    original_open_write = ObjectStore.open_write

    def crashing_write_json(self: ObjectStore, key: str, value: object, **kwargs: object) -> None:
        if key.endswith(f"/{crash_at}.json"):
            raise Crash(crash_at)
        original_write_json(self, key, value, **kwargs)

    @contextlib.contextmanager
    def crashing_open_write(self: ObjectStore, key: str):  # the output fails half-way through the stream
        with original_open_write(self, key) as handle:
            if key == layout.retraining_data_key("v1"):
                handle.write(b'{"question": "half')
                raise Crash(crash_at)
            yield handle

    def crashing_move_many(self: ObjectStore, moves: list[tuple[str, str]]) -> None:
        original_move_many(self, moves)
        raise Crash(crash_at)  # after the move: the re-run finds the files moved

    with dg.instance_for_test() as instance:
        with monkeypatch.context() as patch:
            if crash_at in ("manifest", "metadata"):
                patch.setattr(ObjectStore, "write_json", crashing_write_json)
            elif crash_at == "output":
                patch.setattr(ObjectStore, "open_write", crashing_open_write)
            elif crash_at == "quarantine_move":
                patch.setattr(ObjectStore, "move_many", crashing_move_many)
            else:
                patch.setattr(publish_module, crash_at, lambda *a, **k: (_ for _ in ()).throw(Crash(crash_at)))
            assert tick(instance) == {"v1": False}
        # the tracker never shows an incomplete version (with close_claim only the claim's cleanup is left)
        assert read_tracker(store) == (1 if crash_at == "close_claim" else 0)
        if crash_at in ("manifest", "output", "metadata"):
            assert not store.exists(layout.retraining_metadata_key("v1"))
        if crash_at == "output":
            assert not store.exists(layout.retraining_data_key("v1"))  # no half-written output
        first_created = store.read_json(layout.manifest_key("v1"))["created"] if crash_at != "manifest" else None
        assert tick(instance) == {"v1": True}  # the same version, not a new one for its files
        assert tick(instance) == {}

    metadata = store.read_json(layout.retraining_metadata_key("v1"))
    assert read_tracker(store) == 1
    assert store.list(layout.RAW_LOGS_PREFIX) == []
    assert len(store.list(layout.archive_prefix("v1"))) == 2
    assert metadata["records_out"] == 3 and metadata["duplicates_removed"] == 1
    assert first_created in (None, metadata["created"])
    assert len(store.read_jsonl(layout.retraining_data_key("v1"))) == 3
    assert read_control_state(store).claims == {}


def test_rerunning_a_published_version_keeps_its_bytes_and_created_time(store: ObjectStore) -> None:
    write_raw(store, "a.jsonl", GOOD_JSONL)
    with dg.instance_for_test() as instance:
        assert tick(instance) == {"v1": True}
        before = everything(store)
        again = dg.materialize(
            [raw_logs, retraining_data], partition_key="v1", instance=instance, resources=build_resources()
        )
        assert again.success
    assert everything(store) == before


def test_partitions_definition_is_shared() -> None:
    assert raw_logs.partitions_def == retraining_data.partitions_def == versions_partitions


def test_raw_keys_with_spaces_and_dots_written_by_other_apps(store: ObjectStore) -> None:
    """A serving app may write straight into the bucket, with any object name."""
    odd_keys = [layout.RAW_LOGS_PREFIX + "my log file.jsonl", layout.RAW_LOGS_PREFIX + "a..b ..json"]
    for key in odd_keys:
        store.write_bytes(key, GOOD_JSONL)
    with dg.instance_for_test() as instance:
        assert tick(instance) == {"v1": True}
    metadata = store.read_json(layout.retraining_metadata_key("v1"))
    assert sorted(f["key"] for f in metadata["source_files"]) == sorted(odd_keys)
    assert metadata["records_in"] == 4 and metadata["duplicates_removed"] == 2
    assert store.list(layout.RAW_LOGS_PREFIX) == []
    assert len(store.list(layout.archive_prefix("v1"))) == 2
