"""X-ELM inference: experts mixed in probability space, with pluggable routers and top-k.

Importing this package registers the `xelm` model type with transformers' Auto classes, so an
ensemble folder loads with `AutoModelForCausalLM.from_pretrained` too.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from xelm.ensemble.modeling import XELMCache, XELMConfig, XELMForCausalLM
from xelm.ensemble.routers import ROUTERS

AutoConfig.register("xelm", XELMConfig, exist_ok=True)
AutoModelForCausalLM.register(XELMConfig, XELMForCausalLM, exist_ok=True)

__all__ = ["ROUTERS", "XELMCache", "XELMConfig", "XELMForCausalLM"]
