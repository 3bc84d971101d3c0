"""Checkpoint bookkeeping without DeepSpeed: tags, the ``latest`` marker, pruning to
``keep``, the trainer state round trip, and RNG state restore."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from training import checkpoint


class FakeEngine:
    """Writes a DeepSpeed-like ``<dir>/<tag>/`` folder, as ``save_checkpoint`` does."""

    def save_checkpoint(self, folder: str, tag: str) -> None:
        (Path(folder) / tag).mkdir(parents=True, exist_ok=True)
        (Path(folder) / tag / "state.pt").write_bytes(b"x")

    def load_checkpoint(self, folder: str, tag: str):
        self.loaded = tag
        return (str(Path(folder) / tag), {}) if (Path(folder) / tag).is_dir() else (None, None)


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
    state = torch.load(tmp_path / "step00000040.rank0.pt", weights_only=True)
    assert state["step"] == 40 and state["loader"] == {"step": 40}


def test_no_latest_before_the_first_save(tmp_path):
    assert checkpoint.latest_tag(tmp_path) is None


def test_rng_state_round_trip():
    state = checkpoint.rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    checkpoint.set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_run_state_loads_without_unpickling_and_restores_the_rngs(tmp_path):
    g = FakeEngine()
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    np.random.randn()  # a cached Gaussian is part of NumPy's state
    state = {"rng": checkpoint.rng_state(), "loader": {"step": 7, "skipped": 1}, "bad_total": 0}
    want = (torch.rand(3), np.random.rand(3), np.random.randn(), random.random())
    checkpoint.save(tmp_path, 7, g, None, state, keep=2)
    loaded = checkpoint.load(tmp_path, "step00000007", g, None)  # weights_only=True inside
    checkpoint.set_rng_state(loaded["rng"])
    got = (torch.rand(3), np.random.rand(3), np.random.randn(), random.random())
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1])
    assert want[2:] == got[2:] and loaded["loader"] == {"step": 7, "skipped": 1}


def test_a_pickled_run_state_is_refused_with_a_clear_message(tmp_path):
    g = FakeEngine()
    checkpoint.save(tmp_path, 5, g, None, {}, keep=2)
    torch.save({"step": 5, "rng": np.random.get_state()}, tmp_path / "step00000005.rank0.pt")
    with pytest.raises(ValueError, match="does not unpickle"):
        checkpoint.load(tmp_path, "step00000005", g, None)


def test_resume_skips_a_checkpoint_cut_off_while_saving(tmp_path, caplog):
    from training.config import TrainConfig
    from training.train import _resume

    g, d = FakeEngine(), FakeEngine()
    for step in (10, 20):
        checkpoint.save(tmp_path, step, g, d, {"rng": checkpoint.rng_state()}, keep=3)
    # killed while saving step 30: the generator's files and a temporary trainer state exist,
    # the discriminator's and `latest` were never written
    g.save_checkpoint(str(tmp_path / "generator"), "step00000030")
    (tmp_path / "step00000030.rank0.pt.tmp").write_bytes(b"half")
    assert checkpoint.incomplete_tags(tmp_path) == ["step00000030"]
    with caplog.at_level(logging.WARNING, logger="training.train"):
        tag, state = _resume(TrainConfig(), tmp_path, g, d, None)
    assert tag == "step00000020" and state["step"] == 20 and g.loaded == d.loaded == tag
    assert (
        "step00000030 is incomplete" in caplog.text and "resuming from step00000020" in caplog.text
    )
    assert checkpoint.incomplete_tags(tmp_path) == []
    assert not (tmp_path / "generator" / "step00000030").exists()
