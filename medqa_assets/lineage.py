"""Dataset lineage in MLflow: every dataset version the platform produces, with its digest.

Each materialization of the splits and of each retraining version becomes one finished MLflow
run in experiment ``medqa-data``. The run has the dataset(s) as ``mlflow.data`` inputs (name,
digest, source = the object-store URL, schema, profile), the row and drop counts as metrics and
params, and the version's ``metadata.json`` as an artifact. A training run that logs the same
dataset (same name and digest) is thereby linked to exactly the data that trained it.

Digest. MLflow stores a dataset digest in at most 36 characters (``MAX_DATASET_DIGEST_SIZE``, a
``VARCHAR(36)`` column that the tracking server enforces), and a sha256 has 64 hex digits. The
digest is therefore the first 36 hex digits of the sha256 that ``metadata.json`` records for the
file (:func:`mlflow_digest`; 144 bits, so two different files never share one), and the full
sha256 is on the same input as the input tag ``sha256`` and in the dataset profile. To match a
version against MLflow, compare ``mlflow_digest(metadata sha256)`` with the digest, or the full
sha256 with the ``sha256`` input tag.

Why not ``dagster-mlflow``. Its ``mlflow_tracking`` is an old-style ``@resource`` that, when the
resource is initialised, calls ``mlflow.set_tracking_uri``/``set_experiment`` for the whole process,
copies its ``env`` config into ``os.environ`` (secrets would sit in run config), starts ONE
fluent run per Dagster run named after the job, unregisters MLflow's ``atexit`` end of run and
leaves that run active until a job-level hook ends it. Lineage needs the opposite: one run per
dataset version (a job can produce several), no process-wide state (tests and the webserver run
many jobs in one process), and no run left active. This resource therefore talks to MLflow only
through an explicit ``MlflowClient(tracking_uri)``: ``create_run`` ... ``set_terminated``, never the
fluent API, so ``mlflow.active_run()`` stays ``None`` and nothing leaks between runs or tests.

Tracking URI. ``MLFLOW_TRACKING_URI`` (or the resource's ``tracking_uri``) when set. Otherwise a
SQLite file, so the embedded default needs no server (MLflow 3 refuses a plain file store):
``sqlite:///<local store root>/mlflow/mlflow.db`` when the object store is a local directory, and
``sqlite:///<working directory>/.medqa/mlflow.db`` when the store is ``s3://`` (a database cannot
live in a bucket). With a SQLite URI the artifacts go to an ``artifacts`` folder beside the file.

Failures. Lineage never loses data: the ``record_*`` functions log a warning and return ``None``
when MLflow cannot be reached, after the data and its ``metadata.json`` are already stored.
Messages never include credentials (user:password in a URI is masked).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import threading
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import pandas as pd

from medqa_assets.settings import Settings
from medqa_assets.storage.layout import SPLIT_KEYS, SPLIT_METADATA, retraining_metadata_key

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from medqa_assets.storage.object_store import ObjectStore

EXPERIMENT_NAME = "medqa-data"
MLFLOW_DIGEST_LENGTH = 36  # mlflow.utils.validation.MAX_DATASET_DIGEST_SIZE
METADATA_ARTIFACT = "metadata.json"
LOCAL_DB_KEY = "mlflow/mlflow.db"  # under the local store root
S3_FALLBACK_DB = Path(".medqa") / "mlflow.db"  # under the working directory
SCHEMA_SAMPLE_ROWS = 200
# MLflow 3 reports usage to mlflow-telemetry.io unless told not to; a medical data platform does
# not call out by default (MLFLOW_DISABLE_TELEMETRY=false in the environment allows it)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
_USERINFO_RE = re.compile(r"(?<=//)[^/@\s]+@")
_BAD_KEY_RE = re.compile(r"[^A-Za-z0-9_\-. /]")


def mlflow_digest(sha256: str) -> str:
    """The MLflow dataset digest of a file whose sha256 (hex) is ``sha256``."""
    return sha256.lower()[:MLFLOW_DIGEST_LENGTH]


def redact(text: str) -> str:
    """``text`` with any ``user:password@`` of a URL masked."""
    return _USERINFO_RE.sub("***@", text)


def default_tracking_uri(settings: Settings | None = None) -> str:
    """The tracking URI when ``MLFLOW_TRACKING_URI`` is not set (see the module docstring)."""
    settings = settings or Settings.from_env()
    if settings.store_url.startswith("s3://"):
        path = Path.cwd() / S3_FALLBACK_DB
    else:  # the same root ObjectStore resolves for a local store
        path = Path(settings.store_url.removeprefix("file://")).expanduser() / LOCAL_DB_KEY
    return f"sqlite:///{path.resolve()}"


def _schema_template() -> Path:
    """An empty MLflow SQLite schema for this MLflow version, created once per machine and user."""
    import mlflow
    from mlflow.store.db.utils import _initialize_tables, create_sqlalchemy_engine

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medqa"
    template = cache / f"mlflow-{mlflow.__version__}-schema.db"
    if not template.exists():
        cache.mkdir(parents=True, exist_ok=True)
        temp = cache / f".tmp-{uuid.uuid4().hex}.db"
        try:
            engine = create_sqlalchemy_engine(f"sqlite:///{temp}")
            _initialize_tables(engine)
            engine.dispose()
            os.replace(temp, template)
        finally:
            temp.unlink(missing_ok=True)
    return template


def _seed_sqlite(db_path: Path) -> None:
    """Create a missing SQLite tracking database from the schema template.

    MLflow builds a new database by running its whole migration chain, which takes seconds; a copy
    of an already migrated empty database is equivalent and instant. Any problem here just leaves
    the file absent, and MLflow then creates it the slow way.
    """
    db_path.parent.mkdir(parents=True, exist_ok=True)
    if db_path.exists():
        return
    try:
        temp = db_path.with_name(f".tmp-{uuid.uuid4().hex}-{db_path.name}")
        shutil.copyfile(_schema_template(), temp)
        try:
            os.link(temp, db_path)  # never replaces a database another process just created
        except FileExistsError:
            pass
        finally:
            temp.unlink(missing_ok=True)
    except Exception:
        return


def _import_mlflow() -> None:
    import mlflow.entities  # noqa: F401 - the modules log_datasets uses
    import mlflow.exceptions  # noqa: F401
    import mlflow.models  # noqa: F401
    import mlflow.store.db.utils  # noqa: F401


@dataclass(frozen=True)
class LineageDataset:
    """One dataset input of a lineage run."""

    name: str
    sha256: str
    source_uri: str
    rows: int
    context: str | None = None  # MLflow's ``mlflow.data.context`` input tag, e.g. "training"
    sample: pd.DataFrame | None = None  # a few rows, for the schema only
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return mlflow_digest(self.sha256)


def _schema_json(sample: pd.DataFrame | None) -> str | None:
    if sample is None or sample.columns.empty:
        return None
    try:
        from mlflow.models import infer_signature

        with warnings.catch_warnings():  # hints about integer columns are for model signatures, not data
            warnings.simplefilter("ignore")
            schema = infer_signature(model_input=sample.head(SCHEMA_SAMPLE_ROWS)).inputs
        return json.dumps({"mlflow_colspec": schema.to_dict()})
    except Exception:  # a schema is a nicety; never fail lineage on it
        return None


def _source(uri: str) -> tuple[str, str]:
    """(source type, source JSON) exactly as ``mlflow.data``'s artifact sources record an S3 or local URI."""
    return ("s3" if uri.startswith("s3://") else "local"), json.dumps({"uri": uri})


def _key(name: str) -> str:
    """A valid MLflow metric/param key (letters, digits and ``_-. /`` only)."""
    return _BAD_KEY_RE.sub("_", name)[:250]


def _flat_numbers(prefix: str, values: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat_numbers(f"{name}.", value))
        elif isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
            out.update(_flat_numbers(f"{name}.", {"low": value[0], "high": value[1]}))  # an interval
        elif isinstance(value, int | float) and value == value:  # bools count as 0/1; NaN is dropped
            out[name] = float(value)
    return out


class MlflowLineageResource(dg.ConfigurableResource):
    """Records dataset versions in MLflow (experiment ``medqa-data``); one finished run per call.

    ``tracking_uri`` overrides ``MLFLOW_TRACKING_URI``; with neither, a SQLite file under the local
    store (``<store root>/mlflow/mlflow.db``), or ``./.medqa/mlflow.db`` when the store is S3.
    ``enabled=False`` turns lineage off (e.g. in unit tests that do not test it).
    """

    tracking_uri: str | None = None
    experiment_name: str = EXPERIMENT_NAME
    enabled: bool = True

    def import_in_background(self) -> None:
        """Start importing MLflow (about a second) while the caller works, so that recording finds
        it loaded. Call it after any worker processes are forked: a process forked mid-import
        would inherit the import's locks."""
        if self.enabled:
            threading.Thread(target=_import_mlflow, name="mlflow-import", daemon=True).start()

    def resolved_tracking_uri(self) -> str:
        settings = Settings.from_env()
        return self.tracking_uri or settings.mlflow_tracking_uri or default_tracking_uri(settings)

    def client(self) -> MlflowClient:
        from mlflow import MlflowClient

        uri = self.resolved_tracking_uri()
        if uri.startswith("sqlite:///"):
            _seed_sqlite(Path(uri[len("sqlite:///") :]))
        return MlflowClient(tracking_uri=uri)

    def _experiment_id(self, client: MlflowClient) -> str:
        from mlflow.exceptions import MlflowException

        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        uri = self.resolved_tracking_uri()
        artifact_location = None
        if uri.startswith("sqlite:///"):  # keep artifacts beside the database, not in ./mlruns
            artifact_location = (Path(uri[len("sqlite:///") :]).parent / "artifacts").resolve().as_uri()
        try:
            return client.create_experiment(self.experiment_name, artifact_location=artifact_location)
        except MlflowException:  # another process created it first
            experiment = client.get_experiment_by_name(self.experiment_name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def log_datasets(
        self,
        run_name: str,
        datasets: Iterable[LineageDataset],
        *,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        metadata_json: Mapping[str, Any] | None = None,
    ) -> str:
        """Log one MLflow run with ``datasets`` as inputs; returns its run id. The run is closed.

        Raises on any MLflow error; see :func:`record_dataset_split` for the forgiving form.
        """
        from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param
        from mlflow.utils.time import get_current_time_millis

        client = self.client()
        experiment_id = self._experiment_id(client)
        run_tags = {"medqa.kind": "dataset", "mlflow.note.content": f"Dataset lineage: {run_name}", **(tags or {})}
        run = client.create_run(experiment_id, run_name=run_name, tags=run_tags)
        run_id = run.info.run_id
        status = "FAILED"
        try:
            inputs = []
            for dataset in datasets:
                source_type, source = _source(dataset.source_uri)
                entity = Dataset(
                    name=dataset.name,
                    digest=dataset.digest,
                    source_type=source_type,
                    source=source,
                    schema=_schema_json(dataset.sample),
                    profile=json.dumps({"num_rows": dataset.rows, "sha256": dataset.sha256}),
                )
                input_tags = {"sha256": dataset.sha256, **dataset.tags}
                if dataset.context:
                    input_tags["mlflow.data.context"] = dataset.context
                inputs.append(DatasetInput(entity, [InputTag(k, str(v)) for k, v in input_tags.items()]))
            if inputs:
                client.log_inputs(run_id, datasets=inputs)
            now = get_current_time_millis()
            metric_entities = [Metric(_key(k), float(v), now, 0) for k, v in (metrics or {}).items()]
            param_entities = [Param(_key(k), str(v)[:6000]) for k, v in (params or {}).items()]
            for start in range(0, max(len(metric_entities), len(param_entities)), 100):
                client.log_batch(
                    run_id, metrics=metric_entities[start : start + 100], params=param_entities[start : start + 100]
                )
            if metadata_json is not None:
                client.log_text(
                    run_id, json.dumps(metadata_json, indent=2, sort_keys=True, default=str), METADATA_ARTIFACT
                )
            status = "FINISHED"
            return run_id
        finally:
            client.set_terminated(run_id, status)

    def log_dataset(
        self,
        name: str,
        version: str | None,
        source_uri: str,
        sha256: str,
        rows: int,
        *,
        sample: pd.DataFrame | None = None,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        metadata_json: Mapping[str, Any] | None = None,
    ) -> str:
        """One dataset (``sha256`` of its file, hex) in its own finished run; returns the run id."""
        dataset_name = f"{name}/{version}" if version else name
        tags = {"medqa.dataset": name, **({"medqa.version": version} if version else {})}
        return self.log_datasets(
            dataset_name,
            [LineageDataset(dataset_name, sha256, source_uri, rows, sample=sample, tags=tags)],
            metrics=metrics,
            params=params,
            tags=tags,
            metadata_json=metadata_json,
        )


def _warn(log: Callable[[str], None] | None, what: str, error: BaseException) -> None:
    message = f"MLflow lineage of {what} not recorded ({type(error).__name__}: {redact(str(error))[:500]})"
    if log is not None:
        log(message)


def record_dataset_split(
    lineage: MlflowLineageResource,
    store: ObjectStore,
    metadata: Mapping[str, Any],
    splits: Mapping[str, pd.DataFrame] | None = None,
    log: Callable[[str], None] | None = None,
) -> str | None:
    """One run for the three splits (inputs ``dataset_split/<name>``, digests from ``metadata["files"]``)."""
    if not lineage.enabled:
        return None
    try:
        files = metadata["files"]
        datasets = [
            LineageDataset(
                name=f"dataset_split/{name}",
                sha256=files[name]["sha256"],
                source_uri=store.uri(files[name].get("key", SPLIT_KEYS[name])),
                rows=int(files[name]["rows"]),
                context=name,
                sample=(splits or {}).get(name),
            )
            for name in SPLIT_KEYS
            if name in files
        ]
        dropped = metadata.get("dropped") or {}
        metrics = {
            "initial_records": metadata.get("initial_records", 0),
            "final_records": metadata.get("final_records", 0),
            **_flat_numbers("rows.", metadata.get("split_counts") or {}),
            **_flat_numbers("dropped.", dropped),
            **_flat_numbers("ratio_deviation.", metadata.get("ratio_deviation") or {}),
        }
        params = {
            "source": metadata.get("source", "unknown"),
            "ratios": json.dumps(metadata.get("ratios", {}), sort_keys=True),
            "question_types_allowed": json.dumps(metadata.get("question_types_allowed", [])),
            "metadata_uri": store.uri(SPLIT_METADATA),
            **{f"sha256.{name}": files[name]["sha256"] for name in files},
        }
        return lineage.log_datasets(
            "dataset_split",
            datasets,
            metrics=metrics,
            params=params,
            tags={"medqa.dataset": "dataset_split"},
            metadata_json=metadata,
        )
    except Exception as error:
        _warn(log, "dataset_split", error)
        return None


def _head_jsonl(store: ObjectStore, key: str, rows: int = SCHEMA_SAMPLE_ROWS) -> pd.DataFrame | None:
    lines = []
    with store.open_read(key) as handle:
        for line in handle:
            if line.strip():
                lines.append(line)
            if len(lines) >= rows:
                break
    if not lines:
        return None
    return pd.read_json(io.BytesIO(b"".join(lines)), lines=True, dtype=False, convert_dates=False)


def record_retraining_version(
    lineage: MlflowLineageResource,
    store: ObjectStore,
    version: str,
    metadata: Mapping[str, Any],
    log: Callable[[str], None] | None = None,
) -> str | None:
    """One run for retraining version ``version`` (input ``retraining_data/vN``, digest of its output)."""
    if not lineage.enabled:
        return None
    try:
        output = metadata["output"]
        try:
            sample = _head_jsonl(store, output["key"])
        except Exception:
            sample = None
        metrics = {
            **_flat_numbers(
                "",
                {
                    k: metadata.get(k, 0)
                    for k in (
                        "records_in",
                        "records_out",
                        "quarantined",
                        "duplicates_removed",
                        "already_published",
                        "files_quarantined",
                    )
                },
            ),
            "bytes": output.get("bytes", 0),
            "source_files": len(metadata.get("source_files") or []),
            **_flat_numbers("rejections.", metadata.get("rejections") or {}),
            **_flat_numbers("pii_redactions.", metadata.get("pii_redactions") or {}),
            **_flat_numbers("answer_quality.", metadata.get("answer_quality") or {}),
            **_flat_numbers("contamination.", metadata.get("contamination") or {}),
        }
        params = {
            "version": version,
            "sha256": output["sha256"],
            "metadata_uri": store.uri(retraining_metadata_key(version)),
            "fields_dropped": json.dumps(metadata.get("fields_dropped", [])),
        }
        tags = {"medqa.dataset": "retraining_data", "medqa.version": version}
        dataset = LineageDataset(
            name=f"retraining_data/{version}",
            sha256=output["sha256"],
            source_uri=store.uri(output["key"]),
            rows=int(output.get("rows", metadata.get("records_out", 0))),
            context="retraining",
            sample=sample,
            tags={"medqa.version": version},
        )
        return lineage.log_datasets(
            f"retraining_data {version}", [dataset], metrics=metrics, params=params, tags=tags, metadata_json=metadata
        )
    except Exception as error:
        _warn(log, f"retraining_data {version}", error)
        return None
