"""Paste a swapped aligned face crop back into its frame with a soft, landmark-adjusted mask.

GHOST (Chesakov et al. 2022, "A new face swap method for image and video domains: a technical
report", §III.C and Fig. 2): the transformation matrix of each aligned face is kept; the
generated face is warped back with its inverse and blended through a face mask whose edges are
Gaussian-blurred, so brightness differences and the generator's blur do not leave a seam.
The mask also changes with the landmarks of the generated and the target face: when the
generated face is wider it is enlarged (the new face shape transfers), when it is narrower it
is shrunk and blurred more (only the central face transfers).

All masks, crops and landmarks here are in CROP pixels of one aligned crop; ``M`` maps image
pixels to crop pixels (:func:`preprocessing.align.align_face`).

The mask adjustment of :func:`adjust_mask` (GHOST's ``face_mask_static`` uses fixed pixel
steps on 224-pixel crops; here every size is a fraction of the target face width ``W``):

- face axis ``u``: unit vector from the mean of the target's image-left cheek/jaw contour
  (:data:`SIDE_IMAGE_LEFT`) to the mean of its mirror contour (:data:`SIDE_IMAGE_RIGHT`);
  ``W``: extent of the target's face oval (:data:`FACE_OVAL`) along ``u``;
- outward offset of each side: mean displacement, along ``u`` and away from the face, of the
  swap's contour points from the target's; ``spread`` = the smaller of the two sides (a face
  narrower on either side counts as narrower, as in GHOST), ``δ = spread / W``;
- ``|δ| ≤`` :data:`DEAD_ZONE` (0.01): mask unchanged, blur σ = :data:`BASE_BLUR` · W (0.04 W);
- ``δ > 0.01`` (wider): dilate with a disc of radius ``min(δ, MAX_CHANGE) · W`` (the mask's
  edge moves onto the swap's contour; :data:`MAX_CHANGE` = 0.15), σ = 0.04 W;
- ``δ < −0.01`` (narrower): σ = (0.04 + ``min(|δ|, 0.15)``) · W (more blur the narrower), and
  erode with a disc of radius ``min(|δ|, 0.15) · W + 0.04 W`` (the edge moves onto the swap's
  contour and one base blur width further in, so the soft edge stays on the swap's face).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from infra.geometry import invert_affine, transform_points
from preprocessing.parsing.base import FACE_INTERIOR
from preprocessing.parsing.facemesh_regions import FACE_OVAL

#: CelebAMask-HQ classes the face mask keeps: skin, nose, eyes, brows, mouth, lips.
FACE_CLASSES: tuple[int, ...] = FACE_INTERIOR

#: FaceMesh cheek/jaw contour on the image-left side (subject's right), forehead to chin.
SIDE_IMAGE_LEFT: tuple[int, ...] = (162, 127, 234, 93, 132, 58, 172, 136)
#: Mirror points of :data:`SIDE_IMAGE_LEFT` on the image-right side (MediaPipe mesh pairs).
SIDE_IMAGE_RIGHT: tuple[int, ...] = (389, 356, 454, 323, 361, 288, 397, 365)

#: Relative width change (fraction of the target face width) below which the mask is kept.
DEAD_ZONE = 0.01
#: Gaussian σ of the mask edge as a fraction of the target face width (GHOST: 5 px on a
#: 224-pixel crop whose face is ≈ 130 px wide).
BASE_BLUR = 0.04
#: Largest dilation or erosion offset, fraction of the face width.
MAX_CHANGE = 0.15


def face_mask_from_labels(label_map: np.ndarray) -> np.ndarray:
    """Face mask from a CelebAMask-HQ label map.

    Parameters
    ----------
    label_map : (S, S) integer class ids (see :mod:`preprocessing.parsing.base`).

    Returns
    -------
    (S, S) float32, 1 on the classes in :data:`FACE_CLASSES` (1, 2, 4, 5, 6, 7, 10, 11, 12),
    0 elsewhere (hair, ears, neck, glasses, background…).

    Raises
    ------
    ValueError : ``label_map`` is not 2-D.
    """
    labels = np.asarray(label_map)
    if labels.ndim != 2:
        raise ValueError(f"expected a 2-D label map, got {labels.shape}")
    return np.isin(labels, FACE_CLASSES).astype(np.float32)


def _xy468(landmarks: np.ndarray, name: str) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] != 468 or pts.shape[1] < 2:
        raise ValueError(f"{name}: expected (468, 2 or 3) FaceMesh landmarks, got {pts.shape}")
    return pts[:, :2]


def face_mask_from_landmarks(landmarks468: np.ndarray, size: int) -> np.ndarray:
    """Face mask filling the FaceMesh face oval.

    Parameters
    ----------
    landmarks468 : (468, 2 or 3) FaceMesh landmarks in crop pixels (``z`` ignored).
    size : crop side ``S`` in pixels.

    Returns
    -------
    (S, S) float32, 1 inside the polygon of MediaPipe's ``FACEMESH_FACE_OVAL`` (36 points,
    :data:`preprocessing.parsing.facemesh_regions.FACE_OVAL`), 0 outside.

    Raises
    ------
    ValueError : landmarks not (468, 2+) or ``size`` < 1.
    """
    xy = _xy468(landmarks468, "landmarks468")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    mask = np.zeros((size, size), np.uint8)
    shift = 4
    poly = np.round(xy[list(FACE_OVAL)] * (1 << shift)).astype(np.int32)[None]
    cv2.fillPoly(mask, poly, 1, lineType=cv2.LINE_8, shift=shift)
    return mask.astype(np.float32)


def width_change(lmk_swap: np.ndarray, lmk_target: np.ndarray) -> tuple[float, float]:
    """How much wider the swapped face is than the target face.

    Parameters
    ----------
    lmk_swap, lmk_target : (468, 2 or 3) FaceMesh landmarks of the swapped and the target
        face, crop pixels of the same crop.

    Returns
    -------
    (spread, width) : ``spread`` in pixels, the smaller of the two sides' mean outward
    offsets of the swap's cheek/jaw contour from the target's along the target's face axis
    (> 0 wider, < 0 narrower on at least one side); ``width`` the target's face-oval extent
    along that axis, pixels.

    Raises
    ------
    ValueError : landmarks not (468, 2+) or a degenerate target face (width < 1 px).
    """
    swap = _xy468(lmk_swap, "lmk_swap")
    tgt = _xy468(lmk_target, "lmk_target")
    left, right = list(SIDE_IMAGE_LEFT), list(SIDE_IMAGE_RIGHT)
    axis = tgt[right].mean(0) - tgt[left].mean(0)
    norm = float(np.hypot(*axis))
    if norm < 1.0:
        raise ValueError("target landmarks are degenerate (cheeks coincide)")
    axis /= norm
    proj = tgt[list(FACE_OVAL)] @ axis
    width = float(proj.max() - proj.min())
    out_left = float(((tgt[left] - swap[left]) @ axis).mean())
    out_right = float(((swap[right] - tgt[right]) @ axis).mean())
    return min(out_left, out_right), width


def _disc(radius: float) -> np.ndarray | None:
    r = round(radius)
    if r < 1:
        return None
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def adjust_mask(
    mask: np.ndarray, lmk_swap: np.ndarray, lmk_target: np.ndarray
) -> tuple[np.ndarray, float]:
    """GHOST's landmark-driven mask change (§III.C): enlarge for a wider swapped face,
    shrink and blur more for a narrower one.

    Parameters
    ----------
    mask : (S, S) face mask in [0, 1] (e.g. :func:`face_mask_from_landmarks` of the target),
        crop pixels.
    lmk_swap, lmk_target : (468, 2 or 3) FaceMesh landmarks of the swapped and the target
        face in the same crop pixels.

    Returns
    -------
    mask : (S, S) float32 in [0, 1], dilated, eroded or unchanged (not yet blurred).
    blur_px : Gaussian σ in crop pixels for :func:`paste_back`.

    Notes
    -----
    The rule and its parameters (fractions of the target face width ``W``) are in the module
    docstring: dead zone 0.01 W, base σ 0.04 W, dilation by the outward offset, erosion by
    the inward offset plus 0.04 W with σ raised by the inward offset, offsets capped at
    0.15 W. Discs (elliptic structuring elements) change the mask equally in all directions.

    Raises
    ------
    ValueError : ``mask`` not 2-D, landmarks not (468, 2+), or a degenerate target face.
    """
    m = np.asarray(mask, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got {m.shape}")
    spread, width = width_change(lmk_swap, lmk_target)
    delta = spread / width
    base = BASE_BLUR * width
    if abs(delta) <= DEAD_ZONE:
        return m.copy(), base
    change = min(abs(delta), MAX_CHANGE) * width
    if delta > 0:
        kernel = _disc(change)
        out = cv2.dilate(m, kernel) if kernel is not None else m.copy()
        return np.clip(out, 0.0, 1.0), base
    kernel = _disc(change + base)
    out = cv2.erode(m, kernel) if kernel is not None else m.copy()
    return np.clip(out, 0.0, 1.0), base + change


def paste_back(
    frame: np.ndarray, swap: np.ndarray, M: np.ndarray, mask: np.ndarray, blur_px: float = 0.0
) -> np.ndarray:
    """Warp a swapped crop and its blurred mask into the frame and alpha-blend.

    Parameters
    ----------
    frame : (H, W, 3) uint8 RGB target frame.
    swap : (S, S, 3) uint8 RGB generated face, aligned like the target's crop.
    M : (2, 3) float matrix mapping frame pixels to crop pixels (as from
        :func:`preprocessing.align.align_face`); the crop is warped back with its inverse.
    mask : (S, S) float in [0, 1], 1 where the swap replaces the frame (crop pixels).
    blur_px : Gaussian σ of the mask edge in crop pixels (0: no blur). With blur, the mask is
        first set to 0 within ``ceil(3 σ)`` pixels of the crop border (GHOST's
        ``fade_to_border`` uses 2 σ) and blurred with a zero border, so α ≤ Φ(−3) ≈ 0.001 at
        the crop's edge and the crop's outline leaves no seam.

    Returns
    -------
    (H, W, 3) uint8: ``frame · (1 − α) + warped_swap · α`` rounded, with α the warped,
    blurred mask (bilinear); pixels outside the warped crop (α = 0) equal ``frame`` exactly.

    Raises
    ------
    ValueError : shapes or dtypes do not match the above, or ``blur_px`` < 0.
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame: expected (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    S = swap.shape[0]
    if swap.shape != (S, S, 3) or swap.dtype != np.uint8:
        raise ValueError(f"swap: expected (S, S, 3) uint8, got {swap.shape} {swap.dtype}")
    alpha_crop = _soft_mask(mask, S, blur_px)
    return _warp_blend(frame, swap, M, alpha_crop)


def paste_back_poisson(
    frame: np.ndarray, swap: np.ndarray, M: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """Warp a swapped crop into the frame and blend it by Poisson image editing (Pérez et
    al. 2003): inside the mask the result keeps the swap's gradients and takes its values on
    the mask's border from the frame (OpenCV ``seamlessClone``, ``NORMAL_CLONE``), so a
    brightness or colour offset between swap and frame disappears. Seed 000 §II.A blends
    its Korshunova-style output this way; Korshunova et al. 2017 use seamless cloning too.

    Parameters
    ----------
    frame : (H, W, 3) uint8 RGB target frame.
    swap : (S, S, 3) uint8 RGB generated face, aligned like the target's crop.
    M : (2, 3) float matrix mapping frame pixels to crop pixels.
    mask : (S, S) float, > 0.5 where the swap replaces the frame (crop pixels).

    Returns
    -------
    (H, W, 3) uint8; pixels outside the warped mask equal ``frame`` exactly (also when the
    mask is empty or falls outside the frame).

    Raises
    ------
    ValueError : shapes or dtypes do not match the above.
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame: expected (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    S = swap.shape[0]
    if swap.shape != (S, S, 3) or swap.dtype != np.uint8 or np.shape(mask) != (S, S):
        raise ValueError(
            f"swap: expected (S, S, 3) uint8 and mask (S, S), got {swap.shape} {swap.dtype}, "
            f"{np.shape(mask)}"
        )
    H, W = frame.shape[:2]
    inv = invert_affine(M)
    face = cv2.warpAffine(
        swap, inv, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    region = (np.asarray(mask, np.float32) > 0.5).astype(np.uint8) * 255
    region = cv2.warpAffine(region, inv, (W, H), flags=cv2.INTER_NEAREST)
    # seamlessClone needs a one-pixel margin to the frame's edge for its border condition
    region[:2], region[-2:], region[:, :2], region[:, -2:] = 0, 0, 0, 0
    if not region.any():
        return frame.copy()
    x, y, w, h = cv2.boundingRect(region)
    # OpenCV places the mask's bounding box at centre − extent // 2: this centre keeps it where
    # it is (no shift). seamlessClone writes into its mask argument (OpenCV 5.0.0: a second
    # call with the same array clones nothing), hence the copy.
    center = (x + w // 2, y + h // 2)
    out = cv2.seamlessClone(face, frame, region.copy(), center, cv2.NORMAL_CLONE)
    keep = region == 0
    out[keep] = frame[keep]
    return out


def warped_alpha(
    mask: np.ndarray, M: np.ndarray, frame_shape: tuple[int, ...], blur_px: float = 0.0
) -> np.ndarray:
    """The blending weight :func:`paste_back` uses, in frame pixels.

    Parameters
    ----------
    mask : (S, S) float in [0, 1], crop pixels.
    M : (2, 3) frame → crop matrix.
    frame_shape : ``(H, W, …)`` of the frame.
    blur_px : Gaussian σ of the mask edge in crop pixels (as :func:`paste_back`).

    Returns
    -------
    (H, W) float32 α in [0, 1]; where it is 0, :func:`paste_back` leaves the frame unchanged.

    Raises
    ------
    ValueError : ``mask`` is not square or ``blur_px`` < 0.
    """
    S = np.shape(mask)[0]
    H, W = frame_shape[:2]
    alpha = cv2.warpAffine(
        _soft_mask(mask, S, blur_px),
        invert_affine(M),
        (W, H),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
    )
    return np.clip(alpha, 0.0, 1.0)


def _soft_mask(mask: np.ndarray, S: int, blur_px: float) -> np.ndarray:
    """(S, S) float32 α in crop pixels: ``mask`` clipped to [0, 1]; with ``blur_px`` > 0,
    zeroed within ``ceil(3 σ)`` px of the border and Gaussian-blurred (zero border).
    ValueError on a mask of another shape or a negative ``blur_px``."""
    alpha_crop = np.asarray(mask, dtype=np.float32)
    if alpha_crop.shape != (S, S):
        raise ValueError(f"mask: expected ({S}, {S}), got {alpha_crop.shape}")
    if not blur_px >= 0:
        raise ValueError(f"blur_px must be >= 0, got {blur_px}")
    alpha_crop = np.clip(alpha_crop, 0.0, 1.0)
    if blur_px > 0:
        border = min(math.ceil(3 * blur_px), S // 2)
        alpha_crop = alpha_crop.copy()
        alpha_crop[:border] = 0
        alpha_crop[S - border :] = 0
        alpha_crop[:, :border] = 0
        alpha_crop[:, S - border :] = 0
        alpha_crop = cv2.GaussianBlur(
            alpha_crop, (0, 0), sigmaX=float(blur_px), borderType=cv2.BORDER_CONSTANT
        )
    return alpha_crop


def _warp_blend(
    frame: np.ndarray, swap: np.ndarray, M: np.ndarray, alpha_crop: np.ndarray
) -> np.ndarray:
    """Warp the (S, S, 3) uint8 swap and its (S, S) α back with the inverse of ``M`` into the
    frame's region the crop covers and alpha-blend there; (H, W, 3) uint8 out."""
    S = swap.shape[0]
    H, W = frame.shape[:2]
    inv = invert_affine(M)
    corners = transform_points(np.array([[0, 0], [S, 0], [0, S], [S, S]], np.float64), inv)
    x0 = max(math.floor(corners[:, 0].min()) - 1, 0)
    y0 = max(math.floor(corners[:, 1].min()) - 1, 0)
    x1 = min(math.ceil(corners[:, 0].max()) + 2, W)
    y1 = min(math.ceil(corners[:, 1].max()) + 2, H)
    out = frame.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    inv_roi = inv.copy()
    inv_roi[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    face = cv2.warpAffine(
        swap, inv_roi, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    ).astype(np.float32)
    alpha = cv2.warpAffine(
        alpha_crop, inv_roi, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    alpha = np.clip(alpha, 0.0, 1.0)[..., None]
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    blended = roi + alpha * (face - roi)
    out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
