"""Fast self-tests of the serving-app stand-ins (medqa_assets_tests.serving_apps): local targets, loopback only."""

import importlib.util
import io
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from medqa_assets_tests.serving_apps import (
    TIMEOUT_ANSWER,
    UTF8_BOM,
    AppendJsonLinesSink,
    CumulativeCopySink,
    LocalDirTarget,
    LocalDiskSink,
    LogEvent,
    RewriteArraySink,
    S3Target,
    create_fastapi_app,
    create_flask_app,
    cut_off_array,
    failing_model,
    fake_model,
    format_ts,
    interleaved_intact,
    interleaved_json_lines,
    is_training_record,
    json_array_bytes,
    perf_log_csv,
    run_app,
    single_object_json,
    timing_out_model,
    write_single_object,
)

# flask is not a declared dependency of the project (mlflow usually brings it); skip, not fail, without it
requires_flask = pytest.mark.skipif(importlib.util.find_spec("flask") is None, reason="flask is not installed")

FIXED_TS = datetime(2026, 11, 30, 10, 15, 0, 123456, tzinfo=UTC)


def fixed_clock() -> datetime:
    return FIXED_TS


def jsonl(path: Path) -> list[dict[str, Any]]:
    text = path.read_bytes().decode("utf-8-sig")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def complete_array_records(data: bytes) -> list[Any]:
    """The complete elements at the start of a (possibly cut-off) JSON array."""
    text = data.decode("utf-8-sig")
    dec = json.JSONDecoder()
    pos = text.index("[") + 1
    out: list[Any] = []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        try:
            obj, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError:
            return out
        out.append(obj)


def parses(data: bytes) -> bool:
    try:
        json.loads(data.decode("utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return True


def event(question: str, answer: str = "a", **kw: Any) -> LogEvent:
    return LogEvent(question=question, answer=answer, latency_ms=1.5, **kw)


# ---------------------------------------------------------------------------------------------------------------
# apps
# ---------------------------------------------------------------------------------------------------------------


def test_fastapi_contract_bodies_and_logging(tmp_path: Path) -> None:
    sink = AppendJsonLinesSink(LocalDirTarget(tmp_path))
    app = create_fastapi_app(fake_model({"What is flu?": "A virus."}), sink, device="cuda")
    with run_app(app) as base, httpx.Client(base_url=base, timeout=10) as c:
        r = c.post("/api/v1/answer", json={"question": "What is flu?", "slice": "infect"})
        assert r.status_code == 200 and r.json() == {"answer": "A virus.", "device": "cuda"}
        r = c.post("/api/v1/answer", json={"question": "   "})
        assert r.status_code == 400 and r.json() == {"detail": "question is required"}
        assert (
            c.post("/api/v1/answer", content=b"{not json", headers={"content-type": "application/json"}).status_code
            == 422
        )
        assert c.post("/api/v1/answer", json={"slice": "x"}).status_code == 422
    fail_app = create_fastapi_app(failing_model(1.0), sink)
    with run_app(fail_app) as base:
        r = httpx.post(base + "/api/v1/answer", json={"question": "q?"}, timeout=10)
        assert r.status_code == 500
    sink.close()
    lines = jsonl(sink.target.path(sink.object_name))
    assert lines == sink.records and sink.records_logged == 2  # 400/422 never reached the model
    ok, failed = lines
    assert set(ok) == {"ts", "question", "slice", "answer", "latency_ms"} and ok["slice"] == "infect"
    assert failed["answer"] == "" and failed["status"] == 500
    assert [is_training_record(r) for r in lines] == [True, False]


@requires_flask
def test_flask_contract_bodies_no_device_and_symptoms_shape(tmp_path: Path) -> None:
    sink = AppendJsonLinesSink(LocalDirTarget(tmp_path), clock=fixed_clock)
    with run_app(create_flask_app(fake_model(), sink, read_symptoms=True)) as base, httpx.Client(base_url=base) as c:
        r = c.post("/ask", json={"question": "What causes gout?", "symptoms": "Patient J.D., 54, swollen toe"})
        assert r.status_code == 200 and r.json() == {"answer": "Answer about: What causes gout?"}
        for body in ({}, {"question": ""}, {"question": "  "}):
            r = c.post("/ask", json=body)
            assert r.status_code == 400 and r.json() == {"error": "Question is required"}
        assert c.post("/ask", content=b"garbage").status_code == 400
    with run_app(create_flask_app(failing_model(1.0), sink)) as base:
        r = httpx.post(base + "/ask", json={"question": "q"}, timeout=10)
        assert r.status_code == 500 and "error" in r.json()
    sink.close()
    first, second = jsonl(sink.target.path(sink.object_name))
    assert set(first) == {"ts", "question", "symptoms", "answer", "lat_ms", "q_tags"}
    assert first["symptoms"].startswith("Patient") and first["ts"] == "2026-11-30T10:15:00.123456+00:00"
    assert second["answer"] == "" and second["status"] == 500


@requires_flask
def test_timeouts_are_logged_with_the_timeout_answer(tmp_path: Path) -> None:
    sink = AppendJsonLinesSink(LocalDirTarget(tmp_path))
    with run_app(create_fastapi_app(timing_out_model(), sink)) as base:
        r = httpx.post(base + "/api/v1/answer", json={"question": "q1"}, timeout=10)
        assert r.status_code == 200 and r.json() == {"answer": TIMEOUT_ANSWER, "device": "cpu"}
    with run_app(create_flask_app(timing_out_model(), sink, timeout_status=504)) as base:
        r = httpx.post(base + "/ask", json={"question": "q2"}, timeout=10)
        assert r.status_code == 504 and r.json() == {"error": TIMEOUT_ANSWER}
    slow = create_flask_app(fake_model(latency_s=0.3), sink, model_timeout_s=0.05)
    with run_app(slow) as base:
        r = httpx.post(base + "/ask", json={"question": "q3"}, timeout=10)
        assert r.status_code == 200 and r.json() == {"answer": TIMEOUT_ANSWER}
    assert [r["answer"] for r in sink.records] == [TIMEOUT_ANSWER] * 3
    assert "status" not in sink.records[0] and sink.records[1]["status"] == 504
    assert sink.training_records == []


def test_failing_model_is_seeded() -> None:
    def outcomes(seed: int) -> list[bool]:
        m = failing_model(0.5, seed=seed)
        res = []
        for i in range(100):
            try:
                m(f"q{i}")
                res.append(True)
            except Exception:
                res.append(False)
        return res

    assert outcomes(7) == outcomes(7)
    assert 25 < outcomes(7).count(False) < 75


# ---------------------------------------------------------------------------------------------------------------
# sinks
# ---------------------------------------------------------------------------------------------------------------


def test_append_sink_one_line_per_request_same_file(tmp_path: Path) -> None:
    sink = AppendJsonLinesSink(LocalDirTarget(tmp_path), "app.jsonl")
    path = tmp_path / "app.jsonl"
    assert path.exists() and path.stat().st_size == 0  # opened at start, like logging.FileHandler
    inode = path.stat().st_ino
    with run_app(create_fastapi_app(fake_model(), sink)) as base, httpx.Client(base_url=base) as c:
        for i in range(5):
            assert c.post("/api/v1/answer", json={"question": f"q{i}"}).status_code == 200
            assert len(jsonl(path)) == i + 1 and path.stat().st_ino == inode
    assert jsonl(path) == sink.records and [r["question"] for r in sink.records] == [f"q{i}" for i in range(5)]
    sink.close()


def concurrent_posts(url: str, n: int, body: Callable[[int], dict[str, Any]]) -> list[int]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda i: httpx.post(url, json=body(i), timeout=20).status_code, range(n)))


@requires_flask
def test_rewrite_array_locked_stays_valid_under_concurrency(tmp_path: Path) -> None:
    sink = RewriteArraySink(LocalDirTarget(tmp_path), locked=True, chunk_size=64)
    with run_app(create_flask_app(fake_model(), sink)) as base:
        assert concurrent_posts(base + "/ask", 20, lambda i: {"question": f"question {i}"}) == [200] * 20
    data = (tmp_path / sink.object_name).read_bytes()
    items = json.loads(data)
    assert len(items) == 20 and items == sink.records
    assert all(set(r) == {"timestamp", "question", "model_response"} for r in items)


@requires_flask
def test_rewrite_array_unlocked_concurrency_is_valid_or_damaged(tmp_path: Path) -> None:
    sink = RewriteArraySink(LocalDirTarget(tmp_path), chunk_size=32, write_pause_s=0.002)
    with run_app(create_flask_app(fake_model(latency_s=0.01), sink)) as base:
        assert concurrent_posts(base + "/ask", 20, lambda i: {"question": f"q {i} " + "x" * i}) == [200] * 20
    data = (tmp_path / sink.object_name).read_bytes()
    assert sink.records_logged == 20
    if parses(data):
        # valid, maybe with lost updates; two writers' bytes can also splice into a valid record that
        # was never logged ("q 5 xx" + the tail of "q 15 xxxx..."), so only the shape is certain
        records = json.loads(data)
        assert isinstance(records, list) and all(isinstance(r, dict) for r in records)
    else:
        assert data.startswith(b"[")


def test_rewrite_array_unlocked_forced_interleave_damages_file(tmp_path: Path) -> None:
    """Both writers truncate before either writes; the long one writes first, the short one over it."""
    both_open = threading.Barrier(2, timeout=5)
    long_written = threading.Event()

    def hook(step: str, record: dict[str, Any]) -> None:
        is_long = record["question"].startswith("long")
        if step == "after_open":
            both_open.wait()
            if not is_long:
                assert long_written.wait(5)
        elif step == "after_write" and is_long:
            long_written.set()

    sink = RewriteArraySink(LocalDirTarget(tmp_path), hook=hook)
    threads = [threading.Thread(target=sink.log, args=(event(q),)) for q in ("long question " + "y" * 200, "short")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    data = (tmp_path / sink.object_name).read_bytes()
    assert sink.records_logged == 2
    assert not parses(data)  # two writes interleaved: the short array followed by the long one's tail
    assert complete_array_records(data) == [r for r in sink.records if r["question"] == "short"]


def test_rewrite_array_unlocked_lost_update_when_reads_overlap(tmp_path: Path) -> None:
    both_read = threading.Barrier(2, timeout=5)

    def hook(step: str, record: dict[str, Any]) -> None:
        if step == "after_read" and record["question"] != "first":
            both_read.wait()

    sink = RewriteArraySink(LocalDirTarget(tmp_path), hook=hook)
    sink.log(event("first"))
    threads = [threading.Thread(target=sink.log, args=(event(q),)) for q in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    data = (tmp_path / sink.object_name).read_bytes()
    assert sink.records_logged == 3
    assert not parses(data) or len(json.loads(data)) < 3


def test_reader_can_see_cut_off_array_mid_rewrite(tmp_path: Path) -> None:
    seen: list[bytes] = []

    def hook(step: str, record: dict[str, Any]) -> None:
        if step == "after_chunk" and record["question"] == "q2" and not seen:
            seen.append((tmp_path / "log.json").read_bytes())

    sink = RewriteArraySink(LocalDirTarget(tmp_path), "log.json", chunk_size=40, hook=hook)
    for q in ("q0", "q1", "q2"):
        sink.log(event(q))
    final = (tmp_path / "log.json").read_bytes()
    assert json.loads(final) == sink.records
    assert seen and len(seen[0]) == 40 and final.startswith(seen[0]) and not parses(seen[0])


@requires_flask
@pytest.mark.parametrize("local_format", ["jsonl", "array"])
def test_cumulative_copy_target_equals_local_log(tmp_path: Path, local_format: str) -> None:
    sink = CumulativeCopySink(LocalDirTarget(tmp_path / "raw"), local_dir=tmp_path / "disk", local_format=local_format)
    target_path = tmp_path / "raw" / sink.object_name
    with run_app(create_flask_app(fake_model(), sink)) as base, httpx.Client(base_url=base) as c:
        for i in range(4):
            assert c.post("/ask", json={"question": f"q{i}"}).status_code == 200
            assert target_path.read_bytes() == sink.local_path.read_bytes()
    got = jsonl(target_path) if local_format == "jsonl" else json.loads(target_path.read_bytes())
    assert got == sink.records and len(got) == 4
    sink.close()


def test_local_disk_sink_exposes_path(tmp_path: Path) -> None:
    sink = LocalDiskSink(tmp_path / "disk", ts_format="epoch")
    sink.log(event("q", variant="flask_symptoms", symptoms="fever"))
    sink.close()
    assert sink.path == tmp_path / "disk" / sink.object_name
    (rec,) = jsonl(sink.path)
    assert isinstance(rec["ts"], float) and rec["symptoms"] == "fever" and "has_symptoms" in rec["q_tags"]


def test_crlf_and_bom_options(tmp_path: Path) -> None:
    target = LocalDirTarget(tmp_path)
    app_sink = AppendJsonLinesSink(target, "win.jsonl", bom=True, line_ending="\r\n")
    arr_sink = RewriteArraySink(target, "win.json", bom=True, line_ending="\r\n")
    for q in ("é?", "b"):
        app_sink.log(event(q))
        arr_sink.log(event(q))
    app_sink.close()
    lines_raw = (tmp_path / "win.jsonl").read_bytes()
    assert lines_raw.startswith(UTF8_BOM) and lines_raw.count(UTF8_BOM) == 1
    assert lines_raw.count(b"\r\n") == 2 and lines_raw.endswith(b"\r\n")
    assert jsonl(tmp_path / "win.jsonl") == app_sink.records
    arr_raw = (tmp_path / "win.json").read_bytes()
    assert arr_raw.startswith(UTF8_BOM) and b"\r\n" in arr_raw and b"\n" not in arr_raw.replace(b"\r\n", b"")
    assert json.loads(arr_raw.decode("utf-8-sig")) == arr_sink.records  # it read back its own BOM file


def test_timestamp_formats() -> None:
    fmts = {"iso_z": str, "iso_offset": str, "iso_naive": str, "epoch": float}
    assert format_ts(FIXED_TS, "iso_z") == "2026-11-30T10:15:00.123456Z"
    assert format_ts(FIXED_TS, "iso_offset") == "2026-11-30T10:15:00.123456+00:00"
    assert format_ts(FIXED_TS, "iso_offset", timezone(timedelta(hours=2))) == "2026-11-30T12:15:00.123456+02:00"
    assert format_ts(FIXED_TS, "iso_naive") == "2026-11-30T10:15:00.123456"
    assert format_ts(FIXED_TS, "epoch") == pytest.approx(FIXED_TS.timestamp())
    for f, typ in fmts.items():
        assert isinstance(format_ts(FIXED_TS, f), typ)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# damaged / other files
# ---------------------------------------------------------------------------------------------------------------

RECORDS = [{"timestamp": f"2026-11-30T10:0{i}:00Z", "question": f"q{i} ü", "model_response": f"r{i}"} for i in range(4)]


@pytest.mark.parametrize("indent,line_ending,bom", [(2, "\n", False), (None, "\n", False), (4, "\r\n", True)])
def test_cut_off_array_keeps_complete_records(indent: int | None, line_ending: str, bom: bool) -> None:
    full = json_array_bytes(RECORDS, indent=indent, line_ending=line_ending, bom=bom)
    assert json.loads(full.decode("utf-8-sig")) == RECORDS
    for k in range(len(RECORDS)):
        for frac in (0.0, 0.5, 1.0):
            data = cut_off_array(RECORDS, k, frac, indent=indent, line_ending=line_ending, bom=bom)
            assert full.startswith(data) and not parses(data)
            assert complete_array_records(data) == RECORDS[:k]


def test_interleaved_json_lines() -> None:
    a = [{"ts": i, "question": f"a{i}", "answer": "x" * 30} for i in range(5)]
    b = [{"ts": i, "question": f"b{i}", "answer": "y"} for i in range(4)]
    data = interleaved_json_lines(a, b, line_ending="\r\n", bom=True)
    lines = data.decode("utf-8-sig").split("\r\n")
    good, bad = [], 0
    for line in filter(None, lines):
        try:
            good.append(json.loads(line))
        except json.JSONDecodeError:
            bad += 1
    assert good == interleaved_intact(a, b) and bad == 4  # pairs 1 and 3 broken, two bad lines each
    assert lines[0] == json.dumps(a[0])


def test_perf_log_csv_and_single_object(tmp_path: Path) -> None:
    csv = perf_log_csv([("2026-11-30T10:00:00", 120.5), (1764497000, 80)])
    assert csv.decode().splitlines() == ["2026-11-30T10:00:00,120.5", "1764497000,80"]
    assert perf_log_csv([1.5, 2]) == b"1.5\n2\n"
    rec = RECORDS[0]
    assert json.loads(single_object_json(rec, bom=True).decode("utf-8-sig")) == rec
    loc = write_single_object(LocalDirTarget(tmp_path), "one.json", rec, indent=None)
    assert json.loads(Path(loc).read_bytes()) == rec


# ---------------------------------------------------------------------------------------------------------------
# S3 code path, with an in-memory stand-in for the boto3 client (no network)
# ---------------------------------------------------------------------------------------------------------------


class _MissingKey(Exception):
    response = {"Error": {"Code": "NoSuchKey"}}


class FakeS3Client:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.puts = 0

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803 - boto3's names
        if (Bucket, Key) not in self.objects:
            raise _MissingKey(Key)
        return {"Body": io.BytesIO(self.objects[Bucket, Key])}

    def put_object(self, Bucket: str, Key: str, Body: bytes) -> None:  # noqa: N803
        self.puts += 1
        self.objects[Bucket, Key] = bytes(Body)


def test_s3_target_shares_the_sink_code(tmp_path: Path) -> None:
    client = FakeS3Client()
    target = S3Target("bkt", client=client)
    assert target.location("x.jsonl") == "s3://bkt/data/production/retraining_data_raw/x.jsonl"
    app_sink = AppendJsonLinesSink(target, "a.jsonl", bom=True)
    arr_sink = RewriteArraySink(target, "r.json")
    cum_sink = CumulativeCopySink(target, "c.jsonl", local_dir=tmp_path)
    for q in ("q1", "q2"):
        for s in (app_sink, arr_sink, cum_sink):
            s.log(event(q))
    obj = client.objects
    prefix = "data/production/retraining_data_raw/"
    a_raw = obj["bkt", prefix + "a.jsonl"]
    assert a_raw.startswith(UTF8_BOM) and [json.loads(x) for x in a_raw[3:].splitlines()] == app_sink.records
    assert json.loads(obj["bkt", prefix + "r.json"]) == arr_sink.records
    assert obj["bkt", prefix + "c.jsonl"] == cum_sink.local_path.read_bytes()
    assert client.puts == 6
