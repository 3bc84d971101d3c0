"""Face-parsing accuracy (per-class IoU, mIoU) and speed of every mask backend.

Data: CelebAMask-HQ images with 19-class ground truth (default
``<data_root>/celebamask_hq_ce7454_train``: ``images/<stem>.jpg`` and ``masks/<stem>.png``,
a palette PNG whose pixel value is the class id). For each image the largest SCRFD face is
aligned to the backend's template and size, parsed, and the label map warped back into the
original image (nearest neighbour; outside the crop = background). Intersections and unions
are summed over the whole dataset per class (dataset-level IoU, not a mean of per-image
IoUs). Images without a detected face count as all-background predictions.

Run::

    .venv/bin/python -m preprocessing.benchmarks.mask_miou --limit 200 --backends unet,facemesh
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from infra.geometry import transform_points
from infra.models import ModelStore
from infra.paths import ProjectPaths
from preprocessing.align import align_face
from preprocessing.config import DetectionConfig
from preprocessing.decode import load_image
from preprocessing.detect import FaceDetector
from preprocessing.facemesh import FaceMesh
from preprocessing.parsing import (
    BACKENDS,
    CLASS_NAMES,
    FACE_INTERIOR,
    NUM_CLASSES,
    BackendUnavailableError,
    MaskBackend,
    build_mask_backend,
)

#: Data set folder inside the data root.
DEFAULT_DATASET = "celebamask_hq_ce7454_train"
MAX_PIXELS = 64_000_000


@dataclass
class Sample:
    """One evaluation image.

    Attributes
    ----------
    stem : file name without extension.
    rgb : (H, W, 3) uint8 RGB image.
    gt : (H, W) uint8 ground-truth class ids.
    box : (4,) float32 largest face box ``x1, y1, x2, y2``, or None when no face was found.
    landmarks5 : (5, 2) float32 SCRFD points of that face, or None.
    """

    stem: str
    rgb: np.ndarray
    gt: np.ndarray
    box: np.ndarray | None
    landmarks5: np.ndarray | None


@dataclass
class BackendResult:
    """Accumulated accuracy and timing of one backend.

    Attributes
    ----------
    name : backend name.
    classes : class ids the backend can predict.
    confusion : (19, 19) int64 pixel counts, rows ground truth, columns prediction.
    seconds : wall time of alignment, landmarks (if any), parsing and warping back.
    images : images evaluated.
    """

    name: str
    classes: tuple[int, ...]
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((19, 19), np.int64))
    seconds: float = 0.0
    images: int = 0

    def iou(self) -> np.ndarray:
        """(19,) float64 IoU per class; NaN where the class is absent from both."""
        return class_iou(self.confusion)

    def miou(self, classes: Sequence[int]) -> float:
        """Mean IoU over ``classes``, skipping classes absent from ground truth and
        prediction (NaN when all are absent)."""
        values = self.iou()[list(classes)]
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    @property
    def own_classes(self) -> tuple[int, ...]:
        """The backend's predictable classes without background."""
        return tuple(c for c in self.classes if c != 0)


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, n: int = NUM_CLASSES) -> np.ndarray:
    """(n, n) int64 pixel counts of ``gt`` (rows) against ``pred`` (columns).

    Both are integer label maps of the same shape with values in [0, n).
    """
    if gt.shape != pred.shape:
        raise ValueError(f"label maps differ in shape: {gt.shape} vs {pred.shape}")
    idx = gt.astype(np.int64).ravel() * n + pred.astype(np.int64).ravel()
    return np.bincount(idx, minlength=n * n).reshape(n, n)


def class_iou(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN) from a confusion matrix; NaN where 0/0."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def load_samples(data_dir: Path, detector: FaceDetector, limit: int | None) -> list[Sample]:
    """Read images and masks (sorted by name, first ``limit``) and detect the largest face.

    Raises
    ------
    FileNotFoundError : no images, or an image without its mask.
    ValueError : an image that cannot be decoded, or a mask of another size.
    """
    paths = sorted((Path(data_dir) / "images").glob("*.jpg"))
    if limit is not None:
        paths = paths[:limit]
    if not paths:
        raise FileNotFoundError(f"no images in {Path(data_dir) / 'images'}")
    samples = []
    for path in paths:
        decoded = load_image(path, MAX_PIXELS)
        if decoded.image is None:
            raise ValueError(f"{path}: {decoded.reason} {decoded.detail}")
        mask_path = Path(data_dir) / "masks" / f"{path.stem}.png"
        gt = np.asarray(Image.open(mask_path)).astype(np.uint8)
        if gt.shape != decoded.image.shape[:2]:
            raise ValueError(f"{mask_path}: mask {gt.shape} vs image {decoded.image.shape}")
        found = detector.detect(decoded.image)
        box = found.boxes[0] if len(found) else None
        lm5 = found.landmarks[0] if len(found) else None
        samples.append(Sample(path.stem, decoded.image, gt, box, lm5))
    return samples


def predict_labels(
    backend: MaskBackend,
    samples: Sequence[Sample],
    facemesh: FaceMesh | None = None,
) -> list[np.ndarray]:
    """Label maps of the samples' faces in their original image frames.

    Parameters
    ----------
    backend : the parser.
    samples : images with a detected face (``box`` and ``landmarks5`` set); others get an
        all-background map.
    facemesh : landmark model, required when ``backend.needs_landmarks``.

    Returns
    -------
    One (H, W) uint8 label map per sample.
    """
    size, template = backend.crop_size, backend.crop_template
    crops, mats, lms, with_face = [], [], [], []
    for i, s in enumerate(samples):
        if s.box is None:
            continue
        crop, M = align_face(s.rgb, s.landmarks5, size, template)
        crops.append(crop)
        mats.append(M)
        with_face.append(i)
        if backend.needs_landmarks:
            if facemesh is None:
                raise ValueError(f"backend {backend.name!r} needs a FaceMesh model")
            pts = facemesh.predict(s.rgb, s.box).astype(np.float64)
            scale = np.sqrt(abs(np.linalg.det(M[:, :2])))
            lms.append(np.column_stack([transform_points(pts[:, :2], M), pts[:, 2] * scale]))
    out = [np.zeros(s.gt.shape, np.uint8) for s in samples]
    if not crops:
        return out
    labels = backend.parse(np.stack(crops), np.stack(lms) if lms else None)
    for label, M, i in zip(labels, mats, with_face, strict=True):
        h, w = samples[i].gt.shape
        out[i] = cv2.warpAffine(
            label,
            M,
            (w, h),
            flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
    return out


def evaluate(
    backend: MaskBackend,
    samples: Sequence[Sample],
    facemesh: FaceMesh | None = None,
    batch_size: int = 16,
) -> BackendResult:
    """Accumulate the confusion matrix and timing of one backend over the samples."""
    result = BackendResult(backend.name, tuple(backend.classes))
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        t0 = time.perf_counter()
        preds = predict_labels(backend, chunk, facemesh)
        result.seconds += time.perf_counter() - t0
        for s, pred in zip(chunk, preds, strict=True):
            result.confusion += confusion_matrix(s.gt, pred)
        result.images += len(chunk)
    return result


def _fmt(x: float) -> str:
    return "   -  " if not np.isfinite(x) else f"{x:6.3f}"


def format_table(
    results: Sequence[BackendResult], unavailable: dict[str, str], detect_rate: float
) -> str:
    """The report: per-class IoU per backend, mIoU summaries and speed."""
    names = [r.name for r in results]
    lines = ["IoU per class (dataset-level; '-' = never predicted by the backend)", ""]
    lines.append(f"{'id':>3} {'class':<12}" + "".join(f"{n:>10}" for n in names))
    ious = [r.iou() for r in results]
    for c in range(NUM_CLASSES):
        cells = "".join(
            f"{_fmt(iou[c] if c in r.classes else float('nan')):>10}"
            for r, iou in zip(results, ious, strict=True)
        )
        lines.append(f"{c:>3} {CLASS_NAMES[c]:<12}{cells}")
    lines.append("")
    for r in results:
        own = r.own_classes
        lines.append(
            f"{r.name}: mIoU over its {len(own)} classes {list(own)} (background excluded) = "
            f"{r.miou(own):.4f}; face-interior mIoU {list(FACE_INTERIOR)} = "
            f"{r.miou(FACE_INTERIOR):.4f}; "
            f"{r.images / max(r.seconds, 1e-9):.1f} images/s over {r.images} images "
            "(align + landmarks + parse + warp back)"
        )
    for name, why in unavailable.items():
        lines.append(f"{name}: not available ({why})")
    lines.append(f"detection (SCRFD, shared by all backends): {detect_rate:.1f} images/s")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; prints the report and returns 0."""
    paths = ProjectPaths.resolve()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=200, help="images (sorted by name)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated names")
    parser.add_argument("--models-dir", type=Path, default=paths.models_dir)
    parser.add_argument(
        "--data-dir", type=Path, default=paths.data_root / DEFAULT_DATASET, help="images/, masks/"
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch, ORT)")
    parser.add_argument("--device", default="cpu", help="torch device of the network parsers")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)

    store = ModelStore(args.models_dir)
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        parser.error(f"unknown backends {unknown}; known: {', '.join(BACKENDS)}")
    backends, unavailable = [], {}
    for name in names:
        try:
            backends.append(build_mask_backend(name, store, args.threads, args.device))
        except BackendUnavailableError as e:
            spec = store.spec(BACKENDS[name].requires[0])
            unavailable[name] = f"missing {spec.file}"
            print(f"[skip] {e}".split(". Details")[0])
    facemesh = None
    if any(b.needs_landmarks for b in backends):
        facemesh = FaceMesh(store, threads=args.threads)

    detector = FaceDetector(store.path(DetectionConfig().model), DetectionConfig(), args.threads)
    t0 = time.perf_counter()
    samples = load_samples(args.data_dir, detector, args.limit)
    detect_rate = len(samples) / (time.perf_counter() - t0)
    missed = sum(s.box is None for s in samples)
    print(f"{len(samples)} images from {args.data_dir}, {missed} without a detected face")

    results = [evaluate(b, samples, facemesh, args.batch_size) for b in backends]
    print(format_table(results, unavailable, detect_rate))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
