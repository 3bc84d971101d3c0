"""Preemption: SIGTERM stops training at the next step boundary with a checkpoint.

Spot instances, SLURM time limits (``#SBATCH --signal=B:TERM@120``) and Kubernetes evictions
send SIGTERM before they kill. :class:`Preemption` turns the signal into a flag; at each step
boundary every rank learns whether any rank received it (one all-reduce of a single value),
so all ranks save the same step's checkpoint and stop together. The stage then exits with
:class:`PreemptedError` (the CLI prints one line and exits 143, 128 + SIGTERM, so neither
DVC nor a scheduler takes the partial run for a finished one); the rerun resumes.
"""

from __future__ import annotations

import logging
import signal
import threading

import torch
import torch.distributed as tdist

from infra import distributed as dist

log = logging.getLogger(__name__)

#: Exit status of a preempted ``fsp train`` (128 + SIGTERM, as a shell reports it).
EXIT_PREEMPTED = 128 + signal.SIGTERM


class PreemptedError(RuntimeError):
    """Training stopped on SIGTERM after saving the checkpoint of ``step``."""

    def __init__(self, step: int):
        super().__init__(
            f"training stopped by SIGTERM at step {step}: checkpoint saved, run the same "
            "command again to resume"
        )
        self.step = step


class Preemption:
    """Context manager catching SIGTERM for the block (the previous handler is restored).

    Installed only in the main thread (Python delivers signals there); elsewhere, e.g. inside
    a Ray Train worker's training thread, it never triggers and Ray's own failure handling
    applies.
    """

    def __init__(self) -> None:
        self.received = False
        self._previous = None

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        if not self.received:
            log.warning("SIGTERM received: stopping at the end of this step with a checkpoint")
        self.received = True

    def agreed(self, device: torch.device) -> bool:
        """Whether any rank received SIGTERM (collective: every rank calls it each step).

        ``device``: where the flag tensor lives (the engines' device; NCCL needs CUDA).
        """
        if dist.world_size() == 1:
            return self.received
        flag = torch.tensor([float(self.received)], device=device)
        tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)
        return bool(flag.item())
