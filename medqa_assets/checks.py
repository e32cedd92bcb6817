"""Turning pure validation findings into Dagster asset check results, the same way everywhere."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg

from medqa_assets.privacy.scrub import scrub_value
from medqa_assets.validation import ValidationReport, validate_frame

SCHEMA_CHECK = "schema"


def schema_check_spec(asset_key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(SCHEMA_CHECK, asset=asset_key, blocking=True, description="pandera schema (lazy)")


def schema_check_result(asset_key: dg.AssetKey, report: ValidationReport) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=SCHEMA_CHECK,
        passed=report.passed,
        metadata={
            "rows": report.rows,
            "failure_count": report.failure_count,
            "failures_by_check": dg.MetadataValue.json(report.failures_by_check),
            # failing values are data: scrubbed like everything stored outside raw/
            "failure_sample": dg.MetadataValue.json(scrub_value(report.failure_sample)),
        },
    )


def schema_gate(asset_key: dg.AssetKey, schema: Any, frame: Any) -> Iterator[dg.AssetCheckResult]:
    """Yield the schema check of ``frame``; stop the step (nothing written) if it failed."""
    check = schema_check_result(asset_key, validate_frame(schema, frame))
    yield check
    fail_if_any_failed([check], asset_key.to_user_string())


def fail_if_any_failed(results: list[dg.AssetCheckResult], what: str) -> None:
    """Stop before anything is written when a blocking check failed, naming the checks."""
    failed = [f"{r.asset_key.to_user_string() if r.asset_key else ''}:{r.check_name}" for r in results if not r.passed]
    if failed:
        metadata: dict[str, Any] = {"failed_checks": dg.MetadataValue.json(failed)}
        raise dg.Failure(
            f"{what} not written: blocking check(s) failed: {', '.join(failed)} (see the check results' metadata)",
            metadata=metadata,
        )
