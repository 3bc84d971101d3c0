import math

import numpy as np
import pytest

from evaluation.face_matrix import face_matrix
from evaluation.metrics import cosine_rows, mse_psnr, top1_retrieval


def test_retrieval_and_cosine_known_answers():
    gallery = np.eye(3)
    queries = np.array([[0.9, 0.1, 0], [0, 0.2, 1.0], [0.1, 1.0, 0.0]])
    assert top1_retrieval(queries, gallery, np.array(["a", "b", "c"])).tolist() == [0, 2, 1]
    np.testing.assert_allclose(
        cosine_rows(np.array([[1.0, 0]]), np.array([[3.0, 3.0]])), [math.sqrt(0.5)]
    )
    with pytest.raises(ValueError):
        top1_retrieval(queries, gallery, np.array(["a"]))


def test_psnr_known_answer():
    a = np.zeros((4, 4))
    b = np.full((4, 4), 0.1)
    mse, psnr = mse_psnr(a, b)
    assert mse == pytest.approx(0.01) and psnr == pytest.approx(20.0)
    assert mse_psnr(a, a)[1] == float("inf")


def test_face_matrix_layout():
    faces = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (10, 20)])
    swaps = np.zeros((2, 2, 8, 8, 3), np.uint8)
    swaps[1, 0] = 99
    m = face_matrix(faces, faces, swaps, cell=8)
    assert m.shape == (24, 24, 3)
    assert m[0, 8, 0] == 10 and m[0, 16, 0] == 20  # sources along the top
    assert m[16, 0, 0] == 20  # target 1 on the left
    assert m[16, 8, 0] == 99  # swaps[target 1, source 0]
