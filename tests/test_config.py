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
    default = load_config(None)
    cfg = load_config(None, ["tokenizer.vocab_size=2048", "data.train_langs=[en, fr]"])
    assert default.tokenizer.vocab_size == 4096 and cfg.tokenizer.vocab_size == 2048
    assert cfg.data.train_langs == ["en", "fr"]


def test_a_partial_section_keeps_the_stage_defaults_it_does_not_name(tmp_path):
    """`experts.train: {seq_len: 64}` must not reset the experts' learning rate to the seed's."""
    path = tmp_path / "run.yaml"
    path.write_text("seed: {max_tokens: 1000}\nexperts:\n  train: {seq_len: 64}\n")
    cfg = load_config(path)
    assert cfg.experts.train.seq_len == 64 and cfg.experts.train.lr == 1e-3
    assert cfg.experts.train.checkpoint_every == 50
    assert cfg.seed.max_tokens == 1000 and cfg.seed.preset == "demo"


def test_fingerprints_cover_what_changes_the_output_and_nothing_else():
    from xelm.spec import fingerprint

    cfg = load_config(None)
    key = fingerprint(cfg.experts)
    assert fingerprint(cfg.experts.replace(launcher="ray", workers=8, dense=False)) == key
    assert fingerprint(cfg.experts.replace(train=cfg.experts.train.replace(threads=2))) == key
    assert fingerprint(cfg.experts.replace(tokens=1000)) != key
    assert fingerprint(cfg.experts.replace(train=cfg.experts.train.replace(lr=0.5))) != key
    data = fingerprint(cfg.data)  # every field of the section counts, not a hand-made list
    assert fingerprint(cfg.data.replace(min_script_share=0.5)) != data
    assert fingerprint(cfg.data.replace(udhr=False)) == data


def test_values_are_checked_where_they_are_declared(tmp_path):
    bad = [
        "experts.train.micro_batch_size=0",
        "seed.lr=-1",
        "data.validation_fraction=1.5",
        "tokenizer.sample_chars=-5",
        "ensembles.routers=[{router: oracle}]",
    ]
    with pytest.raises(XelmError) as err:
        load_config(None, bad)
    msg = str(err.value)
    assert "experts.train.micro_batch_size: input should be greater than or equal to 1" in msg
    assert "seed.lr: input should be greater than or equal to 0" in msg
    assert "data.validation_fraction: input should be less than or equal to 1" in msg
    assert "tokenizer.sample_chars: input should be greater than or equal to 1" in msg
    assert "ensembles.routers.0.router: unknown router 'oracle'; use one of uniform" in msg


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
    with pytest.raises(XelmError, match=r"allocations\.1: input tag 'kmeans' found using 'meth"):
        load_config(path)
    with pytest.raises(XelmError, match=r"allocations\.0\.max_ratio: unknown key"):
        load_config(None, ["allocations=[{method: typology, k: 8, max_ratio: 1.1}]"])
    cfg = load_config(None, ["allocations=[{method: tfidf, k: 8, max_ratio: 1.1}]"])
    assert [a.name for a in cfg.allocations] == ["tfidf-k8"]
    assert [a.name for a in load_config().allocations] == ["typology-k4", "tfidf-k4"]
