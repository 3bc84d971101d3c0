"""FID / KID: the math on hand-made features with known answers, the FID InceptionV3 loader
(pytorch-fid's key names and forward pass) and the missing-weights status."""

import dataclasses

import numpy as np
import pytest
import torch
from pytorch_fid import inception as pf_inception
from pytorch_fid.fid_score import calculate_frechet_distance
from scipy import linalg
from torch import nn

from evaluation import fid as fid_mod
from evaluation.fid import (
    EXPECTED_SHA256_PREFIX,
    FeatureFID,
    InceptionPool3,
    build_fid_inception,
    fid_kid,
    load_fid_inception,
)
from infra.models import REGISTRY, ModelChecksumError, ModelStore, file_sha256

SPEC = REGISTRY["inception_v3_fid"]


class Features(nn.Module):
    """Stand-in feature network: the input rows are the features."""

    def __init__(self, d):
        super().__init__()
        self.num_features = d

    def forward(self, x):
        return x.reshape(len(x), -1)


def _metric(real, fake, subset, **kw):
    m = FeatureFID(Features(real.shape[1]), kid_subset_size=subset, **kw)
    m.update(torch.from_numpy(real), real=True)
    m.update(torch.from_numpy(fake), real=False)
    return m.compute()


def _poly_mmd2(x, y):
    """Unbiased MMD² with k(a, b) = (aᵀb / d + 1)³ (Bińkowski et al. 2018, eq. 2)."""
    d = x.shape[1]
    kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
    m = len(x)
    off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return off - 2 * kxy.mean()


def test_identical_sets_give_zero_fid_and_the_known_kid():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    same = _metric(x, x, subset=200)
    shifted = _metric(x, x + 1.0, subset=200)  # same Σ, ‖Δμ‖² = 4
    assert abs(same["fid"]) < 1e-8 and shifted["fid"] == pytest.approx(4.0, rel=1e-6)
    # With subsets of all samples every subset is the whole set: KID is deterministic and
    # equals the unbiased MMD² of X with itself, −2 (mean k(x, x) − mean k(x, x')) / m: zero
    # up to the O(1/m) term of the unbiased estimator.
    k = (x @ x.T / 4 + 1) ** 3
    known = -2 * (np.diag(k).mean() - (k.sum() - np.trace(k)) / (200 * 199)) / 200
    assert same["kid_mean"] == pytest.approx(known, rel=1e-9)
    assert same["kid_std"] < 1e-9
    assert abs(same["kid_mean"]) < 0.02 * shifted["kid_mean"]


def test_fid_of_gaussian_features_matches_the_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = np.array([0.0, 1.0, -1.0]), np.array([1.0, 3.0, -1.0])
    a, b = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    s1, s2 = a @ a.T + np.eye(3), b @ b.T + 0.5 * np.eye(3)
    x = rng.multivariate_normal(mu1, s1, size=20000)
    y = rng.multivariate_normal(mu2, s2, size=20000)
    got = _metric(x, y, subset=50, kid_subsets=5)["fid"]
    closed = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert got == pytest.approx(closed, rel=0.03)
    # Same sample statistics through pytorch-fid's scipy implementation: equal to rounding.
    ref = calculate_frechet_distance(x.mean(0), np.cov(x.T), y.mean(0), np.cov(y.T))
    assert got == pytest.approx(ref, rel=1e-8)


def test_kid_is_the_unbiased_polynomial_mmd_and_reproducible():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(60, 5)), rng.normal(0.5, 1.2, size=(60, 5))
    full = _metric(x, y, subset=60)
    assert full["kid_mean"] == pytest.approx(_poly_mmd2(x, y), rel=1e-9)
    assert full["kid_mean"] > 0.1
    subsets = [_metric(x, y, subset=20, seed=s) for s in (7, 7, 8)]
    assert subsets[0]["kid_mean"] == subsets[1]["kid_mean"] != subsets[2]["kid_mean"]
    assert subsets[0]["kid_std"] > 0


def test_feature_module_output_is_checked():
    m = FeatureFID(Features(4), kid_subset_size=2)
    with pytest.raises(ValueError, match="feature module returned"):
        m.update(torch.zeros(3, 5, dtype=torch.float64), real=True)
    with pytest.raises(ValueError, match="num_features"):
        FeatureFID(nn.Identity())
    m.update(torch.zeros(1, 4, dtype=torch.float64), real=True)
    with pytest.raises(ValueError, match="at least 2"):
        m.compute()


def _images(n, seed, size=48):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_missing_weights_give_none_and_name_the_file(tmp_path):
    result = fid_kid(_images(3, 0), _images(3, 1), ModelStore(tmp_path))
    assert result["fid"] is None and result["kid_mean"] is None and result["kid_std"] is None
    assert result["feature_model"] == "inception_v3_fid"
    expected = "fid/pt_inception-2015-12-05-6726825d.pth in the models directory"
    assert result["status"] == (
        f"not computed: missing {expected} (expected sha256 prefix 6726825d; download {SPEC.url})"
    )
    assert str(tmp_path) not in result["status"]  # metrics.json holds no machine path
    assert result["reliable"] is False and result["reliable_min_images"] == 2048


def test_a_file_with_another_digest_is_not_used(tmp_path):
    target = tmp_path / SPEC.file
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the FID inception weights")
    result = fid_kid(_images(3, 0), _images(3, 1), ModelStore(tmp_path))
    assert result["fid"] is None and result["kid_mean"] is None
    assert result["status"].startswith(f"not computed: wrong file {SPEC.file} in the models")
    assert "expected sha256 prefix 6726825d" in result["status"]


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A models dir holding a random FID-Inception state_dict under the expected name."""
    torch.manual_seed(0)
    net = build_fid_inception()
    for m in net.modules():  # He init: non-degenerate features through 94 conv layers
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    models = tmp_path_factory.mktemp("models")
    path = models / SPEC.file
    path.parent.mkdir(parents=True)
    torch.save(net.state_dict(), path)
    return models, net.state_dict(), file_sha256(path)


def _accept_prefix(monkeypatch, prefix):
    """Let the model store accept the random weights (their digest's prefix)."""
    monkeypatch.setitem(REGISTRY, SPEC.name, dataclasses.replace(SPEC, sha256_prefix=prefix))


def test_loader_rejects_a_digest_without_the_prefix(random_weights):
    models, _, digest = random_weights
    assert not digest.startswith(EXPECTED_SHA256_PREFIX)
    with pytest.raises(ModelChecksumError, match=EXPECTED_SHA256_PREFIX):
        load_fid_inception(ModelStore(models))


def test_architecture_has_pytorch_fid_keys_and_forward(random_weights, monkeypatch):
    models, state, digest = random_weights
    # pytorch-fid's own builder loads our state_dict strictly (it would fail on any key or
    # shape difference) once its download is replaced by the local dict.
    calls = []
    monkeypatch.setattr(
        pf_inception, "load_state_dict_from_url", lambda url, **k: calls.append(url) or state
    )
    reference = pf_inception.InceptionV3([3]).eval()
    assert calls == [SPEC.url]  # pytorch-fid's URL is the registry's

    _accept_prefix(monkeypatch, digest[:8])
    net = load_fid_inception(ModelStore(models))
    assert isinstance(net, InceptionPool3) and not net.training
    images = torch.from_numpy(_images(3, 5, size=64)).permute(0, 3, 1, 2)
    with torch.no_grad():
        feats = net(images)
        expected = reference(images.float() / 255)[0].flatten(1)
        wrong_scale = reference(images.float())[0].flatten(1)
    assert feats.shape == (3, 2048) and feats.dtype == torch.float32
    torch.testing.assert_close(feats, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(feats, wrong_scale, rtol=1e-3)  # the [0, 1] scaling matters
    with pytest.raises(TypeError):
        net(images.float() / 255)


def test_fid_kid_end_to_end_with_a_reduced_kid_subset(random_weights, monkeypatch):
    models, _, digest = random_weights
    _accept_prefix(monkeypatch, digest[:8])
    nets, seen = [], {True: [], False: []}
    load, update = fid_mod.load_fid_inception, FeatureFID.update
    monkeypatch.setattr(fid_mod, "load_fid_inception", lambda *a: nets.append(load(*a)) or nets[0])
    monkeypatch.setattr(
        FeatureFID, "update", lambda self, b, real: seen[real].append(update(self, b, real))
    )
    real, fake = _images(4, 10), _images(3, 11, size=40) // 2
    result = fid_kid(real, fake, ModelStore(models), kid_subset_size=50, batch_size=2)
    assert result["status"] == (
        "computed; KID subset size 3 instead of 50 (only 4 real and 3 fake images)"
    )
    assert result["kid_subset_size"] == 3 and result["feature_model"] == "inception_v3_fid"
    assert result["reliable"] is False  # 4 and 3 images: far below the 2048 feature dims
    fr, ff = (torch.cat(seen[r]).numpy() for r in (True, False))
    assert fr.shape == (4, 2048) and ff.shape == (3, 2048)
    # The features are those of the right images (NHWC → NCHW, real vs fake not mixed up).
    with torch.no_grad():
        first = nets[0](torch.from_numpy(fake[:1]).permute(0, 3, 1, 2)).double().numpy()
    np.testing.assert_allclose(ff[:1], first, rtol=1e-6)
    # Independent FID from the n × d centred features X (Σ = XᵀX / (n − 1), rank < n): the
    # nonzero eigenvalues of Σr Σf are the squared singular values of Xr Xfᵀ / √((nr−1)(nf−1)),
    # so Tr √(Σr Σf) is their sum (numpy, not torchmetrics' 2048² eigvals). KID: unbiased MMD².
    xr, xf = fr - fr.mean(0), ff - ff.mean(0)
    tr_sqrt = np.linalg.svd(xr @ xf.T, compute_uv=False).sum() / np.sqrt(3 * 2)
    traces = (xr**2).sum() / 3 + (xf**2).sum() / 2
    expected = np.sum((fr.mean(0) - ff.mean(0)) ** 2) + traces - 2 * tr_sqrt
    assert expected > 0
    assert result["fid"] == pytest.approx(expected, rel=1e-4)
    # KID on 3-of-4 real subsets is random; it must lie within the range over all subsets.
    candidates = [_poly_mmd2(fr[np.arange(4) != i], ff) for i in range(4)]
    assert min(candidates) - 1e-9 <= result["kid_mean"] <= max(candidates) + 1e-9
