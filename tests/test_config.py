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
        ({"sources": [{**SOURCE, "header": False}]}, "sources.0", "'csv' and 'tsv' only"),
        ({"sources": [{**SOURCE, "format": "tsv", "header": False}]}, "sources.0", "name column positions"),
        ({"sources": [{**SOURCE, "on_bad_input": "ignore"}]}, "sources.0.on_bad_input", "'skip' or 'fail'"),
        ({"sources": [SOURCE], "max_bad_inputs": 1.5}, "max_bad_inputs", "fraction of inputs is below 1"),
        ({"sources": [SOURCE], "max_bad_inputs": -1}, "max_bad_inputs", "greater than or equal to 0"),
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


def test_training_settings_name_models_not_dataset_versions() -> None:
    plain = parse_config({"sources": [SOURCE]})
    retrained = parse_config({"sources": [SOURCE], "train": {"pretrain": {"lr": 1e-4}, "mix_temperature": 2},
                              "registry": {"model_name": "other"}})
    assert retrained.config_hash() == plain.config_hash()
    assert retrained.training_hash() != plain.training_hash()
    cleaned_otherwise = parse_config({"sources": [SOURCE], "quality": {"enabled": False}})
    assert cleaned_otherwise.config_hash() != plain.config_hash()
    assert cleaned_otherwise.training_hash() == plain.training_hash()


def test_bad_input_handling_and_headerless_positions_from_yaml(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "max_bad_inputs: 3\n"
        "sources:\n"
        "  - {name: yelp, kind: comments, lang: en, uri: y.txt, format: tsv, header: false,\n"
        "     fields: {text: 0, label: 1}, on_bad_input: fail}\n"
        "  - {name: news, kind: news, uri: n.jsonl, format: jsonl, fields: {text: sentence}}\n"
    )
    config = load_config(tmp_path / "c.yaml")
    yelp, news = config.sources
    assert (yelp.header, yelp.fields, yelp.on_bad_input) == (False, {"text": "0", "label": "1"}, "fail")
    assert (news.header, news.on_bad_input) == (True, "skip")
    assert config.max_bad_inputs == 3 and isinstance(config.max_bad_inputs, int)
    assert parse_config({"sources": [SOURCE]}).max_bad_inputs == pytest.approx(0.1)
    assert parse_config({"sources": [SOURCE], "max_bad_inputs": 0.25}).max_bad_inputs == pytest.approx(0.25)


def test_card_section_describes_the_data_without_changing_its_hash() -> None:
    plain = parse_config({"sources": [SOURCE]})
    assert plain.card.license == "other" and plain.card.source_licenses == {} and plain.card.task_categories
    described = parse_config({"sources": [SOURCE], "card": {
        "license": "cc-by-sa-4.0", "source_licenses": {"news": "CC BY-SA 4.0, attribution: the publisher"},
        "task_categories": ["fill-mask"]}})
    assert described.card.source_licenses["news"].startswith("CC BY-SA")
    assert described.config_hash() == plain.config_hash(), "a card's wording never changes a version id"
    with pytest.raises(ConfigError, match=r"card.source_licenses names unknown source\(s\) \['newz'\]"):
        parse_config({"sources": [SOURCE], "card": {"source_licenses": {"newz": "MIT"}}}, "bad.yaml")
    with pytest.raises(ConfigError, match="card.licence"):
        parse_config({"sources": [SOURCE], "card": {"licence": "MIT"}}, "bad.yaml")


def test_random_init_baseline_is_off_by_default_and_validated() -> None:
    assert parse_config({"sources": [SOURCE]}).train.baseline_random_init is False
    assert parse_config({"sources": [SOURCE], "train": {"baseline_random_init": True}}).train.baseline_random_init
    with pytest.raises(ConfigError, match="train.baseline_random_init"):
        parse_config({"sources": [SOURCE], "train": {"baseline_random_init": "sometimes"}}, "bad.yaml")
