"""Process-group helpers (rank 0 tracks and writes; every rank trains).

Distributed state is set up by :func:`init_distributed`, called by the training entry
point, never at import time. Launch with ``torchrun``/``deepspeed`` (they set ``RANK``,
``WORLD_SIZE``, …) or with plain ``python``, which becomes a world of one.
"""

from __future__ import annotations

import os
import socket

import torch.distributed as dist


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> None:
    """Initialise DeepSpeed's process group (gloo on the CPU, NCCL on GPUs).

    Under plain ``python`` the variables DeepSpeed needs are filled in for a single
    process on 127.0.0.1 (without them it falls back to MPI and fails).
    """
    import deepspeed

    if dist.is_available() and dist.is_initialized():
        return
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    deepspeed.init_distributed(verbose=False)


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
