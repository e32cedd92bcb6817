"""Benchmark: time from request to the first chart, and to the complete render, of each dashboard tab in
headless Chromium.

    .venv/bin/python bench/dashboard.py [--records 1000000] [--store DIR] [--warm-runs 3] [--screenshots DIR]

Builds a store with MedQuAD-sized splits (a copy of ``object_store/``'s real splits if it has them,
else the bundled MedQuAD snapshot split by the pipeline's own transforms, else ~10k/3k/3k synthetic
rows) and retraining versions, the newest holding ``--records`` records. Then, per tab: a fresh
``streamlit run`` server (cold: empty caches, first script run in a new process) and a page load
of ``/?tab=<tab>``, then reloads of the same page on the same server (warm). A render is complete
when every chart the tab draws is on screen and the script run is over.

Reported per tab: seconds to its first chart (the target: cold <= 3 s, warm <= 1 s) and to the
complete tab, side by side with trivial Streamlit apps on the same machine and browser.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "medqa_assets_tests"))

import dashboard_fixtures as fx  # noqa: E402
import pandas as pd  # noqa: E402
from test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, screenshot, slug, streamlit_server  # noqa: E402

from medqa_assets.storage import layout  # noqa: E402
from medqa_assets.storage.object_store import ObjectStore  # noqa: E402

COLD_TARGET_S, WARM_TARGET_S = 3.0, 1.0
# Charts per tab as it opens (on its first section) with this store; the Records tab draws none:
# its first table is what the user waits for.
TABS = {"Offline MedQuAD data": 2, "Retraining data": 2, "Drift": 3, "Records": 0}
SMALL_VERSIONS = 2  # v1, v2 small; v3 is the big one


def medquad_splits() -> tuple[dict[str, pd.DataFrame], str]:
    """MedQuAD-sized splits and where they came from."""
    real = ObjectStore(str(REPO / "object_store"))
    if all(real.exists(key) for key in layout.SPLIT_KEYS.values()):
        return {name: real.read_jsonl(key) for name, key in layout.SPLIT_KEYS.items()}, "object_store/ (real splits)"
    bundled = REPO / "medqa_assets" / "medquad" / "bundled" / "medquad.parquet"
    if bundled.exists():
        from medqa_assets.medquad.clean import clean_medquad
        from medqa_assets.splitting.transforms import split_dataset

        frames = split_dataset(clean_medquad(pd.read_parquet(bundled)).frame).splits
        return frames, "bundled MedQuAD split by medqa_assets.splitting.transforms"
    sizes = {"training": 10_000, "validation": 3_000, "evaluation": 3_000}
    return {name: fx.split_frame(n, i, name) for i, (name, n) in enumerate(sizes.items())}, "synthetic"


def build_store(root: Path, records: int) -> str:
    store = ObjectStore(str(root))
    frames, origin = medquad_splits()
    fx.write_offline(store, frames, sets=5)
    pool = frames["evaluation"][["question", "answer", "row_id"]]
    for number in range(1, SMALL_VERSIONS + 1):
        fx.write_version(store, number, pool, 1000 * number)
    started = time.perf_counter()
    fx.write_version(store, SMALL_VERSIONS + 1, pool, records)
    store.write_bytes(layout.VERSION_TRACKER, f"{SMALL_VERSIONS + 1}\n".encode())
    size = store.info(layout.retraining_data_key(layout.version_name(SMALL_VERSIONS + 1))).size
    counts = ", ".join(f"{name} {len(frame):,}" for name, frame in frames.items())
    return (
        f"splits: {origin} ({counts}); newest version v{SMALL_VERSIONS + 1}: {records:,} records, "
        f"{size / 1e9:.2f} GB (written in {time.perf_counter() - started:.0f} s)"
    )


def wait_rendered(page, expected: int, *, complete: bool, timeout_ms: int = 60_000) -> None:
    """Until the open tab shows ``expected`` drawn charts (its table when it draws none); with
    ``complete``, also until the script run is over."""
    page.wait_for_function(
        """([expected, complete]) => {
            const panel = [...document.querySelectorAll('[role="tabpanel"]')].find(p => p.offsetParent !== null);
            if (!panel) return false;
            const drawn = [...panel.querySelectorAll('.js-plotly-plot')].filter(p => p.querySelector('.main-svg'));
            const table = panel.querySelector('[data-testid="stDataFrame"]');
            const ready = expected > 0 ? drawn.length >= expected : !!table;
            const running = !!document.querySelector('[data-testid="stStatusWidget"]');
            return ready && !(complete && running) && !document.querySelector('[data-testid="stException"]');
        }""",
        arg=[expected, complete],
        timeout=timeout_ms,
        polling=25,
    )
    if page.locator('[data-testid="stException"]').count():
        raise RuntimeError("the page shows an exception")


def measure(page, url: str, expected: int, *, reload: bool) -> tuple[float, float]:
    """Seconds to the tab's first chart (what the user sees first), and to the complete tab."""
    started = time.perf_counter()
    if reload:
        page.reload(wait_until="commit")
    else:
        page.goto(url, wait_until="commit")
    wait_rendered(page, min(1, expected), complete=False)
    first = time.perf_counter() - started
    wait_rendered(page, expected, complete=True)
    return first, time.perf_counter() - started


SERVER_SIDE = """
import json, logging, sys, time
sys.path.insert(0, {repo!r})
logging.disable(logging.CRITICAL)
import streamlit  # imported by the server before any session starts
started = time.perf_counter()
import importlib
from dashboard import data
view = importlib.import_module({module!r})
store = data.get_store()
imported = time.perf_counter()
view.render(store)
cold = time.perf_counter()
view.render(store)
warm = time.perf_counter()
print(json.dumps({{"imports": imported - started, "cold": cold - started, "warm": warm - cold}}))
"""
VIEW_MODULES = dict(
    zip(
        TABS,
        ["dashboard.views.offline", "dashboard.views.retraining", "dashboard.views.drift", "dashboard.views.records"],
        strict=True,
    )
)
REFERENCE_APPS = {
    "(reference: empty page)": ("import streamlit as st\nst.markdown('hello')\n", 0),
    "(reference: one chart)": (
        "import streamlit as st\nimport plotly.express as px\n"
        "st.plotly_chart(px.bar(x=['a', 'b', 'c'], y=[1, 2, 3]))\n",
        1,
    ),
}


def server_side(store_root: Path) -> dict[str, dict[str, float]]:
    """Python time per tab without the browser: fresh process (cold, with imports) and a second run (warm)."""
    env = {**os.environ, "MEDQA_STORE_URL": str(store_root)}
    results = {}
    for name, module in VIEW_MODULES.items():
        code = SERVER_SIDE.format(repo=str(REPO), module=module)
        output = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        results[name] = json.loads(output.stdout.strip().splitlines()[-1])
    return results


def load_reference(page, url: str, selector: str, *, reload: bool) -> float:
    started = time.perf_counter()
    if reload:
        page.reload(wait_until="commit")
    else:
        page.goto(url, wait_until="commit")
    page.wait_for_function(
        "(s) => !!document.querySelector(s) && !document.querySelector('[data-testid=stStatusWidget]')",
        arg=selector,
        polling=25,
        timeout=60_000,
    )
    return time.perf_counter() - started


def reference(browser, log_dir: Path, warm_runs: int) -> list[tuple[str, float, float]]:
    """The same measurement on trivial Streamlit apps: what this machine and browser cost by themselves."""
    results = []
    for name, (source, charts) in REFERENCE_APPS.items():
        app = log_dir / f"reference-{charts}.py"
        app.write_text(source)
        with streamlit_server(str(log_dir), log_dir / f"reference-{charts}.log", app=app) as base:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            selector = "[data-testid=stMarkdown]" if charts == 0 else ".js-plotly-plot .main-svg"
            cold = load_reference(page, base, selector, reload=False)
            warm = statistics.median(load_reference(page, base, selector, reload=True) for _ in range(warm_runs))
            context.close()
        results.append((name, cold, warm))
    return results


Timing = tuple[float, float, float, float]  # cold first, cold complete, warm first, warm complete


def run(store_root: Path, warm_runs: int, log_dir: Path, screenshots: Path | None = None) -> list[tuple[str, Timing]]:
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for name, expected in TABS.items():
                with streamlit_server(str(store_root), log_dir / f"{name}.log") as base:
                    context = browser.new_context(viewport={"width": 1400, "height": 900})
                    page = context.new_page()
                    url = f"{base}/?tab={urllib.parse.quote(name)}"
                    cold = measure(page, url, expected, reload=False)
                    warm = [measure(page, url, expected, reload=True) for _ in range(warm_runs)]
                    if screenshots is not None:  # the tab as it opens, for the README
                        screenshots.mkdir(parents=True, exist_ok=True)
                        screenshot(page, screenshots / f"{slug(name)}.png")
                    context.close()
                warm_first = statistics.median(w[0] for w in warm)
                warm_full = statistics.median(w[1] for w in warm)
                results.append((name, (cold[0], cold[1], warm_first, warm_full)))
                print(
                    f"  {name}: cold {cold[0]:.2f} s to the first chart, {cold[1]:.2f} s complete; "
                    f"warm {', '.join(f'{w[0]:.2f}/{w[1]:.2f}' for w in warm)} s",
                    flush=True,
                )
            results.extend(
                (name, (cold, cold, warm, warm)) for name, cold, warm in reference(browser, log_dir, warm_runs)
            )
        finally:
            browser.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records in the newest retraining version")
    parser.add_argument("--store", type=Path, help="store directory to build (or reuse if it exists)")
    parser.add_argument("--warm-runs", type=int, default=3)
    parser.add_argument("--screenshots", type=Path, help="save each tab as it opens here (PNG)")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing: apt-get update && apt-get install -y chromium", file=sys.stderr)
        return 2
    temp = Path(tempfile.mkdtemp(prefix="dashboard-bench-"))
    root = args.store or temp / "object_store"
    try:
        if (root / layout.VERSION_TRACKER).exists():
            print(f"reusing the store at {root}")
        else:
            print(f"building the store at {root} ...", flush=True)
            print(build_store(root, args.records), flush=True)
        results = run(root, args.warm_runs, temp, args.screenshots)
        python = server_side(root)
    finally:
        if args.store is None:
            shutil.rmtree(temp, ignore_errors=True)
    load = os.getloadavg()[0]
    print()
    print(f"Seconds from request to render in headless Chromium ({os.cpu_count()} CPUs, load average {load:.1f}):")
    print("to the tab's first chart (its table on Records) and to the complete tab (every chart, script done).")
    print(f"Targets (first chart): cold <= {COLD_TARGET_S:g} s, warm <= {WARM_TARGET_S:g} s. 'python': the tab's")
    print("script alone, without browser or server (cold: new process incl. imports; warm: second run, cached).")
    print()
    header = ["cold first", "cold all", "warm first", "warm all", "python cold", "python warm"]
    print(f"{'tab':<26}" + "".join(f"{h:>12}" for h in header))
    for name, (cold_first, cold_full, warm_first, warm_full) in results:
        side = python.get(name)
        extra = f"{side['cold']:>12.2f}{side['warm']:>12.2f}" if side else f"{'':>12}{'':>12}"
        met = cold_first <= COLD_TARGET_S and warm_first <= WARM_TARGET_S
        flag = "" if name.startswith("(") or met else "  over target"
        print(f"{name:<26}{cold_first:>12.2f}{cold_full:>12.2f}{warm_first:>12.2f}{warm_full:>12.2f}{extra}{flag}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
