"""MediaPipe FaceMesh wrapper on real faces: agreement with SCRFD, batching, geometry."""

import numpy as np
import pytest

from infra.models import ModelStore
from preprocessing.config import DetectionConfig
from preprocessing.decode import load_image
from preprocessing.detect import FaceDetector
from preprocessing.facemesh import FaceMesh, crop_matrix
from preprocessing.parsing.facemesh_regions import LEFT_EYE, RIGHT_EYE
from tests.conftest import FACES

LFW = FACES / "lfw_subset_krasserm"
#: Frontal LFW faces whose largest SCRFD detection is the central face.
NAMES = ["Ariel_Sharon", "Colin_Powell", "George_W_Bush", "Gerhard_Schroeder", "Hugo_Chavez"]

# On 30 LFW faces (3 per identity) the mean distance between FaceMesh's and SCRFD's five
# points is 0.046 inter-ocular distances, worst image 0.070 (0.060 / 0.41 with a detector
# that picks a half-visible edge face). A wrong crop scale (2.0: 0.22) or pixel range
# (0-255: 0.27) is far above these bounds.
MAX_IMAGE_ERROR = 0.10
MAX_MEAN_ERROR = 0.07


def five_points(mesh: np.ndarray) -> np.ndarray:
    """SCRFD-order five points from 468 landmarks: eye centres, nose tip, mouth corners."""
    return np.stack(
        [
            mesh[RIGHT_EYE, :2].mean(0),  # subject's right eye = image left
            mesh[LEFT_EYE, :2].mean(0),
            mesh[1, :2],
            mesh[61, :2],
            mesh[291, :2],
        ]
    )


@pytest.fixture(scope="module")
def mesh_setup(models_dir):
    store = ModelStore(models_dir)
    detector = FaceDetector(store.path("scrfd_2.5g_bnkps"), DetectionConfig())
    faces = []
    for name in NAMES:
        rgb = load_image(LFW / name / f"{name}_0001.jpg", 10**8).image
        found = detector.detect(rgb)
        faces.append((rgb, found.boxes[0], found.landmarks[0]))
    return FaceMesh(store, threads=2), faces


def test_agrees_with_scrfd_five_points(mesh_setup):
    facemesh, faces = mesh_setup
    errors = []
    for rgb, box, lm5 in faces:
        mesh = facemesh.predict(rgb, box)
        assert mesh.shape == (468, 3) and mesh.dtype == np.float32
        iod = np.linalg.norm(lm5[1] - lm5[0])
        errors.append(np.linalg.norm(five_points(mesh) - lm5, axis=1).mean() / iod)
    assert max(errors) < MAX_IMAGE_ERROR, errors
    assert np.mean(errors) < MAX_MEAN_ERROR, errors


def test_batch_matches_single_faces(mesh_setup):
    facemesh, faces = mesh_setup
    rgb, box, _ = faces[0]
    boxes = np.stack([box, box + np.array([6, -4, 6, -4]), box * [0.95, 0.95, 1.05, 1.05]])
    batch = facemesh.predict_batch(rgb, boxes)
    assert batch.shape == (3, 468, 3)
    for i, b in enumerate(boxes):
        np.testing.assert_allclose(batch[i], facemesh.predict(rgb, b), atol=1e-3)
    assert facemesh.predict_batch(rgb, np.zeros((0, 4))).shape == (0, 468, 3)


def test_points_follow_the_image_frame(mesh_setup):
    # Padding moves the face: points shift by the padding. Doubling the image and box
    # doubles x, y and z (z is scaled like x).
    facemesh, faces = mesh_setup
    rgb, box, lm5 = faces[1]
    iod = np.linalg.norm(lm5[1] - lm5[0])
    base = facemesh.predict(rgb, box)
    padded = np.pad(rgb, ((40, 0), (25, 0), (0, 0)))
    shifted = facemesh.predict(padded, box + np.array([25, 40, 25, 40]))
    np.testing.assert_allclose(shifted[:, :2] - [25, 40], base[:, :2], atol=0.05 * iod)
    big = np.repeat(np.repeat(rgb, 2, axis=0), 2, axis=1)
    doubled = facemesh.predict(big, box * 2)
    np.testing.assert_allclose(doubled / 2, base, atol=0.05 * iod)
    assert np.ptp(base[:, 2]) > 0.2 * iod  # z carries real depth, scaled like x


def test_crop_leaving_the_image_is_padded_black(mesh_setup):
    # Cut the image at the box's left edge: the 1.2x crop then reaches past the border. It
    # must see the same pixels as the full image with that strip painted black.
    facemesh, faces = mesh_setup
    rgb, box, _ = faces[2]
    x0 = int(box[0])
    assert crop_matrix(box - [x0, 0, x0, 0], facemesh.crop_scale)[0, 2] > 0  # leaves image
    cut = facemesh.predict(np.ascontiguousarray(rgb[:, x0:]), box - [x0, 0, x0, 0])
    blacked = rgb.copy()
    blacked[:, :x0] = 0
    np.testing.assert_allclose(
        cut[:, :2] + [x0, 0], facemesh.predict(blacked, box)[:, :2], atol=1e-2
    )


def test_crop_matrix_is_square_around_box_centre():
    M = crop_matrix(np.array([10.0, 20.0, 110.0, 70.0]), scale=1.5, size=192)
    corners = np.array([[60 - 75, 45 - 75, 1.0], [60 + 75, 45 + 75, 1.0]]) @ M.T
    np.testing.assert_allclose(corners, [[0, 0], [192, 192]], atol=1e-9)
    with pytest.raises(ValueError):
        crop_matrix(np.array([5.0, 5.0, 5.0, 5.0]), 1.5)
