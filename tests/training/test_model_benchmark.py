"""The model benchmark's variants: names expand to engine settings that the config takes."""

from __future__ import annotations

import pytest

from training.benchmarks.models import VARIANT_SETTINGS, variant_overrides
from training.config import TrainConfig


def test_a_joined_variant_sets_both_engines():
    sets = variant_overrides("channels_last+bf16-autocast")
    assert sets == [
        "train.generator.memory_format=channels_last",
        "train.discriminator.memory_format=channels_last",
        "train.generator.autocast=bf16",
        "train.discriminator.autocast=bf16",
    ]
    assert variant_overrides("fp32") == []


@pytest.mark.parametrize("name", list(VARIANT_SETTINGS))
def test_every_variant_is_a_valid_engine_config(name):
    section = dict(VARIANT_SETTINGS[name])
    cfg = TrainConfig.model_validate({"generator": section, "discriminator": section})
    for key, value in section.items():
        assert str(getattr(cfg.generator, key)).lower() == value


def test_an_unknown_variant_names_the_known_ones():
    with pytest.raises(ValueError, match="known: fp32, channels_last"):
        variant_overrides("fp32+nhwc")
