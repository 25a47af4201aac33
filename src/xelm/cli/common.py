"""What every command group shares: the consoles, list options, and options whose default and
help come from a settings class (so the CLI never declares a setting a second time)."""

from __future__ import annotations

import enum
import typing
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from xelm.spec import Spec, describe

console = Console()
err_console = Console(stderr=True)


def setting(spec: type[Spec], name: str, *flags: str, **kwargs: Any) -> Any:
    """A typer option for `spec.name`: unset (None) unless given, with the field's docstring and
    default as its help; the command passes what was given to `load_spec(spec, ...)`."""
    return typer.Option(*flags, help=describe(spec, name), show_default=False, **kwargs)


def choices(name: str, names) -> type[enum.Enum]:
    """An Enum of a registry's names, for typer's choice validation and help."""
    return enum.StrEnum(name, {n: n for n in names})


def literal_choices(spec: type[Spec], name: str) -> type[enum.Enum]:
    """An Enum of the values a `Literal[...]` field of `spec` allows."""
    return choices(name.title(), typing.get_args(spec.model_fields[name].annotation))


def split_list(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def value(option: Any) -> Any:
    """An option's plain value (an Enum member's name; lists of them too)."""
    if isinstance(option, list):
        return [value(v) for v in option]
    return option.value if isinstance(option, enum.Enum) else option


def log(message: str) -> None:
    """A progress line: printed as is (no rich markup, so `[...]` in paths stays)."""
    console.print(message, markup=False, highlight=False)


Langs = Annotated[
    str | None, typer.Option(help="Comma-separated BCP-47 tags (default: the demo set).")
]
ConfigOpt = Annotated[Path | None, typer.Option(help="YAML with the settings' fields.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Any setting: key.path=value")]
QuietOpt = Annotated[bool, typer.Option(help="No progress bar.")]
