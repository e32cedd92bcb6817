"""Tab "Records": explore any split, production set, retraining version or quarantine record by
record: filter, page through, download what the filter selects as CSV or JSON Lines."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import data, explorer
from dashboard.views.common import cached, missing, sample_note, section
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore

# Text that came from production logs is shown and downloaded only through the scrubber.
SCRUBBED_KINDS = {"retraining version", "quarantine"}
SCRUBBED_COLUMNS = ["question", "answer", "record", "source_file", "slice"]


def load(store: ObjectStore, dataset: explorer.Dataset) -> data.Table | None:
    """The dataset's rows (an even sample of a large object), with its explorer columns."""
    if dataset.kind == "quarantine":
        table = data.read_jsonl(store, dataset.key, data.QUARANTINE_COLUMNS, sample_bytes=data.SAMPLE_BYTES)
        if table is None:
            return None
        frame = explorer.with_question_and_answer(table.frame)
    else:
        read = [c for c in dataset.columns if c != "question_type"] if dataset.kind == "retraining version" else None
        table = data.read_jsonl(store, dataset.key, read or list(dataset.columns), sample_bytes=data.SAMPLE_BYTES)
        if table is None:
            return None
        frame = table.frame
        if dataset.kind == "retraining version":
            frame = frame.assign(question_type=data.attach_question_types(frame, split_question_types(store)))
    frame = frame.reindex(columns=list(dataset.columns))
    return data.Table(frame, table.sampled, table.bytes_read, table.bytes_total, table.bad_lines)


def split_question_types(store: ObjectStore) -> pd.DataFrame | None:
    """row_id -> question_type over every split, to type the records of retraining versions."""
    frames = []
    for key in layout.SPLIT_KEYS.values():
        table = data.read_jsonl(store, key, ["row_id", "question_type"])
        if table is not None:
            frames.append(table.frame)
    return pd.concat(frames, ignore_index=True) if frames else None


def shown(dataset: explorer.Dataset, frame: pd.DataFrame) -> pd.DataFrame:
    if dataset.kind in SCRUBBED_KINDS:
        return data.scrubbed(frame, [c for c in SCRUBBED_COLUMNS if c in frame.columns])
    return frame


def render(store: ObjectStore) -> None:
    listing = data.listing(store, "data/")
    versions = data.list_versions(store)
    found = explorer.datasets(set(listing), versions.complete)
    if not found:
        missing("No records in the store yet (no splits, production sets or versions)", [data.OFFLINE_COMMAND])
        return
    with section("Record explorer"):
        top = st.columns([2, 3])
        dataset = top[0].selectbox("Dataset", found, format_func=lambda d: d.label, key="explorer_dataset")
        token = listing.get(dataset.key, "")
        types_key = tuple(listing.get(k, "") for k in layout.SPLIT_KEYS.values())
        table = cached("explorer:rows", (store.url, dataset.key, token, types_key), lambda: load(store, dataset))
        if table is None:
            st.info(f"{dataset.key} disappeared from the store; reload the page.")
            return
        frame = table.frame
        keyword = top[1].text_input(
            "Keyword (question, answer, focus or record; case-insensitive)", key=f"explorer_keyword_{dataset.label}"
        )
        choices = explorer.facets(frame)
        chosen: dict[str, list[str]] = {}
        if choices:
            columns = st.columns(len(choices))
            for column, (name, values) in zip(columns, choices.items(), strict=True):
                chosen[name] = column.multiselect(
                    explorer.FACET_LABELS[name], values, key=f"explorer_{name}_{dataset.label}"
                )
        record_filter = explorer.RecordFilter.of(chosen, keyword)
        selected = cached(
            "explorer:filtered",
            (store.url, dataset.key, token, types_key, record_filter),
            lambda: explorer.filter_records(frame, record_filter),
        )
        _page_and_downloads(dataset, selected, len(frame))
        sample_note(table.info(), dataset.label)


def _page_and_downloads(dataset: explorer.Dataset, selected: pd.DataFrame, total: int) -> None:
    controls = st.columns([1, 1, 3])
    size = controls[0].selectbox("Rows per page", explorer.PAGE_SIZES, index=1, key="explorer_page_size")
    pages = explorer.page_count(len(selected), size)
    page = int(controls[1].number_input(f"Page (of {pages:,})", 1, pages, 1, key=f"explorer_page_{pages}_{size}"))
    rows = explorer.page_of(selected, page, size)
    first = (page - 1) * size + 1 if len(selected) else 0
    controls[2].markdown(
        f"**{len(selected):,}** of {total:,} records match; showing {first:,}–{first + len(rows) - 1:,}."
        if len(selected)
        else f"No record of {total:,} matches."
    )
    st.dataframe(shown(dataset, rows), hide_index=True, width="stretch", height=min(36 * (len(rows) + 1) + 3, 600))

    def download(render_bytes: Any) -> Any:
        return lambda: render_bytes(shown(dataset, selected))  # built on click, not on every rerun

    buttons = st.columns(4)
    formats = (
        ("CSV", explorer.to_csv, "csv", "text/csv"),
        ("JSON Lines", explorer.to_jsonl, "jsonl", "application/jsonl"),
    )
    for column, (label, render_bytes, suffix, mime) in zip(buttons, formats, strict=False):
        column.download_button(
            f"Download {label}",
            download(render_bytes),
            file_name=f"{dataset.file_stem}.{suffix}",
            mime=mime,
            on_click="ignore",
            key=f"explorer_{suffix}",
            disabled=selected.empty,
        )
    buttons[2].caption(f"Downloads hold all {len(selected):,} matching records, not only this page.")
