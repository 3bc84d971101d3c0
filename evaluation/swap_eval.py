"""The ``evaluate`` stage: held-out N sources × M targets, scored by models training never
used, before and after pasting the swaps back into the target frames.

Writes ``metrics.json`` (DVC metrics), ``pairs.parquet`` (one row per pair),
``face_matrix.png`` (sources along the top, targets down the left, as Facke Fig. 4),
``blended.png`` (target frames with the swap pasted in) and ``blend_comparison.csv``
(metrics before/after blending, a DVC plot; GHOST seed 001 Tables I–II), and adds the
metrics and images to the training run in MLflow.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from evaluation.attributes import AttributeModels, ssim
from evaluation.blend import (
    adjust_mask,
    face_mask_from_labels,
    face_mask_from_landmarks,
    paste_back,
)
from evaluation.config import EvaluateConfig
from evaluation.face_matrix import face_matrix, save_png
from evaluation.fid import fid_kid
from evaluation.metrics import mse_psnr
from evaluation.protocol import SCORE_SIZE, Scorer, choose, load_eval_faces, resize, summarize
from evaluation.recognizers import build_recognizer
from infra.config import flatten
from infra.models import ModelStore
from infra.paths import ProjectPaths
from infra.tracking import MlflowSink, Tracker
from preprocessing.align import align_face
from preprocessing.dataset_card import DatasetCard
from preprocessing.decode import load_image
from training.samples import to_uint8
from training.swappers import load_generator

log = logging.getLogger(__name__)


@torch.no_grad()
def swap_pairs(model, faces, pairs: pd.DataFrame, size: int, batch_size: int) -> np.ndarray:
    """Run the generator on every (target, source) pair → (P, size, size, 3) uint8."""
    crops = resize(np.stack([f.crop for f in faces]), size)
    images = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1
    z = torch.from_numpy(np.stack([f.embedding for f in faces])).float()
    # Index tensors, not pandas' read-only arrays (torch warns on non-writable memory).
    t = torch.as_tensor(pairs["target"].to_numpy(copy=True))
    s = torch.as_tensor(pairs["source"].to_numpy(copy=True))
    out = []
    for i in range(0, len(pairs), batch_size):
        swap, _ = model(images[t[i : i + batch_size]], z[s[i : i + batch_size]])
        out.append(to_uint8(swap))
    return np.concatenate(out)


def blend_pairs(
    cfg: EvaluateConfig,
    faces,
    pairs: pd.DataFrame,
    swaps: np.ndarray,
    scorer: Scorer,
    swap_marks: np.ndarray,
    frames: dict[str, np.ndarray],
) -> np.ndarray:
    """Paste each swap into its target's frame and re-cut the aligned crop.

    Returns ((P, S, S, 3) uint8 crops of the blended frames at the model resolution,
    [(frame, blended frame)] for the first pair of up to ``cfg.blend.examples`` targets).
    """
    size = swaps.shape[1]
    out, examples, shown = [], [], set()
    for t, swap, lm_swap in zip(pairs["target"], swaps, swap_marks, strict=True):
        face = faces[t]
        frame = frames[face.key]
        crop_size = face.meta["crop_size"]
        M = np.asarray(face.meta["transform"], np.float64) * (size / crop_size)
        scale = size / SCORE_SIZE
        lm_t, lm_s = scorer.marks[t][:, :2] * scale, lm_swap[:, :2] * scale
        if cfg.blend.mask == "labels" and face.label_map is not None:
            labels = cv2.resize(face.label_map, (size, size), interpolation=cv2.INTER_NEAREST)
            mask = face_mask_from_labels(labels)
        else:
            mask = face_mask_from_landmarks(lm_t, size)
        blur = cfg.blend.blur_fraction * size
        if cfg.blend.adjust:  # GHOST: grow or shrink the mask, blur scaled to the face width
            mask, blur = adjust_mask(mask, lm_s, lm_t)
        blended = paste_back(frame, swap, M, mask, blur)
        out.append(align_face(blended, np.asarray(face.meta["landmarks"]), size)[0])
        if len(examples) < cfg.blend.examples and t not in shown:  # one example per target
            shown.add(t)
            examples.append((frame, blended))
    return np.stack(out), examples


def _frames(faces, data_dir: Path) -> dict[str, np.ndarray]:
    """Original frames of the faces, by key (paths from the manifest)."""
    manifest = pd.read_parquet(data_dir / "manifest.parquet", columns=["key", "path"]).set_index(
        "key"
    )
    out = {}
    for f in faces:
        decoded = load_image(Path(manifest.loc[f.key, "path"]), 10**9)
        if decoded.image is None:
            raise FileNotFoundError(f"target frame {manifest.loc[f.key, 'path']}: {decoded.detail}")
        out[f.key] = decoded.image
    return out


def _examples_png(
    examples: list[tuple[np.ndarray, np.ndarray]], path: Path, height: int = 192
) -> Path:
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


def evaluate(cfg: EvaluateConfig, paths: ProjectPaths, out_dir: Path) -> dict:
    """Run the protocol; returns the metrics written to ``metrics.json``."""
    t0 = time.perf_counter()
    data_dir = paths.stage_dir("prepare")
    card = DatasetCard.load(data_dir)
    model, meta = load_generator(paths.stage_dir("train") / "generator.pt")
    if meta["identity_model"] != card.embedding.name:
        raise ValueError(
            f"generator trained with {meta['identity_model']}, data uses {card.embedding.name}"
        )
    size = model.cfg.image_size
    store = ModelStore(paths.models_dir)
    recognizer = build_recognizer(cfg.recognizer, store, card.embedding.name)
    faces = load_eval_faces(card, data_dir)
    proto = choose(faces, cfg.num_sources, cfg.num_targets, cfg.targets_per_identity)
    scorer = Scorer(faces, recognizer, AttributeModels(store), size)
    t_ref = time.perf_counter()

    swaps = swap_pairs(model, faces, proto.pairs, size, cfg.batch_size)
    scored = scorer.score(swaps, proto.pairs)
    t_score = time.perf_counter()
    metrics: dict = {"swap": summarize(scored)}

    self_rows = proto.pairs.index[proto.pairs["self"]].to_numpy()
    targets = resize(np.stack([faces[t].crop for t in proto.pairs.loc[self_rows, "target"]]), size)
    mse, psnr = mse_psnr(swaps[self_rows] / 255.0, targets / 255.0)
    metrics["reconstruction"] = {
        "mse": mse,
        "psnr_db": psnr,
        "ssim": ssim(swaps[self_rows], targets),
    }

    cross = proto.pairs.index[proto.pairs["cross"]].to_numpy()
    if cfg.fid.enabled:
        real = resize(np.stack([faces[t].crop for t in proto.targets]), size)
        metrics["fid"] = fid_kid(real, swaps[cross], store, kid_subset_size=cfg.fid.kid_subset_size)

    t_fid = time.perf_counter()
    blended = None
    if cfg.blend.enabled:
        _, swap_marks = scorer.attrs.measure(
            resize(swaps[cross], SCORE_SIZE), scorer.boxes[proto.pairs.target.to_numpy()[cross]]
        )
        crops, examples = blend_pairs(
            cfg,
            faces,
            proto.pairs.loc[cross],
            swaps[cross],
            scorer,
            swap_marks,
            _frames([faces[t] for t in set(proto.pairs.loc[cross, "target"])], data_dir),
        )
        blended = scorer.score(crops, proto.pairs.loc[cross])
        metrics["blended"] = summarize(blended)
    t_end = time.perf_counter()
    n_pairs = len(proto.pairs)
    metrics["protocol"] = {
        "sources": len(proto.sources),
        "targets": len(proto.targets),
        "pairs": n_pairs,
        "cross_pairs": len(cross),
        "self_pairs": len(self_rows),
        "gallery_faces": len(faces),
        "recognizer": recognizer.name,
        "resolution": size,
    }
    metrics["timing"] = {
        "pairs_per_s": n_pairs / (t_end - t_ref),
        "swap_and_score_pairs_per_s": n_pairs / (t_score - t_ref),
        "setup_s": t_ref - t0,
        "swap_and_score_s": t_score - t_ref,
        "reconstruction_and_fid_s": t_fid - t_score,
        "blend_and_rescore_s": t_end - t_fid,
        "wall_s": t_end - t0,
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    table = scored.drop(columns=["cross", "self"]).assign(
        cross=scored["cross"], self_swap=scored["self"]
    )
    if blended is not None:
        b = blended[
            [
                "id_cosine",
                "retrieved_identity",
                "pose_error_deg",
                "expression_error",
                "eye_landmark_error",
            ]
        ]
        table = table.join(b.add_prefix("blended_"))
    table.to_parquet(out_dir / "pairs.parquet", index=False)
    artifacts = [
        _matrix(faces, proto, swaps, size, cfg.matrix_cell, out_dir / "face_matrix.png"),
        out_dir / "metrics.json",
    ]
    if blended is not None:
        rows = [
            {"metric": k, "before": metrics["swap"][k], "after": metrics["blended"][k]}
            for k in metrics["swap"]
        ]
        pd.DataFrame(rows).to_csv(out_dir / "blend_comparison.csv", index=False)
        if examples:
            artifacts.append(_examples_png(examples, out_dir / "blended.png"))
    _track(paths, cfg, meta, metrics, artifacts)
    log.info(
        "evaluation: %d pairs in %.1f s (%.2f pairs/s): %s",
        n_pairs,
        t_end - t0,
        metrics["timing"]["pairs_per_s"],
        json.dumps(metrics["swap"]),
    )
    return metrics


def _matrix(faces, proto, swaps, size, cell, path: Path) -> Path:
    """Sources along the top, one target per identity down the left."""
    pairs = proto.pairs.reset_index(drop=True)
    first = {}
    for t in proto.targets:
        first.setdefault(faces[t].identity, t)
    rows = list(first.values())
    lookup = {(t, s): i for i, (t, s) in enumerate(zip(pairs.target, pairs.source, strict=True))}
    grid = np.stack([np.stack([swaps[lookup[(t, s)]] for s in proto.sources]) for t in rows])
    src = resize(np.stack([faces[s].crop for s in proto.sources]), size)
    tgt = resize(np.stack([faces[t].crop for t in rows]), size)
    return save_png(face_matrix(src, tgt, grid, cell), path)


def _track(
    paths: ProjectPaths, cfg: EvaluateConfig, meta: dict, metrics: dict, artifacts: list[Path]
) -> None:
    """Add to the training run when it is in this tracking store, else open a new run."""
    run_id = meta.get("mlflow_run_id")
    sink = None
    if run_id:
        try:
            sink = MlflowSink(paths, cfg.experiment, "evaluate", run_id=run_id)
        except Exception as e:  # a copied checkpoint from another store
            log.warning(
                "training run %s not found in %s (%s); logging a new run",
                run_id,
                paths.tracking_uri,
                e,
            )
    if sink is None:
        sink = MlflowSink(paths, cfg.experiment, f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}")
    tracker = Tracker([sink])
    numeric = {
        f"Eval/{k.replace('.', '/')}": v
        for k, v in flatten(metrics).items()
        if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
    }
    tracker.log_summary(numeric, step=int(meta.get("step", 0)))
    for a in artifacts:
        tracker.log_artifact(a, "evaluation")
    tracker.close()
