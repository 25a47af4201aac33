"""Checkpoints of a run in progress: `OUT.work/checkpoints/step_XXXXXXXX/`.

accelerate writes the state (`save_state`: model, optimizer, RNGs, and the objects registered for
checkpointing: scheduler, data sampler, train state); we add the run's config and a `COMPLETE`
marker, written last. A checkpoint without the marker (a run killed while saving) does not count,
the last `keep` complete ones are kept, and resuming from one whose config differs in a setting
that changes the result is refused.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xelm.errors import XelmError
from xelm.spec import validate
from xelm.train.config import TrainConfig

# Tied input/output embeddings are saved once (safetensors cannot hold shared tensors) and come
# back through the tie on load; accelerate warns about it at every checkpoint.
logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)

CONFIG = "train_config.json"
COMPLETE = "COMPLETE"


@dataclass
class TrainState:
    """Where the run is; with the sampler's position, all a resumed run needs to go on exactly."""

    step: int = 0
    tokens: int = 0
    elapsed: float = 0.0  # seconds of training, summed over resumptions
    resumed_at: list[int] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


class Checkpointer:
    def __init__(self, work: Path, cfg: TrainConfig):
        self.root = work / "checkpoints"
        self.cfg = cfg

    def complete(self) -> list[Path]:
        return sorted(p for p in self.root.glob("step_*") if (p / COMPLETE).exists())

    def due(self, step: int, total_steps: int) -> bool:
        every = self.cfg.checkpoint_every
        return bool(every) and step % every == 0 and step < total_steps

    def save(self, accelerator, step: int) -> None:
        """Every process takes part (each saves its own RNG state); the main one finishes."""
        folder = self.root / f"step_{step:08d}"
        if accelerator.is_main_process and folder.exists():
            shutil.rmtree(folder)  # an incomplete one from a killed run
        accelerator.wait_for_everyone()
        accelerator.save_state(str(folder))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (folder / CONFIG).write_text(json.dumps(self.cfg.to_dict(), indent=1))
            (folder / COMPLETE).write_text("")
            keep = self.cfg.keep_checkpoints
            for old in self.complete()[:-keep] if keep > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    def load_latest(self, accelerator) -> bool:
        """Restore the last complete checkpoint, if any; refuse one from other settings."""
        found = self.complete()
        if not found:
            return False
        last = found[-1]
        saved = validate(TrainConfig, json.loads((last / CONFIG).read_text()), str(last / CONFIG))
        ours, theirs = self.cfg.effective(), saved.effective()
        changed = [
            f"{k}: {theirs.get(k)!r} -> {v!r}" for k, v in ours.items() if theirs.get(k) != v
        ]
        if changed:
            raise XelmError(
                f"{last}: checkpoint is from a different config "
                f"({'; '.join(changed)}); resume with the same settings or train "
                "into a new --out"
            )
        try:
            # tied embeddings are saved once (safetensors): the head comes back with them
            accelerator.load_state(str(last), strict=False)
        except (RuntimeError, KeyError) as e:
            raise XelmError(
                f"{last}: the checkpoint does not fit the model ({str(e).splitlines()[0]})"
            ) from None
        return True
