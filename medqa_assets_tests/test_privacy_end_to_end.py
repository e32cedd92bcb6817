"""No personal identifier leaves the raw inputs: a version built from logs with personal data in
questions, answers, ``symptoms`` and rejected records, then every derived object in the store, the
Dagster event log and run records, a real MLflow server (runs, inputs, artifacts) and what the
dashboard sends to Chromium are searched for the identifiers, verbatim."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
from mlflow import MlflowClient

from medqa_assets.lineage import EXPERIMENT_NAME
from medqa_assets.retraining.tick import tick_and_run
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore
from medqa_assets_tests.test_dashboard_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    require_chromium,
    streamlit_server,
    wait_idle,
)

# Invented people and numbers; each string must never appear outside the raw inputs.
IDENTIFIERS = [
    "Tess",
    "Marlow",
    "tess.marlow77@gmail.com",
    "503-555-0177",
    "318-44-2907",
    "00771245",
    "2218 Birchwood",
    "Priyanka",
    "4111 1111 1111 1111",
    "81.92.14.207",
    "facebook.com/tess.marlow.77",
    "Okwuosa",
    "555-0166",
    "July 9, 1941",
    "PZ4418823K",
]
GOOD = [
    {
        "ts": "2026-11-20T10:00:00Z",
        "question": "Hi, my name is Tess Marlow and my email is tess.marlow77@gmail.com. Is 40 mg of furosemide a lot?",
        "answer": "Hi Tess, 40 mg once a day is a common dose. Ask your doctor before changing it.",
        "symptoms": ["swollen ankles", "call me at 503-555-0177"],
        "slice": "a",
    },
    {
        "ts": "2026-11-20T10:01:00Z",
        "question": "My SSN is 318-44-2907 and the portal says my MRN 00771245 is locked. What do I do?",
        "answer": "Do not share your social security number in chat. The records office can unlock the portal.",
        "symptoms": ["none"],
    },
    {
        "ts": "2026-11-20T10:02:00Z",
        "question": "We live at 2218 Birchwood Ave. My daughter Priyanka has a fever of 102. Should we go in?",
        "answer": "A fever of 102 F in a child is common; give fluids and call your pediatrician if it lasts.",
        "symptoms": ["fever", "insulin pump serial PZ4418823K"],
    },
]
REJECTED = [
    # missing answer
    {
        "ts": "2026-11-20T10:03:00Z",
        "question": "My visa 4111 1111 1111 1111 was charged twice",
        "symptoms": ["IP 81.92.14.207"],
    },
    # invalid timestamp
    {
        "timestamp": "yesterday",
        "question": "My grandmother is 96, see https://www.facebook.com/tess.marlow.77 for her photos",
        "model_response": "ok",
    },
    # the answer of a request that timed out
    {"ts": "2026-11-20T10:04:00Z", "question": "I was born on July 9, 1941, is that old for a hip?", "answer": ""},
]
BROKEN_LINE = b'{"question": "Dr. Okwuosa said my A1c is fine, call (503) 555-0166" broken\n'
PLACEHOLDERS = ("[NAME]", "[EMAIL]", "[SSN]", "[ID]", "[ADDRESS]", "[CARD]", "[URL]")


def write_logs(store: ObjectStore) -> None:
    lines = b"".join(json.dumps(record).encode() + b"\n" for record in GOOD + REJECTED)
    store.write_bytes(layout.new_raw_log_key("chat-app.jsonl"), lines + BROKEN_LINE)


def raw_input(key: str) -> bool:
    """Where raw inputs may live (and for how long: see test_raw_retention)."""
    return (
        key.startswith((layout.RAW_LOGS_PREFIX, layout.ARCHIVE_PREFIX))
        or key.startswith(layout.QUARANTINE_PREFIX)
        and "/files/" in key
    )


def leaks(text: str) -> list[str]:
    return [identifier for identifier in IDENTIFIERS if identifier in text]


def test_no_identifier_leaves_the_raw_inputs(
    local_retraining_store: ObjectStore, tracking: MlflowClient, tmp_path: Path
) -> None:
    store = local_retraining_store
    write_logs(store)
    with dg.instance_for_test() as instance:
        assert dict(tick_and_run(instance)) == {"v1": True}

        # 1. every object outside the raw inputs
        derived = {item.key: store.read_bytes(item.key).decode("utf-8", "replace") for item in store.list("")}
        derived = {key: text for key, text in derived.items() if not raw_input(key)}
        assert layout.retraining_data_key("v1") in derived
        for key, text in derived.items():
            assert not leaks(text), f"{key} holds {leaks(text)}"
        training = derived[layout.retraining_data_key("v1")]
        quarantined = derived[layout.quarantine_prefix("v1") + "records.jsonl"]
        assert "[EMAIL]" in training and "[SSN]" in training and "[ADDRESS]" in training
        assert "[CARD]" in quarantined and "[URL]" in quarantined and "[NAME]" in quarantined
        assert any(leaks(store.read_bytes(i.key).decode()) for i in store.list(layout.ARCHIVE_PREFIX))  # real data

        # 2. the Dagster event log and run records
        runs = instance.get_runs()
        assert runs
        for run in runs:
            text = json.dumps([run.run_config, run.tags], default=str)
            text += "\n".join(dg.serialize_value(event) for event in instance.all_logs(run.run_id))
            assert not leaks(text), f"run {run.run_id} ({run.job_name}): {leaks(text)}"

    # 3. MLflow: params, tags, metrics, dataset inputs and every artifact of the lineage runs
    experiment = tracking.get_experiment_by_name(EXPERIMENT_NAME)
    metadata_uri = store.uri(layout.retraining_metadata_key("v1"))
    [run] = tracking.search_runs([experiment.experiment_id], filter_string=f"params.metadata_uri = '{metadata_uri}'")
    texts = [json.dumps([run.data.params, run.data.tags, sorted(run.data.metrics)])]
    for dataset_input in run.inputs.dataset_inputs:
        dataset = dataset_input.dataset
        texts.append(json.dumps([dataset.name, dataset.schema, dataset.profile, dataset.source]))
    downloaded = Path(tracking.download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts")))
    artifacts = [path for path in downloaded.rglob("*") if path.is_file()]
    assert artifacts
    texts += [path.read_text(errors="replace") for path in artifacts]
    assert not leaks("\n".join(texts)), leaks("\n".join(texts))

    # 4. the dashboard: the page and everything its server sends to the browser
    require_chromium()
    from playwright.sync_api import sync_playwright

    frames: list[str] = []
    with streamlit_server(store.url, tmp_path / "streamlit.log") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on(
                "websocket",
                lambda socket: socket.on(
                    "framereceived",
                    lambda payload: frames.append(
                        payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
                    ),
                ),
            )
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_role("tab", name="Retraining data").wait_for(timeout=30_000)
            pages = []
            sections = {"Retraining data": ["Counts", "Data", "Quality", "Quarantine and manifest"]}
            for name in ("Offline MedQuAD data", "Retraining data", "Drift", "Records"):
                page.get_by_role("tab", name=name).click()
                wait_idle(page)
                pages.append(page.content())
                for shown in sections.get(name, []):  # every section of the tab
                    page.locator('[data-testid="stButtonGroup"]').get_by_text(shown, exact=True).click()
                    wait_idle(page)
                    pages.append(page.content())
            # the record explorer, on every dataset that holds text from production logs
            for kind in ("retraining version: ", "quarantine: "):
                page.locator('[data-testid="stSelectbox"]').filter(has_text="Dataset").click()
                page.get_by_role("option", name=re.compile("^" + kind)).first.click()
                wait_idle(page)
                pages.append(page.content())
        finally:
            browser.close()
    sent = "\n".join(frames + pages)
    assert "[CARD]" in sent, "the quarantine table did not reach the browser: nothing was checked"
    assert not leaks(sent), leaks(sent)
