"""The ``evaluate`` stage: an N × N swap protocol on held-out identities.

Protocol: the prepare stage held out whole identities (split ``eval``); the first
``num_identities`` of them (sorted) each give one face (their first key) that serves as
both source and target. Every (target t, source s) pair is swapped with the exported
generator, using the source's precomputed embedding, as in training.

Metrics (``metrics.json``):

* ``id_similarity`` — mean cosine between the swap's embedding and the source face's
  embedding over the N(N−1) pairs with s ≠ t.
* ``id_retrieval_top1`` — fraction of those swaps whose nearest identity, in a gallery of
  the evaluation identities built from their *other* images, is the source identity.
* ``target_retrieval_top1`` — fraction still recognised as the target identity.
* ``recon_mse`` / ``recon_psnr_db`` — self-swaps (s = t) against the input, pixels in [0, 1].
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from evaluation.config import EvaluateConfig
from evaluation.face_matrix import face_matrix, save_png
from evaluation.metrics import cosine_rows, l2_normalize, mse_psnr, top1_retrieval
from infra.identity import IdentityEmbedder
from infra.models import ModelStore
from infra.paths import ProjectPaths
from infra.tracking import MlflowSink, Tracker
from preprocessing.dataset_card import DatasetCard
from training.data import decode_sample, read_shard
from training.samples import to_uint8
from training.swappers import load_generator

log = logging.getLogger(__name__)


def load_split(card: DatasetCard, data_dir: Path, split: str, image_size: int) -> list[dict]:
    """All samples of a split, decoded at ``image_size``, sorted by key."""
    samples = [
        decode_sample(s, image_size)
        for url in card.shard_paths(data_dir, split)
        for s in read_shard(url)
    ]
    return sorted(samples, key=lambda s: s["key"])


def choose_faces(
    samples: list[dict], num_identities: int
) -> tuple[list[dict], list[str], np.ndarray]:
    """Pick the protocol faces and build the retrieval gallery.

    Returns (faces, gallery_identities, gallery_embeddings (G, D)): one face per identity
    (its first key) for the first ``num_identities`` identities with ≥ 2 faces, and for each
    evaluation identity the normalised mean embedding of its faces other than the chosen one.
    Raises ValueError when fewer than 2 identities qualify.
    """
    by_id: dict[str, list[dict]] = {}
    for s in samples:
        by_id.setdefault(s["identity"], []).append(s)
    usable = sorted(i for i, group in by_id.items() if i and len(group) >= 2)
    if len(usable) < 2:
        raise ValueError(f"need >= 2 evaluation identities with >= 2 faces, found {len(usable)}")
    chosen = usable[:num_identities]
    faces = [by_id[i][0] for i in chosen]
    gallery = np.stack(
        [
            l2_normalize(
                np.stack([s["embedding"].numpy() for s in by_id[i][1:]]).mean(0, keepdims=True)
            )[0]
            for i in usable
        ]
    )
    return faces, usable, gallery


@torch.no_grad()
def swap_all(model, faces: list[dict], batch_size: int) -> torch.Tensor:
    """Swaps for every (target, source) pair → (N, N, 3, S, S), [t, s] = source s on target t."""
    images = torch.stack([f["image"] for f in faces])
    z = torch.stack([f["embedding"] for f in faces])
    n = len(faces)
    t_idx, s_idx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    t_idx, s_idx = t_idx.reshape(-1), s_idx.reshape(-1)
    out = []
    for i in range(0, n * n, batch_size):
        sl = slice(i, i + batch_size)
        swap, _ = model(images[t_idx[sl]], z[s_idx[sl]])
        out.append(swap)
    return torch.cat(out).reshape(n, n, *images.shape[1:])


def evaluate(cfg: EvaluateConfig, paths: ProjectPaths, out_dir: Path) -> dict:
    """Run the protocol; writes metrics.json, pairs.parquet and face_matrix.png."""
    t0 = time.perf_counter()
    data_dir = paths.stage_dir("prepare")
    card = DatasetCard.load(data_dir)
    model, meta = load_generator(paths.stage_dir("train") / "generator.pt")
    if meta["identity_model"] != card.embedding.name:
        raise ValueError(
            f"generator trained with {meta['identity_model']}, data uses {card.embedding.name}"
        )
    size = model.cfg.image_size
    faces, gallery_ids, gallery = choose_faces(
        load_split(card, data_dir, "eval", size), cfg.num_identities
    )
    n = len(faces)
    log.info("evaluating %d x %d pairs at %d px", n, n, size)

    swaps = swap_all(model, faces, cfg.batch_size)  # (N, N, 3, S, S)
    swaps_u8 = to_uint8(swaps.reshape(-1, *swaps.shape[2:]))  # (N*N, S, S, 3)
    embedder = IdentityEmbedder(ModelStore(paths.models_dir), card.embedding.name)
    swap_emb = embedder.embed(swaps_u8)  # (N*N, D)

    src_emb = np.stack([f["embedding"].numpy() for f in faces])
    ids = [f["identity"] for f in faces]
    t_idx, s_idx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    t_idx, s_idx = t_idx.reshape(-1), s_idx.reshape(-1)
    cos = cosine_rows(swap_emb, src_emb[s_idx])
    retrieved = np.array(gallery_ids)[top1_retrieval(swap_emb, gallery, np.array(gallery_ids))]
    pairs = pd.DataFrame(
        {
            "target_key": [faces[t]["key"] for t in t_idx],
            "source_key": [faces[s]["key"] for s in s_idx],
            "target_identity": [ids[t] for t in t_idx],
            "source_identity": [ids[s] for s in s_idx],
            "id_cosine": cos,
            "retrieved_identity": retrieved,
        }
    )
    cross = pairs[t_idx != s_idx]
    targets_u8 = to_uint8(torch.stack([f["image"] for f in faces]))
    self_swaps = swaps_u8.reshape(n, n, size, size, 3)[np.arange(n), np.arange(n)]
    mse, psnr = mse_psnr(self_swaps / 255.0, targets_u8 / 255.0)
    metrics = {
        "id_similarity": float(cross["id_cosine"].mean()),
        "id_retrieval_top1": float(
            (cross["retrieved_identity"] == cross["source_identity"]).mean()
        ),
        "target_retrieval_top1": float(
            (cross["retrieved_identity"] == cross["target_identity"]).mean()
        ),
        "recon_mse": mse,
        "recon_psnr_db": psnr,
        "num_identities": n,
        "num_pairs": len(cross),
        "gallery_identities": len(gallery_ids),
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    pairs.to_parquet(out_dir / "pairs.parquet", index=False)
    matrix = face_matrix(
        targets_u8, targets_u8, swaps_u8.reshape(n, n, size, size, 3), cfg.matrix_cell
    )
    matrix_path = save_png(matrix, out_dir / "face_matrix.png")

    sink = _mlflow_sink(paths, cfg, meta.get("mlflow_run_id"))
    tracker = Tracker([sink])
    tracker.log_metrics({f"Eval/{k}": v for k, v in metrics.items()}, step=int(meta.get("step", 0)))
    tracker.log_artifact(matrix_path, "evaluation")
    tracker.log_artifact(out_dir / "metrics.json", "evaluation")
    tracker.close()
    log.info("evaluation done in %.1f s: %s", time.perf_counter() - t0, json.dumps(metrics))
    return metrics


def _mlflow_sink(paths: ProjectPaths, cfg: EvaluateConfig, run_id: str | None) -> MlflowSink:
    """Add to the training run when it is in this tracking store, else open a new run."""
    if run_id:
        try:
            return MlflowSink(paths, cfg.experiment, "evaluate", run_id=run_id)
        except Exception as e:  # run from another store (e.g. a copied checkpoint)
            log.warning(
                "training run %s not found in %s (%s); logging a new run",
                run_id,
                paths.tracking_uri,
                e,
            )
    return MlflowSink(paths, cfg.experiment, run_name=f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}")
