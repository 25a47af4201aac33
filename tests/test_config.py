from pathlib import Path

import pytest

from xelm.config import RunConfig, load_config
from xelm.errors import XelmError

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    assert not set(cfg.data.train_langs) & set(cfg.data.heldout_langs)


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(None, ["tokenizer.vocab_size=4096", "data.train_langs=[en, fr]"])
    assert cfg.tokenizer.vocab_size == 4096
    assert cfg.data.train_langs == ["en", "fr"]


def test_all_problems_are_reported_at_once_naming_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  min_bytes: lots\n  colour: blue\ntokenizr: {}\n")
    with pytest.raises(XelmError) as err:
        load_config(path)
    msg = str(err.value)
    assert msg.startswith(str(path))
    assert "data.min_bytes: input should be a valid integer" in msg
    assert "data.colour: unknown key" in msg
    assert "tokenizr: unknown key" in msg


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(XelmError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(XelmError, match="expected a mapping"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(XelmError, match="expected key.path=value"):
        load_config(None, ["tokenizer.vocab_size"])


def test_allocations_are_validated_and_named_by_method_and_k(tmp_path):
    path = tmp_path / "alloc.yaml"
    path.write_text("allocations:\n  - {method: typology, k: 8}\n  - {method: kmeans, k: 2}\n")
    with pytest.raises(XelmError, match=r"allocations\.1\.method: input should be 'tfidf' or"):
        load_config(path)
    cfg = load_config(None, ["allocations=[{method: tfidf, k: 8, max_ratio: 1.1}]"])
    assert [a.name for a in cfg.allocations] == ["tfidf-k8"]
    assert [a.name for a in load_config().allocations] == ["typology-k4", "tfidf-k4"]
