"""The metric groups of ``metrics.json``, one registered function each (as stylegan3's
``metrics/metric_main.py``).

A metric group is a function ``fn(ctx: EvalContext) -> dict`` registered under its
``metrics.json`` key with :func:`register_metric`; :func:`calc_metrics` runs the groups the
config enables, in registration order, and that order is the order of ``metrics.json``:

==================  ======================================================================
group               content
==================  ======================================================================
``swap``            cross-identity swaps scored by the recogniser and the attribute models
``reconstruction``  self-swaps against their input: MSE, PSNR, SSIM
``facke``           Facke Table 1: reconstruction loss, identity loss, L2 identity
                    retrieval distance (seed 002 §3.2)
``fid``             FID/KID of the cross swaps against the targets (``fid.enabled``)
``paper``           identity retrieval (CosFace), pose (Hopenet) and expression
                    (Deep3DFaceRecon) errors as the papers report them, each where its
                    weights are present (``paper_metrics``; seed 004 §4.2)
``blended``         ``swap`` again after pasting into the frames (``blend.enabled``;
                    GHOST seed 001 §III.C)
``protocol``        counts, recogniser and resolution of the run
``timing``          seconds per part of the stage and pairs/s
==================  ======================================================================

Adding a group is adding one registered function here. Groups may leave per-pair tables
(``ctx.per_pair``) and blended examples (``ctx.examples``) for the stage's output files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
import pandas as pd
import torch

from evaluation.attributes import ssim
from evaluation.blend import (
    adjust_mask,
    face_mask_from_labels,
    face_mask_from_landmarks,
    paste_back,
    paste_back_poisson,
)
from evaluation.config import EvaluateConfig
from evaluation.fid import fid_kid
from evaluation.metrics import mse_psnr
from evaluation.paper_metrics import paper_metrics as compute_paper_metrics
from evaluation.protocol import SCORE_SIZE, EvalFace, Protocol, Scorer, resize, summarize
from infra.geometry import uint8_to_unit
from infra.models import ModelStore
from infra.paths import ProjectPaths
from preprocessing.align import align_face
from preprocessing.decode import load_image


@dataclass
class EvalContext:
    """Everything a metric group reads: the held-out faces, the protocol, the swaps and the
    scorer, measured once by the stage.

    Attributes
    ----------
    cfg : the ``evaluate`` config.
    paths : project paths (the prepared dataset, the frames under ``data_root``).
    store : model store (recogniser, attribute models, FID InceptionV3).
    faces : held-out faces, sorted by (identity, key); the protocol indexes into them.
    proto : sources, targets and the (target, source) pairs (RangeIndex rows).
    scorer : recogniser and attribute models with the references measured.
    size : generator resolution S in pixels.
    swaps : (P, S, S, 3) uint8 RGB, one generated face per row of ``proto.pairs``.
    started : ``time.perf_counter()`` at the start of the stage.
    durations : seconds per part: ``setup`` and ``generate`` from the stage, then one entry
        per metric group, added by :func:`calc_metrics`.
    per_pair : per-pair tables left by groups (``swap``, ``blended``) for ``pairs.parquet``.
    examples : (frame, blended frame) RGB uint8 pairs left by ``blended`` for ``blended.png``.
    codes : (F, D) float32 identity codes the generator took per face (its ``z_id``), or
        None when the stage did not record them.
    encode_identity : the identity encoder of the generator's own identity loss, (B, 3, S, S)
        float32 in [-1, 1] → (B, D), or None.
    """

    cfg: EvaluateConfig
    paths: ProjectPaths
    store: ModelStore
    faces: list[EvalFace]
    proto: Protocol
    scorer: Scorer
    size: int
    swaps: np.ndarray
    started: float
    durations: dict[str, float] = field(default_factory=dict)
    per_pair: dict[str, pd.DataFrame] = field(default_factory=dict)
    examples: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    codes: torch.Tensor | None = None
    encode_identity: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def cross_rows(self) -> np.ndarray:
        """(C,) int row labels (= positions) of the cross-identity pairs."""
        return self.proto.pairs.index[self.proto.pairs["cross"]].to_numpy()

    @property
    def self_rows(self) -> np.ndarray:
        """(R,) int row labels (= positions) of the self-swaps."""
        return self.proto.pairs.index[self.proto.pairs["self"]].to_numpy()


MetricFn = Callable[[EvalContext], dict]

#: Registered metric groups, name → function, in registration (= ``metrics.json``) order.
_metric_dict: dict[str, MetricFn] = {}
#: Name → whether the config enables the group (absent: always).
_metric_enabled: dict[str, Callable[[EvaluateConfig], bool]] = {}


def register_metric(
    name: str, enabled: Callable[[EvaluateConfig], bool] | None = None
) -> Callable[[MetricFn], MetricFn]:
    """Decorator registering ``fn(ctx) -> dict`` as the metric group ``name``.

    Parameters
    ----------
    name : the group's key in ``metrics.json`` (and ``Eval/<name>/…`` in MLflow).
    enabled : ``cfg -> bool``, whether the config turns the group on (default: always).

    Raises
    ------
    ValueError : ``name`` is registered already.
    """

    def decorator(fn: MetricFn) -> MetricFn:
        if name in _metric_dict:
            raise ValueError(f"metric group {name!r} is registered already")
        _metric_dict[name] = fn
        if enabled is not None:
            _metric_enabled[name] = enabled
        return fn

    return decorator


def list_metric_groups() -> list[str]:
    """Names of every registered group, in registration order."""
    return list(_metric_dict)


def enabled_metric_groups(cfg: EvaluateConfig) -> list[str]:
    """Registered groups the config enables, in registration order."""
    return [n for n in _metric_dict if _metric_enabled.get(n, lambda _: True)(cfg)]


def calc_metric(name: str, ctx: EvalContext) -> dict:
    """Run one group and record its seconds in ``ctx.durations[name]``.

    Returns
    -------
    The group's dict (JSON-serialisable values).

    Raises
    ------
    ValueError : ``name`` is not a registered group (the message lists them).
    """
    if name not in _metric_dict:
        raise ValueError(f"unknown metric group {name!r}; registered: {list_metric_groups()}")
    t = time.perf_counter()
    result = _metric_dict[name](ctx)
    ctx.durations[name] = time.perf_counter() - t
    return result


def calc_metrics(ctx: EvalContext, names: list[str] | None = None) -> dict[str, dict]:
    """The content of ``metrics.json``: ``{group: dict}`` for ``names`` (default: the groups
    ``ctx.cfg`` enables), run and keyed in that order. ValueError on an unknown name."""
    names = enabled_metric_groups(ctx.cfg) if names is None else names
    return {name: calc_metric(name, ctx) for name in names}


# ---- the groups -----------------------------------------------------------------------


@register_metric("swap")
def swap_metrics(ctx: EvalContext) -> dict:
    """Summary of the cross-identity swaps (:func:`evaluation.protocol.summarize`); leaves the
    per-pair scores of every pair in ``ctx.per_pair["swap"]``."""
    scored = ctx.scorer.score(ctx.swaps, ctx.proto.pairs)
    ctx.per_pair["swap"] = scored
    return summarize(scored)


def _self_swaps(ctx: EvalContext) -> tuple[np.ndarray, np.ndarray]:
    """(self-swaps, their target crops), each (R, S, S, 3) uint8 at the generator size."""
    rows = ctx.self_rows
    targets = ctx.proto.pairs.loc[rows, "target"]
    return ctx.swaps[rows], resize(np.stack([ctx.faces[t].crop for t in targets]), ctx.size)


@register_metric("reconstruction")
def reconstruction_metrics(ctx: EvalContext) -> dict:
    """Self-swaps against their target crop at the generator resolution: ``mse`` and
    ``psnr_db`` of images in [0, 1], mean ``ssim``; all None when the protocol has no
    self-swap (a network trained for one source identity)."""
    if len(ctx.self_rows) == 0:
        return {"mse": None, "psnr_db": None, "ssim": None}
    swaps, real = _self_swaps(ctx)
    mse, psnr = mse_psnr(swaps / 255.0, real / 255.0)
    return {"mse": mse, "psnr_db": psnr, "ssim": ssim(swaps, real)}


@register_metric("facke")
def facke_metrics(ctx: EvalContext) -> dict:
    """Facke's Table 1 columns (seed 002 §3.2), lower is better for all three:

    * ``reconstruction_loss`` — MSE of the self-swaps against their targets, images in
      [0, 1] (Facke does not define its "Recon Loss"; the MSE of the CVAE's §2.2.1 is the
      project's choice); None without self-swaps;
    * ``identity_loss`` — mean 1 − cos between the identity code of each cross swap and the
      source code the generator took, both from the encoder the generator's identity loss
      uses (``ctx.encode_identity``; SimSwap eq. 3); None when the stage gave no encoder;
    * ``id_retrieval_l2`` — "the L2 distance between normalized identity vector[s] extracted
      by a face recognition model other than Arcface": mean ‖e(swap) − e(source)‖₂ of the
      recogniser's unit embeddings, √(2 − 2 cos), in [0, 2]. Facke uses CosFace sphere20
      (its ref. [16]); here the protocol's recogniser (``recognizer``), and the ``paper``
      group gives the CosFace value when its weights are present.
    """
    scored = ctx.per_pair.get("swap")
    if scored is None:
        scored = ctx.scorer.score(ctx.swaps, ctx.proto.pairs)
    cross = scored[scored["cross"]]
    l2 = np.sqrt(np.clip(2.0 - 2.0 * cross["id_cosine"].to_numpy(), 0.0, None))
    rec = None
    if len(ctx.self_rows):
        swaps, real = _self_swaps(ctx)
        rec = mse_psnr(swaps / 255.0, real / 255.0)[0]
    return {
        "reconstruction_loss": rec,
        "identity_loss": _identity_loss(ctx, ctx.cross_rows),
        "id_retrieval_l2": float(l2.mean()) if len(l2) else None,
        "recognizer": ctx.scorer.rec.name,
    }


@torch.no_grad()
def _identity_loss(ctx: EvalContext, rows: np.ndarray) -> float | None:
    """Mean 1 − cos of ``ctx.encode_identity`` on the swaps of ``rows`` against the source
    codes ``ctx.codes``; None without an encoder, codes or rows."""
    if ctx.encode_identity is None or ctx.codes is None or len(rows) == 0:
        return None
    sources = torch.as_tensor(ctx.proto.pairs.loc[rows, "source"].to_numpy(copy=True))
    losses = []
    for i in range(0, len(rows), ctx.cfg.batch_size):
        part = slice(i, i + ctx.cfg.batch_size)
        emb = ctx.encode_identity(uint8_to_unit(ctx.swaps[rows[part]])).float()
        cos = torch.nn.functional.cosine_similarity(emb, ctx.codes[sources[part]].float(), dim=1)
        losses.append(1.0 - cos)
    return float(torch.cat(losses).mean())


@register_metric("fid", enabled=lambda cfg: cfg.fid.enabled)
def fid_metrics(ctx: EvalContext) -> dict:
    """FID/KID (:func:`evaluation.fid.fid_kid`) of the cross swaps against the target crops
    at the generator resolution."""
    real = resize(np.stack([ctx.faces[t].crop for t in ctx.proto.targets]), ctx.size)
    return fid_kid(
        real, ctx.swaps[ctx.cross_rows], ctx.store, kid_subset_size=ctx.cfg.fid.kid_subset_size
    )


@register_metric("paper", enabled=lambda cfg: cfg.paper_metrics != "off")
def paper_metrics(ctx: EvalContext) -> dict:
    """Paper-compatible identity retrieval, pose and expression errors of the cross swaps
    (:func:`evaluation.paper_metrics.paper_metrics`); each network whose weights are absent
    is reported as not computed with the reason. Leaves the per-pair values in
    ``ctx.per_pair["paper"]``."""
    summary, ctx.per_pair["paper"] = compute_paper_metrics(
        ctx.faces, ctx.proto, ctx.swaps, ctx.size, ctx.store, ctx.cfg.batch_size
    )
    return summary


@register_metric("blended", enabled=lambda cfg: cfg.blend.enabled)
def blended_metrics(ctx: EvalContext) -> dict:
    """The ``swap`` summary after pasting each cross swap into its target frame (GHOST seed
    001 §III.C) and re-cutting the aligned crop; leaves the per-pair scores in
    ``ctx.per_pair["blended"]`` and example frames in ``ctx.examples``."""
    cross = ctx.cross_rows
    pairs = ctx.proto.pairs.loc[cross]
    swaps = ctx.swaps[cross]
    boxes = ctx.scorer.boxes[ctx.proto.pairs.target.to_numpy()[cross]]
    _, swap_marks = ctx.scorer.attrs.measure(resize(swaps, SCORE_SIZE), boxes)
    frames = load_frames([ctx.faces[t] for t in set(pairs["target"])], ctx.paths)
    crops, ctx.examples = blend_pairs(
        ctx.cfg, ctx.faces, pairs, swaps, ctx.scorer, swap_marks, frames
    )
    scored = ctx.scorer.score(crops, pairs)
    ctx.per_pair["blended"] = scored
    return summarize(scored)


@register_metric("protocol")
def protocol_metrics(ctx: EvalContext) -> dict:
    """Counts of the protocol, the recogniser's name and the generator resolution."""
    return {
        "sources": len(ctx.proto.sources),
        "targets": len(ctx.proto.targets),
        "pairs": len(ctx.proto.pairs),
        "cross_pairs": len(ctx.cross_rows),
        "self_pairs": len(ctx.self_rows),
        "gallery_faces": len(ctx.faces),
        "recognizer": ctx.scorer.rec.name,
        "resolution": ctx.size,
    }


@register_metric("timing")
def timing_metrics(ctx: EvalContext) -> dict:
    """Seconds per part of the stage (from ``ctx.durations``), pairs/s (all scoring after
    set-up; swapping + scoring only) and ``seconds_per_swap``, the generator's own time per
    pair (e.g. a whole ILVR sampling chain for ``ddpm_ilvr``)."""
    d = ctx.durations
    n = len(ctx.proto.pairs)
    swap_and_score = d["generate"] + d["swap"]
    reconstruction_and_fid = d["reconstruction"] + d.get("fid", 0.0)
    blend = d.get("blended", 0.0)
    return {
        "pairs_per_s": n / (swap_and_score + reconstruction_and_fid + blend),
        "swap_and_score_pairs_per_s": n / swap_and_score,
        "seconds_per_swap": d["generate"] / n,
        "setup_s": d["setup"],
        "swap_and_score_s": swap_and_score,
        "reconstruction_and_fid_s": reconstruction_and_fid,
        "blend_and_rescore_s": blend,
        "wall_s": time.perf_counter() - ctx.started,
    }


# ---- blending the swaps into their frames ---------------------------------------------


def load_frames(faces: list[EvalFace], paths: ProjectPaths) -> dict[str, np.ndarray]:
    """Original frames of ``faces`` by key: (H, W, 3) uint8 RGB, paths from the prepared
    manifest (absolute, or relative to ``data_root``: :meth:`ProjectPaths.data_path`).

    Raises
    ------
    FileNotFoundError : a frame cannot be read (the message names it and why).
    """
    manifest = pd.read_parquet(
        paths.stage_dir("prepare") / "manifest.parquet", columns=["key", "path"]
    ).set_index("key")
    out = {}
    for f in faces:
        decoded = load_image(paths.data_path(manifest.loc[f.key, "path"]), 10**9)
        if decoded.image is None:
            raise FileNotFoundError(f"target frame {manifest.loc[f.key, 'path']}: {decoded.detail}")
        out[f.key] = decoded.image
    return out


def blend_pairs(
    cfg: EvaluateConfig,
    faces: list[EvalFace],
    pairs: pd.DataFrame,
    swaps: np.ndarray,
    scorer: Scorer,
    swap_marks: np.ndarray,
    frames: dict[str, np.ndarray],
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Paste each swap into its target's frame and re-cut the aligned crop.

    Parameters
    ----------
    cfg : ``evaluate`` config (``blend`` section: mask source, adjustment, blur, examples).
    faces : held-out faces (``pairs.target`` indexes into them).
    pairs : the rows being blended (``target`` column).
    swaps : (P, S, S, 3) uint8 RGB, one per row of ``pairs``.
    scorer : gives the targets' FaceMesh landmarks at :data:`SCORE_SIZE`.
    swap_marks : (P, 468, 3) FaceMesh landmarks of the swaps at :data:`SCORE_SIZE`.
    frames : target frames by face key, (H, W, 3) uint8 RGB.

    Returns
    -------
    crops : (P, S, S, 3) uint8 aligned crops of the blended frames.
    examples : [(frame, blended frame)] for the first pair of up to ``cfg.blend.examples``
        targets.
    """
    size = swaps.shape[1]
    out, examples, shown = [], [], set()
    for t, swap, lm_swap in zip(pairs["target"], swaps, swap_marks, strict=True):
        face = faces[t]
        frame = frames[face.key]
        blended = _paste_one(cfg, face, frame, swap, scorer.marks[t], lm_swap)
        out.append(align_face(blended, np.asarray(face.meta["landmarks"]), size)[0])
        if len(examples) < cfg.blend.examples and t not in shown:  # one example per target
            shown.add(t)
            examples.append((frame, blended))
    return np.stack(out), examples


def _paste_one(
    cfg: EvaluateConfig,
    face: EvalFace,
    frame: np.ndarray,
    swap: np.ndarray,
    marks_target: np.ndarray,
    marks_swap: np.ndarray,
) -> np.ndarray:
    """One swap ((S, S, 3) uint8) pasted into its target frame with the configured mask;
    landmarks (468, 3) at :data:`SCORE_SIZE`. Returns the (H, W, 3) uint8 blended frame."""
    size = swap.shape[0]
    M = np.asarray(face.meta["transform"], np.float64) * (size / face.meta["crop_size"])
    scale = size / SCORE_SIZE
    lm_t, lm_s = marks_target[:, :2] * scale, marks_swap[:, :2] * scale
    if cfg.blend.mask == "labels" and face.label_map is not None:
        labels = cv2.resize(face.label_map, (size, size), interpolation=cv2.INTER_NEAREST)
        mask = face_mask_from_labels(labels)
    else:
        mask = face_mask_from_landmarks(lm_t, size)
    blur = cfg.blend.blur_fraction * size
    if cfg.blend.adjust:  # GHOST: grow or shrink the mask, blur scaled to the face width
        mask, blur = adjust_mask(mask, lm_s, lm_t)
    if cfg.blend.method == "poisson":
        return paste_back_poisson(frame, swap, M, mask)
    return paste_back(frame, swap, M, mask, blur)
