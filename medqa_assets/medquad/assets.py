"""Ingestion stage: MedQuAD from its configured source into the store, then cleaned."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pandas as pd

from medqa_assets.checks import schema_check_spec, schema_gate
from medqa_assets.medquad.clean import EmptyResultError, clean_medquad
from medqa_assets.medquad.schemas import MEDQUAD_RAW_SCHEMA, QA_SCHEMA
from medqa_assets.medquad.sources import SourceError, load_medquad
from medqa_assets.resources import ObjectStoreResource, store_failures
from medqa_assets.settings import Settings

DROP_REASON_TEXT = {
    "missing_question": "without a question",
    "missing_answer": "without an answer (MedQuAD ships three MedlinePlus collections without answers)",
    "question_type_not_allowed": "of a question type outside the allow-list",
    "duplicate_question_answer": "duplicate question/answer pairs",
}

MEDQUAD_RAW_KEY = dg.AssetKey("medquad_raw")
MEDQUAD_CLEAN_KEY = dg.AssetKey("medquad_clean")


class CleanConfig(dg.Config):
    """Options of medquad_clean."""

    question_types: list[str] = []
    """Keep only these question types (MedQuAD's are words like information, symptoms, treatment).
    Empty keeps every type."""


@dg.asset(
    key=MEDQUAD_RAW_KEY,
    group_name="medquad",
    kinds={"pandas", "parquet"},
    check_specs=[schema_check_spec(MEDQUAD_RAW_KEY)],
    description="Every MedQuAD row from MEDQA_MEDQUAD_SOURCE, in the lavita/MedQuAD columns.",
)
def medquad_raw(context: dg.AssetExecutionContext, store: ObjectStoreResource) -> Iterator[Any]:
    settings = Settings.from_env()
    with store_failures():
        store.get_store().check_access()  # an unreachable store fails here, before any work
    try:
        loaded = load_medquad(settings.medquad_source)
    except SourceError as error:
        raise dg.Failure(str(error)) from error
    context.log.info(f"loaded {len(loaded.frame)} MedQuAD rows from {loaded.kind} source {loaded.location}")
    yield from schema_gate(MEDQUAD_RAW_KEY, MEDQUAD_RAW_SCHEMA, loaded.frame)
    frame = loaded.frame
    frame.attrs = {"source": settings.medquad_source, "source_kind": loaded.kind, "provenance": loaded.provenance}
    yield dg.Output(
        frame,
        metadata={
            "rows": len(frame),
            "source": settings.medquad_source,
            "source_kind": loaded.kind,
            "provenance": dg.MetadataValue.json(loaded.provenance),
            "rows_without_answer": int(frame["answer"].isna().sum()),
        },
    )


@dg.asset(
    key=MEDQUAD_CLEAN_KEY,
    group_name="medquad",
    kinds={"pandas", "parquet"},
    check_specs=[schema_check_spec(MEDQUAD_CLEAN_KEY)],
    description="Answered, whitespace-normalized, de-duplicated question-answer pairs with lineage ids.",
)
def medquad_clean(context: dg.AssetExecutionContext, config: CleanConfig, medquad_raw: pd.DataFrame) -> Iterator[Any]:
    try:
        result = clean_medquad(medquad_raw, config.question_types or None)
    except EmptyResultError as error:
        raise dg.Failure(str(error)) from error
    reasons = ", ".join(
        f"{count} {DROP_REASON_TEXT.get(reason, reason)}" for reason, count in result.dropped.items() if count
    )
    context.log.info(
        f"kept {len(result.frame)} of {len(medquad_raw)} rows" + (f"; dropped {reasons}" if reasons else "")
    )
    yield from schema_gate(MEDQUAD_CLEAN_KEY, QA_SCHEMA, result.frame)
    frame = result.frame
    frame.attrs = {
        "source": medquad_raw.attrs.get("source", "unknown"),
        "provenance": medquad_raw.attrs.get("provenance", {}),
        "initial_records": len(medquad_raw),
        "dropped": {**result.dropped, "total_dropped": result.total_dropped},
        "question_types": list(config.question_types),
    }
    yield dg.Output(
        frame,
        metadata={
            "rows": len(frame),
            "initial_records": len(medquad_raw),
            "dropped": dg.MetadataValue.json(frame.attrs["dropped"]),
            "question_types": dg.MetadataValue.json(frame["question_type"].value_counts().to_dict()),
        },
    )
