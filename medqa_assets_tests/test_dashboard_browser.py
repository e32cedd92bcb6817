"""The dashboard in a real browser: ``streamlit run`` against a populated store, driven by Chromium.

Chromium comes from the Debian package (``apt-get install -y chromium``), not Playwright's download.
Without it the test fails under CI (CI=true) and is skipped, with the reason, elsewhere.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore
from medqa_assets_tests import dashboard_fixtures as fx

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
REPO = fx.REPO_ROOT
APP = REPO / "dashboard" / "app.py"
SCREENSHOTS = REPO / "test-output" / "dashboard"
SECRET = "browser-test-secret-Kp2Vd9"
# Tab -> charts it draws with the fixture store (see test_dashboard_apptest for what they are).
TABS = {"Offline MedQuAD data": 2, "Retraining data": 2, "Drift": 3, "Records": 0}  # first sections
STARTUP_TIMEOUT_S = 30
VIEWPORT = {"width": 1400, "height": 900}
RENDER_TIMEOUT_MS = 20_000


def require_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    message = f"{CHROMIUM} is missing: install it with `apt-get update && apt-get install -y chromium`"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message + " (required under CI)", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@contextlib.contextmanager
def streamlit_server(store_url: str, log: Path, app: Path = APP) -> Iterator[str]:
    """The dashboard as the README starts it (``python -m dashboard``; another ``app`` with
    ``streamlit run``) on a free loopback port; yields its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MEDQA_"))}
    env.update(MEDQA_STORE_URL=store_url, AWS_SECRET_ACCESS_KEY=SECRET, AWS_ACCESS_KEY_ID="browser-test-key-id")
    launch = ["dashboard"] if app == APP else ["streamlit", "run", str(app)]
    command = [
        sys.executable,
        "-m",
        *launch,
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
    ]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                tail = log.read_text()[-3000:]
                raise RuntimeError(f"streamlit did not become healthy in {STARTUP_TIMEOUT_S}s:\n{tail}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_charts(page, expected: int) -> int:
    """Wait until the open tab shows ``expected`` drawn plotly charts and the script run is over."""
    charts = page.locator('[role="tabpanel"]:visible .js-plotly-plot')
    page.wait_for_function(
        """(expected) => {
            const panel = [...document.querySelectorAll('[role="tabpanel"]')].find(p => p.offsetParent !== null);
            if (!panel) return false;
            const drawn = [...panel.querySelectorAll('.js-plotly-plot')].filter(p => p.querySelector('.main-svg'));
            const running = document.querySelector('[data-testid="stStatusWidget"]');
            return drawn.length >= expected && !running;
        }""",
        arg=expected,
        timeout=RENDER_TIMEOUT_MS,
    )
    return charts.count()


def screenshot(page, path: Path) -> None:
    """The whole tab: Streamlit scrolls inside its main block, so grow the viewport to fit it first."""
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight ?? 0")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], min(height, 8000))})
    page.wait_for_timeout(300)  # charts re-lay out to the new size
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(VIEWPORT)


def test_every_tab_renders_in_chromium(tmp_path: Path) -> None:
    require_chromium()
    from playwright.sync_api import sync_playwright

    store_root = tmp_path / "object_store"
    fx.populate_store(ObjectStore(str(store_root)))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with streamlit_server(str(store_root), tmp_path / "streamlit.log") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_role("tab", name=list(TABS)[0]).wait_for(timeout=RENDER_TIMEOUT_MS)
            for name, expected in TABS.items():
                page.get_by_role("tab", name=name).click()
                assert page.get_by_role("tab", name=name).get_attribute("aria-selected") == "true"
                drawn = wait_for_charts(page, expected)
                assert drawn == expected, f"{name}: {drawn} charts drawn, expected {expected}"
                assert page.locator('[data-testid="stException"]').count() == 0, f"{name}: an exception box"
                screenshot(page, SCREENSHOTS / f"{slug(name)}.png")
                html = page.content()
                assert SECRET not in html and "browser-test-key-id" not in html, f"{name}: a credential on the page"
            assert str(store_root) in page.content()  # the store URL is shown
            explore_and_download(page, ObjectStore(str(store_root)), tmp_path)
        finally:
            browser.close()
    for name in TABS:
        assert (SCREENSHOTS / f"{slug(name)}.png").stat().st_size > 10_000


def independently_filtered(store: ObjectStore, key: str, question_types: list[str], keyword: str) -> pd.DataFrame:
    """What the explorer must return, computed here from the stored file."""
    frame = pd.read_json(io.BytesIO(store.read_bytes(key)), lines=True, dtype=False)
    hit = pd.Series(False, index=frame.index)
    for column in ("question", "answer", "question_focus"):
        hit |= frame[column].fillna("").str.lower().str.contains(keyword.lower(), regex=False)
    return frame[frame["question_type"].isin(question_types) & hit].reset_index(drop=True)


def explore_and_download(page, store: ObjectStore, tmp_path: Path) -> None:
    """Records tab: pick a split, filter by question type and keyword, page, download both formats."""
    key, question_types, keyword = layout.SPLIT_KEYS["training"], ["symptoms", "treatment"], "FATIGUE"
    expected = independently_filtered(store, key, question_types, keyword)
    assert 25 < len(expected) < len(pd.read_json(io.BytesIO(store.read_bytes(key)), lines=True))
    page.get_by_role("tab", name="Records").click()
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Dataset").click()
    page.get_by_role("option", name="split: training").click()
    wait_idle(page)
    for question_type in question_types:
        page.locator('[data-testid="stMultiSelect"]').filter(has_text="Question type").click()
        page.get_by_role("option", name=question_type, exact=True).click()
        page.keyboard.press("Escape")
        wait_idle(page)
    keyword_box = page.get_by_label(re.compile("^Keyword"))
    keyword_box.fill(keyword)
    keyword_box.press("Enter")
    wait_idle(page)
    summary = page.get_by_text(re.compile(r"records match"))
    assert summary.inner_text().startswith(f"{len(expected):,} of "), summary.inner_text()
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Rows per page").click()
    page.get_by_role("option", name="25", exact=True).click()
    wait_idle(page)
    page.locator('[data-testid="stNumberInput"]').filter(has_text="Page").get_by_test_id("stNumberInputStepUp").click()
    wait_idle(page)
    page.get_by_text(f"showing 26–{min(50, len(expected))}").wait_for(timeout=RENDER_TIMEOUT_MS)
    screenshot(page, SCREENSHOTS / "records.png")
    for label, read in (("Download CSV", read_csv), ("Download JSON Lines", read_jsonl)):
        with page.expect_download(timeout=RENDER_TIMEOUT_MS) as download:
            page.get_by_role("button", name=label).click()
        target = tmp_path / download.value.suggested_filename
        download.value.save_as(target)
        got = read(target)
        assert len(got) == len(expected), label
        columns = list(expected.columns)
        assert list(got.columns[:2]) == ["question", "answer"], label  # question and answer first
        pd.testing.assert_frame_equal(
            got[columns].astype("string"), expected[columns].astype("string"), check_dtype=False, obj=label
        )


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


def read_jsonl(path: Path) -> pd.DataFrame:
    return pd.read_json(path, lines=True, dtype=False)


def wait_idle(page) -> None:
    """Until the script run that the last interaction started is over."""
    page.wait_for_timeout(300)  # the rerun the interaction started has begun
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=RENDER_TIMEOUT_MS
    )
