"""Checkpoints that hold a whole run: both DeepSpeed engines (weights and optimizer states),
the EMA generator, the data position, every rank's RNG states, the step counter, the
MLflow run id and the resolved config.

Layout under ``<train>/checkpoints``::

    generator/<tag>/…        DeepSpeed checkpoint of the generator engine
    discriminator/<tag>/…    DeepSpeed checkpoint of the discriminator engine (absent for a
                             swapper without a discriminator)
    <tag>.rank<r>.pt         trainer state of rank r (tensors and plain values only:
                             resume loads it with ``weights_only=True``)
    latest                   the newest complete tag (written last)
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from infra import distributed as dist


def rng_state() -> dict:
    """This process's torch, NumPy and Python RNG states as tensors and plain numbers, so
    the trainer state loads with ``torch.load(weights_only=True)`` (nothing unpickled)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }


def set_rng_state(state: dict) -> None:
    """Restore the states of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))


def tag_of(step: int) -> str:
    return f"step{step:08d}"


def latest_tag(folder: Path) -> str | None:
    """The newest complete checkpoint tag, or None."""
    marker = folder / "latest"
    return marker.read_text().strip() if marker.is_file() else None


def incomplete_tags(folder: Path) -> list[str]:
    """Tags newer than :func:`latest_tag` that something was written for: checkpoints whose
    save was cut off (``latest`` is written last, after every rank's files), oldest first."""
    latest = latest_tag(folder) or ""
    found = {p.name for sub in ("generator", "discriminator") for p in (folder / sub).glob("step*")}
    found |= {p.name.split(".")[0] for p in folder.glob("step*.rank*.pt*")}
    return sorted(t for t in found if t > latest)


def discard(folder: Path, tag: str) -> None:
    """Remove everything written for ``tag`` (engine folders, trainer states)."""
    for sub in ("generator", "discriminator"):
        shutil.rmtree(folder / sub / tag, ignore_errors=True)
    for f in folder.glob(f"{tag}.rank*.pt*"):
        f.unlink()


def save(folder: Path, step: int, g_engine, d_engine, trainer_state: dict, keep: int) -> str:
    """Save everything at ``step``; every rank calls this (``d_engine`` None: no
    discriminator). Returns the tag. The trainer state is written to a temporary name and
    renamed, and ``latest`` moves to the tag only after every rank has finished, so a save
    cut off at any point leaves the previous checkpoint as the latest complete one."""
    tag = tag_of(step)
    for name, engine in _engines(g_engine, d_engine):
        engine.save_checkpoint(str(folder / name), tag=tag)
    path = folder / f"{tag}.rank{dist.rank()}.pt"
    torch.save({**trainer_state, "step": step}, path.with_suffix(".pt.tmp"))
    os.replace(path.with_suffix(".pt.tmp"), path)
    dist.barrier()
    if dist.is_main():
        marker = folder / "latest.tmp"
        marker.write_text(tag)
        os.replace(marker, folder / "latest")
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
    path = folder / f"{tag}.rank{dist.rank()}.pt"
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path} holds pickled objects (a checkpoint of an older version of this code), "
            "which resume does not unpickle: start a new run (checkpoint.resume: never) or "
            f"move {folder} away"
        ) from e


def _engines(g_engine, d_engine) -> list[tuple[str, object]]:
    """(folder name, engine) of the engines a run has."""
    engines = [("generator", g_engine), ("discriminator", d_engine)]
    return [(name, e) for name, e in engines if e is not None]


def _prune(folder: Path, keep: int) -> None:
    tags = sorted({p.name.split(".")[0] for p in folder.glob("step*.rank*.pt")})
    for tag in tags[:-keep]:
        discard(folder, tag)
