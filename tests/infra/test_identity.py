import numpy as np
import pytest
import torch

from infra.identity import IdentityEncoder, TorchIdentityEncoder
from infra.models import ModelStore
from preprocessing.align import align_face
from preprocessing.config import DetectionConfig
from preprocessing.decode import load_image
from preprocessing.detect import FaceDetector
from tests.conftest import FACES

IMAGES = [
    "lfw_subset_krasserm/Ariel_Sharon/Ariel_Sharon_0001.jpg",
    "lfw_subset_krasserm/Ariel_Sharon/Ariel_Sharon_0002.jpg",
    "lfw_subset_krasserm/Colin_Powell/Colin_Powell_0001.jpg",
]


@pytest.fixture(scope="module")
def aligned(models_dir):
    store = ModelStore(models_dir)
    det = FaceDetector(store.path("scrfd_2.5g_bnkps"), DetectionConfig())
    crops = []
    for p in IMAGES:
        img = load_image(FACES / p, 10**8).image
        crops.append(align_face(img, det.detect(img).landmarks[0], 112)[0])
    return store, np.stack(crops)


def test_onnx_and_torch_identity_encoders_agree(aligned):
    store, crops = aligned
    onnx_emb = IdentityEncoder(store, "mobilefacenet_128d")
    torch_enc = TorchIdentityEncoder(store, "mobilefacenet_128d")
    assert onnx_emb.dim == torch_enc.dim == 128  # read from the model
    a = onnx_emb.embed(crops)
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1
    b = torch_enc(x).numpy()
    assert a.shape == b.shape == (3, 128)
    np.testing.assert_allclose(a, b, atol=1e-4)
    # batch results equal one-at-a-time results (the batch-1 Reshape quirk is fixed)
    single = np.concatenate([onnx_emb.embed(crops[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(a, single, atol=1e-5)
    # same person closer than different people
    assert a[0] @ a[1] > 0.5 > a[0] @ a[2]


def test_torch_encoder_is_frozen_and_differentiable(aligned):
    store, crops = aligned
    enc = TorchIdentityEncoder(store, "mobilefacenet_128d")
    enc.train()
    assert not enc.training
    assert not any(p.requires_grad for p in enc.parameters())
    x = (torch.from_numpy(crops[:2]).permute(0, 3, 1, 2).float() / 127.5 - 1).requires_grad_()
    big = torch.nn.functional.interpolate(x, size=256, mode="bilinear")
    enc(big).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
