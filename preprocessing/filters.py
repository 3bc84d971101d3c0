"""The filter funnel over the detection table (driver side, vectorised).

Filters run in a fixed order, each on the rows the previous ones kept, and each records
its reason, a human-readable detail and the measured value it decided on; the funnel
counts every step separately (seed 000 §III.A, Fig. 4):

1. ``listed`` — the reader's own rejections (listed twice, unsupported extension)
2. ``duplicate_entries`` — VGGFace2 ``x_01``/``x_02`` splits of one photo
3. ``readable`` — decoding failures
4. ``near_duplicates`` — perceptual-hash duplicates within an identity
5. ``single_face`` — no face, or more than one face
6. ``size`` — lower quantile of face size, and an absolute minimum
7. ``aspect`` — image height/width band
8. ``tilt`` — roll (eye landmarks), yaw and pitch (FSA-Net)
"""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from preprocessing.config import FiltersConfig, PrepareConfig, SplitConfig
from preprocessing.decode import Reason as DecodeReason
from preprocessing.records import KEPT, REJECTED, Reason

READER_REASONS = {Reason.LISTED_TWICE, Reason.UNSUPPORTED_EXTENSION}
DECODE_REASONS = {
    DecodeReason.UNREADABLE,
    DecodeReason.EMPTY,
    DecodeReason.NOT_AN_IMAGE,
    DecodeReason.TOO_LARGE,
    DecodeReason.CORRUPT,
    Reason.DETECT_ERROR,
}


class Funnel:
    """Applies rejections to a decisions table and counts them per step."""

    def __init__(self, df: pd.DataFrame):
        self.df = df
        self.steps = [{"step": "input", "rejected": 0, "remaining": len(df)}]

    @property
    def kept(self) -> pd.Series:
        return self.df["status"] == KEPT

    def reject(
        self, step: str, mask: pd.Series, reason: pd.Series | str, detail: pd.Series | str
    ) -> None:
        """Reject kept rows where ``mask`` holds; reason/detail are scalars or per-row."""
        hit = mask.fillna(False).astype(bool) & self.kept
        self.df.loc[hit, "status"] = REJECTED
        for col, value in (("reason", reason), ("detail", detail)):
            self.df.loc[hit, col] = value[hit] if isinstance(value, pd.Series) else value
        self.count(step, int(hit.sum()))

    def count(self, step: str, rejected: int) -> None:
        self.steps.append({"step": step, "rejected": rejected, "remaining": int(self.kept.sum())})


def duplicate_entry_groups(listed: pd.Series, pattern: str) -> pd.Series:
    """For each listed path, the size of its ``x_NN`` group (1 = alone or no match).

    Files group when they sit in the same folder and their stems match ``pattern`` with the
    same ``stem`` group, e.g. ``n001/001_01.jpg`` and ``n001/001_02.jpg``.
    """
    rx = re.compile(pattern)

    def group_key(p: str) -> str | None:
        path = PurePosixPath(p)
        m = rx.match(path.stem)
        return f"{path.parent}/{m.group('stem')}" if m else None

    keys = listed.map(group_key)
    sizes = keys.map(keys.value_counts())
    return sizes.where(keys.notna(), 1).astype(int)


def near_duplicates(df: pd.DataFrame, max_distance: int) -> tuple[pd.Series, pd.Series]:
    """Near-duplicate photos within each identity (or source when unlabelled).

    Rows are visited largest image first (then by key); a row within ``max_distance`` bits
    (pHash Hamming distance) of an already kept row is a duplicate of it. Returns
    (duplicate_of key or None, distance or NaN), indexed like ``df``.
    """
    of = pd.Series(None, index=df.index, dtype=object)
    dist = pd.Series(np.nan, index=df.index)
    groups = df["identity"].fillna("source:" + df["source"])
    order = df.assign(_area=-(df["width"] * df["height"]), _g=groups).sort_values(
        ["_g", "_area", "key"]
    )
    for _, g in order.groupby("_g", sort=False):
        if len(g) < 2:
            continue
        bits = np.array([[int(c, 16) for c in h] for h in g["phash"]], dtype=np.uint8)
        bits = np.unpackbits(bits[:, :, None], axis=2)[:, :, 4:].reshape(len(g), -1)
        kept_rows: list[int] = []
        for i in range(len(g)):
            if kept_rows:
                d = (bits[kept_rows] != bits[i]).sum(1)
                j = int(d.argmin())
                if d[j] <= max_distance:
                    of[g.index[i]] = g["key"].iloc[kept_rows[j]]
                    dist[g.index[i]] = float(d[j])
                    continue
            kept_rows.append(i)
    return of, dist


def decide(detections: pd.DataFrame, cfg: PrepareConfig) -> tuple[pd.DataFrame, list[dict], dict]:
    """Apply the funnel.

    Parameters
    ----------
    detections : one row per input (``DETECTION_SCHEMA`` columns); ``reason`` is already
        set for reader and decoding rejections.
    cfg : prepare config (filter settings in ``cfg.filters``).

    Returns
    -------
    decisions : copy with ``status``, ``reason``, ``detail``, ``aspect``,
        ``near_duplicate_of`` filled in.
    funnel : ``[{"step", "rejected", "remaining"}, …]`` in application order.
    thresholds : values computed from the data (the face-size quantile, px).
    """
    f: FiltersConfig = cfg.filters
    df = detections.copy()
    df["status"] = KEPT
    df["aspect"] = (df["height"] / df["width"].where(df["width"] > 0)).astype(float)
    df["near_duplicate_of"] = None
    funnel = Funnel(df)
    earlier = df["reason"].copy()  # reader and decoding rejections, applied at their step
    details = df["detail"].fillna("")
    df["reason"] = None
    funnel.reject("listed", earlier.isin(READER_REASONS), earlier, details)

    if f.duplicate_entries.enabled:
        sizes = duplicate_entry_groups(df["listed"], f.duplicate_entries.pattern)
        funnel.reject(
            "duplicate_entries",
            sizes > 1,
            Reason.DUPLICATE_ENTRY,
            "one of " + sizes.astype(str) + " entries split from one photo",
        )
    else:
        funnel.count("duplicate_entries", 0)

    funnel.reject("readable", earlier.isin(DECODE_REASONS), earlier, details)

    if f.near_duplicates.enabled:
        live = df[funnel.kept & df["phash"].notna()]
        of, dist = near_duplicates(live, f.near_duplicates.max_distance)
        df.loc[of.index, "near_duplicate_of"] = of
        detail = "pHash distance " + dist.reindex(df.index).fillna(-1).astype(int).astype(str)
        detail = detail + " to " + df["near_duplicate_of"].fillna("")
        funnel.reject(
            "near_duplicates", df["near_duplicate_of"].notna(), Reason.NEAR_DUPLICATE, detail
        )
    else:
        funnel.count("near_duplicates", 0)

    faces = df["num_faces"].fillna(0).astype(int)
    none = faces == 0
    funnel.reject(
        "single_face",
        faces != 1,
        pd.Series(np.where(none, Reason.NO_FACE, Reason.MULTIPLE_FACES), index=df.index),
        pd.Series(
            np.where(
                none, "no face above the score threshold", "faces counted: " + faces.astype(str)
            ),
            index=df.index,
        ),
    )

    sizes = df.loc[funnel.kept, "face_size"].astype(float)
    quantile = float(sizes.quantile(f.size.drop_fraction)) if len(sizes) else 0.0
    limit = max(quantile if f.size.drop_fraction > 0 else 0.0, f.size.min_face)
    size_detail = (
        df["face_size"].round(1).astype(str) + f" px < {limit:.1f} px (quantile "
        f"{f.size.drop_fraction:g} = {quantile:.1f}, minimum {f.size.min_face:g})"
    )
    funnel.reject("size", df["face_size"].astype(float) < limit, Reason.SMALL_FACE, size_detail)

    a = f.aspect
    inside = (df["aspect"] >= a.low) & (df["aspect"] <= a.high)
    bad = {"outside": inside, "inside": ~inside, "all": pd.Series(False, index=df.index)}[a.keep]
    funnel.reject(
        "aspect",
        bad,
        Reason.ASPECT_RATIO,
        "height/width " + df["aspect"].round(3).astype(str) + f", keep {a.keep} "
        f"[{a.low:g}, {a.high:g}]",
    )

    t = f.tilt
    over_roll = df["eye_roll"].abs() > t.max_roll
    over_yaw = df["yaw"].abs() > t.max_yaw
    over_pitch = df["pitch"].abs() > t.max_pitch
    tilt_detail = (
        "roll "
        + df["eye_roll"].round(1).astype(str)
        + ", yaw "
        + df["yaw"].round(1).astype(str)
        + ", pitch "
        + df["pitch"].round(1).astype(str)
        + " degrees"
    )
    funnel.reject("tilt", over_roll | over_yaw | over_pitch, Reason.TILTED, tilt_detail)
    return df, funnel.steps, {"face_size_quantile": quantile, "face_size_limit": limit}


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


def plan_shards(kept: pd.DataFrame, max_samples: int) -> list[dict]:
    """Group kept rows into shard plans, deterministically.

    Rows are ordered by (split, identity, key) so each identity's faces are contiguous
    (cheap intra-identity pairs) and the same inputs always give the same plans. Returns
    ``[{"shard": "train-000000", "split": "train", "keys": [...]}, …]``.
    """
    ordered = kept.assign(_id=kept["identity"].fillna("")).sort_values(["split", "_id", "key"])
    plans = []
    for split, group in ordered.groupby("split", sort=True):
        keys = group["key"].tolist()
        for i in range(0, len(keys), max_samples):
            plans.append(
                {
                    "shard": f"{split}-{i // max_samples:06d}",
                    "split": split,
                    "keys": keys[i : i + max_samples],
                }
            )
    return plans
