"""The dashboard under Streamlit's AppTest: every tab with a populated, an empty and a corrupt store.

Plus the pure data-prep and drift functions the tabs are built on.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import data
from dashboard import drift as drift_stats
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore
from medqa_assets_tests import dashboard_fixtures as fx

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
OFFLINE, RETRAINING, DRIFT = "Offline MedQuAD data", "Retraining data", "Drift"
TABS = [OFFLINE, RETRAINING, DRIFT]
SECRET = "dashboard-test-secret-Zq8xW3"
assert str(fx.REPO_ROOT) in sys.path


def run_tab(tab: str, **session: object) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["tab"] = tab
    for key, value in session.items():
        at.session_state[key] = value
    at.run()
    return at


OFFLINE_SECTIONS = ["Overview", "Distributions", "Leakage", "Sample"]
RETRAINING_SECTIONS = ["Counts", "Data", "Quality", "Quarantine and manifest"]


def run_sections(tab: str, **session: object) -> dict[str, AppTest]:
    """The tab once per section (only the chosen section reads and draws)."""
    key, names = (
        ("offline_section", OFFLINE_SECTIONS) if tab == OFFLINE else ("retraining_section", RETRAINING_SECTIONS)
    )
    return {name: run_tab(tab, **{key: name, **session}) for name in names}


def texts(at: AppTest, kind: str) -> list[str]:
    return [str(element.value) for element in getattr(at, kind)]


def page_text(at: AppTest) -> str:
    parts = []
    for kind in ("title", "subheader", "markdown", "caption", "info", "warning", "error", "success", "code", "metric"):
        parts.extend(texts(at, kind))
    parts.extend(str(frame.value.to_csv()) for frame in at.dataframe)
    parts.extend(str(table.value.to_csv()) for table in at.table)
    return "\n".join(parts)


def all_protos(at: AppTest) -> str:
    """Every element's protobuf as text (chart specs, dataframes, widgets): what the browser receives."""
    parts: list[str] = []

    def walk(node: object) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(str(proto))
        children = getattr(node, "children", None)
        if isinstance(children, dict):
            for child in children.values():
                walk(child)

    walk(at._tree)
    return "\n".join(parts)


def charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


@pytest.fixture(autouse=True, scope="module")
def _scan_components_once() -> Iterator[None]:
    """AppTest rescans every installed distribution for Streamlit components on each run (about 1.5 s
    with this environment's ~800 packages); the answer cannot change during the tests, so scan once."""
    try:
        from streamlit.components.v2 import manifest_scanner
    except ImportError:  # another Streamlit layout: nothing to speed up
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            manifest_scanner, "scan_component_manifests", functools.cache(manifest_scanner.scan_component_manifests)
        )
        yield


@pytest.fixture
def store(local_store_env, monkeypatch: pytest.MonkeyPatch) -> ObjectStore:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # must never reach the page
    return ObjectStore.from_settings()


@pytest.fixture
def populated(store: ObjectStore) -> ObjectStore:
    fx.populate_store(store)
    return store


# -- populated store ---------------------------------------------------------------------------
def test_offline_tab_populated(populated: ObjectStore) -> None:
    views = run_sections(OFFLINE)
    expected = {
        "Overview": ["Source and provenance", "Dropped rows by reason", "Rows per split and production set"],
        "Distributions": ["Question types per split", "Question and answer lengths"],
        "Leakage": ["Leakage check"],
        "Sample": ["Sample viewer"],
    }
    drawn = {"Overview": 2, "Distributions": 2, "Leakage": 0, "Sample": 0}  # dropped, counts; types, lengths
    for name, at in views.items():
        assert_clean(at)
        assert not at.error, (name, texts(at, "error"))
        assert texts(at, "subheader") == expected[name], name
        assert charts(at) == drawn[name], name
        assert SECRET not in page_text(at) and SECRET not in all_protos(at)
    overview, leakage, sample = views["Overview"], views["Leakage"], views["Sample"]
    assert [m.label for m in overview.metric][:3] == ["Initial records", "Final records", "Dropped"]
    assert "bundled" in page_text(overview)
    assert any("No leakage" in s for s in texts(leakage, "success"))
    assert any("Residual sharing" in s for s in texts(leakage, "markdown"))
    residual = next(t.value for t in leakage.table if "most shared" in t.value.columns)
    assert sorted(residual.index) == ["answer", "concept", "synonym"]
    assert "recomputed from the splits" not in leakage.table[0].value.columns  # only when asked
    leakage.toggle(key="offline_leakage_recompute").set_value(True).run()
    assert_clean(leakage)
    checks = leakage.table[0].value
    assert list(checks.columns) == ["recorded by the pipeline", "recomputed from the splits"]
    assert (checks == "0").all().all()
    assert list(sample.dataframe[-1].value.columns[:2]) == ["question", "answer"]
    assert len(sample.get("download_button")) == 1


def test_sample_viewer_filters_and_is_seeded(populated: ObjectStore) -> None:
    at = run_tab(OFFLINE, offline_section="Sample")
    sample = at.dataframe[-1].value
    assert len(sample) == 20
    at.text_input(key="sample_keyword").input("diagnose").run()
    assert_clean(at)
    filtered = at.dataframe[-1].value
    assert len(filtered) > 0 and filtered["question"].str.contains("diagnose", case=False).all()
    at.multiselect(key="sample_types_training").select("treatment").run()
    assert at.dataframe[-1].value.empty  # "diagnose" questions are always of type "exams and tests"
    again = run_tab(OFFLINE, offline_section="Sample")
    pd.testing.assert_frame_equal(again.dataframe[-1].value, sample)  # same seed, same rows


def test_retraining_tab_populated(populated: ObjectStore) -> None:
    views = run_sections(RETRAINING)
    expected = {
        "Counts": ["Records per version", "v2: counts, rejections and PII"],
        "Data": ["Records per version", "v2: lengths and timestamps"],
        "Quality": [
            "Records per version",
            "Answer quality against the reference answers",
            "Contamination: production questions that are already in a split",
        ],
        "Quarantine and manifest": ["Records per version", "v2: quarantined records and files", "v2: manifest"],
    }
    # the versions line everywhere; + rejections and PII; + lengths, trend; + contamination per
    # version (v2 reports no answer quality); nothing more
    drawn = {"Counts": 2, "Data": 3, "Quality": 2, "Quarantine and manifest": 1}
    for name, at in views.items():
        assert_clean(at)
        assert not at.error, (name, texts(at, "error"))
        assert at.selectbox(key="retraining_version").value == "v2"  # newest by default
        assert texts(at, "subheader") == expected[name], name
        assert charts(at) == drawn[name], name
        assert SECRET not in all_protos(at)
    assert any("does not report answer quality" in s for s in texts(views["Quality"], "info"))
    at = views["Quarantine and manifest"]
    text = page_text(at)
    assert "not_json" in text and "missing_question" in text  # quarantine viewer and reasons
    assert "sha256" in text and "log-1.jsonl" in text  # manifest
    # strings from logs are plain text, never Markdown that could fetch a URL, and scrubbed (the
    # loopback address in the field name is an IP address)
    assert any("![x](http://[IP]:9/pixel.png)" in t for t in texts(at, "text"))
    for kind in ("markdown", "caption", "info", "warning", "error", "success"):
        assert not any("![x](" in t for t in texts(at, kind)), kind

    at = views["Quality"]
    at.selectbox(key="retraining_version").select("v1").run()
    assert_clean(at)
    assert charts(at) == 3  # + v1's answer-quality histogram
    quality = next(t.value for t in at.table if "random same-type answer" in t.value.columns)
    assert list(quality.index) == ["chrf", "rougeL_f1", "token_f1"]
    assert all(re.fullmatch(r"[+-]\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]", v) for v in quality["lift"])


def test_drift_tab_populated(populated: ObjectStore) -> None:
    at = run_tab(DRIFT)
    assert_clean(at)
    assert not at.error, texts(at, "error")
    assert at.selectbox(key="drift_version").value == "v2"
    verdicts = [m for m in texts(at, "markdown") if "**" in m and "—" in m]
    features = ["Question length (words)", "Answer length (words)", "Question terms", "Question type"]
    assert len(verdicts) == len(features)
    for feature, verdict in zip(features, verdicts, strict=True):
        assert feature in verdict and "drift" in verdict.lower()
    summary = at.table[0].value
    assert list(summary.index) == features
    assert charts(at) == 3  # lengths, terms, question types
    assert SECRET not in all_protos(at)  # every element's protobuf, not only the text read above


# -- empty store -------------------------------------------------------------------------------
def test_empty_store_every_tab(store: ObjectStore) -> None:
    expectations = {
        OFFLINE: ["No offline MedQuAD data"],
        RETRAINING: ["No retraining data versions yet"],
        DRIFT: ["No training split", "No retraining data versions yet"],
    }
    for tab, messages in expectations.items():
        at = run_tab(tab)
        assert_clean(at)
        assert not at.error, texts(at, "error")
        infos = " ".join(texts(at, "info"))
        for message in messages:
            assert message in infos
        code = "\n".join(texts(at, "code"))
        if tab != RETRAINING:
            assert data.OFFLINE_COMMAND in code
        if tab != OFFLINE:
            assert "medqa simulate --set set1 --endpoint http://127.0.0.1:8000" in code
            assert "raw_logs_sensor" in code and "retraining_etl" in code


def test_store_root_missing_entirely(local_store_env) -> None:
    assert not local_store_env.root.exists()
    at = run_tab(OFFLINE)
    assert_clean(at)
    assert any("No offline MedQuAD data" in s for s in texts(at, "info"))


def test_bad_store_url_is_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDQA_STORE_URL", "ftp://example.org/store")
    at = run_tab(OFFLINE)
    assert_clean(at)
    assert any("MEDQA_STORE_URL" in s for s in texts(at, "error"))


def test_offline_done_retraining_not_yet(store: ObjectStore) -> None:
    fx.populate_offline(store)
    at = run_tab(DRIFT)
    assert_clean(at)
    assert "No retraining data versions yet" in " ".join(texts(at, "info"))
    assert "No training split" not in " ".join(texts(at, "info"))


# -- corrupt metadata --------------------------------------------------------------------------
def test_corrupt_split_metadata(populated: ObjectStore) -> None:
    fx.corrupt_metadata(populated)
    views = run_sections(OFFLINE)
    for name, at in views.items():
        assert_clean(at)
        errors = texts(at, "error")
        assert len(errors) == 1 and "metadata.json is not valid JSON" in errors[0], name
    assert "Rows per split and production set" in texts(views["Overview"], "subheader")
    assert charts(views["Overview"]) == 1  # counts from the files; no dropped rows without metadata
    assert charts(views["Distributions"]) == 2  # types, lengths: drawn from the data itself
    leakage = views["Leakage"]
    assert any("No leakage result" in s for s in texts(leakage, "info"))
    leakage.toggle(key="offline_leakage_recompute").set_value(True).run()
    assert any("No leakage" in s for s in texts(leakage, "success"))  # recomputed from the splits
    assert "Sample viewer" in texts(views["Sample"], "subheader")


def test_corrupt_version_metadata(populated: ObjectStore) -> None:
    fx.corrupt_metadata(populated)
    views = run_sections(RETRAINING)
    for at in views.values():
        assert_clean(at)
        assert any("v1" in e and "not valid JSON" in e for e in texts(at, "error"))
    assert "v2: manifest" in texts(views["Quarantine and manifest"], "subheader")  # v2 renders in full
    assert charts(views["Counts"]) == 2

    at = views["Data"]
    at.selectbox(key="retraining_version").select("v1").run()
    assert_clean(at)
    assert any("Metadata of v1" in e for e in texts(at, "error"))
    assert "v1: lengths and timestamps" in texts(at, "subheader")
    assert charts(at) == 3  # versions line (v2 only) and the data's own charts (lengths, trend)
    at = views["Quarantine and manifest"]
    at.selectbox(key="retraining_version").select("v1").run()
    assert "v1: quarantined records and files" in texts(at, "subheader")

    drift_at = run_tab(DRIFT)
    assert_clean(drift_at)
    assert not drift_at.error and charts(drift_at) == 3


def test_corrupt_data_line_and_tracker(populated: ObjectStore) -> None:
    key = layout.retraining_data_key("v2")
    populated.write_bytes(key, populated.read_bytes(key) + b"{not json\n")
    populated.write_bytes(layout.VERSION_TRACKER, b"two\n")
    at = run_tab(RETRAINING)
    assert_clean(at)
    assert any("version_tracker.txt" in w for w in texts(at, "warning"))
    at = run_tab(RETRAINING, retraining_section="Data")
    assert any("were not JSON objects" in w for w in texts(at, "warning"))
    assert charts(at) == 3


# -- freshness: new versions appear without a restart -----------------------------------------
def test_new_version_and_rewritten_metadata_show_up(populated: ObjectStore) -> None:
    at = run_tab(RETRAINING)
    assert at.selectbox(key="retraining_version").options == ["v2 (newest)", "v1"]
    pool = populated.read_jsonl(layout.SPLIT_KEYS["evaluation"], ["question", "answer", "row_id"])
    fx.write_version(populated, 3, pool, 77)  # written, but the tracker still says 2: in progress
    at.run()
    assert at.selectbox(key="retraining_version").options == ["v2 (newest)", "v1"]
    populated.write_bytes(layout.VERSION_TRACKER, b"3\n")
    at.run()
    assert_clean(at)
    picker = at.selectbox(key="retraining_version")
    assert picker.options[0] == "v3 (newest)" and picker.value == "v3"  # the picker follows the newest
    assert "77" in [m.value for m in at.metric if m.label == "Records out"]

    meta = populated.read_json(layout.retraining_metadata_key("v3"))
    populated.write_json(layout.retraining_metadata_key("v3"), {**meta, "records_out": 78})
    at.run()
    assert "78" in [m.value for m in at.metric if m.label == "Records out"]


# -- pure functions ----------------------------------------------------------------------------
def test_sampled_read_of_a_large_version(store: ObjectStore) -> None:
    pool = fx.split_frame(200, 1, "evaluation")
    raw = fx.retraining_lines(pool, 20_000, seed=3, start=fx.START)
    key = layout.retraining_data_key("v1")
    store.write_bytes(key, raw)
    full = data.read_jsonl(store, key, ["question", "timestamp"])
    sample = data.read_jsonl(store, key, ["question", "timestamp"], sample_bytes=len(raw) // 10)
    assert not full.sampled and len(full.frame) == 20_000
    assert sample.sampled and 0 < len(sample.frame) < 20_000
    assert abs(sample.estimated_rows() - 20_000) / 20_000 < 0.05
    assert sample.frame["question"].isin(set(pool["question"])).all()  # whole lines only
    stamps = data.parse_timestamps(sample.frame["timestamp"])
    assert stamps.notna().all() and stamps.max() - stamps.min() > pd.Timedelta(hours=25)  # spans the file


def test_parse_jsonl_projection_and_fallback() -> None:
    frame, bad = data.parse_jsonl(b'{"question": "a b", "answer": "c", "x": 1}\n{"question": "d"}\n', ["question"])
    assert list(frame.columns) == ["question"] and list(frame["question"]) == ["a b", "d"] and bad == 0
    frame, bad = data.parse_jsonl(b'{"row_id": 7, "q": 1}\nnot json\n[1]\n{"row_id": "x"}\n', ["row_id", "slice"])
    assert list(frame["row_id"]) == ["7", "x"] and frame["slice"].isna().all() and bad == 2
    frame, bad = data.parse_jsonl(b"", ["question"])
    assert frame.empty and list(frame.columns) == ["question"]


def test_histogram_and_word_counts() -> None:
    counts = data.word_counts(pd.Series(["one two  three", None, "", " four "]))
    assert counts.tolist() == [3, 0, 0, 1]
    frame = data.histogram({"a": np.arange(100), "b": np.arange(50)}, bins=10)
    assert set(frame["group"]) == {"a", "b"}
    assert frame.groupby("group")["count"].sum().to_dict() == {"a": 100, "b": 50}
    assert np.isclose(frame.groupby("group")["share"].sum(), 1).all()
    assert data.histogram({}).empty


def test_filter_and_sample_is_deterministic() -> None:
    frame = fx.split_frame(300, 0, "training")
    one = data.filter_and_sample(frame, n=10, seed=7, question_types=["symptoms"], keyword="CONDITION")
    two = data.filter_and_sample(frame, n=10, seed=7, question_types=["symptoms"], keyword="condition")
    pd.testing.assert_frame_equal(one, two)
    assert (one["question_type"] == "symptoms").all() and len(one) == 10


def test_drift_statistics_verdicts() -> None:
    rng = np.random.default_rng(0)

    def texts(lengths: np.ndarray) -> np.ndarray:  # words per text
        return lengths

    same = drift_stats.length_drift("len", "lengths", texts(rng.poisson(10, 2000)), texts(rng.poisson(10, 300)))
    assert same["level"] == "none" and same["verdict"].startswith("No meaningful drift")
    shifted = drift_stats.length_drift("len", "lengths", texts(rng.poisson(10, 2000)), texts(rng.poisson(20, 300)))
    assert shifted["level"] == "strong" and shifted["value"] > 0.5 and shifted["p_value"] < 0.01
    few = drift_stats.length_drift("len", "lengths", texts(np.arange(5)), texts(np.arange(500)))
    assert few["level"] == "unknown" and "Too few rows" in few["verdict"]
    ref = pd.Series(["a"] * 500 + ["b"] * 500)
    summary, table = drift_stats.categorical_drift("t", "types", ref, pd.Series(["a"] * 900 + ["c"] * 100))
    assert summary["level"] in {"moderate", "strong"} and set(table["category"]) == {"a", "b", "c"}
    summary, _ = drift_stats.categorical_drift("t", "types", ref, ref.sample(frac=1, random_state=1))
    assert summary["level"] == "none" and summary["value"] == pytest.approx(0, abs=1e-6)


def test_drift_report_and_terms() -> None:
    training = fx.split_frame(300, 0, "training")
    production = training.sample(200, random_state=0).assign(question_type=pd.NA)
    report = drift_stats.drift_report(training, production)
    assert list(report["summary"]["feature"]) == ["Question length (words)", "Answer length (words)", "Question terms"]
    assert report["question_types"] is None
    terms = drift_stats.question_terms(pd.Series(["What are the symptoms of Lung Cancer ?", "Is it 22 q11 ?"]))
    assert sorted(terms) == ["cancer", "lung", "q11", "symptoms"]  # no stopwords, numbers or short tokens
    redacted = pd.Series(["Can [NAME] email [EMAIL] about [DEVICE_ID] asthma?", "my phone [PHONE] ssn [SSN]"])
    assert sorted(drift_stats.question_terms(redacted)) == ["asthma", "email", "phone", "ssn"]  # placeholders gone


def test_store_label_hides_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEY")
    store = ObjectStore(
        "s3://bucket/prefix", endpoint_url="http://user:pw@minio:9000", key="AKIAEXAMPLEKEY", secret=SECRET
    )
    label = data.store_label(store)
    assert label == "s3://bucket/prefix (endpoint http://***@minio:9000)"
    assert data.redact(f"failed for AKIAEXAMPLEKEY at {label}") == f"failed for *** at {label}"


def test_s3_store(s3_store_env) -> None:
    store = ObjectStore.from_settings()
    fx.populate_store(store, versions=1)
    at = run_tab(DRIFT)  # reads splits and the version through S3
    assert_clean(at)
    assert not at.error, texts(at, "error")
    assert charts(at) == 3
    assert s3_store_env.bucket in data.store_label(store)
    assert s3_store_env.server.secret_key not in all_protos(at)
    key = layout.retraining_data_key("v1")
    size = store.info(key).size
    sample = data.read_jsonl(store, key, ["question"], sample_bytes=size // 4)  # ranged GETs in parallel
    full = data.read_jsonl(store, key, ["question"])
    assert sample.sampled and 0 < len(sample.frame) < len(full.frame)
    assert sample.frame["question"].isin(set(full.frame["question"])).all()


def test_raw_entries_that_will_not_be_taken_are_listed(store: ObjectStore) -> None:
    raw = Path(store.path(layout.RAW_LOGS_PREFIX))
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "waiting.jsonl").write_bytes(b'{"question": "q", "answer": "a"}\n')
    (raw / ".tmp-upload").write_bytes(b"x")
    (raw / "![x](http:__127.0.0.1:9_p.png).lnk").symlink_to(raw / "waiting.jsonl")
    at = run_tab(RETRAINING)
    assert_clean(at)
    assert any("1 log file(s) in retraining_data_raw/" in c and "2 entries" in c for c in texts(at, "caption"))
    [table] = [t for t in at.dataframe if "reason" in t.value.columns]
    assert dict(zip(table.value["entry"], table.value["reason"], strict=True)) == {
        ".tmp-upload": "temporary name (.tmp-*)",
        "![x](http:__127.0.0.1:9_p.png).lnk": "symbolic link",
    }


def test_records_tab_explores_every_dataset_and_shows_logs_only_scrubbed(populated: ObjectStore) -> None:
    """Every split, production set, version and quarantine opens, question and answer first; a record
    that an older store kept unscrubbed is shown through the scrubber."""
    leaked = {"question": "My SSN is 123-45-6789, is asthma inherited?", "answer": "Call me at 415-555-0134."}
    key = f"{layout.quarantine_prefix('v2')}records.jsonl"
    line = {"source_file": "log-9.jsonl", "index": 1, "reason": "non_answer", "record": json.dumps(leaked)}
    populated.write_bytes(key, populated.read_bytes(key) + json.dumps(line).encode() + b"\n")
    at = run_tab("Records")
    assert_clean(at)
    labels = at.selectbox(key="explorer_dataset").options
    assert labels[:3] == ["split: training", "split: validation", "split: evaluation"]
    assert {"retraining version: v2", "quarantine: v2", "production set: set1"} <= set(labels)
    for index, label in enumerate(labels):
        at.selectbox(key="explorer_dataset").select_index(index).run()
        assert_clean(at)
        frame = at.dataframe[0].value
        assert list(frame.columns[:2]) == ["question", "answer"], label
        assert len(frame) > 0, label
    at.selectbox(key="explorer_dataset").select(next(o for o in labels if o == "quarantine: v2")).run()
    at.multiselect(key="explorer_reason_quarantine: v2").select("non_answer").run()
    frame = at.dataframe[0].value
    assert len(frame) == 1 and "[SSN]" in frame["question"].iloc[0] and "[PHONE]" in frame["answer"].iloc[0]
    assert "123-45-6789" not in all_protos(at) and "415-555-0134" not in all_protos(at)


def test_trend_has_every_period_and_times_read_to_the_minute() -> None:
    """A gap in traffic is a run of zeros, not a line drawn across it; "Created" is more than a date."""
    from dashboard.views.common import short_time

    stamps = pd.Series(pd.to_datetime(["2026-01-01T00:01Z", "2026-01-01T00:02Z", "2026-01-01T01:31Z"], utc=True))
    trend, unit = data.timestamp_trend(stamps)
    assert unit == "minute" and len(trend) == 91 and trend["records"].sum() == 3
    assert (trend["records"] == 0).sum() == 88
    assert short_time("2026-12-03T07:15:03+00:00") == "2026-12-03 07:15 UTC" and short_time(None) == "–"
