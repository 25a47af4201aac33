"""`xelm train`: the seed, continued training, Branch-Train experts and the dense baseline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from xelm.cli.common import (
    ConfigOpt,
    Langs,
    QuietOpt,
    SetOpt,
    choices,
    console,
    literal_choices,
    setting,
    split_list,
    value,
)
from xelm.display import experts_table, train_table
from xelm.errors import XelmError
from xelm.experts import BranchSpec
from xelm.launch import LAUNCHERS, LaunchSpec
from xelm.spec import load_spec
from xelm.train import TrainConfig

NAME = "train"
app = typer.Typer(
    help="Train models (one loop for seed, continued training, experts).", no_args_is_help=True
)
ResumeOpt = Annotated[bool, typer.Option(help="Continue from the last checkpoint of --out.")]
Launcher = choices("Launcher", LAUNCHERS)


def _main_process() -> bool:
    """Under `accelerate launch`, only the first process prints."""
    return os.environ.get("RANK", "0") == "0"


def _train(
    values: dict, config: Path | None, set_: list[str] | None, resume: bool, quiet: bool
) -> None:
    from xelm.train import TrainRecord
    from xelm.train.loop import train

    cfg = load_spec(TrainConfig, config, set_, values)
    out = train(cfg, resume=resume, progress=not quiet)
    if _main_process():
        console.print(train_table(TrainRecord.read(out), out))


@app.command("seed")
def train_seed(
    corpus: Annotated[Path, typer.Option(help="Corpus folder.")],
    tokenizer: Annotated[str, setting(TrainConfig, "tokenizer")],
    out: Annotated[Path, setting(TrainConfig, "out")],
    tokens: Annotated[int | None, setting(TrainConfig, "max_tokens", "--tokens")] = None,
    preset: Annotated[str, typer.Option(help="Model preset: tiny, demo, small.")] = "demo",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    resume: ResumeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Pretrain a fresh multilingual seed LM on all training languages of a corpus."""
    values = {
        "corpus": str(corpus),
        "tokenizer": tokenizer,
        "out": str(out),
        "max_tokens": tokens,
        "preset": preset,
    }
    _train(values, config, set_, resume, quiet)


@app.command("continue")
def train_continue(
    init: Annotated[str, setting(TrainConfig, "init")],
    corpus: Annotated[Path, typer.Option(help="Corpus folder.")],
    out: Annotated[Path, setting(TrainConfig, "out")],
    tokens: Annotated[int | None, setting(TrainConfig, "max_tokens", "--tokens")] = None,
    langs: Langs = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    resume: ResumeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Continue training any HF causal LM on a corpus (or some of its languages)."""
    values = {
        "init": init,
        "corpus": str(corpus),
        "out": str(out),
        "max_tokens": tokens,
        "langs": split_list(langs),
    }
    _train(values, config, set_, resume, quiet)


def _branch_spec(config: Path | None, set_: list[str] | None, **values) -> BranchSpec:
    """Branch-Train's settings from options; `--config` and `--set` address its `train` part
    (the training loop's settings), as a run config's `experts.train` section does."""
    from xelm.spec import read_yaml

    train = read_yaml(config) if config else {}
    overrides = [f"train.{s}" for s in set_ or []]
    return load_spec(BranchSpec, None, overrides, values={**values, "train": train})


Split = literal_choices(BranchSpec, "split")
Match = literal_choices(BranchSpec, "match")


@app.command("experts")
def train_experts_cmd(
    seed: Annotated[Path, typer.Option(help="The seed model every expert branches from.")],
    allocation: Annotated[Path, typer.Option(help="Allocation folder (`xelm allocate`).")],
    out: Annotated[Path, typer.Option(help="Folder for expert_XX/ (and jobs/: one file each).")],
    tokens: Annotated[int | None, setting(BranchSpec, "tokens")] = None,
    split: Annotated[Split | None, setting(BranchSpec, "split")] = None,
    match: Annotated[Match | None, setting(BranchSpec, "match")] = None,
    rounds: Annotated[int | None, setting(BranchSpec, "rounds")] = None,
    launcher: Annotated[Launcher | None, setting(LaunchSpec, "launcher")] = None,
    workers: Annotated[int | None, setting(LaunchSpec, "workers")] = None,
    gpus_per_expert: Annotated[int | None, setting(LaunchSpec, "gpus_per_expert")] = None,
    cpus_per_expert: Annotated[int | None, setting(LaunchSpec, "cpus_per_expert")] = None,
    address: Annotated[str | None, setting(LaunchSpec, "address")] = None,
    retries: Annotated[int | None, setting(LaunchSpec, "retries")] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="YAML with the training loop's settings (the experts' `train:` section)."
        ),
    ] = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Branch-Train: one expert per cluster, each an exact copy of the seed trained on its
    cluster only. Finished experts are skipped and interrupted ones resume, so re-running the
    same command trains only what is missing or failed."""
    from xelm.experts import plan_rounds
    from xelm.launch import launch

    spec = _branch_spec(
        config, set_, tokens=tokens, split=value(split), match=value(match), rounds=rounds
    )
    how = load_spec(
        LaunchSpec,
        values={
            "launcher": value(launcher),
            "workers": workers,
            "gpus_per_expert": gpus_per_expert,
            "cpus_per_expert": cpus_per_expert,
            "address": address,
            "retries": retries,
        },
    )
    with console.status("planning the experts (tokenising clusters on first use)"):
        rounds = plan_rounds(seed, allocation, out, spec)
    for r, jobs in enumerate(rounds, start=1):
        outcomes = launch(jobs, how, jobs[0].out.parent / "jobs", progress=not quiet)
        what = f"round {r} of {len(rounds)}, " if len(rounds) > 1 else ""
        console.print(experts_table(outcomes, f"{jobs[0].out.parent}: {what}{len(jobs)} experts"))
        failed = [o for o in outcomes if o.status == "failed"]
        if failed:
            names = ", ".join(f"{o.job.name} ({o.error})" for o in failed)
            raise XelmError(
                f"{len(failed)} of {len(outcomes)} experts failed: {names}; the others "
                "are intact: re-run the same command to train only these"
            )


@app.command("job")
def train_job_cmd(
    job_file: Annotated[Path, typer.Argument(help="A job file (OUT/jobs/expert_XX.yaml).")],
    quiet: QuietOpt = False,
) -> None:
    """Train one planned expert from its job file: what the local and Ray launchers run, and
    what a cluster scheduler (e.g. a SLURM array over OUT/jobs/*.yaml) can run."""
    from xelm.experts import load_job, train_expert

    record = train_expert(load_job(job_file), progress=not quiet)
    if _main_process():
        console.print(
            f"{job_file}: {record.tokens:,} tokens, {record.steps} steps, "
            f"validation loss {record.validation_loss:.3f}"
        )


@app.command("dense")
def train_dense_cmd(
    seed: Annotated[Path, typer.Option(help="The seed model (the experts' seed).")],
    corpus: Annotated[Path, typer.Option(help="Corpus folder (all its training languages).")],
    out: Annotated[Path, typer.Option(help="Model folder to write.")],
    tokens: Annotated[int | None, setting(BranchSpec, "tokens")] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML with the training loop's settings (as for `train experts`)."),
    ] = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """The compute-matched dense (k=1) baseline: the seed on all data for the same tokens."""
    from xelm.experts import train_dense

    spec = _branch_spec(config, set_, tokens=tokens)
    record = train_dense(seed, corpus, out, spec, progress=not quiet)
    console.print(
        f"{out}: {record.tokens:,} tokens, {record.steps} steps, "
        f"{record.seconds:.0f} s, mean validation loss "
        f"{record.mean_validation_loss:.3f}"
    )
