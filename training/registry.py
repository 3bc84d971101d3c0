"""The swapper registry: one row per swapper, and everything that is built from it.

Adding a swapper is one module under ``training/swappers/`` (config section + objective),
one :class:`~training.swappers.base.Swapper` row below and one ``params.yaml: train.<name>``
section. From this table come: the ``train.<name>`` sections of
:class:`training.config.TrainConfig` and the check of ``train.model``; building the
generator, discriminator and objective; exporting and loading a trained generator; and the
README's model table (:func:`model_table_markdown`, checked by a test).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from training.networks.aei_net import AEINet
from training.networks.cvae import CVAEGenerator
from training.networks.ddpm_ilvr import DDPMILVRNet
from training.networks.discriminator import MultiscaleDiscriminator
from training.networks.idatt import IDATTNet
from training.networks.korshunova import KorshunovaNet
from training.networks.rafswap import RAFSwapNet
from training.networks.simswap import SimSwapGenerator
from training.swappers.base import BuildContext, Objective, Swapper
from training.swappers.cvae import CVAEConfig, CVAEObjective
from training.swappers.cvae_gan import CVAEGANConfig, CVAEGANObjective
from training.swappers.ddpm_ilvr import DDPMILVRObjective, DDPMILVRSwapperConfig
from training.swappers.faceshifter import FaceShifterConfig, FaceShifterObjective
from training.swappers.ghost import GhostConfig, GhostObjective
from training.swappers.idatt import IDATTObjective, IDATTSwapperConfig
from training.swappers.korshunova import KorshunovaConfig, KorshunovaObjective
from training.swappers.rafswap import RAFSwapConfig, RAFSwapObjective
from training.swappers.simswap import SimSwapConfig, SimSwapObjective

if TYPE_CHECKING:
    from infra.dataset_format import DatasetCard
    from infra.models import ModelStore
    from training.config import TrainConfig

SWAPPERS: dict[str, Swapper] = {
    row.name: row
    for row in (
        Swapper(
            name="aei_net",
            title="FaceShifter AEI-Net: U-Net attribute encoder, AAD ResBlk generator "
            "(thesis §4.2, eq. 4.3–4.7)",
            config=FaceShifterConfig,
            generator=AEINet,
            discriminator=MultiscaleDiscriminator,
            objective=FaceShifterObjective,
            losses="hinge adv, 1−cos identity, attribute L2, reconstruction when X_s = X_t "
            "(eq. 4.8–4.12)",
        ),
        Swapper(
            name="ghost",
            title="GHOST as released: AEI-Net with `aad_units` per AAD ResBlk (2), instance-norm "
            "AAD, bias-free convs, 5-layer D (seed 001 §III.A; ai-forever/ghost)",
            config=GhostConfig,
            generator=AEINet,
            discriminator=MultiscaleDiscriminator,
            objective=GhostObjective,
            losses="FaceShifter's terms, reconstruction on same-person pairs, adversarial on "
            "all pairs (release), eye loss on eye-centre heatmaps, off as released (§III.B)",
        ),
        Swapper(
            name="simswap",
            title="SimSwap: encoder, ID-injection module of AdaIN ID blocks, decoder; two "
            "batch-norm patch discriminators as released (Facke §2.1.3, seed 002)",
            config=SimSwapConfig,
            generator=SimSwapGenerator,
            discriminator=MultiscaleDiscriminator,
            objective=SimSwapObjective,
            losses="identity, L1 reconstruction on intra-ID pairs, hinge adv, gradient penalty "
            "(lazy Dreg), weak feature matching (eq. 2–8)",
        ),
        Swapper(
            name="cvae",
            title="CVAE with identity loss: SimSwap's encoder and decoder around a 2-D latent "
            "(conv μ / log σ² heads, reparameterisation, ID blocks on z); no discriminator "
            "(Facke §2.2.1–2.2.4, seed 002)",
            config=CVAEConfig,
            generator=CVAEGenerator,
            discriminator=None,
            objective=CVAEObjective,
            losses="identity, MSE reconstruction weighted high on intra-ID and low on inter-ID "
            "batches (alternating), KL to N(0, I) (§2.2.1, §2.2.4)",
        ),
        Swapper(
            name="cvae_gan",
            title="CVAE-GAN: the CVAE generator in SimSwap's adversarial setup, Identity "
            "Grouping on (Facke §2.2.5, Table 1 CVAE-GAN-IG)",
            config=CVAEGANConfig,
            generator=CVAEGenerator,
            discriminator=MultiscaleDiscriminator,
            objective=CVAEGANObjective,
            losses="SimSwap's (identity, L1 reconstruction on intra-ID, hinge adv, gradient "
            "penalty, weak feature matching; eq. 2–8) + KL to N(0, I) (eq. 9)",
        ),
        Swapper(
            name="korshunova",
            title="Korshunova et al. 2017 multi-scale CNN, one network per source identity "
            "(`source_identity`), output restricted to the FaceMesh face mask; no "
            "discriminator (seed 000 §II.A, Fig. 1–2)",
            config=KorshunovaConfig,
            generator=KorshunovaNet,
            discriminator=None,
            objective=KorshunovaObjective,
            losses="VGG-19 content, patch style against the source identity's pose-nearest "
            "images, luminance consistency, total variation (seed 000 §II.A, §III.B)",
            priors=("vgg19_imagenet",),
        ),
        Swapper(
            name="rafswap",
            title="RAFSwap: weight-shared pSp encoder, Region-Aware Identity Tokenizer and "
            "Projector over lips/nose/brows/eyes, global branch, W+ of a frozen StyleGAN2, face "
            "mask predictor and soft-mask blending; no discriminator (seed 000 §II.B, eq. 1–4; "
            "xc-csc101/RAFSwap)",
            config=RAFSwapConfig,
            generator=RAFSwapNet,
            discriminator=None,
            objective=RAFSwapObjective,
            losses="identity, L2 on same-image pairs, LPIPS (VGG), W-norm, mask binary / "
            "entropy / average-face-region losses (seed 000 §II.B, §III.C)",
            priors=("stylegan2_ffhq_1024", "psp_ffhq_encode", "vgg16_imagenet"),
        ),
        Swapper(
            name="idatt",
            title="IDATT (MAttFace): attention identity transfer on the pSp maps F_c/F_m/F_f "
            "(γ from 0), pSp style heads, frozen StyleGAN2, two-stage post-processing (target "
            "encoder, mask blending, decoder) (seed 004 §3, eq. 4–11)",
            config=IDATTSwapperConfig,
            generator=IDATTNet,
            discriminator=MultiscaleDiscriminator,
            objective=IDATTObjective,
            losses="GAN log loss (non-saturating G), L2 on same-face pairs, LPIPS (VGG), "
            "identity, 3D-aware identity when Deep3DFaceRecon is present (eq. 12–17)",
            priors=("stylegan2_ffhq_1024", "psp_ffhq_encode", "vgg16_imagenet"),
            optional_priors=("deep3dfacerecon_resnet50",),
        ),
        Swapper(
            name="ddpm_ilvr",
            title="DDPM-ILVR: a pretrained diffusers U-Net fine-tuned on the crops; swap by "
            "ILVR sampling from the source with the target's low frequencies φ_N at every "
            "step (Facke §2.3, seed 002)",
            config=DDPMILVRSwapperConfig,
            generator=DDPMILVRNet,
            discriminator=None,
            objective=DDPMILVRObjective,
            losses="L_simple ε-prediction MSE (Ho et al. 2020 eq. 14); no identity loss",
            priors=("ddpm_ema_celebahq_256",),
        ),
    )
}


def swapper(name: str) -> Swapper:
    """The registry row of ``name``; ValueError lists the registered names."""
    if name not in SWAPPERS:
        raise ValueError(f"unknown swapper {name!r}; registered: {', '.join(SWAPPERS)}")
    return SWAPPERS[name]


def build_generator(cfg: TrainConfig, id_dim: int) -> nn.Module:
    """The chosen swapper's generator at ``train.width``; ``id_dim`` from the dataset card."""
    return swapper(cfg.model).generator(cfg.arch, id_dim)


def build_discriminator(cfg: TrainConfig) -> nn.Module | None:
    """The chosen swapper's discriminator at ``train.width``; None for a swapper trained
    without an adversary."""
    row = swapper(cfg.model)
    return None if row.discriminator is None else row.discriminator(cfg.arch.discriminator)


def build_objective(
    cfg: TrainConfig, card: DatasetCard, store: ModelStore, data_dir: Path
) -> Objective:
    """The chosen swapper's objective with its frozen helpers (the identity encoder twin of
    the dataset's embedding model, and any model-specific network or data such as a style
    set read from the shards in ``data_dir``), built once."""
    from infra.identity import identity_encoder_for_dataset

    ctx = BuildContext(
        identity_encoder_for_dataset(card, store), store, card, Path(data_dir), cfg.arch.image_size
    )
    return swapper(cfg.model).objective.build(cfg.section, ctx)


def export_generator(model_name: str, module: nn.Module, path: Path, meta: dict) -> Path:
    """Save ``{"model", "arch", "id_dim", "state_dict", "meta"}`` (fp32, CPU): a plain
    checkpoint that evaluation loads without DeepSpeed. Returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu() for k, v in module.state_dict().items()}
    payload = {
        "model": model_name,
        "arch": module.cfg.model_dump(mode="json"),
        "id_dim": module.id_dim,
        "state_dict": state,
        "meta": meta,
    }
    torch.save(payload, path)
    return path


def load_generator(path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load an exported generator in eval mode; returns (module, meta).

    Forward signature: ``module(target (B, 3, S, S) in [-1, 1], z_id (B, D)) -> (swap,
    extras)``. Raises FileNotFoundError (naming the stage to run) when ``path`` is missing
    and ValueError for a swapper this code does not register.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found: run the train stage first (fsp train)")
    ckpt = torch.load(path, map_location=device, weights_only=True)
    row = swapper(ckpt.get("model", "aei_net"))
    arch = dict(ckpt["arch"])
    id_dim = int(ckpt.get("id_dim") or arch.pop("id_dim"))  # files before the registry kept
    arch.pop("id_dim", None)  # id_dim inside the architecture
    module = row.generator(row.config.arch_class().model_validate(arch), id_dim)
    module.load_state_dict(ckpt["state_dict"])
    return module.to(device).eval(), ckpt["meta"]


def model_table_markdown() -> str:
    """The README's model table: name, swapper, losses, and the default loss weights, data
    recipe and generator Adam read from each section class (so the table cannot drift from
    the code)."""
    from infra.models import REGISTRY

    lines = [
        "| `train.model` | swapper | losses | default weights | default data recipe "
        "| default Adam (G) | pretrained weights besides the identity encoder |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in SWAPPERS.values():
        section = r.config()
        weights = ", ".join(f"{k} {v:g}" for k, v in section.weights.model_dump().items())
        recipe = ", ".join(f"{k} {v}" for k, v in section.data.model_dump().items())
        g = section.optimizer.generator
        opt = f"lr {g.lr:g}, β ({g.betas[0]:g}, {g.betas[1]:g}), wd {g.weight_decay:g}"
        priors = ", ".join(
            [f"`{p}` ([{REGISTRY[p].file}]({REGISTRY[p].url}))" for p in r.priors]
            + [
                f"optional: `{p}` ([{REGISTRY[p].file}]({REGISTRY[p].url}))"
                for p in r.optional_priors
            ]
        )
        lines.append(
            f"| `{r.name}` | {r.title} | {r.losses} | {weights} | {recipe} | {opt} "
            f"| {priors or 'none'} |"
        )
    return "\n".join(lines)
