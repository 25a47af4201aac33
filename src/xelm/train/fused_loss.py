"""Next-token cross-entropy fused with the output layer, in row chunks.

A small multilingual LM spends much of its step on the vocabulary-wide output: the logits of
every position (tokens × vocabulary, cast to fp32), their log-softmax, its backward, and the
gradient of the logits, each a pass over a tensor far larger than the model's activations. Here
the logits exist one chunk of rows at a time, and the chunk's gradients (of the hidden states and
of the output weights) are made right away, while the chunk is still in cache; the backward pass
only scales them. Same loss and gradients as `cross_entropy(lm_head(h).float(), targets)` up to
floating-point rounding (`tests/test_train.py` checks both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK_ROWS = 1024  # rows of logits at a time on a CPU: 1024 × 4096 fp32 is 16 MiB, in cache
GPU_CHUNK_ROWS = 8192  # on a GPU, larger chunks, fewer kernel launches (128 MiB at 4096)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int):
        n = hidden.shape[0]
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, n, chunk):
            h, t = hidden[start : start + chunk], targets[start : start + chunk]
            logits = (h @ weight.t()).float()  # bf16 under autocast, as the plain output layer
            lse = logits.logsumexp(-1)
            total += (lse - logits.gather(-1, t[:, None]).squeeze(-1)).sum()
            # d(mean loss)/d logits = (softmax - one-hot) / n, made in place
            grad = logits.sub_(lse[:, None]).exp_()
            grad[torch.arange(len(t), device=t.device), t] -= 1.0
            grad = grad.div_(n)  # the matmuls below run in autocast's dtype, as the plain ones
            grad_hidden[start : start + chunk] = grad @ weight
            grad_weight += (grad.t() @ h).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total / n

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (
            grad_hidden * grad_output,
            (grad_weight * grad_output).to(ctx.weight_dtype),
            None,
            None,
        )


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    """Mean cross-entropy of `hidden @ weight.T` (rows × vocabulary) against `targets`, never
    holding more than `chunk` rows of logits (default `CHUNK_ROWS`)."""
    chunk = chunk or (GPU_CHUNK_ROWS if hidden.is_cuda else CHUNK_ROWS)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(hidden, weight, targets, chunk)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk):
        logits = (hidden[start : start + chunk] @ weight.t()).float()
        total += F.cross_entropy(logits, targets[start : start + chunk], reduction="sum")
    return total / hidden.shape[0]
