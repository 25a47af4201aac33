"""Models: any HF causal LM, or a small Llama built from a named preset.

Every model xelm writes is a plain HF folder (safetensors + config + tokenizer), so it loads with
`AutoModelForCausalLM.from_pretrained` and nothing of ours.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from xelm.errors import XelmError
from xelm.paths import atomic_dir, file_sha256, hf_ref
from xelm.spec import Record

hf_logging.disable_progress_bar()  # per-shard bars for a few-MB model are noise in our output

# Llama shapes. `tiny` is for tests; `demo` is sized for ~5 minutes of training on 2 CPU cores
# (fp32, ~8k tokens/s with a 4096 vocabulary): at that compute a compute-optimal model is tiny
# (Chinchilla: tokens ≈ 20 × parameters), and the LM head is a large part of its cost.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
    },
    "demo": {
        "hidden_size": 96,
        "intermediate_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
    },
    "small": {
        "hidden_size": 256,
        "intermediate_size": 704,
        "num_hidden_layers": 6,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
    },
    "base": {  # 88M parameters with a 4,096-token vocabulary: the GPU training benchmark's
        "hidden_size": 768,
        "intermediate_size": 2048,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "num_key_value_heads": 12,
    },
    "gpu": {  # configs/gpu.yaml: 30M parameters with an 8,192-token vocabulary
        "hidden_size": 512,
        "intermediate_size": 1408,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
    },
}


def build_model(preset: str, tokenizer, max_positions: int, seed: int = 0):
    """A freshly initialised Llama of the given preset for `tokenizer`'s vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if preset not in PRESETS:
        raise XelmError(f"unknown model preset {preset!r}; use one of {', '.join(PRESETS)}")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation="sdpa",
        **PRESETS[preset],
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def load_model(name_or_path: str | Path):
    """Any HF causal LM (folder or hub name), in float32 for training/evaluation on CPU. A local
    folder must hold safetensors weights (pickled ones are refused: loading them runs code)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    ref, local = hf_ref(name_or_path)
    if local and (record := WeightsRecord.find(ref)) is not None:
        record.verify(Path(ref))
    try:
        return AutoModelForCausalLM.from_pretrained(
            ref, dtype=torch.float32, use_safetensors=True if local else None
        )
    except (OSError, ValueError, SafetensorError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise XelmError(
            f"{name_or_path}: cannot load a causal LM ({first}); rebuild it or "
            "point to a model folder with safetensors weights"
        ) from None


def check_vocab(model, tokenizer, where: str = "") -> None:
    """The model must have an embedding row for every token id the tokenizer can produce."""
    n_model = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_model:
        at = f"{where}: " if where else ""
        raise XelmError(
            f"{at}tokenizer has {len(tokenizer)} tokens but the model only {n_model} embeddings; "
            "use the tokenizer the model was trained with"
        )


def check_same_architecture(configs: list, names: list[str]) -> None:
    """Models to be mixed or averaged must be of one architecture family (HF model_type)."""
    first = configs[0].model_type
    for config, name in zip(configs[1:], names[1:], strict=True):
        if config.model_type != first:
            raise XelmError(
                f"{name}: a {config.model_type} model, but {names[0]} is a {first}: "
                "experts must share one architecture"
            )


def logits_at(model, input_ids, attention_mask, keep: torch.Tensor, position_ids=None):
    """Logits (batch, len(keep), vocab) at the time positions `keep` only: the vocabulary-wide
    output layer is most of a small model's work, and an evaluator needs it only where a next
    token is scored (HF's `logits_to_keep`; models without it are sliced after the fact)."""
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    if _keeps_logits(type(model)):
        return model(**kwargs, logits_to_keep=keep).logits
    return model(**kwargs).logits[:, keep]


def next_token_logp(model, input_ids, attention_mask, where, position_ids=None) -> torch.Tensor:
    """log p(x_{t+1} | x_≤t) (batch, time) at the positions of `where` (0 elsewhere): the
    output layer and the log-softmax run only at the time positions some row asks for."""
    targets = torch.nn.functional.pad(input_ids[:, 1:], (0, 1))
    keep = where.any(0).nonzero().flatten()
    z = logits_at(model, input_ids, attention_mask, keep, position_ids)
    m = where[:, keep]
    picked = -torch.nn.functional.cross_entropy(z[m].float(), targets[:, keep][m], reduction="none")
    out = picked.new_zeros(where.shape)
    out[:, keep] = picked.new_zeros(m.shape).masked_scatter(m, picked)
    return out


@functools.cache
def _keeps_logits(cls) -> bool:
    return "logits_to_keep" in inspect.signature(cls.forward).parameters


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


class WeightsRecord(Record):
    """`xelm_weights.json`: the SHA-256 of each weights file xelm wrote, checked on loading."""

    FILE = "xelm_weights.json"
    sha256: dict[str, str]

    @classmethod
    def of(cls, folder: Path) -> WeightsRecord:
        return cls(sha256={f.name: file_sha256(f) for f in sorted(folder.glob("*.safetensors"))})

    def verify(self, folder: Path) -> None:
        for name, digest in self.sha256.items():
            path = folder / name
            if not path.exists() or file_sha256(path) != digest:
                raise XelmError(
                    f"{path}: the weights changed since xelm wrote them (SHA-256 "
                    "differs, or the file is gone); retrain or restore the folder"
                )


def save_model(model, tokenizer, out: str | Path, extra_files: dict[str, str] | None = None):
    """Write a complete HF folder atomically (a reader never sees a half-written model), with
    the weights' hashes."""
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        WeightsRecord.of(tmp).write(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
    return Path(out)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto`: the GPU when torch sees one, else the CPU; a device asked for must be there."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise XelmError(f"device {device!r}: use auto, cpu or cuda (cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise XelmError(f"device {device}: torch sees no CUDA GPU here; use auto or cpu")
    return device


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A host tensor on `device`; to a GPU from pinned memory without waiting (a copy from
    pageable memory would make the host wait for the GPU)."""
    if torch.device(device).type != "cuda":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast only where it is fast: on CPUs without AVX-512-BF16/AMX it is several times
    slower than fp32 (measured 16 vs 114 GFLOPS on an AVX2 EPYC), so `auto` then picks fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def use_bf16(precision: str, device: torch.device | str = "cpu") -> bool:
    """Whether a `precision` setting (auto / bf16 / fp32) means bf16 on `device`."""
    return precision == "bf16" or (precision == "auto" and bf16_supported(torch.device(device)))


def autocast(precision: str, device: torch.device | str = "cpu"):
    """The `precision` setting (auto / bf16 / fp32) as an autocast context on `device`."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(precision, device))
