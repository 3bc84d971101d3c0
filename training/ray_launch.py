"""``fsp train`` as a Ray Train ``TorchTrainer`` (``train.ray.workers`` > 0).

Ray places ``workers`` training processes on the cluster's nodes (``cpus_per_worker``,
``gpus_per_worker`` each), sets up their process group (gloo on CPUs, NCCL on GPUs) and runs
:func:`training.train.train` in each — the same function ``torchrun`` workers run, so every
worker builds the two DeepSpeed engines as it would under ``torchrun``
(:func:`infra.distributed.init_distributed` adopts Ray's process group).

Checkpoints are the trainer's own (``<output_dir>/train/checkpoints``, which must be on
storage every node sees). When a worker or its node dies, Ray stops the group and starts it
again (``FailureConfig(max_failures)``); the new workers resume from the latest checkpoint
with the step counter, data position and loss curve (``checkpoint.resume: auto``). Ray's own
run folder (results, error logs) is ``<output_dir>/train/ray``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from infra.paths import ProjectPaths
from training.config import TrainConfig

log = logging.getLogger(__name__)


def _worker(config: dict) -> None:
    """Per-worker function: rebuild the config and train (Ray has set up the process group)."""
    import ray
    import ray.train

    from training.train import train

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.INFO)  # Ray may have set the worker's root logger up
    rank, node = ray.train.get_context().get_world_rank(), ray.get_runtime_context().get_node_id()
    log.info("Ray Train worker rank %d on node %s", rank, node)
    cfg = TrainConfig.model_validate(config["cfg"])
    summary = train(cfg, config["paths"], Path(config["out_dir"]))
    log.info("worker finished: %s", {k: summary[k] for k in ("steps", "start_step")})


def train_on_ray(cfg: TrainConfig, paths: ProjectPaths, out_dir: Path) -> None:
    """Run training on the Ray cluster of ``RAY_ADDRESS`` (``ray job submit`` sets it) or on a
    local Ray instance.

    Raises RuntimeError naming the worker error when training fails more than
    ``train.ray.max_failures`` times.
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from infra.raycluster import ray_session

    r = cfg.ray
    gpu = r.gpus_per_worker > 0
    resources = {"CPU": r.cpus_per_worker, **({"GPU": r.gpus_per_worker} if gpu else {})}
    trainer = TorchTrainer(
        _worker,
        train_loop_config={
            "cfg": cfg.model_dump(mode="json"),
            "paths": paths,
            "out_dir": str(out_dir),
        },
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=r.workers, use_gpu=gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name="train",
            storage_path=str((out_dir / "ray").resolve()),
            failure_config=FailureConfig(max_failures=r.max_failures),
        ),
    )
    log.info("Ray Train: %d workers × %s", r.workers, resources)
    with ray_session():
        result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"training on Ray failed: {result.error}")
