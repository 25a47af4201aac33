"""`xelm adapt`: teach an X-ELM new languages (HMR), or continue the dense model on them (LAPT)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xelm.adapt import AdaptSpec
from xelm.cli.common import ConfigOpt, QuietOpt, SetOpt, console, setting, split_list
from xelm.spec import load_spec

NAME = "adapt"
app = typer.Typer(help="Adapt models to new languages (HMR vs LAPT).", no_args_is_help=True)
NewLangs = Annotated[str, typer.Option(help="The new languages, comma-separated BCP-47 tags.")]


def _spec(config: Path | None, set_: list[str] | None, **values) -> AdaptSpec:
    """The adaptation's settings: a YAML file with AdaptSpec's fields (as a run config's
    `adapt:` section), then the options, then `--set key.path=value`."""
    return load_spec(AdaptSpec, config, set_, values)


@app.command("hmr")
def adapt_hmr(
    ensemble: Annotated[Path, typer.Option(help="The X-ELM ensemble folder to grow.")],
    corpus: Annotated[Path, typer.Option(help="Corpus holding the new languages.")],
    langs: NewLangs,
    out: Annotated[Path, typer.Option(help="The grown ensemble folder to write.")],
    tokens: Annotated[int | None, setting(AdaptSpec, "tokens")] = None,
    parent: Annotated[str | None, setting(AdaptSpec, "parent")] = None,
    experts_dir: Annotated[
        Path | None,
        typer.Option(help="Where the new experts train (default: OUT.experts/; resumable)."),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """One new expert per language, branched from the closest expert (HMR) and trained on that
    language only; writes a new ensemble with the old experts untouched."""
    from xelm.adapt import adapt_ensemble

    spec = _spec(config, set_, langs=split_list(langs), tokens=tokens, parent=parent)
    records = adapt_ensemble(ensemble, corpus, out, spec, experts_dir, progress=not quiet)
    for r in records:
        a = r.adapted
        held = " ".join(a.parent_languages)
        origin = "the seed" if a.parent is None else f"expert {a.parent} ({held})"
        how = f", distance {a.distance:.3f}" if a.distance is not None else ""
        how += f", loss {a.loss:.3f}" if a.loss is not None else ""
        console.print(
            f"{a.language}: from {origin} by {a.rule}{how}; {r.tokens:,} tokens, "
            f"validation loss {r.validation_loss:.3f}",
            markup=False,
        )
    console.print(f"{out}: {len(records)} new experts", markup=False)


@app.command("lapt")
def adapt_lapt(
    model: Annotated[Path, typer.Option(help="The dense model to continue (the k=1 baseline).")],
    corpus: Annotated[Path, typer.Option(help="Corpus holding the new languages.")],
    langs: NewLangs,
    out: Annotated[Path, typer.Option(help="Folder for one model per language (OUT/LANG).")],
    tokens: Annotated[int | None, setting(AdaptSpec, "tokens")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """LAPT, the baseline: the dense model continued on each new language alone, with the
    budget, batch and schedule of `adapt hmr`."""
    from xelm.adapt import lapt

    spec = _spec(config, set_, langs=split_list(langs), tokens=tokens)
    for lang in spec.langs:
        run = lapt(model, corpus, lang, out / lang, spec, progress=not quiet)
        console.print(
            f"{out / lang}: {run.tokens:,} tokens, validation loss {run.mean_validation_loss:.3f}",
            markup=False,
        )
