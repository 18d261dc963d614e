"""Input files as they come from the field, good and bad, written here for the adversarial tests.

`write_good_files` and `write_bad_files` together make the glob of many small good files and a few bad
ones that a build must get through with the bad ones skipped and every good record accounted.
"""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

PAGE_A = ("The harbour reopened on Friday after two weeks of repairs to the main quay, the port authority "
          "said in a statement that thanked residents for their patience during the works.")
PAGE_B = ("Ferries to the islands will run a reduced timetable until the end of the month while the crews "
          "finish painting the new berths and testing the lights along the breakwater.")
PAGE_C = ("Fishermen welcomed the news but asked the council for compensation for the days when they could "
          "not land their catch, and a meeting has been planned for next Tuesday evening.")


def page(*paragraphs: str) -> bytes:
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return f"<html><head><title>Harbour</title></head><body><article>{body}</article></body></html>".encode()


def write_warc(path: Path, records: list[tuple[str, bytes]]) -> Path:
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=True)
    for url, payload in records:
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(payload),
                                                      http_headers=headers))
    path.write_bytes(buffer.getvalue())
    return path


GOOD_REVIEWS = ["房间很干净，早餐也丰富", "位置方便，离地铁站很近", "服务员态度热情，办理入住很快",
                "隔音不太好，晚上有点吵", "床很舒服，睡得很好", "性价比高，下次还会再来"]


def write_good_files(directory: Path, count: int) -> int:
    """`count` small CSV files of distinct reviews, in UTF-8 and GBK; returns how many records they hold."""
    directory.mkdir(parents=True, exist_ok=True)
    records = 0
    for number in range(count):
        rows = [f"{number % 2},第{number}号房客说：{GOOD_REVIEWS[(number + k) % 6]}，编号{number * 10 + k}"
                for k in range(2)]
        encoding = "gbk" if number % 3 == 0 else "utf-8"
        text = "label,review\n" + "\n".join(rows) + "\n"
        (directory / f"reviews-{number:03d}.csv").write_bytes(text.encode(encoding))
        records += len(rows)
    return records


def write_bad_files(directory: Path) -> dict[str, str]:
    """An empty file, a binary one and one without the mapped column; returns name -> expected status/reason."""
    (directory / "reviews-empty.csv").write_bytes(b"")
    (directory / "reviews-image.csv").write_bytes(b"\x89PNG\r\n\x1a\n" + random.Random(3).randbytes(3000))
    (directory / "reviews-other.csv").write_text("user,comment\nann,不错\n", encoding="utf-8")
    (directory / "reviews-zip.csv").write_bytes(zip_bytes())
    return {"reviews-empty.csv": "empty", "reviews-image.csv": "input:binary",
            "reviews-other.csv": "input:missing_columns", "reviews-zip.csv": "input:binary"}


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as packed:
        packed.writestr("a.txt", random.Random(5).randbytes(2000))
    return buffer.getvalue()
