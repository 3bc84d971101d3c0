"""The ``train`` stage: a swapper on the prepared shards, G and D as two DeepSpeed engines.

:func:`train` is the one entry point. It reads as its steps:

1. :func:`build_run` — dataset card, objective (with its frozen helpers), the two engines,
   EMA, resume from the latest checkpoint, the data loader;
2. :func:`open_tracker` — MLflow and ``losses.csv`` on rank 0 (nothing on other ranks);
3. per step :func:`run_phases` — explicit phases as in StyleGAN3's training loop:
   ``Gmain`` (the objective's generator loss, D frozen and called via ``d_engine.module``),
   ``Dmain`` (discriminator loss on real targets and detached swaps) and ``Dreg`` every
   ``phases.d_reg_every`` steps (lazy: the loss is scaled by the interval); a swapper
   without a discriminator (CVAE, Korshunova) runs ``Gmain`` only; a phase whose
   loss is NaN/inf on any rank is skipped on every rank and counted by :class:`BadSteps`;
4. :class:`~training.stats.StatsWindow` statistics every ``log_every`` steps, sample grids,
   :func:`save_checkpoint` every ``checkpoint.every`` steps and at the end;
5. :func:`export` — the EMA generator as ``generator.pt`` for evaluation.

With ``checkpoint.resume: auto`` a rerun continues from the latest checkpoint with the same
step counter, data position and curves.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from infra import distributed as dist
from infra.config import flatten, resolved_dict
from infra.dataset_format import DatasetCard, read_shard
from infra.models import ModelStore
from infra.paths import ProjectPaths
from infra.tracking import CsvSink, MlflowSink, Tracker
from training import checkpoint
from training.config import TrainConfig
from training.data import (
    EpochLoader,
    PairBatch,
    PairSource,
    decode_sample,
    sample_annotations,
    stack_annotations,
)
from training.ema import EMA, recompute_batch_norm
from training.engine import build_engine, eager_when_compiled, forward_of, set_requires_grad
from training.indexed_pairs import IdentityIndex, IndexedPairSource
from training.preemption import PreemptedError, Preemption
from training.registry import (
    build_discriminator,
    build_generator,
    build_objective,
    export_generator,
)
from training.samples import save_grid
from training.stats import StatsWindow
from training.stream_pairs import ShardPairStream
from training.swappers.base import Objective

log = logging.getLogger(__name__)


class BadStepsError(RuntimeError):
    """Too many consecutive steps with a non-finite loss."""


@dataclass
class BadSteps:
    """Counts steps with a skipped phase; ``limit`` of them in a row raise
    :class:`BadStepsError` naming the phases and statistics."""

    limit: int
    in_row: int = 0
    total: int = 0

    def record(self, step: int, bad: list[str], stats: dict[str, float]) -> bool:
        """Record one step; returns True when every phase stepped."""
        if not bad:
            self.in_row = 0
            return True
        self.in_row += 1
        self.total += 1
        log.warning(
            "step %d: non-finite loss in %s; step skipped (%d in a row)",
            step,
            ", ".join(bad),
            self.in_row,
        )
        if self.in_row >= self.limit:
            raise BadStepsError(
                f"{self.in_row} consecutive steps with NaN/inf losses (last at step {step}, "
                f"phases {bad}, stats {stats}); lower the learning rate, use fp32/bf16, or "
                "check the data"
            )
        return False


@dataclass
class Run:
    """Everything one training run holds between its steps."""

    cfg: TrainConfig
    card: DatasetCard
    objective: Objective
    g_engine: object
    d_engine: object | None
    ema: EMA | None
    loader: EpochLoader
    fixed: PairBatch
    calibration: list[PairBatch]
    ckpt_dir: Path
    resumed_from: str | None
    state: dict = field(default_factory=dict)

    @property
    def start(self) -> int:
        return int(self.state.get("step", 0))

    @property
    def generator(self) -> torch.nn.Module:
        """The generator to sample and export: the EMA copy, with batch-norm statistics
        recomputed for its averaged weights on the calibration faces, when EMA is on."""
        if self.ema is None:
            return self.g_engine.module
        if getattr(self.ema.shadow, "calibrate_batch_norm", True):
            batches = [
                (b.target, b.z_id, *extra_args(self.g_engine.module, b)) for b in self.calibration
            ]
            recompute_batch_norm(self.ema.shadow, batches)
        return self.ema.shadow


def finite_everywhere(loss: torch.Tensor) -> bool:
    """True when the loss is finite on every rank (so all ranks skip or step together)."""
    ok = torch.tensor([float(torch.isfinite(loss.detach()).all())])
    if dist.world_size() > 1:
        torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
    return bool(ok.item())


def _apply(engine, loss: torch.Tensor) -> bool:
    """Backward and optimizer step when the loss is finite on every rank."""
    if not finite_everywhere(loss):
        return False
    engine.backward(loss)
    engine.step()
    return True


def run_phases(
    objective: Objective, g_engine, d_engine, batch: PairBatch, step: int, d_reg_every: int
) -> tuple[dict[str, float], torch.Tensor, list[str]]:
    """Gmain, Dmain and (every ``d_reg_every`` steps) Dreg of one step; Gmain only when
    ``d_engine`` is None (a swapper without a discriminator).

    Returns (statistics as floats, the detached swap (B, 3, S, S), names of the phases
    skipped for a non-finite loss).

    The objectives call each engine through :class:`~training.engine.Forward` (its
    ``memory_format`` and ``autocast``; outputs back in fp32 for the losses); Dreg runs
    compiled modules eagerly (a gradient penalty's double backward).
    """
    g_fwd = forward_of(g_engine)
    if d_engine is None:
        g, swap = objective.generator_loss(g_fwd, None, batch)
        bad = [] if _apply(g_engine, g.loss) else ["Gmain"]
        return {k: float(v.detach()) for k, v in g.stats.items()}, swap, bad
    set_requires_grad(d_engine.module, False)
    g, swap = objective.generator_loss(g_fwd, forward_of(d_engine, d_engine.module), batch)
    set_requires_grad(d_engine.module, True)
    bad = [] if _apply(g_engine, g.loss) else ["Gmain"]
    d = objective.discriminator_loss(forward_of(d_engine), batch, swap)
    bad += [] if _apply(d_engine, d.loss) else ["Dmain"]
    stats = {**g.stats, **d.stats}
    if step % d_reg_every == 0:
        with eager_when_compiled(d_engine):
            r = objective.d_regularization_loss(forward_of(d_engine), batch, swap, d_reg_every)
        if r is not None:
            bad += [] if _apply(d_engine, r.loss) else ["Dreg"]
            stats.update(r.stats)
    return {k: float(v.detach()) for k, v in stats.items()}, swap, bad


def _resume(
    run_cfg: TrainConfig, ckpt_dir: Path, g_engine, d_engine, ema
) -> tuple[str | None, dict]:
    """Restore the latest checkpoint (``checkpoint.resume: auto``); returns (tag, state)."""
    tag = checkpoint.latest_tag(ckpt_dir) if run_cfg.checkpoint.resume == "auto" else None
    if run_cfg.checkpoint.resume == "auto" and (cut := checkpoint.incomplete_tags(ckpt_dir)):
        log.warning(
            "checkpoint %s is incomplete (the run stopped while saving it): removed; %s",
            ", ".join(cut),
            f"resuming from {tag}, the last complete one" if tag else "starting afresh",
        )
        dist.barrier()
        if dist.is_main():
            for t in cut:
                checkpoint.discard(ckpt_dir, t)
        dist.barrier()
    if not tag:
        torch.manual_seed(run_cfg.seed + 1 + dist.rank())  # per-rank randomness from here on
        return None, {}
    state = checkpoint.load(ckpt_dir, tag, g_engine, d_engine)
    if ema is not None and state.get("ema") is not None:
        ema.load_state_dict(state["ema"])
    checkpoint.set_rng_state(state["rng"])
    log.info("resumed from %s (step %d)", tag, state["step"])
    return tag, state


def make_loader(
    cfg: TrainConfig, card: DatasetCard, data_dir: Path, state: dict, workers: int | None = None
) -> EpochLoader:
    """This rank's pair loader (``train.data.access``), positioned at the resumed step of
    ``state`` (``{}`` for a fresh run); ``workers`` overrides ``train.data.num_workers``."""
    shards = card.shard_paths(data_dir, "train")
    size, rank, world = cfg.arch.image_size, dist.rank(), dist.world_size()
    source: PairSource
    notes = cfg.section.annotations
    if cfg.data.access == "indexed":
        index = IdentityIndex.build(shards, progress=dist.is_main())
        log.info("identity index: %d samples, %d identities", len(index), len(index.names))
        source = IndexedPairSource(
            *(index, cfg.recipe, cfg.batch_size, size, cfg.data.steps_per_epoch, cfg.seed),
            *(rank, world, notes),
        )
    else:
        source = ShardPairStream(
            shards, cfg.data, cfg.recipe, cfg.batch_size, size, cfg.seed, rank, world, notes
        )
    loader_state = state.get("loader", {})
    return EpochLoader(
        source,
        cfg.data.num_workers if workers is None else workers,
        cfg.data.steps_per_epoch,
        start_step=int(state.get("step", 0)),
        skipped_before=loader_state.get("skipped", loader_state.get("skipped_before", 0)),
    )


def build_run(cfg: TrainConfig, paths: ProjectPaths, card: DatasetCard, out_dir: Path) -> Run:
    """Objective, engines (identical initial weights on every rank), EMA, resume state and
    loader for the prepared dataset described by ``card``."""
    data_dir = paths.stage_dir("prepare")
    check_annotations(cfg, card)
    objective = build_objective(cfg, card, ModelStore(paths.models_dir), data_dir)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    adam = cfg.section.optimizer
    g_net, d_net = build_generator(cfg, card.embedding.dim), build_discriminator(cfg)
    if hasattr(g_net, "load_priors"):  # frozen pretrained parts (StyleGAN2, pSp, DDPM)
        g_net.load_priors(ModelStore(paths.models_dir))
    g_engine = build_engine(g_net, cfg.generator, adam.generator, cfg.batch_size)
    d_engine = (
        None
        if d_net is None
        else build_engine(d_net, cfg.discriminator, adam.discriminator, cfg.batch_size)
    )
    ema = EMA(g_engine.module, cfg.ema.half_life_steps) if cfg.ema.enabled else None
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tag, state = _resume(cfg, ckpt_dir, g_engine, d_engine, ema)
    loader = make_loader(cfg, card, data_dir, state)
    size, notes = cfg.arch.image_size, cfg.section.annotations
    fixed = first_pairs(card, data_dir, size, 8, notes)
    calib = (
        first_pairs(card, data_dir, size, cfg.ema.bn_calibration_samples, notes) if ema else None
    )
    calibration = split_pairs(calib, cfg.batch_size) if calib is not None else []
    return Run(
        cfg,
        card,
        objective,
        g_engine,
        d_engine,
        ema,
        loader,
        fixed,
        calibration,
        ckpt_dir,
        tag,
        state,
    )


def open_tracker(run: Run, paths: ProjectPaths, out_dir: Path) -> Tracker:
    """Rank 0: MLflow (the resumed run when there is one) and ``losses.csv`` continued after
    the checkpoint's step; params logged on a fresh run. Other ranks: a Tracker that does
    nothing."""
    if not dist.is_main():
        return Tracker()
    cfg = run.cfg
    name = f"train-{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    sink = MlflowSink(paths, name, run_id=run.state.get("mlflow_run_id"), unsent_dir=out_dir)
    resume_step = run.start if run.resumed_from else None
    tracker = Tracker([sink, CsvSink(out_dir / "losses.csv", resume_step=resume_step)])
    if not run.resumed_from:
        tracker.set_tags({"stage": "train", "model": cfg.model, "width": cfg.width})
        tracker.log_params(flatten(resolved_dict(cfg, paths, "train")))
        tracker.log_params(
            {
                "data.num_samples": run.card.num_samples,
                "data.crop_size": run.card.crop.size,
                "data.embedding": run.card.embedding.name,
                "data.id_dim": run.card.embedding.dim,
                "world_size": dist.world_size(),
            }
        )
    return tracker


def save_checkpoint(run: Run, step: int, bad: BadSteps, tracker: Tracker) -> None:
    """Both engines plus this rank's trainer state (EMA, RNG, loader position, bad-step
    counters, MLflow run id, config); every rank calls it."""
    trainer_state = {
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "rng": checkpoint.rng_state(),
        "loader": run.loader.state_dict(),
        "bad_in_row": bad.in_row,
        "bad_total": bad.total,
        "mlflow_run_id": tracker.run_id or run.state.get("mlflow_run_id"),
        "config": run.cfg.model_dump(mode="json"),
    }
    checkpoint.save(
        run.ckpt_dir, step, run.g_engine, run.d_engine, trainer_state, run.cfg.checkpoint.keep
    )


def export(run: Run, tracker: Tracker, out_dir: Path, wall_s: float) -> Path:
    """Rank 0: ``generator.pt`` (the EMA generator, plain state dict + architecture + the
    dataset facts evaluation needs) and the run's wall time."""
    card, cfg = run.card, run.cfg
    meta = {
        "step": cfg.steps,
        "model": cfg.model,
        "ema": run.ema is not None,
        "identity_model": card.embedding.name,
        "id_dim": card.embedding.dim,
        "crop_size": card.crop.size,
        "template": card.crop.template,
        "mlflow_run_id": tracker.run_id,
        **run.objective.export_meta(),
    }
    path = export_generator(cfg.model, run.generator, out_dir / "generator.pt", meta)
    tracker.log_summary({"Timing/train_wall_s": wall_s}, cfg.steps)
    return path


def _log_line(step: int, steps: int, last: dict[str, float]) -> None:
    """One progress line: G total, its identity term where the swapper has one (the DDPM's
    fine-tuning has none), D total where there is a discriminator, seconds per step."""
    nan = float("nan")
    ident = f" (id {last['Loss/G/id']:.3f})" if "Loss/G/id" in last else ""
    d = f"  D {last['Loss/D/total']:.3f}" if "Loss/D/total" in last else ""  # adversarial only
    log.info(
        "step %d/%d  G %.3f%s%s  %.2f s/step",
        step,
        steps,
        last.get("Loss/G/total", nan),
        ident,
        d,
        last["Timing/sec_per_step"],
    )


def train(cfg: TrainConfig, paths: ProjectPaths, out_dir: Path) -> dict:
    """Run (or resume) training; returns a summary (last statistics, timings, run id).

    Raises DatasetMissingError when prepare has not run, ModelError when a frozen helper's
    weights are missing, :class:`BadStepsError` after ``max_bad_steps`` bad steps, and
    :class:`~training.preemption.PreemptedError` after SIGTERM (checkpoint saved).
    """
    card = DatasetCard.load(paths.stage_dir("prepare"))  # before any work: prepare has run
    dist.init_distributed()
    run = build_run(cfg, paths, card, out_dir)
    tracker = open_tracker(run, paths, out_dir)
    log.info(
        "training %s (%s) from step %d to %d: batch %d x %d process(es), %d px, %d-d identity",
        *(cfg.model, cfg.width, run.start, cfg.steps, cfg.batch_size, dist.world_size()),
        *(cfg.arch.image_size, run.card.embedding.dim),
    )
    bad = BadSteps(cfg.max_bad_steps, run.state.get("bad_in_row", 0), run.state.get("bad_total", 0))
    t_start = time.perf_counter()
    with Preemption() as preemption:
        last = _train_steps(run, tracker, out_dir, bad, preemption)
    wall = time.perf_counter() - t_start
    summary = {"steps": cfg.steps, "start_step": run.start, "wall_s": wall, "bad_steps": bad.total}
    summary.update({"skipped_samples": run.loader.skipped, **last})
    if dist.is_main():
        export(run, tracker, out_dir, wall)
        summary["mlflow_run_id"] = tracker.run_id
    tracker.close()
    dist.barrier()
    return summary


def _train_steps(
    run: Run, tracker: Tracker, out_dir: Path, bad: BadSteps, preemption: Preemption
) -> dict[str, float]:
    """Steps ``run.start + 1`` … ``train.steps``; returns the last logged statistics.

    Raises :class:`PreemptedError` after saving a checkpoint when any rank got SIGTERM.
    """
    cfg = run.cfg
    window, last = StatsWindow(cfg.batch_size * dist.world_size()), {}
    for step in range(run.start + 1, cfg.steps + 1):
        batch = next(run.loader)
        args = (run.objective, run.g_engine, run.d_engine, batch, step, cfg.phases.d_reg_every)
        stats, _, skipped = run_phases(*args)
        if bad.record(step, skipped, stats) and run.ema is not None:
            run.ema.update(run.g_engine.module)
        window.add(stats)
        last = _log_step(run, tracker, window, bad, step) or last
        _sample_step(run, tracker, out_dir, step)
        if step == cfg.steps or (cfg.checkpoint.every and step % cfg.checkpoint.every == 0):
            save_checkpoint(run, step, bad, tracker)
        elif preemption.agreed(run.g_engine.device):
            save_checkpoint(run, step, bad, tracker)
            tracker.close()
            dist.barrier()
            raise PreemptedError(step)
    return last


def _log_step(
    run: Run, tracker: Tracker, window: StatsWindow, bad: BadSteps, step: int
) -> dict[str, float] | None:
    """Every ``log_every`` steps and at the end: the window's means to the tracker."""
    cfg = run.cfg
    if step % cfg.log_every and step != cfg.steps:
        return None
    progress = {
        "Progress/skipped_samples": float(run.loader.skipped),
        "Progress/bad_steps": float(bad.total),
    }
    last = window.flush(progress)
    tracker.log_metrics(last, step)
    _log_line(step, cfg.steps, last)
    return last


def _sample_step(run: Run, tracker: Tracker, out_dir: Path, step: int) -> None:
    """Rank 0, every ``sample_every`` steps and at the end: a source/target/swap grid."""
    cfg = run.cfg
    if not dist.is_main() or (step % cfg.sample_every and step != cfg.steps):
        return
    path = sample_grid(run.generator, run.fixed, out_dir / "samples" / f"step_{step:06d}.png")
    tracker.log_artifact(path, "samples")


def check_annotations(cfg: TrainConfig, card: DatasetCard) -> None:
    """ValueError before any work when the swapper needs a sample file the dataset's
    prepare run did not write (the FaceMesh landmarks of ``face_mask``, the region masks of
    ``regions``)."""
    files = card.annotations.get("files", {})
    if "face_mask" in cfg.section.annotations and files and not files.get("lmk468.npy"):
        raise ValueError(
            f"{cfg.model} restricts its output to a FaceMesh face mask, but the prepared "
            "samples have no lmk468.npy: run prepare with prepare.annotate.landmarks_468=true"
        )
    regions = {"regions", "source_regions"} & set(cfg.section.annotations)
    if regions and files and not files.get("regions.png"):
        raise ValueError(
            f"{cfg.model} reads RAFSwap's region masks, but the prepared samples have no "
            "regions.png: run prepare with a face parser (prepare.annotate.mask_backend)"
        )


def extra_args(model: torch.nn.Module, pairs: PairBatch) -> tuple[torch.Tensor, ...]:
    """The generator's inputs after ``(target, z_id)``, in the order of its
    ``extra_inputs`` (none by default): ``source`` the source images (B, 3, S, S) (RAFSwap,
    IDATT, DDPM-ILVR), or an annotation of the batch by name (``face_mask``, ``regions``,
    ``source_regions``; :data:`training.swappers.base.ANNOTATIONS`). KeyError naming the
    input when the batch lacks it."""
    out = []
    for name in getattr(model, "extra_inputs", ()):
        if name == "source":
            out.append(pairs.source)
        elif name in pairs.annotations:
            out.append(pairs.annotations[name])
        else:
            raise KeyError(f"the generator takes {name!r}, which the pair batch does not carry")
    return tuple(out)


def first_pairs(
    card: DatasetCard, data_dir: Path, size: int, n: int, annotations: tuple[str, ...] = ()
) -> PairBatch | None:
    """The first ``n`` samples of the training shards (in order), each swapped with the
    previous one: the same on every run and after resume, independent of the loader. Used
    for sample grids and batch-norm calibration. None when ``n`` is 0."""
    samples = []
    for url in card.shard_paths(data_dir, "train"):
        if len(samples) == n:
            break
        for raw in read_shard(url):
            if len(samples) == n:
                break
            samples.append(decode_sample(raw, size, sample_annotations(annotations, True, True)))
    if not samples:
        return None
    images = torch.stack([s["image"] for s in samples])
    emb = torch.stack([s["embedding"] for s in samples])
    src = torch.roll(torch.arange(len(samples)), 1)
    same = torch.zeros(len(samples), dtype=torch.bool)
    notes = stack_annotations(samples, annotations, [samples[i] for i in src.tolist()])
    return PairBatch(images, images[src], emb[src], same, same, "inter", notes)


def split_pairs(pairs: PairBatch, batch_size: int) -> list[PairBatch]:
    """``pairs`` in batches of ``batch_size`` (a last batch under 2 pairs is dropped: batch
    norm needs two samples)."""
    out = []
    for i in range(0, len(pairs.target), batch_size):
        part = slice(i, i + batch_size)
        if len(pairs.target[part]) >= 2:
            fields = (pairs.target, pairs.source, pairs.z_id, pairs.same_image, pairs.same_identity)
            notes = {k: v[part] for k, v in pairs.annotations.items()}
            out.append(PairBatch(*(f[part] for f in fields), pairs.kind, notes))
    return out


@torch.no_grad()
def sample_grid(model: torch.nn.Module, pairs: PairBatch, path: Path) -> Path:
    """Rows source / target / swap of ``pairs`` as one PNG at ``path``."""
    was_training = model.training
    model.eval()
    dtype = next(model.parameters()).dtype
    extra = (x.to(dtype) for x in extra_args(model, pairs))
    swap, _ = model(pairs.target.to(dtype), pairs.z_id.to(dtype), *extra)
    model.train(was_training)
    return save_grid([pairs.source, pairs.target, swap], path)
