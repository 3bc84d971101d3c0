"""Indexed pairs (``train.data.access: indexed``): the identity index over shards, draws over
the whole split (Identity Grouping, same-person pairs), resume, ranks, bad samples."""

from collections import Counter
from itertools import islice

import numpy as np
import pytest
import torch

from training.config import DataConfig
from training.data import EpochLoader
from training.indexed_pairs import IdentityIndex, IndexedPairSource, PairDraw
from training.stream_pairs import ShardPairStream
from training.swappers.base import DataRecipeConfig

IDENTITY_GROUPING = DataRecipeConfig(draw="identities", pairing="alternate", intra="same_identity")
GHOST = DataRecipeConfig(draw="images", pairing="mixed", same_ratio=0.5, intra="same_identity")


@pytest.fixture
def one_identity_per_shard(tmp_path, make_sample, write_shard):
    """12 shards of 4 images, each shard one identity (as VGGFace2's identity-contiguous
    shards): sample i of shard k has global index 4k + i."""
    return [
        write_shard(tmp_path / f"s{k}.tar", [make_sample(4 * k + i, f"p{k}") for i in range(4)])
        for k in range(12)
    ]


def test_index_reads_identities_in_shard_order(tmp_path, make_sample, write_shard):
    a = write_shard(tmp_path / "a.tar", [make_sample(0, "x"), make_sample(1, "y")])
    b = write_shard(tmp_path / "b.tar", [make_sample(2, "x"), make_sample(3, "")])
    index = IdentityIndex.build([a, b])
    assert len(index) == 4 and index.names == ("x", "y")
    assert index.identity.tolist() == [0, 1, 0, -1]
    assert [m.tolist() for m in index.members] == [[0, 2], [1]]
    assert index.locate(0) == (a, 0) and index.locate(3) == (b, 1)


def _draws(index, recipe, batch_size=6, steps=40, **kw):
    return list(PairDraw(index, recipe, batch_size, steps, seed=0, epoch=0, **kw))


def test_identity_grouping_draws_identities_across_all_shards(one_identity_per_shard):
    index = IdentityIndex.build(one_identity_per_shard)
    specs = _draws(index, IDENTITY_GROUPING, steps=60)
    assert [s.kind for s in specs[:4]] == ["intra", "inter", "intra", "inter"]
    seen = Counter()
    for spec in specs:
        ids_t = index.identity[list(spec.targets)]
        ids_s = index.identity[list(spec.sources)]
        assert len(set(ids_t.tolist())) == 6  # b identities, each from its own shard
        if spec.kind == "intra":  # two different images of one identity
            assert (ids_t == ids_s).all() and not any(spec.same_image)
        else:
            assert (ids_t != ids_s).all()
        seen.update(ids_t.tolist())
    # uniform over all 12 identities: 60 batches × 6 = 30 draws each (permutation rounds)
    assert sorted(seen) == list(range(12)) and set(seen.values()) == {30}


def test_stream_buffer_cannot_group_over_the_split(one_identity_per_shard):
    """The contrast the index exists for: a buffer of 8 samples from one shard at a time
    holds 1–2 identities, so a batch cannot hold 6."""
    cfg = DataConfig(access="stream", buffer=8, interleave=1, num_workers=0)
    stream = ShardPairStream(one_identity_per_shard, cfg, IDENTITY_GROUPING, 6, 8, seed=0)
    for batch in islice(stream.open_epoch(0, 0, num_workers=0), 10):
        gray = (batch["target"][:, 0, 4, 4] + 1) / 2 * 255  # sample i has gray level 9 i
        identities = {round(g / 9) // 4 for g in gray.tolist()}
        assert len(identities) <= 3


def test_same_person_partner_comes_from_anywhere_in_the_split(tmp_path, make_sample, write_shard):
    # identity p{k} has 2 images in shard k and 2 in shard k + 6
    shards = [
        write_shard(tmp_path / f"s{k}.tar", [make_sample(4 * k + i, f"p{k % 6}") for i in range(2)])
        for k in range(12)
    ]
    index = IdentityIndex.build(shards)
    crossed = intra = 0
    for spec in _draws(index, GHOST, steps=50):
        for t, s, same in zip(spec.targets, spec.sources, spec.same_image, strict=True):
            if index.identity[t] == index.identity[s]:
                intra += 1
                assert not same and t != s
                crossed += index.locate(t)[0] != index.locate(s)[0]
            else:
                assert not same
    assert 0.4 < intra / 300 < 0.6 and crossed > intra / 3


def test_ranks_draw_disjoint_targets(one_identity_per_shard):
    index = IdentityIndex.build(one_identity_per_shard)
    recipe = DataRecipeConfig(same_ratio=0.0)
    per_rank = [
        {t for spec in _draws(index, recipe, 4, 6, rank=r, world=2) for t in spec.targets}
        for r in range(2)
    ]
    assert not per_rank[0] & per_rank[1] and len(per_rank[0] | per_rank[1]) == 48


def test_resume_mid_epoch_gives_the_same_batches(one_identity_per_shard):
    index = IdentityIndex.build(one_identity_per_shard)

    def loader(start):
        source = IndexedPairSource(index, IDENTITY_GROUPING, 4, 8, 5, seed=3)
        return EpochLoader(source, num_workers=1, steps_per_epoch=5, start_step=start)

    full = list(islice(loader(0), 9))
    resumed = list(islice(loader(3), 6))
    for a, b in zip(full[3:], resumed, strict=True):
        assert a.kind == b.kind and torch.equal(a.target, b.target) and torch.equal(a.z_id, b.z_id)
    assert resumed[0].kind == "inter"  # step 3: odd, whatever the start


def test_bad_sample_drops_its_pairs_and_is_counted(tmp_path, make_sample, write_shard):
    samples = [make_sample(i, f"p{i % 4}") for i in range(16)]
    samples[5] = make_sample(5, "p1", good=False)
    index = IdentityIndex.build([write_shard(tmp_path / "s.tar", samples)])
    source = IndexedPairSource(index, DataRecipeConfig(same_ratio=0.0), 8, 8, 50, seed=0)
    loader = EpochLoader(source, num_workers=0, steps_per_epoch=50)
    sizes = [len(next(loader).target) for _ in range(20)]
    assert loader.skipped > 0 and min(sizes) < 8 and max(sizes) == 8
    assert loader.state_dict() == {"step": 20, "skipped": loader.skipped}


def test_identity_grouping_without_labels_is_refused(tmp_path, make_sample, write_shard):
    index = IdentityIndex.build([write_shard(tmp_path / "s.tar", [make_sample(0, "")] * 4)])
    with pytest.raises(ValueError, match="identity labels"):
        PairDraw(index, IDENTITY_GROUPING, 2, 1, seed=0, epoch=0)


def test_draw_is_seeded():
    index = IdentityIndex(
        ("s",), np.array([0, 8]), np.arange(8, dtype=np.int32) // 2, tuple("abcd")
    )
    first, again = (_draws(index, GHOST, 4, 5) for _ in range(2))
    other = list(PairDraw(index, GHOST, 4, 5, seed=1, epoch=0))
    assert first == again and first != other


def test_opening_an_epoch_leaves_the_global_rng_alone(one_identity_per_shard):
    """A resumed run opens its loader after restoring the RNG: the loader must not draw from
    it, or training's random draws (e.g. SimSwap's gradient penalty) would shift."""
    index = IdentityIndex.build(one_identity_per_shard)
    source = IndexedPairSource(index, IDENTITY_GROUPING, 4, 8, 5, seed=0)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    next(source.open_epoch(0, 2, num_workers=0))
    assert torch.equal(torch.get_rng_state(), before)
