"""Text normalization shared by the offline and online stages (vectorized, pyarrow RE2)."""

from __future__ import annotations

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
    fixed = pc.replace_substring_regex(pc.filter(trimmed, messy), r"\s{2,}|[^\S ]", " ")
    fixed = pc.replace_substring_regex(fixed, r" {2,}", " ")
    return pc.replace_with_mask(trimmed, messy, fixed)
