"""Training: one loop for the seed, continued training, experts and the dense baseline
(`xelm.train.loop.train`). This package's top holds only its settings and its record, which
load without torch."""

from xelm.train.config import TrainConfig
from xelm.train.record import TrainRecord

TRAIN_INFO = TrainRecord.FILE

__all__ = ["TRAIN_INFO", "TrainConfig", "TrainRecord"]
