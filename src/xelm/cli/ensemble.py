"""`xelm ensemble` and `xelm merge`: the experts as one X-ELM, or averaged into one model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xelm.cli.common import choices, console, setting, value
from xelm.ensemble.build import PriorSpec
from xelm.ensemble.routers import ROUTERS, RouterChoice
from xelm.errors import XelmError
from xelm.spec import load_spec

NAME = "ensemble"
app = typer.Typer(help="Build X-ELM ensembles of experts.", no_args_is_help=True)
merge_app = typer.Typer(help="Merge experts into one dense model.", no_args_is_help=True)
RouterName = choices("RouterName", ROUTERS)
ExpertsOpt = Annotated[
    list[Path],
    typer.Option(
        "--experts", help="Expert folders, or a `train experts` output holding expert_XX/."
    ),
]


@app.command("build")
def ensemble_build(
    experts: ExpertsOpt,
    out: Annotated[Path, typer.Option(help="Ensemble folder to write.")],
    router: Annotated[RouterName | None, setting(RouterChoice, "router")] = None,
    top_k: Annotated[int | None, setting(RouterChoice, "top_k")] = None,
    temperature: Annotated[float | None, setting(RouterChoice, "temperature")] = None,
    allocation: Annotated[
        Path | None,
        typer.Option(help="The experts' allocation (default: from their xelm_expert.json)."),
    ] = None,
    prior_from: Annotated[
        Path | None,
        typer.Option(
            help="Estimate the prior (prior/posterior routers) from this corpus's held-out "
            "documents (BTM's cached prior)."
        ),
    ] = None,
    prior_docs: Annotated[int | None, setting(PriorSpec, "documents")] = None,
    fallback: Annotated[
        Path | None,
        typer.Option(
            help="A model of the same tokenizer (the seed) to keep beside the experts: scoring "
            "with --fallback mixes it in token by token."
        ),
    ] = None,
) -> None:
    """An X-ELM ensemble folder (loads with from_pretrained) holding the experts."""
    from xelm.ensemble.build import build_ensemble
    from xelm.experts import expert_folders

    choice = load_spec(
        RouterChoice, values={"router": value(router), "top_k": top_k, "temperature": temperature}
    )
    if choice.router == "prior" and prior_from is None:
        raise XelmError("--router prior needs --prior-from CORPUS to estimate the prior")
    folders = expert_folders(*experts)
    build_ensemble(
        folders,
        out,
        choice.router,
        choice.top_k,
        allocation,
        temperature=choice.temperature,
        prior_from=prior_from,
        prior_spec=load_spec(PriorSpec, values={"documents": prior_docs}),
        fallback=fallback,
    )
    extra = f", fallback {fallback}" if fallback else ""
    console.print(f"{out}: {len(folders)} experts, router {choice.name}{extra}")


@merge_app.command("average")
def merge_average_cmd(
    experts: ExpertsOpt,
    out: Annotated[Path, typer.Option(help="Model folder to write.")],
    weights: Annotated[
        str | None, typer.Option(help="Comma-separated weights (default: equal).")
    ] = None,
) -> None:
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
