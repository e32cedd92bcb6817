"""Regenerate ``first_names.txt`` (given names that are not also common English words) and
``common_words.txt`` (words MedQuAD writes in lower case: a capitalized one is not a name).

    pip install names==0.3.0 && python -m medqa_assets.privacy.data.make_word_lists

The given names are the US Census 1990 lists (public domain) shipped by the ``names`` package.
A name that occurs as a lower-case word in MedQuAD's own questions and answers at least twice
("will", "may", "grace", "hope", "rose", "mark") is dropped: in chat text it is far more often
the word than the name, and the scrubber must not eat it. So is one MedQuAD capitalizes three
times or more (an eponym or a place there).
"""

from __future__ import annotations

import re
from collections import Counter
from importlib import resources
from pathlib import Path

import pandas as pd

from medqa_assets.privacy.recognizers import NOT_NAMES

HERE = Path(__file__).resolve().parent
BUNDLED = HERE.parents[1] / "medquad" / "bundled" / "medquad.parquet"


def given_names() -> set[str]:
    names: set[str] = set()
    for table in ("dist.female.first", "dist.male.first"):
        text = resources.files("names").joinpath(table).read_text()
        names.update(line.split()[0].lower() for line in text.splitlines() if line.strip())
    return names


def medquad_words() -> tuple[Counter, Counter]:
    """Lower-case words and capitalized words (folded) in MedQuAD's questions and answers."""
    frame = pd.read_parquet(BUNDLED, columns=["question", "answer"])
    lower: Counter = Counter()
    capitalized: Counter = Counter()
    for text in pd.concat([frame["question"], frame["answer"]]).dropna():
        lower.update(re.findall(r"\b[a-z]{2,}\b", text))
        capitalized.update(word.lower() for word in re.findall(r"\b[A-Z][a-z]+\b", text))
    return lower, capitalized


# Words too common in chat to stand for a name on their own, whatever MedQuAD says: the words the
# recognizers never take for a name (months, days, pronouns, ...), and these.
COMMON_WORDS = NOT_NAMES | set(
    [
        "grace",
        "joy",
        "pat",
        "hope",
        "faith",
        "will",
        "mark",
        "bill",
        "rose",
        "dawn",
        "summer",
        "sunny",
        "honey",
        "baby",
        "young",
        "major",
        "page",
        "love",
        "care",
        "carol",
        "chance",
        "chase",
        "gay",
        "guy",
        "ivy",
        "king",
        "lane",
        "lee",
        "long",
        "miles",
        "pearl",
        "penny",
        "ray",
        "read",
        "reed",
        "rich",
        "rocky",
        "rusty",
        "sage",
        "sandy",
        "star",
        "sterling",
        "sue",
        "tanner",
        "wade",
        "ward",
        "warren",
        "bell",
        "barrett",
        "wilson",
        "lou",
    ]
)


def main() -> None:
    words, capitalized = medquad_words()
    # A given name MedQuAD writes capitalized three times or more is an eponym or a place there
    # ("Alexander disease", "America"): too ambiguous to stand for a person without a cue.
    kept = sorted(
        name
        for name in given_names()
        if len(name) > 2 and words[name] < 2 and capitalized[name] < 3 and name not in COMMON_WORDS
    )
    (HERE / "first_names.txt").write_text("\n".join(kept) + "\n")
    print(f"{len(kept)} given names written to {HERE / 'first_names.txt'}")
    common = sorted(word for word, count in words.items() if count >= 2 and word not in kept)
    (HERE / "common_words.txt").write_text("\n".join(common) + "\n")
    print(f"{len(common)} common words written to {HERE / 'common_words.txt'}")


if __name__ == "__main__":
    main()
