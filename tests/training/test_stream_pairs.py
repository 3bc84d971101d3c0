"""The streamed pairs (``train.data.access: stream``): shard splitting, pairing modes within
the buffer, bad samples skipped and counted."""

import random

import pytest
import torch

from training.config import DataConfig
from training.data import EpochLoader
from training.stream_pairs import PairSampler, ShardPairStream, split_shards
from training.swappers.base import DataRecipeConfig


def test_split_by_node_then_worker():
    shards = [f"s{i}" for i in range(8)]
    assert split_shards(shards, rank=1, world=2, worker=1, workers=2) == ["s3", "s7"]
    parts = [split_shards(shards, r, 2, w, 2) for r in range(2) for w in range(2)]
    assert sorted(s for part in parts for s in part) == shards
    with pytest.raises(ValueError, match="cannot feed"):
        split_shards(shards[:3], rank=1, world=2, worker=1, workers=2)


def _buffer(n_ids=6, per_id=4):
    return [
        {
            "image": torch.full((3, 4, 4), float(i)),
            "embedding": torch.eye(8)[i % 8],
            "identity": f"p{i // per_id}",
            "key": f"k{i}",
        }
        for i in range(n_ids * per_id)
    ]


def test_mixed_pairs_follow_same_ratio_and_flags():
    cfg = DataRecipeConfig(pairing="mixed", same_ratio=0.3, intra="same_image")
    sampler = PairSampler(cfg, batch_size=8, rng=random.Random(0))
    same, total = 0, 0
    for _ in range(300):
        sampler.buffer = _buffer()
        b = sampler.next_batch()
        assert torch.equal(b["same_image"], (b["source"] == b["target"]).flatten(1).all(1))
        assert (b["same_identity"] >= b["same_image"]).all()
        same += int(b["same_image"].sum())
        total += 8
    assert 0.25 < same / total < 0.35


def test_alternating_intra_and_inter_batches_with_identity_grouping():
    cfg = DataRecipeConfig(draw="identities", pairing="alternate", intra="same_identity")
    sampler = PairSampler(cfg, batch_size=6, rng=random.Random(1))
    kinds = []
    for _ in range(6):
        sampler.buffer = _buffer()
        ids_before = [s["identity"] for s in sampler.buffer]
        b = sampler.next_batch()
        kinds.append(b["kind"])
        if b["kind"] == "intra":  # two different images of one identity per pair
            assert b["same_identity"].all() and not b["same_image"].any()
        else:
            assert not b["same_identity"].any()
        assert len(set(ids_before)) == 6
    assert kinds == ["intra", "inter"] * 3


def test_bad_samples_are_skipped_and_counted(tmp_path, make_sample, write_shard):
    good = [make_sample(i, f"p{i % 3}") for i in range(12)]
    bad = [make_sample(100 + i, "p0", good=False) for i in range(3)]
    shard = write_shard(tmp_path / "s.tar", good[:6] + bad + good[6:])
    cfg = DataConfig(buffer=8, interleave=1, steps_per_epoch=50, num_workers=0)
    stream = ShardPairStream([shard], cfg, DataRecipeConfig(), batch_size=4, image_size=8, seed=0)
    loader = EpochLoader(stream, num_workers=0, steps_per_epoch=50)
    for _ in range(20):
        b = next(loader)
        assert torch.isfinite(b.z_id).all() and b.target.shape == (4, 3, 8, 8)
    # every pass over the shard meets the 3 bad samples once
    assert loader.skipped > 0 and loader.skipped % 3 == 0
