"""X-ELM inference: experts mixed in probability space, with pluggable routers and top-k.

The model classes load transformers, so they are imported on first use
(`from xelm.ensemble import XELMForCausalLM`, or `from xelm import XELMForCausalLM`); importing
them registers the `xelm` model type with transformers' Auto classes, after which an ensemble
folder also loads with `AutoModelForCausalLM.from_pretrained`.
"""

from typing import Any

from xelm.ensemble.routers import ROUTERS, RouterChoice

_MODELING = ("XELMCache", "XELMConfig", "XELMForCausalLM")
__all__ = ["ROUTERS", "RouterChoice", *_MODELING]


def __getattr__(name: str) -> Any:
    if name in _MODELING:
        from xelm.ensemble import modeling

        return getattr(modeling, name)
    raise AttributeError(f"module 'xelm.ensemble' has no attribute {name!r}")
