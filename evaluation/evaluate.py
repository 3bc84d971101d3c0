"""The ``evaluate`` stage: held-out N sources × M targets, scored by models training never
used, before and after pasting the swaps back into the target frames.

Steps of :func:`evaluate`: load the generator and the references (faces, protocol, scorer),
swap every pair, run the metric groups of :mod:`evaluation.metric_groups`, write the outputs,
track them. Writes ``metrics.json`` (DVC metrics, one key per metric group),
``pairs.parquet`` (one row per pair), ``face_matrix.png`` (sources along the top, targets
down the left, as Facke Fig. 4), ``blended.png`` (target frames with the swap pasted in) and
``blend_comparison.csv`` (metrics before/after blending, a DVC plot; GHOST seed 001
Tables I–II), and adds the metrics and images to the training run in MLflow.

``evaluate.generator`` picks the generator: ``train`` (the train stage's ``generator.pt``)
or a released swapper of :data:`training.released.RELEASED`, loaded through its key map; a
released one swaps with its own identity encoder's codes of the source crops, writes to
``<output_dir>/evaluate-<name>/`` and is tracked as a new MLflow run named after it, so
``fsp compare`` lists it beside the trained runs.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn

from evaluation.attributes import AttributeModels
from evaluation.config import EvaluateConfig
from evaluation.face_matrix import face_matrix, save_png
from evaluation.metric_groups import EvalContext, calc_metrics
from evaluation.protocol import (
    EvalFace,
    Protocol,
    Scorer,
    choose,
    load_eval_faces,
    load_identity_faces,
    resize,
)
from evaluation.recognizers import build_recognizer
from infra.config import flatten
from infra.dataset_format import DatasetCard
from infra.facemesh_topology import face_oval_mask
from infra.geometry import uint8_to_unit, unit_to_uint8
from infra.identity import identity_encoder_for_dataset
from infra.models import ModelStore
from infra.paths import ProjectPaths
from infra.tracking import MlflowSink, Tracker
from training.registry import load_generator
from training.released import TRAINED, ReleasedGenerator, load_released

log = logging.getLogger(__name__)

#: Columns of the blended scores joined into ``pairs.parquet`` (prefixed ``blended_``).
_BLENDED_COLUMNS = [
    "id_cosine",
    "retrieved_identity",
    "pose_error_deg",
    "expression_error",
    "expression_opening_error",
    "eye_landmark_error",
]


def evaluate(cfg: EvaluateConfig, paths: ProjectPaths, out_dir: Path | None = None) -> dict:
    """Run the protocol on the prepared ``eval`` split with the generator ``cfg.generator``.

    Parameters
    ----------
    cfg : the ``evaluate`` config.
    paths : project paths (``prepare`` and ``train`` outputs, models, tracking store).
    out_dir : where the outputs are written (created); default :func:`output_dir`.

    Returns
    -------
    The metrics written to ``metrics.json``: ``{group: {name: value}}`` in the order of
    :func:`evaluation.metric_groups.enabled_metric_groups`.

    Raises
    ------
    ValueError : the generator was trained with another identity encoder than the data's,
        the recogniser is that encoder, or fewer than two identities are held out.
    FileNotFoundError : the dataset, the generator or a target frame is missing
        (:class:`infra.models.ModelFileMissingError` for a released model's file).
    """
    started = time.perf_counter()
    data_dir = paths.stage_dir("prepare")
    card = DatasetCard.load(data_dir)
    store = ModelStore(paths.models_dir)
    model, meta = load_evaluated_generator(cfg, paths, card, store)
    size = model.cfg.image_size
    faces, proto, scorer = _load_references(cfg, store, card, data_dir, meta, size)
    t_setup = time.perf_counter()
    swaps, codes = _swap_pairs(model, faces, proto.pairs, size, cfg.batch_size)
    ctx = EvalContext(cfg, paths, store, faces, proto, scorer, size, swaps, started)
    ctx.codes, ctx.encode_identity = codes, swap_identity_encoder(model, card, store)
    ctx.durations |= {"setup": t_setup - started, "generate": time.perf_counter() - t_setup}
    metrics = calc_metrics(ctx)
    artifacts = _write_outputs(ctx, metrics, out_dir or output_dir(cfg, paths))
    _track(paths, meta, metrics, artifacts)
    log.info(
        "evaluation: %d pairs in %.1f s (%.2f pairs/s): %s",
        len(proto.pairs),
        time.perf_counter() - started,
        metrics["timing"]["pairs_per_s"],
        json.dumps(metrics["swap"]),
    )
    return metrics


def output_dir(cfg: EvaluateConfig, paths: ProjectPaths) -> Path:
    """Outputs of an evaluation: ``<output_dir>/evaluate`` for the trained generator (the
    DVC stage's outputs), ``<output_dir>/evaluate-<name>`` for a released one."""
    if cfg.generator == TRAINED:
        return paths.stage_dir("evaluate")
    return paths.output_dir / f"evaluate-{cfg.generator}"


def load_evaluated_generator(
    cfg: EvaluateConfig, paths: ProjectPaths, card: DatasetCard, store: ModelStore
) -> tuple[nn.Module, dict]:
    """The generator ``cfg.generator`` names and its meta (``identity_model`` = the identity
    encoder whose codes it takes): the trained one, checked against the dataset's embedding
    model, or a released one (:func:`training.released.load_released`), which brings its
    own identity encoder, so that check does not apply."""
    if cfg.generator == TRAINED:
        return _load_checked_generator(paths, card)
    return load_released(cfg.generator, store)


def _load_checked_generator(paths: ProjectPaths, card: DatasetCard) -> tuple[nn.Module, dict]:
    """The trained generator and its meta; ValueError when it was trained with another
    identity encoder than the one the dataset's embeddings come from."""
    model, meta = load_generator(paths.stage_dir("train") / "generator.pt")
    if meta["identity_model"] != card.embedding.name:
        raise ValueError(
            f"generator trained with {meta['identity_model']}, data uses {card.embedding.name}"
        )
    return model, meta


def _load_references(
    cfg: EvaluateConfig,
    store: ModelStore,
    card: DatasetCard,
    data_dir: Path,
    meta: dict,
    size: int,
) -> tuple[list[EvalFace], Protocol, Scorer]:
    """The held-out faces, the protocol over them and a scorer with the references measured
    (recogniser ``cfg.recognizer``, independent of the generator's identity encoder
    ``meta["identity_model"]``; attribute models; generator resolution ``size``)."""
    recognizer = build_recognizer(cfg.recognizer, store, meta["identity_model"])
    faces = load_eval_faces(card, data_dir)
    own = meta.get("source_identity")  # a network trained for one source identity
    if own:
        largest = max(Counter(f.identity for f in faces).values())
        faces = sorted(
            faces + load_identity_faces(card, data_dir, "train", own, largest),
            key=lambda f: (f.identity, f.key),
        )
    proto = choose(faces, cfg.num_sources, cfg.num_targets, cfg.targets_per_identity, own)
    return faces, proto, Scorer(faces, recognizer, AttributeModels(store), size)


@torch.no_grad()
def _swap_pairs(
    model: nn.Module, faces: list[EvalFace], pairs: pd.DataFrame, size: int, batch_size: int
) -> np.ndarray:
    """Run the generator on every (target, source) pair.

    Parameters
    ----------
    model : generator, ``model(target (B, 3, S, S) in [-1, 1], z_id (B, D), *extra) ->
        (swap, _)``; ``extra`` in the order of its ``extra_inputs`` (:func:`extra_inputs`).
    faces : held-out faces (crops and embeddings of training's identity encoder; a released
        generator takes its own identity codes of the source crops instead).
    pairs : ``target`` and ``source`` face indices, one row per swap.
    size : generator resolution S.
    batch_size : pairs per forward pass.

    Returns
    -------
    (P, S, S, 3) uint8 RGB swaps in the order of ``pairs``, and the (F, D) float32 identity
    codes the generator took per face (:func:`_identity_codes`).
    """
    images = uint8_to_unit(resize(np.stack([f.crop for f in faces]), size))  # (F, 3, S, S)
    # Index tensors, not pandas' read-only arrays (torch warns on non-writable memory).
    t = torch.as_tensor(pairs["target"].to_numpy(copy=True))
    s = torch.as_tensor(pairs["source"].to_numpy(copy=True))
    z = _identity_codes(model, faces, images, s.unique(), batch_size)  # (F, D)
    per_face = extra_inputs(model, faces, images, size)
    out = []
    for i in range(0, len(pairs), batch_size):
        rows, src = t[i : i + batch_size], s[i : i + batch_size]
        extra = [x[src] if role == "source" else x[rows] for role, x in per_face]
        swap, _ = model(images[rows], z[src], *extra)
        out.append(unit_to_uint8(swap))
    return np.concatenate(out), z


def swap_identity_encoder(
    model: nn.Module, card: DatasetCard, store: ModelStore
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The identity encoder the generator's own identity loss measures with: a released
    generator's ``identity_code``, otherwise the dataset's (the differentiable twin of the
    embedding model, :func:`infra.identity.identity_encoder_for_dataset`, built on first
    use). The callable maps (B, 3, S, S) float32 in [-1, 1] to (B, D) codes."""
    if isinstance(model, ReleasedGenerator):
        return model.identity_code
    build = functools.cache(lambda: identity_encoder_for_dataset(card, store).eval())
    return lambda x: build()(x)


def extra_inputs(
    model: nn.Module, faces: list[EvalFace], images: torch.Tensor, size: int
) -> list[tuple[str, torch.Tensor]]:
    """Per-face tensors of the generator's ``extra_inputs`` (as training's
    :func:`training.train.extra_args`), each tagged with the pair member it is indexed by:
    ``("source", images)`` for ``source``, ``("target", face masks (F, 1, S, S))`` for
    ``face_mask``, ``("target", regions (F, 4, S, S))`` for ``regions`` and ``("source",
    regions)`` for ``source_regions``. ValueError when faces lack the file an input needs."""
    out = []
    for name in getattr(model, "extra_inputs", ()):
        if name == "source":
            out.append(("source", images))
        elif name == "face_mask":
            out.append(("target", face_masks(faces, size)))
        elif name in ("regions", "source_regions"):
            role = "source" if name == "source_regions" else "target"
            out.append((role, face_regions(faces, size)))
        else:
            raise ValueError(f"the generator takes {name!r}, which evaluation cannot provide")
    return out


def face_regions(faces: list[EvalFace], size: int) -> torch.Tensor:
    """(F, 4, S, S) float32 RAFSwap region masks (lips, nose, brows, eyes) of the faces at the
    generator size S, as training decodes them (:func:`training.data.region_masks`).
    ValueError when a face has no ``regions.png``."""
    from training.data import region_masks

    if missing := [f.key for f in faces if f.regions is None]:
        raise ValueError(
            f"the generator reads RAFSwap region masks, but {len(missing)} prepared faces "
            f"(e.g. {missing[0]}) have no regions.png: run prepare with a face parser"
        )
    return torch.from_numpy(np.stack([region_masks(f.regions, size) for f in faces]))


def face_masks(faces: list[EvalFace], size: int) -> torch.Tensor:
    """(F, 1, S, S) float32 FaceMesh face-oval masks of the faces at the generator size S,
    for a generator that restricts its output to the face (as training draws them,
    :func:`infra.facemesh_topology.face_oval_mask`). ValueError when a face has no
    ``lmk468.npy``."""
    if missing := [f.key for f in faces if f.landmarks468 is None]:
        raise ValueError(
            f"the generator restricts its output to the FaceMesh face mask, but {len(missing)} "
            f"prepared faces (e.g. {missing[0]}) have no lmk468.npy: run prepare with "
            "prepare.annotate.landmarks_468=true"
        )
    return torch.from_numpy(
        np.stack([face_oval_mask(f.landmarks468 * (size / f.crop.shape[0]), size) for f in faces])[
            :, None
        ]
    )


def _identity_codes(
    model: nn.Module,
    faces: list[EvalFace],
    images: torch.Tensor,
    sources: torch.Tensor,
    batch_size: int,
) -> torch.Tensor:
    """(F, D) float32 generator inputs per face: the dataset's embeddings, or for a
    :class:`~training.released.ReleasedGenerator` its ``identity_code`` of the crops
    ``images`` (F, 3, S, S) in [-1, 1] at the rows ``sources`` (other rows zero)."""
    if not isinstance(model, ReleasedGenerator):
        return torch.from_numpy(np.stack([f.embedding for f in faces])).float()
    z = torch.zeros(len(faces), model.id_dim)
    for i in range(0, len(sources), batch_size):
        rows = sources[i : i + batch_size]
        z[rows] = model.identity_code(images[rows]).float()
    return z


# ---- outputs ---------------------------------------------------------------------------


def _write_outputs(ctx: EvalContext, metrics: dict, out_dir: Path) -> list[Path]:
    """Write ``metrics.json``, ``pairs.parquet``, ``face_matrix.png`` and, with the
    ``blended`` group, ``blend_comparison.csv`` and ``blended.png``.

    Returns
    -------
    The files to track as artifacts: face matrix, metrics, blended examples (if any).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _pairs_table(ctx).to_parquet(out_dir / "pairs.parquet", index=False)
    artifacts = [_matrix_png(ctx, out_dir / "face_matrix.png"), out_dir / "metrics.json"]
    if "blended" in metrics:
        rows = [
            {"metric": k, "before": metrics["swap"][k], "after": metrics["blended"][k]}
            for k in metrics["swap"]
        ]
        pd.DataFrame(rows).to_csv(out_dir / "blend_comparison.csv", index=False)
        if ctx.examples:
            artifacts.append(_examples_png(ctx.examples, out_dir / "blended.png"))
    return artifacts


def _pairs_table(ctx: EvalContext) -> pd.DataFrame:
    """One row per pair: the ``swap`` scores (``cross`` and ``self_swap`` last), joined with
    the ``blended`` scores of ``_BLENDED_COLUMNS`` (prefixed ``blended_``, cross pairs
    only) when that group ran."""
    scored = ctx.per_pair["swap"]
    table = scored.drop(columns=["cross", "self"]).assign(
        cross=scored["cross"], self_swap=scored["self"]
    )
    if "blended" in ctx.per_pair:
        table = table.join(ctx.per_pair["blended"][_BLENDED_COLUMNS].add_prefix("blended_"))
    return table


def _matrix_png(ctx: EvalContext, path: Path) -> Path:
    """Face matrix: sources along the top, one target per identity down the left."""
    faces, proto = ctx.faces, ctx.proto
    pairs = proto.pairs.reset_index(drop=True)
    first = {}
    for t in proto.targets:
        first.setdefault(faces[t].identity, t)
    rows = list(first.values())
    lookup = {(t, s): i for i, (t, s) in enumerate(zip(pairs.target, pairs.source, strict=True))}
    grid = np.stack([np.stack([ctx.swaps[lookup[(t, s)]] for s in proto.sources]) for t in rows])
    src = resize(np.stack([faces[s].crop for s in proto.sources]), ctx.size)
    tgt = resize(np.stack([faces[t].crop for t in rows]), ctx.size)
    return save_png(face_matrix(src, tgt, grid, ctx.cfg.matrix_cell), path)


def _examples_png(
    examples: list[tuple[np.ndarray, np.ndarray]], path: Path, height: int = 192
) -> Path:
    """Rows of (frame | blended frame), each resized to ``height`` px, padded white."""
    rows = []
    for frame, blended in examples:
        scale = height / frame.shape[0]
        w = max(1, round(frame.shape[1] * scale))
        rows.append(
            np.concatenate([cv2.resize(frame, (w, height)), cv2.resize(blended, (w, height))], 1)
        )
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return save_png(np.concatenate(rows, 0), path)


# ---- tracking --------------------------------------------------------------------------


def _track(paths: ProjectPaths, meta: dict, metrics: dict, artifacts: list[Path]) -> None:
    """Log the finite numeric metrics as ``Eval/<group>/<name>`` and the artifacts: into the
    training run (``meta["mlflow_run_id"]``) when it is in this tracking store, else into a
    new run of ``paths.experiment`` (named ``meta["run_name"]`` for a released generator,
    with its files and their SHA-256 as params)."""
    tracker = Tracker([_sink(paths, meta.get("mlflow_run_id"), meta.get("run_name"))])
    if meta.get("released"):
        params = {f"released.{k}": v for k, v in meta.items() if k not in ("run_name", "step")}
        tracker.log_params({"evaluate.generator": meta["released"], **params})
    numeric = {
        f"Eval/{k.replace('.', '/')}": v
        for k, v in flatten(metrics).items()
        if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
    }
    tracker.log_summary(numeric, step=int(meta.get("step", 0)))
    for a in artifacts:
        tracker.log_artifact(a, "evaluation")
    tracker.close()


def _sink(paths: ProjectPaths, run_id: str | None, run_name: str | None = None) -> MlflowSink:
    """The training run ``run_id``, or a new run named ``run_name`` (default
    ``evaluate-<time>``) when there is none or it is unknown here."""
    if run_id:
        try:
            return MlflowSink(paths, "evaluate", run_id=run_id)
        except Exception as e:  # a copied checkpoint from another store
            log.warning(
                "training run %s not found in %s (%s); logging a new run",
                run_id,
                paths.tracking_uri,
                e,
            )
    return MlflowSink(paths, run_name or f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}")
