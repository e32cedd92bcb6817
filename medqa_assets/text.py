"""Text normalization shared by the offline and online stages (vectorized, pyarrow RE2)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# Anything but a lone space between words: runs, tabs, newlines and other white space.
_UNUSUAL_WHITESPACE = r"\s{2,}|[^\S ]"


def collapse_whitespace(values: pa.Array) -> pa.Array:
    """Trim, and turn every run of white space into one space; nulls stay null.

    Only the strings that need it go through the regex replace: most text is already clean,
    and replacing every single space is what makes a naive ``\\s+`` slow.
    """
    trimmed = pc.utf8_trim_whitespace(values)
    messy = pc.fill_null(pc.match_substring_regex(trimmed, _UNUSUAL_WHITESPACE), False)
    if not pc.any(messy).as_py():
        return trimmed
    # one pass: a run is replaced whole, so no two spaces are left next to each other
    fixed = pc.replace_substring_regex(pc.filter(trimmed, messy), _UNUSUAL_WHITESPACE, " ")
    return pc.replace_with_mask(trimmed, messy, fixed)


def normalize_text_key(values: pd.Series) -> pd.Series:
    """A comparison key: lower case, letters and digits only, single spaces; missing becomes ""."""
    array = pa.array(values.astype("string").fillna(""), type=pa.large_string())
    lowered = pc.utf8_lower(array)
    simplified = pc.utf8_trim_whitespace(pc.replace_substring_regex(lowered, r"[^\p{L}\p{N}]+", " "))
    return pd.Series(simplified.to_numpy(zero_copy_only=False), index=values.index, dtype="string")


# bytes kept by alnum_fingerprints: ASCII letters and digits, and every byte of a non-ASCII character
_KEEP_BYTE = np.zeros(256, dtype=bool)
_KEEP_BYTE[ord("a") : ord("z") + 1] = True
_KEEP_BYTE[ord("0") : ord("9") + 1] = True
_KEEP_BYTE[128:] = True


def alnum_fingerprints(values: pd.Series | pa.Array) -> np.ndarray:
    """A 64-bit fingerprint per text of its lower-cased letters and digits (everything else dropped).

    Two answers that differ only in case, spacing or punctuation get the same fingerprint. Done
    on the bytes with numpy: a regex replace over megabytes of answers costs ten times as much.
    """
    if isinstance(values, pa.Array):
        array = pc.fill_null(values.cast(pa.large_string()), "")
    else:
        array = pa.array(values.astype("string").fillna(""), type=pa.large_string())
    lowered = pc.utf8_lower(array)
    lowered = pa.concat_arrays([lowered]) if lowered.offset else lowered
    offsets = np.frombuffer(lowered.buffers()[1], dtype=np.int64)[: len(lowered) + 1]
    data_buffer = lowered.buffers()[2]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.empty(0, np.uint8)
    data = data[offsets[0] : offsets[-1]]
    keep = _KEEP_BYTE[data]
    lengths = np.diff(offsets)
    starts = (offsets[:-1] - offsets[0]).clip(max=max(len(data) - 1, 0))
    # summed as bytes into 32-bit counts: several times faster than booleans into 64-bit ones
    kept_per_text = (
        np.add.reduceat(keep.view(np.uint8), starts, dtype=np.uint32).astype(np.int64)
        if len(data)
        else np.zeros(len(lengths), np.int64)
    )
    kept_per_text[lengths == 0] = 0  # reduceat gives the element at an empty segment's start
    new_offsets = np.concatenate([[0], np.cumsum(kept_per_text)]).astype(np.int64)
    kept = pa.LargeStringArray.from_buffers(len(lowered), pa.py_buffer(new_offsets), pa.py_buffer(data[keep].tobytes()))
    return pd.util.hash_array(kept.to_numpy(zero_copy_only=False), categorize=False)
