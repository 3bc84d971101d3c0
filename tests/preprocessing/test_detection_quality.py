"""Detection quality on the real fixtures (../shared/faces)."""

import csv

import numpy as np
import pytest

from infra.models import ModelStore
from preprocessing.config import DetectionConfig
from preprocessing.decode import load_image
from preprocessing.detect import FaceDetector
from tests.conftest import FACES


@pytest.fixture(scope="module")
def detector(models_dir):
    cfg = DetectionConfig()
    return FaceDetector(ModelStore(models_dir).path(cfg.model), cfg), cfg


def _count(detector, path):
    det, cfg = detector
    return det.detect(load_image(path, 10**8).image).count(cfg.min_relative_size)


def test_face_found_in_95_percent_of_identity_images(detector):
    with (FACES / "identity_index.csv").open() as f:
        paths = [FACES / r["path"] for r in csv.DictReader(f)]
    found = np.array([_count(detector, p) >= 1 for p in paths])
    assert len(paths) == 217
    assert found.mean() >= 0.95, f"face found in {found.mean():.1%}"


def test_group_photos_and_empty_images(detector):
    multi = sorted((FACES / "multi_face").iterdir())
    empty = sorted((FACES / "no_face").iterdir())
    assert len(multi) == 13 and len(empty) == 3
    assert all(_count(detector, p) > 1 for p in multi)
    assert all(_count(detector, p) == 0 for p in empty)
