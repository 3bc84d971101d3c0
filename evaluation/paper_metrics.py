"""The ``paper`` metric group: identity retrieval, pose error and expression error computed with
the networks the face-swap papers report them with (CosFace, Hopenet, Deep3DFaceRecon).

What the sources say
--------------------
* MAttFace (seed 004 §4.2 "Metrics", Table 1) states the protocol the field shares: "CosFace
  [32] is used during index evaluation to prevent unfair factors caused by fitting network
  bias"; ID retrieval "matches the closest face on the basis of the similarity measure, and
  calculates the ratio of the number of matching successes to the total data pairs"; "Pose
  error and expression error require face pose [30] and expression estimation [8] expert
  networks to extract pose and expression vector representations, and use L2 distance to
  measure the corresponding attributes between the generated face and the target face"
  ([30] Ruiz et al. 2018 = Hopenet, [8] Deng et al. 2019 = Deep3DFaceRecon).
* GHOST (seed 001 §IV, Tables I–II): "The metrics list was gathered from FaceShifter, SimSwap
  and HifiFace articles"; Table I reports "Identity retrieval" (percent) before blending and
  Table II after blending on the FaceForensics++ videos, with pose and expression measured
  by RingNet (``Pose_ringnet``, ``Exp_ringnet``), not by Hopenet/Deep3DFaceRecon.
* Facke (seed 002 §3.2, Table 1) "follow[s] [4] (SimSwap)" with an "ID Retrieval" that "is
  the L2 distance between normalized identity vector[s] extracted by a face recognition model
  [16] other than Arcface" ([16] = MuggleWang/CosFace_pytorch): a distance, lower is better.
* The FaceShifter thesis (seed 003) reports no quantitative metric (§5.2 compares images
  only, Figs. 5.1–5.2). The FaceShifter paper itself (Li et al. 2019) is not among the seeds;
  the protocol above is what seed 004 attributes to the field.

What is computed here (cross-identity pairs only, as the papers' swaps)
-----------------------------------------------------------------------
* ``identity``: CosFace sphere20 vectors (:meth:`Sphere20.embed`, face + mirror, L2-
  normalised); top-1 by cosine similarity, correct when the nearest face has the source's
  identity, as a fraction in [0, 1] (the papers print percent). Two galleries: every held-out
  face (``id_retrieval_top1``; the rule of the ``swap`` group and of
  :mod:`evaluation.protocol`, which reads FaceShifter as retrieving among all original
  frames) and the source faces only (``id_retrieval_top1_sources``); each with its gallery
  size and chance level (the source identity's share of the gallery). Also the mean cosine
  and Facke's mean L2 distance of the normalised vectors of swap and source.
* ``pose``: Hopenet (yaw, pitch, roll) of swap and target; ``pose_error_deg`` = mean L2 norm
  of the difference, degrees.
* ``expression``: Deep3DFaceRecon's 64 expression coefficients of swap and target;
  ``expression_error`` = mean L2 norm of the difference (coefficient units).

Project choices where the sources are silent: references (targets, sources, gallery) are the
aligned crops resized to the generator resolution, so real and generated faces carry the same
resampling; every network reads the ArcFace-aligned crop (see :mod:`infra.paper_models`
for how each input is cut from it); metrics whose weights are absent are reported as not
computed with the reason (file, URL), as FID is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from evaluation.metrics import cosine_rows, top1_retrieval
from evaluation.protocol import EvalFace, Protocol, resize
from infra.models import ModelChecksumError, ModelError, ModelStore
from infra.paper_models import load_cosface, load_hopenet, load_recon

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PaperModel:
    """One network of the group.

    Attributes
    ----------
    metric : key of its sub-dict in the group's result (``identity``, ``pose``,
        ``expression``).
    name : registry name (:data:`infra.models.REGISTRY`).
    load : ``path -> nn.Module`` (:mod:`infra.paper_models` loaders).
    values : the metric names it fills (None while not computed).
    """

    metric: str
    name: str
    load: Callable[[Path], nn.Module]
    values: tuple[str, ...]


PAPER_MODELS = (
    PaperModel(
        "identity",
        "cosface_sphere20",
        load_cosface,
        (
            "id_retrieval_top1",
            "id_retrieval_chance",
            "gallery_faces",
            "id_retrieval_top1_sources",
            "id_retrieval_chance_sources",
            "source_faces",
            "id_cosine",
            "id_l2_distance",
        ),
    ),
    PaperModel("pose", "hopenet_robust_alpha1", load_hopenet, ("pose_error_deg",)),
    PaperModel("expression", "deep3dfacerecon_resnet50", load_recon, ("expression_error",)),
)


def load_or_reason(store: ModelStore, model: PaperModel) -> tuple[nn.Module | None, str]:
    """(network, "") or (None, why not): the missing or wrong file relative to the models
    directory (no machine path, ``metrics.json`` stays portable) and its download URL.

    Raises
    ------
    RuntimeError, TypeError : the file is present but not in the published layout
        (:func:`infra.paper_models.load_published`); a wrong file is an error, not a
        silently skipped metric.
    """
    spec = store.spec(model.name)
    where = f"{spec.file} in the models directory"
    try:
        return model.load(store.path(model.name)), ""
    except ModelChecksumError:
        return None, f"wrong file {where} (checksum differs; download {spec.url})"
    except ModelError:
        return None, f"missing {where} (download {spec.url})"


def _batched(fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch: int):
    """``fn`` over (N, S, S, 3) ``images`` in chunks of ``batch``; rows concatenated."""
    return np.concatenate([fn(images[i : i + batch]) for i in range(0, len(images), batch)])


def _share(ids: np.ndarray, gallery_ids: np.ndarray) -> np.ndarray:
    """(P,) share of each of ``ids`` among ``gallery_ids``: top-1 chance level."""
    names, counts = np.unique(gallery_ids, return_counts=True)
    share = dict(zip(names.tolist(), (counts / len(gallery_ids)).tolist(), strict=True))
    return np.array([share.get(i, 0.0) for i in ids])


@dataclass(frozen=True)
class _Refs:
    """Identities (F,) of the held-out faces, source face indices and the batch size."""

    ids: np.ndarray
    sources: list[int]
    batch: int


def identity_scores(
    net: nn.Module, refs: np.ndarray, swaps: np.ndarray, pairs: pd.DataFrame, ctx: _Refs
) -> tuple[dict, pd.DataFrame]:
    """CosFace identity retrieval of the swaps.

    Parameters
    ----------
    net : :class:`~infra.paper_models.Sphere20` (``embed``: (N, S, S, 3) uint8 →
        (N, D) unit rows).
    refs : (F, S, S, 3) uint8 every held-out face at the generator resolution.
    swaps : (C, S, S, 3) uint8, one per row of ``pairs``.
    pairs : cross rows with ``target`` and ``source`` face indices.
    ctx : identities of the faces, source face indices, batch size.

    Returns
    -------
    (summary, per-pair table): fractions in [0, 1] ``id_retrieval_top1`` (gallery: every
    face) and ``id_retrieval_top1_sources`` (gallery: the source faces) with their chance
    levels and gallery sizes, mean ``id_cosine`` in [-1, 1] and ``id_l2_distance`` in [0, 2]
    to the source face; the table holds the retrieved identities and both distances.
    """
    gallery = _batched(net.embed, refs, ctx.batch)  # (F, D)
    query = _batched(net.embed, swaps, ctx.batch)  # (C, D)
    src = pairs["source"].to_numpy()
    truth = ctx.ids[src]
    src_ids = ctx.ids[ctx.sources]
    hit_all = ctx.ids[top1_retrieval(query, gallery, ctx.ids)]
    hit_src = src_ids[top1_retrieval(query, gallery[ctx.sources], src_ids)]
    cos = cosine_rows(query, gallery[src])
    l2 = np.linalg.norm(query.astype(np.float64) - gallery[src], axis=1)
    summary = {
        "id_retrieval_top1": float((hit_all == truth).mean()),
        "id_retrieval_chance": float(_share(truth, ctx.ids).mean()),
        "gallery_faces": len(ctx.ids),
        "id_retrieval_top1_sources": float((hit_src == truth).mean()),
        "id_retrieval_chance_sources": float(_share(truth, src_ids).mean()),
        "source_faces": len(ctx.sources),
        "id_cosine": float(cos.mean()),
        "id_l2_distance": float(l2.mean()),
    }
    table = pd.DataFrame(
        {
            "retrieved_identity": hit_all,
            "retrieved_identity_sources": hit_src,
            "id_cosine": cos,
            "id_l2_distance": l2,
        },
        index=pairs.index,
    )
    return summary, table


def attribute_error(
    fn: Callable[[np.ndarray], np.ndarray],
    refs: np.ndarray,
    swaps: np.ndarray,
    pairs: pd.DataFrame,
    batch: int,
) -> np.ndarray:
    """(C,) L2 norm of ``fn(swap) − fn(target)`` per pair.

    Parameters
    ----------
    fn : (N, S, S, 3) uint8 → (N, K) attribute vectors (Hopenet degrees, Deep3DFaceRecon
        expression coefficients).
    refs : (F, S, S, 3) uint8 every held-out face (only the targets of ``pairs`` are run).
    swaps : (C, S, S, 3) uint8, one per row of ``pairs``; ``batch`` : images per pass.

    Returns
    -------
    (C,) float64 ≥ 0; exactly 0 where a swap equals its target.
    """
    targets = pairs["target"].to_numpy()
    unique, inverse = np.unique(targets, return_inverse=True)
    target_vec = _batched(fn, refs[unique], batch)[inverse]  # (C, K)
    swap_vec = _batched(fn, swaps, batch)  # (C, K)
    return np.linalg.norm(swap_vec - target_vec, axis=1)


def _scores(
    model: PaperModel,
    net: nn.Module,
    refs: np.ndarray,
    swaps: np.ndarray,
    pairs: pd.DataFrame,
    ctx: _Refs,
) -> tuple[dict, pd.DataFrame]:
    """The summary values and per-pair columns of one computed network."""
    if model.metric == "identity":
        return identity_scores(net, refs, swaps, pairs, ctx)
    fn = net.angles if model.metric == "pose" else net.expression
    err = attribute_error(fn, refs, swaps, pairs, ctx.batch)
    key = model.values[0]
    return {key: float(err.mean())}, pd.DataFrame({key: err}, index=pairs.index)


def paper_metrics(
    faces: list[EvalFace],
    proto: Protocol,
    swaps: np.ndarray,
    size: int,
    store: ModelStore,
    batch_size: int = 16,
) -> tuple[dict, pd.DataFrame]:
    """The ``paper`` group: each network whose weights are in the models directory.

    Parameters
    ----------
    faces : held-out faces (crops (C, C, 3) uint8 RGB, identities).
    proto : sources, targets and the pairs (``cross`` column); only cross pairs are scored.
    swaps : (P, S, S, 3) uint8 RGB, one per row of ``proto.pairs``.
    size : generator resolution S (references are resized to it).
    store : model store (``cosface_sphere20``, ``hopenet_robust_alpha1``,
        ``deep3dfacerecon_resnet50``).
    batch_size : images per forward pass.

    Returns
    -------
    (summary, per-pair table). ``summary``: ``cross_pairs`` and, for ``identity``, ``pose``
    and ``expression``, a dict with ``model`` (registry name), ``computed`` (bool),
    ``reason`` ("" or "missing <file> in the models directory (download <url>)") and the
    values of :data:`PAPER_MODELS` (None when not computed; see :func:`identity_scores` and
    :func:`attribute_error`). The table is indexed by the cross rows of ``proto.pairs``,
    one ``paper_``-prefixed column per computed value.

    Raises
    ------
    RuntimeError, TypeError : a weights file is present but not in the published layout.
    """
    pairs = proto.pairs[proto.pairs["cross"]]
    cross_swaps = swaps[pairs.index.to_numpy()]
    refs = resize(np.stack([f.crop for f in faces]), size)
    ctx = _Refs(np.array([f.identity for f in faces]), list(proto.sources), batch_size)
    summary: dict = {"cross_pairs": len(pairs)}
    tables = []
    for model in PAPER_MODELS:
        net, reason = load_or_reason(store, model)
        entry = {"model": model.name, "computed": net is not None, "reason": reason}
        entry |= dict.fromkeys(model.values)
        if net is None:
            log.warning("paper %s not computed: %s", model.metric, reason)
        elif len(pairs):
            values, table = _scores(model, net, refs, cross_swaps, pairs, ctx)
            entry |= values
            tables.append(table.add_prefix("paper_"))
        summary[model.metric] = entry
    return summary, pd.concat(tables, axis=1) if tables else pd.DataFrame(index=pairs.index)
