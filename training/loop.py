"""The ``train`` stage: a swapper on the prepared shards, G and D as two DeepSpeed engines.

Each step runs explicit phases (as StyleGAN3's training loop):

* ``Gmain`` — the objective's generator loss with D frozen (called via ``d_engine.module``);
* ``Dmain`` — the discriminator loss on real targets and detached swaps;
* ``Dreg``  — the objective's discriminator regularisation every ``phases.d_reg_every``
  steps (lazy: the loss is scaled by the interval).

A phase whose loss is NaN/inf on any rank is skipped on every rank (no backward, no
optimizer step) and counted; ``max_bad_steps`` such steps in a row stop the run with an
error. Statistics are averaged over ranks and written by rank 0 to MLflow and
``losses.csv``. Checkpoints hold the whole run state; with ``checkpoint.resume: auto`` a
rerun continues from the latest one, with the same step counter, data position and curves.
"""

from __future__ import annotations

import logging
import resource
import time
from pathlib import Path

import torch

from infra import distributed as dist
from infra.config import flatten, resolved_dict
from infra.models import ModelStore
from infra.paths import ProjectPaths
from infra.tracking import CsvSink, MlflowSink, Tracker
from preprocessing.dataset_card import DatasetCard
from training import checkpoint
from training.config import TrainConfig
from training.data import EpochLoader, PairBatch, ShardPairStream
from training.ema import EMA
from training.engine import build_engine, set_requires_grad
from training.samples import save_grid
from training.swappers import (
    build_discriminator,
    build_generator,
    build_objective,
    export_generator,
)

log = logging.getLogger(__name__)


class BadStepsError(RuntimeError):
    """Too many consecutive steps with a non-finite loss."""


def _finite_everywhere(loss: torch.Tensor) -> bool:
    """True when the loss is finite on every rank (so all ranks skip or step together)."""
    ok = torch.tensor([float(torch.isfinite(loss.detach()).all())])
    if dist.world_size() > 1:
        torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
    return bool(ok.item())


def _mean_over_ranks(sums: dict[str, float], n: int) -> dict[str, float]:
    keys = sorted(sums)
    t = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
    if dist.world_size() > 1:
        torch.distributed.all_reduce(t)
    return {k: float(v) / (n * dist.world_size()) for k, v in zip(keys, t.tolist(), strict=True)}


def _peak_memory_gb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1024**3
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _step_phases(objective, g_engine, d_engine, batch: PairBatch, step: int, d_reg_every: int):
    """Run Gmain, Dmain and (every ``d_reg_every`` steps) Dreg; returns (stats, swap, bad)."""
    set_requires_grad(d_engine.module, False)
    g, swap = objective.generator_loss(g_engine, d_engine.module, batch)
    set_requires_grad(d_engine.module, True)
    bad = []
    if _finite_everywhere(g.loss):
        g_engine.backward(g.loss)
        g_engine.step()
    else:
        bad.append("Gmain")
    d = objective.discriminator_loss(d_engine, batch, swap)
    if _finite_everywhere(d.loss):
        d_engine.backward(d.loss)
        d_engine.step()
    else:
        bad.append("Dmain")
    stats = {**g.stats, **d.stats}
    if step % d_reg_every == 0:
        r = objective.d_regularization_loss(d_engine, batch, swap, d_reg_every)
        if r is not None:
            if _finite_everywhere(r.loss):
                d_engine.backward(r.loss)
                d_engine.step()
            else:
                bad.append("Dreg")
            stats.update(r.stats)
    return {k: float(v.detach()) for k, v in stats.items()}, swap, bad


def train(cfg: TrainConfig, paths: ProjectPaths, out_dir: Path) -> dict:
    """Run (or resume) training; returns a summary dict (last statistics, timings, run id)."""
    dist.init_distributed()
    rank, world = dist.rank(), dist.world_size()
    data_dir = paths.stage_dir("prepare")
    card = DatasetCard.load(data_dir)
    store = ModelStore(paths.models_dir)
    objective = build_objective(cfg, card, store)
    image_size = cfg.arch.image_size

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    g_engine = build_engine(build_generator(cfg, card.embedding.dim), cfg.generator, cfg.batch_size)
    d_engine = build_engine(build_discriminator(cfg), cfg.discriminator, cfg.batch_size)
    ema = EMA(g_engine.module, cfg.ema.half_life_steps) if cfg.ema.enabled else None

    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tag = checkpoint.latest_tag(ckpt_dir) if cfg.checkpoint.resume == "auto" else None
    state: dict = {}
    if tag:
        state = checkpoint.load(ckpt_dir, tag, g_engine, d_engine)
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        checkpoint.set_rng_state(state["rng"])
        log.info("resumed from %s (step %d)", tag, state["step"])
    else:
        torch.manual_seed(cfg.seed + 1 + rank)  # per-rank randomness from here on
    start = int(state.get("step", 0))

    stream = ShardPairStream(
        card.shard_paths(data_dir, "train"),
        cfg.data,
        cfg.batch_size,
        image_size,
        seed=cfg.seed,
        rank=rank,
        world=world,
    )
    loader = EpochLoader(
        stream,
        cfg.data.num_workers,
        cfg.data.steps_per_epoch,
        start_step=start,
        skipped_before=state.get("loader", {}).get("skipped_before", 0),
    )
    fixed = _fixed_pairs(card, data_dir, cfg, image_size)

    tracker = Tracker()
    if dist.is_main():
        sink = MlflowSink(
            paths,
            cfg.experiment,
            f"train-{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}",
            run_id=state.get("mlflow_run_id"),
        )
        tracker = Tracker(
            [sink, CsvSink(out_dir / "losses.csv", resume_step=start if tag else None)]
        )
        if not tag:
            tracker.set_tags({"stage": "train", "model": cfg.model, "width": cfg.width})
            tracker.log_params(flatten(resolved_dict(cfg, paths, "train")))
            tracker.log_params(
                {
                    "data.num_samples": card.num_samples,
                    "data.crop_size": card.crop.size,
                    "data.embedding": card.embedding.name,
                    "data.id_dim": card.embedding.dim,
                    "world_size": world,
                }
            )
    log.info(
        "training %s (%s) from step %d to %d: batch %d x %d process(es), %d px, %d-d identity",
        cfg.model,
        cfg.width,
        start,
        cfg.steps,
        cfg.batch_size,
        world,
        image_size,
        card.embedding.dim,
    )

    bad_in_row = int(state.get("bad_in_row", 0))
    bad_total = int(state.get("bad_total", 0))
    sums: dict[str, float] = {}
    n_window, t_window, t_start = 0, time.perf_counter(), time.perf_counter()
    last: dict[str, float] = {}
    for step in range(start + 1, cfg.steps + 1):
        batch = next(loader)
        stats, _, bad = _step_phases(
            objective, g_engine, d_engine, batch, step, cfg.phases.d_reg_every
        )
        if bad:
            bad_in_row += 1
            bad_total += 1
            log.warning(
                "step %d: non-finite loss in %s; step skipped (%d in a row)",
                step,
                ", ".join(bad),
                bad_in_row,
            )
            if bad_in_row >= cfg.max_bad_steps:
                raise BadStepsError(
                    f"{bad_in_row} consecutive steps with NaN/inf losses (last at step {step}, "
                    f"phases {bad}, stats {stats}); lower the learning rate, use fp32/bf16, or "
                    "check the data"
                )
        else:
            bad_in_row = 0
            if ema is not None:
                ema.update(g_engine.module)
        for k, v in stats.items():
            if torch.isfinite(torch.tensor(v)):
                sums[k] = sums.get(k, 0.0) + v
        n_window += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            dt = (time.perf_counter() - t_window) / n_window
            last = _mean_over_ranks(sums, n_window)
            last.update(
                {
                    "Timing/sec_per_step": dt,
                    "Timing/img_per_s": cfg.batch_size * world / dt,
                    "Resources/peak_mem_gb": _peak_memory_gb(),
                    "Progress/skipped_samples": float(loader.skipped),
                    "Progress/bad_steps": float(bad_total),
                }
            )
            tracker.log_metrics(last, step)
            log.info(
                "step %d/%d  G %.3f (id %.3f)  D %.3f  %.2f s/step",
                step,
                cfg.steps,
                last.get("Loss/G/total", float("nan")),
                last.get("Loss/G/id", float("nan")),
                last.get("Loss/D/total", float("nan")),
                dt,
            )
            sums, n_window, t_window = {}, 0, time.perf_counter()
        if dist.is_main() and (step % cfg.sample_every == 0 or step == cfg.steps):
            model = ema.shadow if ema is not None else g_engine.module
            path = _sample_grid(model, fixed, out_dir / "samples" / f"step_{step:06d}.png")
            tracker.log_artifact(path, "samples")
        every = cfg.checkpoint.every
        if step == cfg.steps or (every and step % every == 0):
            trainer_state = {
                "ema": ema.state_dict() if ema is not None else None,
                "rng": checkpoint.rng_state(),
                "loader": loader.state_dict(),
                "bad_in_row": bad_in_row,
                "bad_total": bad_total,
                "mlflow_run_id": tracker.run_id or state.get("mlflow_run_id"),
                "config": cfg.model_dump(mode="json"),
            }
            checkpoint.save(ckpt_dir, step, g_engine, d_engine, trainer_state, cfg.checkpoint.keep)

    wall = time.perf_counter() - t_start
    summary = {
        "steps": cfg.steps,
        "start_step": start,
        "wall_s": wall,
        "bad_steps": bad_total,
        "skipped_samples": loader.skipped,
        **last,
    }
    if dist.is_main():
        model = ema.shadow if ema is not None else g_engine.module
        meta = {
            "step": cfg.steps,
            "model": cfg.model,
            "ema": ema is not None,
            "identity_model": card.embedding.name,
            "id_dim": card.embedding.dim,
            "crop_size": card.crop.size,
            "template": card.crop.template,
            "mlflow_run_id": tracker.run_id,
        }
        export_generator(cfg.model, model, out_dir / "generator.pt", meta)
        tracker.log_summary({"Timing/train_wall_s": wall}, cfg.steps)
        summary["mlflow_run_id"] = tracker.run_id
    tracker.close()
    dist.barrier()
    return summary


def _fixed_pairs(
    card: DatasetCard, data_dir: Path, cfg: TrainConfig, size: int, n: int = 8
) -> PairBatch:
    """A fixed batch for sample grids: the first ``n`` samples of the first training shard,
    each swapped with the next one (the same on every run and after resume)."""
    from training.data import decode_sample, read_shard

    samples = []
    for raw in read_shard(card.shard_paths(data_dir, "train")[0]):
        samples.append(decode_sample(raw, size))
        if len(samples) == n:
            break
    images = torch.stack([s["image"] for s in samples])
    emb = torch.stack([s["embedding"] for s in samples])
    src = torch.roll(torch.arange(len(samples)), 1)
    same = torch.zeros(len(samples), dtype=torch.bool)
    return PairBatch(images, images[src], emb[src], same, same, "inter")


@torch.no_grad()
def _sample_grid(model, pairs: PairBatch, path: Path) -> Path:
    was_training = model.training
    model.eval()
    dtype = next(model.parameters()).dtype
    swap, _ = model(pairs.target.to(dtype), pairs.z_id.to(dtype))
    model.train(was_training)
    return save_grid([pairs.source, pairs.target, swap], path)
