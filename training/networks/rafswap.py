"""RAFSwap (Xu et al., CVPR 2022, "Region-Aware Face Swapping"), as seed 000 §II.B describes
it and its release (xc-csc101/RAFSwap, ``models/encoders/psp_encoders.py``,
``models/projector.py``, ``models/gen_mask.py``, ``models/psp.py``) builds it.

* weight-shared hierarchical encoder on source and target: pSp's IR-SE-50 backbone, maps at
  3 scales (c1 H/4, c2 H/8, c3 H/16; :mod:`training.networks.style_prior`);
* Region-Aware Identity Tokenizer (RAT, eq. 1–2): region-wise average pooling of each source
  map under the four region masks (lips, nose, brows, eyes) → 4 tokens per scale, a linear
  layer per scale to the token width, then transformer layers (LN, multi-head self-attention,
  LN, FFN, residuals) over all N·L = 12 tokens;
* Region-Aware Identity Projector (RAP, eq. 3): the target map masked by its four regions
  (mean of the four masked copies, as the release) gives the queries, the scale's four
  tokens the keys and values; F^l = F_t + RS(A^P T̂_s W^P). As in the release (which keeps
  only the non-zero logits), positions outside every target region receive no update;
* global branch (eq. 4): F^g = MLPs(GAP(F_s^0)) of the smallest source map, added to all three
  scales (F̂_t = F^g + F^l). The release comments its MLPs out and adds the plain GAP; this
  module keeps the two MLP layers the seed describes;
* pSp's style heads map F̂_t to W+ (rows 0–2 from c3, 3–6 from the c2 scale, 7… from the c1
  scale; the release feeds each scale to its heads without pSp's top-down pyramid, as here)
  and the frozen StyleGAN2 renders them;
* face mask predictor (release ``gen_mask.py``): a 3×3 conv to ``mask_channels`` on each
  StyleGAN2 feature map of 8 … ``mask_max_res`` px, upsampled to the output and concatenated,
  then 3×3 convs to ``mask_hidden`` and to 1 channel, sigmoid; the swap is
  m·G(w) + (1 − m)·target (soft-mask blending, release ``coach_swap.py``). The release uses two
  maps per resolution (both styled convs), this module the last one of each.

Trainable: RAT, RAP, the global MLPs, pSp's lateral layers and style heads, the mask
predictor. Frozen: backbone and StyleGAN2 (the seed; the release also trains the backbone).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from training.networks.style_prior import StylePriorConfig, StylePriorNet
from training.priors.psp import style_group

#: Region masks in channel order (``regions.png`` bits; prepare's RAFSwap regions).
NUM_REGIONS = 4


class RAFSwapConfig(StylePriorConfig):
    """Architecture of :class:`RAFSwapNet` (defaults: the release, 256-px crops, FFHQ 1024-px
    StyleGAN2)."""

    heads: int = Field(8, ge=1, description="Attention heads of the token transformer.")
    depth: int = Field(1, ge=1, description="Transformer layers over the tokens (release opt).")
    mask_channels: int = Field(32, ge=1, description="Channels per generator map, mask head.")
    mask_hidden: int = Field(128, ge=1, description="Hidden channels of the mask head.")
    mask_max_res: int = Field(256, ge=8, description="Largest generator map the mask reads.")


def region_pool(feats: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """φ of eq. 1: the mean of ``feats`` (B, C, h, w) under each region mask ``regions``
    (B, L, S, S) in {0, 1} (nearest-resized to h × w). Returns (B, L, C); a region absent from
    the map gives a zero token (as the release)."""
    m = F.interpolate(regions.to(feats.dtype), size=feats.shape[-2:], mode="nearest")
    area = m.flatten(2).sum(-1)  # (B, L)
    pooled = torch.einsum("blhw,bchw->blc", m, feats)
    return pooled / area.clamp(min=1.0).unsqueeze(-1)


class RegionProjector(nn.Module):
    """RAP of one scale (eq. 3). ``forward(feats (B, C, h, w), regions (B, L, S, S), tokens
    (B, L, D))`` → (B, C, h, w): feats + the attention read of the tokens at positions inside
    a target region."""

    def __init__(self, channels: int, token_dim: int):
        super().__init__()
        self.query = nn.Linear(channels, token_dim, bias=False)
        self.key = nn.Linear(token_dim, token_dim, bias=False)
        self.value = nn.Linear(token_dim, channels)  # W^P

    def forward(self, feats: torch.Tensor, regions: torch.Tensor, tokens: torch.Tensor):
        b, c, h, w = feats.shape
        m = F.interpolate(regions.to(feats.dtype), size=(h, w), mode="nearest")  # (B, L, h, w)
        masked = (feats.unsqueeze(1) * m.unsqueeze(2)).mean(1)  # F_t^m, (B, C, h, w)
        q = self.query(masked.flatten(2).transpose(1, 2))  # (B, hw, D)
        k = self.key(tokens)  # (B, L, D)
        attn = torch.softmax(q @ k.transpose(1, 2) / c**0.5, dim=-1)  # A^P, (B, hw, L)
        read = (attn @ self.value(tokens)).transpose(1, 2).reshape(b, c, h, w)
        inside = (m.sum(1, keepdim=True) > 0).to(feats.dtype)
        return feats + read * inside


class MaskPredictor(nn.Module):
    """Soft face mask from StyleGAN2 feature maps (release ``gen_mask.py``). ``forward(feats,
    size)``: the maps of 8 … ``max_res`` px (a list, 4 px first) → (B, 1, size, size) in
    (0, 1)."""

    def __init__(self, cfg: RAFSwapConfig):
        super().__init__()
        channels = cfg.stylegan2.channels
        self.res = [r for r in cfg.stylegan2.resolutions if 8 <= r <= cfg.mask_max_res]
        self.convs = nn.ModuleList(
            nn.Conv2d(channels[r], cfg.mask_channels, 3, padding=1) for r in self.res
        )
        self.to_mask = nn.Sequential(
            nn.Conv2d(cfg.mask_channels * len(self.res), cfg.mask_hidden, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(cfg.mask_hidden, 1, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, feats: list[torch.Tensor], size: int) -> torch.Tensor:
        by_res = {f.shape[-1]: f for f in feats}
        maps = [
            F.interpolate(F.leaky_relu(conv(by_res[r]), 0.2), size=(size, size), mode="bilinear")
            for r, conv in zip(self.res, self.convs, strict=True)
        ]
        return self.to_mask(torch.cat(maps, 1))


class RAFSwapNet(StylePriorNet):
    """``forward(target, z_id, source, regions, source_regions)``.

    target, source : (B, 3, S, S) float in [-1, 1], S = ``cfg.image_size``; z_id (B, D)
    ignored (identity comes from the source image); regions, source_regions : (B, 4, S, S)
    float in {0, 1}, lips/nose/brows/eyes of target and source (prepare's ``regions.png``).

    Returns (swap (B, 3, S, S), extras) with extras ``{"codes": W+ offsets (B, n_latent,
    style_dim) from w_avg, "styles": codes + w_avg (what StyleGAN2 receives), "mask":
    (B, 1, S, S) in (0, 1), "raw": the generator's image (B, 3, S, S)}``. The swap is
    mask·raw + (1 − mask)·target. ValueError on other input shapes.
    """

    extra_inputs = ("source", "regions", "source_regions")

    def __init__(self, cfg: RAFSwapConfig, id_dim: int):
        super().__init__(cfg, id_dim)
        ch = cfg.encoder.channels  # backbone stages; c1 = ch[1], c2 = ch[2], c3 = ch[3]
        d = ch[3]  # token width = pSp's pyramid width (512 published)
        self.tokenizers = nn.ModuleList(nn.Linear(c, d) for c in (ch[1], ch[2], ch[3]))
        self.transformer = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(
                d,
                cfg.heads,
                4 * d,
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            ),
            cfg.depth,
            enable_nested_tensor=False,
        )
        self.projectors = nn.ModuleList(RegionProjector(d, d) for _ in range(3))
        self.global_mlp = nn.Sequential(nn.Linear(d, d), nn.LeakyReLU(0.2), nn.Linear(d, d))
        self.mask = MaskPredictor(cfg)

    def tokens(self, fs: tuple[torch.Tensor, ...], regions_s: torch.Tensor) -> list[torch.Tensor]:
        """RAT (eq. 1–2): per scale (c1, c2, c3) the 4 transformed tokens (B, 4, D)."""
        raw = [lin(region_pool(f, regions_s)) for lin, f in zip(self.tokenizers, fs, strict=True)]
        t = self.transformer(torch.cat(raw, 1))
        return list(t.split(NUM_REGIONS, dim=1))

    def fuse(self, ft, fs, regions_t, regions_s) -> list[torch.Tensor]:
        """F̂_t of the three scales, smallest first (c3, c2, c1 scales; eq. 3–4), each
        (B, D, h, w) with D the pyramid width."""
        tok = self.tokens(fs, regions_s)
        enc = self.encoder
        maps = (ft[2], enc.latlayer1(ft[1]), enc.latlayer2(ft[0]))  # c3, c2, c1 scales
        glob = self.global_mlp(fs[2].mean((2, 3)))[..., None, None]  # F^g, (B, D, 1, 1)
        return [
            proj(m, regions_t, tok[k]) + glob
            for proj, m, k in zip(self.projectors, maps, (2, 1, 0), strict=True)
        ]

    def forward(self, target, z_id, source, regions, source_regions):
        self.check_inputs(target, source)
        # shared encoder; split at the batch size (not chunk(2)) so an ONNX export keeps a
        # dynamic batch axis
        batch = target.shape[0]
        both = [f.split([batch, batch]) for f in self.features(torch.cat([target, source]))]
        ft, fs = tuple(b[0] for b in both), tuple(b[1] for b in both)
        fused = self.fuse(ft, fs, regions, source_regions)
        codes = torch.stack(
            [head(fused[style_group(i)]) for i, head in enumerate(self.encoder.styles)], 1
        )
        raw, feats = self.synthesize(codes)
        mask = self.mask(feats, self.cfg.image_size)
        swap = mask * raw + (1 - mask) * target
        styles = codes + self.w_avg.to(codes.dtype)
        return swap, {"codes": codes, "styles": styles, "mask": mask, "raw": raw}
