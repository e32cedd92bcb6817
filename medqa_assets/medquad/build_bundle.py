"""Rebuild the bundled MedQuAD snapshot from the original XML distribution.

    python -m medqa_assets.medquad.build_bundle ../shared/medquad

Writes ``bundled/medquad.parquet`` and ``bundled/provenance.json`` (source tree digest, row
count, sha256 of the snapshot, the converter's commit) inside the package.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from medqa_assets.console import VERBOSE_VAR, exit_on_user_error
from medqa_assets.medquad.sources import BUNDLED_FILE, PROVENANCE_FILE, bundled_dir
from medqa_assets.medquad.xml_reader import iter_xml_files, read_medquad_xml


def tree_digest(root: Path) -> tuple[str, int]:
    """sha256 over every XML file's relative path and content, in sorted order."""
    digest = hashlib.sha256()
    count = 0
    for path in iter_xml_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
        count += 1
    if count == 0:
        raise FileNotFoundError(f"{root} holds no MedQuAD XML files")
    return digest.hexdigest(), count


def _git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


class SmallerSnapshotError(ValueError):
    """Rebuilding would replace a snapshot with one holding fewer rows (a wrong or partial folder)."""


def build(xml_root: Path, out_dir: Path, *, force: bool = False) -> dict[str, object]:
    """Convert ``xml_root`` and write the snapshot and its provenance to ``out_dir``.

    An existing snapshot is never replaced by one with fewer rows unless ``force`` is set: pointing
    the converter at the wrong folder must not silently shrink the data every default run uses.
    """
    frame = read_medquad_xml(xml_root)
    existing = out_dir / PROVENANCE_FILE
    if existing.is_file() and not force:
        previous_rows = int(json.loads(existing.read_text()).get("rows", 0))
        if len(frame) < previous_rows:
            raise SmallerSnapshotError(
                f"{xml_root} holds {len(frame)} MedQuAD rows, the snapshot in {out_dir} holds {previous_rows}; "
                "point at the whole distribution, write elsewhere with --out, or pass --force to replace it"
            )
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer, compression="zstd")
    data = buffer.getvalue()
    source_digest, file_count = tree_digest(xml_root)
    provenance = {
        "source": "MedQuAD original XML distribution (github.com/abachaa/MedQuAD), CC BY 4.0",
        "source_tree_sha256": source_digest,
        "source_xml_files": file_count,
        "converter": "medqa_assets.medquad.xml_reader.read_medquad_xml",
        "converter_commit": _git_commit(),
        "rows": len(frame),
        "rows_without_answer": int(frame["answer"].isna().sum()),
        "columns": list(frame.columns),
        "sha256": hashlib.sha256(data).hexdigest(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / BUNDLED_FILE).write_bytes(data)
    (out_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("xml_root", type=Path, help="the MedQuAD XML distribution (e.g. ../shared/medquad)")
    parser.add_argument("--out", type=Path, default=bundled_dir(), help="output folder (default: the package's)")
    parser.add_argument("--force", action="store_true", help="replace a snapshot even with one of fewer rows")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    if args.verbose:
        os.environ[VERBOSE_VAR] = "1"
    with exit_on_user_error(OSError, ValueError, program="build_bundle: error"):
        if not args.xml_root.is_dir():
            raise FileNotFoundError(
                f"{args.xml_root} is not a directory; pass the MedQuAD XML distribution (e.g. ../shared/medquad)"
            )
        provenance = build(args.xml_root, args.out, force=args.force)
    print(json.dumps(provenance, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
