"""The online loop's exactly-once retraining versions, against a local store and real S3."""

from __future__ import annotations

import json
import threading

import dagster as dg
import datasets
import pytest

from medqa_assets.resources import build_resources
from medqa_assets.retraining import build as build_module
from medqa_assets.retraining.assets import raw_logs, retraining_data, versions_partitions
from medqa_assets.retraining.tick import evaluate_sensor
from medqa_assets.retraining.versioning import claim_pending, open_claims, read_tracker
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


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ObjectStore:
    request.getfixturevalue("local_store_env" if request.param == "local" else "s3_store_env")
    monkeypatch.setenv("MEDQA_SENSOR_SETTLE_SECONDS", "0")
    monkeypatch.setenv("MEDQA_RETRAINING_WORKERS", "1")
    return ObjectStore.from_settings()


def materialize(instance: dg.DagsterInstance, version: str) -> dg.ExecuteInJobResult:
    return dg.materialize(
        [raw_logs, retraining_data],
        partition_key=version,
        instance=instance,
        resources=build_resources(),
    )


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
        result = evaluate_sensor(instance)
        assert [r.partition_key for r in result.run_requests] == ["v1"]
        assert result.run_requests[0].run_key == "v1"
        assert materialize(instance, "v1").success

    metadata = store.read_json(layout.retraining_metadata_key("v1"))
    assert metadata["records_in"] == metadata["records_out"] + metadata["quarantined"] + metadata["duplicates_removed"]
    assert metadata["records_in"] == 2 + 2 + 1 + 6 + 2
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
        metadata["output"]["sha256"]
        == __import__("hashlib").sha256(store.read_bytes(layout.retraining_data_key("v1"))).hexdigest()
    )

    # every raw file left raw: parseable ones archived, unparseable ones quarantined with a reason
    assert store.list(layout.RAW_LOGS_PREFIX) == []
    archived = store.list(layout.archive_prefix("v1"))
    quarantined = [i.key for i in store.list(layout.quarantine_prefix("v1") + "files/")]
    assert len(archived) + len(BAD_FILES) == len(keys)
    assert sum(k.endswith(".reason.json") for k in quarantined) == len(BAD_FILES)
    records = store.read_jsonl(layout.quarantine_prefix("v1") + "records.jsonl")
    assert len(records) == metadata["quarantined"]
    assert store.read_text(layout.VERSION_TRACKER).strip() == "1"


def test_output_loads_with_datasets(store: ObjectStore, tmp_path) -> None:
    write_raw(store, "a.jsonl", GOOD_JSONL)
    with dg.instance_for_test() as instance:
        evaluate_sensor(instance)
        assert materialize(instance, "v1").success
    local = tmp_path / "retraining_data.json"
    local.write_bytes(store.read_bytes(layout.retraining_data_key("v1")))
    loaded = datasets.load_dataset("json", data_files=str(local), split="train")
    assert loaded.num_rows == 2 and {"question", "answer"} <= set(loaded.column_names)


def test_nothing_pending_spends_no_version_and_second_batch_is_v2(store: ObjectStore) -> None:
    with dg.instance_for_test() as instance:
        empty = evaluate_sensor(instance)
        assert empty.run_requests == [] and empty.skip_reason
        write_raw(store, "a.jsonl", GOOD_JSONL)
        evaluate_sensor(instance)
        assert materialize(instance, "v1").success
        assert evaluate_sensor(instance).run_requests == []  # v1's files are archived, nothing new
        write_raw(store, "b.jsonl", SINGLE_OBJECT)
        second = evaluate_sensor(instance)
        assert [r.partition_key for r in second.run_requests] == ["v2"]
        assert materialize(instance, "v2").success
    assert read_tracker(store) == 2
    assert [i.key.rsplit("/", 1)[-1].split("-", 2)[-1] for i in store.list(layout.archive_prefix("v2"))] == ["b.jsonl"]


def test_tick_during_a_running_version_claims_nothing_twice(store: ObjectStore) -> None:
    write_raw(store, "a.jsonl", GOOD_JSONL)
    with dg.instance_for_test() as instance:
        first = evaluate_sensor(instance)
        second = evaluate_sensor(instance)  # v1 not run yet: its files are claimed
        assert [r.partition_key for r in first.run_requests] == ["v1"]
        assert [r.run_key for r in second.run_requests] == ["v1"]  # re-requested, deduplicated by run key
        write_raw(store, "b.jsonl", SINGLE_OBJECT)
        third = evaluate_sensor(instance)
        claims = open_claims(store)
    assert sorted(claims) == ["v1", "v2"]
    assert not set(claims["v1"].keys) & set(claims["v2"].keys)
    assert [r.partition_key for r in third.run_requests] == ["v1", "v2"]


def test_concurrent_ticks_never_claim_a_file_twice(store: ObjectStore) -> None:
    for index in range(20):
        write_raw(store, f"f{index}.jsonl", GOOD_JSONL)
    results = []

    def tick() -> None:
        results.append(claim_pending(store, settle_seconds=0))

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claims = open_claims(store)
    claimed = [key for claim in claims.values() for key in claim.keys]
    assert len(claimed) == len(set(claimed)) == 20
    assert len([r for r in results if r is not None]) == len(claims)


def test_unsettled_files_wait(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    write_raw(store, "a.jsonl", GOOD_JSONL)
    assert claim_pending(store, settle_seconds=3600) is None
    assert claim_pending(store, settle_seconds=0) is not None


CRASH_POINTS = ["manifest", "output", "metadata", "move_first", "move_last", "close_claim", "advance_tracker"]


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_crash_at_each_step_then_rerun_finishes_exactly_once(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch, crash_at: str
) -> None:
    for name, data in (("a.jsonl", GOOD_JSONL), ("b.json", GOOD_ARRAY), ("c.csv", BAD_FILES["logs.csv"])):
        write_raw(store, name, data)

    class Crash(RuntimeError):
        pass

    original_move = ObjectStore.move
    original_write_json = ObjectStore.write_json
    original_open_write = ObjectStore.open_write
    moves = {"count": 0}

    def crashing_write_json(self: ObjectStore, key: str, value: object, **kwargs: object) -> None:
        if key.endswith(f"/{crash_at}.json"):
            raise Crash(crash_at)
        original_write_json(self, key, value, **kwargs)

    def crashing_open_write(self: ObjectStore, key: str):  # fails half-way through the stream
        with original_open_write(self, key) as handle:
            handle.write(b'{"question": "half')
            raise Crash(crash_at)
        yield handle

    def crashing_move(self: ObjectStore, source: str, destination: str) -> None:
        moves["count"] += 1
        if (crash_at == "move_first" and moves["count"] == 1) or (crash_at == "move_last" and moves["count"] == 3):
            raise Crash(crash_at)
        original_move(self, source, destination)

    with dg.instance_for_test() as instance:
        evaluate_sensor(instance)
        with monkeypatch.context() as patch:
            if crash_at in ("manifest", "metadata"):
                patch.setattr(ObjectStore, "write_json", crashing_write_json)
            elif crash_at == "output":
                patch.setattr(ObjectStore, "open_write", __import__("contextlib").contextmanager(crashing_open_write))
            elif crash_at.startswith("move"):
                patch.setattr(ObjectStore, "move", crashing_move)
            else:
                patch.setattr(build_module, crash_at, lambda *a, **k: (_ for _ in ()).throw(Crash(crash_at)))
            crashed = dg.materialize(
                [raw_logs, retraining_data],
                partition_key="v1",
                instance=instance,
                resources=build_resources(),
                raise_on_error=False,
            )
            assert not crashed.success
        # the tracker never shows an incomplete version (with close_claim only the claim's cleanup is left)
        assert read_tracker(store) == (1 if crash_at == "close_claim" else 0)
        if crash_at in ("manifest", "output", "metadata"):
            assert not store.exists(layout.retraining_metadata_key("v1"))
        if crash_at == "output":
            assert not store.exists(layout.retraining_data_key("v1"))  # no half-written output
        assert evaluate_sensor(instance).run_requests[0].partition_key == "v1"  # no new version for its files
        assert materialize(instance, "v1").success

    state = snapshot(store, "v1")
    metadata = store.read_json(layout.retraining_metadata_key("v1"))
    assert state["tracker"] == 1
    assert state["raw"] == []
    assert len(state["archive"]) == 2
    assert metadata["records_out"] == 3 and metadata["duplicates_removed"] == 1
    assert len(store.read_jsonl(layout.retraining_data_key("v1"))) == 3
    assert open_claims(store) == {}


def test_changed_file_after_claim_is_refused(store: ObjectStore) -> None:
    key = write_raw(store, "a.jsonl", GOOD_JSONL)
    with dg.instance_for_test() as instance:
        evaluate_sensor(instance)
        assert dg.materialize([raw_logs], partition_key="v1", instance=instance, resources=build_resources()).success
        store.write_bytes(key, GOOD_JSONL + SINGLE_OBJECT + b"\n")
        result = dg.materialize(
            [retraining_data],
            partition_key="v1",
            instance=instance,
            resources=build_resources(),
            raise_on_error=False,
        )
    assert not result.success
    assert read_tracker(store) == 0
    assert store.exists(key)  # nothing moved


def test_partitions_definition_is_shared() -> None:
    assert raw_logs.partitions_def == retraining_data.partitions_def == versions_partitions


def test_raw_keys_with_spaces_and_dots_written_by_other_apps(store: ObjectStore) -> None:
    """A serving app may write straight into the bucket, with any object name."""
    odd_keys = [layout.RAW_LOGS_PREFIX + "my log file.jsonl", layout.RAW_LOGS_PREFIX + "a..b ..json"]
    for key in odd_keys:
        store.write_bytes(key, GOOD_JSONL)
    with dg.instance_for_test() as instance:
        evaluate_sensor(instance)
        assert materialize(instance, "v1").success
    metadata = store.read_json(layout.retraining_metadata_key("v1"))
    assert sorted(f["key"] for f in metadata["source_files"]) == sorted(odd_keys)
    assert metadata["records_in"] == 4 and metadata["duplicates_removed"] == 2
    assert store.list(layout.RAW_LOGS_PREFIX) == []
    assert len(store.list(layout.archive_prefix("v1"))) == 2
