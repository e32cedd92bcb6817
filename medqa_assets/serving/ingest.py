"""Upload log files a serving app wrote on its own disk into ``retraining_data_raw/`` (``medqa ingest-logs``).

Each file is stored unchanged (the retraining pipeline parses and validates it later, and
quarantines what it cannot use) under :func:`layout.new_raw_log_key` of its own name, so keys sort
by upload time and keep the original name (made safe: no spaces, separators or ``..``). Every
upload is one atomic ``write_bytes``: a reader sees a whole file or nothing.

All paths are checked before anything is uploaded, so a typo uploads nothing at all.
Directories are expanded to the regular files below them, in sorted order, skipping hidden
files (``.name``: editor and temporary files); a hidden file named explicitly is uploaded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from medqa_assets.serving import CommandError, RawLogKeyClock
from medqa_assets.storage.object_store import ObjectStore


@dataclass(frozen=True)
class IngestedFile:
    source: Path
    key: str
    uri: str
    size: int


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """The files to upload, in order; a missing or unusable path raises :class:`CommandError`."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and not _is_hidden(p, path)))
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise CommandError(f"{raw} is neither a regular file nor a directory; nothing was uploaded")
        else:
            raise CommandError(f"{raw} does not exist; nothing was uploaded")
    return files


def ingest_logs(
    paths: Iterable[str | Path],
    *,
    store: ObjectStore | None = None,
    echo: Callable[[str], None] | None = print,
) -> list[IngestedFile]:
    """Upload every file of ``paths`` to ``retraining_data_raw/``; returns what was stored."""
    files = expand_paths(paths)
    store = store or ObjectStore.from_settings()
    clock = RawLogKeyClock()
    uploaded: list[IngestedFile] = []
    for file in files:
        try:
            data = file.read_bytes()
        except OSError as error:
            done = f"; {len(uploaded)} earlier files were uploaded" if uploaded else ""
            raise CommandError(f"cannot read {file}: {error.strerror or error}{done}") from None
        key = clock.next_key(file.name)
        store.write_bytes(key, data)
        item = IngestedFile(source=file, key=key, uri=store.uri(key), size=len(data))
        uploaded.append(item)
        if echo is not None:
            echo(f"uploaded {file} -> {item.uri} ({item.size} bytes)")
    if echo is not None:
        total = sum(item.size for item in uploaded)
        echo(f"uploaded {len(uploaded)} file{'s' if len(uploaded) != 1 else ''}, {total} bytes in total")
    return uploaded
