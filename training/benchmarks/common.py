"""Shared set-up of the training benchmarks: config, data, objective, engines."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from infra.config import load_stage
from infra.dataset_format import DatasetCard
from infra.models import ModelStore
from training.config import TrainConfig
from training.data import EpochLoader
from training.engine import adam, build_engine
from training.registry import SWAPPERS, build_discriminator, build_generator, build_objective
from training.swappers.base import AdamConfig
from training.train import make_loader, run_phases


class BareEngine:
    """The DeepSpeed engine interface over a plain module and torch optimizer (forward,
    ``module``, ``backward``, ``step``), for side-by-side overhead measurements."""

    def __init__(self, module: torch.nn.Module, opt: AdamConfig):
        self.module = module
        self.opt = adam(module, opt)

    def __call__(self, *args):
        return self.module(*args)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> None:
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


MODELS = tuple(SWAPPERS)


def single_model_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every single-model benchmark takes: --params, --model, --set."""
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", default="aei_net", choices=MODELS)
    ap.add_argument("--set", action="append", default=[], help="train.* override")
    return ap


def setup(params: Path, model: str, overrides: list[str] | None = None):
    """(cfg, card, data_dir, store) for ``model`` from params.yaml and overrides."""
    cfg, paths = load_stage(
        TrainConfig, "train", params, [f"train.model={model}", *(overrides or [])]
    )
    data_dir = paths.stage_dir("prepare")
    return cfg, DatasetCard.load(data_dir), data_dir, ModelStore(paths.models_dir), paths


def loader_for(cfg: TrainConfig, card: DatasetCard, data_dir: Path, workers: int) -> EpochLoader:
    """The training loader of a fresh run with ``workers`` DataLoader workers."""
    return make_loader(cfg, card, data_dir, {}, workers)


def build_pair(cfg: TrainConfig, card: DatasetCard, deepspeed: bool):
    """Generator and discriminator engines (DeepSpeed or bare) with identical weights; the
    discriminator is None for a swapper without one."""
    torch.manual_seed(cfg.seed)
    g, d = build_generator(cfg, card.embedding.dim), build_discriminator(cfg)
    opt = cfg.section.optimizer

    def wrap(module, engine_cfg, adam_cfg):
        if module is None:
            return None
        if deepspeed:
            return build_engine(module, engine_cfg, adam_cfg, cfg.batch_size)
        return BareEngine(module, adam_cfg)

    return (
        wrap(g, cfg.generator, opt.generator),
        wrap(d, cfg.discriminator, opt.discriminator),
    )


def time_steps(objective, g, d, batches: list, d_reg_every: int) -> float:
    """Seconds per step over ``batches`` (already loaded, so no data time is counted)."""
    t0 = time.perf_counter()
    for i, b in enumerate(batches, start=1):
        run_phases(objective, g, d, b, i, d_reg_every)
    return (time.perf_counter() - t0) / len(batches)


def objective_for(cfg, card, store, data_dir: Path):
    """The chosen swapper's objective with its frozen helpers (as training builds it)."""
    return build_objective(cfg, card, store, data_dir)
