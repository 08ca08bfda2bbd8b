"""Make the demo dataset: dates written in many everyday ways -> ISO 8601 (YYYY-MM-DD).

    python resources/demo/make_demo.py            # rewrites dates_train.jsonl and dates_eval.jsonl

Seeded, so the files are the same on every machine. Train and eval dates never overlap.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 2024
N_TRAIN = 400
N_EVAL = 60
INSTRUCTION = "Rewrite this date as YYYY-MM-DD:"

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
ORDINAL_WORDS = [
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
    "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
    "eighteenth", "nineteenth", "twentieth", "twenty-first", "twenty-second", "twenty-third",
    "twenty-fourth", "twenty-fifth", "twenty-sixth", "twenty-seventh", "twenty-eighth",
    "twenty-ninth", "thirtieth", "thirty-first"]


def ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def short(month: int) -> str:
    return MONTHS[month - 1][:3]


# Each style takes a date and returns how a person might write it.
STYLES = [
    lambda d: f"{MONTHS[d.month - 1]} {ordinal(d.day)}, {d.year}",
    lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{d.day} {short(d.month)} {d.year}",
    lambda d: f"{short(d.month)}. {d.day}, {d.year}",
    lambda d: f"the {ORDINAL_WORDS[d.day - 1]} of {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"the {ordinal(d.day)} of {MONTHS[d.month - 1]}, {d.year}",
    lambda d: f"{d.month:02d}/{d.day:02d}/{d.year} (US)",
    lambda d: f"{d.day:02d}/{d.month:02d}/{d.year} (UK)",
    lambda d: f"{d.strftime('%A')}, {MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{d.day}-{short(d.month)}-{d.year}",
    lambda d: f"{d.day} {MONTHS[d.month - 1].lower()} {d.year}",
]


def random_date(rng: random.Random) -> dt.date:
    start, end = dt.date(1950, 1, 1), dt.date(2035, 12, 31)
    return start + dt.timedelta(days=rng.randrange((end - start).days + 1))


def example(date: dt.date, style) -> dict:
    return {"messages": [
        {"role": "user", "content": f"{INSTRUCTION} {style(date)}"},
        {"role": "assistant", "content": date.isoformat()},
    ]}


def make(seed: int = SEED, n_train: int = N_TRAIN, n_eval: int = N_EVAL) -> tuple[list, list]:
    rng = random.Random(seed)
    dates: list[dt.date] = []
    seen: set[dt.date] = set()
    while len(dates) < n_train + n_eval:
        date = random_date(rng)
        if date not in seen:
            seen.add(date)
            dates.append(date)
    # Every style appears in both files: cycle through the styles, shuffled per round.
    styles = []
    while len(styles) < len(dates):
        round_ = list(range(len(STYLES)))
        rng.shuffle(round_)
        styles += round_
    rows = [example(date, STYLES[s]) for date, s in zip(dates, styles)]
    return rows[:n_train], rows[n_train:]


def write(rows: list, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    train, evaluation = make()
    write(train, HERE / "dates_train.jsonl")
    write(evaluation, HERE / "dates_eval.jsonl")
    print(f"wrote {len(train)} train and {len(evaluation)} eval examples to {HERE}")


if __name__ == "__main__":
    main()
