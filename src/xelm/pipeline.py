"""`xelm run CONFIG.yaml`: every stage of a run, each writing one folder of the run directory.

A stage is skipped when its folder exists and was built from the same settings (a fingerprint of
its own config and of its inputs' fingerprints), so re-running a finished run does nothing and a
changed setting re-runs that stage and everything downstream of it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xelm.allocate.tfidf import TfidfAllocationSpec, TfidfSpec, allocate_tfidf
from xelm.allocate.typology import TypologySpec, allocate_typology
from xelm.config import (
    TRAIN_FIELDS_WITHOUT_EFFECT,
    AllocationConfig,
    RunConfig,
    dump_config,
    fingerprint,
    to_dict,
)
from xelm.corpus import SourceOptions, SplitFractions
from xelm.data.build import build_demo_corpus, build_udhr_corpus, import_corpus
from xelm.data.libreoffice import DemoFilter
from xelm.errors import XelmError
from xelm.evaluate import evaluate_model, unigram_baseline
from xelm.experts import BranchSpec, expert_folders, plan_experts, train_dense
from xelm.launch import LaunchSpec, launch
from xelm.paths import atomic_write_text
from xelm.report import write_report
from xelm.results import collect
from xelm.tokenizer import TokenizerSpec, train_tokenizer
from xelm.train import TRAIN_INFO, train


@dataclass
class Stage:
    name: str
    folder: str  # file or folder under the run directory
    build: Callable[[Path], None]
    key: str  # fingerprint of the settings this stage depends on (its own and upstream)


# A model to evaluate: its folder (None: the unigram baseline), how to load it (evaluate_model's
# keyword arguments) and the fingerprint of what built it.
Model = tuple[Path | None, dict, str]


def _stamp_path(folder: Path) -> Path:
    """Written after the stage's folder is complete: without it the stage counts as not done."""
    return folder.parent / f".{folder.name}.stage.json"


def is_done(folder: Path, key: str) -> bool:
    stamp = _stamp_path(folder)
    if not folder.exists() or not stamp.exists():
        return False
    info = json.loads(stamp.read_text())
    return info.get("key") == key and info.get("done", True)


def stages(cfg: RunConfig, log: Callable[[str], None] = print,
           report: bool = True) -> list[Stage]:  # fmt: skip
    """The run's stages in order, each with the fingerprint that decides whether it is stale."""
    run = Path(cfg.run_dir)
    d, t, e = cfg.data, cfg.tokenizer, cfg.eval
    out: list[Stage] = []

    corpus_key = fingerprint(
        "corpus", d.train_langs, d.heldout_langs, d.min_translated_share, d.min_bytes,
        d.validation_fraction, d.test_fraction,
        *([] if d.sources is None else [d.sources, d.hf_configs, d.hf_split, d.text_field,
                                        d.lang_field, d.id_field, d.max_docs_per_lang]),
    )  # fmt: skip

    def corpus(folder: Path) -> None:
        if d.sources is not None:  # any corpus (e.g. mC4 from the hub) instead of the demo's
            langs = d.train_langs + d.heldout_langs
            opts = SourceOptions(None, d.text_field, d.lang_field, d.id_field,
                                 d.hf_configs or langs, d.hf_split)  # fmt: skip
            splits = SplitFractions(d.validation_fraction, d.test_fraction)
            import_corpus(d.sources, folder, opts, splits, d.max_docs_per_lang, d.license,
                          d.train_langs, d.heldout_langs)  # fmt: skip
            return
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
        langs = d.train_langs + d.heldout_langs
        udhr_key = fingerprint("udhr", langs, "nfc")
        out.append(Stage("udhr", "udhr", lambda f: build_udhr_corpus(f, langs), udhr_key))

    if t.pretrained is None:
        spec = TokenizerSpec(t.vocab_size, t.sample_chars, t.alpha, t.min_frequency,
                             include_heldout=t.include_heldout)  # fmt: skip
        tokenizer_key = fingerprint("tokenizer", corpus_key, spec)
        tokenizer_path = str(run / "tokenizer")
        build = lambda f: train_tokenizer(run / "corpus", f, spec)  # noqa: E731
        out.append(Stage("tokenizer", "tokenizer", build, tokenizer_key))
    else:
        tokenizer_key = fingerprint("tokenizer", t.pretrained)
        tokenizer_path = t.pretrained

    seed = dataclasses.replace(
        cfg.seed, corpus=str(run / "corpus"), tokenizer=tokenizer_path, out=str(run / "seed")
    )
    settings = {k: v for k, v in to_dict(seed).items() if k not in TRAIN_FIELDS_WITHOUT_EFFECT}
    seed_key = fingerprint("seed", corpus_key, tokenizer_key, settings)
    if seed.init is not None and seed.max_tokens == 0:  # a pretrained seed (XGLM in the paper)
        seed_key = fingerprint("seed", seed.init, tokenizer_key)
        out.append(Stage("seed", "seed", functools.partial(_pretrained_seed, seed), seed_key))
    else:  # resume=True: an interrupted seed run continues from its last checkpoint
        out.append(Stage("seed", "seed", lambda f: train(seed, resume=True), seed_key))
    models: dict[str, Model] = {
        "seed": (run / "seed", {}, seed_key),
        "unigram": (None, {}, fingerprint("unigram", corpus_key, tokenizer_key)),
    }

    names = [a.name for a in cfg.allocations]
    if len(set(names)) < len(names):
        raise XelmError(f"allocations: two entries named the same ({', '.join(names)})")
    alloc_keys = {}
    for alloc in cfg.allocations:
        build = functools.partial(_allocate, run / "corpus", alloc)
        alloc_keys[alloc.name] = fingerprint("allocation", corpus_key, alloc)
        out.append(Stage(f"allocation {alloc.name}", f"allocation/{alloc.name}", build,
                         alloc_keys[alloc.name]))  # fmt: skip

    if cfg.experts is not None:
        x = cfg.experts
        base = dataclasses.replace(x.train, corpus=str(run / "corpus"), init=str(run / "seed"))
        branch = {k: v for k, v in to_dict(base).items() if k not in TRAIN_FIELDS_WITHOUT_EFFECT}
        branch_spec = BranchSpec(x.tokens, x.split, x.match)
        how = LaunchSpec(x.launcher, x.workers, x.gpus_per_expert, address=x.address)
        experts_keys = {}
        for alloc in cfg.allocations:
            key = fingerprint("experts", seed_key, alloc_keys[alloc.name], branch_spec, branch)
            experts_keys[alloc.name] = key
            build = functools.partial(_experts, run, alloc.name, branch_spec, base, how, log)
            out.append(Stage(f"experts {alloc.name}", f"experts/{alloc.name}", build, key))
        if x.dense:
            key = fingerprint("dense", seed_key, x.tokens, branch)
            build = functools.partial(_dense, run, x.tokens, base)
            out.append(Stage("dense", "dense", build, key))
            models["dense"] = (run / "dense", {}, key)

    if cfg.ensembles is not None and cfg.experts is not None:
        out += _ensemble_stages(cfg, experts_keys, models)

    # evaluation: one stage per model (and router), so adding one scores only that one
    sets = {"in_domain": (run / "corpus", e.split)}
    if d.udhr and e.udhr:
        sets["udhr"] = (run / "udhr", "test")
    sets_key = fingerprint(corpus_key, udhr_key if d.udhr else None, e)
    unigram = (tokenizer_path, run / "corpus")
    eval_keys = {}
    for name, (path, how, key) in models.items():
        eval_keys[name] = fingerprint("eval", name, key, sets_key, how)
        build = functools.partial(_evaluate, name, path, sets, d.train_langs, e.max_docs, how,
                                  None if path else unigram, log)  # fmt: skip
        out.append(Stage(f"eval {name}", f"eval/{name}.json", build, eval_keys[name]))
    if report:  # results.json, report.md/.html and plots; X-ELMs plotted with their first router
        plotted = [name for name in ("seed", "dense") if name in models]
        for alloc in cfg.allocations:
            plotted += [n for n in models if n.startswith(f"{alloc.name}/")][:1]
        files = {name: run / "eval" / f"{name}.json" for name in models}
        build = functools.partial(_report, run, files, d.train_langs, plotted)
        out.append(Stage("report", "report.md", build, fingerprint("report", eval_keys, plotted)))
    return out


def _ensemble_stages(cfg: RunConfig, experts_keys: dict[str, str],
                     models: dict[str, Model]) -> list[Stage]:  # fmt: skip
    """Per allocation: the ensemble folder and the merged model; adds what to evaluate (the
    ensemble once per router that applies, the merged model) to `models`."""
    run, ens = Path(cfg.run_dir), cfg.ensembles
    out = []
    for alloc in cfg.allocations:
        name = alloc.name
        key = fingerprint("ensemble", experts_keys[name], ens.prior_docs)
        build = functools.partial(_ensemble, run, name, ens.prior_docs)
        out.append(Stage(f"ensemble {name}", f"ensembles/{name}", build, key))
        for choice in ens.routers:
            if choice.router == "tfidf" and alloc.method != "tfidf":
                continue  # the TF-IDF router needs a TF-IDF allocation's state
            how = {"router": choice.router, "top_experts": choice.top_k,
                   "temperature": choice.temperature, "route_tokens": ens.route_tokens}  # fmt: skip
            models[f"{name}/{choice.name}"] = (run / "ensembles" / name, how, key)
        if ens.merge:
            key = fingerprint("merged", experts_keys[name])
            build = functools.partial(_merge, run, name)
            out.append(Stage(f"merged {name}", f"merged/{name}", build, key))
            models[f"merged/{name}"] = (run / "merged" / name, {}, key)
    return out


def _pretrained_seed(seed, folder: Path) -> None:
    """Use an existing multilingual LM (a folder or hub name) as the seed, saved as the run's
    `seed/` with its training record, so experts and the dense run branch from it alike."""
    from xelm.models import check_vocab, load_model, save_model
    from xelm.tokenizer import load_tokenizer

    model = load_model(seed.init)
    tokenizer = load_tokenizer(seed.tokenizer or seed.init)
    check_vocab(model, tokenizer, where=seed.init)
    record = {"pretrained": seed.init, "tokens": 0, "seconds": 0, "steps": 0}
    save_model(model, tokenizer, folder, {TRAIN_INFO: json.dumps(record, indent=2)})


def _allocate(corpus: Path, a: AllocationConfig, folder: Path) -> None:
    if a.method == "typology":
        spec = TypologySpec(a.features, max_size_factor=a.max_size_factor)
        allocate_typology(corpus, a.k, folder, spec)
    else:
        features = TfidfSpec(ngram_max=a.ngram_max, svd_dims=a.svd_dims, max_chars=a.max_chars)
        spec = TfidfAllocationSpec(features, a.vocab_docs, max_ratio=a.max_ratio, seed=a.seed)
        allocate_tfidf(corpus, a.k, folder, spec, progress=False)


def _experts(run: Path, name: str, spec: BranchSpec, base, how: LaunchSpec, log, folder: Path):
    jobs = plan_experts(run / "seed", run / "allocation" / name, folder, spec, base)
    outcomes = launch(jobs, how, folder / "jobs")
    for o in outcomes:
        if o.status == "failed":
            raise XelmError(f"{folder}: {o.job.name} failed ({o.error}); re-run to train it")
        log(f"  {o.job.name} ({' '.join(o.job.languages[:6])}): {o.info['tokens']:,} tokens, "
            f"validation loss {o.info['validation_loss']:.3f}")  # fmt: skip


def _dense(run: Path, tokens: int, base, folder: Path) -> None:
    train_dense(run / "seed", run / "corpus", folder, tokens, base)


def _ensemble(run: Path, name: str, prior_docs: int, folder: Path) -> None:
    """The allocation's ensemble with BTM's cached prior (routers are chosen at evaluation)."""
    from xelm.ensemble.build import PriorSpec, build_ensemble

    build_ensemble(expert_folders(run / "experts" / name), folder, "posterior",
                   prior_from=PriorSpec(run / "corpus", docs_per_language=prior_docs))  # fmt: skip


def _merge(run: Path, name: str, folder: Path) -> None:
    from xelm.ensemble.build import merge_average

    merge_average(expert_folders(run / "experts" / name), folder)


def _evaluate(name: str, path: Path | None, sets: dict, langs: list[str], max_docs: int | None,
              how: dict, unigram: tuple | None, log, out: Path) -> None:  # fmt: skip
    """{test set: {lang: scores}} of one model (`unigram`: (tokenizer, training corpus) of the
    unigram baseline instead)."""
    results = {}
    for set_name, (corpus_dir, split) in sets.items():
        log(f"  {name}: {set_name} ({corpus_dir}, {split})")
        if unigram is not None:
            tokenizer, train_corpus = unigram
            results[set_name] = unigram_baseline(tokenizer, corpus_dir, split, langs, max_docs,
                                                 train_corpus_dir=train_corpus)  # fmt: skip
        else:
            results[set_name] = evaluate_model(path, corpus_dir, split, langs,
                                               max_docs=max_docs, **how)  # fmt: skip
    atomic_write_text(out, json.dumps(results, indent=2) + "\n")


def _report(run: Path, files: dict[str, Path], langs: list[str], plotted: list[str],
            out: Path) -> None:  # fmt: skip
    write_report(run, collect(files), langs, plotted, out,
                 title=f"X-ELM run report: {run}")  # fmt: skip


def _clear(folder: Path) -> None:
    """Remove what a stage built from other settings (its folder and work-in-progress)."""
    for path in (folder, folder.with_name(folder.name + ".work")):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def run(cfg: RunConfig, log: Callable[[str], None] = print, report: bool = True) -> dict[str, str]:
    """Run every stage that is not done yet; returns {stage: 'built' | 'skipped'}.
    `report=False` (e.g. a sweep over the run's folder): no report, and config.yaml is kept.

    A stage is stamped as started (with its key) before it builds and as done after: an
    interrupted stage with the same key resumes from what it left (seed and expert checkpoints,
    finished experts), while one started with other settings is cleared first."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if report:
        dump_config(cfg, run_dir / "config.yaml")
    status = {}
    for stage in stages(cfg, log, report):
        folder = run_dir / stage.folder
        if is_done(folder, stage.key):
            log(f"[{stage.name}] up to date: {folder}")
            status[stage.name] = "skipped"
            continue
        stamp = _stamp_path(folder)
        started = json.loads(stamp.read_text()).get("key") if stamp.exists() else None
        if started != stage.key:
            _clear(folder)
        log(f"[{stage.name}] building {folder}")
        folder.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(stamp, json.dumps({"key": stage.key, "done": False}) + "\n")
        stage.build(folder)
        atomic_write_text(stamp, json.dumps({"key": stage.key, "done": True}) + "\n")
        status[stage.name] = "built"
    return status
