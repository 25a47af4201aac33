"""`xelm_train.json`: what a finished training run did (in every model folder xelm trains)."""

from __future__ import annotations

from xelm.spec import Record
from xelm.train.config import TrainConfig


class TrainRecord(Record):
    FILE = "xelm_train.json"

    config: TrainConfig | None = None  # None: a pretrained model taken as it is
    pretrained: str | None = None  # ... and where it came from
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    params: int | None = None
    precision: str | None = None
    languages: list[str] = []
    resumed_at: list[int] = []  # the steps a killed run was resumed from
    validation: dict[str, dict[str, float]] = {}  # per language: loss, bits_per_byte

    @property
    def mean_validation_loss(self) -> float | None:
        """Mean over languages of the final validation loss."""
        losses = [v["loss"] for v in self.validation.values()]
        return round(sum(losses) / len(losses), 4) if losses else None
