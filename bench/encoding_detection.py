"""How often the codec of a short Chinese file is chosen right: scored candidates vs charset-normalizer alone.

Files of 1 or 2 real hotel reviews (ChnSentiCorp), cut to 8-300 characters, written as CSV in GBK
(simplified) and Big5 (the same reviews converted to traditional with OpenCC), and Japanese sentences in
Shift-JIS for an `auto` source. A choice is right when decoding with it gives back the text written.
Prints the figures and writes bench/results/encoding_detection-<date>.json.
Run: python bench/encoding_detection.py [--data ../shared/data] [--files 400]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from collections import Counter
from datetime import date
from pathlib import Path

import charset_normalizer
import opencc

from pipeline.sources.textio import detect_encoding

RESULTS = Path(__file__).parent / "results"
JAPANESE = [
    "このホテルは駅から近くてとても便利でした。", "朝食の種類が多くて、また泊まりたいです。",
    "部屋は狭いですが、清潔で静かでした。", "スタッフの対応が丁寧で気持ちよく過ごせました。",
]


def sample_files(reviews: list[str], count: int, seed: int = 0) -> list[tuple[str, str, bytes]]:
    """(codec written, language setting, bytes) of `count` short CSV files per codec."""
    rng = random.Random(seed)
    to_traditional = opencc.OpenCC("s2t")
    files = []
    for _ in range(count):
        picked = rng.sample(reviews, rng.choice([1, 2]))
        length = rng.choice([8, 20, 60, 300])
        for codec, convert in (("gbk", str), ("big5", to_traditional.convert)):
            text = "label,review\n" + "".join(f"1,{convert(r)[:length]}\n" for r in picked)
            try:
                files.append((codec, "zh", text.encode(codec)))
            except UnicodeEncodeError:
                continue  # a character the codec lacks: such a file cannot exist in that codec
        text = "text\n" + "".join(s + "\n" for s in rng.sample(JAPANESE, rng.choice([1, 2])))
        files.append(("shift_jis", "auto", text.encode("shift_jis")))
    return files


def right(data: bytes, written: str, chosen: str | None) -> bool:
    if chosen is None:
        return False
    try:
        return data.decode(chosen) == data.decode(written)
    except (UnicodeDecodeError, LookupError):
        return False


def charset_normalizer_choice(data: bytes) -> str | None:
    best = charset_normalizer.from_bytes(data).best()
    return best.encoding if best is not None else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(Path(__file__).parents[1].parent / "shared" / "data"))
    parser.add_argument("--files", type=int, default=400)
    args = parser.parse_args()
    with open(Path(args.data) / "comments" / "ChnSentiCorp_htl_all.csv", encoding="utf-8-sig") as handle:
        reviews = [row["review"] for row in csv.DictReader(handle) if row["review"]]
    files = sample_files(reviews, args.files)
    wrong = {"scored": Counter(), "charset_normalizer": Counter()}
    total: Counter = Counter()
    seconds = {"scored": 0.0, "charset_normalizer": 0.0}
    for written, lang, data in files:
        total[written] += 1
        started = time.perf_counter()
        ours = detect_encoding(data, "bench", lang)
        seconds["scored"] += time.perf_counter() - started
        started = time.perf_counter()
        generic = charset_normalizer_choice(data)
        seconds["charset_normalizer"] += time.perf_counter() - started
        wrong["scored"][written] += not right(data, written, ours)
        wrong["charset_normalizer"][written] += not right(data, written, generic)
    result = {
        "date": date.today().isoformat(),
        "files": dict(total),
        "wrong": {method: dict(counts) for method, counts in wrong.items()},
        "wrong_share": {method: round(sum(counts.values()) / len(files), 4) for method, counts in wrong.items()},
        "ms_per_file": {method: round(1000 * s / len(files), 3) for method, s in seconds.items()},
    }
    print(json.dumps(result, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"encoding_detection-{result['date']}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
