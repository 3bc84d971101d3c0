"""A window of training statistics between two log steps, reduced over ranks.

Statistics are reported by name with their unit in the name (``Loss/G/id``,
``Timing/sec_per_step``); non-finite values (a skipped phase) are left out of the means.
"""

from __future__ import annotations

import math
import resource
import time

import torch

from infra import distributed as dist


def peak_memory_gb() -> float:
    """Peak memory of this process in GiB: CUDA allocations on a GPU, else the peak RSS."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1024**3
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def mean_over_ranks(sums: dict[str, float], n: int) -> dict[str, float]:
    """Per-key mean of ``sums`` (each a sum over ``n`` steps) over every rank's steps."""
    keys = sorted(sums)
    t = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
    if dist.world_size() > 1:
        torch.distributed.all_reduce(t)
    return {k: float(v) / (n * dist.world_size()) for k, v in zip(keys, t.tolist(), strict=True)}


class StatsWindow:
    """Sums the per-step statistics of a window; :meth:`flush` returns the window's means
    (over steps and ranks) with its timing, then starts a new window.

    Parameters
    ----------
    images_per_step : pairs per step over all ranks (batch × world size), for ``img/s``.
    """

    def __init__(self, images_per_step: int):
        self.images_per_step = images_per_step
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.t0 = time.perf_counter()

    def add(self, stats: dict[str, float]) -> None:
        """One step's statistics (floats); NaN/inf values are not counted."""
        for k, v in stats.items():
            if math.isfinite(v):
                self.sums[k] = self.sums.get(k, 0.0) + v
        self.steps += 1

    def flush(self, progress: dict[str, float]) -> dict[str, float]:
        """Means of the window plus ``Timing/sec_per_step``, ``Timing/img_per_s``,
        ``Resources/peak_mem_gb`` and the given ``progress`` figures; every rank calls it
        (the means are all-reduced)."""
        dt = (time.perf_counter() - self.t0) / max(self.steps, 1)
        out = mean_over_ranks(self.sums, max(self.steps, 1))
        out.update(
            {
                "Timing/sec_per_step": dt,
                "Timing/img_per_s": self.images_per_step / dt,
                "Resources/peak_mem_gb": peak_memory_gb(),
                **progress,
            }
        )
        self._reset()
        return out
