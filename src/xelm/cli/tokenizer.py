"""`xelm tokenizer`: train and inspect tokenizers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xelm.cli.common import console, setting
from xelm.display import fertility_table
from xelm.spec import load_spec
from xelm.tokenizer import TokenizerSpec

NAME = "tokenizer"
app = typer.Typer(help="Train and inspect tokenizers.", no_args_is_help=True)


def _fertility(tokenizer, corpus: Path, split: str) -> None:
    from xelm.tokenizer import fertility

    rows = fertility(tokenizer, corpus, split)
    console.print(fertility_table(rows, f"tokenizer fertility on {corpus} ({split})"))


@app.command("train")
def tokenizer_train(
    corpus: Annotated[Path, typer.Option(help="Corpus folder (its train split is sampled).")],
    out: Annotated[Path, typer.Option(help="Tokenizer folder to write (HF format).")],
    vocab_size: Annotated[int | None, setting(TokenizerSpec, "vocab_size")] = None,
    sample_chars: Annotated[int | None, setting(TokenizerSpec, "sample_chars")] = None,
    alpha: Annotated[float | None, setting(TokenizerSpec, "alpha")] = None,
    min_frequency: Annotated[int | None, setting(TokenizerSpec, "min_frequency")] = None,
    include_heldout: Annotated[bool | None, setting(TokenizerSpec, "include_heldout")] = None,
) -> None:
    """Train a byte-level BPE on a language-balanced sample; print per-language fertility."""
    from xelm.tokenizer import load_tokenizer, train_tokenizer

    spec = load_spec(
        TokenizerSpec,
        values={
            "vocab_size": vocab_size,
            "sample_chars": sample_chars,
            "alpha": alpha,
            "min_frequency": min_frequency,
            "include_heldout": include_heldout,
        },
    )
    with console.status("training the BPE tokenizer"):
        train_tokenizer(corpus, out, spec)
    _fertility(load_tokenizer(out), corpus, "validation")


@app.command("show")
def tokenizer_show(
    tokenizer: Annotated[str, typer.Argument(help="Tokenizer folder or hub name.")],
    corpus: Annotated[Path, typer.Option(help="Corpus to measure fertility on.")],
    split: str = "validation",
) -> None:
    """Per-language fertility (tokens per character/byte) of any HF tokenizer."""
    from xelm.tokenizer import load_tokenizer

    _fertility(load_tokenizer(tokenizer), corpus, split)
