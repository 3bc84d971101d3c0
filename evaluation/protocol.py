"""The evaluation protocol: which held-out faces are sources, targets and gallery, and how a
set of outputs is scored against them.

Faces come from the ``eval`` split (whole identities training never saw). The first
``num_sources`` identities (sorted) give one source face each (their first key); the first
``num_targets`` identities give ``targets_per_identity`` faces each, other faces of the
identity first. Every (target, source) pair is swapped: pairs of different identities are
scored for identity transfer and attribute preservation, a target swapped with its own
embedding is a self-swap scored for reconstruction. The retrieval gallery is every held-out
face (FaceShifter's protocol retrieves among all frames, targets included).

A network trained for one source identity (Korshunova et al.; its export names it) is scored
with that identity as the only source: its training faces join the gallery (as many as the
largest held-out identity has), the held-out identities are the targets, and there is no
self-swap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.attributes import (
    AttributeModels,
    expression_error,
    expression_opening_error,
    eye_landmark_error,
    pose_error,
)
from evaluation.metrics import cosine_rows, top1_retrieval
from evaluation.recognizers import Recognizer
from infra.dataset_format import DatasetCard, decode_files, read_shard
from infra.geometry import resize_crops as resize
from infra.geometry import transform_points

#: Side the recogniser and attribute models see every face at (the prepared crop size is
#: resized through the model resolution and back, so real and swapped faces match in blur).
SCORE_SIZE = 256


@dataclass
class EvalFace:
    """One held-out face of the prepared ``eval`` split.

    Attributes
    ----------
    key : sample key.
    identity : identity label ("" when unlabelled).
    crop : (C, C, 3) uint8 RGB aligned crop, C = ``meta["crop_size"]``.
    embedding : (D,) float32 L2-normalised embedding of training's identity encoder.
    meta : the sample's metadata (identity, path, transform, bbox, landmarks…).
    label_map : (C, C) uint8 CelebAMask-HQ label map, or None when the shard has none.
    landmarks468 : (468, 3) float32 FaceMesh landmarks in crop pixels, or None when the
        shard has none.
    regions : (C, C) uint8 RAFSwap region bits (``regions.png``: 1 lips, 2 nose, 4 brows,
        8 eyes), or None when the shard has none.
    """

    key: str
    identity: str
    crop: np.ndarray
    embedding: np.ndarray
    meta: dict
    label_map: np.ndarray | None
    landmarks468: np.ndarray | None = None
    regions: np.ndarray | None = None


#: Sample files a held-out face is read from (``mask.png``, ``lmk468.npy`` and
#: ``regions.png`` are optional).
EVAL_FILES = ("jpg", "id.npy", "json", "mask.png", "lmk468.npy", "regions.png")


def eval_face(raw: dict) -> EvalFace:
    """A raw WebDataset sample as an :class:`EvalFace`, decoded by
    :func:`infra.dataset_format.decode_files`. KeyError when ``jpg``, ``id.npy`` or ``json``
    is missing, ValueError when a file cannot be decoded."""
    s = decode_files(raw, EVAL_FILES)
    return EvalFace(
        key=s["__key__"],
        identity=s["json"].get("identity") or "",
        crop=s["jpg"],
        embedding=s["id.npy"],
        meta=s["json"],
        label_map=s["mask.png"],
        landmarks468=s["lmk468.npy"],
        regions=s["regions.png"],
    )


def load_eval_faces(card: DatasetCard, data_dir: Path) -> list[EvalFace]:
    """Every face of the ``eval`` split, sorted by (identity, key) (:func:`eval_face`).

    Raises
    ------
    KeyError : the card has no ``eval`` split, or a sample lacks ``jpg``, ``id.npy`` or
        ``json``.
    ValueError : a sample file cannot be decoded.
    """
    faces = [
        eval_face(raw) for url in card.shard_paths(data_dir, "eval") for raw in read_shard(url)
    ]
    return sorted(faces, key=lambda f: (f.identity, f.key))


def load_identity_faces(
    card: DatasetCard, data_dir: Path, split: str, identity: str, limit: int
) -> list[EvalFace]:
    """Up to ``limit`` faces of one identity of ``split`` (shard order), sorted by key: the
    training identity a per-identity network was trained for. ValueError when there is none."""
    faces = [eval_face(raw) for raw in card.samples_of(data_dir, split, identity, limit)]
    if not faces:
        raise ValueError(f"no {split} face of identity {identity!r} in the prepared dataset")
    return sorted(faces, key=lambda f: f.key)


@dataclass
class Protocol:
    """Indices into the face list: sources, targets and the (target, source) pairs."""

    sources: list[int]
    targets: list[int]
    pairs: pd.DataFrame  # columns: target, source (face indices), cross (bool), self (bool)


def choose(
    faces: list[EvalFace],
    num_sources: int,
    num_targets: int,
    per_identity: int,
    fixed_source: str | None = None,
) -> Protocol:
    """Pick sources, targets and pairs (the rule is in the module docstring).

    Parameters
    ----------
    faces : held-out faces sorted by (identity, key); unlabelled ones are ignored.
    num_sources, num_targets : identities (sorted) giving sources / targets.
    per_identity : target faces per target identity.
    fixed_source : for a network trained for one source identity (Korshunova et al.): that
        identity (its faces must be in ``faces``) is the only source, the first
        ``num_targets`` other identities give the targets, and there are no self-swaps (the
        network cannot reproduce another identity).

    Returns
    -------
    :class:`Protocol`; ``pairs`` has a RangeIndex and one row per distinct (target, source).

    Raises
    ------
    ValueError : fewer than two labelled identities are held out, or ``fixed_source`` has
        no face.
    """
    by_id: dict[str, list[int]] = {}
    for i, f in enumerate(faces):
        if f.identity:
            by_id.setdefault(f.identity, []).append(i)
    ids = sorted(by_id)
    if len(ids) < 2:
        raise ValueError(
            f"need >= 2 held-out identities, found {len(ids)}: prepare more eval identities"
        )
    if fixed_source is not None and fixed_source not in by_id:
        raise ValueError(f"no face of the generator's source identity {fixed_source!r}")
    if fixed_source is None:
        sources = [by_id[i][0] for i in ids[:num_sources]]
    else:
        sources = [by_id[fixed_source][0]]
    targets = []
    for ident in [i for i in ids if i != fixed_source][:num_targets]:
        idx = by_id[ident]
        ordered = idx[1:] + idx[:1]  # faces other than the source face first
        targets += ordered[:per_identity]
    rows = [(t, s) for t in targets for s in sources]
    if fixed_source is None:
        rows += [(t, t) for t in targets]  # self-swaps (reconstruction)
    pairs = pd.DataFrame(rows, columns=["target", "source"]).drop_duplicates(ignore_index=True)
    same_face = pairs["target"] == pairs["source"]
    pairs["self"] = same_face
    pairs["cross"] = [
        faces[t].identity != faces[s].identity
        for t, s in zip(pairs.target, pairs.source, strict=True)
    ]
    return Protocol(sources, targets, pairs)


def face_box(meta: dict, size: int) -> np.ndarray:
    """The detector's face box mapped into a ``size`` crop.

    Parameters
    ----------
    meta : sample metadata with ``bbox`` (image pixels), ``transform`` (2×3 image → crop)
        and ``crop_size``.
    size : side of the crop the box is wanted in.

    Returns
    -------
    (4,) float64 axis-aligned box ``x1, y1, x2, y2`` in crop pixels.
    """
    x1, y1, x2, y2 = meta["bbox"]
    corners = np.array([[x1, y1], [x2, y1], [x1, y2], [x2, y2]], np.float64)
    M = np.asarray(meta["transform"], np.float64) * (size / meta["crop_size"])
    pts = transform_points(corners, M)
    return np.concatenate([pts.min(0), pts.max(0)])


class Scorer:
    """Scores outputs (one image per pair) with the recogniser (an identity encoder training
    never used) and the attribute models; the references (gallery, sources, targets) are
    measured once, at :data:`SCORE_SIZE` after a round trip through the model resolution.

    Parameters
    ----------
    faces : the held-out faces; gallery, sources and targets index into them.
    recognizer : :class:`evaluation.recognizers.Recognizer` (``embed`` → (N, D) unit rows).
    attrs : head pose and FaceMesh models.
    model_size : generator resolution S.

    Attributes
    ----------
    gallery : (F, D) recogniser embeddings of every face; ``gallery_ids`` (F,) identities.
    boxes : (F, 4) face boxes at :data:`SCORE_SIZE`.
    pose : (F, 3) yaw, pitch, roll in degrees; ``marks`` (F, 468, 3) FaceMesh landmarks.
    """

    def __init__(
        self, faces: list[EvalFace], recognizer: Recognizer, attrs: AttributeModels, model_size: int
    ):
        self.faces, self.rec, self.attrs, self.model_size = faces, recognizer, attrs, model_size
        crops = np.stack([f.crop for f in faces])
        self.reference = self.through_model(crops)  # (F, 256, 256, 3)
        self.gallery = self.rec.embed(self.reference)  # (F, D)
        self.gallery_ids = np.array([f.identity for f in faces])
        self.boxes = np.stack([face_box(f.meta, SCORE_SIZE) for f in faces])
        self.pose, self.marks = attrs.measure(self.reference, self.boxes)

    def retrieval_chance(self, identities: np.ndarray) -> np.ndarray:
        """(P,) probability that a face drawn at random from the gallery has each identity:
        the top-1 retrieval rate a recogniser blind to identity would reach."""
        names, counts = np.unique(self.gallery_ids, return_counts=True)
        share = dict(zip(names.tolist(), (counts / len(self.gallery_ids)).tolist(), strict=True))
        return np.array([share.get(i, 0.0) for i in identities])

    def through_model(self, images: np.ndarray) -> np.ndarray:
        """Resize to the model resolution and back to SCORE_SIZE."""
        return resize(resize(images, self.model_size), SCORE_SIZE)

    def score(self, outputs: np.ndarray, pairs: pd.DataFrame) -> pd.DataFrame:
        """Per-pair metrics of generated faces.

        Parameters
        ----------
        outputs : (P, S, S, 3) uint8 RGB at the model resolution, one per row of ``pairs``.
        pairs : ``target`` and ``source`` face indices (and any further columns, kept).

        Returns
        -------
        ``pairs`` with keys and identities of target and source, ``id_cosine`` (to the
        source face, [-1, 1]), ``id_cosine_unswapped`` (target to source),
        ``retrieved_identity`` (top-1 among all held-out faces), ``retrieval_chance`` (the
        source identity's share of that gallery), ``pose_error_deg``,
        ``expression_error``, ``expression_opening_error`` and ``eye_landmark_error``
        (against the target; see
        :mod:`evaluation.attributes`).
        """
        out = resize(outputs, SCORE_SIZE)
        emb = self.rec.embed(out)
        t, s = pairs["target"].to_numpy(), pairs["source"].to_numpy()
        pose, marks = self.attrs.measure(out, self.boxes[t])
        retrieved = self.gallery_ids[top1_retrieval(emb, self.gallery, self.gallery_ids)]
        return pairs.assign(
            target_key=[self.faces[i].key for i in t],
            source_key=[self.faces[i].key for i in s],
            target_identity=self.gallery_ids[t],
            source_identity=self.gallery_ids[s],
            id_cosine=cosine_rows(emb, self.gallery[s]),
            id_cosine_unswapped=cosine_rows(self.gallery[t], self.gallery[s]),
            retrieved_identity=retrieved,
            retrieval_chance=self.retrieval_chance(self.gallery_ids[s]),
            pose_error_deg=pose_error(pose, self.pose[t]),
            expression_error=[
                expression_error(a, b) for a, b in zip(marks, self.marks[t], strict=True)
            ],
            expression_opening_error=[
                expression_opening_error(a, b) for a, b in zip(marks, self.marks[t], strict=True)
            ],
            eye_landmark_error=[
                eye_landmark_error(a, b) for a, b in zip(marks, self.marks[t], strict=True)
            ],
        )


def summarize(scored: pd.DataFrame) -> dict[str, float]:
    """Aggregate the cross-identity pairs of a :meth:`Scorer.score` table.

    Returns
    -------
    ``id_retrieval_top1`` and ``target_retrieval_top1`` (fractions in [0, 1]: the swap is
    retrieved as the source / the target), ``id_retrieval_chance`` (the top-1 rate of a
    random pick from the gallery, to read the score against), mean ``id_cosine`` (and, for scale,
    ``id_cosine_unswapped``), mean ``pose_error_deg``, ``expression_error``,
    ``expression_opening_error`` and
    ``eye_landmark_error``; floats, NaN when there is no cross pair.
    """
    cross = scored[scored["cross"]]
    return {
        "id_retrieval_top1": float((cross.retrieved_identity == cross.source_identity).mean()),
        "target_retrieval_top1": float((cross.retrieved_identity == cross.target_identity).mean()),
        "id_retrieval_chance": float(cross.retrieval_chance.mean()),
        "id_cosine": float(cross.id_cosine.mean()),
        "id_cosine_unswapped": float(cross.id_cosine_unswapped.mean()),
        "pose_error_deg": float(cross.pose_error_deg.mean()),
        "expression_error": float(cross.expression_error.mean()),
        "expression_opening_error": float(cross.expression_opening_error.mean()),
        "eye_landmark_error": float(cross.eye_landmark_error.mean()),
    }
