"""xelm: cross-lingual expert language models (multilingual Branch-Train-Merge)."""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("xelm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["XELMConfig", "XELMForCausalLM", "__version__"]


def __getattr__(name: str) -> Any:
    """`from xelm import XELMForCausalLM`: the model classes (and transformers) load on use."""
    if name in ("XELMConfig", "XELMForCausalLM"):
        from xelm.ensemble import modeling

        return getattr(modeling, name)
    raise AttributeError(f"module 'xelm' has no attribute {name!r}")
