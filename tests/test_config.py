from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config, parse_config

SOURCE = {"name": "news", "kind": "news", "lang": "zh", "uri": "x.jsonl", "format": "jsonl",
          "fields": {"text": "sentence"}}


def test_demo_config_loads_with_defaults() -> None:
    config = load_config(Path(__file__).parents[1] / "configs" / "demo.yaml")
    assert config.sources and config.dedup.threshold == pytest.approx(0.8)
    assert config.config_hash() == load_config(Path(__file__).parents[1] / "configs" / "demo.yaml").config_hash()


@pytest.mark.parametrize(
    ("data", "key", "reason"),
    [
        ({"sources": [{**SOURCE, "kind": "tweets"}]}, "sources.0.kind", "Input should be"),
        ({"sources": [{**SOURCE, "fields": {}}]}, "sources.0", "needs fields.text"),
        ({"sources": [{**SOURCE, "fields": {"text": "a", "body": "b"}}]}, "sources.0.fields", "unknown document field"),
        ({"sources": [SOURCE, SOURCE]}, "sources", "repeated: ['news']"),
        ({"sources": [SOURCE], "dedup": {"treshold": 0.5}}, "dedup.treshold", "Extra inputs"),
        ({"sources": [SOURCE], "shards": {"splits": {"train": 0.5, "test": 0.2}}}, "shards.splits", "sum to 1"),
        ({"sources": [{**SOURCE, "kind": "wiki"}]}, "sources.0", "mediawiki"),
    ],
)
def test_wrong_config_names_key_and_reason(data: dict, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(data, "bad.yaml")
    message = str(error.value)
    assert "bad.yaml" in message and f"  {key}:" in message and reason in message


def test_unreadable_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("sources: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")


def test_config_hash_ignores_where_output_goes() -> None:
    a = parse_config({"sources": [SOURCE], "run_dir": "a"})
    b = parse_config({"sources": [SOURCE], "run_dir": "b", "runner": {"workers": 1}})
    c = parse_config({"sources": [SOURCE], "dedup": {"threshold": 0.7}})
    assert a.config_hash() == b.config_hash() != c.config_hash()
    assert a.section_hash("dedup") != c.section_hash("dedup") and a.section_hash("pii") == c.section_hash("pii")


def test_random_init_baseline_is_off_by_default_and_validated() -> None:
    assert parse_config({"sources": [SOURCE]}).train.baseline_random_init is False
    assert parse_config({"sources": [SOURCE], "train": {"baseline_random_init": True}}).train.baseline_random_init
    with pytest.raises(ConfigError, match="train.baseline_random_init"):
        parse_config({"sources": [SOURCE], "train": {"baseline_random_init": "sometimes"}}, "bad.yaml")
