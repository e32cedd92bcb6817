"""Online stage: production logs -> immutable, versioned retraining data, triggered by a sensor."""

import hashlib
from datetime import UTC, datetime

import dagster as dg

from medqa_assets.console import COMPACT_LOGGING_RUN_CONFIG
from medqa_assets.lineage import MlflowLineageResource, record_retraining_version
from medqa_assets.resources import ObjectStoreResource
from medqa_assets.retraining.build import ManifestMismatch, build_version
from medqa_assets.retraining.versioning import claim_pending, locate, open_claims, read_claim
from medqa_assets.settings import Settings
from medqa_assets.storage.layout import manifest_key

versions_partitions = dg.DynamicPartitionsDefinition(name="retraining_versions")


@dg.asset(
    partitions_def=versions_partitions,
    group_name="retraining",
    kinds={"json"},
    description="The batch of raw log files that makes up version N: which files, their sizes and sha256.",
)
def raw_logs(context: dg.AssetExecutionContext, store: ObjectStoreResource) -> dg.MaterializeResult:
    version = context.partition_key
    object_store = store.get_store()
    key = manifest_key(version)
    if object_store.exists(key):  # a re-run keeps the manifest the first run recorded
        manifest = object_store.read_json(key)
    else:
        claim = read_claim(object_store, version)
        if claim is None:
            raise dg.Failure(f"{version} has no claim; versions are created by raw_logs_sensor, not by hand")
        files = []
        for entry in claim.files:
            location = locate(object_store, version, entry["key"])
            if location is None:
                raise dg.Failure(f"{entry['key']}, claimed by {version}, is missing from the store")
            data = object_store.read_bytes(location)
            files.append({"key": entry["key"], "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        manifest = {
            "version": version,
            "claimed": claim.created,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": files,
        }
        object_store.write_json(key, manifest)
    files = manifest["files"]
    return dg.MaterializeResult(
        metadata={
            "files": len(files),
            "bytes": sum(f["size"] for f in files),
            "manifest": dg.MetadataValue.path(object_store.uri(key)),
            "batch": dg.MetadataValue.md(
                "| file | bytes | sha256 |\n|---|---|---|\n"
                + "\n".join(
                    f"| {f['key'].rsplit('/', 1)[-1]} | {f['size']} | `{f['sha256'][:16]}…` |" for f in files[:50]
                )
                + (f"\n\n… and {len(files) - 50} more" if len(files) > 50 else "")
            ),
        }
    )


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
        raise dg.Failure(f"{version} has no manifest; materialize raw_logs[{version}] first") from None
    try:
        metadata = build_version(object_store, version, manifest, log=context.log.info)
    except ManifestMismatch as error:
        raise dg.Failure(str(error)) from error
    mlflow_run_id = record_retraining_version(mlflow, object_store, version, metadata, log=context.log.warning)
    quality = metadata["answer_quality"] or {}
    return dg.MaterializeResult(
        metadata={
            "records_in": metadata["records_in"],
            "records_out": metadata["records_out"],
            "quarantined": metadata["quarantined"],
            "duplicates_removed": metadata["duplicates_removed"],
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


@dg.sensor(
    job=retraining_etl,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Claims settled new files under retraining_data_raw/ as the next version and runs it.",
)
def raw_logs_sensor(context: dg.SensorEvaluationContext, store: ObjectStoreResource) -> dg.SensorResult:
    object_store = store.get_store()
    known = context.instance.get_dynamic_partitions(versions_partitions.name)
    claim = claim_pending(object_store, Settings.from_env().sensor_settle_seconds, known)
    if claim is not None:
        context.log.info(f"claimed {len(claim.files)} file(s) as {claim.version}")
    # Every open claim gets a run request; the run key makes a launched version's request a no-op,
    # and a claim whose tick died before its run was requested is picked up again.
    claims = open_claims(object_store)
    new_versions = sorted(set(claims) - set(known), key=lambda v: int(v[1:]))
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=version, partition_key=version, tags={"medqa/files": str(len(claims[version].files))})
            for version in sorted(claims, key=lambda v: int(v[1:]))
        ],
        dynamic_partitions_requests=[versions_partitions.build_add_request(new_versions)] if new_versions else [],
        skip_reason=None if claims else "no settled new files under retraining_data_raw/",
    )
