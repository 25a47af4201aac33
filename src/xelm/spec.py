"""Settings: one pydantic class per stage, the one declaration of every setting it has.

A stage's spec is at once its library argument, its section of a run config (YAML) and the source
of its CLI options' defaults and help (the docstring under each field). Precedence: the class's
defaults < a YAML file < explicit values (CLI options) < `--set key.path=value` overrides. Every
problem (unknown key, wrong type, bad value) is collected and reported at once, naming the file
and the key.

Fields that do not change what a stage writes (where or how fast it runs, how often it logs) are
declared with `no_effect(...)`: they are left out of the stage's fingerprint, so changing them
neither re-runs the stage nor blocks resuming it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from xelm.errors import XelmError

T = TypeVar("T", bound="Spec")
_NO_EFFECT = {"effect": False}


class Spec(BaseModel):
    """Base of every settings class: unknown keys are errors, field docstrings are the help."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=True)

    def replace(self, **changes: Any) -> Self:
        """A validated copy with some fields changed (nested specs may be given as dicts)."""
        return validate(type(self), {**self.model_dump(), **changes}, "settings")

    def part(self, cls: type[T]) -> T:
        """The fields `cls` declares, as a `cls` (a section composed of several specs passes
        each stage exactly its own part)."""
        return cls.model_validate(self.model_dump(include=set(cls.model_fields)))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def effective(self) -> dict[str, Any]:
        """The fields that change the stage's output (what its fingerprint covers)."""
        out = {}
        for name, info in type(self).model_fields.items():
            if info.json_schema_extra != _NO_EFFECT:
                out[name] = _effective(getattr(self, name))
        return out


def no_effect(default: Any = None, **kwargs: Any) -> Any:
    """A field that does not change the stage's output (left out of its fingerprint)."""
    return Field(default, json_schema_extra=_NO_EFFECT, **kwargs)


def one_of(name: str, registry: Any, what: str) -> str:
    """`name` if the registry (a dict or tuple of names) has it; else a ValueError listing them."""
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; use one of {', '.join(registry)}")
    return name


def _effective(value: Any) -> Any:
    if isinstance(value, Spec):
        return value.effective()
    if isinstance(value, list | tuple):
        return [_effective(v) for v in value]
    if isinstance(value, dict):
        return {k: _effective(v) for k, v in value.items()}
    return value


def fingerprint(*parts: Any) -> str:
    """A short stable hash of settings (specs by their effective fields) and upstream keys: a
    stage re-runs when any of them changes."""
    blob = json.dumps([_effective(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


_TAGS: set[str] = set()  # the tags of tagged unions: left out of error locations


def tagged_union(*members: type[Spec], by: str = "method") -> Any:
    """A field type that is one of `members`, chosen by the value of their `by` field (e.g.
    `method: tfidf`): errors then name the member's own keys."""
    _TAGS.update(m.model_fields[by].default for m in members)
    return Annotated[Union[members], Field(discriminator=by)]  # noqa: UP007


def describe(cls: type[Spec], name: str) -> str:
    """A field's help line: its docstring, and its default unless the docstring gives it."""
    info = cls.model_fields[name]
    text = " ".join((info.description or name.replace("_", " ")).split())
    text = text[:1].upper() + text[1:]
    if "default" in text:
        return text
    default = info.get_default(call_default_factory=True)
    return f"{text} (default: {'none' if default is None else default})"


def _format_errors(source: str, err: ValidationError) -> str:
    problems = []
    for e in err.errors():
        # a tagged union adds the chosen member's tag to the path: drop it
        loc = e["loc"]
        parts = [
            p
            for i, p in enumerate(loc)
            if not (p in _TAGS and i > 0 and isinstance(loc[i - 1], int))
        ]
        key = ".".join(map(str, parts))
        unknown = e["type"] in ("extra_forbidden", "unexpected_keyword_argument")
        msg = "unknown key" if unknown else e["msg"].lower().removeprefix("value error, ")
        problems.append(f"{key or '(top level)'}: {msg}")
    return f"{source}: " + "; ".join(problems)


def validate(cls: type[T], tree: Any, source: str) -> T:
    """`cls` from plain data; every problem in one XelmError naming `source` and each key."""
    try:
        return cls.model_validate(tree)
    except ValidationError as e:
        raise XelmError(_format_errors(source, e)) from None


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
        if not isinstance(tree, dict):
            raise XelmError(f"--set {dotted}: {key!r} is not a section")
    tree[leaf] = value


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise XelmError(f"{path}: no such config file")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise XelmError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise XelmError(f"{path}: expected a mapping of sections at the top level")
    return loaded or {}


def load_spec(
    cls: type[T],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> T:
    """A `cls` from YAML (or its defaults when `path` is None), then `values` (e.g. CLI options;
    None means not given), then `key.path=value` overrides (parsed as YAML, so
    `--set tokenizer.vocab_size=4096` is an int)."""
    tree = read_yaml(path) if path is not None else {}
    tree.update({k: v for k, v in (values or {}).items() if v is not None})
    for item in overrides or []:
        if "=" not in item:
            raise XelmError(f"--set {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        _set_path(tree, key.strip(), yaml.safe_load(raw))
    return validate(cls, tree, str(path) if path is not None else "options")


def dump_spec(spec: Spec, path: str | Path) -> None:
    from xelm.paths import atomic_write_text

    text = yaml.safe_dump(spec.to_dict(), sort_keys=False, allow_unicode=True)
    atomic_write_text(path, text)


class Record(BaseModel):
    """Base of the JSON records xelm writes beside what it built (a training run's, an
    expert's, ...): one class, one reader, one writer each. Unknown keys are ignored, so older
    and newer xelm versions read each other's records."""

    model_config = ConfigDict(extra="ignore")
    FILE: ClassVar[str]
    """the record's file name inside the folder it describes"""

    @classmethod
    def read(cls, folder: str | Path) -> Self:
        path = Path(folder) / cls.FILE
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise XelmError(
                f"{folder}: no {cls.FILE} (not finished, or not made by xelm)"
            ) from None
        except ValidationError as e:
            raise XelmError(_format_errors(str(path), e)) from None

    @classmethod
    def find(cls, folder: str | Path) -> Self | None:
        """The record, or None where there is none."""
        return cls.read(folder) if (Path(folder) / cls.FILE).exists() else None

    def dumps(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    def write(self, folder: str | Path) -> None:
        from xelm.paths import atomic_write_text

        atomic_write_text(Path(folder) / self.FILE, self.dumps())
