"""The `xelm` command: a thin layer over the library; every command calls one function.

User errors (`XelmError`) print one line and exit with code 2, without a traceback.
"""

from __future__ import annotations

import errno
import sys
from typing import Annotated

import typer

import xelm
from xelm.cli import adapt, allocate, data, ensemble, evaluate, run, tokenizer, train
from xelm.cli.common import console, err_console
from xelm.errors import XelmError

PIPELINE = """\
\b
Cross-lingual expert language models (X-ELM): multilingual Branch-Train-Merge.

\b
Pipeline (each stage writes one folder of a run directory):
  data       build a multilingual corpus (demo: LibreOffice help; or import JSONL/Parquet/HF)
  tokenizer  train the shared byte-level BPE tokenizer
  train      pretrain the seed; branch and train the experts; the dense baseline
  allocate   split the training data into k clusters (TF-IDF documents / typology languages)
  ensemble   mix the experts into one X-ELM (loads with from_pretrained); merge averages them
  eval       per-language perplexity and bits per byte, models side by side
  adapt      teach an X-ELM new languages (HMR: new experts), or the dense model (LAPT)
  run        every stage of a YAML config, then the report; finished stages are skipped
  sweep      the best-k study: the same budget for k = 1, 2, 4, 8, ..., both allocations
"""

app = typer.Typer(
    help=PIPELINE,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)
for group in (data, tokenizer, train, allocate, evaluate, ensemble, adapt):
    app.add_typer(group.app, name=group.NAME)
app.add_typer(ensemble.merge_app, name="merge")
app.command("run")(run.run_cmd)
app.command("sweep")(run.sweep_cmd)


def _version(value: bool) -> None:
    if value:
        console.print(f"xelm {xelm.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass


def _fail(message: str) -> None:
    err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(2)


def main() -> None:
    """Run the CLI: user errors and bad usage are one line on stderr and exit code 2."""
    try:
        code = app(standalone_mode=False)  # usage errors come to us, to be said in one line
    except typer.TyperException as e:  # typer's (vendored click's) usage errors
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError":  # `xelm train`: the group's help
            print(ctx.get_help())
            sys.exit(0)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _fail(" ".join(e.format_message().split()) + where)
    except XelmError as e:
        _fail(str(e))
    except (KeyboardInterrupt, typer.Abort):
        err_console.print("interrupted")
        sys.exit(130)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        # nothing half-written is left (outputs are written beside and renamed), and an
        # interrupted stage resumes: freeing space and re-running is all it takes
        _fail(
            f"no space left on the device{f' ({e.filename})' if e.filename else ''}; free "
            "some and re-run"
        )
    sys.exit(code if isinstance(code, int) else 0)
