"""The reference endpoint: the baseline's logic, and the HTTP contract against a real uvicorn server."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest

from medqa_assets.cli import main
from medqa_assets.serving import MissingInputError
from medqa_assets.serving.baseline import NearestQuestionBaseline, baseline_from_store
from medqa_assets.serving.endpoint import create_app, detect_device, serve, serve_in_background
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore

TRAINING = pd.DataFrame(
    {
        "question": [
            "What is (are) asthma ?",
            "What are the symptoms of diabetes ?",
            "How to diagnose glaucoma ?",
            "What are the treatments for gout ?",
            None,
            "What causes migraine ?",
        ],
        "answer": [
            "Asthma is a chronic disease of the airways.",
            "Increased thirst, frequent urination and fatigue.",
            "An eye exam measures the pressure inside the eye.",
            "Anti-inflammatory drugs and colchicine.",
            "a row without a question is skipped",
            "  ",  # an empty answer: skipped too
        ],
        "question_id": [1, 2, 3, 4, 5, 6],
    }
)


@pytest.fixture(scope="module")
def baseline() -> NearestQuestionBaseline:
    return NearestQuestionBaseline().fit(TRAINING)


@pytest.fixture(scope="module")
def base_url(baseline: NearestQuestionBaseline):
    with serve_in_background(create_app(baseline)) as url:
        yield url


# -- the baseline, without HTTP ---------------------------------------------------------------------
def test_baseline_answers_with_the_nearest_training_answer(baseline: NearestQuestionBaseline) -> None:
    assert len(baseline) == 4  # the row without a question and the one with a blank answer are skipped
    assert baseline.answer("what are the symptoms of diabetes") == "Increased thirst, frequent urination and fatigue."
    assert baseline.answer("gout treatment options?") == "Anti-inflammatory drugs and colchicine."
    match = baseline.nearest("How is glaucoma diagnosed?")
    assert match.question == "How to diagnose glaucoma ?" and 0 < match.score <= 1


def test_baseline_scores_equal_scikit_learn_cosine(baseline: NearestQuestionBaseline) -> None:
    matrix = baseline.vectorizer.transform(baseline.questions)
    for question in ["asthma symptoms", "what causes diabetes and gout", "unknown words only", ""]:
        expected = (baseline.vectorizer.transform([question]) @ matrix.T).toarray().ravel()
        np.testing.assert_allclose(baseline.scores(question), expected, atol=1e-12)


def test_baseline_refuses_unusable_training_data() -> None:
    with pytest.raises(ValueError, match="no row with both"):
        NearestQuestionBaseline().fit(pd.DataFrame({"question": ["q"], "answer": [None]}))
    with pytest.raises(ValueError, match="answer"):
        NearestQuestionBaseline().fit(pd.DataFrame({"question": ["q"]}))
    with pytest.raises(ValueError, match="fitted"):
        create_app(NearestQuestionBaseline())


def test_baseline_from_store_reads_the_training_split(tmp_path) -> None:
    store = ObjectStore(str(tmp_path))
    store.write_jsonl(layout.SPLIT_KEYS["training"], TRAINING)
    assert baseline_from_store(store).answer("asthma?") == "Asthma is a chronic disease of the airways."


def test_missing_training_split_is_one_clear_error(tmp_path) -> None:
    store = ObjectStore(str(tmp_path))
    with pytest.raises(MissingInputError) as error:
        serve(port=0, store=store)
    message = str(error.value)
    assert store.uri(layout.SPLIT_KEYS["training"]) in message
    assert "dagster job execute -m medqa_assets.definitions -j offline_etl" in message
    assert "MEDQA_STORE_URL" in message


def test_cli_serve_without_split_exits_2_with_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MEDQA_STORE_URL", str(tmp_path / "empty-store"))
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the training split is missing at ") and err.count("\n") == 1
    assert "offline_etl" in err


# -- the HTTP contract --------------------------------------------------------------------------------
def test_answer_200_with_the_nearest_answer(base_url: str) -> None:
    response = httpx.post(f"{base_url}/api/v1/answer", json={"question": "How do you diagnose glaucoma?"})
    assert response.status_code == 200
    assert response.json() == {"answer": "An eye exam measures the pressure inside the eye.", "device": detect_device()}
    assert response.json()["device"] in ("cpu", "cuda")


def test_slice_is_optional_and_accepted(base_url: str) -> None:
    for body in (
        {"question": "asthma", "slice": "cardio"},
        {"question": "asthma", "slice": None},
        {"question": "asthma"},
    ):
        response = httpx.post(f"{base_url}/api/v1/answer", json=body)
        assert response.status_code == 200, body
        assert response.json()["answer"] == "Asthma is a chronic disease of the airways."


@pytest.mark.parametrize("question", ["", "   ", "\n\t "])
def test_empty_question_is_400(base_url: str, question: str) -> None:
    response = httpx.post(f"{base_url}/api/v1/answer", json={"question": question, "slice": "x"})
    assert response.status_code == 400
    assert response.json() == {"detail": "question is required"}


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"slice": "x"}',  # no question
        b'{"question": 123}',
        b'{"question": null}',
        b'{"question": "ok", "slice": 5}',
    ],
)
def test_malformed_body_is_422(base_url: str, content: bytes) -> None:
    response = httpx.post(f"{base_url}/api/v1/answer", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "detail" in response.json() and isinstance(response.json()["detail"], list)


def test_healthz(base_url: str) -> None:
    response = httpx.get(f"{base_url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "device": detect_device(), "training_rows": 4}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_render_without_internet(base_url: str, page: str) -> None:
    """Swagger UI and ReDoc come from the installed package: every script and stylesheet the page
    loads is served by the endpoint itself (the default pages load them from a CDN)."""
    import re

    html = httpx.get(f"{base_url}{page}").text
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+\.(?:js|css))["']""", html)
    assert assets, html
    for asset in assets:
        assert asset.startswith("/"), f"{page} loads {asset} from outside the endpoint"
        response = httpx.get(f"{base_url}{asset}")
        assert response.status_code == 200 and len(response.content) > 10_000, asset
