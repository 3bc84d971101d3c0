"""DDPM prior and ILVR face swapping (Facke, seed 002 §2.3 and §3) on diffusers' U-Net.

Sources
-------
* Ho et al. 2020, "Denoising Diffusion Probabilistic Models" (NeurIPS; arXiv 2006.11239): the
  forward process q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I), the ancestral reverse step
  p_θ(x_{t-1} | x_t) (eq. 11, 7) and the fine-tuning objective L_simple (eq. 14).
* Choi et al. 2021, "ILVR: Conditioning Method for Denoising Diffusion Probabilistic Models"
  (ICCV; arXiv 2108.02938), Alg. 1: x'_{t-1} ~ p_θ(x'_{t-1} | x_t), y_{t-1} ~ q(y_{t-1} | y),
  x_{t-1} ← φ_N(y_{t-1}) + x'_{t-1} − φ_N(x'_{t-1}), φ_N = upsample(downsample(·, N), N).
  The reference code (jychoi118/ilvr_adm, ``p_sample_loop_progressive``) resizes with
  assafshocher's bicubic ``Resizer`` and draws fresh noise for y at every step.
* Facke (seed 002) §2.3.2, "Algorithm 1 ILVR for Face Swapping": input the source x = I_S and
  the target y = I_T; z ~ N(0, I); x_T ~ q(x_T | x); then Choi's loop over t = T … 1 with the
  target as the reference y; I_R = x_0. The paragraph after the box: "use the same
  z ~ N(0, I) to sample x_{1..T} and y_{1..T}" in the forward process, so that the low-pass
  filtered noises of x_t and y_t agree. §3: the prior is a 256-px DDPM pretrained on FFHQ,
  fine-tuned on VGGFace2-HQ; ILVR is slow (one U-Net call per step).

Roles (Facke's box, followed exactly): the *source* I_S only seeds the chain through
x_T ~ q(x_T | I_S); the *reference* y = I_T (the target) supplies the low frequencies φ_N
at every step. With the full chain (ᾱ_T ≈ 4·10⁻⁵ for the linear 1000-step schedule) the
source enters as √ᾱ_T·I_S ≈ 0.006·I_S, i.e. almost not at all; ``start_t`` < T keeps more.

"The same noise" (our reading, ``shared_noise=True``): ONE ε ~ N(0, I) drawn before the loop
(the box's first "z ~ N(0, I)", which Choi's Alg. 1 does not have) is the forward noise of
x_T = √ᾱ_T I_S + √(1 − ᾱ_T) ε and of every y_t = √ᾱ_t I_T + √(1 − ᾱ_t) ε, t = T−1 … 1.
Then φ_N(y_t) − φ_N(q-sample of x at t with ε) = √ᾱ_t φ_N(I_T − I_S): the filtered noises
cancel, which is the stated purpose ("the noises would have more similar outputs"), and the
low-frequency noise injected at consecutive steps is one consistent trajectory. The z drawn
inside the box's loop is Choi's posterior noise of x'_{t-1} ~ p_θ (the scheduler step's
``variance_noise``). ``shared_noise=False`` is the reference code: fresh noise for every y_t.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor
from pydantic import Field, model_validator

from infra.config import StrictConfig

#: Registry name proposed for the published 256-px DDPM (google/ddpm-ema-celebahq-256).
DDPM_CELEBAHQ_256 = "ddpm_ema_celebahq_256"
#: U-Net weight files diffusers reads, in its order of preference.
UNET_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
#: Published layouts: (U-Net subfolder, scheduler subfolder). The google/ddpm-*-256 repos
#: keep everything at the root; ``DDPMPipeline.save_pretrained`` writes ``unet/`` and
#: ``scheduler/``.
LAYOUTS: tuple[tuple[str | None, str | None], ...] = ((None, None), ("unet", "scheduler"))

LowPassKind = Literal["bicubic", "box"]


class DDPMConfig(StrictConfig):
    """Architecture of a fresh :class:`diffusers.UNet2DModel` and its DDPM noise schedule.

    Defaults are the ``debug`` model: 16 px, two levels of 8/16 channels, attention on the
    coarser level, 100 training timesteps (tens of thousands of parameters; CPU tests).
    :data:`PAPER_256` is Ho et al.'s 256-px CelebA-HQ/LSUN model (base 128 channels,
    multipliers 1, 1, 2, 2, 4, 4, two residual blocks per level, attention at 16×16, linear
    β from 1e-4 to 0.02 over 1000 steps; Ho et al. 2020 §4 and Appendix B). Level i has
    ``block_out_channels[i]`` channels at ``sample_size / 2^i`` px. ValueError (pydantic
    ValidationError) when a channel count is not a multiple of ``norm_num_groups``, an
    attention level does not exist, or ``sample_size`` is not divisible by 2^(levels−1).
    """

    sample_size: int = Field(16, ge=1, description="Image side, px.")
    block_out_channels: tuple[int, ...] = Field((8, 16), min_length=1)
    layers_per_block: int = Field(1, ge=1, description="Residual blocks per level.")
    attention_levels: tuple[int, ...] = Field((1,), description="Levels with self-attention.")
    norm_num_groups: int = Field(4, ge=1, description="GroupNorm groups.")
    attention_head_dim: int | None = Field(8, ge=1, description="Channels per head.")
    num_train_timesteps: int = Field(100, ge=2, description="T of the noise schedule.")
    beta_start: float = Field(1e-4, gt=0, lt=1)
    beta_end: float = Field(0.02, gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> DDPMConfig:
        levels = len(self.block_out_channels)
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(
                f"block_out_channels {self.block_out_channels} must be multiples of "
                f"norm_num_groups {self.norm_num_groups}"
            )
        if any(not 0 <= i < levels for i in self.attention_levels):
            raise ValueError(f"attention_levels {self.attention_levels} not in 0..{levels - 1}")
        if self.sample_size % 2 ** (levels - 1):
            raise ValueError(f"sample_size {self.sample_size} not divisible by 2^{levels - 1}")
        return self


#: Ho et al. 2020's 256-px U-Net (CelebA-HQ, LSUN) with its linear 1000-step schedule.
PAPER_256 = DDPMConfig(
    sample_size=256,
    block_out_channels=(128, 128, 256, 256, 512, 512),
    layers_per_block=2,
    attention_levels=(4,),
    norm_num_groups=32,
    attention_head_dim=None,
    num_train_timesteps=1000,
)


def build_unet(cfg: DDPMConfig | None = None) -> UNet2DModel:
    """A randomly initialised ε-prediction U-Net (3 → 3 channels) of ``cfg`` (default: the
    ``debug`` :class:`DDPMConfig`). Input (B, 3, S, S) float in [-1, 1] and integer timesteps
    in [0, T); output ``.sample`` (B, 3, S, S) float, the predicted noise ε_θ(x_t, t) (Ho et
    al. 2020 eq. 14). Level i uses ``AttnDownBlock2D``/``AttnUpBlock2D`` when i is in
    ``attention_levels``, else ``DownBlock2D``/``UpBlock2D``."""
    cfg = cfg or DDPMConfig()
    levels = range(len(cfg.block_out_channels))
    down = tuple("AttnDownBlock2D" if i in cfg.attention_levels else "DownBlock2D" for i in levels)
    up = tuple(
        "AttnUpBlock2D" if i in cfg.attention_levels else "UpBlock2D" for i in reversed(levels)
    )
    return UNet2DModel(
        sample_size=cfg.sample_size,
        in_channels=3,
        out_channels=3,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=cfg.norm_num_groups,
        attention_head_dim=cfg.attention_head_dim,
    )


def build_scheduler(cfg: DDPMConfig | None = None) -> DDPMScheduler:
    """The DDPM schedule of ``cfg``: linear β over ``num_train_timesteps``, ε-prediction,
    fixed-small posterior variance and x̂_0 clipped to [-1, 1] (Ho et al. 2020 §4)."""
    cfg = cfg or DDPMConfig()
    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        beta_schedule="linear",
        variance_type="fixed_small",
        clip_sample=True,
        prediction_type="epsilon",
    )


def low_pass(x: torch.Tensor, n: int, kind: LowPassKind = "bicubic") -> torch.Tensor:
    """φ_N of Choi et al. 2021 (Alg. 1; Facke §2.3.2): downsample by N, upsample back.

    ``x``: (B, C, H, W) float, any range; returns the same shape and dtype. ``kind``:
    ``"bicubic"`` (default) resizes down and up with ``interpolate(mode="bicubic",
    antialias=True)``, i.e. the antialiased Keys cubic (a = −0.5) that the reference code's
    bicubic ``Resizer`` (MATLAB ``imresize``) uses; borders differ (torch renormalises the
    truncated kernel, the Resizer pads). It is linear and keeps constants but is not
    idempotent (φ_N∘φ_N ≠ φ_N, about 25 % relative on white noise). ``"box"`` averages N×N
    blocks (area) and repeats them (nearest): an exact orthogonal projection (φ_N∘φ_N = φ_N),
    blockier. N = 1 returns ``x`` unchanged. ValueError for a non-4-D input, N < 1, H or W
    not divisible by N, or an unknown ``kind``.
    """
    if x.ndim != 4:
        raise ValueError(f"low_pass expects (B, C, H, W), got shape {tuple(x.shape)}")
    if int(n) != n or n < 1:
        raise ValueError(f"low_pass scale N must be a positive integer, got {n}")
    n = int(n)
    h, w = x.shape[-2:]
    if h % n or w % n:
        raise ValueError(f"image size {h}x{w} is not divisible by the low-pass scale N={n}")
    if n == 1:
        return x
    small = (h // n, w // n)
    if kind == "bicubic":
        down = F.interpolate(x, size=small, mode="bicubic", align_corners=False, antialias=True)
        return F.interpolate(down, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    if kind == "box":
        return F.interpolate(F.avg_pool2d(x, n), size=(h, w), mode="nearest")
    raise ValueError(f"low_pass kind must be 'bicubic' or 'box', got {kind!r}")


def _timesteps(scheduler: DDPMScheduler, steps: int, start_t: int | None) -> list[int]:
    """``scheduler.set_timesteps(steps)`` and the descending timesteps to run: all of them,
    or those ≤ ``start_t``. ValueError for steps outside [1, T] or start_t outside [0, T)."""
    total = scheduler.config.num_train_timesteps
    if not 1 <= steps <= total:
        raise ValueError(f"steps must be in [1, {total}] (num_train_timesteps), got {steps}")
    scheduler.set_timesteps(steps)
    timesteps = [int(t) for t in scheduler.timesteps]
    if start_t is None:
        return timesteps
    if not 0 <= start_t < total:
        raise ValueError(f"start_t must be in [0, {total - 1}], got {start_t}")
    return [t for t in timesteps if t <= start_t]


def _check_images(unet: UNet2DModel, *images: torch.Tensor) -> None:
    """ValueError unless every image is (B, in_channels, H, W) floating point, all alike."""
    shape = tuple(images[0].shape)
    for img in images:
        if img.ndim != 4 or img.shape[1] != unet.config.in_channels:
            raise ValueError(
                f"expected (B, {unet.config.in_channels}, H, W) images, got {tuple(img.shape)}"
            )
        if not img.is_floating_point() or tuple(img.shape) != shape:
            raise ValueError(f"images must be float tensors of one shape, got {tuple(img.shape)}")


def _batch_t(t: int, like: torch.Tensor) -> torch.Tensor:
    """(B,) int64 tensor of timestep ``t`` on ``like``'s device, B = ``like.shape[0]``."""
    return torch.full((like.shape[0],), t, dtype=torch.long, device=like.device)


Refine = Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor]


def _reverse_chain(
    unet: UNet2DModel,
    scheduler: DDPMScheduler,
    source: torch.Tensor,
    timesteps: list[int],
    generator: torch.Generator | None,
    refine: Refine | None,
) -> torch.Tensor:
    """z ~ N(0, I); x = q-sample of ``source`` at ``timesteps[0]`` with z; then for each t
    one ancestral DDPM step x' ~ p_θ(x' | x_t) and x = refine(x', prev_t, z) (prev_t = −1
    after the last step). Returns the final sample clamped to [-1, 1]."""
    z = randn_tensor(source.shape, generator=generator, device=source.device, dtype=source.dtype)
    x = scheduler.add_noise(source, z, _batch_t(timesteps[0], source))
    for t in timesteps:
        eps = unet(x.to(unet.dtype), t).sample.to(x.dtype)
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
        if refine is not None:
            x = refine(x, int(scheduler.previous_timestep(t)), z)
    return x.clamp(-1.0, 1.0)


@torch.no_grad()
def ddpm_sample(
    unet: UNet2DModel,
    scheduler: DDPMScheduler,
    source: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    start_t: int | None = None,
) -> torch.Tensor:
    """Unconditioned ancestral DDPM sampling (Ho et al. 2020 Alg. 2) started, like ILVR, from
    x_T ~ q(x_T | source): the baseline of :func:`ilvr_sample` (same random draws for the
    same generator state when ``shared_noise=True``). Shapes, ranges and errors as there."""
    _check_images(unet, source)
    timesteps = _timesteps(scheduler, steps, start_t)
    if not timesteps:
        raise ValueError(f"no sampling timestep is <= start_t={start_t}")
    return _reverse_chain(unet, scheduler, source, timesteps, generator, None)


@torch.no_grad()
def ilvr_sample(
    unet: UNet2DModel,
    scheduler: DDPMScheduler,
    source: torch.Tensor,
    reference: torch.Tensor,
    n: int,
    steps: int,
    generator: torch.Generator | None = None,
    start_t: int | None = None,
    shared_noise: bool = True,
    low_pass_kind: LowPassKind = "bicubic",
) -> torch.Tensor:
    """Facke's "Algorithm 1 ILVR for Face Swapping" (seed 002 §2.3.2; Choi et al. 2021 Alg. 1).

    ``source`` x = I_S and ``reference`` y = I_T (the target): (B, C, S, S) float in [-1, 1],
    C = ``unet.config.in_channels``, S divisible by ``n``. z ~ N(0, I);
    x_T = √ᾱ_T x + √(1 − ᾱ_T) z; for each of the ``steps`` timesteps t of
    ``scheduler.set_timesteps(steps)`` (those ≤ ``start_t`` when given; default the full
    chain): x'_{t-1} = ``scheduler.step(unet(x_t, t))`` (ancestral, posterior noise from
    ``generator``), y_{t-1} = √ᾱ_{t-1} y + √(1 − ᾱ_{t-1}) z (the clean y after the last
    step), x_{t-1} = φ_N(y_{t-1}) + x'_{t-1} − φ_N(x'_{t-1}) (:func:`low_pass` of
    ``low_pass_kind``). ``shared_noise=False`` draws a fresh z for each y_{t-1} (the
    reference code) instead of the one z of Facke's box (module docstring). Every step
    conditions (Facke; the reference code's ``range_t`` stops early). Returns I_R = x_0,
    (B, C, S, S) float clamped to [-1, 1]. Runs under ``torch.no_grad``; mutates the
    scheduler's timesteps. ValueError for mismatched shapes, a non-divisible S, steps
    outside [1, T], or start_t outside [0, T) or below every sampling timestep.
    """
    _check_images(unet, source, reference)
    low_pass(reference[:1], n, low_pass_kind)  # validates n, S and the kind before sampling
    timesteps = _timesteps(scheduler, steps, start_t)
    if not timesteps:
        raise ValueError(f"no sampling timestep is <= start_t={start_t}")

    def refine(x_prime: torch.Tensor, prev_t: int, z: torch.Tensor) -> torch.Tensor:
        if prev_t < 0:
            y = reference
        else:
            noise = (
                z
                if shared_noise
                else randn_tensor(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            )
            y = scheduler.add_noise(reference, noise, _batch_t(prev_t, reference))
        return low_pass(y, n, low_pass_kind) + x_prime - low_pass(x_prime, n, low_pass_kind)

    return _reverse_chain(unet, scheduler, source, timesteps, generator, refine)


def epsilon_loss(
    unet: UNet2DModel,
    scheduler: DDPMScheduler,
    x0: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L_simple of Ho et al. 2020 (eq. 14), the objective of Facke's fine-tuning (§3).

    ``x0``: (B, C, H, W) float clean images in [-1, 1]. t ~ U{0, …, T−1} per image,
    ε ~ N(0, I), x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε; returns the mean of
    (ε_θ(x_t, t) − ε)² over all elements: a float32 scalar with gradient to the U-Net's
    parameters. A learned-variance U-Net (2C output channels, Nichol & Dhariwal 2021) is
    trained on its first C channels only (the L_vlb term is not included). ValueError for
    a scheduler whose ``prediction_type`` is not ``"epsilon"`` or a malformed ``x0``.
    """
    if scheduler.config.prediction_type != "epsilon":
        raise ValueError(
            f"epsilon_loss needs an epsilon-prediction scheduler, got "
            f"prediction_type={scheduler.config.prediction_type!r}"
        )
    _check_images(unet, x0)
    total = scheduler.config.num_train_timesteps
    draw_device = generator.device if generator is not None else x0.device
    t = torch.randint(0, total, (x0.shape[0],), generator=generator, device=draw_device)
    t = t.to(x0.device)
    noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = scheduler.add_noise(x0, noise, t)
    pred = unet(x_t.to(unet.dtype), t).sample[:, : x0.shape[1]]
    return F.mse_loss(pred.float(), noise.float())


def _layout(folder: Path) -> tuple[str | None, str | None]:
    """The (U-Net, scheduler) subfolders of a diffusers DDPM folder (:data:`LAYOUTS`);
    FileNotFoundError naming the folder and the missing files otherwise."""
    if not folder.is_dir():
        raise FileNotFoundError(
            f"DDPM folder {folder} does not exist; expected config.json, "
            f"{' or '.join(UNET_WEIGHTS)} and scheduler_config.json in it "
            "(google/ddpm-*-256 layout) or in its unet/ and scheduler/ subfolders"
        )
    problems = []
    for unet_sub, sched_sub in LAYOUTS:
        unet_dir = folder / unet_sub if unet_sub else folder
        sched_dir = folder / sched_sub if sched_sub else folder
        missing = [str(p) for p in (unet_dir / "config.json",) if not p.is_file()]
        if not any((unet_dir / w).is_file() for w in UNET_WEIGHTS):
            missing.append(" or ".join(str(unet_dir / w) for w in UNET_WEIGHTS))
        if not (sched_dir / "scheduler_config.json").is_file():
            missing.append(str(sched_dir / "scheduler_config.json"))
        if not missing:
            return unet_sub, sched_sub
        layout = "root" if unet_sub is None else f"{unet_sub}/ + {sched_sub}/"
        problems.append(f"{layout} layout lacks {', '.join(missing)}")
    raise FileNotFoundError(f"DDPM folder {folder} is incomplete: " + "; ".join(problems))


def load_pretrained_unet(folder: Path | str) -> tuple[UNet2DModel, DDPMScheduler]:
    """Load a published diffusers DDPM: ``(UNet2DModel in eval mode, DDPMScheduler)``.

    ``folder`` holds either the layout of the google/ddpm-*-256 repositories (root
    ``config.json``, ``diffusion_pytorch_model.bin`` or ``.safetensors``,
    ``scheduler_config.json``) or that of ``DDPMPipeline.save_pretrained`` (``unet/`` and
    ``scheduler/``). Nothing is downloaded (``local_files_only=True``). The U-Net takes
    (B, 3, S, S) float in [-1, 1] (S = ``config.sample_size``, 256 for the published
    models) and integer timesteps. FileNotFoundError naming the folder and the missing
    files when it is absent or incomplete.
    """
    folder = Path(folder)
    unet_sub, sched_sub = _layout(folder)
    unet = UNet2DModel.from_pretrained(folder, subfolder=unet_sub, local_files_only=True)
    scheduler = DDPMScheduler.from_pretrained(folder, subfolder=sched_sub, local_files_only=True)
    return unet.eval(), scheduler
