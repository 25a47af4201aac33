"""`xelm eval`: per-language perplexity and bits per byte of models side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from xelm.cli.common import Langs, console, literal_choices, setting, split_list, value
from xelm.cli.ensemble import RouterName
from xelm.config import EvalConfig
from xelm.display import score_tables
from xelm.ensemble.routers import RouterChoice

NAME = "eval"
app = typer.Typer(help="Evaluate models.", no_args_is_help=True)
Precision = literal_choices(EvalConfig, "precision")


@app.command("ppl")
def eval_ppl(
    model: Annotated[
        list[str],
        typer.Option(
            help="HF causal LM folder or hub name; repeat to "
            "compare models (NAME=PATH to label one)."
        ),
    ],
    corpus: Annotated[Path, typer.Option(help="Corpus folder.")],
    split: str = "test",
    langs: Langs = None,
    context: Annotated[
        int | None, typer.Option(min=2, help="Window (default: the model's).")
    ] = None,
    max_docs: Annotated[
        int | None, typer.Option(min=1, help="Per language (default: all).")
    ] = None,
    unigram: Annotated[
        bool,
        typer.Option(
            help="Add a unigram baseline (tokenizer of the first "
            "model, counts from the train split)."
        ),
    ] = False,
    out: Annotated[Path | None, typer.Option(help="Write the results as JSON here.")] = None,
    router: Annotated[
        list[RouterName] | None,
        typer.Option(
            help="Ensembles: score with this router (repeat for several; default: the saved one)."
        ),
    ] = None,
    top_k: Annotated[int | None, setting(RouterChoice, "top_k")] = None,
    temperature: Annotated[float | None, setting(RouterChoice, "temperature")] = None,
    route_tokens: Annotated[
        int,
        typer.Option(
            help="Prefix routers: tokens of each document read to route it (scored by the "
            "posterior)."
        ),
    ] = 32,
    trust_external_experts: Annotated[
        bool,
        typer.Option(
            help="Ensembles: also load experts that lie outside the ensemble's folder (only "
            "for ensembles you trust)."
        ),
    ] = False,
    precision: Annotated[
        Precision, typer.Option(help="auto: bf16 autocast where the hardware does it fast.")
    ] = "auto",
) -> None:
    """Per-language perplexity and bits per byte of one or more models (HF causal LMs or X-ELM
    ensemble folders), side by side."""
    from xelm.evaluate import unigram_baseline
    from xelm.paths import atomic_write_text

    named = [m.split("=", 1) if "=" in m else (Path(m).name or m, m) for m in model]
    how = {
        "split": split,
        "langs": split_list(langs),
        "context": context,
        "max_docs": max_docs,
        "top_experts": top_k,
        "temperature": temperature,
        "route_tokens": route_tokens,
        "trust_external_experts": trust_external_experts,
        "precision": value(precision),
    }
    results = _score(named, corpus, value(router or []), how)
    if unigram:
        results["unigram"] = unigram_baseline(named[0][1], corpus, split, how["langs"], max_docs)
    by_model = {n: {lang: s["bits_per_byte"] for lang, s in r.items()} for n, r in results.items()}
    for table in score_tables(console, by_model, f"bits/byte, {corpus} ({split})", None):
        console.print(table)
    if out:
        record = {"corpus": str(corpus), "split": split, "models": results}
        atomic_write_text(out, json.dumps(record, indent=2) + "\n")


def _score(named: list, corpus: Path, routers: list[str], how: dict) -> dict[str, dict]:
    """Each (name, path) model's scores; an ensemble once per router (`name/router`)."""
    from xelm.evaluate import evaluate_model, is_ensemble

    results = {}
    for name, path in named:
        used = routers if is_ensemble(path) else []
        for r in used or [None]:
            label = f"{name}/{r}" if r and len(used) > 1 else name
            with console.status(f"evaluating {path}" + (f" with the {r} router" if r else "")):
                results[label] = evaluate_model(path, corpus, router=r, **how)
    return results
