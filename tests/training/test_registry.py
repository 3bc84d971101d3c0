"""The swapper registry: every row builds, exports and loads back the same generator; the
README's model table is the registry's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.config import TrainConfig
from training.registry import (
    SWAPPERS,
    build_discriminator,
    build_generator,
    export_generator,
    load_generator,
    model_table_markdown,
)
from training.swappers.base import Objective, SwapperConfig

from .test_objectives import TINY

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", list(SWAPPERS))
def test_row_is_complete(name):
    row = SWAPPERS[name]
    assert issubclass(row.config, SwapperConfig) and issubclass(row.objective, Objective)
    assert row.objective.G_STATS[0] == "Loss/G/total"
    section = row.config()
    assert type(section.arch("debug")) is row.config.arch_class()
    assert type(section.arch("paper")) is row.config.arch_class()


@pytest.mark.parametrize("name", list(SWAPPERS))
def test_export_and_load_round_trip(tmp_path, name):
    cfg = TrainConfig.model_validate({"model": name, name: {"debug": TINY[name]}})
    torch.manual_seed(0)
    gen = build_generator(cfg, id_dim=8).eval()
    d = build_discriminator(cfg)
    assert isinstance(d, torch.nn.Module) if SWAPPERS[name].discriminator else d is None
    path = export_generator(name, gen, tmp_path / "generator.pt", {"step": 3})
    loaded, meta = load_generator(path)
    assert meta == {"step": 3} and type(loaded) is type(gen) and loaded.cfg == gen.cfg
    x, z = torch.rand(2, 3, 32, 32) * 2 - 1, torch.nn.functional.normalize(torch.randn(2, 8))
    extra = {
        "source": x.flip(0),
        "face_mask": torch.ones(2, 1, 32, 32),
        "regions": (torch.rand(2, 4, 32, 32) > 0.7).float(),
        "source_regions": (torch.rand(2, 4, 32, 32) > 0.7).float(),
    }
    args = (x, z, *(extra[n] for n in getattr(gen, "extra_inputs", ())))
    with torch.no_grad():
        assert torch.equal(loaded(*args)[0], gen(*args)[0])


def test_loads_a_generator_exported_before_the_registry(tmp_path):
    """Files written before the registry kept ``id_dim`` inside ``arch``."""
    cfg = TrainConfig.model_validate({"aei_net": {"debug": TINY["aei_net"]}})
    gen = build_generator(cfg, id_dim=8)
    arch = {k: v for k, v in gen.cfg.model_dump().items() if k != "discriminator"}
    old = {"model": "aei_net", "arch": {**arch, "id_dim": 8}, "state_dict": gen.state_dict()}
    torch.save({**old, "meta": {}}, tmp_path / "old.pt")
    loaded, _ = load_generator(tmp_path / "old.pt")
    assert loaded.id_dim == 8


def test_missing_generator_names_the_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="fsp train"):
        load_generator(tmp_path / "none.pt")


def test_readme_model_table_is_the_registry():
    assert model_table_markdown() in (ROOT / "README.md").read_text()
