"""Splitting stage: leakage-free training/validation/evaluation splits and production sets.

Each stage validates everything before it yields its first output, so a failed check never
leaves a half-updated set of splits in the store.
"""

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pandas as pd

from medqa_assets.checks import fail_if_any_failed, schema_check_result, schema_check_spec
from medqa_assets.lineage import MlflowLineageResource, record_dataset_split
from medqa_assets.medquad.schemas import QA_SCHEMA
from medqa_assets.resources import JsonLinesFrame, ObjectStoreResource
from medqa_assets.settings import Settings
from medqa_assets.splitting.leakage import GroupingRule, leakage_metadata
from medqa_assets.splitting.transforms import (
    SPLIT_RATIOS,
    SPLIT_SALT,
    SplitRatioError,
    cut_production_sets,
    production_sets_coverage,
    split_dataset,
    split_ratio_deviation,
    split_ratio_tolerance,
)
from medqa_assets.storage.layout import SPLIT_KEYS, SPLIT_METADATA, SPLIT_NAMES, production_set_name
from medqa_assets.validation import validate_frame

SPLIT_KEYS_BY_NAME = {name: dg.AssetKey(["dataset_split", name]) for name in SPLIT_NAMES}
TRAINING_KEY = SPLIT_KEYS_BY_NAME["training"]
EVALUATION_KEY = SPLIT_KEYS_BY_NAME["evaluation"]


class SplitConfig(dg.Config):
    """How leakage groups are formed (defaults measured on MedQuAD; see the README)."""

    answer_hub_foci: int = GroupingRule.answer_hub_foci
    """An answer shared by more distinct foci is boilerplate: it does not link rows, and every
    group holding it goes to training."""
    concept_hub_foci: int = GroupingRule.concept_hub_foci
    """A UMLS concept shared by more distinct foci does not link rows (0: every concept links)."""
    synonym_hub_foci: int = GroupingRule.synonym_hub_foci
    """A synonym shared by more distinct foci does not link rows (0: every synonym links)."""
    max_held_out_group_share: float = GroupingRule.max_held_out_group_share
    """A group holding more than this share of the rows goes to training."""

    def rule(self) -> GroupingRule:
        return GroupingRule(
            answer_hub_foci=self.answer_hub_foci,
            concept_hub_foci=self.concept_hub_foci,
            synonym_hub_foci=self.synonym_hub_foci,
            max_held_out_group_share=self.max_held_out_group_share,
        )


def _split_checks() -> list[dg.AssetCheckSpec]:
    return [
        *(schema_check_spec(key) for key in SPLIT_KEYS_BY_NAME.values()),
        dg.AssetCheckSpec(
            "split_ratios", asset=TRAINING_KEY, blocking=True, description="60/20/20 within the spread of the groups"
        ),
        dg.AssetCheckSpec(
            "no_cross_split_leakage",
            asset=EVALUATION_KEY,
            blocking=True,
            description="no held-out row shares a question, folded focus, document or non-hub answer with training",
        ),
        dg.AssetCheckSpec(
            "residual_sharing",
            asset=EVALUATION_KEY,
            blocking=False,
            description="what held-out rows still share with training through hub keys (concepts, synonyms)",
        ),
    ]


@dg.multi_asset(
    outs={
        name: dg.AssetOut(
            key=key,
            group_name="dataset_split",
            kinds={"pandas", "json"},
            description=f"The {name} split as JSON Lines at {SPLIT_KEYS[name]}.",
        )
        for name, key in SPLIT_KEYS_BY_NAME.items()
    },
    ins={"medquad_clean": dg.AssetIn(dg.AssetKey("medquad_clean"))},
    check_specs=_split_checks(),
)
def dataset_split(
    context: dg.AssetExecutionContext,
    config: SplitConfig,
    store: ObjectStoreResource,
    mlflow: MlflowLineageResource,
    medquad_clean: pd.DataFrame,
) -> Iterator[Any]:
    try:
        result = split_dataset(medquad_clean, rule=config.rule())
    except SplitRatioError as error:
        raise dg.Failure(str(error)) from error
    splits, groups = result.splits, result.groups
    counts = {name: len(frame) for name, frame in splits.items()}
    deviation = split_ratio_deviation(counts)
    tolerance = split_ratio_tolerance(result)
    sharing = result.sharing()
    checks = [schema_check_result(SPLIT_KEYS_BY_NAME[n], validate_frame(QA_SCHEMA, f)) for n, f in splits.items()]
    checks.append(
        dg.AssetCheckResult(
            asset_key=TRAINING_KEY,
            check_name="split_ratios",
            passed=all(abs(d) <= tolerance for d in deviation.values()),
            metadata={
                "counts": dg.MetadataValue.json(counts),
                "deviation": dg.MetadataValue.json(deviation),
                "tolerance": round(tolerance, 4),
                "leakage_groups": int(groups.labels.nunique()),
                "free_group_ratios": dg.MetadataValue.json(result.free_ratios),
            },
        )
    )
    checks.append(
        dg.AssetCheckResult(
            asset_key=EVALUATION_KEY,
            check_name="no_cross_split_leakage",
            passed=not any(sharing["blocking"].values()),
            metadata={"held_out_rows_sharing_with_training": dg.MetadataValue.json(sharing["blocking"])},
        )
    )
    checks.append(
        dg.AssetCheckResult(
            asset_key=EVALUATION_KEY,
            check_name="residual_sharing",
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                **{f"{kind}_rows": info["rows"] for kind, info in sharing["residual"].items()},
                "residual": dg.MetadataValue.json(sharing["residual"]),
                "hubs": dg.MetadataValue.json(groups.summary["hubs"]),
            },
        )
    )
    yield from checks
    fail_if_any_failed(checks, "dataset splits")

    files = {}
    for name, frame in splits.items():
        serialized = JsonLinesFrame.of(frame)
        digest = serialized.sha256
        files[name] = {"key": SPLIT_KEYS[name], "rows": len(frame), "sha256": digest}
        yield dg.Output(serialized, output_name=name, metadata={"rows": len(frame), "sha256": digest})

    attrs = medquad_clean.attrs
    metadata = {
        "source": attrs.get("source", "unknown"),
        "provenance": attrs.get("provenance", {}),
        "initial_records": attrs.get("initial_records", len(medquad_clean)),
        "final_records": len(medquad_clean),
        "split_counts": counts,
        "dropped": attrs.get("dropped", {"total_dropped": 0}),
        "question_types_allowed": attrs.get("question_types", []),
        "ratios": SPLIT_RATIOS,
        "ratio_deviation": deviation,
        "ratio_tolerance": round(tolerance, 4),
        "assignment": (
            "hash of the leakage group (rows linked by a shared question, folded focus, synonym, UMLS concept, "
            f"document or answer, hub keys excepted), salt {SPLIT_SALT}; groups holding a hub answer go to "
            "training and the others are cut by free_group_ratios"
        ),
        "grouping_rule": dataclasses.asdict(config.rule()),
        "free_group_ratios": result.free_ratios,
        "free_group_thresholds": result.thresholds,
        "leakage": leakage_metadata(groups, sharing),
        "files": files,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    store.get_store().write_json(SPLIT_METADATA, metadata)
    run_id = record_dataset_split(mlflow, store.get_store(), metadata, splits, log=context.log.warning)
    lineage = f"; lineage: MLflow run {run_id} in experiment {mlflow.experiment_name}" if run_id else ""
    context.log.info(f"splits {counts}; metadata at {SPLIT_METADATA}{lineage}")  # one line: each is an event


def production_set_keys(count: int) -> dict[str, dg.AssetKey]:
    return {
        production_set_name(i): dg.AssetKey(["production_sets", production_set_name(i)]) for i in range(1, count + 1)
    }


def build_production_sets_asset(count: int) -> dg.AssetsDefinition:
    """``production_sets/set1`` … ``setN``: the evaluation split cut into ``count`` sets."""
    keys = production_set_keys(count)
    checks = [
        *(schema_check_spec(key) for key in keys.values()),
        *(
            dg.AssetCheckSpec(
                "disjoint_and_complete", asset=key, blocking=True, description="the sets partition the evaluation split"
            )
            for key in keys.values()
        ),
    ]

    @dg.multi_asset(
        name="production_sets",
        outs={
            name: dg.AssetOut(key=key, group_name="production_sets", kinds={"pandas", "json"})
            for name, key in keys.items()
        },
        ins={"evaluation": dg.AssetIn(EVALUATION_KEY)},
        check_specs=checks,
        description=f"The evaluation split cut into {count} disjoint production sets (MEDQA_PRODUCTION_SETS).",
    )
    def production_sets(evaluation: pd.DataFrame) -> Iterator[Any]:
        sets = cut_production_sets(evaluation, count)
        coverage = production_sets_coverage(evaluation, sets)
        results = [schema_check_result(keys[n], validate_frame(QA_SCHEMA, f)) for n, f in sets.items()]
        results += [
            dg.AssetCheckResult(
                asset_key=key,
                check_name="disjoint_and_complete",
                passed=not any(coverage.values()),
                metadata={"coverage": dg.MetadataValue.json(coverage)},
            )
            for key in keys.values()
        ]
        yield from results
        fail_if_any_failed(results, "production sets")
        for name, frame in sets.items():  # rows in each set's metadata: no log line (an event) repeating them
            yield dg.Output(frame, output_name=name, metadata={"rows": len(frame)})

    return production_sets


def build_splitting_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    return [dataset_split, build_production_sets_asset(settings.production_sets)]
