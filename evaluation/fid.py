"""FID and KID of generated faces with the standard FID InceptionV3, computed by torchmetrics.

FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local
Nash Equilibrium", §4) is the Fréchet distance between Gaussians fitted to the pool3
features (2048-d) of real and generated images::

    FID = ‖μ_r − μ_f‖² + Tr(Σ_r + Σ_f − 2 (Σ_r Σ_f)^½)

KID (Bińkowski et al. 2018, "Demystifying MMD GANs", §3) is the unbiased squared MMD of the
same features with the cubic polynomial kernel ``k(x, y) = (xᵀy / d + 1)³``, averaged over
random subsets of ``subset_size`` images (mean and standard deviation over the subsets).

Feature network: pytorch-fid's ``fid_inception_v3`` (torchvision's Inception3 with the
``FIDInceptionA/C/E_1/E_2`` blocks of TensorFlow's FID graph) loaded from the models directory
(``inception_v3_fid`` in :data:`infra.models.REGISTRY`). pytorch-fid's own constructors
download the weights, so the architecture is built here from its classes and the local
state_dict (pytorch-fid's key names) is loaded strictly. The weights are never downloaded and
never replaced by another backbone: without them FID and KID are ``None`` and the status names
the missing file. The file name carries the first 8 hex digits of the file's SHA-256
(``6726825d``, torch hub's naming rule); the registry entry holds them (``sha256_prefix``)
and :meth:`infra.models.ModelStore.path` checks them.

How torchmetrics is fed: :class:`InceptionPool3` takes uint8 NCHW RGB in [0, 255] (the input
torchmetrics hands a custom ``feature`` module with ``normalize=False``, unchanged), scales it
to [0, 1] and runs pytorch-fid's ``InceptionV3.forward`` (bilinear resize to 299×299,
``2x − 1``, blocks to pool3) → (N, 2048) float32. :class:`FeatureFID` runs the feature module
once per batch and passes the float64 features to ``FrechetInceptionDistance`` and
``KernelInceptionDistance`` through a pass-through ``feature`` module, so the network does not
run twice and both metrics see identical features (torchmetrics accumulates FID sums in
float64 and returns the features' dtype; KID's kernels are computed in the features' dtype).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
import torchvision
from pytorch_fid.inception import (
    FIDInceptionA,
    FIDInceptionC,
    FIDInceptionE_1,
    FIDInceptionE_2,
    InceptionV3,
)
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from infra.models import REGISTRY, ModelChecksumError, ModelError, ModelStore, file_sha256

log = logging.getLogger(__name__)

#: Registry name of the FID InceptionV3 weights.
MODEL_NAME = "inception_v3_fid"
#: First 8 hex digits of the weights' SHA-256, carried by the file name (the registry's).
EXPECTED_SHA256_PREFIX = REGISTRY[MODEL_NAME].sha256_prefix
#: Dimension of the pool3 features.
FEATURE_DIM = 2048
#: KID subsets (torchmetrics' default) and default subset size.
KID_SUBSETS = 100
KID_SUBSET_SIZE = 50
#: Images per set below which FID is flagged ``reliable: false``: the pool3 features are
#: 2048-d, so with fewer images the covariance Σ is singular (rank < N) and FID is biased
#: upwards (Heusel et al. report FID on 50,000 images).
FID_RELIABLE_MIN_IMAGES = 2048


def build_fid_inception() -> nn.Module:
    """pytorch-fid's FID Inception architecture, uninitialised, without loading weights.

    Returns
    -------
    torchvision ``Inception3(num_classes=1008, aux_logits=False)`` with ``Mixed_5b/5c/5d``,
    ``Mixed_6b–6e`` and ``Mixed_7b/7c`` replaced by pytorch-fid's FID blocks, exactly as
    ``pytorch_fid.inception.fid_inception_v3`` builds it before it downloads the weights;
    its ``state_dict`` keys are those of ``pt_inception-2015-12-05-6726825d.pth``.
    """
    net = torchvision.models.inception_v3(
        weights=None, num_classes=1008, aux_logits=False, init_weights=False
    )
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE_1(1280)
    net.Mixed_7c = FIDInceptionE_2(2048)
    return net


class InceptionPool3(InceptionV3):
    """pytorch-fid's ``InceptionV3`` (pool3 block) around a given FID Inception network.

    Built without pytorch-fid's constructor (which downloads weights); the forward pass is
    pytorch-fid's own: bilinear resize to 299×299 (``align_corners=False``), ``2x − 1``,
    blocks 0–3, global average pool. Always in eval mode; no gradients.

    Parameters
    ----------
    inception : network from :func:`build_fid_inception` with its weights loaded.

    Attributes
    ----------
    num_features : 2048 (read by torchmetrics instead of a dummy forward pass).
    """

    num_features = FEATURE_DIM

    def __init__(self, inception: nn.Module):
        nn.Module.__init__(self)
        self.resize_input = True
        self.normalize_input = True
        self.output_blocks = [3]
        self.last_needed_block = 3
        self.blocks = nn.ModuleList(
            [
                nn.Sequential(
                    inception.Conv2d_1a_3x3,
                    inception.Conv2d_2a_3x3,
                    inception.Conv2d_2b_3x3,
                    nn.MaxPool2d(kernel_size=3, stride=2),
                ),
                nn.Sequential(
                    inception.Conv2d_3b_1x1,
                    inception.Conv2d_4a_3x3,
                    nn.MaxPool2d(kernel_size=3, stride=2),
                ),
                nn.Sequential(
                    inception.Mixed_5b,
                    inception.Mixed_5c,
                    inception.Mixed_5d,
                    inception.Mixed_6a,
                    inception.Mixed_6b,
                    inception.Mixed_6c,
                    inception.Mixed_6d,
                    inception.Mixed_6e,
                ),
                nn.Sequential(
                    inception.Mixed_7a,
                    inception.Mixed_7b,
                    inception.Mixed_7c,
                    nn.AdaptiveAvgPool2d(output_size=(1, 1)),
                ),
            ]
        )
        for p in self.parameters():
            p.requires_grad = False
        self.eval()

    def train(self, mode: bool = True) -> InceptionPool3:
        """Stay in eval mode (batch-norm statistics are fixed)."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pool3 features.

        Parameters
        ----------
        images : (N, 3, H, W) uint8 RGB in [0, 255], any H, W.

        Returns
        -------
        (N, 2048) float32 features.

        Raises
        ------
        TypeError : ``images`` is not uint8 (a float input would be scaled twice).
        ValueError : not (N, 3, H, W).
        """
        if images.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images in [0, 255], got {images.dtype}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) images, got {tuple(images.shape)}")
        x = images.to(torch.float32) / 255.0
        return super().forward(x)[0].flatten(1)


def load_fid_inception(store: ModelStore, device: str | torch.device = "cpu") -> InceptionPool3:
    """The FID InceptionV3 from the models directory.

    Parameters
    ----------
    store : model store; the file is ``inception_v3_fid`` (``fid/pt_inception-…-6726825d.pth``).
    device : torch device of the returned module.

    Returns
    -------
    :class:`InceptionPool3` in eval mode.

    Raises
    ------
    ModelFileMissingError : the file is absent (message names the file and the URL).
    ModelChecksumError : its SHA-256 does not start with the registry's ``sha256_prefix``
        (:data:`EXPECTED_SHA256_PREFIX`; checked by :meth:`ModelStore.path`).
    RuntimeError : the state_dict keys or shapes differ from pytorch-fid's.
    """
    path = store.path(MODEL_NAME)
    net = build_fid_inception()
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return InceptionPool3(net).to(device)


class _PassThrough(nn.Module):
    """``feature`` module for torchmetrics that returns precomputed (N, d) features."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class FeatureFID:
    """FID and KID from any feature network, accumulated batch by batch (torchmetrics).

    Parameters
    ----------
    feature : module mapping a batch (whatever :meth:`update` receives) to (N, d) features.
    num_features : d; default ``feature.num_features``.
    kid_subset_size : images per KID subset; must not exceed the real or fake count at
        :meth:`compute`.
    kid_subsets : number of KID subsets.
    seed : seed of the KID subset sampling (the global torch RNG is left untouched).
    device : where features and metric states live.

    Raises
    ------
    ValueError : ``num_features`` not given and ``feature`` has no ``num_features``.
    """

    def __init__(
        self,
        feature: nn.Module,
        num_features: int | None = None,
        kid_subset_size: int = KID_SUBSET_SIZE,
        kid_subsets: int = KID_SUBSETS,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        d = num_features if num_features is not None else getattr(feature, "num_features", None)
        if d is None:
            raise ValueError("pass num_features or give the feature module a num_features")
        self.feature = feature
        self.num_features = int(d)
        self.kid_subset_size = int(kid_subset_size)
        self.seed = int(seed)
        self.device = torch.device(device)
        self._fid = FrechetInceptionDistance(feature=_PassThrough(d), normalize=False)
        with warnings.catch_warnings():  # "KID keeps all features": expected here
            warnings.simplefilter("ignore", UserWarning)
            self._kid = KernelInceptionDistance(
                feature=_PassThrough(d),
                subsets=int(kid_subsets),
                subset_size=self.kid_subset_size,
                normalize=False,
            )
        self._fid.to(self.device)
        self._kid.to(self.device)
        self.counts = {"real": 0, "fake": 0}

    @torch.no_grad()
    def update(self, batch: torch.Tensor, real: bool) -> torch.Tensor:
        """Add one batch of real or generated inputs; returns its (N, d) float64 features.

        Raises
        ------
        ValueError : the feature module does not return (N, d) for a batch of N.
        """
        features = self.feature(batch.to(self.device))
        n = batch.shape[0]
        if features.ndim != 2 or features.shape != (n, self.num_features):
            raise ValueError(
                f"feature module returned {tuple(features.shape)}, expected ({n}, "
                f"{self.num_features})"
            )
        features = features.detach().to(torch.float64)
        self._fid.update(features, real=real)
        self._kid.update(features, real=real)
        self.counts["real" if real else "fake"] += n
        return features

    def compute(self) -> dict:
        """FID and KID of everything added.

        Returns
        -------
        ``{"fid": float, "kid_mean": float, "kid_std": float}`` (feature units squared;
        FID ≥ 0 up to rounding; KID is an unbiased estimate and can be slightly negative).

        Raises
        ------
        ValueError : fewer than 2 real or fake samples, or fewer than ``kid_subset_size``.
        """
        if min(self.counts.values()) < 2:
            raise ValueError(f"FID needs at least 2 real and 2 fake samples, got {self.counts}")
        if min(self.counts.values()) < self.kid_subset_size:
            raise ValueError(
                f"KID subset size {self.kid_subset_size} exceeds the samples {self.counts}"
            )
        fid = float(self._fid.compute())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            kid_mean, kid_std = self._kid.compute()
        return {"fid": fid, "kid_mean": float(kid_mean), "kid_std": float(kid_std)}


def _check_images(images: np.ndarray, name: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{name}: expected (N, H, W, 3) uint8 RGB, got {images.shape} {images.dtype}"
        )
    if len(images) < 2:
        raise ValueError(f"{name}: FID/KID need at least 2 images, got {len(images)}")
    return images


def _batches(images: np.ndarray, batch_size: int):
    for i in range(0, len(images), batch_size):
        yield torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).permute(0, 3, 1, 2)


def _not_computed(subset: int, n_real: int, n_fake: int) -> dict:
    """The result of :func:`fid_kid` before anything is computed (values None, no status)."""
    return {
        "fid": None,
        "kid_mean": None,
        "kid_std": None,
        "status": "",
        "feature_model": MODEL_NAME,
        "kid_subset_size": subset,
        "n_real": n_real,
        "n_fake": n_fake,
        "reliable": False,
        "reliable_min_images": FID_RELIABLE_MIN_IMAGES,
    }


def _compute(
    net: nn.Module,
    real: np.ndarray,
    fake: np.ndarray,
    subset: int,
    device: str | torch.device,
    batch_size: int,
) -> dict:
    """:meth:`FeatureFID.compute` of the (N, H, W, 3) uint8 sets, fed in batches."""
    metric = FeatureFID(net, kid_subset_size=subset, device=device)
    for batch in _batches(real, batch_size):
        metric.update(batch, real=True)
    for batch in _batches(fake, batch_size):
        metric.update(batch, real=False)
    return metric.compute()


def _inception_or_problem(
    store: ModelStore, device: str | torch.device
) -> tuple[InceptionPool3 | None, str]:
    """(network, "") from :func:`load_fid_inception`, or (None, why not): the wrong or
    missing file, the expected digest prefix and the download URL."""
    spec = store.spec(MODEL_NAME)
    target = (store.models_dir / spec.file).resolve()
    where = f"{spec.file} in the models directory"  # no machine path: metrics.json is portable
    try:
        return load_fid_inception(store, device), ""
    except ModelChecksumError:
        return None, (
            f"wrong file {where} (sha256 {file_sha256(target)}; expected sha256 "
            f"prefix {spec.sha256_prefix}; download {spec.url})"
        )
    except ModelError:
        return None, (
            f"missing {where} (expected sha256 prefix {spec.sha256_prefix}; download {spec.url})"
        )


def fid_kid(
    real: np.ndarray,
    fake: np.ndarray,
    store: ModelStore,
    kid_subset_size: int = KID_SUBSET_SIZE,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
) -> dict:
    """FID and KID between real and generated images with the FID InceptionV3.

    Parameters
    ----------
    real, fake : (N, H, W, 3) uint8 RGB images (N ≥ 2; sizes may differ between the sets,
        every image is resized to 299×299). FID from a few hundred images is biased upwards
        (Σ has rank < N ≤ 2048); compare only values computed from equal counts.
    store : model store holding ``inception_v3_fid``.
    kid_subset_size : images per KID subset (Bińkowski et al. use 1000; 50 suits small sets);
        reduced to ``min(N_real, N_fake)`` when fewer images exist, which the status says.
    device : torch device.
    batch_size : images per forward pass.

    Returns
    -------
    dict with ``fid``, ``kid_mean``, ``kid_std`` (floats, or None when not computed),
    ``status`` (``"computed"``, possibly followed by the reduced KID subset size, or
    ``"not computed: missing <file> in the models directory (expected sha256 prefix
    6726825d; download <url>)"``), ``feature_model`` (``"inception_v3_fid"``),
    ``kid_subset_size`` (used), ``n_real``, ``n_fake``, ``reliable`` (True only when both
    sets hold at least ``reliable_min_images`` = :data:`FID_RELIABLE_MIN_IMAGES` images).

    Raises
    ------
    ValueError : inputs are not (N, H, W, 3) uint8 with N ≥ 2, or ``kid_subset_size`` < 2.
        A missing or wrong weights file does not raise (see ``status``).
    """
    real = _check_images(real, "real")
    fake = _check_images(fake, "fake")
    if kid_subset_size < 2:
        raise ValueError(f"kid_subset_size must be at least 2, got {kid_subset_size}")
    subset = min(int(kid_subset_size), len(real), len(fake))
    result = _not_computed(subset, len(real), len(fake))
    net, problem = _inception_or_problem(store, device)
    if net is None:
        result["status"] = f"not computed: {problem}"
        log.warning("FID/KID %s", result["status"])
        return result
    result.update(_compute(net, real, fake, subset, device, batch_size))
    result["status"] = "computed"
    result["reliable"] = min(len(real), len(fake)) >= FID_RELIABLE_MIN_IMAGES
    if subset < kid_subset_size:
        result["status"] += (
            f"; KID subset size {subset} instead of {kid_subset_size} (only {len(real)} real "
            f"and {len(fake)} fake images)"
        )
    return result
