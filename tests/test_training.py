"""Two DeepSpeed training steps on real shards (single process, gloo, CPU)."""

import math

import pandas as pd
import torch

from infra.config import build
from training.config import TrainConfig
from training.loop import train
from training.samples import load_generator


def test_two_step_training_smoke(prepared, tmp_path):
    paths, card, _, _, params = prepared
    cfg = build(TrainConfig, params["train"], "train")
    out_dir = tmp_path / "train"
    summary = train(cfg, paths, out_dir)

    assert summary["steps"] == 2
    for k in ("Loss/G/total", "Loss/G/id", "Loss/G/att", "Loss/D/total"):
        assert math.isfinite(summary[k]), k
    assert 0.0 <= summary["Loss/G/id"] <= 2.0
    losses = pd.read_csv(out_dir / "losses.csv")
    assert losses["step"].tolist() == [1, 2]
    assert (out_dir / "checkpoints" / "generator" / "step2").is_dir()
    assert (out_dir / "checkpoints" / "discriminator" / "step2").is_dir()
    assert (out_dir / "samples" / "step_000002.png").is_file()

    model, meta = load_generator(out_dir / "generator.pt")
    assert meta["id_dim"] == card.embedding.dim and meta["step"] == 2
    with torch.no_grad():
        y, _ = model(
            torch.zeros(1, 3, 32, 32), torch.nn.functional.normalize(torch.randn(1, 128), dim=1)
        )
    assert y.shape == (1, 3, 32, 32) and torch.isfinite(y).all()
