"""Where MedQuAD comes from (``MEDQA_MEDQUAD_SOURCE``): the bundled snapshot, the original XML,
a file in the lavita/MedQuAD layout, or the Hugging Face hub.

Every source yields the same 13 string columns, so the rest of the pipeline never cares which
one was used; a source that does not fit fails with one message naming the variable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from medqa_assets.medquad.xml_reader import LAVITA_COLUMNS, read_medquad_xml
from medqa_assets.settings import MEDQUAD_SOURCE_VAR

HF_PREFIX = "hf://"
BUNDLED = "bundled"
BUNDLED_FILE = "medquad.parquet"
PROVENANCE_FILE = "provenance.json"


class SourceError(ValueError):
    """The configured MedQuAD source cannot be used; the message names the setting."""


@dataclass(frozen=True)
class LoadedSource:
    """MedQuAD rows with a description of where they came from."""

    frame: pd.DataFrame
    kind: str
    location: str
    provenance: dict[str, Any]


def bundled_dir() -> Path:
    return Path(str(resources.files("medqa_assets.medquad") / "bundled"))


def _conform(frame: pd.DataFrame, location: str) -> pd.DataFrame:
    missing = [column for column in LAVITA_COLUMNS if column not in frame.columns]
    if missing:
        raise SourceError(
            f"MedQuAD source {location} lacks the lavita/MedQuAD column(s) {', '.join(missing)}; "
            f"point {MEDQUAD_SOURCE_VAR} at data in that layout (13 columns: {', '.join(LAVITA_COLUMNS)})"
        )
    return frame[LAVITA_COLUMNS].astype("string").reset_index(drop=True)


def _string_dtype(arrow_type: pa.DataType) -> pd.StringDtype | None:
    return pd.StringDtype() if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) else None


def _read_parquet(path: Path) -> pd.DataFrame:
    """Text columns straight into pandas strings: no Python ``object`` column converted afterwards."""
    return pq.read_table(path).to_pandas(types_mapper=_string_dtype)


def _read_table_file(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return _read_parquet(path)
    if path.suffix in (".jsonl", ".json"):
        return pd.read_json(path, lines=True, dtype=False, convert_dates=False)
    raise SourceError(
        f"{MEDQUAD_SOURCE_VAR}={path} has an unsupported file type {path.suffix!r}; "
        "use a .parquet or .jsonl file, a MedQuAD XML directory, 'bundled' or hf://lavita/MedQuAD"
    )


def load_from_hub(spec: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``hf://owner/name[@revision]`` through ``datasets.load_dataset`` (train split)."""
    import datasets

    repo, _, revision = spec[len(HF_PREFIX) :].partition("@")
    if not repo:
        raise SourceError(f"{MEDQUAD_SOURCE_VAR}={spec!r} names no dataset; use hf://lavita/MedQuAD[@revision]")
    try:
        dataset = datasets.load_dataset(repo, revision=revision or None, split="train")
    except Exception as error:
        raise SourceError(
            f"cannot load {spec} from the Hugging Face hub ({type(error).__name__}: {error}); "
            f"check the name and network, or set {MEDQUAD_SOURCE_VAR} to 'bundled' or a local file"
        ) from error
    fingerprint = getattr(dataset, "_fingerprint", None)
    return dataset.to_pandas(), {"dataset": repo, "revision": revision or "main", "fingerprint": fingerprint}


def load_medquad(source: str) -> LoadedSource:
    """Load MedQuAD from the source named by ``MEDQA_MEDQUAD_SOURCE``."""
    source = source.strip()
    if source == BUNDLED:
        path = bundled_dir() / BUNDLED_FILE
        if not path.is_file():
            raise SourceError(f"the bundled MedQuAD snapshot {path} is missing; reinstall the package")
        provenance = json.loads((bundled_dir() / PROVENANCE_FILE).read_text())
        return LoadedSource(_conform(_read_parquet(path), str(path)), BUNDLED, str(path), provenance)
    if source.startswith(HF_PREFIX):
        frame, provenance = load_from_hub(source)
        return LoadedSource(_conform(frame, source), "huggingface", source, provenance)
    path = Path(source).expanduser()
    if not path.exists():
        raise SourceError(
            f"{MEDQUAD_SOURCE_VAR}={source!r} does not exist; set it to 'bundled', a MedQuAD XML directory, "
            "a .parquet/.jsonl file in the lavita/MedQuAD layout, or hf://lavita/MedQuAD[@revision]"
        )
    try:
        if path.is_dir():
            frame = read_medquad_xml(path)
            kind = "xml"
        else:
            frame = _read_table_file(path)
            kind = path.suffix.lstrip(".")
    except SourceError:
        raise
    except (OSError, ValueError) as error:
        raise SourceError(
            f"{MEDQUAD_SOURCE_VAR}={source!r} cannot be read ({type(error).__name__}: {error}); "
            "point it at a readable MedQuAD source"
        ) from error
    return LoadedSource(_conform(frame, source), kind, str(path.resolve()), {})
