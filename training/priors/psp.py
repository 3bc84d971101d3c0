"""pSp encoder (pixel2style2pixel's GradualStyleEncoder, and e4e) in the published key layout.

Source: Richardson et al. 2021, "Encoding in Style: a StyleGAN Encoder for Image-to-Image
Translation" (CVPR; arXiv 2008.00951), §3 and Fig. 2: a ResNet backbone (IR-SE-50, the ArcFace
network of Deng et al. 2019 with squeeze-and-excitation units, initialised from TreB1eN's face
recognition weights) extended with a feature pyramid (Lin et al. 2017); styles 0–2 are
extracted from the smallest pyramid map, 3–6 from the medium and 7–17 from the largest, each
by a small "map2style" network (stride-2 3×3 convolutions with leaky ReLU down to 1×1, then a
fully connected layer). Styles are W+ rows of a StyleGAN2 FFHQ 1024-px generator
(:mod:`training.priors.stylegan2`); pSp adds the generator's average latent to the encoder
output (``start_from_latent_avg``), outside the encoder module.

e4e (Tov et al. 2021, "Designing an Encoder for StyleGAN Image Manipulation", SIGGRAPH /
TOG; arXiv 2102.02766): the same module and state-dict keys (``Encoder4Editing``), but the
codes are one w from head 0 on the smallest map plus per-row offsets, w_i = w + Δ_i (Δ_i
from head i, i ≥ 1), all 18 rows at inference (``ProgressiveStage.Inference``).
:attr:`PSPEncoderConfig.kind` selects the forward pass; the keys do not depend on it.

MAttFace (seed 004 §3.1, eq. 1 and 6–7) uses pSp as its encoder: Φ_E^feat maps I (3×H×W) to
"coarse F_c ∈ R^{128×H/4×W/4}, medium F_m ∈ R^{256×H/8×W/8}, and fine F_f ∈
R^{512×H/16×W/16}", which are the backbone outputs c1, c2, c3 here (ends of the second, third
and fourth IR-SE stages; :meth:`PSPEncoder.features`); Φ_E^lat "fuses these three feature maps
into W+ space Z ∈ R^{18×512}" — the lateral 1×1 convolutions, the pyramid and the style heads
(:meth:`PSPEncoder.map_to_styles`). Note the naming: the seed's *coarse* map F_c is the
largest (H/4), whereas pSp's *coarse* styles 0–2 come from the smallest (H/16). MAttFace keeps
Φ_E^feat fixed and trains Φ_E^lat (§3.1): the former are the parameters under
``input_layer`` / ``body``, the latter those under ``latlayer1`` / ``latlayer2`` / ``styles``.

The state-dict names and shapes are exactly those of pSp's ``GradualStyleEncoder(50,
'ir_se')`` (``models/encoders/psp_encoders.py``, with ``helpers.py``: ``get_blocks``,
``bottleneck_IR_SE``, ``SEModule``) and e4e's ``Encoder4Editing(50, 'ir_se')``: ``input_layer``
(conv 3→64, BN, PReLU), ``body.0`` … ``body.23`` (``res_layer.0`` BN, ``.1`` 3×3 conv, ``.2``
PReLU, ``.3`` 3×3 conv with the unit's stride, ``.4`` BN, ``.5.fc1`` / ``.5.fc2`` the SE
module's 1×1 convs; ``shortcut_layer.0`` 1×1 conv and ``.1`` BN in the first unit of stages 2–4,
a parameter-free stride-2 max-pool of size 1 in stage 1), ``styles.<i>.convs.<2k>`` and
``styles.<i>.linear`` (an equalized-lr linear layer), ``latlayer1`` (1×1, 256→512) and
``latlayer2`` (1×1, 128→512). The implementation is this project's own. The published
checkpoints (registry :data:`PSP_FFHQ`, :data:`E4E_FFHQ`) hold the whole pSp network:
``{'state_dict': {'encoder.*', 'decoder.*'}, 'latent_avg': …, 'opts': dict}``; the
``decoder.*`` part is a rosinality StyleGAN2 generator (:func:`training.priors.stylegan2.
load_stylegan2` loads it once the prefix is removed).

Tests build small random instances (``width``; :func:`random_psp_encoder`); the published
encoder has 267 M parameters (~1.07 GB in float32) and is not registered as a stand-in.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from infra.config import StrictConfig
from infra.models import ModelStore
from training.priors.layout import layout_problems
from training.priors.stylegan2 import EqualLinear

log = logging.getLogger(__name__)

#: Registry names of the published FFHQ encoders (pSp "StyleGAN Inversion"; e4e "FFHQ Inversion").
PSP_FFHQ = "psp_ffhq_encode"
E4E_FFHQ = "e4e_ffhq_encode"
#: Output channels of the four IR-SE stages (``get_blocks``), before ``width``.
STAGE_DEPTHS = (64, 128, 256, 512)
#: Units per stage for ``num_layers`` 50 / 100 / 152 (``get_blocks``; pSp's FFHQ encoders: 50).
STAGE_UNITS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
#: First style row of the medium and fine groups (pSp's ``coarse_ind``, ``middle_ind``).
COARSE_END, MEDIUM_END = 3, 7
#: map2style convolutions per group: log2 of the side the head reduces to 1 at 256-px input
#: (coarse 16×16 → 4, medium 32×32 → 5, fine 64×64 → 6), fixed by the published layout.
HEAD_CONVS = (4, 5, 6)
#: Largest input side whose smallest map (H/16) the coarse heads still reduce to 1×1.
MAX_INPUT_SIDE = 256
SE_REDUCTION = 16


class PSPEncoderConfig(StrictConfig):
    """Architecture of :class:`PSPEncoder` (defaults: pSp's / e4e's FFHQ encoders).

    Channels are ``STAGE_DEPTHS`` (64, 128, 256, 512) divided by ``width`` (at least 1 each), so
    tests can build a model of a few thousand parameters; only ``width = 1`` with the default
    ``style_dim`` loads published weights. The pyramid has the last stage's channels (512) and
    each style head maps them to ``style_dim``. ValueError (pydantic ValidationError) on an
    unknown key or a value out of range.
    """

    num_layers: Literal[50, 100, 152] = Field(50, description="IR-SE depth (published: 50).")
    input_nc: int = Field(3, ge=1, description="Input channels (3: RGB).")
    n_styles: int = Field(
        18, ge=1, description="W+ rows, 2·log2(generator size) − 2 (18 at 1024 px)."
    )
    style_dim: int = Field(512, ge=1, description="Dimension of each W+ row (512).")
    width: int = Field(1, ge=1, description="Divisor of every channel count (tests only).")
    kind: Literal["psp", "e4e"] = Field(
        "psp", description="Forward pass: pSp (one code per head) or e4e (w + Δ_i)."
    )

    @property
    def channels(self) -> tuple[int, int, int, int]:
        """Output channels of the four IR-SE stages, ``STAGE_DEPTHS // width`` (>= 1)."""
        return tuple(max(1, d // self.width) for d in STAGE_DEPTHS)  # type: ignore[return-value]

    @property
    def taps(self) -> tuple[int, int, int]:
        """``body`` indices whose outputs are c1, c2, c3 (ends of stages 2, 3, 4): (6, 20, 23)
        for IR-SE-50, as pSp's ``i == 6 / 20 / 23``."""
        n = STAGE_UNITS[self.num_layers]
        return (sum(n[:2]) - 1, sum(n[:3]) - 1, sum(n) - 1)


def style_group(i: int) -> int:
    """Group of W+ row ``i``: 0 (coarse, rows 0–2, from the H/16 map c3), 1 (medium, 3–6,
    from the H/8 pyramid map p2) or 2 (fine, 7 …, from the H/4 pyramid map p1)."""
    return 0 if i < COARSE_END else 1 if i < MEDIUM_END else 2


# --- layers (attribute names are the published keys) ---------------------------------------


class SEModule(nn.Module):
    """Squeeze-and-excitation gate (Hu et al. 2018): keys ``fc1.weight`` (C/r, C, 1, 1) and
    ``fc2.weight`` (C, C/r, 1, 1), no biases, r = 16. x (B, C, H, W) float → x ·
    sigmoid(fc2(relu(fc1(mean_{H,W} x)))), same shape."""

    def __init__(self, channels: int, reduction: int = SE_REDUCTION):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class BottleneckIRSE(nn.Module):
    """One IR-SE unit (ArcFace's improved residual unit with SE), pSp's ``bottleneck_IR_SE``.

    ``res_layer``: BN(in) → 3×3 conv in→depth → PReLU(depth) → 3×3 conv depth→depth with
    ``stride`` → BN(depth) → :class:`SEModule` (keys ``res_layer.0`` … ``res_layer.5``; convs
    without bias). ``shortcut_layer``: a 1×1 conv with ``stride`` and BN (keys ``.0``, ``.1``)
    when in ≠ depth, else a size-1 max-pool with ``stride`` (pure subsampling, no keys).
    (B, in, H, W) float → (B, depth, ⌈H/stride⌉, ⌈W/stride⌉).
    """

    def __init__(self, in_channel: int, depth: int, stride: int):
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channel, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class MapToStyle(nn.Module):
    """pSp's map2style head (``GradualStyleBlock``): ``n_convs`` 3×3 stride-2 convs (padding
    1, with bias; the first in→out, the rest out→out), each followed by leaky ReLU of slope
    0.01 (keys ``convs.0``, ``convs.2``, …), then ``linear`` (:class:`EqualLinear` out→out,
    lr_mul 1). (B, in, h, w) float with h, w ≤ 2^n_convs → (B, out) float, unbounded.
    ValueError when the convs do not end at 1×1 (a larger map than the published input gives).
    """

    def __init__(self, in_channel: int, out_channel: int, n_convs: int):
        super().__init__()
        layers: list[nn.Module] = []
        for k in range(n_convs):
            layers += [
                nn.Conv2d(in_channel if k == 0 else out_channel, out_channel, 3, 2, 1),
                nn.LeakyReLU(0.01),
            ]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_channel, out_channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)
        if x.shape[2:] != (1, 1):
            raise ValueError(
                f"style head ended at {tuple(x.shape[2:])}, not 1×1: the input is larger "
                f"than {MAX_INPUT_SIDE} px"
            )
        return self.linear(x.flatten(1))


def upsample_add(top: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    """Feature-pyramid merge: ``top`` bilinearly resized (align_corners=True, as pSp) to the
    side of ``lateral`` and added. top (B, C, h, w), lateral (B, C, H, W) → (B, C, H, W)."""
    size = lateral.shape[-2:]
    return F.interpolate(top, size=size, mode="bilinear", align_corners=True) + lateral


# --- encoder -------------------------------------------------------------------------------


class PSPEncoder(nn.Module):
    """pSp's GradualStyleEncoder (``cfg.kind == "psp"``) or e4e's Encoder4Editing ("e4e").

    Submodules (= key prefixes): ``input_layer`` (conv input_nc→64 3×3 no bias, BN, PReLU),
    ``body`` (:class:`BottleneckIRSE` units, stages of ``STAGE_UNITS[num_layers]`` units at
    64, 128, 256, 512 channels, the first unit of each with stride 2), ``styles``
    (``n_styles`` :class:`MapToStyle` heads, 4 / 5 / 6 convs for the coarse / medium / fine
    groups), ``latlayer1`` (1×1 conv 256→512 with bias) and ``latlayer2`` (1×1, 128→512).
    Non-persistent buffer ``latent_avg`` (n_styles, style_dim) or None: the checkpoint's
    average latent when :func:`load_psp_encoder` found one. Default PyTorch initialisation.
    Batch norm uses running statistics in eval mode (as the published encoders are run).
    """

    def __init__(self, cfg: PSPEncoderConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        self.input_layer = nn.Sequential(
            nn.Conv2d(cfg.input_nc, ch[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(ch[0]),
            nn.PReLU(ch[0]),
        )
        units, c_in = [], ch[0]
        for depth, n in zip(ch, STAGE_UNITS[cfg.num_layers], strict=True):
            for u in range(n):  # the first unit of a stage changes channels and strides by 2
                units.append(BottleneckIRSE(c_in if u == 0 else depth, depth, 2 if u == 0 else 1))
            c_in = depth
        self.body = nn.Sequential(*units)
        self.styles = nn.ModuleList(
            MapToStyle(ch[3], cfg.style_dim, HEAD_CONVS[style_group(i)])
            for i in range(cfg.n_styles)
        )
        self.latlayer1 = nn.Conv2d(ch[2], ch[3], 1)
        self.latlayer2 = nn.Conv2d(ch[1], ch[3], 1)
        self.register_buffer("latent_avg", None, persistent=False)

    def feature_shapes(self, side: int = 256) -> list[tuple[int, int, int]]:
        """(C, H, W) of c1, c2, c3 for a square input of ``side`` px (multiple of 16):
        (128, s/4, s/4), (256, s/8, s/8), (512, s/16, s/16) at width 1."""
        ch = self.cfg.channels
        return [(c, side // f, side // f) for c, f in ((ch[1], 4), (ch[2], 8), (ch[3], 16))]

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Φ_E^feat of MAttFace (seed 004 §3.1, eq. 1): the backbone maps.

        x (B, input_nc, H, W) float, RGB in [-1, 1] for the published weights ((pixel −
        127.5) / 127.5, FFHQ-aligned faces resized to 256×256), 16 ≤ H, W ≤ 256. Returns
        c1 (B, 128, H/4, W/4) = F_c, c2 (B, 256, H/8, W/8) = F_m, c3 (B, 512, H/16, W/16) =
        F_f (channels ÷ ``width``; sides rounded up), float, unbounded. ValueError on another
        shape.
        """
        if x.ndim != 4 or x.shape[1] != self.cfg.input_nc:
            raise ValueError(f"expected (B, {self.cfg.input_nc}, H, W), got {tuple(x.shape)}")
        if not all(16 <= s <= MAX_INPUT_SIDE for s in x.shape[2:]):
            raise ValueError(
                f"input sides must be in [16, {MAX_INPUT_SIDE}], got {tuple(x.shape[2:])}"
            )
        x = self.input_layer(x)
        taps, out = self.cfg.taps, []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in taps:
                out.append(x)
        return out[0], out[1], out[2]

    def map_to_styles(self, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor) -> torch.Tensor:
        """Φ_E^lat of MAttFace (seed 004 §3.1): the pyramid and the style heads.

        c1, c2, c3 as :meth:`features` returns them (or IDATT-fused maps of the same shapes).
        p2 = up(c3) + latlayer1(c2) (B, 512, H/8, W/8), p1 = up(p2) + latlayer2(c1) (B, 512,
        H/4, W/4); head i reads c3, p2 or p1 by :func:`style_group`. pSp: row i = head_i;
        e4e: row 0 = head_0(c3) = w, row i = w + head_i (Δ_i). Returns (B, n_styles,
        style_dim) float, *without* the average latent (see :meth:`forward`). ValueError when
        a map has the wrong number of channels.
        """
        ch = self.cfg.channels
        for name, c, want in (("c1", c1, ch[1]), ("c2", c2, ch[2]), ("c3", c3, ch[3])):
            if c.ndim != 4 or c.shape[1] != want:
                raise ValueError(f"{name}: expected (B, {want}, h, w), got {tuple(c.shape)}")
        p2 = upsample_add(c3, self.latlayer1(c2))
        maps = (c3, p2, upsample_add(p2, self.latlayer2(c1)))
        codes = [head(maps[style_group(i)]) for i, head in enumerate(self.styles)]
        if self.cfg.kind == "e4e":
            codes = [codes[0]] + [codes[0] + delta for delta in codes[1:]]
        return torch.stack(codes, dim=1)

    def forward(
        self, x: torch.Tensor, return_features: bool = False, add_latent_avg: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Encode images into W+ (pSp §3; e4e for ``kind == "e4e"``).

        Parameters
        ----------
        x : (B, input_nc, H, W) float in [-1, 1] (see :meth:`features`); 256×256 published.
        return_features : also return (c1, c2, c3) of :meth:`features` (MAttFace's F_c, F_m,
            F_f: (B, 128, H/4, W/4), (B, 256, H/8, W/8), (B, 512, H/16, W/16)).
        add_latent_avg : add ``latent_avg`` to every row. Off by default, as pSp's and e4e's
            encoder modules (the pSp wrapper adds it; the published FFHQ encoders were trained
            with ``start_from_latent_avg``, so StyleGAN2 W+ codes need it).

        Returns
        -------
        codes : (B, n_styles, style_dim) float, unbounded; with ``add_latent_avg`` W+ codes
            for :class:`training.priors.stylegan2.StyleGAN2Generator`.
        features (with ``return_features``) : (c1, c2, c3).

        Raises
        ------
        ValueError : wrong input shape, or ``add_latent_avg`` without a ``latent_avg``.
        """
        if add_latent_avg and self.latent_avg is None:
            raise ValueError("add_latent_avg=True but this encoder has no latent_avg")
        feats = self.features(x)
        codes = self.map_to_styles(*feats)
        if add_latent_avg:
            codes = codes + self.latent_avg.to(codes.dtype)
        return (codes, feats) if return_features else codes


# --- published layout, loading, stand-ins --------------------------------------------------


def psp_state_shapes(cfg: PSPEncoderConfig) -> dict[str, tuple[int, ...]]:
    """Key → shape of the state dict of :class:`PSPEncoder` for ``cfg`` (built on the meta
    device: no memory). At the default config these are pSp's ``GradualStyleEncoder`` keys."""
    with torch.device("meta"):
        enc = PSPEncoder(cfg)
    return {k: tuple(v.shape) for k, v in enc.state_dict().items()}


def check_psp_state(state: dict, cfg: PSPEncoderConfig, strict: bool = True) -> None:
    """ValueError listing, in one message, the keys of ``state`` missing from, unexpected in,
    or of another shape than (or not a tensor in) the layout of ``cfg``. With ``strict=False``
    only wrong shapes are errors (as ``load_state_dict(strict=False)``)."""
    missing, unexpected, wrong = layout_problems(state, psp_state_shapes(cfg))
    if wrong or (strict and (missing or unexpected)):
        raise ValueError(
            f"not a pSp encoder state dict for num_layers {cfg.num_layers}, input_nc "
            f"{cfg.input_nc}, n_styles {cfg.n_styles}, style_dim {cfg.style_dim}, width "
            f"{cfg.width}: missing {missing}, unexpected {unexpected}, wrong shape {wrong}"
        )


def read_psp_checkpoint(path: Path | str) -> dict:
    """The object saved in a pSp / e4e file, loaded with ``weights_only=True`` on the CPU.

    Both trainers (``training/coach.py``) save ``{'state_dict': pSp.state_dict() (keys
    'encoder.*', 'decoder.*'), 'opts': vars(opts), 'latent_avg': tensor}``: ``opts`` is a
    plain dict of option values (their inference scripts turn it into an
    ``argparse.Namespace`` after loading), so no class needs allow-listing. e4e adds
    ``global_step``, ``optimizer``, ``best_val_loss`` and discriminator state dicts when saving
    training data (plain values and tensors too). ValueError when the file holds no dict;
    ``pickle.UnpicklingError`` (from torch) when it holds objects outside the weights-only set.
    """
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict, got {type(obj).__name__}")
    return obj


def split_psp_checkpoint(obj: dict) -> tuple[dict, torch.Tensor | None]:
    """(encoder state dict, latent_avg or None) of a pSp / e4e object.

    ``obj``: a checkpoint (``'state_dict'`` whose ``'encoder.'`` keys are kept with the prefix
    removed, as pSp's ``get_keys``; ``'decoder.'`` and other keys are ignored), a bare pSp
    state dict with ``'encoder.'`` keys, or a bare encoder state dict (used as is; no
    latent_avg). ``latent_avg`` is the object's ``'latent_avg'`` tensor when present.
    """
    state = obj["state_dict"] if isinstance(obj.get("state_dict"), dict) else obj
    prefixed = [k for k in state if isinstance(k, str) and k.startswith("encoder.")]
    if prefixed:
        state = {k[len("encoder.") :]: state[k] for k in prefixed}
    latent_avg = obj.get("latent_avg") if state is not obj else None
    return state, latent_avg if torch.is_tensor(latent_avg) else None


def latent_avg_rows(latent_avg: torch.Tensor, cfg: PSPEncoderConfig) -> torch.Tensor:
    """``latent_avg`` as (n_styles, style_dim) float32: pSp and e4e store the generator's mean
    w repeated per row, (n_styles, style_dim); a (style_dim,) or (1, style_dim) vector (a
    trainer that estimated it with ``mean_latent``) is repeated. ValueError on another shape."""
    rows = (cfg.n_styles, cfg.style_dim)
    if latent_avg.numel() == cfg.style_dim:
        return latent_avg.reshape(1, -1).float().expand(*rows).clone()
    if tuple(latent_avg.shape) != rows:
        raise ValueError(f"latent_avg of shape {tuple(latent_avg.shape)}, expected {rows}")
    return latent_avg.float().clone()


def load_psp_encoder(
    path_or_state: dict | Path | str,
    cfg: PSPEncoderConfig | None = None,
    strict: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[PSPEncoder, torch.Tensor | None]:
    """A :class:`PSPEncoder` holding the given weights, and the checkpoint's average latent.

    ``path_or_state``: a file (:func:`read_psp_checkpoint`), a published-format checkpoint
    dict, or a bare state dict (:func:`split_psp_checkpoint`). ``cfg`` defaults to the FFHQ
    pSp encoder (pass ``kind="e4e"`` for e4e's file: same keys, other forward). ``strict``:
    every key of the layout present and none else (``False`` keeps the initialisation of
    missing keys and ignores unexpected ones). The encoder is returned on ``device`` in eval
    mode, float32, gradients enabled; its ``latent_avg`` buffer is set when the checkpoint
    has one. Returns (encoder, latent_avg (n_styles, style_dim) float32 on ``device`` or None).

    Raises
    ------
    ValueError : missing / unexpected / wrong-shape keys (one message listing each), a
        latent_avg of the wrong shape, or a file that holds no dict.
    """
    cfg = cfg or PSPEncoderConfig()
    obj = (
        read_psp_checkpoint(path_or_state)
        if isinstance(path_or_state, (str, Path))
        else path_or_state
    )
    state, latent_avg = split_psp_checkpoint(obj)
    check_psp_state(state, cfg, strict=strict)
    if latent_avg is not None:
        latent_avg = latent_avg_rows(latent_avg, cfg).to(device)
    if strict:  # every value comes from the file: skip the random initialisation
        with torch.device("meta"):
            enc = PSPEncoder(cfg)
        enc = enc.to_empty(device=device)
    else:
        enc = PSPEncoder(cfg).to(device)
    enc.load_state_dict(state, strict=strict)
    enc.latent_avg = latent_avg
    return enc.float().eval(), latent_avg


def load_psp_ffhq_encoder(
    store: ModelStore,
    kind: Literal["psp", "e4e"] = "psp",
    cfg: PSPEncoderConfig | None = None,
    device: str | torch.device = "cpu",
) -> tuple[PSPEncoder, torch.Tensor | None]:
    """The FFHQ encoder of registry entry :data:`PSP_FFHQ` (``kind="psp"``) or
    :data:`E4E_FFHQ` ("e4e") from ``store``, loaded strictly (:func:`load_psp_encoder`).
    ``cfg`` defaults to the published config of that kind (a test-size stand-in passes its own).

    Raises
    ------
    infra.models.ModelFileMissingError : the file is absent (the message names the file and
        the download URL).
    ValueError : the file is not in the layout of ``cfg``.
    """
    cfg = cfg or PSPEncoderConfig(kind=kind)
    path = store.path(PSP_FFHQ if kind == "psp" else E4E_FFHQ)
    return load_psp_encoder(path, cfg, strict=True, device=device)


def random_psp_encoder(cfg: PSPEncoderConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in the published layout of ``cfg`` (test stand-in).

    PyTorch's default initialisation, except that the batch-norm statistics and affine
    parameters and the PReLU slopes are perturbed (running mean N(0, 0.1²), running var
    U(0.5, 1.5), weight 1 + N(0, 0.1²), bias N(0, 0.1²), slopes 0.25 + N(0, 0.05²)), as in
    trained weights, and the residual branch's last BN weight is scaled by 0.3 so that the
    activations stay of order one through the 24 units; the style heads' convs are
    He-initialised (std sqrt(2 / fan_in)) with biases N(0, 0.01²), so that the codes depend on
    the input rather than on the default init's biases. Float32 CPU tensors; the global RNG is
    left as it was. Use a small config (e.g. ``width=32, style_dim=8``): the published one is
    267 M parameters.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = PSPEncoder(cfg)
        with torch.no_grad():
            for name, m in enc.named_modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.normal_(0.0, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.normal_(1.0, 0.1).mul_(0.3 if name.endswith("res_layer.4") else 1.0)
                    m.bias.normal_(0.0, 0.1)
                    m.num_batches_tracked.fill_(1000)
                elif isinstance(m, nn.PReLU):
                    m.weight.normal_(0.25, 0.05)
                elif isinstance(m, nn.Conv2d) and ".convs." in f".{name}":
                    nn.init.kaiming_normal_(m.weight, a=0.01)
                    m.bias.normal_(0.0, 0.01)
    return {k: v.detach().clone() for k, v in enc.state_dict().items()}
