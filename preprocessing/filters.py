"""Filter decisions over the detection table (driver side, vectorised).

Each filter rejects rows still kept by the previous ones and records its reason, so the
funnel counts filters separately in the order they are applied.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from preprocessing.config import PrepareConfig, SplitConfig
from preprocessing.records import KEPT, REJECTED, Reason


def decide(detections: pd.DataFrame, cfg: PrepareConfig) -> tuple[pd.DataFrame, list[dict]]:
    """Apply the filters in order.

    Parameters
    ----------
    detections : one row per input with the columns of ``DETECTION_SCHEMA``; ``reason`` is
        already set for inputs that failed before detection (decode errors, listed twice).
    cfg : prepare config.

    Returns
    -------
    decisions : copy of ``detections`` with ``status`` (kept/rejected) and ``reason``.
    funnel : list of ``{"step", "rejected", "remaining"}`` dicts in application order.
    """
    df = detections.copy()
    df["status"] = KEPT
    df.loc[df["reason"].notna(), "status"] = REJECTED
    funnel = [{"step": "input", "rejected": 0, "remaining": len(df)}]
    funnel.append(
        {
            "step": "readable",
            "rejected": int((df.status == REJECTED).sum()),
            "remaining": int((df.status == KEPT).sum()),
        }
    )

    def reject(mask: pd.Series, reason: str, detail: pd.Series | str, step: str) -> None:
        hit = mask & (df["status"] == KEPT)
        df.loc[hit, "status"] = REJECTED
        df.loc[hit, "reason"] = reason
        df.loc[hit, "detail"] = detail[hit] if isinstance(detail, pd.Series) else detail
        funnel.append(
            {"step": step, "rejected": int(hit.sum()), "remaining": int((df.status == KEPT).sum())}
        )

    faces = df["num_faces"].fillna(0).astype(int)
    reject(faces == 0, Reason.NO_FACE, "no face above the score threshold", "face_found")
    reject(
        faces > 1,
        Reason.MULTIPLE_FACES,
        "faces counted: " + faces.astype(str),
        "single_face",
    )
    return df, funnel


def _rank(seed: int, identity: str) -> str:
    return hashlib.sha1(f"{seed}:{identity}".encode()).hexdigest()


def assign_split(decisions: pd.DataFrame, cfg: SplitConfig) -> pd.Series:
    """``eval`` for kept faces of the held-out identities, ``train`` for other kept faces,
    None for rejected rows.

    Held-out identities are the ``cfg.eval_identities`` identities with at least
    ``cfg.min_images`` kept faces that come first in a seeded hash order (stable when
    other identities are added or removed).
    """
    kept = decisions[decisions["status"] == KEPT]
    counts = kept.dropna(subset=["identity"]).groupby("identity").size()
    eligible = sorted(counts[counts >= cfg.min_images].index, key=lambda i: _rank(cfg.seed, i))
    held_out = set(eligible[: cfg.eval_identities])
    split = pd.Series(None, index=decisions.index, dtype=object)
    split[decisions["status"] == KEPT] = "train"
    split[(decisions["status"] == KEPT) & decisions["identity"].isin(held_out)] = "eval"
    return split


def plan_shards(kept: pd.DataFrame, shard_size: int) -> list[dict]:
    """Group kept rows into shards, deterministically.

    Rows are ordered by (split, identity, key) so that each identity's faces are
    contiguous (cheap intra-identity pairs) and the same inputs always give the same
    shards. Returns ``[{"shard": "train-000000", "split": "train", "keys": [...]}, …]``.
    """
    ordered = kept.assign(_id=kept["identity"].fillna("")).sort_values(["split", "_id", "key"])
    plans = []
    for split, group in ordered.groupby("split", sort=True):
        keys = group["key"].tolist()
        for i in range(0, len(keys), shard_size):
            plans.append(
                {
                    "shard": f"{split}-{i // shard_size:06d}",
                    "split": split,
                    "keys": keys[i : i + shard_size],
                }
            )
    return plans
