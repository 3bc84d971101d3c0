"""What every swapper shares: its config section, its objective's interface and its
registry row.

A swapper is one module under ``training/swappers/`` holding

* a config section (subclass of :class:`SwapperConfig`, ``params.yaml: train.<name>``):
  two architectures (``debug``, ``paper``), loss weights and the data recipe, with a
  check that refuses a recipe under which one of its losses could never fire;
* an objective (subclass of :class:`Objective`) that owns the forward passes and losses of
  each GAN phase;

plus one :class:`Swapper` row in :data:`training.registry.SWAPPERS`. A swapper trained
without an adversary (CVAE, Korshunova's CNN) has no discriminator: its row's
``discriminator`` is None and the loop runs ``Gmain`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from infra.config import StrictConfig
from training.losses import hinge_d_loss
from training.networks.discriminator import DiscriminatorConfig, logits

if TYPE_CHECKING:
    from infra.dataset_format import DatasetCard
    from infra.models import ModelStore
    from training.data import PairBatch

#: Per-target annotations a swapper can ask the loader for (:attr:`SwapperConfig.annotations`):
#: ``face_mask`` (1, S, S) float32 FaceMesh face oval from ``lmk468.npy``; ``pose`` (3,)
#: float32 yaw, pitch, roll in degrees from the sample's ``json``; ``regions`` (4, S, S)
#: float32 RAFSwap region masks (lips, nose, brows, eyes) from ``regions.png``;
#: ``source_regions`` the same of the pair's source sample.
ANNOTATIONS = ("face_mask", "pose", "regions", "source_regions")


class DataRecipeConfig(StrictConfig):
    """How a swapper's training pairs are drawn (``train.<model>.data``).

    ``draw``: what a batch is drawn over —
      * ``images`` — targets uniform over the training images (FaceShifter; GHOST's
        ``FaceEmbedVGG2`` indexes images);
      * ``identities`` — Identity Grouping (Facke §2.1.4; SimSwap release
        ``data_loader_Swapping.py`` indexes identity folders): b identities uniform over the
        training identities, a target image of each; an intra-ID source is another image of
        that identity, an inter-ID batch pairs each target with another drawn identity.
    ``pairing``:
      * ``mixed`` — each pair is intra-identity with probability ``same_ratio``;
      * ``alternate`` — intra-ID and inter-ID batches alternate, intra on even steps
        (SimSwap release ``train.py``: ``step % 2 == 0``).
    ``intra``: an intra-identity pair uses the same image (``same_image``: FaceShifter) or
    two different images of the identity (``same_identity``: GHOST's ``--same_identity``,
    SimSwap), the same image only when the identity has one.
    """

    draw: Literal["images", "identities"] = Field("images", description="Draw unit.")
    pairing: Literal["mixed", "alternate"] = Field("mixed", description="Pairing mode.")
    same_ratio: float = Field(0.2, ge=0, le=1, description="Intra-identity share (mixed).")
    intra: Literal["same_image", "same_identity"] = Field(
        "same_image", description="What an intra-identity pair is."
    )

    @property
    def has_intra(self) -> bool:
        """Whether any pair can be intra-identity."""
        return self.pairing == "alternate" or self.same_ratio > 0

    @property
    def has_inter(self) -> bool:
        """Whether any pair can be inter-identity."""
        return self.pairing == "alternate" or self.same_ratio < 1


class AdamConfig(StrictConfig):
    """Adam of one network (``torch.optim.Adam``); each swapper's defaults are its source's."""

    lr: float = Field(4e-4, gt=0, description="Learning rate.")
    betas: tuple[float, float] = Field((0.0, 0.999), description="(β1, β2).")
    eps: float = Field(1e-8, gt=0, description="ε.")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay (Adam's, not AdamW's).")


class OptimizerConfig(StrictConfig):
    """``train.<model>.optimizer``: the generator's and the discriminator's Adam."""

    generator: AdamConfig = Field(default_factory=AdamConfig)
    discriminator: AdamConfig = Field(default_factory=AdamConfig)

    @classmethod
    def both(cls, **adam: object) -> OptimizerConfig:
        """The same Adam settings for G and D (what every source swapper does)."""
        return cls(generator=AdamConfig(**adam), discriminator=AdamConfig(**adam))


class ArchConfig(StrictConfig):
    """Mixin of every architecture section: the discriminator that trains with the generator."""

    discriminator: DiscriminatorConfig = Field(
        default_factory=DiscriminatorConfig, description="Multi-scale PatchGAN."
    )


class SwapperConfig(StrictConfig):
    """Base of a swapper's ``params.yaml`` section. Subclasses declare ``weights``,
    ``debug`` and ``paper`` (architectures of one class) and may add settings; ``data`` is
    the data recipe. Subclasses refuse, in :meth:`check_recipe`, recipes that silently
    switch one of their weighted losses off. ``optimizer`` holds the Adam settings of G and
    D, defaulting to the source's."""

    data: DataRecipeConfig = Field(
        default_factory=DataRecipeConfig, description="How training pairs are drawn."
    )
    optimizer: OptimizerConfig = Field(
        default_factory=OptimizerConfig, description="Adam of G and D (the source's settings)."
    )

    def arch(self, width: str) -> Any:
        """The architecture of ``width`` (``debug`` or ``paper``)."""
        return getattr(self, width)

    @classmethod
    def arch_class(cls) -> type[StrictConfig]:
        """The class of this swapper's architectures (to rebuild an exported generator)."""
        return cls.model_fields["paper"].annotation

    def check_recipe(self) -> None:
        """Raise ValueError when the data recipe would disable a weighted loss."""

    @property
    def annotations(self) -> tuple[str, ...]:
        """Per-target annotations (names of :data:`ANNOTATIONS`) the objective reads from
        ``PairBatch.annotations``; none by default."""
        return ()

    @property
    def has_d_regularization(self) -> bool:
        """Whether the objective runs a lazy ``Dreg`` phase (a second D backward in a step)."""
        return False

    @model_validator(mode="after")
    def _recipe(self) -> SwapperConfig:
        self.check_recipe()
        return self


def refuse(condition: bool, message: str) -> None:
    """Raise ValueError(message) when ``condition`` holds (recipe checks read as rules)."""
    if condition:
        raise ValueError(message)


@dataclass
class PhaseResult:
    """Loss of one phase (scalar tensor with graph) and its statistics by name."""

    loss: torch.Tensor
    stats: dict[str, torch.Tensor]


def param_dtype(module: nn.Module) -> torch.dtype:
    """dtype of a module's parameters (the engines' precision)."""
    return next(module.parameters()).dtype


def hinge_discriminator(d_engine, real: torch.Tensor, fake: torch.Tensor) -> PhaseResult:
    """Dmain of every hinge-loss swapper: D on real targets and on detached swaps, as two
    batches (a batch-norm D must not mix their statistics; SimSwap's release also runs them
    apart).

    real, fake : (B, 3, S, S) in [-1, 1]. Statistics: ``Loss/D/total`` and the mean logits
    ``Scores/D/real``, ``Scores/D/fake`` (averaged over scales).
    """
    dtype = param_dtype(d_engine.module)
    on_real = [s.float() for s in logits(d_engine(real.to(dtype)))]
    on_fake = [s.float() for s in logits(d_engine(fake.to(dtype)))]
    loss = hinge_d_loss(on_real, on_fake)
    return PhaseResult(
        loss,
        {
            "Loss/D/total": loss,
            "Scores/D/real": torch.stack([s.mean() for s in on_real]).mean(),
            "Scores/D/fake": torch.stack([s.mean() for s in on_fake]).mean(),
        },
    )


@dataclass(frozen=True)
class BuildContext:
    """What an objective's frozen helpers are built from, once per run.

    Attributes
    ----------
    id_encoder : the frozen identity encoder twin of the dataset's embedding model
        ((B, 3, S, S) in [-1, 1] → (B, D) L2-normalised).
    store : the model store (registered weights).
    card : the prepared dataset's card; data_dir : its folder.
    image_size : the generator resolution S, px.
    """

    id_encoder: nn.Module
    store: ModelStore
    card: DatasetCard
    data_dir: Path
    image_size: int


class Objective:
    """The losses of one swapper's GAN phases (as stylegan3's ``loss.py``).

    The objective owns the forward passes; the training loop checks each loss is finite and
    calls ``engine.backward``/``engine.step``. In ``Gmain`` the loop freezes D and passes
    ``d_engine.module`` (calling the engine would register a second backward with it).

    ``G_STATS`` lists the statistics :meth:`generator_loss` reports; ``self.w`` holds the
    section's loss weights and ``self.id_encoder`` the frozen identity encoder (embeddings
    (B, D), L2-normalised, of faces (B, 3, S, S) in [-1, 1]).
    """

    G_STATS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, id_encoder: nn.Module, weights: StrictConfig):
        self.id_encoder, self.w = id_encoder, weights

    @classmethod
    def build(cls, section: SwapperConfig, ctx: BuildContext) -> Objective:
        """The objective with its frozen helper networks, built once per run (the identity
        encoder is built by the caller; a swapper that needs more overrides this)."""
        return cls(ctx.id_encoder, section.weights)

    def export_meta(self) -> dict:
        """Facts the exported generator must carry for evaluation (e.g. the one source
        identity a per-identity network produces); none by default."""
        return {}

    def generator_loss(
        self, g_engine, d_module: nn.Module | None, b: PairBatch
    ) -> tuple[PhaseResult, torch.Tensor]:
        """Gmain: (loss and statistics, the detached swap (B, 3, S, S)); ``d_module`` is None
        for a swapper without a discriminator."""
        raise NotImplementedError

    def discriminator_loss(self, d_engine, b: PairBatch, swap: torch.Tensor) -> PhaseResult:
        """Dmain: hinge loss on real targets and the detached swaps."""
        return hinge_discriminator(d_engine, b.target, swap)

    def d_regularization_loss(
        self, d_engine, b: PairBatch, swap: torch.Tensor, interval: int
    ) -> PhaseResult | None:
        """Dreg every ``interval`` steps (lazy: scaled by the interval); None = no Dreg."""
        return None


@dataclass(frozen=True)
class Swapper:
    """One row of the swapper registry.

    Attributes
    ----------
    name : ``train.model`` value and ``params.yaml`` section name.
    title : the method's name and source, as the README's model table shows it.
    config : the section class (architectures, weights, data recipe).
    generator : network class, built as ``generator(arch, id_dim)``.
    discriminator : network class, built as ``discriminator(arch.discriminator)``; None for a
        swapper trained without an adversary (only ``Gmain`` runs).
    objective : the :class:`Objective` subclass.
    losses : one line on the objective for the README's model table.
    priors : registry names (:data:`infra.models.REGISTRY`) of the pretrained networks the
        swapper loads besides the dataset's identity encoder (e.g. a VGG-19 loss network).
    optional_priors : registry names used when present and skipped (with a logged notice)
        otherwise (e.g. IDATT's Deep3DFaceRecon for its 3D-aware loss).
    """

    name: str
    title: str
    config: type[SwapperConfig]
    generator: type[nn.Module]
    discriminator: type[nn.Module] | None
    objective: type[Objective]
    losses: str
    priors: tuple[str, ...] = ()
    optional_priors: tuple[str, ...] = ()
