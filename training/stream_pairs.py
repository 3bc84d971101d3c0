"""Swap pairs streamed from the prepared WebDataset shards (``train.data.access: stream``).

Pipeline per data-loader worker (open_clip's recipe, with identity-aware pairing):

1. shards split by node (rank) then by worker, then resampled with a seeded RNG
   (``seed``, ``epoch``, rank, worker) — a fixed number of steps makes an epoch;
2. ``interleave`` shards read at once, round-robin, so the identity-contiguous shards mix;
3. samples decoded (:func:`training.data.decode_sample`); a bad sample is skipped and
   counted, never fatal;
4. a buffer of samples from which pairs are drawn (:class:`PairSampler`).

Sequential reads suit storage without random access (object stores), at a price: a pair's
partners come from the buffer, so Identity Grouping and same-person pairs see only the few
identities buffered at once. ``access: indexed`` (:mod:`training.indexed_pairs`) draws over
the whole split.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from infra.dataset_format import read_shard
from training.config import DataConfig
from training.data import decode_sample, sample_annotations, stack_annotations
from training.swappers.base import DataRecipeConfig


def split_shards(shards: list[str], rank: int, world: int, worker: int, workers: int) -> list[str]:
    """Disjoint shard subset of one (rank, worker): by node first, then by worker.

    Raises ValueError when a subset would be empty (fewer shards than processes × workers).
    """
    by_node = shards[rank::world]
    mine = by_node[worker::workers]
    if not mine:
        raise ValueError(
            f"{len(shards)} training shards cannot feed {world} process(es) × {workers} "
            "worker(s): prepare smaller shards (prepare.shards.max_samples) or use fewer workers"
        )
    return mine


class PairSampler:
    """Draws swap pairs from a buffer of decoded samples (one per worker).

    Each buffered sample serves once as a target (then it is replaced from the stream); any
    buffered sample may serve as a source. Intra-identity sources are either the target
    itself (``same_image``) or another image of its identity (``same_identity``, falling back
    to the same image when the buffer holds no other); unknown identities never match.
    """

    def __init__(
        self,
        recipe: DataRecipeConfig,
        batch_size: int,
        rng: random.Random,
        annotations: tuple[str, ...] = (),
    ):
        self.cfg, self.batch_size, self.rng = recipe, batch_size, rng
        self.annotations = tuple(annotations)
        self.buffer: list[dict] = []
        self.n_batches = 0

    def _other_of(self, t: int, same: bool) -> int | None:
        ident = self.buffer[t]["identity"]
        pool = [
            i
            for i, s in enumerate(self.buffer)
            if i != t
            and (
                (s["identity"] == ident and ident) if same else s["identity"] != ident or not ident
            )
        ]
        return self.rng.choice(pool) if pool else None

    def _pair(self, t: int, intra: bool) -> tuple[int, bool]:
        """(source index, same image?) for target ``t``."""
        if intra:
            if self.cfg.intra == "same_identity":
                s = self._other_of(t, same=True)
                if s is not None:
                    return s, False
            return t, True
        s = self._other_of(t, same=False)
        return (s, False) if s is not None else (t, True)

    def _grouped_targets(self) -> list[int]:
        """Identity Grouping (Facke §2.1.4) within the buffer: b identities drawn uniformly
        among those with ≥ 2 buffered images, one target each."""
        by_id: dict[str, list[int]] = {}
        for i, s in enumerate(self.buffer):
            if s["identity"]:
                by_id.setdefault(s["identity"], []).append(i)
        ids = sorted(k for k, v in by_id.items() if len(v) >= 2)
        if not ids:
            return self.rng.sample(range(len(self.buffer)), self.batch_size)
        chosen = [self.rng.choice(ids) for _ in range(self.batch_size)]
        targets, used = [], set()
        for ident in chosen:
            free = [i for i in by_id[ident] if i not in used] or by_id[ident]
            t = self.rng.choice(free)
            used.add(t)
            targets.append(t)
        return targets

    def next_batch(self) -> dict:
        """One batch from a full buffer (the caller keeps it full)."""
        cfg = self.cfg
        if cfg.pairing == "alternate":
            kind = "intra" if self.n_batches % 2 == 0 else "inter"
        else:
            kind = "mixed"
        self.n_batches += 1
        if cfg.draw == "identities":
            targets = self._grouped_targets()
        else:
            targets = self.rng.sample(range(len(self.buffer)), self.batch_size)
        pairs = []
        for t in targets:
            intra = kind == "intra" or (kind == "mixed" and self.rng.random() < cfg.same_ratio)
            pairs.append((t, *self._pair(t, intra)))
        tgt = [self.buffer[t] for t, _, _ in pairs]
        src = [self.buffer[s] for _, s, _ in pairs]
        same_image = torch.tensor([same for _, _, same in pairs])
        same_id = torch.tensor(
            [
                same or (a["identity"] != "" and a["identity"] == b["identity"])
                for a, b, same in zip(tgt, src, same_image.tolist(), strict=True)
            ]
        )
        batch = {
            "target": torch.stack([s["image"] for s in tgt]),
            "source": torch.stack([s["image"] for s in src]),
            "z_id": torch.stack([s["embedding"] for s in src]),
            "same_image": same_image,
            "same_identity": same_id,
            "kind": kind,
            "annotations": stack_annotations(tgt, self.annotations, src),
        }
        for t in sorted({t for t, _, _ in pairs}, reverse=True):
            self.buffer.pop(t)
        return batch


class ShardPairStream(IterableDataset):
    """Infinite stream of pair batches (dicts) for one process; see the module docstring.

    Parameters
    ----------
    shards : training shard paths (``DatasetCard.shard_paths(folder, "train")``).
    cfg : streaming settings; recipe : the swapper's pairing recipe;
    batch_size : pairs per batch; image_size : output side (px);
    seed, rank, world : seeding and node split; annotations : per-target annotations the
    swapper reads (:data:`training.swappers.base.ANNOTATIONS`). Read through
    :meth:`open_epoch`.
    """

    def __init__(
        self,
        shards: list[str],
        cfg: DataConfig,
        recipe: DataRecipeConfig,
        batch_size: int,
        image_size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        annotations: tuple[str, ...] = (),
    ):
        if len(shards) < world:
            raise ValueError(f"{len(shards)} shards for {world} processes")
        self.shards, self.cfg, self.recipe, self.batch_size = list(shards), cfg, recipe, batch_size
        self.image_size, self.seed, self.rank, self.world = image_size, seed, rank, world
        self.annotations = tuple(annotations)
        # a buffered sample may become a target or a source: decode what either needs
        self.names = sample_annotations(self.annotations, True, True)
        self.epoch = 0

    def _samples(self, shards: list[str], rng: random.Random, skipped: list[int]) -> Iterator[dict]:
        def handler(exn: Exception) -> bool:
            skipped[0] += 1
            return True

        def open_shard() -> Iterator[dict]:
            return read_shard(rng.choice(shards), handler)

        streams = [open_shard() for _ in range(self.cfg.interleave)]
        while True:
            for i in range(len(streams)):
                try:
                    raw = next(streams[i])
                except StopIteration:
                    streams[i] = open_shard()
                    continue
                try:
                    yield decode_sample(raw, self.image_size, self.names)
                except Exception as exn:
                    handler(exn)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        mine = split_shards(self.shards, self.rank, self.world, worker, workers)
        rng = random.Random(hash((self.seed, self.epoch, self.rank, worker)) & 0xFFFFFFFF)
        skipped = [0]
        sampler = PairSampler(self.recipe, self.batch_size, rng, self.annotations)
        samples = self._samples(mine, rng, skipped)
        while True:
            while len(sampler.buffer) < max(self.cfg.buffer, self.batch_size + 1):
                sampler.buffer.append(next(samples))
            batch = sampler.next_batch()
            batch["skipped"], skipped[0] = skipped[0], 0  # bad samples since the last batch
            yield batch

    def open_epoch(self, epoch: int, start: int, num_workers: int) -> Iterator[dict]:
        """Batches ``start``, … of ``epoch``: workers re-seeded for the epoch; a mid-epoch
        start replays (reads and drops) the epoch's first ``start`` batches."""
        self.epoch = epoch
        # Its own generator: a DataLoader otherwise draws its base seed from the global torch
        # RNG, so a resumed run (which creates one after restoring that RNG) would diverge.
        seed = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        it = iter(
            torch.utils.data.DataLoader(
                self, batch_size=None, num_workers=num_workers, generator=seed
            )
        )
        for _ in range(start):
            next(it)
        return it
