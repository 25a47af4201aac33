"""`xelm run CONFIG.yaml`: every stage of a run, each writing one folder of the run directory.

A stage is skipped when its folder exists and was built from the same settings (a fingerprint of
its own config and of its inputs' fingerprints), so re-running a finished run does nothing and a
changed setting re-runs that stage and everything downstream of it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xelm.config import RunConfig, dump_config, fingerprint
from xelm.corpus import SplitFractions
from xelm.data.build import build_demo_corpus, build_udhr_corpus
from xelm.data.libreoffice import DemoFilter
from xelm.paths import atomic_write_text
from xelm.tokenizer import TokenizerSpec, train_tokenizer


@dataclass
class Stage:
    name: str
    folder: str
    build: Callable[[Path], None]
    key: str  # fingerprint of the settings this stage depends on (its own and upstream)


def _stamp_path(folder: Path) -> Path:
    """Written after the stage's folder is complete: without it the stage counts as not done."""
    return folder.parent / f".{folder.name}.stage.json"


def is_done(folder: Path, key: str) -> bool:
    stamp = _stamp_path(folder)
    if not folder.exists() or not stamp.exists():
        return False
    return json.loads(stamp.read_text()).get("key") == key


def stages(cfg: RunConfig, log: Callable[[str], None] = print) -> list[Stage]:
    run = Path(cfg.run_dir)
    d, t = cfg.data, cfg.tokenizer
    corpus_key = fingerprint("corpus", d.train_langs, d.heldout_langs, d.min_translated_share,
                             d.min_bytes, d.validation_fraction, d.test_fraction)  # fmt: skip
    out: list[Stage] = []

    def corpus(folder: Path) -> None:
        build_demo_corpus(
            folder,
            d.train_langs,
            d.heldout_langs,
            DemoFilter(d.min_translated_share, d.min_bytes),
            SplitFractions(d.validation_fraction, d.test_fraction),
            progress=lambda r: log(f"  {r.lang}: {r.kept} pages kept of {r.pages}"),
        )

    out.append(Stage("corpus", "corpus", corpus, corpus_key))
    if d.udhr:
        udhr_key = fingerprint("udhr", d.train_langs, d.heldout_langs)
        out.append(Stage("udhr", "udhr", lambda f: build_udhr_corpus(
            f, d.train_langs + d.heldout_langs), udhr_key))  # fmt: skip
    if t.pretrained is None:
        spec = TokenizerSpec(
            t.vocab_size,
            t.sample_chars,
            t.alpha,
            t.min_frequency,
            include_heldout=t.include_heldout,
        )
        out.append(Stage("tokenizer", "tokenizer",
                         lambda f: train_tokenizer(run / "corpus", f, spec),
                         fingerprint("tokenizer", corpus_key, spec)))  # fmt: skip
    return out


def run(cfg: RunConfig, log: Callable[[str], None] = print) -> dict[str, str]:
    """Run every stage that is not done yet; returns {stage: 'built' | 'skipped'}."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    status = {}
    for stage in stages(cfg, log):
        folder = run_dir / stage.folder
        if is_done(folder, stage.key):
            log(f"[{stage.name}] up to date: {folder}")
            status[stage.name] = "skipped"
            continue
        log(f"[{stage.name}] building {folder}")
        stage.build(folder)
        atomic_write_text(_stamp_path(folder), json.dumps({"key": stage.key}) + "\n")
        status[stage.name] = "built"
    return status
