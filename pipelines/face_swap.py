"""Swap a source face into frames: detect, select, align, generate, paste back.

The frame path of ``fsp swap`` (images and each video frame), built from the project's own
parts so a swap sees faces exactly as training did:

1. **detect** the target faces with prepare's SCRFD detector (:class:`FaceDetector`, the
   ``swap.detection`` settings) and choose the ones to swap (``swap.faces``: the largest,
   all, or the one nearest a reference face by cosine of the training identity encoder's
   embeddings);
2. **align** each to the generator's crop (the contract's template and crop size, resized
   to its side ``S``, as :func:`infra.geometry.resize_crops` does for training crops); in a
   video the 5 landmarks are first smoothed over time (:class:`LandmarkSmoother`);
3. **generate** with the trained generator (:class:`training.swap_model.SwapModel`) from the
   source's identity embedding and the inputs its contract names (source crop, FaceMesh face
   mask, RAFSwap regions from FaceMesh polygons);
4. **paste back** with GHOST's blending (seed 001 §III.C, :mod:`evaluation.blend`): the crop
   is warped back with the inverse alignment and blended through the FaceMesh face-oval mask,
   enlarged or shrunk and blurred by the width change between swap and target, or by Poisson
   blending (``swap.paste.method``);
5. optionally **restore** the face with a registered restoration model
   (:class:`pipelines.restoration.FaceRestorer`: GHOST adds a super-resolution block; the
   project uses a GFPGAN ONNX model after pasting, see there).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from evaluation.blend import (
    adjust_mask,
    face_mask_from_landmarks,
    paste_back,
    paste_back_poisson,
    warped_alpha,
)
from infra.facemesh_topology import face_oval_mask
from infra.geometry import l2_normalize, resize_crops, transform_points
from infra.identity import IdentityEncoder
from infra.models import ModelStore
from pipelines.restoration import FaceRestorer, build_restorer
from pipelines.swap_config import SwapConfig
from preprocessing.align import align_face, estimate_transform
from preprocessing.annotate import regions_bitmask
from preprocessing.detect import FaceDetections, FaceDetector
from preprocessing.facemesh import FaceMesh
from preprocessing.parsing.facemesh_regions import FaceMeshRegionsBackend

log = logging.getLogger(__name__)


class NoSourceFaceError(ValueError):
    """The source (or reference) image holds no detectable face."""


@dataclass
class SourceFace:
    """The face whose identity is swapped in.

    Attributes
    ----------
    embedding : (D,) float32, L2-normalised embedding of the generator's identity encoder.
    crop : (S, S, 3) uint8 RGB crop on the generator's template, side ``S``.
    regions : (4, S, S) float32 {0, 1} RAFSwap regions (lips, nose, brows, eyes) of the crop.
    """

    embedding: np.ndarray
    crop: np.ndarray
    regions: np.ndarray


@dataclass
class SwappedFace:
    """One swapped face of a frame.

    Attributes
    ----------
    box : (4,) float32 detector box ``x1, y1, x2, y2`` in frame pixels.
    landmarks5 : (5, 2) float64 (smoothed) landmarks the crop was aligned on, frame pixels.
    landmarks468 : (468, 3) float32 FaceMesh landmarks of the input face, frame pixels.
    track : id of the face's track over video frames (0 for images).
    """

    box: np.ndarray
    landmarks5: np.ndarray
    landmarks468: np.ndarray
    track: int = 0


@dataclass
class FrameResult:
    """A swapped frame.

    Attributes
    ----------
    frame : (H, W, 3) uint8 RGB output (the input unchanged when no face was swapped).
    faces : the swapped faces, in decreasing box area.
    detected : faces the detector found (before selection).
    alpha : (H, W) float32 in [0, 1], where the output took swapped pixels (the union of
        the paste masks; restoration pastes inside the same faces); pixels with α = 0 equal
        the input exactly.
    """

    frame: np.ndarray
    faces: list[SwappedFace] = field(default_factory=list)
    detected: int = 0
    alpha: np.ndarray | None = None


@dataclass
class _Track:
    id: int
    box: np.ndarray
    landmarks5: np.ndarray


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``x1, y1, x2, y2`` boxes (0 when either is empty)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class LandmarkSmoother:
    """Exponential smoothing of each tracked face's 5 landmarks over video frames.

    GHOST (seed 001 §III.C) names jitter of the pasted face between frames as the video
    problem; the project's remedy is to align every frame's crop on smoothed landmarks:
    ``s_t = w · s_{t−1} + (1 − w) · p_t`` per track, restarted when a point moves more than
    ``reset_motion`` eye distances in one frame (a cut or a fast move, so the crop does not
    lag behind the face). Faces are linked to the previous frame's tracks by box IoU ≥
    ``track_iou``; a face without a match starts a new track.

    Parameters
    ----------
    smoothing : ``w`` in [0, 1) (0 = no smoothing).
    reset_motion : largest per-frame landmark jump, in eye distances, that is smoothed.
    track_iou : smallest box IoU that continues a track.
    """

    def __init__(self, smoothing: float, reset_motion: float, track_iou: float):
        self.w = float(smoothing)
        self.reset = float(reset_motion)
        self.iou = float(track_iou)
        self.tracks: list[_Track] = []
        self._next = 0

    def update(self, boxes: np.ndarray, landmarks5: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Smooth one frame's faces.

        Parameters
        ----------
        boxes : (N, 4) detector boxes, frame pixels.
        landmarks5 : (N, 5, 2) detected landmarks, frame pixels.

        Returns
        -------
        ``[(track id, (5, 2) float64 smoothed landmarks)]`` in the order of ``boxes``.
        Tracks not seen in this frame are dropped.
        """
        out, tracks, used = [], [], set()
        for box, pts in zip(boxes, np.asarray(landmarks5, np.float64), strict=True):
            best, best_iou = None, self.iou
            for k, t in enumerate(self.tracks):
                if k not in used and (iou := box_iou(box, t.box)) >= best_iou:
                    best, best_iou = k, iou
            if best is None:
                track = _Track(self._next, np.asarray(box), pts.copy())
                self._next += 1
            else:
                used.add(best)
                prev = self.tracks[best]
                eye = max(float(np.hypot(*(pts[1] - pts[0]))), 1.0)
                jump = float(np.hypot(*(pts - prev.landmarks5).T).max()) / eye
                smooth = pts if jump > self.reset else self.w * prev.landmarks5 + (1 - self.w) * pts
                track = _Track(prev.id, np.asarray(box), smooth)
            tracks.append(track)
            out.append((track.id, track.landmarks5.copy()))
        self.tracks = tracks
        return out


class FaceSwapper:
    """Swaps one source identity into frames with a trained generator.

    Parameters
    ----------
    model : the generator (:func:`training.swap_model.load_swap_model`); its contract gives
        the crop template and size, the side ``S``, the identity encoder and extra inputs.
    cfg : ``swap`` settings.
    store : models directory (detector, FaceMesh, identity encoder, restoration model).
    threads : onnxruntime intra-op threads.

    Raises
    ------
    infra.models.ModelError : a needed model file is missing or altered.
    ValueError : the contract does not name the crop size, template or identity encoder.
    """

    def __init__(self, model, cfg: SwapConfig, store: ModelStore, threads: int = 2):
        self.model = model
        self.contract = model.contract
        missing = [
            k for k in ("crop_size", "template", "identity_model") if not getattr(self.contract, k)
        ]
        if missing:
            raise ValueError(
                f"the generator's contract does not name its {', '.join(missing)}: use a "
                "generator.pt written by fsp train, or export one with fsp export"
            )
        self.cfg = cfg
        self.size = int(self.contract.image_size)
        self.detector = FaceDetector(store.path(cfg.detection.model), cfg.detection, threads)
        self.facemesh = FaceMesh(store, threads=threads)
        self.encoder = IdentityEncoder(store, self.contract.identity_model, threads=threads)
        self.restorer: FaceRestorer | None = build_restorer(cfg.super_resolution, store, threads)
        self._regions = FaceMeshRegionsBackend(self.size)

    # ---- faces ---------------------------------------------------------------------------

    def embed(self, image: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
        """(N, D) float32 L2-normalised embeddings of the faces with (N, 5, 2) landmarks in
        the (H, W, 3) uint8 RGB ``image`` (ArcFace 112-px alignment, as prepare embeds)."""
        faces = np.stack(
            [align_face(image, p, self.encoder.input_size, "arcface")[0] for p in landmarks5]
        )
        return l2_normalize(self.encoder.embed(faces), axis=1)

    def source_face(self, image: np.ndarray, name: str = "source") -> SourceFace:
        """The largest face of ``image`` ((H, W, 3) uint8 RGB) as a swap source.

        Raises
        ------
        NoSourceFaceError : no face is detected (the message names ``name``).
        """
        det = self._detect_one(image, name)
        pts = det.landmarks[:1].astype(np.float64)
        crops, mats = self._crops(image, pts)
        lm = self._landmarks(image, det.boxes[:1], mats)[1]
        return SourceFace(self.embed(image, pts)[0], crops[0], self._region_masks(crops, lm)[0])

    def reference_embedding(self, image: np.ndarray) -> np.ndarray:
        """(D,) embedding of the largest face of the reference image (``swap.faces =
        reference``). NoSourceFaceError when it has no face."""
        det = self._detect_one(image, "reference")
        return self.embed(image, det.landmarks[:1])[0]

    def _detect_one(self, image: np.ndarray, name: str) -> FaceDetections:
        det = self.detector.detect(image)
        if len(det) == 0:
            raise NoSourceFaceError(f"no face found in the {name} image")
        return det

    def select(
        self, image: np.ndarray, det: FaceDetections, reference: np.ndarray | None
    ) -> list[int]:
        """Indices into ``det`` of the faces to swap (``swap.faces``); ValueError when the
        mode is ``reference`` and no reference embedding is given."""
        if len(det) == 0:
            return []
        mode = self.cfg.faces
        if mode == "largest":
            return [0]
        if mode == "all":
            sides = det.sides
            return [
                i
                for i in range(len(det))
                if sides[i] >= self.cfg.detection.min_relative_size * sides[0]
            ]
        if reference is None:
            raise ValueError("swap.faces=reference needs a reference image (--reference)")
        cos = self.embed(image, det.landmarks) @ reference
        return [int(np.argmax(cos))]

    # ---- crops ---------------------------------------------------------------------------

    def _crop_matrices(self, landmarks5: np.ndarray) -> np.ndarray:
        """(N, 2, 3) frame → generator-crop matrices (contract template at ``crop_size``,
        scaled to the side ``S``)."""
        c = self.contract
        return np.stack(
            [
                estimate_transform(p, c.crop_size, c.template) * (self.size / c.crop_size)
                for p in landmarks5
            ]
        )

    def _crops(self, image: np.ndarray, landmarks5: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S, 3) uint8 generator crops: aligned at the contract's crop size, then
        resized to ``S`` like training's crops; and the (N, 2, 3) frame → S-crop matrices."""
        c = self.contract
        crops = np.stack([align_face(image, p, c.crop_size, c.template)[0] for p in landmarks5])
        return resize_crops(crops, self.size), self._crop_matrices(landmarks5)

    def _landmarks(
        self, image: np.ndarray, boxes: np.ndarray, mats: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, 468, 3) FaceMesh landmarks of the boxed faces in image pixels, and the same
        with x/y mapped into the S-crops by ``mats`` (N, 2, 3)."""
        lm = self.facemesh.predict_batch(image, boxes)
        crop = lm.copy()
        for i, M in enumerate(mats):
            crop[i, :, :2] = transform_points(lm[i, :, :2], M)
        return lm, crop

    def _region_masks(self, crops: np.ndarray, lm: np.ndarray) -> np.ndarray:
        """(N, 4, S, S) float32 RAFSwap regions from FaceMesh polygons of the crops."""
        from training.data import region_masks

        labels = self._regions.parse(crops, lm)
        return np.stack([region_masks(regions_bitmask(x), self.size) for x in labels])

    def _extras(
        self, crops: np.ndarray, lm: np.ndarray, source: SourceFace
    ) -> dict[str, np.ndarray]:
        """The contract's extra inputs for a batch of N target crops."""
        n, S = len(crops), self.size
        out = {}
        for name in self.contract.extra_inputs:
            if name == "source":
                src = source.crop.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
                out[name] = np.repeat(src[None], n, 0)
            elif name == "face_mask":
                out[name] = np.stack([face_oval_mask(x, S) for x in lm])[:, None].astype(np.float32)
            elif name == "regions":
                out[name] = self._region_masks(crops, lm)
            elif name == "source_regions":
                out[name] = np.repeat(source.regions[None], n, 0)
            else:
                raise ValueError(f"the generator takes {name!r}, which fsp swap cannot provide")
        return out

    def generate(self, crops: np.ndarray, lm: np.ndarray, source: SourceFace) -> np.ndarray:
        """(N, S, S, 3) uint8 swaps of (N, S, S, 3) uint8 target crops with FaceMesh
        landmarks (N, 468, 3) in crop pixels, ``swap.batch_size`` faces per call."""
        out = []
        for i in range(0, len(crops), self.cfg.batch_size):
            part = crops[i : i + self.cfg.batch_size]
            target = part.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
            z = np.repeat(source.embedding[None].astype(np.float32), len(part), 0)
            extras = self._extras(part, lm[i : i + len(part)], source)
            y = np.asarray(self.model(target, z, extras), np.float32)
            out.append(
                np.clip(np.rint((y + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
            )
        return np.concatenate(out)

    # ---- frames --------------------------------------------------------------------------

    def swap_frame(
        self,
        frame: np.ndarray,
        source: SourceFace,
        reference: np.ndarray | None = None,
        smoother: LandmarkSmoother | None = None,
    ) -> FrameResult:
        """Swap the chosen faces of one frame.

        Parameters
        ----------
        frame : (H, W, 3) uint8 RGB.
        source : the identity to swap in (:meth:`source_face`).
        reference : (D,) embedding for ``swap.faces = reference``.
        smoother : video landmark smoothing (None for single images).

        Returns
        -------
        :class:`FrameResult`; a frame without a (chosen) face comes back unchanged, with
        ``faces`` empty.
        """
        det = self.detector.detect(frame)
        chosen = self.select(frame, det, reference)
        result = FrameResult(
            frame.copy(), detected=len(det), alpha=np.zeros(frame.shape[:2], np.float32)
        )
        if smoother is not None:
            smoothed = smoother.update(det.boxes[chosen], det.landmarks[chosen])
        else:
            smoothed = [(0, det.landmarks[i].astype(np.float64)) for i in chosen]
        if not chosen:
            return result
        pts = np.stack([p for _, p in smoothed])
        crops, mats = self._crops(frame, pts)
        boxes = det.boxes[chosen]
        lm_frame, lm = self._landmarks(frame, boxes, mats)
        swaps = self.generate(crops, lm, source)
        out = frame
        for i, (track, p) in enumerate(smoothed):
            out, alpha = self._paste(out, swaps[i], mats[i], lm[i])
            if self.restorer is not None:
                out = self.restorer.restore(out, p, lm_frame[i])
            result.alpha = np.maximum(result.alpha, alpha)
            result.faces.append(SwappedFace(boxes[i], p, lm_frame[i], track))
        result.frame = out
        return result

    def _paste(
        self, frame: np.ndarray, swap: np.ndarray, M: np.ndarray, lm: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Paste one (S, S, 3) swap with the frame → crop matrix ``M`` and the target's
        FaceMesh landmarks ``lm`` (468, 3) in crop pixels; returns the frame and its α."""
        S, p = self.size, self.cfg.paste
        mask = face_mask_from_landmarks(lm, S)
        blur = p.blur_fraction * S
        if p.adjust:
            xy = lm[:, :2]
            box = np.array([*xy.min(0), *xy.max(0)], np.float64)
            mask, blur = adjust_mask(mask, self.facemesh.predict(swap, box), lm)
        if p.method == "poisson":
            binary = (mask > 0.5).astype(np.float32)
            return paste_back_poisson(frame, swap, M, mask), warped_alpha(
                binary, M, frame.shape, 0.0
            )
        return paste_back(frame, swap, M, mask, blur), warped_alpha(mask, M, frame.shape, blur)
