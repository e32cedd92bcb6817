"""Upload log files a serving app wrote on its own disk into ``retraining_data_raw/`` (``medqa ingest-logs``).

Each file is stored unchanged (the retraining pipeline parses and validates it later, and
quarantines what it cannot use) under :func:`layout.new_raw_log_key` of its own name, so keys sort
by upload time and keep the original name (made safe: no spaces, separators or ``..``). Every
upload is one atomic ``write_bytes``: a reader sees a whole file or nothing.

All paths are checked before anything is uploaded, so a typo uploads nothing at all. A file that
is still being written (changed within ``MEDQA_SENSOR_SETTLE_SECONDS``) is waited for until it
settles, so no half-written snapshot is uploaded; with ``wait=False`` it is refused instead.
Directories are expanded to the regular files below them, in sorted order, skipping hidden
files (``.name``: editor and temporary files); a hidden file named explicitly is uploaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from medqa_assets.serving import CommandError, RawLogKeyClock
from medqa_assets.settings import Settings
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


def _settled_bytes(file: Path, settle_seconds: float, wait: bool, echo: Callable[[str], None] | None) -> bytes:
    """The file's bytes once nobody has written to it for ``settle_seconds``."""
    announced = False
    while True:
        before = file.stat()
        quiet = time.time() - before.st_mtime
        if quiet >= settle_seconds:
            data = file.read_bytes()
            after = file.stat()
            if (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size):
                return data
            continue
        if not wait:
            raise CommandError(
                f"{file} is still being written (changed {quiet:.1f} s ago; MEDQA_SENSOR_SETTLE_SECONDS="
                f"{settle_seconds:g}); upload it once it has settled, or leave out --no-wait to wait for it"
            )
        if echo is not None and not announced:
            echo(f"waiting for {file} to settle (no change for {settle_seconds:g} s)")
            announced = True
        time.sleep(min(settle_seconds - quiet + 0.05, 1.0))


def ingest_logs(
    paths: Iterable[str | Path],
    *,
    store: ObjectStore | None = None,
    echo: Callable[[str], None] | None = print,
    wait: bool = True,
    settle_seconds: float | None = None,
) -> list[IngestedFile]:
    """Upload every file of ``paths`` to ``retraining_data_raw/``; returns what was stored."""
    files = expand_paths(paths)
    store = store or ObjectStore.from_settings()
    settle = Settings.from_env().sensor_settle_seconds if settle_seconds is None else settle_seconds
    clock = RawLogKeyClock()
    uploaded: list[IngestedFile] = []
    for file in files:
        try:
            data = _settled_bytes(file, settle, wait, echo)
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
