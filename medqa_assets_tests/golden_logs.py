"""A fixed batch of production logs that exercises every branch of the retraining transform.

Deterministic (seeded): the golden test builds versions from it and compares the stored bytes with
what the transform wrote before it was rewritten for speed (``data/retraining_golden``). Written
as test data, not from the platform's output: shapes, damage, whitespace, timestamps, statuses,
personal data, sizes and duplicates as the serving apps and their users produce them.
"""

from __future__ import annotations

import json
import random

QUESTIONS = [
    "What are the symptoms of type 2 diabetes?",
    "How is asthma treated in children?",
    "What causes high blood pressure?",
    "Is  migraine\thereditary?",
    "¿Qué es la hipertensión arterial?",
    "What is the outlook for Crohn's disease?",
    "Can vitamin D deficiency cause fatigue?",
    "What tests diagnose celiac disease? 🧪",
    "How do I know if I have the flu\nor a cold?",
    "What is 高血压 (hypertension)?",
]
ANSWERS = [
    "Symptoms include increased thirst, frequent urination and tiredness.",
    "Inhaled corticosteroids are the usual long-term treatment.",
    "Causes include genetics, diet, inactivity and age.",
    "Migraine often runs in families.\n\nSee a doctor if headaches change.",
    "La hipertensión es una presión arterial alta de forma persistente.",
    "Most people with Crohn's disease lead full lives with treatment.",
    "Yes,  low vitamin D can contribute to fatigue and muscle weakness.",
    "Blood tests for antibodies, then a biopsy of the small intestine.",
    "Flu tends to start suddenly\twith fever and aches.",
    "高血压是指血压持续升高。",
]
# white space the serving apps pass through from users and models
WHITESPACE_VARIANTS = [
    "{}",
    "  {}  ",
    "{}\r\n",
    "\t{}",
    "{}\u00a0",
    "\u3000{}",
    "{} \u2003 end",
    "a\x0bb {}",
    "{}\n\n\n",
    "line one\r\nline two {}",
    "{}   with   runs",
    "\u200b{}",
    "{}\x1c\x1d",
]
PII_SNIPPETS = [
    "my email is jane.doe{n}@example.com",
    "call me at (555) 123-{n:04d}",
    "my SSN is 123-45-{n:04d}",
    "I'm Maria Gonzalez and my MRN is 88{n:05d}",
    "my daughter Emily has this too",
    "see https://myportal.example.org/patient/{n}",
    "I live at {n} Elm Street, Springfield",
    "born on 03/14/19{n:02d}",
    "my IP is 192.168.{n}.7",
]
TIMESTAMPS = [
    "2026-03-01T10:15:00Z",
    "2026-03-01T12:15:00+02:00",
    "2026-03-01 10:15:00",
    "2026-03-01",
    "2026-03-01T10:15:00.123456Z",
    1_772_360_100,
    1_772_360_100.75,
    -86_400,
    1_772_360_100_000,  # milliseconds: past year 3000 as seconds
    "yesterday",
    "",
    True,
    None,
    {"when": "now"},
    "1772360100",
    "2026-13-45T00:00:00Z",
]
STATUSES = [200, 200, 200, "200", 201, 204, 500, 503, "timeout", None, "OK", 299, 300]
NON_ANSWERS = [
    "Timed out waiting for model response.",
    "  timed OUT waiting for model   response.  ",
    "TIMED OUT WAITING FOR MODEL RESPONSE.",
]


def _record(rng: random.Random, n: int) -> dict:
    question = rng.choice(WHITESPACE_VARIANTS).format(rng.choice(QUESTIONS))
    answer = rng.choice(WHITESPACE_VARIANTS).format(rng.choice(ANSWERS))
    if rng.random() < 0.15:
        question = f"{question} {rng.choice(PII_SNIPPETS).format(n=n % 97)}"
    if rng.random() < 0.05:
        answer = f"{answer} Contact {rng.choice(PII_SNIPPETS).format(n=n % 89)}"
    record: dict = {"question": question}
    record["model_response" if rng.random() < 0.7 else "answer"] = answer
    record["timestamp" if rng.random() < 0.6 else "ts"] = (
        rng.choice(TIMESTAMPS) if rng.random() < 0.3 else (1_772_000_000 + n * 7)
    )
    if rng.random() < 0.5:
        record["status"] = rng.choice(STATUSES) if rng.random() < 0.3 else 200
    if rng.random() < 0.6:
        record["production_set"] = rng.choice(["production_set_1", "production_set_2", None])
        record["row_id"] = rng.choice([f"r{n % 301}", n % 301, None])
    if rng.random() < 0.5:
        record["slice"] = rng.choice(["smoke", "bench", 3, None])
    if rng.random() < 0.3:
        record["latency_ms"] = round(rng.random() * 900, 3)
    if rng.random() < 0.1:
        record["symptoms"] = ["fever", "cough"][: rng.randint(0, 2)]
    damage = rng.random()
    if damage < 0.02:
        record.pop("question")
    elif damage < 0.04:
        record["question"] = rng.choice(["", "   ", None, 42, ["q"], {"text": "q"}])
    elif damage < 0.06:
        record.pop("model_response", None)
        record.pop("answer", None)
    elif damage < 0.08:
        record["model_response"] = rng.choice(["", " \n ", None, 3.5, ["a"]] + NON_ANSWERS)
    elif damage < 0.085:
        record["question"] = "long " * 2100
    elif damage < 0.09:
        record["model_response"] = "word " * 20_100
    return record


def golden_files(seed: int = 20261203) -> list[tuple[str, bytes]]:
    """(name below retraining_data_raw/, bytes) of the first version's files."""
    rng = random.Random(seed)
    counter = iter(range(1_000_000))
    files: list[tuple[str, bytes]] = []

    def records(count: int) -> list[dict]:
        return [_record(rng, next(counter)) for _ in range(count)]

    for index in range(6):  # JSON Lines, as the FastAPI app appends them
        rows = records(120)
        files.append((f"api/{index:02d}.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode()))
    for index in range(4):  # JSON arrays the batch app rewrites
        files.append((f"batch/{index:02d}.json", json.dumps(records(90), indent=rng.choice([None, 2])).encode()))
    files.append(("single/one.json", json.dumps(records(1)[0]).encode()))
    windows = records(40)  # a Windows copy: byte order mark and CRLF
    files.append(("win/export.jsonl", b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\r\n" for r in windows).encode()))
    mixed = [json.dumps(r) for r in records(30)]  # damaged lines among good ones
    mixed[3] = mixed[3][:25]
    mixed[7] = "42"
    mixed[9] = "[1, 2]"
    mixed[11] = "not json at all"
    mixed[13] = json.dumps({"question": "NaN here", "model_response": "ok", "timestamp": float("nan")})
    files.append(("api/mixed.jsonl", ("\n".join(mixed) + "\n\n").encode()))
    cut = json.dumps(records(25)).encode()
    files.append(("batch/cut.json", cut[: len(cut) * 2 // 3]))  # two writers at once: an array cut off
    files.append(("junk/empty.json", b""))
    files.append(("junk/latin1.jsonl", "question,answer\ncafé,crème\n".encode("latin-1")))
    files.append(("junk/table.csv", b"question,answer\nwhat,that\n"))
    files.append(("junk/scalar.json", b"17"))
    duplicated = files[0][1].splitlines(keepends=True)[:50]  # a cumulative copy of the first file's head
    files.append(("copies/api-00-copy.jsonl", b"".join(duplicated)))
    return files


def golden_second_batch(first: list[tuple[str, bytes]], seed: int = 1203) -> list[tuple[str, bytes]]:
    """The second version's files: one first-version file grown by appends, a cumulative copy of
    another, and a new file (whose records partly repeat earlier ones)."""
    rng = random.Random(seed)
    by_name = dict(first)
    grown = by_name["api/01.jsonl"] + b"".join(json.dumps(_record(rng, 5000 + n)).encode() + b"\n" for n in range(60))
    repeated = first[2][1].splitlines(keepends=True)[:40]
    fresh = [json.dumps(_record(rng, 7000 + n)).encode() + b"\n" for n in range(80)]
    return [
        ("api/01.jsonl", grown),
        ("copies/api-02-full.jsonl", first[2][1]),
        ("api/new.jsonl", b"".join(repeated + fresh)),
    ]


def write_splits(store) -> None:  # noqa: ANN001 - an ObjectStore of whichever revision runs this
    """Small offline splits whose row ids the golden logs name, so the evaluation is pinned too."""
    from medqa_assets.storage.layout import SPLIT_KEYS

    rng = random.Random(7)
    for name, key in SPLIT_KEYS.items():
        rows = [
            {
                "row_id": f"r{n}",
                "question": rng.choice(QUESTIONS) + f" ({name} {n})",
                "question_type": rng.choice(["symptoms", "treatment", "causes"]),
                "answer": rng.choice(ANSWERS),
            }
            for n in range(0 if name == "training" else 100 * len(name), 301, 1 if name == "evaluation" else 3)
        ]
        store.write_bytes(key, "".join(json.dumps(r) + "\n" for r in rows).encode())


def build_golden_versions(store, log=lambda _: None) -> dict[str, bytes]:  # noqa: ANN001
    """Build v1 and v2 from the golden logs; every stored output of both, by name (the manifest's
    creation time left out of the metadata)."""
    from medqa_assets.retraining.build import build_version
    from medqa_assets.retraining.decide import plan_tick
    from medqa_assets.retraining.snapshot import prepare_version
    from medqa_assets.storage import layout

    write_splits(store)
    first = golden_files()
    outputs: dict[str, bytes] = {}
    for version, batch in (("v1", first), ("v2", golden_second_batch(first))):
        for name, data in batch:
            store.write_bytes(layout.RAW_LOGS_PREFIX + name, data)
        decision = plan_tick(store, settle_seconds=0).decision
        assert decision is not None and decision.version == version
        manifest = prepare_version(store, version, decision, settle_seconds=0, log=log)
        build_version(store, version, manifest, log=log)
        metadata = store.read_json(layout.retraining_metadata_key(version))
        metadata.pop("created")
        outputs[f"{version}/metadata.json"] = json.dumps(metadata, indent=1, sort_keys=True).encode()
        for prefix in (layout.retraining_data_key(version).rsplit("/", 1)[0] + "/", layout.quarantine_prefix(version)):
            for info in store.list(prefix):
                if info.key.rsplit("/", 1)[-1] not in ("metadata.json", "claim.json", "manifest.json"):  # times
                    outputs[f"{version}/{info.key}"] = store.read_bytes(info.key)
        outputs[f"{version}/identities"] = store.read_bytes(layout.identities_key(version))
    return outputs
