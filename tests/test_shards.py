from pathlib import Path

import datasets
import pyarrow as pa

from pipeline.schema import DOCUMENT_SCHEMA, document_id
from pipeline.shards import ShardSink, split_of, write_shard
from pipeline.storage import read_arrow_table


def _documents(n: int, offset: int = 0) -> pa.Table:
    rows = [{"id": document_id("s", str(i)), "source": "s", "kind": "news", "lang": "zh", "text": f"文本{i}",
             "meta": "{}"} for i in range(offset, offset + n)]
    table = pa.Table.from_pylist(rows, DOCUMENT_SCHEMA)
    return table.append_column("words", pa.array([["文本", str(i)] for i in range(offset, offset + n)]))


def test_same_rows_give_same_bytes_whatever_the_chunking(tmp_path: Path) -> None:
    table = _documents(3000)
    one = write_shard(table, tmp_path / "a.arrow")
    rechunked = pa.concat_tables([table.slice(0, 7), table.slice(7, 1500), table.slice(1507)])
    two = write_shard(rechunked, tmp_path / "b.arrow")
    assert one.sha256 == two.sha256 and one.rows == 3000
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left visible"


def test_shards_load_with_datasets(tmp_path: Path) -> None:
    write_shard(_documents(50), tmp_path / "train" / "s-zh-00000.arrow")
    loaded = datasets.Dataset.from_file(str(tmp_path / "train" / "s-zh-00000.arrow"))
    assert loaded.num_rows == 50 and loaded[3]["words"] == ["文本", "3"]
    by_builder = datasets.load_dataset("arrow", data_files={"train": str(tmp_path / "train" / "*.arrow")},
                                       cache_dir=str(tmp_path / "cache"))
    assert by_builder["train"].num_rows == 50


def test_sink_cuts_shards_at_max_rows(tmp_path: Path) -> None:
    sink = ShardSink(tmp_path, "s-zh", max_rows=40)
    for start in range(0, 100, 30):
        sink.add(_documents(min(30, 100 - start), start))
    sink.flush()
    assert [s.rows for s in sink.written] == [40, 40, 20]
    ids = [i for s in sink.written for i in read_arrow_table(s.path).column("id").to_pylist()]
    assert ids == _documents(100).column("id").to_pylist()


def test_split_is_stable_and_follows_fractions() -> None:
    splits = {"train": 0.8, "validation": 0.1, "test": 0.1}
    ids = [document_id("s", str(i)) for i in range(20_000)]
    assigned = [split_of(i, splits) for i in ids]
    assert assigned == [split_of(i, splits) for i in ids]
    share = assigned.count("validation") / len(ids)
    assert 0.09 < share < 0.11 and assigned.count("test") > 0
