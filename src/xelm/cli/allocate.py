"""`xelm allocate`: split the training data into k clusters, one per expert."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xelm.allocate.specs import TfidfAllocationSpec, TypologySpec
from xelm.cli.common import ConfigOpt, SetOpt, console, setting
from xelm.display import allocation_tables
from xelm.spec import load_spec

NAME = "allocate"
app = typer.Typer(
    help="Allocate the training data into k clusters, one per expert.", no_args_is_help=True
)
CorpusOpt = Annotated[Path, typer.Option(help="Corpus folder (its training languages).")]
OutOpt = Annotated[Path, typer.Option(help="Allocation folder to write.")]


def print_allocation(info, path: Path) -> None:
    from xelm.allocate.allocation import groups_summary

    for part in allocation_tables(console, info, str(path)):
        console.print(part)
    for line in groups_summary(info):
        console.print(f"  {line}", highlight=False)


@app.command("tfidf")
def allocate_tfidf_cmd(
    corpus: CorpusOpt,
    out: OutOpt,
    k: Annotated[int | None, setting(TfidfAllocationSpec, "k", "--k")] = None,
    svd_dims: Annotated[int | None, setting(TfidfAllocationSpec, "svd_dims")] = None,
    ngram_max: Annotated[int | None, setting(TfidfAllocationSpec, "ngram_max")] = None,
    max_chars: Annotated[int | None, setting(TfidfAllocationSpec, "max_chars")] = None,
    max_ratio: Annotated[float | None, setting(TfidfAllocationSpec, "max_ratio")] = None,
    vocab_docs: Annotated[int | None, setting(TfidfAllocationSpec, "vocab_docs")] = None,
    kmeans_docs: Annotated[int | None, setting(TfidfAllocationSpec, "kmeans_docs")] = None,
    workers: Annotated[int | None, setting(TfidfAllocationSpec, "workers")] = None,
    seed: Annotated[int | None, setting(TfidfAllocationSpec, "seed")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quiet: bool = False,
) -> None:
    """Balanced k-means over TF-IDF char n-gram embeddings of documents (c-BTM)."""
    from xelm.allocate.tfidf import allocate_tfidf

    spec = load_spec(
        TfidfAllocationSpec,
        config,
        set_,
        values={
            "k": k,
            "svd_dims": svd_dims,
            "ngram_max": ngram_max,
            "max_chars": max_chars,
            "max_ratio": max_ratio,
            "vocab_docs": vocab_docs,
            "kmeans_docs": kmeans_docs,
            "workers": workers,
            "seed": seed,
        },
    )
    print_allocation(allocate_tfidf(corpus, out, spec, progress=not quiet), out)


@app.command("typology")
def allocate_typology_cmd(
    corpus: CorpusOpt,
    out: OutOpt,
    k: Annotated[int | None, setting(TypologySpec, "k", "--k")] = None,
    features: Annotated[str | None, setting(TypologySpec, "features")] = None,
    max_size_factor: Annotated[float | None, setting(TypologySpec, "max_size_factor")] = None,
    min_features: Annotated[int | None, setting(TypologySpec, "min_features")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Greedy pairing of languages by URIEL typology (X-ELM); keeps the binary tree for HMR."""
    from xelm.allocate.typology import allocate_typology

    spec = load_spec(
        TypologySpec,
        config,
        set_,
        values={
            "k": k,
            "features": features,
            "max_size_factor": max_size_factor,
            "min_features": min_features,
        },
    )
    print_allocation(allocate_typology(corpus, out, spec), out)


@app.command("show")
def allocate_show(path: Annotated[Path, typer.Argument(help="Allocation folder.")]) -> None:
    """Language × cluster table and quality figures of an allocation."""
    from xelm.allocate.allocation import Allocation

    print_allocation(Allocation(path).record, path)
