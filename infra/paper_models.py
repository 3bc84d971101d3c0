"""The three attribute networks of the FaceShifter evaluation protocol, as plain ``nn.Module``s
whose ``state_dict`` keys and shapes are those of the published checkpoints, and loaders that
read those checkpoints strictly.

=====================  ==============================================================  =========
network                published code and checkpoint                                   output
=====================  ==============================================================  =========
:class:`Sphere20`      MuggleWang/CosFace_pytorch ``net.py: sphere`` (type 20);        512-d
                       ``ACC99.28.pth`` (plain ``state_dict``)
:class:`Hopenet`       natanielruiz/deep-head-pose ``code/hopenet.py: Hopenet``         3 × 66
                       (torchvision ``Bottleneck``, [3, 4, 6, 3], 66 bins);            bins
                       ``hopenet_robust_alpha1.pkl`` (plain ``state_dict``)
:class:`ReconNet`      sicxu/Deep3DFaceRecon_pytorch ``models/networks.py:             257
                       ReconNetWrapper('resnet50')``; ``checkpoints/<name>/            coeffs
                       epoch_20.pth`` (``{"net_recon": state_dict, "opt_00": …}``)
=====================  ==============================================================  =========

The networks are written here from the published architectures (the reference files were read,
not copied); :func:`load_published` unwraps a checkpoint (a wrapper key such as ``net_recon``,
a ``module.`` prefix left by ``DataParallel``) and loads it with ``strict=True``, so a file of
another layout fails loudly instead of leaving layers at random.

Each network also has a numpy entry point that takes the project's ArcFace-aligned RGB crops
((N, S, S, 3) uint8, any S) and applies the model's own input contract; where the reference
preprocessing needs something these crops do not carry, the difference is stated there as the
project's choice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from infra.geometry import l2_normalize
from infra.geometry import resize_crops as resize

#: ImageNet channel mean / std on [0, 1] RGB (Hopenet's ``transforms.Normalize``).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Hopenet: 66 bins of 3 degrees; angle = E[bin] × 3 − 99 (``code/test_on_video_dlib.py``).
HOPENET_BINS = 66
#: Deep3DFaceRecon's 257 coefficients (``models/bfm.py: split_coeff``): name → slice.
RECON_COEFFS = {
    "id": slice(0, 80),
    "exp": slice(80, 144),
    "tex": slice(144, 224),
    "angle": slice(224, 227),
    "gamma": slice(227, 254),
    "trans": slice(254, 257),
}


def _nchw(images: np.ndarray, size: int | tuple[int, int]) -> torch.Tensor:
    """(N, S, S, 3) uint8 RGB → (N, 3, H, W) float32 in [0, 1] at ``size`` (side or (H, W)).

    Raises ValueError when ``images`` is not (N, S, S, 3) uint8."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (N, S, S, 3) uint8 RGB, got {images.shape} {images.dtype}")
    side = size if isinstance(size, int) else size[0]
    x = torch.from_numpy(np.ascontiguousarray(resize(images, side))).permute(0, 3, 1, 2)
    return x.float() / 255.0


# ---- CosFace sphere20 --------------------------------------------------------------------


class SphereBlock(nn.Module):
    """Residual unit of sphere20 (CosFace_pytorch ``net.py: Block``): ``x + PReLU(conv(PReLU(
    conv(x))))`` with two bias-free 3×3 convolutions of ``planes`` channels."""

    def __init__(self, planes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.prelu1 = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.prelu2 = nn.PReLU(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → (N, C, H, W)."""
        return x + self.prelu2(self.conv2(self.prelu1(self.conv1(x))))


class Sphere20(nn.Module):
    """The 20-layer SphereFace network trained with the CosFace loss (Wang et al. 2018,
    "CosFace: Large Margin Cosine Loss for Deep Face Recognition"): MuggleWang/CosFace_pytorch
    ``net.py: sphere(type=20)``, the face recogniser Facke (seed 002 §3.2, ref. [16]) names.

    Four stages, each a stride-2 3×3 convolution (with bias) + PReLU followed by 1, 2, 4, 1
    :class:`SphereBlock` units (64, 128, 256, 512 channels), then ``fc``: 512·7·6 → 512.
    Keys: ``layer{1-4}.0.{weight,bias}``, ``layer{i}.1.weight`` (PReLU),
    ``layer{i}.{2..}.{conv1,prelu1,conv2,prelu2}.weight``, ``fc.{weight,bias}``.
    """

    #: Input height × width: the SphereFace 112×96 crop.
    input_size = (112, 96)
    dim = 512

    def __init__(self):
        super().__init__()
        widths, blocks = [3, 64, 128, 256, 512], [1, 2, 4, 1]
        for i, n in enumerate(blocks):
            stage = [nn.Conv2d(widths[i], widths[i + 1], 3, 2, 1), nn.PReLU(widths[i + 1])]
            stage += [SphereBlock(widths[i + 1]) for _ in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.fc = nn.Linear(512 * 7 * 6, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 112, 96) float32 RGB normalised ``(x − 127.5) / 127.5`` → (N, 512) raw
        (not normalised) embeddings."""
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(x.flatten(1))

    @torch.no_grad()
    def embed(self, faces: np.ndarray) -> np.ndarray:
        """Identity vectors of ArcFace-aligned crops.

        The SphereFace/CosFace template (``coord5points`` of wy1iu/sphereface's alignment,
        which CosFace_pytorch's README prescribes) is the ArcFace 112×112 template shifted
        8 px left, so the 112×96 input is columns 8–103 of the crop resized to 112×112: the
        same alignment, no new warp. As CosFace_pytorch's ``lfw_eval.py`` does, the vector
        is the concatenation of the features of the face and of its mirror image, and the
        normalisation is ``ToTensor`` + ``Normalize(0.5, 0.5)``, i.e. ``(x − 127.5) / 127.5``
        (the Caffe SphereFace used /128).

        Parameters
        ----------
        faces : (N, S, S, 3) uint8 RGB crops on the ArcFace template (any S).

        Returns
        -------
        (N, 1024) float32, rows L2-normalised.

        Raises
        ------
        ValueError : ``faces`` is not (N, S, S, 3) uint8.
        """
        x = _nchw(faces, 112)[..., 8:104] * 2.0 - 1.0  # (N, 3, 112, 96) in [-1, 1]
        both = torch.cat([self(x), self(torch.flip(x, dims=[3]))], dim=1)  # (N, 1024)
        return l2_normalize(both.numpy().astype(np.float32), axis=1)


# ---- Hopenet ---------------------------------------------------------------------------


class Hopenet(ResNet):
    """Hopenet (Ruiz et al. 2018, "Fine-Grained Head Pose Estimation Without Keypoints",
    §3.2–3.3): a ResNet-50 (torchvision ``Bottleneck``, [3, 4, 6, 3]) whose pooled 2048-d
    feature feeds three 66-bin classifiers ``fc_yaw``, ``fc_pitch``, ``fc_roll``; the angle
    is the softmax expectation over the bins (``code/hopenet.py``, ``test_on_video_dlib.py``).

    Keys: torchvision ResNet-50's without ``fc``, plus ``fc_{yaw,pitch,roll}`` (66 × 2048)
    and the vestigial ``fc_finetune`` (3 × 2051, unused in ``forward``, kept because the
    published ``state_dict`` holds it). ``AdaptiveAvgPool2d(1)`` replaces the reference's
    ``AvgPool2d(7)``: identical at the 224×224 input.
    """

    input_size = 224

    def __init__(self, num_bins: int = HOPENET_BINS):
        super().__init__(Bottleneck, [3, 4, 6, 3])
        del self.fc
        self.fc_yaw = nn.Linear(2048, num_bins)
        self.fc_pitch = nn.Linear(2048, num_bins)
        self.fc_roll = nn.Linear(2048, num_bins)
        self.fc_finetune = nn.Linear(2048 + 3, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, 3, 224, 224) ImageNet-normalised RGB → yaw, pitch, roll bin logits, each
        (N, 66)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x).flatten(1)
        return self.fc_yaw(x), self.fc_pitch(x), self.fc_roll(x)

    @torch.no_grad()
    def angles(self, faces: np.ndarray) -> np.ndarray:
        """Head pose of aligned crops in degrees.

        The reference crops the detector box enlarged by half its width left and right, 3/4
        of its height above and 1/4 below (``test_on_video_dlib.py``), then ``Scale(224)`` +
        ``CenterCrop(224)``. On an ArcFace-template crop that enlarged box extends past the
        crop on every side, so the project's choice is the whole crop resized to 224×224 (what
        Scale + CenterCrop does to a square image). Normalisation: ImageNet mean/std on [0, 1].

        Parameters
        ----------
        faces : (N, S, S, 3) uint8 RGB aligned crops.

        Returns
        -------
        (N, 3) float64 yaw, pitch, roll in degrees, each in [−99, 96] (bin centres 3k − 99).

        Raises
        ------
        ValueError : ``faces`` is not (N, S, S, 3) uint8.
        """
        x = _nchw(faces, self.input_size)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        logits = self((x - mean) / std)
        bins = torch.arange(HOPENET_BINS, dtype=torch.float64)
        out = [(F.softmax(z.double(), dim=1) * bins).sum(1) * 3 - 99 for z in logits]
        return torch.stack(out, dim=1).numpy()


# ---- Deep3DFaceRecon -------------------------------------------------------------------


class ReconNet(nn.Module):
    """Deep3DFaceRecon's R-Net (Deng et al. 2019, "Accurate 3D Face Reconstruction with
    Weakly-Supervised Learning", §3; sicxu/Deep3DFaceRecon_pytorch ``models/networks.py:
    ReconNetWrapper('resnet50', use_last_fc=False)``): a ResNet-50 ``backbone`` without its
    classifier, pooled to (N, 2048, 1, 1), and seven 1×1 convolutions ``final_layers``
    giving 80 identity, 64 expression, 80 texture, 3 angle, 27 lighting, 2 + 1 translation
    coefficients, concatenated to 257 (:data:`RECON_COEFFS`).

    Keys: ``backbone.*`` (torchvision ResNet-50 without ``fc``; torchvision's ``Bottleneck``
    is the one the reference copies) and ``final_layers.{0-6}.{weight,bias}``.
    """

    input_size = 224
    #: Output channels of ``final_layers``: id, exp, tex, angle, gamma, (tx, ty), tz.
    head_dims = (80, 64, 80, 3, 27, 2, 1)

    def __init__(self):
        super().__init__()
        self.backbone = ResNet(Bottleneck, [3, 4, 6, 3])
        self.backbone.fc = nn.Identity()  # no parameters: the keys stay those of the wrapper
        self.final_layers = nn.ModuleList([nn.Conv2d(2048, d, 1) for d in self.head_dims])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 224, 224) float32 RGB in [0, 1] → (N, 257) coefficients."""
        feat = self.backbone(x)[:, :, None, None]  # (N, 2048, 1, 1)
        return torch.cat([layer(feat) for layer in self.final_layers], dim=1).flatten(1)

    @torch.no_grad()
    def expression(self, faces: np.ndarray) -> np.ndarray:
        """The 64 expression coefficients of aligned crops.

        The reference aligns each image itself: a scale and a translation fitted between five
        detected landmarks and five landmarks of its 3D mean face (``util/preprocess.py:
        align_img``, POS, rescale factor 102, 224×224 crop), RGB / 255. Those 3D landmarks
        come from the Basel Face Model files, which this project does not ship; the project's
        choice is the ArcFace-template crop resized to 224×224 — five points at fixed
        positions, one scale and translation for every face, the same for swap and target.

        Parameters
        ----------
        faces : (N, S, S, 3) uint8 RGB aligned crops.

        Returns
        -------
        (N, 64) float64 expression coefficients (``coeffs[:, 80:144]``).

        Raises
        ------
        ValueError : ``faces`` is not (N, S, S, 3) uint8.
        """
        coeffs = self(_nchw(faces, self.input_size))
        return coeffs[:, RECON_COEFFS["exp"]].double().numpy()


# ---- loading the published checkpoints -------------------------------------------------


def unwrap_state_dict(obj: object, wrapper_key: str | None = None) -> dict[str, torch.Tensor]:
    """The network's ``state_dict`` inside a published checkpoint.

    Parameters
    ----------
    obj : what ``torch.load`` returned: a ``state_dict``, or a dict holding it under
        ``wrapper_key`` (Deep3DFaceRecon: ``net_recon`` beside ``opt_00``/``sched_00``).
    wrapper_key : key of the network's ``state_dict`` in a wrapper dict; ignored when absent.

    Returns
    -------
    ``{key: tensor}`` with a ``module.`` prefix (``DataParallel``) removed from every key
    when all keys carry it.

    Raises
    ------
    TypeError : ``obj`` (or ``obj[wrapper_key]``) is not a dict of tensors.
    """
    if wrapper_key is not None and isinstance(obj, dict) and wrapper_key in obj:
        obj = obj[wrapper_key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TypeError(f"expected a state_dict (dict of tensors), got {type(obj).__name__}")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return dict(obj)


def load_published(net: nn.Module, path: Path, wrapper_key: str | None = None) -> nn.Module:
    """Load a published checkpoint into ``net`` strictly; returns ``net`` in eval mode with
    gradients off.

    ``torch.load(weights_only=True)`` (tensors and containers only). BatchNorm fills the
    ``num_batches_tracked`` buffers that pre-0.4.1 pickles such as Hopenet's lack.

    Raises
    ------
    RuntimeError : keys or shapes differ from ``net``'s (``load_state_dict(strict=True)``).
    TypeError : the file holds no ``state_dict`` (see :func:`unwrap_state_dict`).
    """
    obj = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(unwrap_state_dict(obj, wrapper_key), strict=True)
    for p in net.parameters():
        p.requires_grad = False
    return net.eval()


def load_cosface(path: Path) -> Sphere20:
    """CosFace sphere20 from ``ACC99.28.pth`` (a plain ``state_dict``; ``module.`` prefix
    tolerated). Errors as :func:`load_published`."""
    return load_published(Sphere20(), path)


def load_hopenet(path: Path) -> Hopenet:
    """Hopenet from ``hopenet_robust_alpha1.pkl`` (a plain ``state_dict``). Errors as
    :func:`load_published`."""
    return load_published(Hopenet(), path)


def load_recon(path: Path) -> ReconNet:
    """Deep3DFaceRecon R-Net from ``epoch_20.pth`` (``net_recon`` of the training
    checkpoint). Errors as :func:`load_published`."""
    return load_published(ReconNet(), path, wrapper_key="net_recon")
