"""``python -m dashboard [streamlit options]``: the dashboard's Streamlit server, warmed up.

The same as ``streamlit run dashboard/app.py [options]``, except that the libraries the tabs use
(pandas, Arrow, Plotly, scipy's sparse matrices) and the dashboard's own modules are imported,
and Plotly's templates loaded, before the server accepts its first request. The script runs in
this process, so the first visitor does not wait about half a second for imports.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"
PRELOADED = [
    "pandas",
    "pyarrow.json",
    "plotly.express",
    "plotly.graph_objects",
    "scipy.sparse",
    "scipy.spatial.distance",
    "dashboard.data",
    "dashboard.explorer",
    "dashboard.drift",
    "dashboard.views.offline",
    "dashboard.views.retraining",
    "dashboard.views.drift",
    "dashboard.views.records",
]


def preload() -> None:
    """Import what the tabs import, and build one throwaway figure (Plotly's first costs 0.1 s more)."""
    for module in PRELOADED:
        importlib.import_module(module)
    import plotly.express as px

    px.bar(x=["a"], y=[1], text_auto=",d").to_plotly_json()


def main(argv: list[str] | None = None) -> None:
    root = str(APP.parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    preload()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(APP), *(sys.argv[1:] if argv is None else argv)]
    cli.main()


if __name__ == "__main__":
    main()
