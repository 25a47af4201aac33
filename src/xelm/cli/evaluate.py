"""`xelm eval`: per-language perplexity and bits per byte of models side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from xelm.cli.common import Langs, console, literal_choices, setting, split_list, value
from xelm.cli.ensemble import RouterName
from xelm.config import EvalConfig
from xelm.display import score_tables, scoring_progress
from xelm.ensemble.routers import RouterChoice
from xelm.errors import XelmError

NAME = "eval"
app = typer.Typer(help="Evaluate models.", no_args_is_help=True)
Precision = literal_choices(EvalConfig, "precision")
RouteOn = literal_choices(RouterChoice, "route_on")


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
            "posterior, or by the fallback alone with --fallback)."
        ),
    ] = 32,
    route_on: Annotated[RouteOn, setting(RouterChoice, "route_on")] = "head",
    window: Annotated[int | None, setting(RouterChoice, "window", min=1)] = None,
    fallback: Annotated[bool, setting(RouterChoice, "fallback")] = False,
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
    device: Annotated[
        str, typer.Option(help="auto (the GPU when there is one), cpu, cuda or cuda:N.")
    ] = "auto",
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="Windows per batch (default: 8 on a CPU, 64k tokens on a GPU)."),
    ] = None,
) -> None:
    """Per-language perplexity and bits per byte of one or more models (HF causal LMs or X-ELM
    ensemble folders), side by side, with the model passes each spends per token."""
    from xelm.evaluate import passes, unigram_baseline
    from xelm.paths import atomic_write_text

    named = _named(model)
    how = {
        "split": split,
        "langs": split_list(langs),
        "context": context,
        "max_docs": max_docs,
        "top_experts": top_k,
        "temperature": temperature,
        "route_tokens": route_tokens,
        "route_on": value(route_on),
        "window": window,
        "fallback": fallback,
        "trust_external_experts": trust_external_experts,
        "precision": value(precision),
        "device": device,
        "batch_size": batch_size,
    }
    results = _score(named, corpus, value(router or []), how)
    if unigram:
        results["unigram"] = unigram_baseline(named[0][1], corpus, split, how["langs"], max_docs)
    by_model = {n: {lang: s["bits_per_byte"] for lang, s in r.items()} for n, r in results.items()}
    for table in score_tables(console, by_model, f"bits/byte, {corpus} ({split})", None):
        console.print(table)
    for name, r in results.items():
        if name != "unigram":
            console.print(f"{name}: {passes(r):.2f} model passes per token")
    if out:
        record = {"corpus": str(corpus), "split": split, "models": results}
        atomic_write_text(out, json.dumps(record, indent=2) + "\n")


def _named(models: list[str]) -> list[tuple[str, str]]:
    """(label, path) of each `--model` (NAME=PATH, or PATH labelled by its folder name)."""
    return [tuple(m.split("=", 1)) if "=" in m else (Path(m).name or m, m) for m in models]


def _score(named: list, corpus: Path, routers: list[str], how: dict) -> dict[str, dict]:
    """Each (name, path) model's scores; an ensemble once per router (`name/router`)."""
    from xelm.evaluate import evaluate_model, is_ensemble

    results = {}
    for name, path in named:
        used = routers if is_ensemble(path) else []
        for r in used or [None]:
            label = f"{name}/{r}" if r and len(used) > 1 else name
            with scoring_progress(label, console) as on_batch:
                results[label] = evaluate_model(path, corpus, router=r, on_batch=on_batch, **how)
    return results


@app.command("icl")
def eval_icl(
    model: Annotated[
        list[str],
        typer.Option(help="HF causal LM or X-ELM ensemble folder; repeat (NAME=PATH to label)."),
    ],
    tasks: Annotated[
        list[Path],
        typer.Option(
            help="`xelm data icl` folder, a .jsonl (context, options, answer) or an lm-eval "
            "task .yaml; repeat for several."
        ),
    ],
    shots: Annotated[str, typer.Option(help="Comma-separated numbers of demonstrations.")] = (
        "0,1,4,8"
    ),
    seeds: Annotated[int, typer.Option(min=1, help="Demonstration seeds per shot count.")] = 5,
    router: Annotated[
        RouterName | None, typer.Option(help="Ensembles: route with this (default: saved).")
    ] = None,
    top_k: Annotated[int | None, setting(RouterChoice, "top_k")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Questions per task (a test).")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    precision: Annotated[
        Precision, typer.Option(help="auto: bf16 autocast where the hardware does it fast.")
    ] = "auto",
    baseline: Annotated[
        str | None, typer.Option(help="Win rates against this model (default: the first).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the results as JSON here.")] = None,
    trust_external_experts: bool = False,
) -> None:
    """Few-shot accuracy through lm-evaluation-harness, per task, language and shots, with the
    win rates of every model against a baseline."""
    from xelm.icl.harness import evaluate_icl, load_lm
    from xelm.icl.report import accuracy_tables, win_rate_table
    from xelm.paths import atomic_write_text, writable

    if out:
        writable(out, "file")
    try:
        n_shots = sorted({int(s) for s in split_list(shots)})
    except ValueError:
        raise XelmError(f"--shots {shots!r}: give numbers, e.g. 0,1,4,8") from None
    named = _named(model)
    names = [n for n, _ in named]
    if baseline is not None and baseline not in names:
        raise XelmError(f"--baseline {baseline!r} is none of the models ({', '.join(names)})")
    results = {}
    for name, path in named:
        with console.status(f"few-shot evaluation of {path}"):
            lm = load_lm(
                path, value(router), top_k, batch_size, value(precision), trust_external_experts
            )
            results[name] = evaluate_icl(lm, tasks, n_shots, seeds, limit)
    for table in accuracy_tables(results):
        console.print(table)
    console.print(win_rate_table(results, baseline or names[0]))
    if out:
        atomic_write_text(out, json.dumps({"models": results}, indent=2) + "\n")
