"""The ``train`` stage: AEI-Net on the prepared shards, G and D as DeepSpeed engines.

One step = explicit phases: ``Gmain`` (generator objective, D frozen) then ``Dmain``
(hinge loss on real targets and detached swaps). Rank 0 tracks statistics, writes sample
grids and exports the generator; every rank saves its DeepSpeed checkpoint shards.
"""

from __future__ import annotations

import logging
import resource
import time
from pathlib import Path

import torch

from infra import distributed as dist
from infra.config import flatten, resolved_dict
from infra.identity import TorchIdentityEncoder
from infra.models import ModelStore
from infra.paths import ProjectPaths
from infra.tracking import CsvSink, MlflowSink, Tracker
from preprocessing.dataset_card import DatasetCard
from training.config import TrainConfig
from training.data import SkipCounter, make_loader, make_pairs
from training.engine import build_engine
from training.networks.aei_net import AEINet, AEINetConfig
from training.networks.discriminator import DiscriminatorConfig, MultiscaleDiscriminator
from training.phases import AEINetLoss
from training.samples import export_generator, save_grid

log = logging.getLogger(__name__)


def build_networks(cfg: TrainConfig, id_dim: int) -> tuple[AEINet, MultiscaleDiscriminator]:
    """Generator and discriminator from the config and the dataset's embedding size."""
    g = AEINet(
        AEINetConfig(
            image_size=cfg.image_size,
            id_dim=id_dim,
            base_channels=cfg.generator.base_channels,
            max_channels=cfg.generator.max_channels,
        )
    )
    d = MultiscaleDiscriminator(DiscriminatorConfig(**cfg.discriminator.model_dump()))
    return g, d


def identity_encoder_for(card: DatasetCard, store: ModelStore) -> TorchIdentityEncoder:
    """The differentiable twin of the ONNX that computed the dataset's embeddings.

    Raises ValueError when the registry's checksum or the model's dimension disagree with
    the dataset card (the identity loss would compare incompatible embeddings).
    """
    spec = store.spec(card.embedding.name)
    if spec.sha256 != card.embedding.sha256:
        raise ValueError(
            f"dataset embeddings were made by {card.embedding.name} "
            f"sha256 {card.embedding.sha256}, registry has {spec.sha256}: re-run prepare"
        )
    encoder = TorchIdentityEncoder(store, card.embedding.name)
    if encoder.dim != card.embedding.dim:
        raise ValueError(
            f"identity model gives {encoder.dim}-d, dataset has {card.embedding.dim}-d"
        )
    return encoder


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def train(cfg: TrainConfig, paths: ProjectPaths, out_dir: Path) -> dict:
    """Run training; returns a summary dict (final losses, timings, run id)."""
    dist.init_distributed()
    data_dir = paths.stage_dir("prepare")
    card = DatasetCard.load(data_dir)
    store = ModelStore(paths.models_dir)
    id_encoder = identity_encoder_for(card, store)

    torch.manual_seed(cfg.seed + dist.rank())
    g_net, d_net = build_networks(cfg, card.embedding.dim)
    g_engine = build_engine(
        g_net,
        cfg.optim.lr_g,
        cfg.optim.betas,
        cfg.optim.weight_decay,
        cfg.deepspeed,
        cfg.batch_size,
    )
    d_engine = build_engine(
        d_net,
        cfg.optim.lr_d,
        cfg.optim.betas,
        cfg.optim.weight_decay,
        cfg.deepspeed,
        cfg.batch_size,
    )
    loss = AEINetLoss(id_encoder, cfg.loss)

    skipped = SkipCounter()
    batches = make_loader(
        card.shard_paths(data_dir, "train"),
        cfg.image_size,
        cfg.batch_size,
        cfg.num_workers,
        cfg.seed + 1000 * dist.rank(),
        cfg.shuffle_buffer,
        skipped,
    )
    pair_rng = torch.Generator().manual_seed(cfg.seed + dist.rank())

    tracker = Tracker()
    if dist.is_main():
        tracker = Tracker(
            [
                MlflowSink(
                    paths, cfg.experiment, run_name=f"train-{time.strftime('%Y%m%d-%H%M%S')}"
                ),
                CsvSink(out_dir / "losses.csv"),
            ]
        )
        tracker.log_params(flatten(resolved_dict(cfg, paths, "train")))
        tracker.log_params(
            {
                "data.num_samples": card.num_samples,
                "data.crop_size": card.crop.size,
                "data.embedding": card.embedding.name,
                "data.id_dim": card.embedding.dim,
                "world_size": dist.world_size(),
            }
        )
    log.info(
        "training %d steps, batch %d x %d process(es), %d px, %d-d identity",
        cfg.steps,
        cfg.batch_size,
        dist.world_size(),
        cfg.image_size,
        card.embedding.dim,
    )

    t_start = time.perf_counter()
    window, window_t = {}, time.perf_counter()
    fixed = None
    for step in range(1, cfg.steps + 1):
        pairs = make_pairs(next(batches), cfg.same_ratio, pair_rng)
        if fixed is None:
            fixed = pairs
        g_stats, swap = loss.generator_phase(g_engine, d_engine, pairs)  # Gmain
        g_engine.step()
        d_stats = loss.discriminator_phase(d_engine, pairs.target, swap)  # Dmain
        d_engine.step()
        for k, v in {**g_stats, **d_stats}.items():
            window[k] = window.get(k, 0.0) + v
        if step % cfg.log_every == 0 or step == cfg.steps:
            n = cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every
            dt = (time.perf_counter() - window_t) / n
            stats = {k: v / n for k, v in window.items()}
            stats.update(
                {
                    "Timing/sec_per_step": dt,
                    "Timing/img_per_s": cfg.batch_size * dist.world_size() / dt,
                    "Resources/peak_rss_gb": _peak_rss_gb(),
                    "Progress/skipped_samples": skipped.count,
                }
            )
            tracker.log_metrics(stats, step)
            log.info(
                "step %d/%d  G %.3f (id %.3f att %.4f rec %.4f)  D %.3f  %.2f s/step",
                step,
                cfg.steps,
                stats["Loss/G/total"],
                stats["Loss/G/id"],
                stats["Loss/G/att"],
                stats["Loss/G/rec"],
                stats["Loss/D/total"],
                dt,
            )
            last = stats
            window, window_t = {}, time.perf_counter()
        if dist.is_main() and (step % cfg.sample_every == 0 or step == cfg.steps):
            tracker.log_artifact(
                _sample_grid(g_engine, fixed, out_dir / "samples" / f"step_{step:06d}.png"),
                "samples",
            )
    wall = time.perf_counter() - t_start

    g_engine.save_checkpoint(str(out_dir / "checkpoints" / "generator"), tag=f"step{cfg.steps}")
    d_engine.save_checkpoint(str(out_dir / "checkpoints" / "discriminator"), tag=f"step{cfg.steps}")
    summary = {"steps": cfg.steps, "wall_s": wall, **{k: v for k, v in last.items()}}
    if dist.is_main():
        meta = {
            "step": cfg.steps,
            "identity_model": card.embedding.name,
            "id_dim": card.embedding.dim,
            "crop_size": card.crop.size,
            "template": card.crop.template,
            "mlflow_run_id": tracker.run_id,
        }
        export_generator(g_engine.module, out_dir / "generator.pt", meta)
        tracker.log_summary({"Timing/train_wall_s": wall}, cfg.steps)
        summary["mlflow_run_id"] = tracker.run_id
    tracker.close()
    dist.barrier()
    return summary


@torch.no_grad()
def _sample_grid(g_engine, pairs, path: Path) -> Path:
    model = g_engine.module
    was_training = model.training
    model.eval()
    dtype = next(model.parameters()).dtype
    swap, _ = model(pairs.target.to(dtype), pairs.z_id.to(dtype))
    model.train(was_training)
    return save_grid([pairs.source, pairs.target, swap], path)
