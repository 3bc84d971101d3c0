"""A trained generator as a portable swap model: its input contract, one calling interface
for the PyTorch file and the exported ONNX graph, and one loader for every way to name one.

The contract (:class:`GeneratorContract`) is what a caller must know to feed the generator
without this code base's training config: crop size and alignment template of the faces,
the recogniser that makes the source embedding and its size, the extra inputs and their
layouts, the normalisation of images in and out, and, for DDPM-ILVR, the sampling noise.
It is written as JSON beside an exported graph: ``<graph stem>.contract.json`` (e.g.
``generator.onnx`` → ``generator.contract.json``), and into the MLflow model (its
``MLmodel`` metadata key ``fsp_contract`` and the extra file ``contract.json``).

``fsp swap --model REF`` takes any :func:`load_swap_model` reference: a ``generator.pt``, an
``.onnx`` file with its contract beside it, an MLflow run id, or ``models:/name/version``
(``models:/name@alias``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import Field
from torch import nn

from infra.config import StrictConfig

if TYPE_CHECKING:
    from infra.paths import ProjectPaths

#: Input normalisation of every image tensor in and out.
IMAGE_NORMALISATION = "RGB, NCHW float32, x/127.5 − 1 (uint8 0..255 → [-1, 1])"
#: Layout of each extra input name a generator can take (``module.extra_inputs``).
EXTRA_LAYOUTS = {
    "source": "(B, 3, S, S) float32 in [-1, 1]: the source crop, normalised as the target",
    "face_mask": "(B, 1, S, S) float32 in {0, 1}: FaceMesh face-oval mask of the target "
    "(infra.facemesh_topology.face_oval_mask of its 468 landmarks)",
    "regions": "(B, 4, S, S) float32 in {0, 1}: the target's RAFSwap lips/nose/brows/eyes "
    "masks (training.data.region_masks of its regions.png)",
    "source_regions": "(B, 4, S, S) float32 in {0, 1}: the same masks of the source",
}
#: Name of the MLflow model a training run's exported generator is logged under, and the
#: run tag holding its model URI.
MLFLOW_MODEL_NAME = "swap_model"
MLFLOW_MODEL_TAG = "fsp.swap_model_uri"
#: Key of the contract in the MLflow model's ``MLmodel`` metadata.
MLFLOW_CONTRACT_KEY = "fsp_contract"
#: File name of the contract inside an MLflow model directory.
CONTRACT_FILE = "contract.json"


class NoiseSpec(StrictConfig):
    """The explicit sampling noise of a stochastic generator (DDPM-ILVR) in its ONNX graph.

    The graph input ``name`` is (B, K, 3, s, s) float32: K = ``draws`` standard-normal
    tensors of shape (B, 3, s, s), stacked on axis 1 in drawing order (x_T's z, then per
    sampling step the posterior noise of every step with t > 0 and, when the chain does not
    share one noise, the reference's fresh noise). Drawing them with
    ``torch.Generator().manual_seed(seed)``, one ``torch.randn((B, 3, s, s))`` per draw, gives
    exactly the noise the PyTorch module draws itself (:func:`draw_noise`).
    """

    name: str = Field("noise", description="ONNX input name.")
    draws: int = Field(ge=1, description="K, the number of (B, 3, s, s) draws.")
    side: int = Field(ge=1, description="s, the U-Net's sample size in px.")
    seed: int = Field(description="Seed the PyTorch module draws its noise with.")
    description: str = ""


class GeneratorContract(StrictConfig):
    """What a caller must feed a trained generator and what comes back.

    Every image in and out follows :data:`IMAGE_NORMALISATION`. Inputs in ONNX order:
    ``target`` (B, 3, S, S), ``z_id`` (B, id_dim) float32 L2-normalised embedding of the
    source made by ``identity_model`` from its ``template``-aligned crop, then
    ``extra_inputs`` (layouts in ``extra_layouts``), then ``noise`` when set. Output
    ``swap`` (B, 3, S, S) float32 in [-1, 1]. B is dynamic.
    """

    format_version: int = 1
    model: str = Field(description="Registry name of the swapper (train.model).")
    image_size: int = Field(ge=1, description="S, the generator's side in px.")
    crop_size: int | None = Field(None, description="Side of the dataset's aligned crops.")
    template: str | None = Field(None, description="Alignment template (arcface or ffhq).")
    identity_model: str | None = Field(
        None, description="Registry name of the ONNX recogniser that makes z_id."
    )
    id_dim: int = Field(ge=1, description="D, the embedding size.")
    extra_inputs: list[str] = Field(default_factory=list)
    extra_layouts: dict[str, str] = Field(default_factory=dict)
    input_normalisation: str = IMAGE_NORMALISATION
    output: str = "swap (B, 3, S, S) float32 RGB in [-1, 1]; uint8 = (x + 1) · 127.5"
    onnx_inputs: list[str] = Field(default_factory=list)
    onnx_outputs: list[str] = Field(default_factory=lambda: ["swap"])
    noise: NoiseSpec | None = None
    step: int | None = Field(None, description="Training step of the weights.")
    mlflow_run_id: str | None = Field(None, description="Training run.")

    def write(self, path: Path) -> Path:
        """Write the contract as indented JSON at ``path``; returns ``path``."""
        Path(path).write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
        return Path(path)

    @classmethod
    def read(cls, path: Path) -> GeneratorContract:
        """Read a contract JSON; pydantic ValidationError on a malformed one."""
        return cls.model_validate_json(Path(path).read_text())


def contract_path(onnx_path: Path) -> Path:
    """Where the contract of an exported graph lives: ``<stem>.contract.json`` beside it."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(f"{onnx_path.stem}.contract.json")


def noise_spec(module: nn.Module) -> NoiseSpec | None:
    """The sampling noise of a DDPM-ILVR generator (None for a deterministic one): K from its
    ``ilvr`` settings and the schedule's sampling timesteps."""
    from training.networks.ddpm_ilvr import DDPMILVRNet

    if not isinstance(module, DDPMILVRNet):
        return None
    c = module.cfg.ilvr
    steps = ilvr_timesteps(module)
    per_step = sum(t > 0 for t, _ in steps)
    fresh = 0 if c.shared_noise else sum(prev >= 0 for _, prev in steps)
    return NoiseSpec(
        draws=1 + per_step + fresh,
        side=module.cfg.unet.sample_size,
        seed=c.seed,
        description="(B, K, 3, s, s) float32 N(0, 1), K draws of (B, 3, s, s) stacked on axis "
        "1 in drawing order; torch.Generator().manual_seed(seed) and one torch.randn per draw "
        "reproduce the PyTorch module's swap",
    )


def ilvr_timesteps(module: nn.Module) -> list[tuple[int, int]]:
    """(t, previous t) of each ILVR sampling step of a DDPM-ILVR generator, in order
    (previous t = −1 after the last). Sets the module's scheduler timesteps, as sampling
    does. ValueError when no timestep is ≤ ``ilvr.start_t``."""
    c, scheduler = module.cfg.ilvr, module.scheduler
    scheduler.set_timesteps(c.steps)
    ts = [int(t) for t in scheduler.timesteps]
    if c.start_t is not None:
        ts = [t for t in ts if t <= c.start_t]
    if not ts:
        raise ValueError(f"no sampling timestep is <= start_t={c.start_t}")
    return [(t, int(scheduler.previous_timestep(t))) for t in ts]


def draw_noise(spec: NoiseSpec, batch: int) -> np.ndarray:
    """The PyTorch module's own noise for a batch of ``batch``: (B, K, 3, s, s) float32."""
    gen = torch.Generator().manual_seed(spec.seed)
    draws = [
        torch.randn((batch, 3, spec.side, spec.side), generator=gen) for _ in range(spec.draws)
    ]
    return torch.stack(draws, 1).numpy()


def contract_for(module: nn.Module, meta: dict) -> GeneratorContract:
    """The contract of a loaded generator (:func:`training.registry.load_generator`) and its
    ``meta``; ONNX input names are ``target``, ``z_id``, the extra inputs, then the noise."""
    extras = list(getattr(module, "extra_inputs", ()))
    noise = noise_spec(module)
    return GeneratorContract(
        model=str(meta.get("model") or type(module).__name__),
        image_size=int(module.cfg.image_size),
        crop_size=meta.get("crop_size"),
        template=meta.get("template"),
        identity_model=meta.get("identity_model"),
        id_dim=int(module.id_dim),
        extra_inputs=extras,
        extra_layouts={n: EXTRA_LAYOUTS[n] for n in extras},
        onnx_inputs=["target", "z_id", *extras, *([noise.name] if noise else [])],
        noise=noise,
        step=meta.get("step"),
        mlflow_run_id=meta.get("mlflow_run_id"),
    )


@runtime_checkable
class SwapModel(Protocol):
    """A generator to swap with, whatever its format.

    ``model(target, z_id, extras)``: target (B, 3, S, S) float32 in [-1, 1], z_id (B, D)
    float32, extras keyed by ``contract.extra_inputs`` (layouts in
    :data:`EXTRA_LAYOUTS`) → swap (B, 3, S, S) float32 in [-1, 1]. ValueError for a missing
    extra input.
    """

    contract: GeneratorContract

    def __call__(
        self, target: np.ndarray, z_id: np.ndarray, extras: dict[str, np.ndarray]
    ) -> np.ndarray: ...


def _ordered_extras(contract: GeneratorContract, extras: dict[str, np.ndarray]) -> list:
    if missing := [n for n in contract.extra_inputs if n not in extras]:
        raise ValueError(
            f"the {contract.model} generator needs extra inputs {missing} "
            f"(it takes {contract.extra_inputs})"
        )
    return [np.ascontiguousarray(extras[n], dtype=np.float32) for n in contract.extra_inputs]


class TorchSwapModel:
    """A ``generator.pt`` in PyTorch (eval mode, no gradient) on ``device``.

    Parameters
    ----------
    path : the exported generator (:func:`training.registry.export_generator`).
    device : torch device string.

    Raises FileNotFoundError for a missing file, ValueError for an unregistered swapper.
    """

    def __init__(self, path: Path, device: str = "cpu"):
        from training.registry import load_generator

        self.module, self.meta = load_generator(Path(path), device)
        self.device = device
        self.contract = contract_for(self.module, self.meta)

    @torch.no_grad()
    def __call__(self, target, z_id, extras):
        args = [target, z_id, *_ordered_extras(self.contract, extras)]
        tensors = [torch.as_tensor(np.asarray(a, np.float32)).to(self.device) for a in args]
        swap, _ = self.module(*tensors)
        return swap.float().cpu().numpy()


class OnnxSwapModel:
    """An exported ``.onnx`` generator in onnxruntime, with its contract.

    Parameters
    ----------
    path : the graph file.
    contract : its contract (default: read from ``<stem>.contract.json`` beside it).
    threads : onnxruntime intra-op threads.
    use_gpu : prefer the CUDA provider when installed.

    A DDPM-ILVR graph takes its sampling noise as an input: this class draws it
    (:func:`draw_noise`, the contract's seed), so callers pass only the contract's extras
    and get the PyTorch module's swap. FileNotFoundError for a missing graph or contract.
    """

    def __init__(
        self,
        path: Path,
        contract: GeneratorContract | None = None,
        threads: int = 1,
        use_gpu: bool = False,
    ):
        from infra.ort import make_session

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model {path} not found")
        if contract is None:
            beside = contract_path(path)
            if not beside.is_file():
                raise FileNotFoundError(
                    f"{path} has no contract beside it ({beside.name}): export it with "
                    "`fsp export --format onnx`, which writes both"
                )
            contract = GeneratorContract.read(beside)
        self.path, self.contract = path, contract
        self.session = make_session(path, threads=threads, use_gpu=use_gpu)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, target, z_id, extras):
        c = self.contract
        values = [target, z_id, *_ordered_extras(c, extras)]
        feed = dict(zip(["target", "z_id", *c.extra_inputs], values, strict=True))
        if c.noise is not None:
            feed[c.noise.name] = draw_noise(c.noise, len(target))
        feed = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feed.items()}
        # an input the graph does not read (DDPM-ILVR's z_id) may be pruned from it
        return self.session.run(None, {k: feed[k] for k in self.input_names})[0]


_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def load_swap_model(ref: str, paths: ProjectPaths, device: str = "cpu") -> SwapModel:
    """The swap model named by ``ref``.

    ``ref`` is one of

    * a ``generator.pt`` path (or any ``.pt``) → :class:`TorchSwapModel` on ``device``;
    * an ``.onnx`` path with ``<stem>.contract.json`` beside it → :class:`OnnxSwapModel`;
    * a directory holding an MLflow ONNX model (``MLmodel`` + ``model.onnx``);
    * an MLflow run id (32 hex digits) in ``paths.tracking_uri``: the ONNX model logged to
      the run by :func:`training.onnx_export.log_onnx_model` (run tag
      :data:`MLFLOW_MODEL_TAG`), failing that a ``generator.pt`` artifact of the run;
    * ``models:/name/version`` or ``models:/name@alias`` of the MLflow model registry.

    Raises
    ------
    FileNotFoundError : a path that does not exist, an ``.onnx`` without its contract, a run
        with no swap model.
    ValueError : an unknown run id, a registered model or version that does not exist, a
        file of another kind.
    """
    ref = str(ref)
    if ref.startswith("models:/"):
        return _from_mlflow_dir(_download(ref, paths, f"registered model {ref}"), ref)
    path = Path(ref).expanduser()
    if path.is_dir():
        return _from_mlflow_dir(path, ref)
    if path.is_file():
        if path.suffix == ".onnx":
            return OnnxSwapModel(path)
        if path.suffix in (".pt", ".pth"):
            return TorchSwapModel(path, device)
        raise ValueError(f"{ref}: expected a generator.pt or an .onnx file, got {path.suffix!r}")
    if _RUN_ID.match(ref):
        return _from_run(ref, paths, device)
    raise FileNotFoundError(
        f"swap model {ref!r} not found: give a generator.pt or .onnx path, an MLflow run id "
        "or models:/name/version"
    )


def use_tracking(paths: ProjectPaths):
    """The mlflow module pointed at ``paths.tracking_uri`` (and its registry), leaving
    ``MLFLOW_TRACKING_URI`` as it was."""
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(paths.tracking_uri)
    mlflow.set_registry_uri(paths.tracking_uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
    return mlflow


def _download(uri: str, paths: ProjectPaths, what: str) -> Path:
    """Download an MLflow artifact URI; ValueError naming ``what`` when it does not exist."""
    mlflow = use_tracking(paths)
    from mlflow.exceptions import MlflowException

    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except MlflowException as e:
        raise ValueError(
            f"{what} not found in {paths.tracking_uri} ({e.message.splitlines()[0][:160]}): "
            "check the name and version (mlflow ui lists registered models)"
        ) from None


def _from_run(run_id: str, paths: ProjectPaths, device: str) -> SwapModel:
    """The swap model of a training run: its logged ONNX model, else its generator.pt."""
    mlflow = use_tracking(paths)
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ValueError(
            f"MLflow run {run_id} not found in {paths.tracking_uri}: check the run id or "
            "paths.tracking_uri"
        ) from None
    if uri := run.data.tags.get(MLFLOW_MODEL_TAG):
        return _from_mlflow_dir(_download(uri, paths, f"the swap model of run {run_id}"), run_id)
    if any(a.path == "generator.pt" for a in client.list_artifacts(run_id)):
        return TorchSwapModel(_download(f"runs:/{run_id}/generator.pt", paths, run_id), device)
    raise FileNotFoundError(
        f"MLflow run {run_id} has no swap model: run `fsp export --format onnx` for its "
        "generator.pt (it logs the ONNX model to the training run)"
    )


def _from_mlflow_dir(folder: Path, ref: str) -> OnnxSwapModel:
    """An MLflow ONNX model directory → :class:`OnnxSwapModel` with the contract from its
    ``MLmodel`` metadata (or ``contract.json``). FileNotFoundError when it lacks either."""
    from mlflow.models import Model

    if not (folder / "MLmodel").is_file():
        raise FileNotFoundError(f"{ref}: {folder} is not an MLflow model (no MLmodel file)")
    meta = Model.load(str(folder / "MLmodel")).metadata or {}
    if MLFLOW_CONTRACT_KEY in meta:
        contract = GeneratorContract.model_validate(meta[MLFLOW_CONTRACT_KEY])
    elif found := sorted(folder.rglob(CONTRACT_FILE)):
        contract = GeneratorContract.read(found[0])
    else:
        raise FileNotFoundError(f"{ref}: the MLflow model has no generator contract")
    graphs = sorted(folder.glob("*.onnx"))
    if not graphs:
        raise FileNotFoundError(f"{ref}: the MLflow model holds no .onnx file")
    return OnnxSwapModel(graphs[0], contract)
