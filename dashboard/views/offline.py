"""Tab "Offline MedQuAD data": what the offline_etl job produced and how."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from dashboard import data
from dashboard.explorer import ordered
from dashboard.views.common import (
    COUNT_LABELS,
    cached,
    chart,
    facets,
    key_value_table,
    lengths_chart,
    missing,
    sample_note,
    section,
    section_picker,
    short_time,
)
from medqa_assets.splitting.leakage import BLOCKING_KINDS
from medqa_assets.splitting.transforms import cross_split_leakage
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore

SPLIT_PREFIX = "data/dataset-split/"
SECTIONS = ["Overview", "Distributions", "Leakage", "Sample"]


def _set_number(key: str) -> int:
    match = re.search(r"set(\d+)\.json$", key)
    return int(match.group(1)) if match else 0


def split_tables(store: ObjectStore, present: dict[str, str]) -> dict[str, data.Table]:
    """The split files that are still there, read whole."""
    tables = {name: data.read_jsonl(store, key, data.SPLIT_COLUMNS) for name, key in present.items()}
    return {name: table for name, table in tables.items() if table is not None}


def split_profile(store: ObjectStore, present: dict[str, str]) -> dict[str, Any]:
    """What the charts need from the split files: rows, question types, lengths."""
    tables = split_tables(store, present)
    frames = {name: table.frame for name, table in tables.items()}
    questions = {name: data.word_counts(frame["question"]) for name, frame in frames.items()}
    answers = {name: data.word_counts(frame["answer"]) for name, frame in frames.items()}
    return {
        "rows": {name: len(frame) for name, frame in frames.items()},
        "info": {name: table.info() for name, table in tables.items()},
        "types": data.category_distribution({name: frame["question_type"] for name, frame in frames.items()}),
        "question_lengths": data.histogram(questions),
        "answer_lengths": data.histogram(answers),
    }


def recomputed_leakage(store: ObjectStore, present: dict[str, str]) -> dict[str, int] | None:
    """Held-out rows sharing a blocking key with training, recomputed from the split files."""
    frames = {name: table.frame for name, table in split_tables(store, present).items()}
    return cross_split_leakage(frames) if len(frames) > 1 else None


def render(store: ObjectStore) -> None:
    split_tokens = data.listing(store, SPLIT_PREFIX)
    set_tokens = {k: t for k, t in data.listing(store, layout.PRODUCTION_SETS_PREFIX).items() if k.endswith(".json")}
    present = {name: key for name, key in layout.SPLIT_KEYS.items() if key in split_tokens}
    if layout.SPLIT_METADATA not in split_tokens and not present and not set_tokens:
        missing(
            "No offline MedQuAD data in the store yet (no split metadata, splits or production sets)",
            [data.OFFLINE_COMMAND],
        )
        return

    metadata: dict[str, Any] | None = None
    meta_token = split_tokens.get(layout.SPLIT_METADATA, "")
    with section(f"Split metadata ({layout.SPLIT_METADATA})"):
        if layout.SPLIT_METADATA in split_tokens:
            value = data.read_json(store, layout.SPLIT_METADATA, meta_token)
            if not isinstance(value, dict):
                raise data.DataError(f"{layout.SPLIT_METADATA} holds {type(value).__name__}, not a JSON object")
            metadata = value
        else:
            st.warning(f"{layout.SPLIT_METADATA} is missing; re-run `{data.OFFLINE_COMMAND}` to write it.")

    splits_key = (store.url, tuple((name, split_tokens[key]) for name, key in present.items()))
    shown = section_picker("offline_section", SECTIONS)
    if shown == "Overview":
        _source_and_counts(metadata)
        _dropped(metadata, (store.url, meta_token))
        _rows_per_split(store, metadata, meta_token, present, split_tokens, set_tokens)
    elif shown == "Distributions":
        if not present:
            missing("No split files in the store, so no question types or lengths", [data.OFFLINE_COMMAND])
            return
        with section("Split files"):
            profile = cached("offline:profile", splits_key, lambda: split_profile(store, present))
            for name, info in profile["info"].items():
                sample_note(info, f"Split {name} ({present[name]})")
            _question_types(profile, splits_key)
            _lengths(profile, splits_key)
    elif shown == "Leakage":
        _leakage(store, metadata, present, splits_key)
    elif present:
        _sample_viewer(store, present)
    else:
        missing("No split files in the store, so no sample", [data.OFFLINE_COMMAND])


def _lengths(profile: dict[str, Any], splits_key: tuple) -> None:
    with section("Question and answer lengths"):
        st.subheader("Question and answer lengths")
        lengths_chart(
            "offline_lengths",
            splits_key,
            profile["question_lengths"],
            profile["answer_lengths"],
            "Words per question and per answer",
            overlay=False,
            height=320,
        )
        st.caption("Share of rows per length bin and split; the longest 1% are counted in the last bin.")


def _source_and_counts(metadata: dict[str, Any] | None) -> None:
    st.subheader("Source and provenance")
    if metadata is None:
        st.caption("Not available: the split metadata could not be read.")
        return
    with section("Source and provenance"):
        initial, final = metadata.get("initial_records"), metadata.get("final_records")
        dropped = (metadata.get("dropped") or {}).get("total_dropped")
        cols = st.columns([1, 1, 1, 2])  # the creation time needs room
        cols[0].metric("Initial records", f"{initial:,}" if isinstance(initial, int) else "–")
        cols[1].metric("Final records", f"{final:,}" if isinstance(final, int) else "–")
        cols[2].metric("Dropped", f"{dropped:,}" if isinstance(dropped, int) else "–")
        cols[3].metric("Created", short_time(metadata.get("created")), help=str(metadata.get("created")))
        st.markdown(f"**Source:** {metadata.get('source') or 'not recorded'}")
        provenance = metadata.get("provenance")
        if isinstance(provenance, dict) and provenance:
            with st.expander("Provenance", expanded=True):
                st.table(key_value_table(provenance).set_index("field"))


def _dropped(metadata: dict[str, Any] | None, cache_key: tuple) -> None:
    if metadata is None:
        return
    with section("Dropped rows"):
        st.subheader("Dropped rows by reason")
        frame = data.dropped_reasons(metadata)
        if frame.empty:
            st.caption("The metadata records no dropped rows.")
            return
        left, right = st.columns([1, 2])
        left.table(frame.set_index("reason"))
        with right:
            chart(
                "offline_dropped",
                cache_key,
                lambda: go.Figure(  # graph_objects: a tenth of plotly.express's first-call cost
                    go.Bar(x=frame["reason"], y=frame["rows"], texttemplate="%{y:,d}"),
                    layout={"title": "Rows dropped while cleaning", "yaxis_title": "rows"},
                ),
                height=300,
            )


def _rows_per_split(
    store: ObjectStore,
    metadata: dict[str, Any] | None,
    meta_token: str,
    present: dict[str, str],
    split_tokens: dict[str, str],
    set_tokens: dict[str, str],
) -> None:
    with section("Rows per split and production set"):
        st.subheader("Rows per split and production set")
        observed = {name: data.count_rows(store, key, split_tokens[key]) for name, key in present.items()}
        counts = data.split_counts(metadata, observed)
        if metadata:
            counts["target ratio"] = counts["split"].map(metadata.get("ratios") or {})
            counts["deviation"] = counts["split"].map(metadata.get("ratio_deviation") or {})
        mismatch = counts.dropna(subset=["rows (metadata)", "rows (in store)"])
        mismatch = mismatch[mismatch["rows (metadata)"] != mismatch["rows (in store)"]]
        sets = pd.DataFrame(
            [
                {
                    "set": key.rsplit("/", 1)[-1].removesuffix(".json"),
                    "number": _set_number(key),
                    "rows": data.count_rows(store, key, token),
                }
                for key, token in set_tokens.items()
            ],
            columns=["set", "number", "rows"],
        ).sort_values("number")
        left, right = st.columns([2, 3])
        with left:
            st.table(counts.set_index("split"))
            if not mismatch.empty:
                st.warning(f"Row counts differ from the metadata for: {', '.join(mismatch['split'])}.")
            if sets.empty:
                missing("No production sets in the store", [data.OFFLINE_COMMAND])
            else:
                st.caption(f"{len(sets)} production sets, {int(sets['rows'].sum()):,} rows in all.")
        with right:
            plot = pd.concat(
                [
                    pd.DataFrame(
                        {
                            "kind": "splits",
                            "name": counts["split"],
                            "rows": counts["rows (in store)"].fillna(counts["rows (metadata)"]),
                        }
                    ),
                    pd.DataFrame({"kind": "production sets", "name": sets["set"], "rows": sets["rows"]}),
                ],
                ignore_index=True,
            ).dropna(subset=["rows"])
            counts_key = (
                store.url,
                meta_token,
                tuple(split_tokens.get(k, "") for k in present.values()),
                tuple(sorted(set_tokens.items())),
            )
            chart(
                "offline_counts",
                counts_key,
                lambda: facets(
                    px.bar(
                        plot,
                        x="name",
                        y="rows",
                        facet_col="kind",
                        facet_col_spacing=0.1,
                        text_auto=COUNT_LABELS,
                        labels={"name": "", "kind": ""},
                        title="Rows per split and per production set",
                    ),
                    independent_y=True,
                ),
                height=320,
            )


def _types_figure(dist: pd.DataFrame) -> Any:
    order = dist.groupby("question_type")["rows"].sum().sort_values(ascending=False).index.tolist()
    fig = px.bar(
        dist,
        x="question_type",
        y="share",
        color="group",
        barmode="group",
        category_orders={"question_type": order},
        labels={"share": "share of split", "group": ""},
        hover_data={"rows": True},
        title="question_type distribution",
    )
    fig.update_yaxes(tickformat=".0%")
    return fig


def _question_types(profile: dict[str, Any], cache_key: tuple) -> None:
    with section("Question types"):
        st.subheader("Question types per split")
        chart("offline_types", cache_key, lambda: _types_figure(profile["types"]), height=360)


def _leakage(store: ObjectStore, metadata: dict[str, Any] | None, present: dict[str, str], splits_key: tuple) -> None:
    with section("Leakage check"):
        st.subheader("Leakage check")
        st.caption(
            "Held-out rows (validation and evaluation) that share a question, a folded focus name, a source "
            "document or a non-boilerplate answer with training (should be 0)."
        )
        recorded = (metadata or {}).get("leakage")
        if isinstance(recorded, dict) and "held_out_rows_sharing_with_training" in recorded:
            recorded = recorded["held_out_rows_sharing_with_training"]
        elif isinstance(recorded, dict):  # metadata written before concept-level grouping
            recorded = {"question": recorded.get("question"), "focus": recorded.get("question_focus")}
        recomputed = None
        if len(present) > 1:
            verify = st.toggle(
                "Recompute from the split files (about a second per 10,000 rows)",
                key="offline_leakage_recompute",
                help="The pipeline's blocking check recorded the first column before any split was written; "
                "this recomputes it from the files in the store now.",
            )
            if verify:
                recomputed = cached("offline:leakage", splits_key, lambda: recomputed_leakage(store, present))
        rows = [
            {
                "check": label,
                "recorded by the pipeline": recorded.get(label) if isinstance(recorded, dict) else None,
                "recomputed from the splits": recomputed.get(label) if isinstance(recomputed, dict) else None,
            }
            for label in BLOCKING_KINDS
        ]
        table = pd.DataFrame(rows)
        if recomputed is None:
            table = table.drop(columns=["recomputed from the splits"])
        values = [v for row in rows for k, v in row.items() if k != "check" and isinstance(v, int | float)]
        if not values:
            st.info("No leakage result: the metadata has none; recompute it from the split files above.")
        elif all(v == 0 for v in values):
            st.success("No leakage: no held-out row shares a question, focus, document or answer with training.")
        else:
            st.error("Leakage found: some held-out rows share a question, focus, document or answer with training.")
        st.table(table.set_index("check").map(lambda v: "–" if v is None or pd.isna(v) else f"{int(v):,}"))
        residual = residual_table((metadata or {}).get("leakage"))
        if residual is not None:
            st.markdown("**Residual sharing** (keys the grouping rule lets through: boilerplate answers, hub concepts)")
            st.caption(
                "Not blocking: a key shared by very many documents says little about any one of them. The "
                "grouping rule in the metadata decides what counts as a hub."
            )
            st.table(residual)


def residual_table(leakage: Any) -> pd.DataFrame | None:
    """Per kind of key the grouping rule does not block: held-out rows and keys that still share one
    with training, and the most shared keys."""
    residual = leakage.get("residual") if isinstance(leakage, dict) else None
    if not isinstance(residual, dict) or not residual:
        return None
    rows = []
    for kind, entry in residual.items():
        if not isinstance(entry, dict):
            continue
        top = ", ".join(
            f"{item.get('key')} ({item.get('held_out_rows'):,})"
            for item in (entry.get("top") or [])[:3]
            if isinstance(item, dict) and isinstance(item.get("held_out_rows"), int)
        )
        rows.append(
            {
                "kind": kind,
                "held-out rows": f"{entry.get('rows', 0):,}",
                "shared keys": f"{entry.get('keys', 0):,}",
                "most shared": top or "–",
            }
        )
    return pd.DataFrame(rows).set_index("kind") if rows else None


def _sample_viewer(store: ObjectStore, present: dict[str, str]) -> None:
    with section("Sample viewer"):
        st.subheader("Sample viewer")
        cols = st.columns([1, 1, 1, 2])
        split = cols[0].selectbox("Split", list(present), key="sample_split")
        seed = int(cols[1].number_input("Seed", min_value=0, value=42, step=1, key="sample_seed"))
        size = int(cols[2].number_input("Rows", min_value=1, max_value=1000, value=20, step=5, key="sample_size"))
        keyword = cols[3].text_input("Keyword (question, answer or focus)", key="sample_keyword")
        table = data.read_jsonl(store, present[split], data.SPLIT_COLUMNS)
        if table is None:
            st.info(f"{present[split]} disappeared from the store; reload the page.")
            return
        frame = table.frame
        types = sorted(frame["question_type"].dropna().astype(str).unique())
        chosen = st.multiselect("question_type", types, key=f"sample_types_{split}")
        sample = data.filter_and_sample(frame, n=size, seed=seed, question_types=chosen, keyword=keyword)
        sample = sample[list(ordered(list(sample.columns)))]  # question and answer first
        st.caption(f"{len(sample):,} rows shown, a seeded random sample of the matching rows of {split}.")
        st.dataframe(sample, hide_index=True, width="stretch", height=min(36 * (len(sample) + 1) + 3, 400))
        st.download_button(
            "Download sample as CSV",
            sample.to_csv(index=False).encode("utf-8"),
            file_name=f"{split}-sample-seed{seed}.csv",
            mime="text/csv",
            key="sample_download",
        )
