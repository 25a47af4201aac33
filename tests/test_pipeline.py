"""`xelm run` on any corpus with an existing model as the seed (the real-scale code path: mC4 +
XGLM), here on local synthetic data and a tiny model, offline."""

import json
from pathlib import Path

import pytest

from xelm.config import load_config
from xelm.errors import XelmError
from xelm.pipeline import run, stages

CONFIGS = Path(__file__).parents[1] / "configs"


def test_real_scale_config_plans_every_stage():
    cfg = load_config(CONFIGS / "xglm-mc4.yaml")
    names = [s.name for s in stages(cfg, log=lambda _: None)]
    assert names[:3] == ["corpus", "udhr", "seed"]  # no tokenizer stage: XGLM's own
    assert {"experts typology-k8", "experts tfidf-k8", "dense", "report"} <= set(names)
    assert "eval tfidf-k8/tfidf" in names and "eval typology-k8/tfidf" not in names
    assert cfg.seed.init == "facebook/xglm-1.7B" and cfg.seed.max_tokens == 0


@pytest.mark.parametrize("config", ["demo.yaml", "gpu.yaml", "tiny.yaml", "xglm-mc4.yaml"])
def test_a_moved_run_directory_keeps_every_stage_built(config, tmp_path):
    """Stage keys name inputs by their own keys, never by where the run lies: a run trained on
    one machine and copied to another (or renamed) skips what it has built."""
    keys = []
    for run_dir in (tmp_path / "here", tmp_path / "elsewhere" / "renamed", "runs/relative"):
        cfg = load_config(CONFIGS / config, [f"run_dir={run_dir}"])
        keys.append({s.name: s.key for s in stages(cfg, log=lambda _: None)})
    assert keys[0] == keys[1] == keys[2] and len(keys[0]) > 5


def test_run_on_imported_corpus_with_a_pretrained_seed(branch_setup, tmp_path):
    from conftest import synthetic_docs

    root, seed, _ = branch_setup
    source = tmp_path / "docs.jsonl"
    docs = synthetic_docs(pages=120, seed=3)
    records = [{"id": d.id, "lang": d.lang, "text": d.text} for d in docs]
    records.append({"id": "x", "lang": "fr", "text": "un document dans une autre langue"})
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    overrides = [
        f"run_dir={tmp_path / 'run'}",
        f"data.sources=[{source}]",
        "data.train_langs=[en, ru, ja]",
        "data.heldout_langs=[]",
        "data.udhr=false",
        "adapt=null",
        "experts.multi_round=null",
        "icl=null",  # one-paragraph documents: no few-shot question can be built from them
        "data.validation_fraction=0.1",
        "data.test_fraction=0.1",
        f"tokenizer.pretrained={seed}",
        f"seed.init={seed}",
        "seed.max_tokens=0",
        "allocations=[{method: typology, k: 2}]",
        "experts.tokens=2048",
        "experts.train.seq_len=32",
        "experts.train.micro_batch_size=4",
        "ensembles.routers=[{router: posterior}, {router: lid, top_k: 1}]",
        "ensembles.prior.documents=3",
        "eval.max_docs=3",
    ]
    cfg = load_config(CONFIGS / "tiny.yaml", overrides)
    # the data alone first (as for a GPU machine without network), then the rest
    assert run(cfg, log=lambda _: None, only=["corpus"]).stages == {"corpus": "built"}
    with pytest.raises(XelmError, match="--only tokenizer: this run has no such stage"):
        run(cfg, log=lambda _: None, only=["tokenizer"])
    status = run(cfg, log=lambda _: None).stages
    assert status.pop("corpus") == "skipped"
    assert set(status.values()) == {"built"} and "tokenizer" not in status

    run_dir = Path(cfg.run_dir)
    manifest = json.loads((run_dir / "corpus" / "manifest.json").read_text())
    assert manifest["train_langs"] == ["en", "ru", "ja"]  # fr was not asked for
    assert set(manifest["languages"]) == {"en", "ru", "ja"}
    # the seed is the given model, unchanged
    seed_weights = (Path(seed) / "model.safetensors").read_bytes()
    assert (run_dir / "seed" / "model.safetensors").read_bytes() == seed_weights
    results = json.loads((run_dir / "results.json").read_text())
    assert list(results["models"]) == [
        "seed",
        "unigram",
        "dense",
        "typology-k2/posterior",
        "typology-k2/lid-top1",
        "merged/typology-k2",
    ]
    assert results["models"]["seed"]["cost"] == {"tokens": 0, "seconds": 0}
    assert run(cfg, log=lambda _: None).stages == dict.fromkeys(["corpus", *status], "skipped")


def test_a_run_directory_has_one_writer_and_a_dead_ones_lock_is_taken_over(tmp_path):
    import os
    import subprocess
    import sys

    from xelm.paths import exclusive

    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom xelm.paths import exclusive\n"
            f"with exclusive({str(run_dir)!r}):\n"
            "    print('held', flush=True)\n    time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = load_config(CONFIGS / "tiny.yaml", [f"run_dir={run_dir}"])
        with pytest.raises(XelmError, match=f"in use by process {holder.pid} "):
            run(cfg, log=lambda _: None)
        assert sorted(p.name for p in run_dir.iterdir()) == [".xelm.lock", ".xelm.lock.owner"]
    finally:
        holder.kill()  # no chance to release: the OS drops its lock with it
        holder.wait()
    with exclusive(run_dir):
        assert (run_dir / ".xelm.lock.owner").read_text().startswith(f"process {os.getpid()} ")
