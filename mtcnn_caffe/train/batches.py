"""Which records make up each training batch: the batch mix, the held-out split, and a batch order that
is a pure function of ``(seed, iteration)``.

* The packed LMDB (``gen_net_imdb.py``) is already shuffled; its **last** ``val_count`` records are held
  out for validation and never trained on (:func:`split_counts`).
* Each batch holds a fixed number of samples of each type, from the mix (default neg:pos:part:landmark
  = 3:1:1:2, :class:`Mix`). Each type is drawn from its own pool in a fresh random permutation per pass
  over that pool, so every sample of a type is seen once per pass, whatever the other types' sizes.
* :meth:`BatchPlan.indices` depends only on the seed and the iteration: a resumed run continues with the
  very batches the uninterrupted run would have seen (``set_iteration`` of the data layer).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..data.records import LABELS

#: Batch-mix order of :class:`Mix` (the seed's neg:pos:part:landmark).
MIX_ORDER = ("neg", "pos", "part", "landmark")
DEFAULT_MIX = "3:1:1:2"
#: Held-out share of a pack, and its bounds in records.
VAL_FRACTION = 0.05
VAL_MIN, VAL_MAX = 64, 5000


class BatchPlanError(ValueError):
    """The pack cannot fill the requested batches (message says which type and what to change)."""


@dataclass(frozen=True)
class Mix:
    """Relative numbers of neg, pos, part and landmark samples in a batch."""

    neg: float = 3
    pos: float = 1
    part: float = 1
    landmark: float = 2

    @classmethod
    def parse(cls, text: str) -> "Mix":
        """``"N:P:T:L"`` (non-negative numbers, at least one positive)."""
        parts = str(text).split(":")
        try:
            values = [float(v) for v in parts]
        except ValueError:
            values = []
        if len(values) != 4 or not all(math.isfinite(v) and v >= 0 for v in values) or not any(values):
            raise BatchPlanError(f"batch mix must be neg:pos:part:landmark with 4 non-negative numbers, got {text!r}")
        return cls(*values)

    def __str__(self) -> str:
        return ":".join(f"{v:g}" for v in (self.neg, self.pos, self.part, self.landmark))

    def counts(self, batch_size: int) -> dict[str, int]:
        """Samples per type in a batch of ``batch_size`` (largest remainders get the leftover slots)."""
        weights = np.array([self.neg, self.pos, self.part, self.landmark], dtype=np.float64)
        exact = batch_size * weights / weights.sum()
        counts = np.floor(exact).astype(int)
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[: batch_size - counts.sum()]] += 1
        return dict(zip(MIX_ORDER, counts.tolist()))


def split_counts(total: int) -> tuple[int, int]:
    """``(train, val)`` record counts of a pack: about 5% held out, at least 64 and at most 5000 records
    (none when the pack is too small to spare them)."""
    val = min(VAL_MAX, max(VAL_MIN, int(round(total * VAL_FRACTION))))
    if total - val < val:
        val = 0
    return total - val, val


class BatchPlan:
    """Deterministic batches of record indices from the training part of a pack (module docstring)."""

    def __init__(self, labels: np.ndarray, train_count: int, mix: Mix, batch_size: int, seed: int = 0,
                 source: str = "pack"):
        labels = np.asarray(labels)[:train_count]
        self.counts = mix.counts(batch_size)
        self.pools = {name: np.flatnonzero(labels == LABELS[name]) for name in MIX_ORDER}
        self.seed = int(seed)
        empty = [name for name in MIX_ORDER if self.counts[name] and not len(self.pools[name])]
        if empty:
            have = ", ".join(f"{name} {len(self.pools[name])}" for name in MIX_ORDER)
            raise BatchPlanError(f"{source}: the batch mix {mix} needs {' and '.join(empty)} samples, but the training "
                                 f"part of the pack has none ({have}); add them to the pack or set their share "
                                 "of the mix to 0")
        self._permutation = lru_cache(maxsize=8)(self._make_permutation)

    def _make_permutation(self, type_index: int, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, type_index, epoch])
        return rng.permutation(len(self.pools[MIX_ORDER[type_index]]))

    def indices(self, iteration: int) -> np.ndarray:
        """Record indices of the batch of ``iteration``: the mix's types in :data:`MIX_ORDER` order."""
        chunks = []
        for type_index, name in enumerate(MIX_ORDER):
            k, pool = self.counts[name], self.pools[name]
            if not k:
                continue
            positions = iteration * k + np.arange(k)
            epochs, offsets = np.divmod(positions, len(pool))
            picked = np.empty(k, dtype=np.int64)
            for epoch in np.unique(epochs):
                where = epochs == epoch
                picked[where] = pool[self._permutation(type_index, int(epoch))[offsets[where]]]
            chunks.append(picked)
        return np.concatenate(chunks)

    def pass_length(self) -> dict[str, float]:
        """Iterations for one pass over each type's pool (how many times a sample is seen per N iterations)."""
        return {name: len(self.pools[name]) / self.counts[name] for name in MIX_ORDER if self.counts[name]}
