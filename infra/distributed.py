"""Process-group helpers (rank 0 tracks and writes; every rank trains).

Distributed state is set up by :func:`init_distributed`, called by the training entry
point, never at import time. Launch with ``torchrun``/``deepspeed`` (they set ``RANK``,
``WORLD_SIZE``, …) or with plain ``python``, which becomes a world of one.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import torch.distributed as dist


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> None:
    """Initialise DeepSpeed's process group (gloo on the CPU, NCCL on GPUs).

    Under a launcher (``torchrun``, ``deepspeed``, a Ray Train worker) the launcher's
    ``RANK``/``MASTER_ADDR``/``MASTER_PORT`` rendezvous is used as is. Under plain
    ``python`` the process becomes a world of one that rendezvous through a file store in
    a fresh temporary directory: no TCP port is bound, so concurrent jobs (or a port
    taken between choosing and binding it) cannot collide. The ``MASTER_*`` variables are
    still filled in because DeepSpeed falls back to MPI discovery without them.
    """
    import deepspeed

    if dist.is_available() and dist.is_initialized():
        return
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        deepspeed.init_distributed(verbose=False)
        return
    os.environ.update(
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="1",
        MASTER_ADDR=os.environ.get("MASTER_ADDR", "127.0.0.1"),
        MASTER_PORT=os.environ.get("MASTER_PORT", str(_free_port())),
    )
    store = Path(tempfile.mkdtemp(prefix="fsp-dist-")) / "store"
    deepspeed.init_distributed(verbose=False, init_method=store.as_uri(), rank=0, world_size=1)


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
