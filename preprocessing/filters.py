"""The filter funnel over the detection table (driver side, vectorised).

:data:`FUNNEL` is the table of steps. They run in its order, each on the rows the previous
ones kept; each step owns its rejection reasons and returns the rows it rejects with a
detail in words and the measured value it decided on; the funnel counts every step
separately (seed 000 §III.A, Fig. 4):

1. ``listed`` — the reader's own rejections (listed twice, hidden file, unsupported extension)
2. ``duplicate_entries`` — VGGFace2 ``x_01``/``x_02`` splits of one photo
3. ``readable`` — decoding failures
4. ``near_duplicates`` — perceptual-hash duplicates within an identity
5. ``single_face`` — no face, or more than one face
6. ``size`` — lower quantile of face size, and an absolute minimum
7. ``aspect`` — image height/width band
8. ``tilt`` — roll (eye landmarks), yaw and pitch (FSA-Net)

Adding a filter is adding a row to :data:`FUNNEL` (and its settings to
:class:`~preprocessing.config.FiltersConfig`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from preprocessing.config import FiltersConfig, PrepareConfig, SplitConfig
from preprocessing.records import KEPT, REJECTED, Reason

#: Reasons set by the source readers, applied at the ``listed`` step.
READER_REASONS = (Reason.LISTED_TWICE, Reason.HIDDEN_FILE, Reason.UNSUPPORTED_EXTENSION)
#: Reasons set by decoding and the detection pass, applied at the ``readable`` step.
DECODE_REASONS = (
    Reason.UNREADABLE,
    Reason.EMPTY_FILE,
    Reason.NOT_AN_IMAGE,
    Reason.TOO_LARGE,
    Reason.CORRUPT_IMAGE,
    Reason.DETECT_ERROR,
)


@dataclass(frozen=True)
class Rejection:
    """The rows one filter step rejects.

    Attributes
    ----------
    mask : bool Series indexed like the decisions table (NaN counts as False); only rows
        still kept are rejected.
    reason : a :class:`Reason`, or a per-row Series of reason strings.
    detail : words for the manifest's ``detail`` column, scalar or per-row Series.
    columns : further columns written on the rejected rows (``near_duplicate_of``).
    thresholds : values computed from the data, for the dataset card (px).
    """

    mask: pd.Series
    reason: pd.Series | str
    detail: pd.Series | str
    columns: dict[str, pd.Series] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FilterStep:
    """One named step of the funnel.

    Attributes
    ----------
    name : step name in ``funnel.csv`` and the card's ``funnel`` list.
    reasons : the only reasons the step may give (:meth:`Funnel.apply` checks).
    fn : ``fn(funnel) -> Rejection | None``; reads ``funnel.df`` (rows still kept:
        ``funnel.kept``) and ``funnel.filters``; None when the step is switched off.
    """

    name: str
    reasons: tuple[Reason, ...]
    fn: Callable[[Funnel], Rejection | None]


class Funnel:
    """The decisions table while the funnel runs, and the count of every step.

    Parameters
    ----------
    detections : one row per input (``DETECTION_SCHEMA`` columns); ``reason`` and
        ``detail`` already hold reader and decoding rejections, which are moved to
        :attr:`earlier` and applied at their own steps.
    filters : the filter settings.
    """

    def __init__(self, detections: pd.DataFrame, filters: FiltersConfig):
        df = detections.copy()
        df["status"] = KEPT
        df["aspect"] = (df["height"] / df["width"].where(df["width"] > 0)).astype(float)
        df["near_duplicate_of"] = None
        self.earlier = df["reason"].copy()
        self.earlier_detail = df["detail"].fillna("")
        df["reason"] = None
        self.df = df
        self.filters = filters
        self.steps = [{"step": "input", "rejected": 0, "remaining": len(df)}]
        self.thresholds: dict[str, float] = {}

    @property
    def kept(self) -> pd.Series:
        """Bool Series: rows no step has rejected yet."""
        return self.df["status"] == KEPT

    def apply(self, step: FilterStep) -> None:
        """Run ``step`` on the rows still kept, reject what it returns and count it.

        Raises ValueError when the step gives a reason it does not own.
        """
        rejection = step.fn(self)
        if rejection is None:
            self.count(step.name, 0)
            return
        hit = rejection.mask.fillna(False).astype(bool) & self.kept
        _check_reasons(step, rejection.reason, hit)
        self.df.loc[hit, "status"] = REJECTED
        values = {"reason": rejection.reason, "detail": rejection.detail, **rejection.columns}
        for col, value in values.items():
            if isinstance(value, pd.Series):
                self.df.loc[hit, col] = value[hit]
            else:
                self.df.loc[hit, col] = str(value)
        self.thresholds.update(rejection.thresholds)
        self.count(step.name, int(hit.sum()))

    def count(self, step: str, rejected: int) -> None:
        """Append ``{"step", "rejected", "remaining"}`` to :attr:`steps`."""
        self.steps.append({"step": step, "rejected": rejected, "remaining": int(self.kept.sum())})


def _check_reasons(step: FilterStep, reason: pd.Series | str, hit: pd.Series) -> None:
    given = set(reason[hit].dropna()) if isinstance(reason, pd.Series) else {reason}
    if not given <= set(step.reasons):
        raise ValueError(f"filter step {step.name!r} gave {sorted(given)}, owns {step.reasons}")


def duplicate_entry_groups(
    listed: pd.Series, pattern: str, source: pd.Series | None = None
) -> pd.Series:
    """For each listed path, the size of its ``x_NN`` group (1 = alone or no match).

    Files group when they come from the same source, sit in the same folder and their stems
    match ``pattern`` (anchored at the start) with the same ``stem`` group, e.g.
    ``n001/001_01.jpg`` and ``n001/001_02.jpg``. A group's size counts distinct files: a file
    listed twice (``listed_twice``) does not make a group with itself. Vectorised (pandas
    string methods), so millions of rows take seconds.
    """
    parts = listed.str.rpartition("/")
    stem = parts[2].str.replace(r"(?<=.)\.[^.]+$", "", regex=True)  # PurePath.stem
    found = stem.str.extract(f"^(?:{pattern})")["stem"]
    prefix = source.astype(str) + "\0" if source is not None else ""
    keys = (prefix + parts[0] + "/" + found).where(found.notna())
    distinct = pd.DataFrame({"k": keys, "f": listed}).dropna().drop_duplicates()
    sizes = keys.map(distinct.groupby("k").size())
    return sizes.fillna(1).astype(int)


def _phash_words(hashes: pd.Series) -> np.ndarray:
    """Hex pHash strings (64 bits, as ``imagehash`` prints them) → (N,) uint64."""
    return np.fromiter((int(h, 16) for h in hashes), dtype=np.uint64, count=len(hashes))


def _greedy_duplicates(words: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """One group, rows in visiting order: for each row the index of the earlier kept row it
    duplicates (nearest; first on ties) or -1, and that Hamming distance (bits) or -1.

    Rows without any earlier row within ``max_distance`` are kept without a loop; only rows
    that have one are resolved in order (an earlier row may itself be a duplicate)."""
    n = len(words)
    of = np.full(n, -1, np.int64)
    dist = np.full(n, -1, np.int64)
    candidates = []
    for start in range(0, n, 1024):  # blocks bound the (block × n) distance matrix
        d = np.bitwise_count(words[start : start + 1024, None] ^ words[None, :])
        rows, cols = np.nonzero(d <= max_distance)
        earlier = cols < rows + start
        candidates.append(np.unique(rows[earlier]) + start)
    kept = np.ones(n, bool)
    for i in np.concatenate(candidates):
        d = np.bitwise_count(words[:i] ^ words[i]).astype(np.int64)
        d[~kept[:i]] = 1 << 30
        j = int(d.argmin())
        if d[j] <= max_distance:
            kept[i], of[i], dist[i] = False, j, d[j]
    return of, dist


def near_duplicates(df: pd.DataFrame, max_distance: int) -> tuple[pd.Series, pd.Series]:
    """Near-duplicate photos within each identity (or source when unlabelled).

    Rows are visited largest image first (then by key); a row within ``max_distance`` bits
    (pHash Hamming distance) of an already kept row is a duplicate of the nearest such row
    (the first visited on ties). Returns (duplicate_of key or None, distance or NaN),
    indexed like ``df``. Distances are popcounts of 64-bit XORs; each group costs a few
    numpy calls plus one per row that has an earlier near row.
    """
    groups = df["identity"].fillna("source:" + df["source"])
    order = df.assign(_area=-(df["width"] * df["height"]), _g=groups).sort_values(
        ["_g", "_area", "key"]
    )
    words = _phash_words(order["phash"])
    codes = order["_g"].to_numpy()
    bounds = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    of_pos = np.full(len(order), -1, np.int64)
    dist = np.full(len(order), np.nan)
    for s, e in zip(np.r_[0, bounds], np.r_[bounds, len(order)], strict=True):
        if e - s < 2:
            continue
        j, d = _greedy_duplicates(words[s:e], max_distance)
        hit = np.flatnonzero(j >= 0)
        of_pos[s + hit], dist[s + hit] = s + j[hit], d[hit]
    keys = order["key"].to_numpy()
    of = np.where(of_pos >= 0, keys[np.maximum(of_pos, 0)], None)
    return (
        pd.Series(of, index=order.index, dtype=object).reindex(df.index),
        pd.Series(dist, index=order.index).reindex(df.index),
    )


def _listed(funnel: Funnel) -> Rejection:
    """The readers' rejections: a file listed twice, a hidden file, an unsupported extension."""
    mask = funnel.earlier.isin(READER_REASONS)
    return Rejection(mask, funnel.earlier, funnel.earlier_detail)


def _duplicate_entries(funnel: Funnel) -> Rejection | None:
    """Every member of an ``x_01``/``x_02`` group split from one photo (seed 000)."""
    f = funnel.filters.duplicate_entries
    if not f.enabled:
        return None
    sizes = duplicate_entry_groups(funnel.df["listed"], f.pattern, funnel.df["source"])
    detail = "one of " + sizes.astype(str) + " entries split from one photo"
    return Rejection(sizes > 1, Reason.DUPLICATE_ENTRY, detail)


def _readable(funnel: Funnel) -> Rejection:
    """Decoding and detection failures found by the detection pass."""
    mask = funnel.earlier.isin(DECODE_REASONS)
    return Rejection(mask, funnel.earlier, funnel.earlier_detail)


def _near_duplicates(funnel: Funnel) -> Rejection | None:
    """Near-duplicate photos within an identity (:func:`near_duplicates`)."""
    f = funnel.filters.near_duplicates
    if not f.enabled:
        return None
    df = funnel.df
    live = df[funnel.kept & df["phash"].notna()]
    found, dist = near_duplicates(live, f.max_distance)
    of = found.reindex(df.index)
    detail = "pHash distance " + dist.reindex(df.index).fillna(-1).astype(int).astype(str)
    detail = detail + " to " + of.fillna("")
    return Rejection(of.notna(), Reason.NEAR_DUPLICATE, detail, {"near_duplicate_of": of})


def _single_face(funnel: Funnel) -> Rejection:
    """No face, or a second face (``detection.min_relative_size``)."""
    df = funnel.df
    faces = df["num_faces"].fillna(0).astype(int)
    none = faces == 0
    reason = np.where(none, Reason.NO_FACE, Reason.MULTIPLE_FACES)
    detail = np.where(
        none, "no face above the score threshold", "faces counted: " + faces.astype(str)
    )
    return Rejection(
        faces != 1, pd.Series(reason, index=df.index), pd.Series(detail, index=df.index)
    )


def _size(funnel: Funnel) -> Rejection:
    """Faces under the ``drop_fraction`` quantile of face size or under ``min_face`` px.

    The quantile is taken over the faces still kept when this step runs, i.e. after the
    single-face step (every earlier step applied).
    """
    f = funnel.filters.size
    df = funnel.df
    sizes = df.loc[funnel.kept, "face_size"].astype(float)
    quantile = float(sizes.quantile(f.drop_fraction)) if len(sizes) else 0.0
    limit = max(quantile if f.drop_fraction > 0 else 0.0, f.min_face)
    detail = (
        df["face_size"].round(1).astype(str) + f" px < {limit:.1f} px (quantile "
        f"{f.drop_fraction:g} = {quantile:.1f}, minimum {f.min_face:g})"
    )
    thresholds = {"face_size_quantile": quantile, "face_size_limit": limit}
    mask = df["face_size"].astype(float) < limit
    return Rejection(mask, Reason.SMALL_FACE, detail, thresholds=thresholds)


def _aspect(funnel: Funnel) -> Rejection:
    """Image height/width inside or outside the ``[low, high]`` band."""
    a = funnel.filters.aspect
    df = funnel.df
    inside = (df["aspect"] >= a.low) & (df["aspect"] <= a.high)
    bad = {"outside": inside, "inside": ~inside, "all": pd.Series(False, index=df.index)}[a.keep]
    detail = (
        "height/width " + df["aspect"].round(3).astype(str) + f", keep {a.keep} "
        f"[{a.low:g}, {a.high:g}]"
    )
    return Rejection(bad, Reason.ASPECT_RATIO, detail)


def _tilt(funnel: Funnel) -> Rejection:
    """|roll| (eye landmarks), |yaw| or |pitch| (FSA-Net) over the limits, degrees."""
    t = funnel.filters.tilt
    df = funnel.df
    over_roll = df["eye_roll"].abs() > t.max_roll
    over_yaw = df["yaw"].abs() > t.max_yaw
    over_pitch = df["pitch"].abs() > t.max_pitch
    detail = (
        "roll "
        + df["eye_roll"].round(1).astype(str)
        + ", yaw "
        + df["yaw"].round(1).astype(str)
        + ", pitch "
        + df["pitch"].round(1).astype(str)
        + " degrees"
    )
    return Rejection(over_roll | over_yaw | over_pitch, Reason.TILTED, detail)


#: The funnel, in application order: adding a filter is adding a row.
FUNNEL: tuple[FilterStep, ...] = (
    FilterStep("listed", READER_REASONS, _listed),
    FilterStep("duplicate_entries", (Reason.DUPLICATE_ENTRY,), _duplicate_entries),
    FilterStep("readable", DECODE_REASONS, _readable),
    FilterStep("near_duplicates", (Reason.NEAR_DUPLICATE,), _near_duplicates),
    FilterStep("single_face", (Reason.NO_FACE, Reason.MULTIPLE_FACES), _single_face),
    FilterStep("size", (Reason.SMALL_FACE,), _size),
    FilterStep("aspect", (Reason.ASPECT_RATIO,), _aspect),
    FilterStep("tilt", (Reason.TILTED,), _tilt),
)


def decide(detections: pd.DataFrame, cfg: PrepareConfig) -> tuple[pd.DataFrame, list[dict], dict]:
    """Apply the funnel (:data:`FUNNEL`, in order).

    Parameters
    ----------
    detections : one row per input (``DETECTION_SCHEMA`` columns); ``reason`` is already
        set for reader and decoding rejections.
    cfg : prepare config (filter settings in ``cfg.filters``).

    Returns
    -------
    decisions : copy with ``status``, ``reason``, ``detail``, ``aspect``,
        ``near_duplicate_of`` filled in.
    funnel : ``[{"step", "rejected", "remaining"}, …]``: ``input``, then one entry per
        step of :data:`FUNNEL`.
    thresholds : values computed from the data (the face-size quantile and limit, px).

    Raises
    ------
    ValueError
        A step gave a reason it does not own (a bug in a step).
    """
    funnel = Funnel(detections, cfg.filters)
    for step in FUNNEL:
        funnel.apply(step)
    return funnel.df, funnel.steps, funnel.thresholds


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
