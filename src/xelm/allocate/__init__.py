"""Stage 1: allocate the training data into k clusters, one per expert.

Each method is a spec class (its settings, tagged by `method`) that writes its allocation folder;
`METHODS` (in `xelm.allocate.specs`) is the one list of them: the run config, the CLI and the
sweep read it.
"""

from __future__ import annotations

from pathlib import Path

from xelm.allocate.specs import METHODS, AllocationSpec, TfidfAllocationSpec, TypologySpec

__all__ = [
    "METHODS",
    "AllocationSpec",
    "TfidfAllocationSpec",
    "TypologySpec",
    "allocate",
    "allocation_spec",
]


def allocation_spec(method: str, **settings) -> TfidfAllocationSpec | TypologySpec:
    return METHODS[method](**settings)


def allocate(
    corpus_dir: str | Path,
    out: str | Path,
    spec: TfidfAllocationSpec | TypologySpec,
    progress: bool = True,
) -> dict:
    """Write the allocation folder `out` for `spec` (any method); returns its clusters.json."""
    return spec.allocate(corpus_dir, out, progress)
