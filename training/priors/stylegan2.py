"""StyleGAN2 generator (config F) in the key layout of rosinality/stylegan2-pytorch.

Source: Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN" (CVPR;
arXiv 1912.04958). The synthesis network is that of Fig. 2d and §2.2 (weight modulation and
demodulation, eq. 1–3; noise and bias outside the style block) with the "output skips"
generator of §4.1 (Fig. 7: every resolution adds its ToRGB output to the upsampled RGB image of
the previous one). The mapping network (8 fully connected layers, learning-rate multiplier
0.01, pixel norm of z) and the learned constant 4×4 input with per-layer noise are StyleGAN's
(Karras et al. 2019, §2 and Appendix C); equalized learning rate is Karras et al. 2018 (PGGAN,
§4.1): weights are stored with unit-variance initialisation and scaled by ``lr_mul /
sqrt(fan_in)`` at run time.

The module's ``state_dict()`` names and shapes are exactly those of rosinality's
``model.py: Generator`` (the ``g_ema`` entry of ``stylegan2-ffhq-config-f.pt``, the converted
NVIDIA FFHQ 1024-px weights that pSp, e4e and RAFSwap load; registry entry
:data:`STYLEGAN2_FFHQ`): ``style.1`` … ``style.<n_mlp>`` (``style.0`` is the parameter-free
pixel norm), ``input.input``, ``conv1``, ``to_rgb1``, ``convs.<i>``, ``to_rgbs.<i>``, the
blur kernels ``convs.<2k>.conv.blur.kernel`` / ``to_rgbs.<k>.upsample.kernel`` (persistent
buffers in that layout) and the fixed noise maps ``noises.noise_<i>``. The implementation is
this project's own, in plain PyTorch (no CUDA extensions): the fused bias + leaky ReLU is
``leaky_relu(x + b, 0.2) · √2`` and upfirdn2d is :func:`upfirdn2d` (zero insertion, padding,
depthwise FIR filter, subsampling). Modulated convolutions scale the input by the style,
convolve with the shared weight and scale the output by the demodulation coefficients, which
equals convolving with the per-sample weights of eq. 1–3 (the paper's grouped-convolution
form) up to rounding.

Tests build small random instances (:func:`random_stylegan2`); a 1024-px stand-in (~30 M
parameters, ~120 MB) is deliberately not registered in :data:`infra.stand_ins.BUILDERS`.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from infra.config import StrictConfig
from infra.models import ModelStore
from training.priors.layout import layout_problems

log = logging.getLogger(__name__)

#: Registry name of the converted NVIDIA StyleGAN2 FFHQ 1024-px config-F weights.
STYLEGAN2_FFHQ = "stylegan2_ffhq_1024"
#: FIR filter of every up-sampling (Karras et al. 2020 keep StyleGAN's [1, 3, 3, 1] binomial).
BLUR_KERNEL = (1.0, 3.0, 3.0, 1.0)
#: rosinality's channel table before the multiplier: resolution → (base, scaled by cm?).
_BASE_CHANNELS = {
    4: (512, False),
    8: (512, False),
    16: (512, False),
    32: (512, False),
    64: (256, True),
    128: (128, True),
    256: (64, True),
    512: (32, True),
    1024: (16, True),
}
_SQRT2 = math.sqrt(2.0)


class StyleGAN2Config(StrictConfig):
    """Architecture of :class:`StyleGAN2Generator` (defaults: FFHQ 1024 px, config F).

    ``channels`` is rosinality's table (4–32 px: 512; 64: 256·cm; 128: 128·cm; 256: 64·cm;
    512: 32·cm; 1024: 16·cm, cm = ``channel_multiplier``; config F is cm = 2, i.e. 512 up to
    64 px, then 256, 128, 64, 32) divided by ``width`` (at least 1), so tests can build a
    64-px model of a few thousand parameters. Only ``width = 1`` loads published weights.
    ValueError (pydantic ValidationError) when ``size`` is not a power of two in [4, 1024].
    """

    size: int = Field(1024, description="Output side, px; a power of two in [4, 1024].")
    style_dim: int = Field(512, ge=1, description="Dimension of z and w (512 published).")
    n_mlp: int = Field(8, ge=1, description="Fully connected layers of the mapping network.")
    channel_multiplier: int = Field(2, ge=1, description="cm of the channel table (F: 2).")
    width: int = Field(1, ge=1, description="Divisor of every channel count (tests only).")
    lr_mlp: float = Field(
        0.01, gt=0, description="Learning-rate multiplier of the mapping layers (StyleGAN)."
    )

    @model_validator(mode="after")
    def _check(self) -> StyleGAN2Config:
        if self.size not in _BASE_CHANNELS:
            raise ValueError(
                f"size must be a power of two in [4, 1024], got {self.size} "
                f"(choose one of {sorted(_BASE_CHANNELS)})"
            )
        return self

    @property
    def channels(self) -> dict[int, int]:
        """Resolution (4 … 1024) → feature channels, rosinality's table // ``width``, >= 1."""
        return {
            r: max(1, (base * (self.channel_multiplier if scaled else 1)) // self.width)
            for r, (base, scaled) in _BASE_CHANNELS.items()
        }

    @property
    def log_size(self) -> int:
        """log2(size): 10 at 1024 px."""
        return int(math.log2(self.size))

    @property
    def n_latent(self) -> int:
        """Rows of a W+ code, 2·log2(size) − 2 (18 at 1024 px): one per modulated conv and
        ToRGB style input (conv1 uses row 0, to_rgb1 row 1, resolution 2^i rows 2i−5 … 2i−3)."""
        return 2 * self.log_size - 2

    @property
    def num_layers(self) -> int:
        """Styled 3×3 convolutions = noise maps, 2·log2(size) − 3 (17 at 1024 px)."""
        return 2 * self.log_size - 3

    @property
    def resolutions(self) -> list[int]:
        """Sides of the feature maps, 4, 8, …, size."""
        return [2**i for i in range(2, self.log_size + 1)]


# --- plain-PyTorch ops ---------------------------------------------------------------------


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``leaky_relu(x + bias, 0.2) · √2`` (StyleGAN2's bias + activation, gain √2 keeps the
    second moment of a unit-variance input). x (B, C, …) float; bias (C,) broadcast over the
    channel axis 1; same shape and dtype as x, unbounded."""
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2))).to(x.dtype)
    return F.leaky_relu(x, 0.2) * _SQRT2


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Upsample by zero insertion, pad, filter with a 2-D FIR kernel, subsample.

    x (B, C, H, W) float; kernel (kh, kw) float, applied as a true convolution (flipped) to
    every channel alike; ``up`` inserts ``up − 1`` zeros after every pixel along both axes;
    ``pad = (p0, p1)`` pads (negative: crops) both axes by p0 before and p1 after; ``down``
    keeps every ``down``-th pixel. Returns (B, C, (H·up + p0 + p1 − kh) // down + 1, …), the
    same dtype. The same arithmetic as NVIDIA's / rosinality's ``upfirdn2d`` op.
    """
    b, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(b, c, h, 1, w, 1), (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(b, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    H, W = x.shape[-2:]
    x = x[..., max(-p0, 0) : H - max(-p1, 0), max(-p0, 0) : W - max(-p1, 0)]
    kh, kw = kernel.shape
    weight = kernel.flip([0, 1]).to(dtype=x.dtype, device=x.device).expand(c, 1, kh, kw)
    x = F.conv2d(x, weight, groups=c)
    return x[:, :, ::down, ::down] if down > 1 else x


def _blur_kernel(taps: tuple[float, ...], gain: float) -> torch.Tensor:
    """Separable 2-D kernel from 1-D taps, normalised to sum ``gain``: (len, len) float32."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[:, None] * k[None, :]
    return k / k.sum() * gain


# --- layers (attribute names are the published keys) ---------------------------------------


class PixelNorm(nn.Module):
    """x / sqrt(mean_c x² + 1e-8) over axis 1 (StyleGAN's normalisation of z); no parameters.
    (B, D) float → (B, D), each row of unit RMS."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Fully connected layer with equalized learning rate (Karras et al. 2018, §4.1).

    Keys ``weight`` (out, in), stored unscaled (init N(0, 1/lr_mul²)) and multiplied by
    ``lr_mul / sqrt(in)`` at run time, and ``bias`` (out,), multiplied by ``lr_mul``.
    ``forward``: (B, in) float → (B, out) float; with ``activation`` the fused bias + leaky
    ReLU (gain √2) follows, else the bias is added.
    """

    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
        activation: bool = False,
    ):  # fmt: skip
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class Blur(nn.Module):
    """FIR low-pass after a transposed convolution: key ``kernel`` (4, 4), a persistent buffer
    (the binomial [1, 3, 3, 1]⊗[1, 3, 3, 1] normalised to sum ``gain``, 4 after a 2×
    up-sampling so the DC gain of zero insertion is restored). (B, C, H, W) → (B, C, H + p0 +
    p1 − 3, W + p0 + p1 − 3)."""

    def __init__(self, pad: tuple[int, int], gain: float = 1.0):
        super().__init__()
        self.register_buffer("kernel", _blur_kernel(BLUR_KERNEL, gain))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2× FIR up-sampling of the RGB skip image: key ``kernel`` (4, 4) persistent buffer (sum
    4). (B, C, H, W) → (B, C, 2H, 2W), same dtype; a constant image stays constant inside."""

    def __init__(self, factor: int = 2):
        super().__init__()
        self.register_buffer("kernel", _blur_kernel(BLUR_KERNEL, factor**2))
        self.factor = factor
        p = len(BLUR_KERNEL) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Modulated (and demodulated) convolution, Karras et al. 2020 §2.2, eq. 1–3.

    Keys: ``weight`` (1, out, in, k, k), unscaled (×1/sqrt(in·k²) at run time);
    ``modulation.weight`` (in, style_dim) and ``modulation.bias`` (in,) (an
    :class:`EqualLinear` from w to the per-input-channel scales s_i, bias initialised to 1);
    with ``upsample`` also ``blur.kernel`` (4, 4).

    With w' = s_i · w_ijk (eq. 1) and, if ``demodulate``, w'' = w' / sqrt(Σ_{i,k} w'² + 1e-8)
    (eq. 3), so that an input of i.i.d. unit-variance activations gives outputs of unit
    standard deviation (eq. 2). Computed as conv(x · s) · d_j, which equals convolving with the
    per-sample weights w''. ``upsample``: a stride-2 transposed convolution followed by
    :class:`Blur` (rosinality's ``ModulatedConv2d(upsample=True)``, NVIDIA's
    ``Conv0_up``), output side 2H; otherwise 'same' padding.

    ``forward(x, style)``: x (B, in, H, W) float, style (B, style_dim) float (a w row) →
    (B, out, H, W) or (B, out, 2H, 2W) float, unbounded.
    """

    def __init__(
        self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
        demodulate: bool = True, upsample: bool = False,
    ):  # fmt: skip
        super().__init__()
        self.in_channel, self.out_channel = in_channel, out_channel
        self.kernel_size = kernel_size
        self.demodulate, self.upsample = demodulate, upsample
        if upsample:
            factor = 2
            p = (len(BLUR_KERNEL) - factor) - (kernel_size - 1)
            self.blur = Blur(pad=((p + 1) // 2 + factor - 1, p // 2 + 1), gain=factor**2)
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(
            torch.randn(1, out_channel, in_channel, kernel_size, kernel_size)
        )
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b, cin = x.shape[:2]
        if cin != self.in_channel:
            raise ValueError(f"expected {self.in_channel} input channels, got {cin}")
        s = self.modulation(style)  # (B, in)
        weight = self.weight[0] * self.scale  # (out, in, k, k)
        x = x * s.view(b, cin, 1, 1).to(x.dtype)
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1).to(x.dtype), stride=2)
            out = self.blur(out)
        else:
            out = F.conv2d(x, weight.to(x.dtype), padding=self.padding)
        if self.demodulate:
            # Σ_{i,k} (s_i w_ijk)² = Σ_i s_i² Σ_k w_ijk²  → (B, out)
            demod = torch.rsqrt(s.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8)
            out = out * demod.view(b, self.out_channel, 1, 1).to(out.dtype)
        return out


class NoiseInjection(nn.Module):
    """x + weight · noise (StyleGAN's per-layer scaled noise). Key ``weight`` (1,), init 0.
    x (B, C, H, W); noise (B or 1, 1, H, W) or None for fresh N(0, 1) noise; same shape as x."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        return x + self.weight.to(x.dtype) * noise.to(x.dtype)


class BiasLeakyReLU(nn.Module):
    """Key ``bias`` (C,), init 0: :func:`fused_leaky_relu` of x (B, C, H, W) with it."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class ConstantInput(nn.Module):
    """The learned 4×4 input of the synthesis network. Key ``input`` (1, C, 4, 4);
    ``forward(batch)`` → (batch, C, 4, 4)."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    """Modulated 3×3 conv (``conv``), noise (``noise``), bias + leaky ReLU (``activate``):
    one layer of Karras et al. 2020 Fig. 2d. (B, in, H, W), style (B, style_dim), noise
    (B or 1, 1, H', W') or None → (B, out, H', W'), H' = 2H with ``upsample``, else H."""

    def __init__(self, in_channel: int, out_channel: int, style_dim: int, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = BiasLeakyReLU(out_channel)

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
    """Modulated 1×1 conv to RGB without demodulation plus ``bias`` (1, 3, 1, 1); with
    ``upsample`` the previous RGB image is 2× up-sampled (``upsample.kernel``) and added
    (output skips, Karras et al. 2020 §4.1, Fig. 7a). x (B, C, H, W), style (B, style_dim),
    skip (B, 3, H/2, W/2) or None → (B, 3, H, W) float, unbounded."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True):
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None
    ) -> torch.Tensor:
        out = self.conv(x, style) + self.bias.to(x.dtype)
        if skip is not None:
            out = out + self.upsample(skip)
        return out


# --- generator -----------------------------------------------------------------------------


class StyleGAN2Generator(nn.Module):
    """StyleGAN2 config-F generator (Karras et al. 2020) with rosinality's state-dict layout.

    Submodules (= key prefixes): ``style`` (``style.0`` pixel norm, ``style.1`` …
    ``style.<n_mlp>`` :class:`EqualLinear` (style_dim, style_dim) with leaky ReLU, lr_mul
    ``cfg.lr_mlp``); ``input`` (:class:`ConstantInput`); ``conv1`` and ``to_rgb1`` (4×4);
    ``convs`` (two :class:`StyledConv` per resolution 8 … size, the first up-sampling);
    ``to_rgbs`` (one :class:`ToRGB` per resolution 8 … size); ``noises`` (buffers
    ``noise_<i>`` (1, 1, r, r), r = 2^((i + 5) // 2), i < ``cfg.num_layers``: the fixed noise
    used with ``randomize_noise=False``). Non-persistent buffer ``latent_avg`` (style_dim,) or
    None: the checkpoint's average w when :func:`load_stylegan2` found one (pSp starts its W+
    codes from it). Initialisation is rosinality's (weights N(0, 1), modulation biases 1,
    noise strengths and biases 0).
    """

    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        self.style_dim, self.size = cfg.style_dim, cfg.size
        self.n_latent, self.num_layers = cfg.n_latent, cfg.num_layers
        self.style = nn.Sequential(
            PixelNorm(),
            *[
                EqualLinear(cfg.style_dim, cfg.style_dim, lr_mul=cfg.lr_mlp, activation=True)
                for _ in range(cfg.n_mlp)
            ],
        )
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], cfg.style_dim)
        self.to_rgb1 = ToRGB(ch[4], cfg.style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            r = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r))
        c_in = ch[4]
        for r in cfg.resolutions[1:]:
            c_out = ch[r]
            self.convs.append(StyledConv(c_in, c_out, cfg.style_dim, upsample=True))
            self.convs.append(StyledConv(c_out, c_out, cfg.style_dim))
            self.to_rgbs.append(ToRGB(c_out, cfg.style_dim))
            c_in = c_out
        self.register_buffer("latent_avg", None, persistent=False)

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """The mapping network f: z (B, style_dim) float, any scale (pixel-normed first) →
        w (B, style_dim) float, unbounded. ValueError on another shape."""
        if z.ndim != 2 or z.shape[1] != self.style_dim:
            raise ValueError(f"expected z of shape (B, {self.style_dim}), got {tuple(z.shape)}")
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean of f(z) over ``n`` draws z ~ N(0, I): (1, style_dim) float on the module's
        device (the truncation centre; rosinality's ``mean_latent``). ``generator`` seeds the
        draw (a CPU generator; the draw is moved to the device)."""
        z = torch.randn(n, self.style_dim, generator=generator)
        return self.mapping(z.to(self.input.input)).mean(0, keepdim=True)

    def stored_noise(self) -> list[torch.Tensor]:
        """The ``noises.noise_<i>`` buffers, i = 0 … num_layers − 1, each (1, 1, r, r)."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    def forward(
        self,
        styles_wplus: torch.Tensor,
        noise: list[torch.Tensor | None] | None = None,
        randomize_noise: bool = False,
        return_features: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Synthesise images from W+ codes.

        Parameters
        ----------
        styles_wplus : (B, n_latent, style_dim) float, one w per style input (rows as in
            :attr:`StyleGAN2Config.n_latent`; repeat one w for plain W).
        noise : ``num_layers`` maps, entry i (B or 1, 1, r_i, r_i) (None entries: fresh
            noise), or None: the stored ``noises`` buffers, or fresh N(0, 1) noise everywhere
            when ``randomize_noise``.
        return_features : also return the feature maps.

        Returns
        -------
        image : (B, 3, size, size) float, unbounded (about [-1, 1] for the published weights).
        features (with ``return_features``) : one per resolution 4, 8, …, size, the output of
            that resolution's last styled conv (4×4: ``conv1``; else ``convs[2k+1]``), each
            (B, cfg.channels[r], r, r) float (after bias + leaky ReLU).

        Raises
        ------
        ValueError : W+ of another shape, or a noise list of another length.
        """
        if styles_wplus.ndim != 3 or styles_wplus.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(
                f"expected W+ of shape (B, {self.n_latent}, {self.style_dim}), got "
                f"{tuple(styles_wplus.shape)}"
            )
        if noise is None:
            noise = [None] * self.num_layers if randomize_noise else self.stored_noise()
        if len(noise) != self.num_layers:
            raise ValueError(f"expected {self.num_layers} noise maps, got {len(noise)}")
        w = styles_wplus
        out = self.conv1(self.input(w.shape[0]), w[:, 0], noise[0])
        skip = self.to_rgb1(out, w[:, 1])
        features = [out]
        for k, to_rgb in enumerate(self.to_rgbs):
            out = self.convs[2 * k](out, w[:, 2 * k + 1], noise[2 * k + 1])
            out = self.convs[2 * k + 1](out, w[:, 2 * k + 2], noise[2 * k + 2])
            skip = to_rgb(out, w[:, 2 * k + 3], skip)
            features.append(out)
        return (skip, features) if return_features else skip


# --- published layout, loading, stand-ins --------------------------------------------------


def stylegan2_state_shapes(cfg: StyleGAN2Config) -> dict[str, tuple[int, ...]]:
    """Key → shape of the state dict of :class:`StyleGAN2Generator` for ``cfg`` (built on the
    meta device: no memory). At the published config these are rosinality's ``g_ema`` keys."""
    with torch.device("meta"):
        g = StyleGAN2Generator(cfg)
    return {k: tuple(v.shape) for k, v in g.state_dict().items()}


def check_stylegan2_state(state: dict, cfg: StyleGAN2Config, strict: bool = True) -> None:
    """ValueError listing, in one message, the keys of ``state`` missing from, unexpected in,
    or of another shape than (or not a tensor in) the layout of ``cfg``. With ``strict=False``
    only wrong shapes are errors (as ``load_state_dict(strict=False)``)."""
    missing, unexpected, wrong = layout_problems(state, stylegan2_state_shapes(cfg))
    if wrong or (strict and (missing or unexpected)):
        raise ValueError(
            f"not a StyleGAN2 generator state dict (rosinality layout) for size {cfg.size}, "
            f"style_dim {cfg.style_dim}, n_mlp {cfg.n_mlp}, channel_multiplier "
            f"{cfg.channel_multiplier}, width {cfg.width}: missing {missing}, unexpected "
            f"{unexpected}, wrong shape {wrong}"
        )


def read_stylegan2_checkpoint(path: Path | str) -> dict:
    """The object saved in a rosinality-format file, loaded with ``weights_only=True`` on the
    CPU. ``convert_weight.py`` (the published ``stylegan2-ffhq-config-f.pt``) saves
    ``{"g_ema": state, "latent_avg": (512,) tensor}`` (plus ``"g"`` / ``"d"`` with
    ``--gen`` / ``--disc``): tensors only. ``train.py`` checkpoints also hold optimizer state
    dicts, ``"ada_aug_p"`` (a float) and ``"args"``, an ``argparse.Namespace``, which the
    weights-only unpickler refuses unless allow-listed: ``argparse.Namespace`` is allowed here
    (it holds only the training options). ValueError when the file holds no dict."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict, got {type(obj).__name__}")
    return obj


def load_stylegan2(
    state_or_path: dict | Path | str,
    cfg: StyleGAN2Config | None = None,
    strict: bool = True,
    device: str | torch.device = "cpu",
) -> StyleGAN2Generator:
    """A :class:`StyleGAN2Generator` holding the given weights.

    ``state_or_path``: a file (:func:`read_stylegan2_checkpoint`), a checkpoint dict with a
    ``"g_ema"`` entry (the EMA generator; its ``"latent_avg"``, when present, becomes the
    module's ``latent_avg``), or a bare generator state dict. ``cfg`` defaults to the FFHQ
    1024-px config F. ``strict``: every key of the layout present and none else, as the
    published ``g_ema`` (``False`` keeps the initialisation of missing keys and ignores
    unexpected ones). The module is returned on ``device`` in eval mode, float32, with
    gradients enabled (freeze it where it is a fixed prior).

    Raises
    ------
    ValueError : missing / unexpected / wrong-shape keys (one message listing each), or a
        file that holds no dict.
    """
    cfg = cfg or StyleGAN2Config()
    obj = (
        read_stylegan2_checkpoint(state_or_path)
        if isinstance(state_or_path, (str, Path))
        else state_or_path
    )
    state = obj["g_ema"] if isinstance(obj.get("g_ema"), dict) else obj
    latent_avg = obj.get("latent_avg") if state is not obj else None
    check_stylegan2_state(state, cfg, strict=strict)
    if strict:  # every value comes from the file: skip the random initialisation
        with torch.device("meta"):
            g = StyleGAN2Generator(cfg)
        g = g.to_empty(device=device)
    else:
        g = StyleGAN2Generator(cfg).to(device)
    g.load_state_dict(state, strict=strict)
    if torch.is_tensor(latent_avg):
        g.latent_avg = latent_avg.reshape(-1).to(device=device, dtype=torch.float32)
    return g.float().eval()


def load_stylegan2_ffhq(
    store: ModelStore, cfg: StyleGAN2Config | None = None, device: str | torch.device = "cpu"
) -> StyleGAN2Generator:
    """The generator of registry entry :data:`STYLEGAN2_FFHQ` from ``store`` (strict).

    ``store.path`` verifies the file (no digest is pinned: it logs the SHA-256 it found, or
    warns that a listed stand-in is used); ``cfg`` defaults to the published FFHQ config (a
    stand-in may be written at test size with its config passed here).

    Raises
    ------
    infra.models.ModelFileMissingError : the file is absent (the message names the file and
        the download URL).
    ValueError : the file is not in the layout of ``cfg``.
    """
    return load_stylegan2(store.path(STYLEGAN2_FFHQ), cfg, strict=True, device=device)


def random_stylegan2(cfg: StyleGAN2Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in the published layout of ``cfg`` (test stand-in).

    rosinality's initialisation, except that noise strengths (N(0, 0.1²)) and the activation
    and ToRGB biases (N(0, 0.1²)) are non-zero, as in trained weights, so every path of the
    forward pass is exercised. Float32 CPU tensors; the global RNG is left as it was. Use a
    small config (e.g. ``size=64, style_dim=16, n_mlp=2, width=128``): the 1024-px one is
    ~30 M parameters.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = StyleGAN2Generator(cfg)
        with torch.no_grad():
            for name, p in g.named_parameters():
                rgb_bias = (
                    name.startswith("to_rgb") and name.endswith(".bias") and ".conv." not in name
                )
                if rgb_bias or name.endswith(("noise.weight", "activate.bias")):
                    p.normal_(0.0, 0.1)
    return {k: v.detach().clone() for k, v in g.state_dict().items()}
