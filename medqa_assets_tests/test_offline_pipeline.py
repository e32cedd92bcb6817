"""The offline half end to end: sources, assets, checks and failure behaviour, on local and S3 stores."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import warnings
from pathlib import Path

import dagster as dg
import datasets
import pandas as pd
import pytest

from medqa_assets.medquad.assets import medquad_clean, medquad_raw
from medqa_assets.medquad.clean import normalize_whitespace
from medqa_assets.resources import build_resources
from medqa_assets.splitting import assets as splitting_assets
from medqa_assets.splitting.assets import build_splitting_assets
from medqa_assets.splitting.transforms import SplitResult
from medqa_assets.storage import layout
from medqa_assets.storage.object_store import ObjectStore
from medqa_assets.text import normalize_text_key

BUNDLED = Path(__file__).resolve().parents[1] / "medqa_assets" / "medquad" / "bundled" / "medquad.parquet"
OFFLINE_KEYS = [
    layout.MEDQUAD_RAW,
    *layout.SPLIT_KEYS.values(),
    layout.SPLIT_METADATA,
    *(layout.production_set_key(f"set{i}") for i in range(1, 6)),
]


def offline_assets() -> list[dg.AssetsDefinition]:
    from medqa_assets.settings import Settings

    return [medquad_raw, medquad_clean, *build_splitting_assets(Settings.from_env())]


def run_offline(run_config: dict | None = None) -> dg.ExecuteInJobResult:
    return dg.materialize(
        offline_assets(), resources=build_resources(), run_config=run_config or {}, raise_on_error=False
    )


def failure_messages(result: dg.ExecuteInJobResult) -> str:
    return " ".join(
        str(event.event_specific_data.error.message) for event in result.all_events if event.is_step_failure
    )


@pytest.fixture
def small_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """~1,500 answered MedQuAD rows plus unanswered and duplicate ones, in the lavita layout."""
    frame = pd.read_parquet(BUNDLED)
    answered = frame[frame["answer"].notna()]
    normalized = pd.DataFrame({c: normalize_whitespace(answered[c]) for c in ("question", "answer")})
    answered = answered[~normalized.duplicated(keep=False)].sample(1500, random_state=1)
    unanswered = frame[frame["answer"].isna()].head(200)
    sample = pd.concat([answered, unanswered, answered.head(10)], ignore_index=True)
    path = tmp_path / "medquad-sample.parquet"
    sample.to_parquet(path)
    monkeypatch.setenv("MEDQA_MEDQUAD_SOURCE", str(path))
    return path


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    request.getfixturevalue("local_store_env" if request.param == "local" else "s3_store_env")
    return ObjectStore.from_settings()


def test_offline_graph_writes_every_contract_key(store: ObjectStore, small_source: Path, tmp_path: Path) -> None:
    result = run_offline()
    assert result.success, failure_messages(result)
    for key in OFFLINE_KEYS:
        assert store.exists(key), key

    metadata = store.read_json(layout.SPLIT_METADATA)
    assert metadata["source"] == str(small_source)
    assert metadata["initial_records"] == 1710
    assert metadata["dropped"]["missing_answer"] == 200
    assert metadata["dropped"]["duplicate_question_answer"] == 10
    assert metadata["dropped"]["total_dropped"] == 210
    assert metadata["final_records"] == 1500 == sum(metadata["split_counts"].values())

    splits = {name: store.read_jsonl(key) for name, key in layout.SPLIT_KEYS.items()}
    assert {name: len(frame) for name, frame in splits.items()} == metadata["split_counts"]
    for name, frame in splits.items():
        assert abs(len(frame) / 1500 - {"training": 0.6, "validation": 0.2, "evaluation": 0.2}[name]) < 0.05
        data = store.read_bytes(layout.SPLIT_KEYS[name])
        assert metadata["files"][name]["sha256"] == hashlib.sha256(data).hexdigest()
        local = tmp_path / f"{name}.json"
        local.write_bytes(data)
        loaded = datasets.load_dataset("json", data_files=str(local), split="train")
        assert loaded.num_rows == len(frame) and {"question", "answer"} <= set(loaded.column_names)
    for column in ("question", "question_focus"):
        seen = [set(normalize_text_key(frame[column])) - {""} for frame in splits.values()]
        assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])

    sets = [store.read_jsonl(layout.production_set_key(f"set{i}")) for i in range(1, 6)]
    set_ids = [set(s["row_id"]) for s in sets]
    assert sum(len(s) for s in set_ids) == len(set().union(*set_ids))  # disjoint
    assert set().union(*set_ids) == set(splits["evaluation"]["row_id"])  # complete


def test_checks_are_recorded_and_pass(local_store_env, small_source: Path) -> None:
    result = run_offline()
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    names = {(e.asset_key.to_user_string(), e.check_name) for e in evaluations}
    assert ("dataset_split/evaluation", "no_cross_split_leakage") in names
    assert ("dataset_split/training", "split_ratios") in names
    assert ("production_sets/set3", "disjoint_and_complete") in names
    assert ("medquad_raw", "schema") in names
    assert all(e.passed for e in evaluations)


def test_production_set_count_follows_the_setting(local_store_env, small_source, monkeypatch) -> None:
    monkeypatch.setenv("MEDQA_PRODUCTION_SETS", "3")
    assert run_offline().success
    store = ObjectStore.from_settings()
    assert [i.key.rsplit("/", 1)[-1] for i in store.list(layout.PRODUCTION_SETS_PREFIX)] == [
        "set1.json",
        "set2.json",
        "set3.json",
    ]


def test_split_is_stable_under_reordering(local_store_env, small_source: Path) -> None:
    """Shuffling the source rows changes no file: not a row id, not a byte of any split or set."""
    assert run_offline().success
    store = ObjectStore.from_settings()
    files = [*layout.SPLIT_KEYS.values(), *(layout.production_set_key(f"set{i}") for i in range(1, 6))]
    before = {key: hashlib.sha256(store.read_bytes(key)).hexdigest() for key in files}
    pd.read_parquet(small_source).sample(frac=1.0, random_state=7).to_parquet(small_source)
    assert run_offline().success
    after = {key: hashlib.sha256(store.read_bytes(key)).hexdigest() for key in files}
    assert before == after
    metadata = store.read_json(layout.SPLIT_METADATA)
    assert {n: f["sha256"] for n, f in metadata["files"].items()} == {
        n: before[k] for n, k in layout.SPLIT_KEYS.items()
    }


def snapshot(store: ObjectStore) -> dict[str, bytes]:
    return {key: store.read_bytes(key) for key in OFFLINE_KEYS}


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        ("missing_source", "MEDQA_MEDQUAD_SOURCE"),
        ("wrong_columns", "lacks the lavita/MedQuAD column"),
        ("empty_after_filter", "matches no row"),
        ("leaky_split", "no_cross_split_leakage"),
    ],
)
def test_bad_input_fails_clearly_and_keeps_the_store(
    local_store_env, small_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, problem: str, expected: str
) -> None:
    assert run_offline().success
    store = ObjectStore.from_settings()
    before = snapshot(store)
    run_config = None
    if problem == "missing_source":
        monkeypatch.setenv("MEDQA_MEDQUAD_SOURCE", str(tmp_path / "nowhere"))
    elif problem == "wrong_columns":
        wrong = tmp_path / "wrong.jsonl"
        pd.DataFrame({"q": ["a"], "a": ["b"]}).to_json(wrong, orient="records", lines=True)
        monkeypatch.setenv("MEDQA_MEDQUAD_SOURCE", str(wrong))
    elif problem == "empty_after_filter":
        run_config = {"ops": {"medquad_clean": {"config": {"question_types": ["factoid", "yesno", "list"]}}}}
    else:
        real_split = splitting_assets.split_dataset

        def leaky(clean: pd.DataFrame, ratios=None, groups=None, rule=None) -> SplitResult:
            """The real split with one of two training rows of the same focus moved to evaluation."""
            result = real_split(clean, ratios, groups, rule)
            keys = result.groups.keys
            focus = keys[keys["kind"].eq("focus") & (result.split_of_row[keys["row"]] == "training")]
            shared = focus[focus["node"].duplicated(keep=False)]
            result.split_of_row[shared["row"].iloc[0]] = "evaluation"
            result.splits = {n: clean[result.split_of_row == n].reset_index(drop=True) for n in result.splits}
            return result

        monkeypatch.setattr(splitting_assets, "split_dataset", leaky)
    result = run_offline(run_config)
    assert not result.success
    assert expected in failure_messages(result)
    assert snapshot(store) == before  # nothing already stored was overwritten


def test_unreachable_s3_and_wrong_credentials_fail_clearly(s3_store_env, small_source, monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    result = run_offline()
    assert not result.success
    assert "AWS_SECRET_ACCESS_KEY" in failure_messages(result)
    monkeypatch.setenv("MEDQA_S3_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    result = run_offline()
    assert not result.success
    assert "MEDQA_S3_ENDPOINT_URL" in failure_messages(result)


@pytest.mark.slow
def test_full_xml_source_on_local_and_s3(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch, shared_medquad: Path
) -> None:
    monkeypatch.setenv("MEDQA_MEDQUAD_SOURCE", str(shared_medquad))
    result = run_offline()
    assert result.success, failure_messages(result)
    raw = store.read_parquet(layout.MEDQUAD_RAW)
    assert raw.shape == (47441, 13)
    metadata = store.read_json(layout.SPLIT_METADATA)
    assert metadata["initial_records"] == 47441
    assert metadata["dropped"]["missing_answer"] == 31034
    counts = metadata["split_counts"]
    total = sum(counts.values())
    assert total == metadata["final_records"] == 47441 - metadata["dropped"]["total_dropped"]
    assert all(abs(counts[n] / total - r) < 0.02 for n, r in {"training": 0.6, "validation": 0.2}.items())
    leakage = metadata["leakage"]
    assert leakage["held_out_rows_sharing_with_training"] == {"question": 0, "focus": 0, "document": 0, "answer": 0}
    assert leakage["residual"]["concept"]["rows"] <= 200
    splits = {name: store.read_jsonl(key) for name, key in layout.SPLIT_KEYS.items()}
    assert all({"document_url", "umls_cui"} <= set(frame.columns) for frame in splits.values())
    # the bundled default source gives byte-identical splits (it is this XML, converted)
    from medqa_assets.medquad.clean import clean_medquad
    from medqa_assets.splitting.transforms import split_dataset
    from medqa_assets.storage.object_store import frame_to_jsonl

    bundled = split_dataset(clean_medquad(pd.read_parquet(BUNDLED).astype("string")).frame).splits
    assert {n: hashlib.sha256(frame_to_jsonl(f)).hexdigest() for n, f in bundled.items()} == {
        n: f["sha256"] for n, f in metadata["files"].items()
    }
    for key in OFFLINE_KEYS:
        assert store.exists(key), key


def test_definitions_load_without_warnings() -> None:
    code = (
        "import medqa_assets.definitions as d; r = d.defs.get_repository_def(); "
        "print(sorted(j.name for j in r.get_all_jobs()), sorted(s.name for s in d.defs.sensors))"
    )
    with warnings.catch_warnings():
        completed = subprocess.run(
            [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=False
        )
    assert completed.returncode == 0, completed.stderr
    assert "'offline_etl'" in completed.stdout and "'retraining_etl'" in completed.stdout
    assert "raw_logs_sensor" in completed.stdout


def test_contract_asset_keys() -> None:
    from medqa_assets.definitions import defs

    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    expected = {
        "medquad_raw",
        "medquad_clean",
        "dataset_split/training",
        "dataset_split/validation",
        "dataset_split/evaluation",
        *(f"production_sets/set{i}" for i in range(1, 6)),
        "raw_logs",
        "retraining_data",
    }
    assert expected <= keys
