"""VGG-19 perceptual features and the four losses of the Korshunova swapper (seed 000 §II.A).

Seed 000: "The content loss ensures the target's pose and expression are retained, while the
style loss aligns the transformed image with the source identity. […] a luminance consistency
loss preserves the lighting conditions […] A total variation loss is employed to encourage
spatial smoothness". The loss network is torchvision's ImageNet VGG-19 (registry entry
``vgg19_imagenet``), frozen. Layer choices are the project's reading of Korshunova et al. 2017
(not checked against the paper's text here): content on relu4_2, style on relu3_1 and relu4_1
with 3×3 patches matched among the ``n_best`` pose-nearest style images (Li & Wand 2016's
patch loss). Korshunova et al. train a separate lighting network for their light loss; seed
000 gives no formula for its luminance loss, so :func:`luminance_loss` is the project's own.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.vgg import cfgs

from infra.models import ModelStore
from training.priors.layout import layout_problems

VGG19_MODEL = "vgg19_imagenet"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NAMED_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1")


def _vgg19_relu_indices() -> dict[str, int]:
    """``reluB_K`` → index in torchvision's ``vgg19().features``, walked from ``cfgs["E"]``
    (each number is a conv followed by a ReLU, each "M" a max-pool)."""
    out, i, block, k = {}, 0, 1, 0
    for v in cfgs["E"]:
        if v == "M":
            i, block, k = i + 1, block + 1, 0
            continue
        k += 1
        out[f"relu{block}_{k}"] = i + 1
        i += 2
    return out


VGG19_LAYERS: dict[str, int] = {
    name: idx for name, idx in _vgg19_relu_indices().items() if name in NAMED_LAYERS
}


class VGGFeatures(nn.Module):
    """Frozen VGG-19 ``features`` prefix returning named ReLU outputs.

    ``forward(x)``: x (B, 3, H, W) float in [-1, 1], RGB → dict name → (B, C, H / 2^p, W / 2^p)
    float32 feature map for every name of :data:`VGG19_LAYERS` the prefix reaches (relu1_1: 64
    ch, stride 1; relu2_1: 128, 2; relu3_1: 256, 4; relu4_1 / relu4_2: 512, 8; relu5_1: 512,
    16). The input is mapped to [0, 1] and ImageNet-normalised. Gradients flow to x; the
    weights stay frozen and the module stays in eval mode.
    """

    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.features = features
        self.layers = {n: i for n, i in VGG19_LAYERS.items() if i < len(features)}
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:
        """Always eval: a loss network keeps its behaviour when its owner trains."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) in [-1, 1], got {tuple(x.shape)}")
        h = ((x.to(self.mean.dtype) + 1) / 2 - self.mean) / self.std
        wanted = {i: n for n, i in self.layers.items()}
        out = {}
        for i, module in enumerate(self.features):
            h = module(h)
            if i in wanted:
                out[wanted[i]] = h
        return out


def _check_vgg19_state(state: dict, last: int) -> None:
    """ValueError unless every key is a torchvision vgg19 key of the right shape and every
    ``features.*`` key up to index ``last`` is present."""
    with torch.device("meta"):
        vgg = torchvision.models.vgg19(weights=None)
    ref = {k: tuple(v.shape) for k, v in vgg.state_dict().items()}
    missing, unexpected, wrong = layout_problems(state, ref)
    missing = [k for k in missing if k.startswith("features.") and int(k.split(".")[1]) <= last]
    if unexpected or wrong or missing:
        raise ValueError(
            f"not a torchvision vgg19 state dict: missing {missing}, unexpected {unexpected}, "
            f"wrong shape {wrong}"
        )


def load_vgg19_features(
    store: ModelStore, last_layer: str, device: str | torch.device = "cpu"
) -> VGGFeatures:
    """The frozen VGG-19 features up to ``last_layer`` (a name of :data:`VGG19_LAYERS`).

    The file of registry entry ``vgg19_imagenet`` (``store.path``: a missing file raises
    ``ModelFileMissingError`` naming file and URL) holds torchvision's full published state
    dict or a prefix of its ``features.*`` keys reaching ``last_layer``; it is loaded with
    ``weights_only=True`` into torchvision's ``vgg19()`` architecture (no download). ValueError
    on an unknown layer or on missing, unexpected or wrong-shape keys.
    """
    if last_layer not in VGG19_LAYERS:
        raise ValueError(f"unknown VGG-19 layer {last_layer!r}; choose one of {NAMED_LAYERS}")
    path = store.path(VGG19_MODEL)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return vgg19_features_from_state(state, last_layer, device)


def vgg19_features_from_state(
    state: dict[str, torch.Tensor], last_layer: str, device: str | torch.device = "cpu"
) -> VGGFeatures:
    """:class:`VGGFeatures` up to ``last_layer`` from a torchvision vgg19 state dict (the full
    published one or a prefix of its ``features.*`` keys reaching ``last_layer``). ValueError
    on an unknown layer or on missing, unexpected or wrong-shape keys."""
    if last_layer not in VGG19_LAYERS:
        raise ValueError(f"unknown VGG-19 layer {last_layer!r}; choose one of {NAMED_LAYERS}")
    last = VGG19_LAYERS[last_layer]
    _check_vgg19_state(state, last)
    with torch.device("meta"):
        features = torchvision.models.vgg19(weights=None).features[: last + 1]
    features = features.to_empty(device=device)
    prefix = "features."
    sub = {
        k[len(prefix) :]: v
        for k, v in state.items()
        if k.startswith(prefix) and int(k.split(".")[1]) <= last
    }
    features.load_state_dict(sub, strict=True)
    return VGGFeatures(features.float()).to(device)


def content_loss(f_out: torch.Tensor, f_target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of two VGG feature maps (B, C, h, w) of equal shape → float32
    scalar; the target's features are a constant (detached). Default layer relu4_2, the
    project's reading of Korshunova et al. 2017."""
    if f_out.shape != f_target.shape:
        raise ValueError(f"feature shapes differ: {tuple(f_out.shape)} vs {tuple(f_target.shape)}")
    return F.mse_loss(f_out.float(), f_target.detach().float())


@torch.no_grad()
def _nearest_patches(
    p: torch.Tensor, maps: torch.Tensor, k: int, stride: int, chunk_bytes: int
) -> torch.Tensor:
    """For each row of ``p`` (L, D) the style patch of ``maps`` (n, C, h, w) (k×k, stride
    ``stride``) of highest normalised cross-correlation → (L, D). One image's patches at a
    time, its similarity matrix in chunks of at most ``chunk_bytes``."""
    L, D = p.shape
    pn = F.normalize(p, dim=1)
    best_val = p.new_full((L,), -math.inf)
    best = p.new_zeros(L, D)
    rows = max(1, chunk_bytes // (4 * (D + L)))
    for j in range(maps.shape[0]):
        sp = F.unfold(maps[j : j + 1], k, stride=stride)[0].T  # (Ls, D)
        for s in range(0, sp.shape[0], rows):
            c = sp[s : s + rows]
            val, idx = (pn @ F.normalize(c, dim=1).T).max(dim=1)
            better = val > best_val
            best_val = torch.where(better, val, best_val)
            best[better] = c[idx[better]]
    return best


class PatchStyleBank(nn.Module):
    """Patch-based style loss (Li & Wand 2016) over pose-nearest style images, as Korshunova
    et al. 2017 use it.

    Built once from the source identity's faces ``style_images`` (N, 3, S, S) in [-1, 1],
    their head poses ``style_pose`` (N, 3) (yaw, pitch, roll, degrees) and ``vgg``: holds per
    layer of ``layers`` the style feature maps (N, C, h, w) float32 as non-persistent buffers
    (on the device of ``vgg``; N·C·h·w·4 bytes per layer, ~6.3 MB per image for relu3_1 +
    relu4_1 at 256 px). :meth:`loss` matches every ``patch_size``² patch of the output's
    features (stride 1) to the style patch (stride ``stride``) of highest normalised
    cross-correlation among its sample's ``n_best`` pose-nearest style images (L2 on yaw,
    pitch, roll), and returns the mean squared difference between output patches and their
    (detached) matches, averaged over samples and layers.

    Memory of the matching, per sample and layer, with L output patches of D = C·k² values:
    about 5·L·D·4 bytes + ``chunk_bytes`` whatever ``n_best`` is (relu3_1 of a 256-px crop:
    L = 3844, D = 2304 → ~0.18 GB + 128 MiB ≈ 0.31 GB); the autograd graph keeps one (L, D)
    float32 difference per sample and layer until backward.
    """

    def __init__(
        self,
        vgg: VGGFeatures,
        style_images: torch.Tensor,
        style_pose: torch.Tensor,
        layers: Sequence[str] = ("relu3_1", "relu4_1"),
        patch_size: int = 3,
        n_best: int = 16,
        stride: int = 1,
        chunk_bytes: int = 128 * 2**20,
        batch_size: int = 8,
    ):
        super().__init__()
        N = style_images.shape[0]
        if style_images.ndim != 4 or style_images.shape[1] != 3 or N < 1:
            raise ValueError(f"expected style_images (N, 3, S, S), got {tuple(style_images.shape)}")
        if tuple(style_pose.shape) != (N, 3):
            raise ValueError(f"expected style_pose ({N}, 3), got {tuple(style_pose.shape)}")
        if unknown := [n for n in layers if n not in vgg.layers]:
            raise ValueError(f"layers {unknown} not computed by the VGG (has {list(vgg.layers)})")
        if min(patch_size, n_best, stride, chunk_bytes) < 1 or not layers:
            raise ValueError("layers must be non-empty; patch_size, n_best, stride >= 1")
        self.layers, self.patch_size = tuple(layers), patch_size
        self.n_best, self.stride, self.chunk_bytes = n_best, stride, chunk_bytes
        device = vgg.mean.device
        feats: dict[str, list[torch.Tensor]] = {n: [] for n in self.layers}
        with torch.no_grad():
            for s in range(0, N, batch_size):
                out = vgg(style_images[s : s + batch_size].to(device))
                for n in self.layers:
                    feats[n].append(out[n].float())
        for n in self.layers:
            self.register_buffer(f"style_{n}", torch.cat(feats[n]), persistent=False)
        self.register_buffer("pose", style_pose.to(device, torch.float32), persistent=False)

    def style_maps(self, layer: str) -> torch.Tensor:
        """The style images' feature maps (N, C, h, w) float32 of ``layer``."""
        return getattr(self, f"style_{layer}")

    def nearest(self, target_pose: torch.Tensor) -> torch.Tensor:
        """Indices (B, min(n_best, N)) int64 of the style images nearest in pose (L2 on yaw,
        pitch, roll in degrees) to each row of ``target_pose`` (B, 3), nearest first."""
        if target_pose.ndim != 2 or target_pose.shape[1] != 3:
            raise ValueError(f"expected target_pose (B, 3), got {tuple(target_pose.shape)}")
        d = torch.cdist(target_pose.to(self.pose.device, torch.float32), self.pose)
        return d.topk(min(self.n_best, self.pose.shape[0]), dim=1, largest=False).indices

    def loss(self, out_feats: dict[str, torch.Tensor], target_pose: torch.Tensor) -> torch.Tensor:
        """Style loss of the output's VGG features ``out_feats`` (name → (B, C, h, w), any
        float dtype, computed in float32) for target poses (B, 3) → float32 scalar."""
        idx = self.nearest(target_pose)
        k, total = self.patch_size, 0.0
        for layer in self.layers:
            f, bank = out_feats[layer].float(), self.style_maps(layer)
            if f.ndim != 4 or f.shape[0] != idx.shape[0] or f.shape[1] != bank.shape[1]:
                raise ValueError(
                    f"{layer}: expected ({idx.shape[0]}, {bank.shape[1]}, h, w) features, "
                    f"got {tuple(f.shape)}"
                )
            per_sample = []
            for b in range(f.shape[0]):
                p = F.unfold(f[b : b + 1], k)[0].T  # (L, D)
                maps = bank[idx[b].to(bank.device)].to(f.device)
                match = _nearest_patches(p.detach(), maps, k, self.stride, self.chunk_bytes)
                per_sample.append((p - match).square().mean())
            total = total + torch.stack(per_sample).mean()
        return total / len(self.layers)


def _luma01(x: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma Y (B, 1, S, S) in [0, 1] of RGB x (B, 3, S, S) in [-1, 1]."""
    w = x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return ((x + 1) / 2 * w).sum(dim=1, keepdim=True)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian low-pass of x (B, 1, H, W), H, W >= 2: radius ceil(3σ) (at most
    min(H, W) − 1), edges mirrored (reflect padding keeps a zero-mean texture zero-mean)."""
    r = min(max(1, math.ceil(3 * sigma)), x.shape[2] - 1, x.shape[3] - 1)
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), g.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), g.view(1, 1, -1, 1))


def luminance_loss(
    out: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    sigma_fraction: float = 1 / 16,
) -> torch.Tensor:
    """Luminance consistency loss, the project's definition (seed 000 names the loss, "preserves
    the lighting conditions", without a formula).

    out, target: (B, 3, S, S) in [-1, 1]; mask: (B, 1, S, S) in [0, 1] or None (all pixels).
    Rec. 601 luma Y = 0.299 R + 0.587 G + 0.114 B of both on [0, 1], Gaussian low-pass with
    σ = ``sigma_fraction``·S (keeps the shading, drops texture), then the mask-weighted mean
    squared difference → float32 scalar.
    """
    if out.shape != target.shape or out.ndim != 4 or out.shape[1] != 3:
        raise ValueError(
            f"expected out and target (B, 3, S, S), got {tuple(out.shape)}, {tuple(target.shape)}"
        )
    B, _, H, W = out.shape
    if H < 2 or W < 2:
        raise ValueError(f"expected images of at least 2×2 pixels, got {tuple(out.shape)}")
    if mask is not None and tuple(mask.shape) != (B, 1, H, W):
        raise ValueError(f"expected mask ({B}, 1, {H}, {W}), got {tuple(mask.shape)}")
    if sigma_fraction <= 0:
        raise ValueError(f"sigma_fraction must be > 0, got {sigma_fraction}")
    diff = _luma01(out.float()) - _luma01(target.float())
    d2 = _gaussian_blur(diff, sigma_fraction * max(H, W)).square()
    if mask is None:
        return d2.mean()
    m = mask.float()
    return (m * d2).sum() / m.sum().clamp_min(1e-8)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation, mean absolute form: mean |x[i+1, j] − x[i, j]| + mean
    |x[i, j+1] − x[i, j]| over x (B, C, H, W) with H, W >= 2 → float32 scalar."""
    if x.ndim != 4 or x.shape[2] < 2 or x.shape[3] < 2:
        raise ValueError(f"expected (B, C, H, W) with H, W >= 2, got {tuple(x.shape)}")
    x = x.float()
    return (x[:, :, 1:] - x[:, :, :-1]).abs().mean() + (x[..., 1:] - x[..., :-1]).abs().mean()


VGG16_MODEL = "vgg16_imagenet"
LPIPS_MODEL = "lpips_vgg_v0.1"


def load_lpips_vgg(store: ModelStore, device: str | torch.device = "cpu") -> nn.Module:
    """LPIPS v0.1 with the VGG-16 backbone (Zhang et al. 2018, "The Unreasonable
    Effectiveness of Deep Features as a Perceptual Metric"), from the ``lpips`` package, frozen
    and in eval mode.

    The package's linear calibration layers are registry entry ``lpips_vgg_v0.1`` (shipped in
    the wheel, checksum-verified); the backbone is torchvision's ImageNet VGG-16 from
    ``vgg16_imagenet`` in the models directory (the package would download it: here it is
    built empty and loaded from the registry's file, ``features.<i>`` → ``net.slice<k>.<i>``).
    ``forward(x, y)``: x, y (B, 3, H, W) float in [-1, 1] RGB → (B, 1, 1, 1) float distance
    (0 for identical images). Raises ``infra.models.ModelError`` when a file is missing or
    altered, ValueError when the backbone file lacks or misshapes a ``features`` conv key.
    """
    import lpips

    with warnings.catch_warnings():  # torchvision's notes on lpips' `pretrained=False` call
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(
            net="vgg",
            pretrained=True,
            pnet_rand=True,
            model_path=str(store.path(LPIPS_MODEL)),
            verbose=False,
        )
    state = torch.load(store.path(VGG16_MODEL), map_location="cpu", weights_only=True)
    backbone = {}
    for name, module in model.net.named_modules():  # slice<k>.<i>: torchvision features.<i>
        if isinstance(module, nn.Conv2d):
            index = name.split(".")[1]
            for p in ("weight", "bias"):
                key, want = f"features.{index}.{p}", getattr(module, p).shape
                if key not in state or state[key].shape != want:
                    got = tuple(state[key].shape) if key in state else "missing"
                    raise ValueError(
                        f"{store.path(VGG16_MODEL)}: {key} {got}, expected {tuple(want)}"
                    )
                backbone[f"{name}.{p}"] = state[key]
    model.net.load_state_dict(backbone, strict=True)
    return model.requires_grad_(False).eval().to(device)
