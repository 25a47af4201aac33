"""What a run reports while it trains: metric lines (JSONL, and TensorBoard through accelerate's
trackers when it is installed), a progress bar, and per-language validation loss."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from xelm.tokens import TokenStream
from xelm.train.fused_loss import linear_cross_entropy


class MetricsLog:
    """`metrics.jsonl` of a run (read by `xelm.monitor` while it trains). On resume, lines from
    after the checkpoint are dropped, so the file reads as one uninterrupted run."""

    def __init__(self, path: Path, accelerator, after_step: int):
        self.path, self.accelerator = path, accelerator
        self.enabled = accelerator.is_main_process
        if not self.enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            keep = [
                line
                for line in path.read_text().splitlines()
                if json.loads(line).get("step", 0) <= after_step
            ]
            path.write_text("".join(line + "\n" for line in keep))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.accelerator.trackers and "step" in record:
            scalars = {
                f"train/{k}": record[k] for k in ("loss", "lr", "tokens_per_s") if k in record
            }
            for lang, ev in record.get("eval", {}).items():
                scalars[f"eval/{lang}/loss"] = ev["loss"]
            self.accelerator.log(scalars, step=record["step"])


def progress_bar(enabled: bool) -> Progress:
    """Step, loss, tokens/s, ETA; `disable`d (a no-op) for quiet runs and other processes."""
    return Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TextColumn("{task.fields[tps]:,.0f} tok/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        disable=not enabled,
    )


FUSED_LOSS_MODELS = ("llama", "mistral", "qwen2", "qwen3", "xglm")
"""Model types whose logits are exactly `lm_head(decoder(ids))`: no bias, scaling or capping."""


def lm_loss(model, block: torch.Tensor, fused: bool = False) -> torch.Tensor:
    """Mean next-token cross-entropy over every position of packed blocks (seq_len + 1 tokens
    in, seq_len predictions): no position is wasted on a shifted-away label. `fused`: the output
    layer and the loss in chunks (`xelm.train.fused_loss`) where the model allows it."""
    inputs, targets = block[:, :-1], block[:, 1:].flatten()
    head = fusable_head(model) if fused else None
    if head is None:
        logits = model(input_ids=inputs).logits
        return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets)
    hidden = model.get_decoder()(input_ids=inputs).last_hidden_state
    return linear_cross_entropy(hidden.flatten(0, 1), head.weight, targets)


def fusable_head(model) -> torch.nn.Linear | None:
    """The output layer, if the model is a plain HF model (not wrapped for data parallelism or
    by torch.compile; a decoder compiled in place is fine) of a type whose logits are just that
    layer's output."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        return None
    if model.config.model_type not in FUSED_LOSS_MODELS:
        return None
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        return None
    return head


@torch.no_grad()
def validation_loss(
    model, streams: dict[str, TokenStream], seq_len: int, blocks: int, accelerator
) -> dict[str, dict[str, float]]:
    """Per-language mean loss on the first `blocks` validation blocks, and bits per byte
    estimated with the stream's tokens/bytes ratio (`xelm eval ppl` does the exact accounting)."""
    model.eval()
    out = {}
    for lang, stream in streams.items():
        arr = stream.array()
        n = min(blocks, (len(arr) - 1) // seq_len)
        if n < 1:
            continue
        batch = np.stack([arr[i * seq_len : (i + 1) * seq_len + 1] for i in range(n)])
        block = torch.from_numpy(batch.astype(np.int64)).to(accelerator.device)
        with accelerator.autocast():
            loss = lm_loss(model, block).item()
        bpb = loss * stream.tokens / stream.bytes / math.log(2)
        out[lang] = {"loss": round(loss, 5), "bits_per_byte": round(bpb, 5)}
    model.train()
    return out
