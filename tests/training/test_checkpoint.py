"""Checkpoint bookkeeping without DeepSpeed: tags, the ``latest`` marker, pruning to
``keep``, the trainer state round trip, and RNG state restore."""

from __future__ import annotations

import random

import numpy as np
import torch

from training import checkpoint


class FakeEngine:
    """Writes a DeepSpeed-like ``<dir>/<tag>/`` folder, as ``save_checkpoint`` does."""

    def save_checkpoint(self, folder: str, tag: str) -> None:
        from pathlib import Path

        (Path(folder) / tag).mkdir(parents=True, exist_ok=True)
        (Path(folder) / tag / "state.pt").write_bytes(b"x")


def test_save_keeps_the_newest_and_marks_latest(tmp_path):
    g, d = FakeEngine(), FakeEngine()
    for step in (10, 20, 30, 40):
        tag = checkpoint.save(tmp_path, step, g, d, {"loader": {"step": step}}, keep=2)
    assert tag == "step00000040" and checkpoint.latest_tag(tmp_path) == tag
    for sub in ("generator", "discriminator"):
        assert sorted(p.name for p in (tmp_path / sub).iterdir()) == [
            "step00000030",
            "step00000040",
        ]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == [
        "step00000030.rank0.pt",
        "step00000040.rank0.pt",
    ]
    state = torch.load(tmp_path / "step00000040.rank0.pt", weights_only=False)
    assert state["step"] == 40 and state["loader"] == {"step": 40}


def test_no_latest_before_the_first_save(tmp_path):
    assert checkpoint.latest_tag(tmp_path) is None


def test_rng_state_round_trip():
    state = checkpoint.rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    checkpoint.set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
