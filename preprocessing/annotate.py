"""Annotations of one kept face, computed in pass 2 of ``prepare``.

For each face: aligned crops in the configured templates (the first is the primary crop),
the identity embedding (from a 112-px ArcFace crop of the original image), FaceMesh
468-point landmarks, a 19-class CelebAMask-HQ label map from the configured backend, the
four RAFSwap region masks derived from it, and the ground-truth label map when the source
has one. Landmarks and masks are given in primary-crop pixels; every crop's 2×3
image→crop transform is stored so a swap can be pasted back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from infra.dataset_format import encode_sample
from infra.geometry import compose_affine, invert_affine, transform_points
from infra.identity import IdentityEncoder
from infra.models import ModelStore
from infra.paths import ProjectPaths
from preprocessing.align import align_face, estimate_transform
from preprocessing.config import PrepareConfig
from preprocessing.decode import load_image
from preprocessing.facemesh import FaceMesh
from preprocessing.parsing import BackendUnavailableError, build_mask_backend
from preprocessing.parsing.regions import REGION_NAMES, raf_regions


def resolve_mask_backend(name: str, store: ModelStore, threads: int = 1, device: str = "cpu"):
    """The configured label-map backend on ``device`` (torch device string), or None for
    ``none``. ``auto`` picks BiSeNet when its weights are present and the small U-Net
    otherwise. An explicitly named backend whose weights are missing raises
    :class:`BackendUnavailableError` naming the file."""
    if name == "none":
        return None
    if name == "auto":
        try:
            return build_mask_backend("bisenet", store, threads=threads, device=device)
        except BackendUnavailableError:
            return build_mask_backend("unet", store, threads=threads, device=device)
    return build_mask_backend(name, store, threads=threads, device=device)


def regions_bitmask(label_map: np.ndarray) -> np.ndarray:
    """RAFSwap regions packed in one uint8 image: bit k set where region k (lips, nose,
    brows, eyes — :data:`REGION_NAMES` order) covers the pixel."""
    masks = raf_regions(label_map) > 0  # (H, W, 4)
    return (masks * (1 << np.arange(masks.shape[-1], dtype=np.uint8))).sum(-1).astype(np.uint8)


@dataclass
class FaceAnnotation:
    """All annotations of one face (arrays in primary-crop pixels)."""

    key: str
    crops: dict[str, np.ndarray]
    face112: np.ndarray
    meta: dict
    landmarks468: np.ndarray | None = None
    mask: np.ndarray | None = None
    gt_mask: np.ndarray | None = None
    embedding: np.ndarray | None = None
    extras: dict = field(default_factory=dict)

    def encode(self, quality: int) -> dict:
        """The WebDataset sample (every value bytes), files as :mod:`infra.dataset_format`."""
        names = list(self.crops)
        files = {"jpg": self.crops[names[0]]}
        files.update({f"{name}.jpg": self.crops[name] for name in names[1:]})
        files["id.npy"] = self.embedding
        files["lmk468.npy"] = self.landmarks468
        if self.mask is not None:
            files["mask.png"] = self.mask
            files["regions.png"] = regions_bitmask(self.mask)
        files["gtmask.png"] = self.gt_mask
        files["json"] = self.meta
        return encode_sample(self.key, files, quality)


class FaceAnnotator:
    """Holds the pass-2 models of one actor and annotates batches of kept faces.

    Parameters
    ----------
    cfg : prepare config (``cfg.annotate`` selects what is computed).
    paths : project paths: models from ``paths.models_dir``; rows' ``path`` and
        ``mask_path`` resolve against ``paths.data_root`` (:meth:`ProjectPaths.data_path`).
    threads, use_gpu : inference settings.

    Raises
    ------
    infra.models.ModelError
        A model file is missing or altered.
    BackendUnavailableError
        The explicitly chosen mask backend has no weights.
    """

    def __init__(
        self, cfg: PrepareConfig, paths: ProjectPaths, threads: int = 1, use_gpu: bool = False
    ):
        import torch

        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        store = ModelStore(paths.models_dir)
        self.cfg = cfg
        self.paths = paths
        self.identity_encoder = IdentityEncoder(
            store, cfg.identity_model, threads=threads, use_gpu=use_gpu
        )
        device = "cuda" if use_gpu else "cpu"
        self.backend = resolve_mask_backend(cfg.annotate.mask_backend, store, threads, device)
        need_mesh = cfg.annotate.landmarks_468 or (self.backend and self.backend.name == "facemesh")
        self.facemesh = FaceMesh(store, threads=threads, use_gpu=use_gpu) if need_mesh else None

    @property
    def mask_backend_name(self) -> str | None:
        return self.backend.name if self.backend is not None else None

    def prepare_one(self, row: dict) -> FaceAnnotation:
        """Decode and align one face (no model yet: :meth:`finish` runs them on a batch).

        Parameters
        ----------
        row : one manifest row of a kept face (``key``, ``path``, ``landmarks`` (10,),
            ``bbox`` (4,), pose, ``mask_path``…), paths relative to ``paths.data_root``.

        Returns
        -------
        FaceAnnotation
            Crops (S, S, 3) uint8, the 112-px ArcFace crop, metadata and the ground-truth
            mask when the source has one; :meth:`finish` adds the rest.

        Raises
        ------
        RuntimeError
            The image no longer decodes; any error of alignment.
        """
        decoded = load_image(self.paths.data_path(row["path"]), self.cfg.max_image_pixels)
        if decoded.image is None:
            raise RuntimeError(f"{decoded.reason}: {decoded.detail} (changed since detection?)")
        img = decoded.image
        kps = np.asarray(row["landmarks"], dtype=np.float64).reshape(5, 2)
        crops, transforms = {}, {}
        for c in self.cfg.annotate.crops:
            crops[c.name], transforms[c.name] = align_face(img, kps, c.size, c.template)
        primary = self.cfg.annotate.crops[0]
        M = transforms[primary.name]
        face112, _ = align_face(img, kps, self.identity_encoder.input_size, "arcface")
        meta = self._meta(row, kps, transforms)
        ann = FaceAnnotation(key=row["key"], crops=crops, face112=face112, meta=meta)
        ann.extras = {"image": img, "M": M, "kps": kps, "bbox": row["bbox"]}
        if row.get("mask_path"):
            label = _read_label_map(self.paths.data_path(row["mask_path"]))
            ann.gt_mask = _warp_label_map(label, M, img.shape, primary.size)
            meta["has_gt_mask"] = True
        return ann

    def _meta(self, row: dict, kps: np.ndarray, transforms: dict[str, np.ndarray]) -> dict:
        """The sample's ``json``: source row, 5 points in image and primary-crop pixels, pose
        (degrees) and every crop's 2×3 image→crop transform."""
        primary = self.cfg.annotate.crops[0]
        M = transforms[primary.name]
        return {
            "key": row["key"],
            "identity": row["identity"],
            "source": row["source"],
            "path": row["listed"],
            "split": row["split"],
            "width": row["width"],
            "height": row["height"],
            "bbox": [round(float(v), 2) for v in row["bbox"]],
            "det_score": round(float(row["det_score"]), 4),
            "landmarks": np.round(kps, 2).tolist(),
            "landmarks_aligned": np.round(transform_points(kps, M), 2).tolist(),
            "pose": {k: round(float(row[k]), 2) for k in ("yaw", "pitch", "roll", "eye_roll")},
            "template": primary.template,
            "crop_size": primary.size,
            "transform": np.round(M, 6).tolist(),
            "crops": {
                c.name: {
                    "template": c.template,
                    "size": c.size,
                    "transform": np.round(transforms[c.name], 6).tolist(),
                }
                for c in self.cfg.annotate.crops
            },
            "mask_backend": self.mask_backend_name,
        }

    def finish(self, anns: list[FaceAnnotation]) -> None:
        """The models over prepared faces, each as one batch: FaceMesh landmarks, identity
        embeddings and label maps; frees the images. Raises what a model raises (the caller
        retries face by face to find the one that fails)."""
        if not anns:
            return
        if self.facemesh is not None:
            lms = self.facemesh.predict_faces(
                [a.extras["image"] for a in anns],
                np.asarray([a.extras["bbox"] for a in anns], dtype=np.float64),
            )
            for a, lm in zip(anns, lms, strict=True):
                a.extras["lmk468_image"] = lm
                if self.cfg.annotate.landmarks_468:
                    a.landmarks468 = _points_to_crop(lm, a.extras["M"])
        emb = self.identity_encoder.embed(np.stack([a.face112 for a in anns]))
        for a, e in zip(anns, emb, strict=True):
            a.embedding = e
        if self.backend is not None:
            self._label_maps(anns)
        for a in anns:
            a.extras = {}

    def _label_maps(self, anns: list[FaceAnnotation]) -> None:
        """Parse every face in the backend's own crop, then warp the (S, S) uint8 label map
        into the primary crop (nearest neighbour, 0 = background outside)."""
        size, template = self.backend.crop_size, self.backend.crop_template
        faces, Ms, lms = [], [], []
        for a in anns:
            Mb = estimate_transform(a.extras["kps"], size, template)
            faces.append(
                cv2.warpAffine(
                    a.extras["image"],
                    Mb,
                    (size, size),
                    flags=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT,
                )
            )
            Ms.append(Mb)
            if "lmk468_image" in a.extras:
                lms.append(_points_to_crop(a.extras["lmk468_image"], Mb))
        labels = self.backend.parse(
            np.stack(faces), np.stack(lms) if len(lms) == len(anns) else None
        )
        primary = self.cfg.annotate.crops[0].size
        for a, Mb, lab in zip(anns, Ms, labels, strict=True):
            to_primary = compose_affine(a.extras["M"], invert_affine(Mb))
            a.mask = cv2.warpAffine(
                lab,
                to_primary,
                (primary, primary),
                flags=cv2.INTER_NEAREST,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            )


def _points_to_crop(points: np.ndarray, M: np.ndarray) -> np.ndarray:
    """(N, 3) image points → crop pixels; z is scaled like x and y."""
    xy = transform_points(points[:, :2], M)
    scale = float(np.sqrt(abs(np.linalg.det(M[:, :2]))))
    return np.concatenate([xy, points[:, 2:3] * scale], axis=1).astype(np.float32)


def _read_label_map(path: Path) -> np.ndarray:
    """A label PNG (palette or gray, pixel = class id) → (H, W) uint8."""
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim == 3:
        arr = arr[..., 0]
    return arr.astype(np.uint8)


def _warp_label_map(label: np.ndarray, M: np.ndarray, image_shape: tuple, size: int) -> np.ndarray:
    """Warp a label map given at its own resolution into a crop of the image."""
    h, w = image_shape[:2]
    to_image = np.array([[w / label.shape[1], 0, 0], [0, h / label.shape[0], 0]])
    return cv2.warpAffine(
        label,
        compose_affine(M, to_image),
        (size, size),
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


__all__ = ["REGION_NAMES", "FaceAnnotation", "FaceAnnotator", "regions_bitmask"]
