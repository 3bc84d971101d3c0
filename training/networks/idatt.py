"""IDATT / MAttFace (seed 004 §3): identity transfer by attention on pSp feature maps, a frozen
StyleGAN2, and the two-stage post-processing.

* Φ_E^feat (frozen pSp backbone) gives coarse / medium / fine maps of source and target
  (eq. 1, 6–7; F_c = c1 at H/4, F_m = c2 at H/8, F_f = c3 at H/16, see
  :mod:`training.priors.psp`);
* IDATT at each level (eq. 4–5, 8–10): Q_t from the target map and K_s, V_s from the source
  map by 1×1 convolutions to C/4 channels, M = softmax(Q_t K_sᵀ) over source positions,
  F_{s,t} = M V_s, F̂_t = γ·F_{s,t} + F_t with a learned γ initialised to 0. The seed's V_s has
  C/4 channels but is added to the C-channel F_t: a 1×1 convolution back to C (SANet's
  ``out_conv``, the module the seed names as its inspiration) is this project's reading;
* Φ_E^lat (pSp's lateral layers, pyramid and style heads, trained) maps the fused maps to W+
  and the frozen StyleGAN2 renders the side image (eq. 11);
* two-stage post-processing (§3.2, Fig. 2): the side image is discarded, its StyleGAN2
  feature maps (one per resolution 16 … image size) are kept; a target encoder (stride-2
  convolutions) gives target features of the same sizes; the mask blending module predicts a
  soft mask per level from both and replaces the target features by the side features inside
  it; a decoder (upsample + 3×3 convolutions, coarse to fine, each level's blended features
  concatenated in) renders the final face. The seed gives no layer sizes: widths, depths and
  the mask head are this project's choices (``post_channels``).

Trainable: IDATT, Φ_E^lat, the post-processing. Frozen: Φ_E^feat and StyleGAN2 (§3.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from infra.geometry import resize_square as resize
from training.networks.style_prior import StylePriorConfig, StylePriorNet


class IDATTConfig(StylePriorConfig):
    """Architecture of :class:`IDATTNet` (defaults: the paper's 1024-px configuration: crops and
    output at 1024 px, the encoder reading 256 px, FFHQ 1024-px StyleGAN2; seed 004 §4.1)."""

    image_size: int = Field(1024, ge=16, description="Crop side in and out, px.")
    post_channels: int = Field(32, ge=1, description="Channels of the post-processing levels.")
    post_min_res: int = Field(16, ge=4, description="Coarsest post-processing level, px.")


class IDATT(nn.Module):
    """One IDATT block (eq. 4–5). ``forward(f_s, f_t)``, both (B, C, h, w) → F̂_t (B, C, h, w).
    ``gamma`` (shape (1,)) starts at 0, so an untrained block returns F_t unchanged."""

    def __init__(self, channels: int):
        super().__init__()
        inner = max(1, channels // 4)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, inner, 1)
        self.out = nn.Conv2d(inner, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))  # 1-d: DeepSpeed cannot flatten 0-d params

    def attention(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        """M of eq. 4: (B, h·w of the target, h·w of the source), rows summing to 1."""
        q = self.query(f_t).flatten(2).transpose(1, 2)  # (B, N_t, C/4)
        k = self.key(f_s).flatten(2)  # (B, C/4, N_s)
        return torch.softmax(q @ k, dim=-1)

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        b, _, h, w = f_t.shape
        v = self.value(f_s).flatten(2).transpose(1, 2)  # (B, N_s, C/4)
        read = (self.attention(f_s, f_t) @ v).transpose(1, 2).reshape(b, -1, h, w)
        return self.gamma * self.out(read) + f_t


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.LeakyReLU(0.2))


class PostProcessor(nn.Module):
    """§3.2's target encoder, mask blending module and decoder over levels ``res`` (px,
    coarse to fine, the finest = image size). ``forward(side_feats, target)``: side_feats maps
    resolution → StyleGAN2 features (B, C_r, r, r); target (B, 3, S, S) → (final image (B, 3,
    S, S) in [-1, 1], masks per level (B, 1, r, r))."""

    def __init__(self, side_channels: dict[int, int], res: list[int], c: int):
        super().__init__()
        self.res = res
        n = len(res)
        self.stem = _conv(3, c)
        self.down = nn.ModuleList(_conv(c, c, 2) for _ in range(n - 1))  # target encoder
        self.side = nn.ModuleList(nn.Conv2d(side_channels[r], c, 1) for r in res)
        self.blend = nn.ModuleList(
            nn.Sequential(_conv(2 * c, c), nn.Conv2d(c, 1, 3, padding=1)) for _ in res
        )
        self.up = nn.ModuleList(_conv(2 * c, c) for _ in range(n - 1))
        self.to_rgb = nn.Conv2d(c, 3, 1)

    def forward(self, side_feats: dict[int, torch.Tensor], target: torch.Tensor):
        t = [self.stem(target)]  # finest first
        for down in self.down:
            t.append(down(t[-1]))
        t = t[::-1]  # coarse to fine, sizes = self.res
        blended, masks = [], []
        for k, r in enumerate(self.res):
            side = self.side[k](resize(side_feats[r], t[k].shape[-1]))
            m = torch.sigmoid(self.blend[k](torch.cat([side, t[k]], 1)))
            blended.append(m * side + (1 - m) * t[k])
            masks.append(m)
        x = blended[0]
        for k, up in enumerate(self.up):
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = up(torch.cat([x, blended[k + 1]], 1))
        return torch.tanh(self.to_rgb(x)), masks


class IDATTNet(StylePriorNet):
    """``forward(target, z_id, source)``: target, source (B, 3, S, S) float in [-1, 1],
    S = ``cfg.image_size``; z_id (B, D) ignored (identity comes from the source image).

    Returns (final face (B, 3, S, S) in [-1, 1], extras ``{"codes": W+ offsets (B, n_latent,
    style_dim), "side": the side image (B, 3, S, S), "masks": blending masks per level}``).
    ValueError on other input shapes, or when the StyleGAN2 output is smaller than S.
    """

    def __init__(self, cfg: IDATTConfig, id_dim: int):
        super().__init__(cfg, id_dim)
        if cfg.stylegan2.size < cfg.image_size:
            raise ValueError(
                f"StyleGAN2 size {cfg.stylegan2.size} < image_size {cfg.image_size}: the "
                "post-processing needs side features at every level up to the image size"
            )
        ch = cfg.encoder.channels
        self.idatt = nn.ModuleList(IDATT(c) for c in (ch[1], ch[2], ch[3]))  # F_c, F_m, F_f
        levels = [r for r in cfg.stylegan2.resolutions if cfg.post_min_res <= r <= cfg.image_size]
        self.post = PostProcessor(cfg.stylegan2.channels, levels, cfg.post_channels)

    def forward(self, target, z_id, source):
        self.check_inputs(target, source)
        # shared Φ_E^feat; split at the batch size (not chunk(2)) so an ONNX export keeps a
        # dynamic batch axis
        batch = target.shape[0]
        both = [f.split([batch, batch]) for f in self.features(torch.cat([target, source]))]
        fused = [att(s, t) for att, (t, s) in zip(self.idatt, both, strict=True)]  # eq. 8–10
        codes = self.encoder.map_to_styles(*fused)  # Φ_E^lat
        side, feats = self.synthesize(codes)  # eq. 11
        final, masks = self.post({f.shape[-1]: f for f in feats}, target)
        return final, {"codes": codes, "side": side, "masks": masks}
