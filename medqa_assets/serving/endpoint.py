"""The reference inference endpoint (contracts section 4), served by ``medqa serve``.

```
POST /api/v1/answer   {"question": "<text>", "slice": "<optional tag>"}
  200 {"answer": "<text>", "device": "cpu" | "cuda"}
  400 {"detail": "question is required"}      empty or whitespace-only question
  422 FastAPI's validation error               malformed body
GET  /healthz         {"status": "ok", "device": ..., "training_rows": N}
```

:func:`create_app` builds the app around any fitted :class:`NearestQuestionBaseline`;
:func:`serve` fits one on the store's training split and runs it with uvicorn.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Literal

import orjson
import uvicorn
from fastapi import FastAPI, HTTPException, Response
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel

from medqa_assets.serving import ANSWER_PATH, MissingInputError
from medqa_assets.serving.baseline import NearestQuestionBaseline, baseline_from_store, training_split_missing_message
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore

HEALTH_PATH = "/healthz"
QUESTION_REQUIRED = "question is required"


class AnswerRequest(BaseModel):
    question: str
    slice: str | None = None


class AnswerResponse(BaseModel):
    answer: str
    device: Literal["cpu", "cuda"]


def detect_device() -> Literal["cpu", "cuda"]:
    """``"cuda"`` if torch is installed and sees a GPU; torch is not imported when absent."""
    if importlib.util.find_spec("torch") is None:
        return "cpu"
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # a broken torch install must not take the endpoint down
        return "cpu"


def create_app(baseline: NearestQuestionBaseline, *, device: Literal["cpu", "cuda"] | None = None) -> FastAPI:
    """The endpoint's FastAPI app answering with ``baseline`` (already fitted)."""
    if not baseline.is_fitted:
        raise ValueError("create_app needs a fitted baseline")
    device = device or detect_device()
    # /docs and /redoc serve Swagger UI and ReDoc from the installed fastapi-offline package: the
    # default pages load them from a CDN and are blank on a machine without internet.
    app = FastAPIOffline(title="MedQA reference endpoint", version="1")

    # A plain ``async def``: one lookup takes a fraction of a millisecond, less than handing the
    # call to the threadpool would cost; a GIL-bound lookup gains nothing from threads anyway.
    # The body is serialised directly (``response_model`` documents it): FastAPI would validate
    # and encode the model again, a noticeable share of the per-request CPU at hundreds of req/s.
    @app.post(ANSWER_PATH, response_model=AnswerResponse, responses={400: {"description": QUESTION_REQUIRED}})
    async def answer(request: AnswerRequest) -> Response:
        if not request.question.strip():
            raise HTTPException(status_code=400, detail=QUESTION_REQUIRED)
        body = {"answer": baseline.answer(request.question), "device": device}
        return Response(content=orjson.dumps(body), media_type="application/json")

    @app.get(HEALTH_PATH)
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "device": device, "training_rows": len(baseline)}

    return app


def app_from_environment() -> FastAPI:
    """App factory for uvicorn workers (``--workers N``): fits on the store the environment names."""
    return create_app(baseline_from_store())


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    workers: int = 1,
    log_level: str = "info",
    access_log: bool = False,
    store: ObjectStore | None = None,
) -> None:
    """Fit the baseline on the training split and serve it until interrupted.

    A missing split raises :class:`MissingInputError` before anything listens.
    """
    store = store or ObjectStore.from_settings()
    common = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": access_log,
        "loop": "auto",  # uvloop when installed
        "http": "auto",  # httptools when installed
    }
    if workers > 1:
        # Each worker process fits its own copy; check the split here so the error comes once.
        if not store.exists(layout.SPLIT_KEYS["training"]):
            raise MissingInputError(training_split_missing_message(store))
        print(f"serving the nearest-question baseline with {workers} workers on http://{host}:{port}", file=sys.stderr)
        uvicorn.run("medqa_assets.serving.endpoint:app_from_environment", factory=True, workers=workers, **common)
        return
    baseline = baseline_from_store(store)
    app = create_app(baseline)
    print(
        f"serving the nearest-question baseline ({len(baseline)} training rows from "
        f"{store.uri(layout.SPLIT_KEYS['training'])}) on http://{host}:{port}",
        file=sys.stderr,
    )
    uvicorn.run(app, **common)


@contextlib.contextmanager
def serve_in_background(app: FastAPI, host: str = "127.0.0.1", *, startup_timeout: float = 10.0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a daemon thread on a free port; yields its base URL.

    For tests and tools: the socket is bound before the server starts, so there is no race for
    the port, and the server is stopped when the block ends.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    # log_config=None: uvicorn would otherwise run logging.config.dictConfig, which closes every
    # handler of the host process (pytest's captures, absl's stream handler among them)
    config = uvicorn.Config(
        app, log_config=None, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"uvicorn-{port}")
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the test server on {host}:{port} did not start")
            time.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
