"""The settings of one training run (seed pretraining, continued training, an expert, the dense
baseline, a new-language expert): one class, the same in a run config, a job file and the CLI.

Budgets are in tokens so runs can be compute-matched; one optimizer step consumes
`micro_batch_size × grad_accum_steps × processes × seq_len` tokens.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from xelm.errors import XelmError
from xelm.spec import Spec, no_effect


class TrainConfig(Spec):
    """One training run: data, model, budget, optimizer, schedule and bookkeeping."""

    corpus: str = ""
    """corpus folder (its train split is trained on, its validation split evaluated)"""
    out: str = no_effect("")
    """the HF model folder to write (work in progress goes to OUT.work/)"""
    max_tokens: int = Field(0, ge=0)
    """training budget in tokens"""
    preset: str | None = None
    """build a fresh Llama of this preset (tiny, demo, small) ..."""
    init: str | None = None
    """... or start from this HF causal LM (folder or hub name)"""
    tokenizer: str | None = None
    """tokenizer folder or hub name (default: the init model's)"""
    langs: list[str] | None = None
    """languages to train on (default: the corpus's training languages)"""
    allocation: str | None = None
    """with `cluster`: train only on that cluster's documents of this allocation (an expert)"""
    cluster: int | None = Field(None, ge=0)
    """the allocation's cluster to train on"""
    replay: float = Field(0.0, ge=0, lt=1)
    """a run restricted to some data (an expert's cluster, `langs`): this share of its blocks
    is drawn from the whole training mix instead (all the corpus's training languages, by
    `sampling_alpha`), so it forgets less of what the seed knew; 0: its own data only"""
    sampling_alpha: float = Field(1.0, ge=0)
    """language sampling p_l ∝ tokens_l^alpha (1: the natural mix)"""
    seq_len: int = Field(256, ge=1)
    """tokens per training sequence"""
    micro_batch_size: int = Field(16, ge=1)
    """sequences per forward/backward pass (per process)"""
    grad_accum_steps: int = Field(1, ge=1)
    """micro-batches per optimizer step"""
    lr: float = Field(3e-3, ge=0)
    """peak learning rate"""
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    """final learning rate as a fraction of the peak"""
    warmup_fraction: float = Field(0.05, ge=0, le=1)
    """share of the optimizer steps spent warming up"""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """decay after the warmup"""
    weight_decay: float = Field(0.1, ge=0)
    """AdamW weight decay (not on norms and biases)"""
    beta1: float = Field(0.9, ge=0, lt=1)
    """AdamW β1"""
    beta2: float = Field(0.95, ge=0, lt=1)
    """AdamW β2"""
    grad_clip: float = Field(1.0, ge=0)
    """max global gradient norm (0: off)"""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """auto: bf16 autocast where the hardware does it fast, else fp32"""
    seed: int = 0
    """seed of the model's initialisation and of the data order"""
    eval_blocks: int = Field(8, ge=1)
    """validation sequences per language in each evaluation"""
    eval_every: int = no_effect(0, ge=0)
    """optimizer steps between validation evaluations (0: at the end only)"""
    log_every: int = no_effect(10, ge=1)
    """optimizer steps between metric lines"""
    checkpoint_every: int = no_effect(0, ge=0)
    """optimizer steps between checkpoints (0: none)"""
    keep_checkpoints: int = no_effect(2, ge=0)
    """the last M checkpoints are kept (0: all)"""
    threads: int | None = no_effect(None, ge=1)
    """torch CPU threads (default: torch's choice)"""
    compile: bool = no_effect(False)
    """torch.compile the model (measured: no gain on small CPU models)"""
    fused_loss: bool = no_effect(True)
    """the output layer and the cross-entropy fused, in chunks of rows (`xelm.train.fused_loss`;
    Llama-family and XGLM models, one process; others take the plain loss): the same loss and
    gradients up to rounding, 1.3× faster steps on the demo model on a 2-core CPU"""

    def check(self) -> None:
        """What a run needs beyond valid values (a run config fills some fields in later)."""
        problems = []
        if not self.corpus:
            problems.append("corpus is required")
        if not self.out:
            problems.append("out is required")
        if self.max_tokens <= 0:
            problems.append("max_tokens must be > 0")
        if (self.preset is None) == (self.init is None):
            problems.append(
                "give exactly one of preset (a fresh model) or init (a model to start from)"
            )
        if self.preset is not None and self.tokenizer is None:
            problems.append("a fresh model (preset) needs a tokenizer")
        if (self.allocation is None) != (self.cluster is None):
            problems.append("allocation and cluster go together (an expert's cluster)")
        if problems:
            raise XelmError("train config: " + "; ".join(problems))

    def tokens_per_step(self, processes: int = 1) -> int:
        return self.micro_batch_size * self.grad_accum_steps * processes * self.seq_len
