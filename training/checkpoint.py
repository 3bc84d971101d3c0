"""Checkpoints that hold a whole run: both DeepSpeed engines (weights and optimizer states),
the EMA generator, the data position, every rank's RNG states, the step counter, the
MLflow run id and the resolved config.

Layout under ``<train>/checkpoints``::

    generator/<tag>/…        DeepSpeed checkpoint of the generator engine
    discriminator/<tag>/…    DeepSpeed checkpoint of the discriminator engine (absent for a
                             swapper without a discriminator)
    <tag>.rank<r>.pt         trainer state of rank r
    latest                   the newest complete tag
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch

from infra import distributed as dist


def rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def tag_of(step: int) -> str:
    return f"step{step:08d}"


def latest_tag(folder: Path) -> str | None:
    """The newest complete checkpoint tag, or None."""
    marker = folder / "latest"
    return marker.read_text().strip() if marker.is_file() else None


def save(folder: Path, step: int, g_engine, d_engine, trainer_state: dict, keep: int) -> str:
    """Save everything at ``step``; every rank calls this (``d_engine`` None: no
    discriminator). Returns the tag."""
    tag = tag_of(step)
    for name, engine in _engines(g_engine, d_engine):
        engine.save_checkpoint(str(folder / name), tag=tag)
    torch.save({**trainer_state, "step": step}, folder / f"{tag}.rank{dist.rank()}.pt")
    dist.barrier()
    if dist.is_main():
        (folder / "latest").write_text(tag)
        _prune(folder, keep)
    dist.barrier()
    return tag


def load(folder: Path, tag: str, g_engine, d_engine) -> dict:
    """Restore both engines (the generator's only when ``d_engine`` is None) from ``tag``;
    returns this rank's trainer state."""
    for name, engine in _engines(g_engine, d_engine):
        path, _ = engine.load_checkpoint(str(folder / name), tag=tag)
        if path is None:
            raise FileNotFoundError(f"no {name} checkpoint {tag} in {folder}")
    return torch.load(folder / f"{tag}.rank{dist.rank()}.pt", weights_only=False)


def _engines(g_engine, d_engine) -> list[tuple[str, object]]:
    """(folder name, engine) of the engines a run has."""
    engines = [("generator", g_engine), ("discriminator", d_engine)]
    return [(name, e) for name, e in engines if e is not None]


def _prune(folder: Path, keep: int) -> None:
    tags = sorted({p.name.split(".")[0] for p in folder.glob("step*.rank*.pt")})
    for tag in tags[:-keep]:
        for sub in ("generator", "discriminator"):
            shutil.rmtree(folder / sub / tag, ignore_errors=True)
        for f in folder.glob(f"{tag}.rank*.pt"):
            f.unlink()
