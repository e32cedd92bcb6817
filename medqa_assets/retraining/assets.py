"""Online stage: production logs -> immutable, versioned retraining data, triggered by a sensor.

The sensor decides (read-only, see :mod:`.decide`); the run acts: ``raw_logs`` takes the claim
and snapshots the files, ``retraining_data`` builds and publishes the version.
"""

import hashlib
import json
import time
from datetime import datetime

import dagster as dg
from pydantic import Field

from medqa_assets.console import COMPACT_LOGGING_RUN_CONFIG
from medqa_assets.lineage import MlflowLineageResource, record_retraining_version
from medqa_assets.resources import ObjectStoreResource
from medqa_assets.retraining.build import build_version, is_published
from medqa_assets.retraining.control import Decision, MalformedControl
from medqa_assets.retraining.decide import plan_tick
from medqa_assets.retraining.publish import retire
from medqa_assets.retraining.reading import ManifestMismatch
from medqa_assets.retraining.retention import delete_expired_raw_inputs
from medqa_assets.retraining.snapshot import VersionRefused, prepare_version
from medqa_assets.settings import Settings
from medqa_assets.storage.layout import manifest_key

versions_partitions = dg.DynamicPartitionsDefinition(name="retraining_versions")

DECISION_TAG = "medqa/decision"
ORPHANED_TAG = "medqa/orphaned"  # set by `medqa tick` on runs a killed tick left behind
MAX_ATTEMPTS = 3  # runs of one claim the sensor requests before it leaves the version to a person
UNLAUNCHED_DECISION_TTL_S = 600.0  # a decision whose run never appeared is dropped after this


class RawLogsConfig(dg.Config):
    decision: str = Field(
        default="",
        description="The sensor's decision for this version (JSON). Versions come from raw_logs_sensor, not by hand.",
    )


@dg.asset(
    partitions_def=versions_partitions,
    group_name="retraining",
    kinds={"json"},
    description="The batch of raw log files that makes up version N: which byte ranges of which files, with sha256.",
)
def raw_logs(
    context: dg.AssetExecutionContext, config: RawLogsConfig, store: ObjectStoreResource
) -> dg.MaterializeResult:
    version = context.partition_key
    object_store = store.get_store()
    try:
        decision = Decision.from_json(json.loads(config.decision)) if config.decision else None
        manifest = prepare_version(
            object_store, version, decision, Settings.from_env().sensor_settle_seconds, log=context.log.info
        )
    except (VersionRefused, MalformedControl, json.JSONDecodeError) as error:
        raise dg.Failure(str(error), allow_retries=False) from None
    files = manifest["files"]
    for key in manifest.get("missing", []):
        context.log.warning(f"{version}: {key} was claimed but is gone; the rest of the version goes on")
    return dg.MaterializeResult(
        metadata={
            "files": len(files),
            "bytes": sum(f.get("size", 0) for f in files),
            "missing": len(manifest.get("missing", [])),
            "created": manifest["created"],
            "manifest": dg.MetadataValue.path(object_store.uri(manifest_key(version))),
            "batch": dg.MetadataValue.md(
                "| file | bytes | status |\n|---|---|---|\n"
                + "\n".join(
                    f"| {_plain(f['key'].rsplit('/', 1)[-1])} | {f.get('size', 0)} | {f['status']} |"
                    for f in files[:50]
                )
                + (f"\n\n… and {len(files) - 50} more" if len(files) > 50 else "")
            ),
        }
    )


def _plain(text: str, limit: int = 80) -> str:
    """A name from a log shown in a Markdown table as text: no markup, no links, no images."""
    cleaned = "".join(c if c.isalnum() or c in " ._-" else "_" for c in text)
    return cleaned[:limit]


@dg.asset(
    partitions_def=versions_partitions,
    deps=[raw_logs],
    group_name="retraining",
    kinds={"pandas", "json"},
    description="Version N of the retraining data: scrubbed, validated, de-duplicated question/answer pairs.",
)
def retraining_data(
    context: dg.AssetExecutionContext, store: ObjectStoreResource, mlflow: MlflowLineageResource
) -> dg.MaterializeResult:
    version = context.partition_key
    object_store = store.get_store()
    try:
        manifest = object_store.read_json(manifest_key(version))
    except FileNotFoundError:
        raise dg.Failure(
            f"{version} has no manifest: no run of raw_logs took its claim; versions come from raw_logs_sensor "
            "(or `medqa tick`), which runs raw_logs and retraining_data together",
            allow_retries=False,
        ) from None
    already_published = is_published(object_store, version)
    try:
        metadata = build_version(
            object_store,
            version,
            manifest,
            log=context.log.info,
            workers_started=mlflow.import_in_background if not already_published else lambda: None,
        )
    except ManifestMismatch as error:
        raise dg.Failure(str(error)) from error
    mlflow_run_id = (
        None
        if already_published  # a re-run of a published version records nothing twice
        else record_retraining_version(mlflow, object_store, version, metadata, log=context.log.warning)
    )
    quality = metadata["answer_quality"] or {}
    return dg.MaterializeResult(
        metadata={
            "records_in": metadata["records_in"],
            "records_out": metadata["records_out"],
            "quarantined": metadata["quarantined"],
            "duplicates_removed": metadata["duplicates_removed"],
            "already_published": metadata.get("already_published", 0),
            "rejections": dg.MetadataValue.json(metadata["rejections"]),
            "pii_redactions": dg.MetadataValue.json(metadata["pii_redactions"]),
            "output_sha256": metadata["output"]["sha256"],
            "answer_quality_mean": quality.get("mean", float("nan")),
            "uri": dg.MetadataValue.path(object_store.uri(metadata["output"]["key"])),
            **({"mlflow_run_id": mlflow_run_id} if mlflow_run_id else {}),
        },
        data_version=dg.DataVersion(metadata["output"]["sha256"]),
    )


retraining_etl = dg.define_asset_job(
    "retraining_etl",
    selection=dg.AssetSelection.assets(raw_logs, retraining_data),
    description="raw_logs and retraining_data for one version.",
    config=COMPACT_LOGGING_RUN_CONFIG,
)


@dg.op(description="Deletes raw log files that versions consumed completely and nobody wrote to since.")
def retire_consumed_logs(context: dg.OpExecutionContext, store: ObjectStoreResource) -> None:
    retired = retire(store.get_store(), Settings.from_env().retire_after_seconds)
    context.log.info(f"retired {retired} consumed raw log file(s)")


@dg.job(
    description="Housekeeping of retraining_data_raw/: consumed files are deleted once left alone long enough.",
    config=COMPACT_LOGGING_RUN_CONFIG,
)
def retraining_housekeeping() -> None:
    retire_consumed_logs()


@dg.op(description="Deletes raw inputs (archive snapshots, quarantined files) past MEDQA_RAW_RETENTION_DAYS.")
def delete_expired_raw_inputs_op(context: dg.OpExecutionContext, store: ObjectStoreResource) -> dg.Output[None]:
    days = Settings.from_env().raw_retention_days
    report = delete_expired_raw_inputs(store.get_store(), days, log=context.log.info)
    context.log.info(f"retention {days} days: deleted {report.files} raw input file(s), {report.bytes} bytes")
    return dg.Output(None, metadata={"retention_days": days, "files_deleted": report.files, "bytes": report.bytes})


@dg.job(
    description="Privacy: raw inputs live only in their prefixes, and only for MEDQA_RAW_RETENTION_DAYS (default 30).",
    config=COMPACT_LOGGING_RUN_CONFIG,
)
def raw_retention() -> None:
    delete_expired_raw_inputs_op()


raw_retention_schedule = dg.ScheduleDefinition(
    name="raw_retention_schedule",
    job=raw_retention,
    cron_schedule="15 3 * * *",  # daily, at a quiet hour
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Deletes raw inputs past MEDQA_RAW_RETENTION_DAYS once a day.",
)


def retire_run_request(keys: list[str]) -> dg.RunRequest:
    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]
    return dg.RunRequest(
        run_key=f"retire-{digest}", job_name=retraining_housekeeping.name, tags={"medqa/files": str(len(keys))}
    )


def decision_run_request(decision: Decision, attempt: int) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"{decision.version}-{decision.decision_id[:12]}-{attempt}",
        partition_key=decision.version,
        run_config={
            **COMPACT_LOGGING_RUN_CONFIG,
            "ops": {"raw_logs": {"config": {"decision": json.dumps(decision.as_json())}}},
        },
        tags={DECISION_TAG: decision.decision_id, "medqa/files": str(len(decision.files))},
    )


def _runs_of(instance: dg.DagsterInstance, decision: Decision) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={DECISION_TAG: decision.decision_id})))


def _alive(instance: dg.DagsterInstance, decision: Decision) -> bool:
    """May this decision's run still take its claim (queued or running, or not launched yet)?"""
    runs = _runs_of(instance, decision)
    if runs:
        return any(not run.is_finished for run in runs)
    try:
        age = time.time() - datetime.fromisoformat(decision.decided_at).timestamp()
    except ValueError:
        return False
    return age < UNLAUNCHED_DECISION_TTL_S


@dg.sensor(
    job=retraining_etl,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Decides which settled files under retraining_data_raw/ make up the next version and requests its run.",
)
def raw_logs_sensor(context: dg.SensorEvaluationContext, store: ObjectStoreResource) -> dg.SensorResult:
    """Reads the store and the instance, writes nothing: the decision travels in the cursor and the run config."""
    object_store = store.get_store()
    previous = None
    if context.cursor:
        try:
            previous = Decision.from_json(json.loads(context.cursor))
        except (ValueError, MalformedControl):
            previous = None
    plan = plan_tick(
        object_store,
        Settings.from_env().sensor_settle_seconds,
        previous=previous,
        previous_alive=previous is not None and _alive(context.instance, previous),
    )
    for entry in plan.ignored[:20]:
        context.log.warning(f"not taking {entry.key!r} under retraining_data_raw/: {entry.reason}")
    if len(plan.ignored) > 20:
        context.log.warning(f"... and {len(plan.ignored) - 20} more entries not taken")
    for key, reason in plan.malformed.items():
        context.log.warning(f"control file {key} is not trusted: {reason}")
    requests = []
    for claim in plan.open_claims:  # finish unfinished versions, a bounded number of times
        runs = _runs_of(context.instance, claim)
        if any(not run.is_finished for run in runs):
            continue  # its run is queued or running
        failures = sum(1 for run in runs if run.is_failure and ORPHANED_TAG not in run.tags)
        if failures < MAX_ATTEMPTS:
            requests.append(decision_run_request(claim, attempt=len(runs)))
        else:
            context.log.warning(f"{claim.version} failed {failures} times; re-execute it from the UI once fixed")
    current = plan.decision or plan.waiting
    if current is not None:
        requests.append(decision_run_request(current, 0))
    if plan.decision is not None:
        context.log.info(f"decided {plan.decision.version}: {len(plan.decision.files)} file(s)")
    known = set(context.instance.get_dynamic_partitions(versions_partitions.name))
    new_versions = sorted({r.partition_key for r in requests} - known, key=lambda v: int(v[1:]))
    return dg.SensorResult(
        run_requests=requests,
        cursor=json.dumps(current.as_json()) if current is not None else (context.cursor or None),
        dynamic_partitions_requests=[versions_partitions.build_add_request(new_versions)] if new_versions else [],
        skip_reason=None if requests else (plan.skip_reason or "every unfinished version needs a person"),
    )


@dg.sensor(
    job_name="retraining_housekeeping",  # by name: Dagster rebuilds a sensor that holds an op job, and warns
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests the deletion of raw log files consumed and untouched for MEDQA_RETIRE_AFTER_SECONDS.",
)
def consumed_logs_sensor(context: dg.SensorEvaluationContext, store: ObjectStoreResource) -> dg.SensorResult:
    """Reads the store, writes nothing; only while no version is being built."""
    settings = Settings.from_env()
    plan = plan_tick(
        store.get_store(), settings.sensor_settle_seconds, retire_after_seconds=settings.retire_after_seconds
    )
    if plan.open_claims or not plan.retirable:
        return dg.SensorResult(skip_reason="no consumed raw log file is due for deletion")
    return dg.SensorResult(run_requests=[retire_run_request(plan.retirable)])
