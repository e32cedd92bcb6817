"""The traffic simulator against real uvicorn servers on loopback ports (no mocked HTTP)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections import Counter
from datetime import datetime, timedelta

import pandas as pd
import pytest
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from medqa_assets.cli import main
from medqa_assets.serving import MissingInputError
from medqa_assets.serving.baseline import NearestQuestionBaseline
from medqa_assets.serving.endpoint import create_app, serve_in_background
from medqa_assets.serving.simulator import answer_url, arrival_times, run_simulation
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore

ROWS = 30
DISEASES = [f"disease{i:02d}" for i in range(ROWS)]
TRAINING = pd.DataFrame(
    {
        "question": [f"What are the symptoms of {name} ?" for name in DISEASES],
        "answer": [f"model knowledge about {name}" for name in DISEASES],
    }
)
PRODUCTION = pd.DataFrame(
    {
        "question": [f"symptoms of {name}?" for name in DISEASES],
        "answer": [f"REFERENCE answer {i}" for i in range(ROWS)],
        "row_id": [f"r-{i:03d}" for i in range(ROWS)],
        "question_id": ["0000001-1"] * ROWS,  # MedQuAD's own ids repeat; row_id is the unique one
        "focus_area": ["x"] * ROWS,
    }
)
FIELDS = {"timestamp", "question", "model_response", "slice", "latency_ms", "status", "production_set", "row_id"}


@pytest.fixture(scope="module")
def endpoint_url():
    with serve_in_background(create_app(NearestQuestionBaseline().fit(TRAINING))) as url:
        yield url


@pytest.fixture
def store(tmp_path, monkeypatch) -> ObjectStore:
    root = tmp_path / "store"
    monkeypatch.setenv("MEDQA_STORE_URL", str(root))
    store = ObjectStore(str(root))
    store.write_jsonl(layout.production_set_key("set1"), PRODUCTION)
    return store


def read_logs(store: ObjectStore) -> list[tuple[str, list[dict]]]:
    """(key, records) of every raw log object, in key order."""
    return [
        (info.key, [json.loads(line) for line in store.read_bytes(info.key).splitlines()])
        for info in store.list(layout.RAW_LOGS_PREFIX)
    ]


def simulate(endpoint: str, **options) -> object:
    options = {"rate": 200.0, "arrivals": "uniform", "progress": False, **options}
    return asyncio.run(run_simulation("set1", endpoint, **options))


def test_records_land_in_the_store_in_batches(endpoint_url, store) -> None:
    summary = simulate(endpoint_url, limit=25, batch_size=10, slice_tag="cardio", order="file")
    assert (summary.sent, summary.ok, summary.errors, summary.retries) == (25, 25, {}, 0)
    assert summary.records_written == 25

    logs = read_logs(store)
    keys = [key for key, _ in logs]
    assert keys == summary.log_keys == sorted(keys)  # written in key order, keys sort by time
    assert [len(records) for _, records in logs] == [10, 10, 5]
    assert all(key.endswith("-simulator-set1.jsonl") for key in keys)

    records = [record for _, batch in logs for record in batch]
    assert len(records) == 25
    by_id = PRODUCTION.set_index("row_id")
    for record in records:
        assert set(record) == FIELDS  # in particular no reference "answer"
        assert record["status"] == 200 and record["production_set"] == "set1" and record["slice"] == "cardio"
        row = by_id.loc[record["row_id"]]
        assert record["question"] == row["question"]
        disease = row["question"].split()[-1].rstrip("?")
        assert record["model_response"] == f"model knowledge about {disease}"
        assert record["latency_ms"] > 0
        stamp = datetime.fromisoformat(record["timestamp"])
        assert stamp.utcoffset() == timedelta(0)
    assert sorted(record["row_id"] for record in records) == [f"r-{i:03d}" for i in range(25)]  # set order
    assert b"REFERENCE" not in b"".join(store.read_bytes(key) for key in keys)


def test_records_flush_by_time_and_url_with_path_is_used_as_is(endpoint_url, store) -> None:
    summary = simulate(f"{endpoint_url}/api/v1/answer", rate=20.0, limit=16, batch_size=1000, flush_interval=0.25)
    assert summary.endpoint == f"{endpoint_url}/api/v1/answer"
    assert summary.ok == 16
    logs = read_logs(store)
    assert len(logs) >= 2  # 0.8 s of traffic with a 0.25 s flush interval: several objects, not one
    assert sum(len(records) for _, records in logs) == 16


def test_answer_url() -> None:
    """A bare base URL means the FastAPI route; a URL with a path is called as given."""
    assert answer_url("http://h:1") == "http://h:1/api/v1/answer"
    assert answer_url("http://h:1/") == "http://h:1/api/v1/answer"
    assert answer_url("http://h:1/api/v1/answer") == "http://h:1/api/v1/answer"
    assert answer_url("http://h:5000/ask") == "http://h:5000/ask"
    assert answer_url("https://h/prefix/ask") == "https://h/prefix/ask"


def test_limit_takes_a_seeded_sample_that_looks_like_the_set(endpoint_url, store) -> None:
    first = simulate(endpoint_url, limit=20, seed=3)
    ids = sorted(record["row_id"] for _, batch in read_logs(store) for record in batch)
    expected = sorted(PRODUCTION.sample(n=20, random_state=3)["row_id"])
    assert first.sent == 20 and ids == expected
    assert ids != [f"r-{i:03d}" for i in range(20)]  # not the first rows of the set


def test_the_flask_app_at_ask_is_replayed_with_its_answers_and_errors(store) -> None:
    from medqa_assets_tests.serving_apps import create_flask_app, failing_model, fake_model, run_app

    with run_app(create_flask_app(fake_model(), None)) as url:
        summary = simulate(f"{url}/ask", limit=12)
    records = [record for _, batch in read_logs(store) for record in batch]
    assert summary.ok == 12 and len(records) == 12
    assert all(r["status"] == 200 and r["model_response"] == f"Answer about: {r['question']}" for r in records)

    for info in store.list(layout.RAW_LOGS_PREFIX):
        store.delete(info.key)
    with run_app(create_flask_app(failing_model(1.0), None)) as url:
        summary = simulate(f"{url}/ask", limit=3, retries=0)
    records = [record for _, batch in read_logs(store) for record in batch]
    assert summary.errors == {"http_500": 3}
    assert all(r["model_response"] is None and r["status"] == 500 and r["error"] for r in records)


class _Request(BaseModel):
    question: str
    slice: str | None = None


@pytest.fixture(scope="module")
def flaky_endpoint():
    """Fails on demand: "fail" always 500, "flaky" 500 once, "bad" 400, "slow" too slow; counts attempts."""
    app = FastAPI()
    attempts: Counter[str] = Counter()

    @app.post("/api/v1/answer")
    async def answer(request: _Request) -> dict[str, str]:
        attempts[request.question] += 1
        if request.question.startswith("fail"):
            raise HTTPException(status_code=500, detail="boom")
        if request.question.startswith("flaky") and attempts[request.question] == 1:
            raise HTTPException(status_code=503, detail="warming up")
        if request.question.startswith("bad"):
            raise HTTPException(status_code=400, detail="question is required")
        if request.question.startswith("slow"):
            await asyncio.sleep(0.6)
        return {"answer": f"echo {request.question}", "device": "cpu"}

    with serve_in_background(app) as url:
        yield url, attempts


def test_errors_are_counted_by_kind_and_retries_are_bounded(flaky_endpoint, store) -> None:
    url, attempts = flaky_endpoint
    attempts.clear()
    questions = ["fail 1", "ok 1", "flaky 1", "bad 1", "fail 2", "ok 2", "flaky 2", "slow 1"]
    store.write_jsonl(
        layout.production_set_key("set1"),
        pd.DataFrame({"question": questions, "answer": ["ref"] * 8, "question_id": range(8)}),
    )
    summary = simulate(url, retries=2, backoff=0.001, timeout=0.25, concurrency=8)
    assert summary.sent == 8
    assert summary.ok == 4  # ok 1, ok 2, flaky 1, flaky 2 (after one retry)
    assert summary.errors == {"http_500": 2, "http_400": 1, "timeout": 1}
    assert attempts["fail 1"] == attempts["fail 2"] == 3  # one try and two retries, no more
    assert attempts["flaky 1"] == attempts["flaky 2"] == 2
    assert attempts["bad 1"] == 1  # 4xx is never retried
    assert attempts["slow 1"] == 3  # timeouts are retried
    assert summary.retries == 2 * 2 + 2 * 1 + 2

    records = {record["row_id"]: record for _, batch in read_logs(store) for record in batch}
    assert len(records) == 8
    assert records[0]["status"] == 500 and records[0]["model_response"] is None
    assert records[2]["status"] == 200 and records[2]["model_response"] == "echo flaky 1"
    assert records[3]["status"] == 400
    assert records[7]["status"] == "timeout" and records[7]["model_response"] is None


def test_connect_errors_when_nothing_listens(store) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    summary = simulate(f"http://127.0.0.1:{port}", limit=3, retries=1, backoff=0.001)
    assert summary.ok == 0 and summary.errors == {"connect_error": 3} and summary.retries == 3
    records = [record for _, batch in read_logs(store) for record in batch]
    assert [record["status"] for record in records] == ["connect_error"] * 3


def test_rate_is_paced_open_loop(endpoint_url, store) -> None:
    questions = (PRODUCTION["question"].tolist() * 2)[:60]
    store.write_jsonl(
        layout.production_set_key("set1"),
        pd.DataFrame({"question": questions, "answer": ["ref"] * 60, "question_id": range(60)}),
    )
    summary = simulate(endpoint_url, rate=50.0, limit=50)  # 50 req/s for about 1 s
    assert summary.sent == 50 and summary.ok == 50
    assert abs(summary.achieved_rate - 50.0) / 50.0 < 0.2
    assert 0.8 < summary.duration_s < 1.6
    assert summary.lag_ms_max is not None and summary.lag_ms_p99 is not None


def test_poisson_arrivals_are_seeded() -> None:
    first = arrival_times(2000, 100.0, "poisson", seed=7)
    assert first == arrival_times(2000, 100.0, "poisson", seed=7)
    assert first != arrival_times(2000, 100.0, "poisson", seed=8)
    assert first[0] == 0.0 and all(b >= a for a, b in zip(first, first[1:], strict=False))
    assert abs(first[-1] / 1999 - 0.01) < 0.001  # mean gap 1/rate
    assert arrival_times(3, 4.0, "uniform") == [0.0, 0.25, 0.5]
    with pytest.raises(ValueError):
        arrival_times(3, 4.0, "bursty")


def test_missing_production_set(tmp_path, monkeypatch, capsys) -> None:
    root = tmp_path / "empty"
    monkeypatch.setenv("MEDQA_STORE_URL", str(root))
    with pytest.raises(MissingInputError, match="data/production/sets/set3.json"):
        asyncio.run(run_simulation("set3", "http://127.0.0.1:9", progress=False))
    assert main(["simulate", "--set", "set3", "--endpoint", "http://127.0.0.1:9", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: production set 'set3' is missing")
    assert "data/production/sets/set3.json" in err and "-j offline_etl" in err


def test_cli_simulate_prints_the_summary(endpoint_url, store, capsys) -> None:
    code = main(
        ["simulate", "--set", "set1", "--endpoint", endpoint_url, "--limit", "5", "--rate", "100", "--no-progress"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "sent 5, ok 5, errors 0" in out and "latency ms" in out and "scheduling lag ms" in out
    assert sum(len(records) for _, records in read_logs(store)) == 5


def test_cli_rejects_bad_flags(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--set", "set1", "--endpoint", "http://x", "--rate", "0"])
    assert exit_info.value.code == 2
    assert main(["simulate", "--set", "../etc", "--endpoint", "http://x", "--no-progress"]) == 2
    assert main(["simulate", "--set", "set1", "--endpoint", "ftp://x", "--no-progress"]) == 2
    assert "error: --endpoint 'ftp://x' is not an http(s) URL" in capsys.readouterr().err


RAW_RESPONSES = {
    # read-until-close body, then the server closes
    "close": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
        b'{"answer": "raw", "device": "cpu"}'
    ),
    # chunked body on a kept-alive connection
    "chunked": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'10\r\n{"answer": "raw"\r\n12\r\n, "device": "cpu"}\r\n0\r\n\r\n'
    ),
    # a complete response, then the connection is dropped without notice
    "drop": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 34\r\n\r\n"
        b'{"answer": "raw", "device": "cpu"}'
    ),
}


@pytest.fixture
def raw_server(request):
    """A hand-written HTTP/1.1 server in a thread: connection handling the client must cope with."""
    mode = request.param
    ready = threading.Event()
    state: dict = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                writer.write(RAW_RESPONSES[mode])
                await writer.drain()
                if mode != "chunked":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def run() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        state["port"] = server.sockets[0].getsockname()[1]
        state["stop"] = asyncio.Event()
        state["loop"] = asyncio.get_running_loop()
        ready.set()
        await state["stop"].wait()
        server.close()

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    ready.wait(5)
    yield f"http://127.0.0.1:{state['port']}"
    state["loop"].call_soon_threadsafe(state["stop"].set)
    thread.join(5)


@pytest.mark.parametrize("raw_server", ["close", "chunked", "drop"], indirect=True)
def test_the_client_copes_with_connection_handling(raw_server, store) -> None:
    summary = simulate(raw_server, rate=50.0, limit=8, retries=1, backoff=0.001)
    assert summary.ok == 8, summary.errors
    records = [record for _, batch in read_logs(store) for record in batch]
    assert [record["model_response"] for record in records] == ["raw"] * 8


def test_the_summary_says_when_the_asked_rate_was_not_reached(store) -> None:
    from medqa_assets_tests.serving_apps import create_flask_app, fake_model, run_app

    with run_app(create_flask_app(fake_model(latency_s=0.05), None)) as url:
        summary = simulate(f"{url}/ask", rate=100.0, limit=10, concurrency=1)
    assert summary.achieved_rate < 30  # one request at a time, 50 ms each
    assert "the asked rate was not reached" in summary.format()
