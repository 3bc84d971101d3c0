"""Connecting to Ray: a local instance or a running cluster."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Use the Ray runtime that is already up, or start/connect one for the block.

    ``address`` (or ``RAY_ADDRESS``, which ``ray job submit`` sets) connects to a cluster;
    otherwise a local instance is started with ``num_cpus`` CPUs (default: all), no
    dashboard and no usage stats. A runtime this function started is shut down on exit.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        log.info("connecting to Ray cluster at %s", target)
        ray.init(address=target, log_to_driver=True)
    else:
        # address="local": never attach to some other `ray start` cluster on this machine
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
    try:
        yield
    finally:
        ray.shutdown()
