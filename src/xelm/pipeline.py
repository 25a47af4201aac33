"""`xelm run CONFIG.yaml`: every stage of a run, each writing one folder of the run directory.

A stage is skipped when its folder exists and was built from the same settings: a fingerprint of
its own config section and of its inputs' fingerprints (`xelm.spec.fingerprint`; fields declared
`no_effect` are left out), so re-running a finished run does nothing and a changed setting
re-runs that stage and everything downstream of it.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from xelm.allocate import allocate
from xelm.config import RunConfig, dump_config
from xelm.corpus import Corpus
from xelm.data.build import (
    build_corpus,
    build_debian_faq_corpus,
    build_install_guide_corpus,
    build_stress_corpus,
    build_udhr_corpus,
)
from xelm.data.debian_faq import FAQ_LANGS
from xelm.data.install_guide import INSTALL_GUIDE_LANGS
from xelm.display import scoring_progress
from xelm.errors import XelmError
from xelm.evaluate import Evaluator, passes, unigram_baseline
from xelm.experts import expert_folders, plan_rounds, train_dense
from xelm.icl.tasks import IclSpec
from xelm.launch import launch
from xelm.layout import RunLayout
from xelm.paths import atomic_write_text, exclusive
from xelm.report import write_report
from xelm.results import EvalModel, Results
from xelm.spec import fingerprint
from xelm.tokenizer import train_tokenizer
from xelm.train import TrainConfig, TrainRecord
from xelm.train.loop import train

Log = Callable[[str], None]


@dataclass
class Stage:
    name: str
    folder: Path  # file or folder it writes
    build: Callable[[Path], object]
    key: str  # fingerprint of the settings this stage depends on (its own and upstream)


@dataclass
class Plan:
    """The stages of one run config, in order, with the keys and models they pass on."""

    cfg: RunConfig
    log: Log
    run: RunLayout = field(init=False)
    stages: list[Stage] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)  # stage name -> fingerprint
    models: list[EvalModel] = field(default_factory=list)
    tokenizer: str = ""

    def __post_init__(self) -> None:
        self.run = RunLayout(self.cfg.run_dir)

    def add(self, name: str, folder: Path, build: Callable[[Path], object], *parts) -> str:
        key = fingerprint(name.split()[0], *parts)
        self.stages.append(Stage(name, folder, build, key))
        self.keys[name] = key
        return key

    def data(self) -> None:
        d, run = self.cfg.data, self.run
        progress = lambda r: self.log(f"  {r.lang}: {r.kept} pages kept of {r.pages}")  # noqa: E731
        self.add("corpus", run.corpus, lambda f: build_corpus(d, f, progress), d)
        every = d.train_langs + d.heldout_langs
        if d.udhr:
            build = functools.partial(build_udhr_corpus, langs=every)
            self.add("udhr", run.udhr, build, every, "nfc")
        if d.install_guide:
            guide = [x for x in every if x in INSTALL_GUIDE_LANGS]
            build = functools.partial(build_install_guide_corpus, langs=guide)
            self.add("install_guide", run.install_guide, build, guide)
        if d.debian_faq:
            faq = [x for x in every if x in FAQ_LANGS]
            build = functools.partial(build_debian_faq_corpus, langs=faq)
            self.add("debian_faq", run.debian_faq, build, faq)
        if d.stress:
            build = functools.partial(build_stress_corpus, run.corpus, langs=d.train_langs)
            self.add("stress", run.stress, build, self.keys["corpus"], d.train_langs)
        t = self.cfg.tokenizer
        if t.pretrained is None:
            build = lambda f: train_tokenizer(run.corpus, f, t)  # noqa: E731
            self.add("tokenizer", run.tokenizer, build, self.keys["corpus"], t)
            self.tokenizer = str(run.tokenizer)
        else:
            self.keys["tokenizer"] = fingerprint("tokenizer", t.pretrained)
            self.tokenizer = t.pretrained

    def seed(self) -> None:
        run = self.run
        seed = self.cfg.seed.replace(
            corpus=str(run.corpus), tokenizer=self.tokenizer, out=str(run.seed)
        )
        if seed.init is not None and seed.max_tokens == 0:  # pretrained (XGLM in the paper)
            build = functools.partial(_pretrained_seed, seed)
            key = self.add("seed", run.seed, build, seed.init, self.keys["tokenizer"])
        else:  # resume=True: an interrupted seed run continues from its last checkpoint
            build = lambda f: train(seed, resume=True)  # noqa: E731
            # the section as configured: the run's paths filled in above are inputs, named by
            # their keys, so a moved run directory keeps its stages
            key = self.add(
                "seed",
                run.seed,
                build,
                self.keys["corpus"],
                self.keys["tokenizer"],
                self.cfg.seed,
            )
        self.models.append(EvalModel("seed", "seed", run.seed, key, langs=self.all_langs()))
        key = fingerprint("unigram", self.keys["corpus"], self.keys["tokenizer"])
        self.models.append(EvalModel("unigram", "unigram", None, key))

    def allocations(self) -> None:
        for spec in self.cfg.allocations:
            build = functools.partial(_allocate, self.run.corpus, spec)
            self.add(
                f"allocation {spec.name}",
                self.run.allocation(spec.name),
                build,
                self.keys["corpus"],
                spec,
            )

    def expert_sets(self) -> list[tuple[str, object, int]]:
        """(name, allocation spec, rounds) of every set of experts: one per allocation, and
        with `experts.multi_round: R` also `<allocation>-r<R>` for each typology allocation
        (the same clusters trained down the merge tree in R rounds, for the same-k table)."""
        x = self.cfg.experts
        sets = [(spec.name, spec, x.rounds) for spec in self.cfg.allocations]
        if x.multi_round:
            r = x.multi_round
            sets += [
                (f"{spec.name}-r{r}", spec, r)
                for spec in self.cfg.allocations
                if spec.method == "typology"
            ]
        return sets

    def experts(self) -> None:
        configured, run = self.cfg.experts, self.run  # keys: as configured (see `seed`)
        x = configured.replace(
            train=configured.train.replace(corpus=str(run.corpus), init=str(run.seed))
        )
        for name, spec, rounds in self.expert_sets():
            build = functools.partial(_experts, run, spec.name, x.replace(rounds=rounds), self.log)
            self.add(
                f"experts {name}",
                run.experts(name),
                build,
                self.keys["seed"],
                self.keys[f"allocation {spec.name}"],
                configured.replace(rounds=rounds),
            )
        if x.dense:
            build = lambda f: train_dense(run.seed, run.corpus, f, x)  # noqa: E731
            # replay changes experts only: the dense run already trains on the whole mix
            dense_train = configured.train.replace(replay=0.0)
            key = self.add("dense", run.dense, build, self.keys["seed"], x.tokens, dense_train)
            self.models.append(EvalModel("dense", "dense", run.dense, key, langs=self.all_langs()))

    def ensembles(self) -> None:
        """Per set of experts: the ensemble folder (evaluated once per router that applies)
        and, per allocation, the merged model."""
        ens, run = self.cfg.ensembles, self.run
        for name, spec, _ in self.expert_sets():
            experts = run.experts(name)
            build = functools.partial(_ensemble, experts, run.corpus, ens.prior, run.seed)
            key = self.add(
                f"ensemble {name}",
                run.ensemble(name),
                build,
                self.keys[f"experts {name}"],
                ens.prior,
                "experts inside",  # earlier ensemble folders referenced them: rebuild those
                self.keys["seed"],  # the fallback
            )
            routers = [c for c in ens.routers if c.applies_to(spec.method)]
            for choice in routers if name == spec.name else routers[:1]:  # variants: the first
                model = EvalModel(
                    f"{name}/{choice.name}",
                    "x-elm",
                    run.ensemble(name),
                    key,
                    spec.name,
                    choice,
                    experts=name,
                )
                self.models.append(model)
            if ens.merge and name == spec.name:
                build = functools.partial(_merge, experts)
                key = self.add(
                    f"merged {name}", run.merged(name), build, self.keys[f"experts {name}"]
                )
                self.models.append(
                    EvalModel(f"merged/{name}", "merged", run.merged(name), key, name)
                )

    def all_langs(self) -> dict[str, list[str]] | None:
        """Seed and dense are scored on the new languages too when the run adapts."""
        a = self.cfg.adapt
        if a is None:
            return None
        langs = self.cfg.data.train_langs + a.langs
        return {"in_domain": langs, "udhr": langs}

    def adaptation(self) -> None:
        """HMR: the chosen allocation's X-ELM grown by the new languages, once per parent rule;
        LAPT: the dense model continued on each new language. The adapted X-ELMs are scored on
        every language (forgetting, new languages), LAPT on its language and, in domain, on the
        training languages (forgetting)."""
        a, run, train_langs = self.cfg.adapt, self.run, self.cfg.data.train_langs
        alloc = self.cfg.adapted_allocation
        name = alloc.name
        uriel = alloc if alloc.method == "typology" else a.uriel
        router = next(c for c in self.cfg.ensembles.routers if c.applies_to(alloc.method))
        every = {"in_domain": train_langs + a.langs, "udhr": a.langs}
        for rule in a.parents:
            spec = a.rule(rule).replace(uriel=uriel)
            build = functools.partial(
                _adapt, run.ensemble(name), run.corpus, spec, run.adapted_experts(name, rule)
            )
            folder = run.adapted(name, rule)
            key = self.add(
                f"adapt {name}-{rule}", folder, build, self.keys[f"ensemble {name}"], spec
            )
            label = f"adapted/{name}-{rule}/{router.name}"
            model = EvalModel(label, "adapted", folder, key, name, router, every, rule)
            self.models.append(model)
        if a.lapt:
            lapt_spec = a.rule(a.parents[0])
            for lang in a.langs:
                build = functools.partial(_lapt, run.dense, run.corpus, lang, lapt_spec)
                key = self.add(
                    f"lapt {lang}", run.lapt(lang), build, self.keys["dense"], a.tokens, a.train
                )
                langs = {"in_domain": [lang, *train_langs], "udhr": [lang]}
                self.models.append(
                    EvalModel(f"lapt/{lang}", "lapt", run.lapt(lang), key, langs=langs)
                )

    def test_sets(self) -> dict[str, tuple[Path, str, int | None]]:
        """{name: (corpus, split, documents per language)} of the sets the run scores."""
        d, e, run = self.cfg.data, self.cfg.eval, self.run
        sets = {"in_domain": (run.corpus, e.split, e.max_docs)}
        if d.udhr and e.udhr:
            sets["udhr"] = (run.udhr, "test", e.max_docs)
        ood = e.max_docs_ood or e.max_docs
        if d.install_guide and e.install_guide:
            sets["install_guide"] = (run.install_guide, "test", ood)
        if d.debian_faq and e.debian_faq:
            sets["debian_faq"] = (run.debian_faq, "test", ood)
        if d.stress and e.stress:
            sets["stress"] = (run.stress, "test", ood)
        return sets

    def evaluations(self) -> None:
        """One stage per model (and router), so adding one scores only that one. Models that
        name their languages per set (adapted, LAPT) are scored on those sets only."""
        d, e, run = self.cfg.data, self.cfg.eval, self.run
        sets = self.test_sets()
        sets_key = fingerprint(
            self.keys["corpus"], *(self.keys.get(s) for s in sets if s != "in_domain"), e
        )
        route_tokens = self.cfg.ensembles.route_tokens if self.cfg.ensembles else None
        for model in self.models:
            if model.kind in ("adapted", "lapt"):
                langs = {s: model.langs[s] for s in sets if s in model.langs}
            else:
                langs = {s: (model.langs or {}).get(s, d.train_langs) for s in sets}
            build = functools.partial(
                _evaluate,
                model,
                {s: sets[s] for s in langs},
                langs,
                e.precision,
                route_tokens,
                self.tokenizer,
                run.corpus,
                self.log,
            )
            self.add(
                f"eval {model.name}",
                run.scores(model.name),
                build,
                model.name,
                model.key,
                sets_key,
                model.router,
                route_tokens if model.router else None,
                *([model.langs] if model.langs else []),  # older runs' keys stay valid
            )

    def plotted(self) -> list[str]:
        """seed, dense and each allocation's X-ELM with its first router."""
        plotted = [m.name for m in self.models if m.kind in ("seed", "dense")]
        for spec in self.cfg.allocations:
            plotted += [
                m.name for m in self.models if m.allocation == spec.name and m.kind == "x-elm"
            ][:1]
        return plotted

    def icl(self) -> None:
        """The few-shot tasks of the corpus, then one stage per model scoring them."""
        icl, run = self.cfg.icl, self.run
        langs = icl.langs or self.cfg.data.train_langs
        spec = icl.part(IclSpec)
        tasks_key = self.add(
            "icl tasks",
            run.icl_tasks,
            functools.partial(_icl_tasks, run.corpus, spec, langs),
            self.keys["corpus"],
            spec,
            langs,
        )
        plotted = self.plotted()
        for model in self.models:
            if model.kind not in ("seed", "dense", "merged", "x-elm"):
                continue
            if model.kind == "merged" and not icl.merged:
                continue
            if model.kind == "x-elm" and icl.routers == "first" and model.name not in plotted:
                continue
            build = functools.partial(_icl, model, run.icl_tasks, icl, self.log)
            self.add(
                f"icl {model.name}",
                run.icl(model.name),
                build,
                model.name,
                model.key,
                tasks_key,
                model.router,
                icl.shots,
                icl.seeds,
            )

    def report(self) -> None:
        """results.json, report.md/.html and plots; X-ELMs plotted with their first router."""
        plotted = self.plotted()
        new_langs = self.cfg.adapt.langs if self.cfg.adapt else []
        icl = {n: k for n, k in self.keys.items() if n.startswith("icl ") and n != "icl tasks"}
        build = functools.partial(
            _report,
            self.run,
            self.models,
            self.cfg.data.train_langs,
            plotted,
            new_langs,
            [n.removeprefix("icl ") for n in icl],
        )
        evals = {m.name: self.keys[f"eval {m.name}"] for m in self.models}
        self.add("report", self.run.report, build, evals, plotted, *([icl] if icl else []))


def plan(cfg: RunConfig, log: Log = print, adapt: bool = True) -> Plan:
    """The stages that build the run's models (and the models they give); `adapt=False`: not
    the adaptation's (a sweep over k needs only the X-ELMs)."""
    p = Plan(cfg, log)
    p.data()
    p.seed()
    p.allocations()
    if cfg.experts is not None:
        p.experts()
        if cfg.ensembles is not None:
            p.ensembles()
            if cfg.adapt is not None and adapt:
                p.adaptation()
    return p


def stages(cfg: RunConfig, log: Log = print, report: bool = True) -> list[Stage]:
    """The run's stages in order, each with the fingerprint that decides whether it is stale."""
    p = plan(cfg, log, adapt=report)
    p.evaluations()
    if cfg.icl is not None and cfg.experts is not None and report:
        p.icl()
    if report:
        p.report()
    return p.stages


def _pretrained_seed(seed: TrainConfig, folder: Path) -> None:
    """Use an existing multilingual LM (a folder or hub name) as the seed, saved as the run's
    `seed/` with its training record, so experts and the dense run branch from it alike."""
    from xelm.models import check_vocab, load_model, save_model
    from xelm.tokenizer import load_tokenizer

    model = load_model(seed.init)
    tokenizer = load_tokenizer(seed.tokenizer or seed.init)
    check_vocab(model, tokenizer, where=seed.init)
    record = TrainRecord(pretrained=seed.init)
    save_model(model, tokenizer, folder, {TrainRecord.FILE: record.dumps()})


def _allocate(corpus: Path, spec, folder: Path) -> None:
    allocate(corpus, folder, spec, progress=False)


def _experts(run: RunLayout, allocation: str, spec, log: Log, folder: Path) -> None:
    rounds = plan_rounds(run.seed, run.allocation(allocation), folder, spec)
    for r, jobs in enumerate(rounds, start=1):
        where = f"round {r}/{len(rounds)}: " if len(rounds) > 1 else ""
        for o in launch(jobs, spec, jobs[0].out.parent / "jobs"):
            if o.status == "failed":
                raise XelmError(f"{folder}: {o.job.name} failed ({o.error}); re-run to train it")
            log(
                f"  {where}{o.job.name} ({' '.join(o.job.languages[:6])}): "
                f"{o.info.tokens:,} tokens, validation loss {o.info.validation_loss:.3f}"
            )


def _ensemble(experts: Path, corpus: Path, prior, seed: Path, folder: Path) -> None:
    """The allocation's ensemble with BTM's cached prior (routers are chosen at evaluation),
    the seed beside the experts as the fallback some routers mix in."""
    from xelm.ensemble.build import build_ensemble

    build_ensemble(
        expert_folders(experts),
        folder,
        "posterior",
        prior_from=corpus,
        prior_spec=prior,
        fallback=seed,
    )


def _adapt(ensemble: Path, corpus: Path, spec, experts_dir: Path, folder: Path) -> None:
    from xelm.adapt import adapt_ensemble

    adapt_ensemble(ensemble, corpus, folder, spec, experts_dir, progress=False)


def _lapt(dense: Path, corpus: Path, lang: str, spec, folder: Path) -> None:
    from xelm.adapt import lapt

    lapt(dense, corpus, lang, folder, spec, progress=False)


def _merge(experts: Path, folder: Path) -> None:
    from xelm.ensemble.build import merge_average

    merge_average(expert_folders(experts), folder)


def _evaluate(
    model: EvalModel,
    sets: dict,
    langs: dict[str, list[str]],
    precision: str,
    route_tokens: int | None,
    tokenizer: str,
    train_corpus: Path,
    log: Log,
    out: Path,
) -> None:
    """{test set: {lang: scores}} of one model (on the languages each set has), loaded once
    onto the device (the GPU when there is one)."""
    results, evaluator = {}, None
    for set_name, (corpus_dir, split, max_docs) in sets.items():
        started = time.perf_counter()
        have = Corpus(corpus_dir).langs
        set_langs = [lang for lang in langs[set_name] if lang in have]
        if not set_langs:  # none of the model's languages is in this set
            continue
        if model.path is None:
            results[set_name] = unigram_baseline(
                tokenizer,
                corpus_dir,
                split,
                set_langs,
                max_docs,
                train_corpus_dir=train_corpus,
            )
            continue
        if evaluator is None:
            how = {}
            if model.router is not None:
                how = {"route_tokens": route_tokens, **model.router.settings()}
            evaluator = Evaluator(model.path, precision=precision, **how)
        with scoring_progress(f"{model.name}, {set_name}") as tick:
            scores = evaluator.evaluate(corpus_dir, split, set_langs, max_docs, tick)
        results[set_name] = scores
        seconds = time.perf_counter() - started
        tokens = sum(s["tokens"] for s in scores.values())
        log(
            f"  {set_name}: {tokens:,} tokens, {seconds:.0f} s, {tokens / seconds:,.0f} "
            f"tokens/s, {passes(scores):.2f} passes"
        )
    atomic_write_text(out, json.dumps(results, indent=2) + "\n")


def _icl_tasks(corpus: Path, spec, langs: list[str], folder: Path) -> None:
    from xelm.icl.build import build_icl

    build_icl(corpus, folder, spec, langs, log=lambda line: None)


def _icl(model: EvalModel, tasks: Path, icl, log: Log, out: Path) -> None:
    """One model's few-shot accuracies on every task, shots and demonstration seed."""
    from xelm.icl.harness import evaluate_icl, load_lm

    router = model.router
    lm = load_lm(
        model.path,
        router.router if router else None,
        router.top_k if router else None,
        icl.batch_size,
        fallback=bool(router and router.fallback),
        window=router.window if router else None,
    )
    results = evaluate_icl(lm, [tasks], icl.shots, icl.seeds)
    atomic_write_text(out, json.dumps(results, indent=2) + "\n")


def _report(
    run: RunLayout,
    models: list[EvalModel],
    langs: list[str],
    plotted: list[str],
    new_langs: list[str],
    icl_models: list[str],
    out: Path,
) -> None:
    title = f"X-ELM run report: {run.root}"
    write_report(run, models, langs, plotted, title, new_langs, icl_models)


# ---------------------------------------------------------------------------------------------
# Running the stages
# ---------------------------------------------------------------------------------------------


def _stamp_path(folder: Path) -> Path:
    """Written after the stage's folder is complete: without it the stage counts as not done."""
    return folder.parent / f".{folder.name}.stage.json"


def is_done(folder: Path, key: str) -> bool:
    stamp = _stamp_path(folder)
    if not folder.exists() or not stamp.exists():
        return False
    info = json.loads(stamp.read_text())
    return info.get("key") == key and info.get("done", True)


def _clear(folder: Path) -> None:
    """Remove what a stage built from other settings (its folder and work-in-progress)."""
    for path in (folder, folder.with_name(folder.name + ".work")):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


@dataclass
class RunSummary:
    stages: dict[str, str]  # stage -> built | skipped
    results: Results | None  # None: no report


def run(
    cfg: RunConfig, log: Log = print, report: bool = True, only: list[str] | None = None
) -> RunSummary:
    """Run every stage that is not done yet; returns what each stage did and the results.
    `report=False` (e.g. a sweep over the run's folder): no report, and config.yaml is kept.
    `only`: just the stages of these kinds (the first word of a stage's name: `corpus`,
    `tokenizer`, `experts`, `eval`...) and no report, e.g. the data here, the rest on a GPU
    machine without network.

    A stage is stamped as started (with its key) before it builds and as done after: an
    interrupted stage with the same key resumes from what it left (seed and expert checkpoints,
    finished experts), while one started with other settings is cleared first."""
    layout = RunLayout(cfg.run_dir)
    with exclusive(layout.root):  # one writer per run directory
        if report:
            dump_config(cfg, layout.config)
        todo = stages(cfg, log, report and only is None)
        if only is not None:
            kinds = {stage.name.split()[0] for stage in todo}
            if unknown := [k for k in only if k not in kinds]:
                raise XelmError(
                    f"--only {','.join(unknown)}: this run has no such stage; its stage kinds "
                    f"are {', '.join(sorted(kinds))}"
                )
            todo = [stage for stage in todo if stage.name.split()[0] in only]
        status = {stage.name: _build(stage, log) for stage in todo}
    results = Results.read(layout.root) if report and only is None else None
    return RunSummary(status, results)


def _build(stage: Stage, log: Log) -> str:
    """Build one stage unless it is done; 'built' or 'skipped'."""
    folder = stage.folder
    if is_done(folder, stage.key):
        log(f"{stage.name}: up to date ({folder})")
        return "skipped"
    stamp = _stamp_path(folder)
    started = json.loads(stamp.read_text()).get("key") if stamp.exists() else None
    if started != stage.key:
        _clear(folder)
    log(f"{stage.name}: building {folder}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stamp, json.dumps({"key": stage.key, "done": False}) + "\n")
    started = time.perf_counter()
    stage.build(folder)
    seconds = round(time.perf_counter() - started, 1)
    done = {"key": stage.key, "done": True, "seconds": seconds}
    atomic_write_text(stamp, json.dumps(done) + "\n")
    log(f"{stage.name}: built in {seconds:.0f} s")
    return "built"
