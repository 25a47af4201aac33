"""Win rates of one model against another over (task, language, shots) cells.

A cell's score is the mean accuracy over the demonstration seeds. A difference is **within
noise** when it is smaller than z standard errors of the difference of two accuracies over the
cell's n questions (binomial, sqrt(p1(1-p1)/n + p2(1-p2)/n)); a model is **near chance** in a
cell when its accuracy is within z binomial standard errors of chance (or below). A win in a
cell where the winner is near chance is a coin flip, and is reported as such.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

Z = 1.96


@dataclass(frozen=True)
class Cell:
    task: str
    lang: str | None
    shots: str
    ours: float
    theirs: float
    examples: int
    chance: float | None

    @property
    def diff(self) -> float:
        return self.ours - self.theirs

    @property
    def noise(self) -> float:
        n = max(self.examples, 1)
        p1, p2 = self.ours, self.theirs
        return Z * math.sqrt(max(p1 * (1 - p1) + p2 * (1 - p2), 0.25 / n) / n)

    def near_chance(self, acc: float) -> bool:
        if self.chance is None:
            return False
        c, n = self.chance, max(self.examples, 1)
        return acc <= c + Z * math.sqrt(c * (1 - c) / n)


def cell_means(results: dict, metric: str) -> dict[tuple, tuple[float, int, float | None]]:
    """{(task, lang, shots): (mean accuracy over seeds, questions, chance)} of one model."""
    out = {}
    for entry in results.values():
        for shots, cell in entry["shots"].items():
            scores = cell[metric]
            out[(entry["task"], entry["lang"], shots)] = (
                sum(scores) / len(scores),
                cell["examples"],
                entry.get("chance"),
            )
    return out


def cells(ours: dict, theirs: dict, metric: str = "acc_norm") -> list[Cell]:
    """The cells both models were scored on."""
    a, b = cell_means(ours, metric), cell_means(theirs, metric)
    return [
        Cell(*key, a[key][0], b[key][0], min(a[key][1], b[key][1]), a[key][2])
        for key in sorted(a.keys() & b.keys(), key=str)
    ]


def win_rate(cells: list[Cell], samples: int = 1000, seed: int = 0) -> dict:
    """Share of cells won (a tie counts half), its bootstrap 95 % interval over cells, and the
    counts that say how much of it is noise."""
    if not cells:
        return {"cells": 0}
    score = [1.0 if c.diff > 0 else 0.5 if c.diff == 0 else 0.0 for c in cells]
    rng = random.Random(seed)
    boots = sorted(sum(rng.choices(score, k=len(score))) / len(score) for _ in range(samples))
    clear = [c for c in cells if abs(c.diff) > c.noise]
    return {
        "cells": len(cells),
        "rate": sum(score) / len(score),
        "ci95": [boots[int(0.025 * samples)], boots[int(0.975 * samples) - 1]],
        "wins": sum(c.diff > 0 for c in cells),
        "losses": sum(c.diff < 0 for c in cells),
        "within_noise": len(cells) - len(clear),
        "clear_wins": sum(c.diff > 0 for c in clear),
        "clear_losses": sum(c.diff < 0 for c in clear),
        # a win only counts as meaningful when the winner is clearly above chance
        "meaningful_wins": sum(c.diff > 0 and not c.near_chance(c.ours) for c in clear),
        "ours_near_chance": sum(c.near_chance(c.ours) for c in cells),
        "theirs_near_chance": sum(c.near_chance(c.theirs) for c in cells),
    }
