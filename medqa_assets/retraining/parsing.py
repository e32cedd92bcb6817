"""Reading production log files in every shape the serving apps write (contracts.md section 5).

A file is JSON Lines, a JSON array of objects, or a single JSON object. Field aliases are
resolved here, so the rest of the flow sees one record layout. A file that is not JSON at all
(empty, not UTF-8, a scalar, CSV, ...) raises :class:`UnparseableFile` with a reason; a bad line
inside JSON Lines becomes a rejected record, not a lost one, and an array that two writers
damaged keeps every complete record before the damage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson

# Canonical field -> aliases the serving apps use, first match wins.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "question": ("question",),
    "answer": ("model_response", "answer"),
    "timestamp": ("timestamp", "ts"),
}
# Metadata kept for provenance and evaluation (not training text).
PROVENANCE_FIELDS: tuple[str, ...] = ("slice", "production_set", "row_id", "status")
ALIAS_NAMES = {alias for aliases in FIELD_ALIASES.values() for alias in aliases}


class UnparseableFile(ValueError):
    """The file as a whole cannot be read as production logs."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class ParsedLog:
    """Records of one file: the usable JSON objects, and items rejected while parsing."""

    records: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (index, reason, raw text)
    shape: str = ""
    damage_offset: int | None = None  # where a damaged document stops being readable

    @property
    def count(self) -> int:
        return len(self.records) + len(self.rejected)


def truncate_text(raw: bytes | str, limit: int = 2000) -> str:
    """At most ``limit`` characters, cut back to a space: a value cut in half (an identifier's first
    digits) would no longer look like what it is, and would pass the scrubber."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return text if len(text) <= limit else text[: limit + 1].rsplit(None, 1)[0][:limit] + "…"


def _from_items(items: list[Any], parsed: ParsedLog, offset: int = 0) -> None:
    for index, item in enumerate(items, start=offset):
        if isinstance(item, dict):
            parsed.records.append(item)
        else:
            parsed.rejected.append((index, "not_an_object", truncate_text(orjson.dumps(item))))


UTF8_BOM = b"\xef\xbb\xbf"
_PYTHON_JSON = json.JSONDecoder()  # accepts NaN and Infinity, as Python's json.dumps writes them


def _loads(data: bytes | str) -> Any:
    """orjson, falling back to Python's json for what Python writes and orjson refuses (NaN, Infinity)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def _damaged_array(text: str, parsed: ParsedLog) -> None:
    """A JSON array cut off or garbled mid-way (two writers at once): keep every complete item
    before the damage; the rest becomes one rejected record with its byte offset."""
    position = text.index("[") + 1
    index = 0
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text) or text[position] == "]":
            return
        try:
            item, end = _PYTHON_JSON.raw_decode(text, position)
        except ValueError:
            offset = len(text[:position].encode("utf-8"))
            rest = truncate_text(text[position:], 500)
            parsed.rejected.append((index, "damaged_json", f"from byte {offset}: {rest}"))
            parsed.damage_offset = offset
            return
        _from_items([item], parsed, offset=index)
        index += 1
        position = end


def parse_log_bytes(data: bytes, json_lines: bool = False) -> ParsedLog:
    """Parse one raw log file's bytes (``json_lines``: a piece of a large JSON Lines file).

    Windows files (a UTF-8 byte order mark, CRLF line ends) read like any other.
    """
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    if json_lines:
        return _parse_lines(data.splitlines(), ParsedLog(shape="json_lines"))
    if not data.strip():
        raise UnparseableFile("empty_file", "the file holds no data")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UnparseableFile("invalid_utf8", f"not UTF-8 at byte {error.start}") from None
    stripped = data.lstrip()
    if stripped[:1] in (b"[", b"{"):
        try:
            document = _loads(data)
        except ValueError:
            document = None  # JSON Lines, or a damaged document: tried below
        else:
            parsed = ParsedLog()
            if isinstance(document, list):
                parsed.shape = "json_array"
                _from_items(document, parsed)
            else:
                parsed.shape = "json_object"
                parsed.records.append(document)
            return parsed
    lines = data.splitlines()
    try:  # fast path: every line is valid JSON, parse them in one call
        items = orjson.loads(b"[" + b",".join(line for line in lines if line.strip()) + b"]")
    except orjson.JSONDecodeError:
        items = None
    parsed = ParsedLog(shape="json_lines")
    if items is not None:
        if len(items) == 1 and not isinstance(items[0], dict | list):
            raise UnparseableFile("json_scalar", "the file holds a JSON scalar, not log records")
        _from_items(items, parsed)
        return parsed
    if stripped[:1] == b"[":  # an array that does not parse: damaged by a writer, keep what precedes it
        parsed = ParsedLog(shape="json_array")
        _damaged_array(text, parsed)
        if parsed.records:
            return parsed
        raise UnparseableFile("truncated_json", f"a JSON array damaged from byte {parsed.damage_offset}")
    _parse_lines(lines, parsed)
    if not parsed.records and all(reason == "invalid_json" for _, reason, _ in parsed.rejected):
        reason = "truncated_json" if stripped[:1] in (b"[", b"{") else "not_json"
        # the detail never quotes the content: it is shown to people who must not see personal data
        raise UnparseableFile(reason, f"none of its {len(parsed.rejected)} line(s) is JSON")
    return parsed


def _parse_lines(lines: list[bytes], parsed: ParsedLog) -> ParsedLog:
    """JSON Lines one line at a time: a bad line becomes a rejected record, not a lost file."""
    for index, line in enumerate(line for line in lines if line.strip()):
        try:
            item = _loads(line)
        except ValueError:
            parsed.rejected.append((index, "invalid_json", truncate_text(line)))
            continue
        if isinstance(item, dict):
            parsed.records.append(item)
        else:
            parsed.rejected.append((index, "not_an_object", truncate_text(line)))
    return parsed


def first_present(record: dict[str, Any], aliases: tuple[str, ...]) -> Any:
    for alias in aliases:
        if alias in record:
            return record[alias]
    return None
