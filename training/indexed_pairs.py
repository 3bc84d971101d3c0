"""Swap pairs drawn over the whole training split by sample index (``train.data.access:
indexed``, the default).

The shards are read by random access (``wids``' indexed tar reader: a tar header scan, then
memory-mapped reads), so a pair's two faces can come from any two shards:

* :class:`IdentityIndex` — the identity of every training sample, by global index, read once
  from the samples' ``json`` files;
* :class:`PairDraw` — this rank's batches of (target, source) indices for one epoch, drawn
  by the swapper's recipe (:class:`training.swappers.base.DataRecipeConfig`): targets
  uniform over images, or Identity Grouping's b identities uniform over all training
  identities (Facke §2.1.4);
* :class:`IndexedPairs` — a map-style dataset turning one drawn batch into tensors in a
  DataLoader worker; a sample that fails to decode drops its pairs and is counted.

The draw runs in the main process and is cheap, so a resumed run skips to its step
without reading a single image.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from training.swappers.base import DataRecipeConfig

#: Open shard readers kept per process (file handles and memory maps).
OPEN_SHARDS = 16


def _open_tar(url: str):
    from wids.wids import IndexedTarSamples  # indexes the tar's headers, then mmap reads

    return IndexedTarSamples(path=url)


def _shard_identities(url: str) -> list[str]:
    """Identity of each sample of one shard, in tar order (``""`` when unknown or when the
    sample has no readable ``json``: such a sample is never grouped)."""
    tar = _open_tar(url)
    names = list(tar.reader.names())
    out = []
    for files in tar.samples:
        meta = [i for i in files if names[i].endswith(".json")]
        try:
            out.append(json.loads(tar.reader.get_file(meta[0])[1].getvalue())["identity"] or "")
        except (IndexError, KeyError, ValueError):
            out.append("")
    tar.close()
    return out


@dataclass(frozen=True)
class IdentityIndex:
    """Every sample of a split by global index (shards concatenated in order).

    Attributes
    ----------
    shards : shard paths.
    starts : (len(shards) + 1,) int64, global index of each shard's first sample; last = N.
    identity : (N,) int32 identity id per sample; -1 = unknown.
    names : identity names (``names[identity[i]]``).
    """

    shards: tuple[str, ...]
    starts: np.ndarray
    identity: np.ndarray
    names: tuple[str, ...]

    @classmethod
    def build(cls, shards: list[str], progress: bool = False) -> IdentityIndex:
        """Read the identity of every sample of ``shards`` (one ``json`` read per sample;
        ``progress`` shows a bar). Raises ValueError when the shards hold no sample."""
        from tqdm import tqdm

        per_shard = [
            _shard_identities(u) for u in tqdm(shards, "identity index", disable=not progress)
        ]
        flat = [name for ids in per_shard for name in ids]
        if not flat:
            raise ValueError(f"the {len(shards)} training shards hold no sample")
        names = tuple(sorted({n for n in flat if n}))
        code = {n: i for i, n in enumerate(names)}
        identity = np.array([code.get(n, -1) for n in flat], dtype=np.int32)
        starts = np.concatenate([[0], np.cumsum([len(ids) for ids in per_shard])]).astype(np.int64)
        return cls(tuple(shards), starts, identity, names)

    def __len__(self) -> int:
        return len(self.identity)

    @cached_property
    def members(self) -> list[np.ndarray]:
        """Global indices of each identity's samples (sorted), indexed by identity id."""
        order = np.argsort(self.identity, kind="stable")
        known = order[self.identity[order] >= 0]
        bounds = np.searchsorted(self.identity[known], np.arange(len(self.names) + 1))
        return [known[bounds[k] : bounds[k + 1]] for k in range(len(self.names))]

    def locate(self, index: int) -> tuple[str, int]:
        """(shard path, index inside the shard) of global ``index``."""
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        return self.shards[shard], int(index - self.starts[shard])


@dataclass(frozen=True)
class PairSpec:
    """One drawn batch: global sample indices of targets and sources, and its kind.

    ``same_image[i]``: the source is the target image itself; ``kind``: ``mixed``, ``intra``
    or ``inter`` (as :class:`training.data.PairBatch`).
    """

    targets: tuple[int, ...]
    sources: tuple[int, ...]
    same_image: tuple[bool, ...]
    kind: str


class PairDraw(Sampler[PairSpec]):
    """This rank's ``steps_per_epoch`` batches of one epoch (a torch Sampler of
    :class:`PairSpec`), from ``start`` on.

    Draw units (images, or identities for Identity Grouping) come from seeded permutations of
    the whole split shared by all ranks, each rank taking every ``world``-th unit, so ranks
    draw disjoint targets; an epoch longer than the units runs through further
    permutations. Partners (other images of an identity, other identities) are drawn from
    the whole split with this rank's generator. Seeded by (seed, epoch, rank): the same
    batches on every run and after resume.

    Raises ValueError when the recipe needs identities the index does not have (Identity
    Grouping without identity labels).
    """

    def __init__(
        self,
        index: IdentityIndex,
        recipe: DataRecipeConfig,
        batch_size: int,
        steps_per_epoch: int,
        seed: int,
        epoch: int,
        rank: int = 0,
        world: int = 1,
        start: int = 0,
    ):
        self.index, self.recipe, self.batch_size = index, recipe, batch_size
        self.steps, self.seed, self.epoch, self.rank, self.world = (
            steps_per_epoch,
            seed,
            epoch,
            rank,
            world,
        )
        self.start = start
        if recipe.draw == "identities" and not index.names:
            raise ValueError(
                "data.draw=identities (Identity Grouping) needs identity labels; the training "
                "split has none (e.g. CelebA-HQ): use data.draw=images"
            )

    def __len__(self) -> int:
        return self.steps - self.start

    def _units(self) -> Iterator[int]:
        n = len(self.index.names) if self.recipe.draw == "identities" else len(self.index)
        for round_ in range(1 << 30):
            rng = np.random.default_rng([self.seed, self.epoch, round_])
            yield from rng.permutation(n)[self.rank :: self.world].tolist()

    def __iter__(self) -> Iterator[PairSpec]:
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, 1])
        units = self._units()
        for i in range(self.steps):
            spec = self._batch(rng, units, self.epoch * self.steps + i)
            if i >= self.start:
                yield spec

    def _batch(self, rng: np.random.Generator, units: Iterator[int], step: int) -> PairSpec:
        r = self.recipe
        kind = ("intra" if step % 2 == 0 else "inter") if r.pairing == "alternate" else "mixed"
        picked = [next(units) for _ in range(self.batch_size)]
        if r.draw == "identities":
            targets = [int(rng.choice(self.index.members[k])) for k in picked]
        else:
            targets = picked
        intra = [
            kind == "intra" or (kind == "mixed" and rng.random() < r.same_ratio) for _ in targets
        ]
        sources, same = [], []
        shift = int(rng.integers(1, self.batch_size))  # inter-ID partner within the batch
        for j, t in enumerate(targets):
            if intra[j]:
                s = self._same_person(rng, t) if r.intra == "same_identity" else t
            elif r.draw == "identities":  # a second image of another drawn identity
                s = self._same_person(rng, targets[(j + shift) % len(targets)])
            else:
                s = self._other_person(rng, t)
            sources.append(s)
            same.append(s == t)
        return PairSpec(tuple(targets), tuple(sources), tuple(same), kind)

    def _same_person(self, rng: np.random.Generator, t: int) -> int:
        """Another image of ``t``'s identity, uniform; ``t`` itself when it has none."""
        k = self.index.identity[t]
        if k < 0:
            return t
        others = self.index.members[k]
        others = others[others != t]
        return int(rng.choice(others)) if len(others) else t

    def _other_person(self, rng: np.random.Generator, t: int, tries: int = 16) -> int:
        """A uniform image whose identity differs from ``t``'s (unknown identities differ
        from all others); ``t`` itself when ``tries`` draws all hit its identity."""
        k = self.index.identity[t]
        for _ in range(tries):
            s = int(rng.integers(len(self.index)))
            if s != t and (k < 0 or self.index.identity[s] != k):
                return s
        return t


class ShardReader:
    """Raw samples by global index, with at most :data:`OPEN_SHARDS` shards open (least
    recently used closed first). Keys as :func:`infra.dataset_format.read_shard` gives them
    (``jpg``, ``id.npy``, ``json``, …, ``__key__``)."""

    def __init__(self, index: IdentityIndex):
        self.index = index
        self._open: OrderedDict[str, object] = OrderedDict()

    def __getitem__(self, i: int) -> dict:
        url, inner = self.index.locate(i)
        if url not in self._open:
            if len(self._open) >= OPEN_SHARDS:
                self._open.popitem(last=False)[1].close()
            self._open[url] = _open_tar(url)
        self._open.move_to_end(url)
        raw = self._open[url][inner]
        return {
            k.lstrip("."): v.getvalue() if hasattr(v, "getvalue") else v for k, v in raw.items()
        }

    def __getstate__(self) -> dict:  # workers open their own files
        return {"index": self.index, "_open": OrderedDict()}


class IndexedPairs(Dataset):
    """Map-style dataset over :class:`PairSpec` batches (DataLoader ``batch_size=None``).

    ``dataset[spec]`` → the batch dict of :class:`training.data.PairBatch` plus
    ``skipped``: samples of this batch that failed to decode (their pairs are dropped).
    Raises ValueError when fewer than 2 pairs of a batch remain (damaged shards).
    """

    def __init__(self, index: IdentityIndex, image_size: int, annotations: tuple[str, ...] = ()):
        self.index, self.image_size, self.annotations = index, image_size, tuple(annotations)
        self.reader = ShardReader(index)

    def __getitem__(self, spec: PairSpec) -> dict:
        from training.data import decode_sample, sample_annotations, stack_annotations

        decoded, bad = {}, 0
        targets, sources = set(spec.targets), set(spec.sources)
        for i in sorted(targets | sources):
            names = sample_annotations(self.annotations, i in targets, i in sources)
            try:
                decoded[i] = decode_sample(self.reader[i], self.image_size, names)
            except (KeyError, ValueError, OSError):
                bad += 1
        keep = [
            j
            for j, (t, s) in enumerate(zip(spec.targets, spec.sources, strict=True))
            if t in decoded and s in decoded
        ]
        if len(keep) < 2:
            raise ValueError(
                f"only {len(keep)} of {len(spec.targets)} pairs of a batch are readable: the "
                "training shards are damaged (run the prepare stage again)"
            )
        ident = self.index.identity
        tgt = [spec.targets[j] for j in keep]
        src = [spec.sources[j] for j in keep]
        same_image = torch.tensor([spec.same_image[j] for j in keep])
        same_id = torch.tensor(
            [
                t == s or (ident[t] >= 0 and ident[t] == ident[s])
                for t, s in zip(tgt, src, strict=True)
            ]
        )
        return {
            "target": torch.stack([decoded[t]["image"] for t in tgt]),
            "source": torch.stack([decoded[s]["image"] for s in src]),
            "z_id": torch.stack([decoded[s]["embedding"] for s in src]),
            "same_image": same_image,
            "same_identity": same_id,
            "kind": spec.kind,
            "annotations": stack_annotations(
                [decoded[t] for t in tgt], self.annotations, [decoded[s] for s in src]
            ),
            "skipped": bad,
        }


class IndexedPairSource:
    """Epochs of indexed pair batches for :class:`training.data.EpochLoader`.

    Parameters
    ----------
    index : the training split's :class:`IdentityIndex`.
    recipe : the swapper's data recipe; batch_size : pairs per batch;
    image_size : output side (px); steps_per_epoch : batches per epoch;
    seed, rank, world : seeding and the rank's share of the draw units;
    annotations : per-target annotations the swapper reads.
    """

    def __init__(
        self,
        index: IdentityIndex,
        recipe: DataRecipeConfig,
        batch_size: int,
        image_size: int,
        steps_per_epoch: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        annotations: tuple[str, ...] = (),
    ):
        self.dataset = IndexedPairs(index, image_size, annotations)
        self.recipe, self.batch_size, self.steps = recipe, batch_size, steps_per_epoch
        self.seed, self.rank, self.world = seed, rank, world

    def open_epoch(self, epoch: int, start: int, num_workers: int) -> Iterator[dict]:
        """Batches ``start``, ``start + 1``, … of ``epoch`` (earlier ones are drawn, not read)."""
        draw = PairDraw(
            self.dataset.index,
            self.recipe,
            self.batch_size,
            self.steps,
            self.seed,
            epoch,
            self.rank,
            self.world,
            start,
        )
        # Its own generator: a DataLoader otherwise draws its base seed from the global torch
        # RNG, so a resumed run (which opens it after restoring that RNG) would diverge.
        seed = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        loader = torch.utils.data.DataLoader(
            self.dataset, sampler=draw, batch_size=None, num_workers=num_workers, generator=seed
        )
        return iter(loader)
