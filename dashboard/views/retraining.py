"""Tab "Retraining data": the transformed versions built from production logs."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard import data
from dashboard.views.common import (
    COUNT_LABELS,
    cached,
    chart,
    facets,
    follow_newest,
    lengths_chart,
    missing,
    retraining_commands,
    sample_note,
    section,
    section_picker,
    short_time,
)
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore

QUARANTINE_SAMPLE_BYTES = 8 * 1024 * 1024
SECTIONS = ["Counts", "Data", "Quality", "Quarantine and manifest"]
CONTAMINATION_COLUMNS = ["rows_with_split_question", "share", "distinct_split_questions", "split_questions"]


def read_metadatas(store: ObjectStore, versions: data.Versions) -> tuple[dict[str, dict | None], dict[str, str]]:
    """Metadata per complete version, and an error message per version whose metadata is unusable."""
    metadatas: dict[str, dict | None] = {}
    errors: dict[str, str] = {}
    for version in versions.complete:
        key = layout.retraining_metadata_key(version)
        token = versions.tokens.get(key)
        if token is None:
            metadatas[version] = None
            errors[version] = f"{key} is missing"
            continue
        try:
            value = data.read_json(store, key, token)
            if not isinstance(value, dict):
                raise data.DataError(f"{key} holds {type(value).__name__}, not a JSON object")
            metadatas[version] = value
        except Exception as error:
            metadatas[version] = None
            errors[version] = data.describe_error(error)
    return metadatas, errors


def _int(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "–"


def version_of(key: str) -> str:
    return key[len(layout.TRANSFORMED_PREFIX) :].split("/", 1)[0]


def data_profile(store: ObjectStore, key: str) -> dict[str, Any] | None:
    """Length histograms and the timestamp trend of one version's data (a sample if it is large)."""
    table = data.read_jsonl(store, key, data.RETRAINING_READ_COLUMNS, sample_bytes=data.SAMPLE_BYTES)
    if table is None:
        return None
    frame = table.frame
    timestamps = data.parse_timestamps(frame["timestamp"])
    scale = 1 / table.fraction if table.sampled and table.fraction else 1.0
    # A sampled trend is estimated from SAMPLE_WINDOWS windows: keep ~16 of them per period.
    max_periods = max(6, data.SAMPLE_WINDOWS // 16) if table.sampled else 120
    trend, unit = data.timestamp_trend(timestamps, scale=scale, max_periods=max_periods)
    return {
        "info": table.info(),
        "questions": data.histogram({version_of(key): data.word_counts(frame["question"])}),
        "answers": data.histogram({version_of(key): data.word_counts(frame["answer"])}),
        "trend": trend,
        "unit": unit,
        "unparsed_timestamps": int(timestamps.isna().sum()),
    }


def render(store: ObjectStore) -> None:
    versions = data.list_versions(store)
    for problem in versions.problems:
        st.warning(problem)
    _raw_inbox(store)
    if not versions.complete:
        note = ""
        if versions.in_progress:
            note = f"Being written (not complete yet): {', '.join(versions.in_progress)}. Otherwise produce it with:"
        missing("No retraining data versions yet", retraining_commands(), note)
        return
    metadatas, errors = read_metadatas(store, versions)
    meta_key = (store.url, tuple((v, versions.tokens.get(layout.retraining_metadata_key(v), "")) for v in metadatas))
    _versions_over_time(metadatas, errors, versions, meta_key)

    follow_newest("retraining_version", versions.newest)
    version = st.selectbox(
        "Version",
        list(reversed(versions.complete)),
        index=0,
        key="retraining_version",
        format_func=lambda v: f"{v} (newest)" if v == versions.newest else v,
    )
    meta = metadatas.get(version)
    version_key = (store.url, version, versions.tokens.get(layout.retraining_metadata_key(version), ""))
    if version in errors:
        st.error(
            f"Metadata of {version}: {errors[version]}. Counts, PII, quality and manifest are unavailable; "
            "the charts from the data itself still follow."
        )
    shown = section_picker("retraining_section", SECTIONS)
    if shown == "Counts":
        if meta is not None:
            _counts(version, meta, version_key)
    elif shown == "Data":
        _lengths_and_trend(store, version, versions, meta)
    elif shown == "Quality":
        if meta is not None:
            _answer_quality(version, meta, metadatas, version_key, meta_key)
            _contamination(version, metadatas, meta_key)
    else:
        _quarantine(store, version)
        if meta is not None:
            _manifest(version, meta)


def _raw_inbox(store: ObjectStore) -> None:
    with section("retraining_data_raw/"):
        waiting, not_taken = data.raw_inbox(store)
        st.caption(
            f"{waiting:,} log file(s) in retraining_data_raw/ (new, or consumed and waiting to be retired)"
            + (f"; {len(not_taken):,} entries there will not be taken:" if len(not_taken) else ".")
        )
        if len(not_taken):  # names come from whoever wrote raw/: scrubbed, shown as plain text
            not_taken = data.scrubbed(not_taken, ["entry"])
            st.dataframe(not_taken, hide_index=True, width="stretch", height=min(36 * (len(not_taken) + 1) + 3, 250))


def _versions_figure(overview: pd.DataFrame) -> Any:
    """Counts per version, versions in number order (a re-run version keeps its place)."""
    long = overview.melt(
        id_vars=["version", "created"],
        value_vars=["records_in", "records_out", "quarantined"],
        var_name="count",
        value_name="records",
    )
    long["created"] = long["created"].dt.strftime("%Y-%m-%d %H:%M UTC")
    return px.line(
        long,
        x="version",
        y="records",
        color="count",
        markers=True,
        category_orders={"version": list(overview["version"])},
        hover_data=["created"],
        labels={"version": ""},
        title="Records per version",
    ).update_yaxes(tickformat=",d", rangemode="tozero")


def _versions_over_time(
    metadatas: dict[str, dict | None], errors: dict[str, str], versions: data.Versions, meta_key: tuple
) -> None:
    with section("Records per version"):
        st.subheader("Records per version")
        if errors:
            st.error("Unreadable metadata: " + "; ".join(f"{v}: {message}" for v, message in errors.items()))
        overview = data.versions_overview(metadatas)
        if overview.empty:
            st.info("No version has readable metadata, so there is no history to draw.")
            return
        chart("retraining_versions", meta_key, lambda: _versions_figure(overview), height=300)
        st.caption(
            f"{len(versions.complete)} complete versions; version_tracker.txt = {versions.tracker}"
            + (f"; in progress: {', '.join(versions.in_progress)}" if versions.in_progress else "")
        )


def _counts(version: str, meta: dict[str, Any], version_key: tuple) -> None:
    with section(f"Counts of {version}"):
        st.subheader(f"{version}: counts, rejections and PII")
        cols = st.columns([1, 1, 1, 1, 2])  # the creation time needs room
        cols[0].metric("Records in", _int(meta.get("records_in")))
        cols[1].metric("Records out", _int(meta.get("records_out")))
        cols[2].metric("Quarantined", _int(meta.get("quarantined")))
        cols[3].metric(
            "Duplicates removed",
            _int(meta.get("duplicates_removed")),
            help=f"{_int(meta.get('already_published', 0))} more were already published by an earlier version",
        )
        cols[4].metric("Created", short_time(meta.get("created")), help=str(meta.get("created")))
        rejections = data.counts_frame(meta.get("rejections"), "name", "count").assign(kind="rejections by reason")
        pii = data.counts_frame(meta.get("pii_redactions"), "name", "count").assign(kind="PII redactions by kind")
        left, right = st.columns([1, 2])
        with left:
            if rejections.empty:
                st.success("No records were rejected.")
            else:
                st.table(
                    rejections.rename(columns={"name": "rejection reason", "count": "records"}).set_index(
                        "rejection reason"
                    )[["records"]]
                )
            if pii.empty:
                st.info("The metadata reports no PII redactions.")
            else:
                st.table(
                    pii.rename(columns={"name": "PII kind", "count": "redactions"}).set_index("PII kind")[
                        ["redactions"]
                    ]
                )
        with right:
            both = pd.concat([rejections, pii], ignore_index=True)
            if not both.empty:
                chart(
                    "retraining_counts",
                    version_key,
                    lambda: facets(
                        px.bar(
                            both,
                            x="name",
                            y="count",
                            facet_col="kind",
                            facet_col_spacing=0.1,
                            text_auto=COUNT_LABELS,
                            labels={"name": "", "kind": ""},
                            title="Rejections and PII redactions",
                        ),
                        independent_y=True,
                    ),
                    height=320,
                )


def _lengths_and_trend(store: ObjectStore, version: str, versions: data.Versions, meta: dict | None) -> None:
    key = layout.retraining_data_key(version)
    with section(f"Data of {version} ({key})"):
        st.subheader(f"{version}: lengths and timestamps")
        data_key = (store.url, key, versions.tokens.get(key, ""))
        profile = cached("retraining:profile", data_key, lambda: data_profile(store, key))
        if profile is None:
            st.warning(f"{key} is missing.")
            return
        if profile["info"].rows == 0:
            st.info(f"{key} holds no records.")
            return
        left, right = st.columns(2)
        with left:
            lengths_chart(
                "retraining_lengths",
                data_key,
                profile["questions"],
                profile["answers"],
                "Words per question and answer",
                overlay=True,
                height=300,
            )
        with right:
            trend = profile["trend"]
            if trend.empty:
                st.info("No readable timestamps in this version.")
            else:
                chart(
                    "retraining_trend",
                    data_key,
                    lambda: px.line(
                        trend,
                        x="period",
                        y="records",
                        markers=len(trend) < 60,
                        title=f"Logged records per {profile['unit']} (timestamps inside {version})",
                    ).update_yaxes(rangemode="tozero"),
                    height=300,
                )
        stamps = (meta or {}).get("timestamps") or {}
        if isinstance(stamps, dict) and stamps:
            st.caption(f"Timestamps range from {stamps.get('min')} to {stamps.get('max')}.")
        if profile["unparsed_timestamps"]:
            st.caption(f"{profile['unparsed_timestamps']:,} records have no readable timestamp.")
        sample_note(profile["info"], "Lengths and trend")


def _quality_versions_figure(overview: pd.DataFrame, metric: str) -> Any:
    """The model's mean and the random baseline's per version (by number), with 95% intervals."""
    rows = overview[overview["metric"] == metric]
    parts = [
        pd.DataFrame(
            {
                "version": rows["version"],
                "series": series,
                "value": rows[column],
                "plus": rows[high] - rows[column],
                "minus": rows[column] - rows[low],
            }
        )
        for series, column, low, high in (
            ("model", "mean", "low", "high"),
            ("random same-type answer", "baseline", "baseline_low", "baseline_high"),
        )
    ]
    long = pd.concat(parts, ignore_index=True).dropna(subset=["value"])
    return px.scatter(
        long,
        x="version",
        y="value",
        color="series",
        error_y="plus",
        error_y_minus="minus",
        category_orders={"version": list(rows["version"])},
        labels={"value": metric, "series": "", "version": ""},
        title=f"{metric} per version, with 95% intervals",
    ).update_traces(mode="lines+markers")


def _interval_text(value: Any, low: Any, high: Any, signed: bool = False) -> str:
    if not isinstance(value, int | float) or pd.isna(value):
        return "–"
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    if isinstance(low, int | float) and not pd.isna(low):
        text += f" [{low:+.3f}, {high:+.3f}]" if signed else f" [{low:.3f}, {high:.3f}]"
    return text


def quality_table(overview: pd.DataFrame, version: str) -> pd.DataFrame:
    """One version's metrics: model, random baseline and lift, each with its 95% interval."""
    rows = overview[overview["version"] == version]
    return pd.DataFrame(
        {
            "metric": rows["metric"],
            "model [95% CI]": [_interval_text(r.mean, r.low, r.high) for r in rows.itertuples()],
            "random same-type answer": [
                _interval_text(r.baseline, r.baseline_low, r.baseline_high) for r in rows.itertuples()
            ],
            "lift": [_interval_text(r.lift, r.lift_low, r.lift_high, signed=True) for r in rows.itertuples()],
        }
    ).set_index("metric")


def _answer_quality(
    version: str, meta: dict[str, Any], metadatas: dict[str, dict | None], version_key: tuple, meta_key: tuple
) -> None:
    with section(f"Answer quality of {version}"):
        st.subheader("Answer quality against the reference answers")
        quality = meta.get("answer_quality")
        overview = data.quality_overview(metadatas)
        if isinstance(quality, dict):
            st.caption(
                f"{_int(quality.get('n'))} answered records with a reference answer; every metric next to a "
                "random same-type training answer (the baseline) and the lift over it. "
                + ("The lift's interval excludes zero." if _lift_excludes_zero(quality) else "")
            )
            st.table(quality_table(overview, version))
        else:
            st.info(
                f"{version} does not report answer quality (no production record could be matched to a "
                "reference answer)."
            )
        hist = data.quality_histogram(quality) if isinstance(quality, dict) else pd.DataFrame()
        metric = quality.get("metric") if isinstance(quality, dict) else None
        metric = metric or (overview["metric"].iloc[0] if len(overview) else "metric")
        charts = []  # (chart key, cache key, figure builder)
        if not hist.empty:
            charts.append(
                (
                    "retraining_quality",
                    version_key,
                    lambda: px.bar(hist, x="bin", y="count", title=f"{metric} of {version}", text_auto=COUNT_LABELS),
                )
            )
        if overview["version"].nunique() > 1:
            charts.append(("retraining_quality_versions", meta_key, lambda: _quality_versions_figure(overview, metric)))
        for column, (key, cache_key, build) in zip(st.columns(len(charts)) if charts else [], charts, strict=True):
            with column:  # one chart takes the whole width; two share it
                chart(key, cache_key, build, height=300)


def _lift_excludes_zero(quality: dict[str, Any]) -> bool:
    entry = (quality.get("metrics") or {}).get(quality.get("metric"))
    return bool(isinstance(entry, dict) and entry.get("lift_excludes_zero"))


def _contamination(version: str, metadatas: dict[str, dict | None], meta_key: tuple) -> None:
    with section(f"Contamination of {version}"):
        st.subheader("Contamination: production questions that are already in a split")
        overview = data.contamination_overview(metadatas)
        if overview.empty:
            st.info("No version reports contamination counts (it needs the offline splits in the store).")
            return
        rows = overview[overview["version"] == version]
        if rows.empty:
            st.info(f"{version} does not report contamination counts.")
        else:
            untouched = rows["untouched_evaluation_rows"].iloc[0]
            st.caption(
                f"Rows of {version} whose question is one of a split's; training rows asked again say nothing "
                "about generalisation. "
                + (
                    f"{_int(untouched)} evaluation rows are in no published version yet "
                    "(`medqa untouched-evaluation` writes them out)."
                    if isinstance(untouched, int | float) and not pd.isna(untouched)
                    else ""
                )
            )
            st.table(
                rows.assign(share=lambda f: (f["rows_with_split_question"] / f["version_rows"]).map("{:.1%}".format))
                .set_index("split")[
                    ["rows_with_split_question", "share", "distinct_split_questions", "split_questions"]
                ]
                .rename(
                    columns={
                        "rows_with_split_question": "version rows",
                        "share": "share of the version",
                        "distinct_split_questions": "distinct questions",
                        "split_questions": "questions in the split",
                    }
                )
                .map(lambda v: f"{v:,}" if isinstance(v, int) else v)
            )
        if overview["version"].nunique() > 1:
            chart(
                "retraining_contamination",
                meta_key,
                lambda: px.bar(
                    overview,
                    x="version",
                    y="rows_with_split_question",
                    color="split",
                    barmode="group",
                    category_orders={"version": list(dict.fromkeys(overview["version"]))},
                    labels={"rows_with_split_question": "rows whose question is in the split", "version": ""},
                    title="Contamination per version",
                ),
                height=300,
            )


def _quarantine(store: ObjectStore, version: str) -> None:
    with section(f"Quarantine of {version}"):
        st.subheader(f"{version}: quarantined records and files")
        prefix = layout.quarantine_prefix(version)
        tokens = data.listing(store, prefix)
        records_key = f"{prefix}records.jsonl"
        file_keys = [k for k in tokens if k.startswith(f"{prefix}files/") and not k.endswith(".reason.json")]
        if records_key not in tokens and not file_keys:
            st.success(f"Nothing was quarantined in {version}.")
            return
        if records_key in tokens:
            table = data.read_jsonl(store, records_key, data.QUARANTINE_COLUMNS, sample_bytes=QUARANTINE_SAMPLE_BYTES)
            frame = table.frame if table is not None else pd.DataFrame(columns=data.QUARANTINE_COLUMNS)
            reasons = sorted(frame["reason"].dropna().astype(str).unique())
            chosen = st.multiselect("Reason", reasons, key=f"quarantine_reasons_{version}")
            shown = frame[frame["reason"].isin(chosen)] if chosen else frame
            st.caption(
                f"{len(shown):,} of {len(frame):,} quarantined records"
                + (" (an even sample of a large file)" if table is not None and table.sampled else "")
            )
            st.dataframe(
                data.scrubbed(shown.head(1000), ["record", "source_file"]),
                hide_index=True,
                width="stretch",
                height=min(36 * (min(len(shown), 1000) + 1) + 3, 320),
            )
        if file_keys:
            rows = []
            for key in file_keys:
                reason_key = f"{key}.reason.json"
                reason: Any = None
                try:
                    reason = data.read_json(store, reason_key, tokens.get(reason_key))
                except Exception as error:
                    reason = f"unreadable reason file ({data.describe_error(error)})"
                if isinstance(reason, dict):
                    text = "; ".join(str(reason[k]) for k in ("reason", "detail") if reason.get(k)) or str(reason)
                else:
                    text = str(reason) if reason is not None else "no reason recorded"
                rows.append({"file": key.rsplit("/", 1)[-1], "reason": text, "key": key})
            st.markdown("**Whole files that could not be parsed**")
            # names and reasons come from logs: a data frame shows them as plain text, never as Markdown
            st.dataframe(data.scrubbed(pd.DataFrame(rows), ["file", "reason", "key"]), hide_index=True, width="stretch")


def _manifest(version: str, meta: dict[str, Any]) -> None:
    with section(f"Manifest of {version}"):
        st.subheader(f"{version}: manifest")
        files = data.manifest_frame(meta)
        if files.empty:
            st.info("The metadata lists no source files.")
        else:
            # file names and reasons come from whoever wrote raw/: shown through the scrubber
            st.dataframe(data.scrubbed(files, ["name", "key", "reason"]), hide_index=True, width="stretch")
        output = meta.get("output")
        if isinstance(output, dict):
            st.caption(
                f"Output {output.get('key')}: {_int(output.get('rows'))} rows, {_int(output.get('bytes'))} bytes, "
                f"sha256 {output.get('sha256')}"
            )
        dropped = meta.get("fields_dropped")
        if dropped:
            # field names come from logs: plain text, so a name can never be a link or an image
            st.text("Fields dropped (metadata, not training data): " + ", ".join(data.scrubbed_values(dropped)))
        missing_files = meta.get("missing_files")
        if missing_files:
            gone = ", ".join(data.scrubbed_values(missing_files))
            st.text(f"Claimed but gone before the snapshot ({len(missing_files)}): {gone}")
