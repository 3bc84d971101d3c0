"""Batched inference in prepare equals one image per call, on real fixtures.

Tolerances: boxes and 5 points within 0.01 px (the batch-major SCRFD graph computes the same
convolutions per image), FSA-Net within 1e-3 degrees, FaceMesh within 1e-2 px, embeddings
within 1e-5 (float rounding of batched matrix products).
"""

from __future__ import annotations

import numpy as np
import pytest

from infra.identity import IdentityEncoder
from infra.models import ModelStore
from infra.paths import PathsConfig, ProjectPaths
from preprocessing.config import PrepareConfig
from preprocessing.decode import load_image
from preprocessing.detect import FaceDetector
from preprocessing.detect_pass import DetectFaces
from preprocessing.facemesh import FaceMesh
from preprocessing.headpose import HeadPose
from preprocessing.records import Reason
from tests.conftest import FACES, MULTI_FACE, NO_FACE, identity_rows

#: Mixed sizes (adaptive detector sides), a group photo, empty images (padding retry).
FILES = [r["path"] for r in identity_rows(1)[:7]] + [
    f"multi_face/{MULTI_FACE[0]}",
    f"no_face/{NO_FACE[0]}",
    f"no_face/{NO_FACE[2]}",
]


@pytest.fixture(scope="module")
def images():
    return [load_image(FACES / f, 10**8).image for f in FILES]


@pytest.fixture(scope="module")
def cfg(models_dir):
    return PrepareConfig.model_validate(
        {"sources": [{"name": "s", "kind": "folder", "path": "x"}], "ray": {"batch_size": 4}}
    )


def test_detector_batches_equal_single_images(images, cfg, models_dir):
    path = ModelStore(models_dir).path(cfg.detection.model)
    single = FaceDetector(path, cfg.detection, batch_size=1)
    batched = FaceDetector(path, cfg.detection, batch_size=4)
    one = [single.detect(im) for im in images]
    many = batched.detect_batch(images)
    assert [len(f) for f in one] == [len(f) for f in many]
    assert sum(len(f) > 1 for f in many) >= 1 and sum(len(f) == 0 for f in many) >= 1
    for a, b in zip(one, many, strict=True):
        assert a.padded == b.padded
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.01)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.01)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


def test_pose_facemesh_and_embeddings_batch_equal_single(images, cfg, models_dir):
    store = ModelStore(models_dir)
    detector = FaceDetector(store.path(cfg.detection.model), cfg.detection, batch_size=4)
    faces = [
        (im, f.boxes[0])
        for im, f in zip(images, detector.detect_batch(images), strict=True)
        if len(f)
    ]
    ims, boxes = [f[0] for f in faces], np.stack([f[1] for f in faces])
    assert len(faces) >= 6

    pose = HeadPose(store)
    batched = pose.predict_batch(ims, boxes)
    single = np.stack([pose.predict(im, b) for im, b in faces])
    np.testing.assert_allclose(batched, single, atol=1e-3)
    assert np.ptp(batched[:, 0]) > 1.0  # the faces differ: the batch is not one face repeated

    mesh = FaceMesh(store)
    batched = mesh.predict_faces(ims, boxes)
    single = np.stack([mesh.predict(im, b) for im, b in faces])
    np.testing.assert_allclose(batched, single, atol=1e-2)

    encoder = IdentityEncoder(store, cfg.identity_model)
    crops = np.stack([cv_crop(im, b) for im, b in faces])
    batched = encoder.embed(crops)
    single = np.concatenate([encoder.embed(c[None]) for c in crops])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def cv_crop(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A 112-px square around a box (the encoder only needs some face-sized input)."""
    import cv2

    x1, y1, x2, y2 = (int(v) for v in box)
    return cv2.resize(image[max(y1, 0) : y2, max(x1, 0) : x2], (112, 112))


def _rows() -> list[dict]:
    keys = ("key", "source", "path", "listed", "identity", "mask_path")
    return [
        dict(zip(keys, (f"k{i}", "s", f, f, f"id{i}", None), strict=True))
        for i, f in enumerate([*FILES, "no_such_file.jpg"])
    ]


@pytest.fixture(scope="module")
def detect_faces(cfg, models_dir, tmp_path_factory):
    paths = ProjectPaths.resolve(
        PathsConfig(
            data_root=str(FACES),
            models_dir=str(models_dir),
            output_dir=str(tmp_path_factory.mktemp("o")),
        )
    )
    return DetectFaces(cfg, paths)


def test_detection_rows_batched_equal_single(detect_faces):
    rows = _rows()
    batched = detect_faces.measure_batch(rows)
    single = [detect_faces.measure(r) for r in rows]
    assert [r["key"] for r in batched] == [r["key"] for r in rows]
    assert batched[-1]["reason"] == Reason.UNREADABLE  # a missing file is a row, not a crash
    assert sum(r["bbox"] is not None for r in batched) >= 7
    for a, b in zip(batched, single, strict=True):
        assert (a["reason"], a["num_faces"], a["phash"]) == (
            b["reason"],
            b["num_faces"],
            b["phash"],
        )
        if a["bbox"] is not None:
            np.testing.assert_allclose(a["bbox"], b["bbox"], atol=0.01)
            np.testing.assert_allclose(
                [a["yaw"], a["pitch"], a["roll"]], [b["yaw"], b["pitch"], b["roll"]], atol=1e-3
            )


def test_a_model_failure_is_recorded_on_its_image_only(detect_faces, monkeypatch):
    rows = _rows()[:4]
    real = detect_faces.detector.detect_batch
    bad = load_image(FACES / FILES[2], 10**8).image

    def fails_on_one(images):
        if any(np.array_equal(im, bad) for im in images):
            raise RuntimeError("simulated model failure")
        return real(images)

    monkeypatch.setattr(detect_faces.detector, "detect_batch", fails_on_one)
    out = detect_faces.measure_batch(rows)
    assert [r["reason"] for r in out] == [None, None, Reason.DETECT_ERROR, None]
    assert "simulated model failure" in out[2]["detail"]
    assert all(r["bbox"] is not None for i, r in enumerate(out) if i != 2)
