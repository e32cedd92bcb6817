"""MedQuAD data dashboard: ``python -m dashboard`` (or ``streamlit run dashboard/app.py``).

Reads the same object store as the pipeline (``MEDQA_STORE_URL``, ``MEDQA_S3_ENDPOINT_URL`` and the
AWS credentials from the environment) and answers: what data do we have, how did we get it, is it
healthy, and how does production traffic differ from what we trained on.

Only the selected tab runs (``st.tabs(..., on_change="rerun")``), and the selected tab is kept in the
URL (``?tab=...``), so a reload comes back to it.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run dashboard/app.py` puts only dashboard/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard import data  # noqa: E402

TAB_NAMES = ["Offline MedQuAD data", "Retraining data", "Drift", "Records"]
# One module per tab, imported when the tab is first opened (the Drift tab alone needs scipy.stats).
VIEWS = [
    "dashboard.views.offline",
    "dashboard.views.retraining",
    "dashboard.views.drift",
    "dashboard.views.records",
]


def main() -> None:
    st.set_page_config(page_title="MedQuAD data dashboard", page_icon=":material/monitoring:", layout="wide")
    st.title("MedQuAD data dashboard")
    try:
        store = data.get_store()
    except Exception as error:  # bad settings: say which, never a stack trace
        st.error(f"The object store cannot be opened: {data.describe_error(error)}")
        st.info("Set MEDQA_STORE_URL to a directory or s3://bucket[/prefix] (and MEDQA_S3_ENDPOINT_URL for MinIO).")
        return
    with st.sidebar:
        st.markdown("**Object store**")
        st.code(data.store_label(store), language=None, wrap_lines=True)
        st.caption("Credentials come from the environment only and are never shown.")
        st.button("Refresh", key="refresh", help="Re-read the store; new versions also appear on any rerun.")

    tabs = st.tabs(TAB_NAMES, key="tab", on_change="rerun", bind="query-params")
    for tab, name, module in zip(tabs, TAB_NAMES, VIEWS, strict=True):
        with tab:
            if tab.open is False:  # lazy: only the selected tab reads and draws
                continue
            try:
                importlib.import_module(module).render(store)
            except Exception as error:  # last line of defence: one tab's failure never shows a trace
                st.error(f"{name} could not be shown: {data.describe_error(error)}")


main()
