"""Helpers the tabs share: error-isolating sections, "no data yet" messages, cached charts."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard import data

PLOTLY_CONFIG = {"displaylogo": False}
OVERLAY_COLOURS = ["#1c83e1", "#ff8700"]  # training vs production: two colours that stay apart when overlaid


@contextlib.contextmanager
def section(what: str) -> Iterator[None]:
    """Run one item of a tab; if it fails, show an error for that item and carry on with the rest."""
    try:
        yield
    except data.DataError as error:
        st.error(f"{what}: {data.describe_error(error)}")
    except Exception as error:  # one broken item must never take the page down
        st.error(f"{what} could not be shown: {data.describe_error(error)}")


def missing(what: str, commands: list[str], note: str = "") -> None:
    """Say that ``what`` is not in the store yet and which commands produce it."""
    st.info(f"{what}. {note or 'Produce it with:'}", icon=":material/info:")
    st.code("\n".join(commands), language="bash")


def retraining_commands() -> list[str]:
    return [
        "# 1. replay production traffic against the endpoint (logs land in retraining_data_raw/)",
        data.SIMULATE_COMMAND,
        "# 2. let raw_logs_sensor start retraining_etl (dagster dev -w workspace.yaml), or run the job yourself:",
        data.RETRAINING_COMMAND,
    ]


def follow_newest(key: str, newest: str | None) -> None:
    """Keep a version picker on the newest version when a new one arrives, unless the user chose an older one."""
    seen_key = f"{key}__newest_seen"
    previous = st.session_state.get(seen_key)
    if previous is not None and previous != newest and st.session_state.get(key) in (previous, None):
        st.session_state[key] = newest
    st.session_state[seen_key] = newest


def cached(kind: str, key: tuple, build: Callable[[], Any]) -> Any:
    """``build()`` once per ``(kind, key)``; ``key`` must name every input (store URL, version tokens, ...).

    For derived results (figures, profiles): held in memory and shared, never copied, so callers treat
    them as read-only. Raw reads are cached separately (``st.cache_data`` in :mod:`dashboard.data`).
    """
    return _cached(kind, key, build)


@st.cache_resource(show_spinner=False, max_entries=256)
def _cached(kind: str, key: tuple, _build: Callable[[], Any]) -> Any:
    return _build()


def chart(key: str, cache_key: tuple, build: Callable[[], Any], height: int = 340) -> None:
    """A plotly express figure, built once per (chart, data version) and drawn with ``st.plotly_chart``."""

    def styled() -> Any:
        fig = build()
        fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend_title_text="")
        return fig

    fig = cached(f"chart:{key}:{height}", cache_key, styled)
    st.plotly_chart(fig, width="stretch", key=key, config=PLOTLY_CONFIG)


def facets(fig: Any, *, independent_y: bool = False) -> Any:
    """Facet titles without the "column=" prefix, and an x axis of its own per facet."""
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))
    fig.update_xaxes(matches=None, showticklabels=True)
    if independent_y:
        fig.update_yaxes(matches=None, showticklabels=True)
    return fig


def binned_figure(histograms: dict[str, pd.DataFrame], title: str, x_label: str, *, overlay: bool) -> Any:
    """Pre-binned histograms (from :func:`dashboard.data.histogram`), one facet per entry of ``histograms``.

    Share per bin, one colour per group: overlaid bars for two groups, step lines for more.
    """
    frame = pd.concat([h.assign(facet=name) for name, h in histograms.items()], ignore_index=True)
    frame["words"] = (frame["bin_start"] + frame["bin_end"]) / 2
    labels = {"words": x_label, "share": "share of rows", "group": "", "label": x_label, "facet": ""}
    hover = {"label": True, "count": True, "words": False, "facet": False}
    common = {
        "x": "words",
        "y": "share",
        "color": "group",
        "facet_col": "facet",
        "title": title,
        "labels": labels,
        "hover_data": hover,
        "facet_col_spacing": 0.08,
    }
    if overlay:
        fig = px.bar(frame, barmode="overlay", opacity=0.6, color_discrete_sequence=OVERLAY_COLOURS, **common)
        fig.update_layout(bargap=0.05)
    else:
        fig = px.line(frame, line_shape="hvh", **common)
    fig.update_yaxes(tickformat=".0%")
    return facets(fig)


def lengths_chart(
    key: str,
    cache_key: tuple,
    questions: pd.DataFrame,
    answers: pd.DataFrame,
    title: str,
    *,
    overlay: bool,
    height: int,
) -> None:
    """Words per question and per answer, side by side (pre-binned by :func:`dashboard.data.histogram`)."""
    chart(
        key,
        cache_key,
        lambda: binned_figure({"question": questions, "answer": answers}, title, "words", overlay=overlay),
        height=height,
    )


def key_value_table(mapping: dict[str, Any]) -> pd.DataFrame:
    """A flat two-column view of a (possibly nested) mapping, values as text."""
    rows = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            rows.append((prefix, value if isinstance(value, str) else str(value)))

    walk("", mapping)
    return pd.DataFrame(rows, columns=["field", "value"])


def sample_note(info: data.SampleInfo, what: str) -> None:
    """Say when a chart is drawn from a sample of a large object, and about skipped lines."""
    if info.sampled:
        st.caption(
            f"{what}: drawn from an even sample of {info.rows:,} records "
            f"({info.fraction:.1%} of {info.bytes_total / 1e6:,.0f} MB, about {info.estimated_rows:,} records in all)."
        )
    if info.bad_lines:
        st.warning(f"{what}: {info.bad_lines:,} lines were not JSON objects and were skipped.")


def short_time(value: Any) -> str:
    """An ISO timestamp as date and minute in UTC, for metrics (the full value goes in the help)."""
    stamp = pd.to_datetime(value, utc=True, errors="coerce", format="ISO8601") if value else pd.NaT
    return "–" if pd.isna(stamp) else stamp.strftime("%Y-%m-%d %H:%M UTC")


COUNT_LABELS = ",d"  # bar labels as 31,034, never 31.034k


def section_picker(key: str, sections: list[str]) -> str:
    """Which part of a tab to show: only that part reads and draws, so a view holds a few charts
    (the browser spends about 0.2 s on each Plotly chart, every time the page loads)."""
    chosen = st.segmented_control("Show", sections, default=sections[0], key=key, label_visibility="collapsed")
    return chosen or sections[0]
