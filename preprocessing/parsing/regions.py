"""RAFSwap's four facial-region masks from CelebAMask-HQ label maps.

RAFSwap (Xu et al., CVPR 2022, "Region-Aware Face Swapping") attends to four regions parsed
by a CelebAMask-HQ face parser: lips, nose, brows and eyes. Here each region is the union of
its CelebAMask-HQ classes (:data:`REGION_CLASSES`).
"""

from __future__ import annotations

import numpy as np

#: Region names, in channel order.
REGION_NAMES: tuple[str, ...] = ("lips", "nose", "brows", "eyes")

#: CelebAMask-HQ class ids of each region (upper + lower lip, nose, both brows, both eyes).
REGION_CLASSES: tuple[tuple[int, ...], ...] = ((11, 12), (2,), (6, 7), (4, 5))


def raf_regions(label_map: np.ndarray) -> np.ndarray:
    """Binary region masks of one or more label maps.

    Parameters
    ----------
    label_map : (..., H, W) integer CelebAMask-HQ class ids (e.g. (H, W) or (N, H, W)).

    Returns
    -------
    (..., H, W, 4) uint8 masks with values {0, 255}; channels lips, nose, brows, eyes
    (:data:`REGION_NAMES`).

    Raises
    ------
    ValueError : ``label_map`` is not an integer array with at least 2 dimensions.
    """
    labels = np.asarray(label_map)
    if labels.ndim < 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"expected an integer (..., H, W) label map, got {labels.dtype} {labels.shape}"
        )
    masks = [np.isin(labels, classes) for classes in REGION_CLASSES]
    return (np.stack(masks, axis=-1) * 255).astype(np.uint8)
