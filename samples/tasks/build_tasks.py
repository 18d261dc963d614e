"""Writes the demo's labelled task data (Chinese sentiment CSV, Chinese NER in char-per-line BIO) from
phrase lists written for this project. Deterministic: the same files on every run.

    python samples/tasks/build_tasks.py
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

HERE = Path(__file__).parent
TOPICS = ["房间", "早餐", "前台服务", "床铺", "位置", "卫生间", "隔音", "快递", "包装", "屏幕", "电池", "客服"]
POSITIVE = ["非常干净", "很不错", "特别满意", "超出预期", "值得推荐", "性价比很高", "让人舒心", "十分方便"]
NEGATIVE = ["太脏了", "很失望", "非常差劲", "完全不值", "不会再来", "让人生气", "质量太差", "毫无诚意"]
OPENERS = ["这次入住", "总体来说", "说实话", "第一次购买", "朋友推荐来的", "出差住了两晚", ""]
CLOSERS = ["。", "！", "，下次还会考虑。", "，大家自己判断吧。", "。"]

PEOPLE = ["张伟", "王芳", "李娜", "刘洋", "陈静", "赵磊"]
PLACES = ["北京", "上海", "广州", "杭州", "成都", "西安"]
ORGS = ["清华大学", "人民银行", "中国移动", "新华社", "北京医院", "国家图书馆"]
FRAMES = ["{PER}昨天在{LOC}参观了{ORG}。", "{ORG}的{PER}下周将前往{LOC}。", "{PER}说{LOC}的天气很好。",
          "记者从{ORG}获悉，{PER}已抵达{LOC}。"]


def sentiment_rows(rng: random.Random, n: int) -> list[tuple[str, str]]:
    rows = []
    for i in range(n):
        label = i % 2
        words = POSITIVE if label else NEGATIVE
        topic, other = rng.sample(TOPICS, 2)
        review = f"{rng.choice(OPENERS)}{topic}{rng.choice(words)}，{other}{rng.choice(words)}{rng.choice(CLOSERS)}"
        rows.append((str(label), review))
    return rows


def ner_sentences(rng: random.Random, n: int) -> list[list[tuple[str, str]]]:
    sentences = []
    for _ in range(n):
        frame = rng.choice(FRAMES)
        chars: list[tuple[str, str]] = []
        for piece in frame.replace("{", "\x00{").replace("}", "}\x00").split("\x00"):
            if piece in ("{PER}", "{LOC}", "{ORG}"):
                kind = piece[1:-1]
                entity = rng.choice({"PER": PEOPLE, "LOC": PLACES, "ORG": ORGS}[kind])
                chars += [(c, ("B-" if j == 0 else "I-") + kind) for j, c in enumerate(entity)]
            else:
                chars += [(c, "O") for c in piece]
        sentences.append(chars)
    return sentences


def main() -> None:
    rng = random.Random(7)
    for split, n in (("train", 240), ("test", 60)):
        with open(HERE / f"sentiment_{split}.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["label", "review"])
            writer.writerows(sentiment_rows(rng, n))
        with open(HERE / f"ner_{split}.txt", "w", encoding="utf-8") as handle:
            for sentence in ner_sentences(rng, n // 2):
                handle.write("".join(f"{c}\t{tag}\n" for c, tag in sentence) + "\n")


if __name__ == "__main__":
    main()
