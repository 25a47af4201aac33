"""`xelm run` and `xelm sweep`: whole runs from a YAML config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markdown import Markdown

from xelm.cli.common import SetOpt, console, log, split_list
from xelm.cli.ensemble import RouterName
from xelm.display import score_tables
from xelm.errors import XelmError

ConfigArg = Annotated[Path, typer.Argument(help="Run config (YAML), e.g. configs/demo.yaml.")]
OutOpt = Annotated[Path | None, typer.Option(help="Run directory (default: the config's run_dir).")]


def run_cmd(
    config: ConfigArg,
    out: OutOpt = None,
    set_: SetOpt = None,
    only: Annotated[
        str | None,
        typer.Option(
            help="Only these kinds of stage, comma-separated (e.g. corpus,udhr,tokenizer: the "
            "data, to carry to a machine without network); no report."
        ),
    ] = None,
) -> None:
    """Run every stage of a config; stages already built with the same settings are skipped."""
    from xelm.config import load_config
    from xelm.layout import RunLayout
    from xelm.pipeline import run
    from xelm.report import SET_TITLES, summary

    cfg = load_config(config, set_, values={"run_dir": out and str(out)})
    done = run(cfg, log=log, only=split_list(only))
    built = [name for name, status in done.stages.items() if status == "built"]
    console.print(
        f"{len(built)} of {len(done.stages)} stages built, the others up to date", highlight=False
    )
    if done.results is None:
        return
    for set_name in done.results.sets:
        scores = {n: done.results.bits(n, set_name) for n in done.results.main_models}
        title = f"bits/byte, {SET_TITLES.get(set_name, set_name)} (lower is better)"
        for table in score_tables(console, scores, title):
            console.print(table)
    for line in summary(done.results):
        console.print(Markdown(f"- {line}"))
    layout = RunLayout(cfg.run_dir)
    console.print(
        f"report: {layout.report} and {layout.report_html}; every score: {layout.results}",
        highlight=False,
    )


def sweep_cmd(
    config: ConfigArg,
    k: Annotated[str, typer.Option(help="Numbers of experts (1: the dense run).")] = "1,2,4,8",
    methods: Annotated[str, typer.Option(help="Allocation methods.")] = "typology,tfidf",
    router: Annotated[RouterName, typer.Option(help="How the ensembles are scored.")] = "posterior",
    top_k: Annotated[int | None, typer.Option(help="Keep the k largest α (0: all experts).")] = 1,
    out: OutOpt = None,
    set_: SetOpt = None,
) -> None:
    """The best-k study: the same total budget for every k and both allocation methods, in the
    config's run directory (finished stages are re-used); writes RUN_DIR/sweep/."""
    from xelm.config import RouterChoice, load_config
    from xelm.layout import RunLayout
    from xelm.sweep import run_sweep, sweep_markdown

    try:
        ks = [int(x) for x in k.split(",")]
    except ValueError:
        raise XelmError(f"--k {k!r}: expected numbers separated by commas, e.g. 1,2,4,8") from None
    cfg = load_config(config, set_, values={"run_dir": out and str(out)})
    choice = RouterChoice(router=RouterName(router).value, top_k=top_k or None)
    sweep = run_sweep(cfg, ks, split_list(methods), choice, log=log)
    console.print(Markdown(sweep_markdown(sweep)))
    folder = RunLayout(cfg.run_dir).sweep
    console.print(f"{folder / 'k_sweep.png'}, {folder / 'sweep.json'}", highlight=False)
