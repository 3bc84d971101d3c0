"""Export a trained generator to ONNX, verify the graph against PyTorch on real faces, and
log it to MLflow as a model with its signature and contract.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript), opset 18, one
dynamic batch axis shared by every input and the output. Two things make it export every
registered swapper with a dynamic batch:

* the graph wrapper (:class:`GeneratorGraph`) tells the shape solver that all inputs share
  the batch size (``torch._check``); RAFSwap and IDATT split their shared encoder's output
  of ``cat([target, source])`` at the batch size, since ``chunk(2)`` leaves a guard the
  solver cannot prove for every batch (the export would fix the batch at the example's);
* DDPM-ILVR's sampling noise becomes a graph input (:class:`ILVRGraph`; the contract's
  ``noise``), so the graph is deterministic and equals the PyTorch module for the same noise.

Parity (:func:`export_onnx`): PyTorch and onnxruntime run the same inputs at batch 1 and at
batch N ≥ 2; the maximum and mean absolute differences of the (B, 3, S, S) outputs in
[-1, 1] are reported and must stay below ``tolerance`` (default :data:`TOLERANCE`).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from infra.geometry import resize_crops, resize_square, uint8_to_unit
from training.swap_model import (
    CONTRACT_FILE,
    MLFLOW_CONTRACT_KEY,
    MLFLOW_MODEL_NAME,
    MLFLOW_MODEL_TAG,
    GeneratorContract,
    OnnxSwapModel,
    contract_for,
    contract_path,
    draw_noise,
    ilvr_timesteps,
    use_tracking,
)

if TYPE_CHECKING:
    from infra.models import ModelStore
    from infra.paths import ProjectPaths

log = logging.getLogger(__name__)

#: Largest allowed |onnxruntime − PyTorch| on outputs in [-1, 1] (a 0.13 uint8 level).
TOLERANCE = 1e-3
#: ONNX opset of the exported graphs.
OPSET = 18
#: File name of the exported graph in the output directory.
ONNX_FILE = "generator.onnx"


@dataclass
class ParityFaces:
    """Real aligned faces to verify an export on.

    Attributes
    ----------
    crops : (N, C, C, 3) uint8 RGB crops on the generator's alignment template, N ≥ 2.
    embeddings : (N, D) float32 L2-normalised embeddings of the crops by the contract's
        recogniser, or None to compute them (:class:`infra.identity.IdentityEncoder`).
    landmarks468 : (N, 468, 2 or 3) FaceMesh landmarks in crop pixels, or None; needed for a
        generator that takes ``face_mask`` (and ``regions`` when ``regions`` is None).
    regions : (N, C, C) uint8 RAFSwap region bits (``regions.png``), or None to rasterise them
        from the landmarks (the geometric FaceMesh parser).
    """

    crops: np.ndarray
    embeddings: np.ndarray | None = None
    landmarks468: np.ndarray | None = None
    regions: np.ndarray | None = None


@dataclass
class ParityRow:
    """|onnxruntime − PyTorch| over all output values of one batch."""

    batch: int
    max_abs: float
    mean_abs: float


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and measured.

    ``inputs`` is ``faces`` (real faces) or ``random`` (no faces given);
    ``export_seconds`` the wall time of the export alone.
    """

    onnx_path: Path
    contract_path: Path
    contract: GeneratorContract
    parity: list[ParityRow] = field(default_factory=list)
    export_seconds: float = 0.0
    inputs: str = "faces"
    tolerance: float = TOLERANCE

    @property
    def max_abs(self) -> float:
        """Largest difference over every batch checked."""
        return max(r.max_abs for r in self.parity)

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        out = [f"onnx: {self.onnx_path}", f"contract: {self.contract_path}"]
        out += [
            f"parity batch {r.batch} on {self.inputs}: max |Δ| {r.max_abs:.2e}, "
            f"mean |Δ| {r.mean_abs:.2e} (tolerance {self.tolerance:g})"
            for r in self.parity
        ]
        return [*out, f"export: {self.export_seconds:.1f} s"]


class GeneratorGraph(nn.Module):
    """``forward(target, z_id, *extra) -> swap``: the generator without its extras dict,
    all inputs checked to share the batch size (for the exporter's shape solver)."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, target: torch.Tensor, z_id: torch.Tensor, *extra: torch.Tensor):
        for x in (z_id, *extra):
            torch._check(x.shape[0] == target.shape[0])
        return self.generator(target, z_id, *extra)[0]


class ILVRGraph(nn.Module):
    """DDPM-ILVR's swap (:meth:`training.networks.ddpm_ilvr.DDPMILVRNet.swap`) with its
    noise as an input: ``forward(target, z_id, source, noise) -> swap``.

    ``noise`` (B, K, 3, s, s) float32 as the contract's :class:`~training.swap_model.NoiseSpec`
    describes; z_id is ignored. The reverse chain is unrolled over the sampling timesteps
    with the DDPM step of :func:`diffusers.DDPMScheduler.step` written out for the
    project's schedule (ε-prediction, fixed-small variance, x̂_0 clipped), so the result
    equals the module's for the same noise. ValueError for another scheduler setting.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        sch = net.scheduler
        cfg = sch.config
        if (
            cfg.prediction_type != "epsilon"
            or cfg.variance_type != "fixed_small"
            or cfg.thresholding
        ):
            raise ValueError("ILVR export supports ε-prediction, fixed_small, no thresholding")
        self.clip = float(cfg.clip_sample_range) if cfg.clip_sample else None
        self.steps = ilvr_timesteps(net)
        self.alphas = sch.alphas_cumprod.float()
        self.one = sch.one.float() if torch.is_tensor(sch.one) else torch.tensor(float(sch.one))

    def _alpha(self, t: int) -> torch.Tensor:
        return self.alphas[t] if t >= 0 else self.one

    def _q_sample(self, x0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        a = self.alphas[t]
        return a**0.5 * x0 + (1 - a) ** 0.5 * noise

    def _step(self, eps, t: int, prev_t: int, x, noise) -> torch.Tensor:
        """x'_{t−1} of one ancestral DDPM step; ``noise`` None when t = 0."""
        a_t, a_prev = self._alpha(t), self._alpha(prev_t)
        b_t, b_prev = 1 - a_t, 1 - a_prev
        cur_a = a_t / a_prev
        cur_b = 1 - cur_a
        x0 = (x - b_t**0.5 * eps) / a_t**0.5
        if self.clip is not None:
            x0 = x0.clamp(-self.clip, self.clip)
        out = (a_prev**0.5 * cur_b) / b_t * x0 + cur_a**0.5 * b_prev / b_t * x
        if noise is not None:
            out = out + torch.clamp(b_prev / b_t * cur_b, min=1e-20) ** 0.5 * noise
        return out

    def forward(self, target, z_id, source, noise):
        from training.priors.ddpm import low_pass

        for x in (z_id, source, noise):
            torch._check(x.shape[0] == target.shape[0])
        c, side = self.net.cfg.ilvr, self.net.cfg.unet.sample_size
        src, ref = resize_square(source, side), resize_square(target, side)
        z = noise[:, 0]
        k = 1
        x = self._q_sample(src, z, self.steps[0][0])
        for t, prev_t in self.steps:
            eps = self.net.unet(x, t).sample
            step_noise = None
            if t > 0:
                step_noise, k = noise[:, k], k + 1
            x_prime = self._step(eps, t, prev_t, x, step_noise)
            if prev_t < 0:
                y = ref
            else:
                fresh = z
                if not c.shared_noise:
                    fresh, k = noise[:, k], k + 1
                y = self._q_sample(ref, fresh, prev_t)
            x = low_pass(y, c.n, c.low_pass) + x_prime - low_pass(x_prime, c.n, c.low_pass)
        return resize_square(x.clamp(-1.0, 1.0), self.net.cfg.image_size).clamp(-1.0, 1.0)


def graph_of(module: nn.Module) -> nn.Module:
    """The exportable wrapper of a generator: :class:`ILVRGraph` for DDPM-ILVR, else
    :class:`GeneratorGraph`."""
    from training.networks.ddpm_ilvr import DDPMILVRNet

    return ILVRGraph(module) if isinstance(module, DDPMILVRNet) else GeneratorGraph(module)


def export_graph(
    module: nn.Module, contract: GeneratorContract, example: list[torch.Tensor], path: Path,
    opset: int = OPSET,
) -> Path:  # fmt: skip
    """Write ``module``'s graph (:func:`graph_of`) at ``path`` with the dynamo exporter,
    inputs named ``contract.onnx_inputs``, output ``swap``, a dynamic batch axis on each.
    ``example``: one tensor per input, batch ≥ 2. Raises what the exporter raises."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    graph = graph_of(module).eval()
    shapes = tuple({0: batch} for _ in example)
    if isinstance(graph, GeneratorGraph) and len(example) > 2:  # (target, z_id, *extra)
        shapes = (*shapes[:2], shapes[2:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            tuple(example),
            str(path),
            input_names=contract.onnx_inputs,
            output_names=contract.onnx_outputs,
            dynamic_shapes=shapes,
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return path


def parity_inputs(
    contract: GeneratorContract, faces: ParityFaces | None, store: ModelStore | None
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(target (N, 3, S, S), z_id (N, D), extras) for a parity run: each face is the target
    of the next face's identity (sources rolled by one). ``faces`` None: seeded random
    images in [-1, 1], random unit embeddings and random {0, 1} masks (N = 3).

    ValueError: fewer than 2 faces, embeddings of the wrong size, missing landmarks for a
    mask, or no ``store`` to compute embeddings with.
    """
    s = contract.image_size
    if faces is None:
        rng = np.random.default_rng(0)
        target = rng.uniform(-1, 1, (3, 3, s, s)).astype(np.float32)
        z = rng.standard_normal((3, contract.id_dim)).astype(np.float32)
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        masks = {
            "face_mask": (rng.random((3, 1, s, s)) > 0.3).astype(np.float32),
            "regions": (rng.random((3, 4, s, s)) > 0.7).astype(np.float32),
        }
        masks["source_regions"] = np.roll(masks["regions"], 1, 0)
        extras = {"source": np.roll(target, 1, 0), **masks}
        return target, np.roll(z, 1, 0), {n: extras[n] for n in contract.extra_inputs}
    crops = np.asarray(faces.crops)
    if crops.ndim != 4 or len(crops) < 2 or crops.dtype != np.uint8:
        raise ValueError(f"parity needs (N >= 2, C, C, 3) uint8 crops, got {crops.shape}")
    target = uint8_to_unit(resize_crops(crops, s)).numpy()
    z = faces.embeddings
    if z is None:
        z = _embed(crops, contract, store)
    z = np.asarray(z, np.float32)
    if z.shape != (len(crops), contract.id_dim):
        raise ValueError(f"embeddings {z.shape} do not fit {len(crops)} faces × {contract.id_dim}")
    extras = {n: _extra(n, faces, target, s) for n in contract.extra_inputs}
    return target, np.roll(z, 1, 0), extras


def _embed(crops: np.ndarray, contract: GeneratorContract, store: ModelStore | None):
    if store is None or not contract.identity_model:
        raise ValueError(
            "parity faces have no embeddings: give them, or a model store and a generator "
            "whose meta names its identity_model"
        )
    from infra.identity import IdentityEncoder

    return IdentityEncoder(store, contract.identity_model).embed(crops)


def _extra(name: str, faces: ParityFaces, target: np.ndarray, s: int) -> np.ndarray:
    """One extra input of the parity run at size S (sources rolled by one)."""
    if name == "source":
        return np.roll(target, 1, 0)
    c = faces.crops.shape[1]
    if name == "face_mask":
        from infra.facemesh_topology import face_oval_mask

        lmk = _landmarks(faces, name)
        return np.stack([face_oval_mask(p[:, :2] * (s / c), s)[None] for p in lmk])
    from training.data import region_masks

    bits = faces.regions
    if bits is None:
        from preprocessing.annotate import regions_bitmask
        from preprocessing.parsing.facemesh_regions import rasterise

        bits = np.stack([regions_bitmask(rasterise(p, c)) for p in _landmarks(faces, name)])
    masks = np.stack([region_masks(b, s) for b in bits])
    return np.roll(masks, 1, 0) if name == "source_regions" else masks


def _landmarks(faces: ParityFaces, name: str) -> np.ndarray:
    if faces.landmarks468 is None:
        raise ValueError(f"the generator takes {name!r}: parity faces need landmarks468")
    return np.asarray(faces.landmarks468, np.float32)


def check_parity(
    module: nn.Module, onnx_model: OnnxSwapModel, inputs: tuple, tolerance: float = TOLERANCE
) -> list[ParityRow]:
    """PyTorch vs onnxruntime at batch 1 (the first row) and at batch N (all rows), the noise
    of a stochastic generator drawn alike for both. Returns one :class:`ParityRow` per batch;
    ValueError when a maximum difference exceeds ``tolerance``."""
    target, z, extras = inputs
    c = onnx_model.contract
    rows = []
    for b in sorted({1, len(target)}):
        part = (target[:b], z[:b], {k: v[:b] for k, v in extras.items()})
        want = _torch_swap(module, c, *part)
        got = onnx_model(*part)
        diff = np.abs(got - want)
        rows.append(ParityRow(b, float(diff.max()), float(diff.mean())))
    if bad := [r for r in rows if not r.max_abs <= tolerance]:
        raise ValueError(
            f"ONNX export of {c.model} differs from PyTorch: max |Δ| {bad[0].max_abs:.3g} at "
            f"batch {bad[0].batch} > tolerance {tolerance:g}"
        )
    return rows


@torch.no_grad()
def _torch_swap(module, contract, target, z, extras) -> np.ndarray:
    """The PyTorch module's swap; DDPM-ILVR draws its noise itself (same seed as the graph's
    :func:`draw_noise`)."""
    args = [target, z, *(extras[n] for n in contract.extra_inputs)]
    return module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in args))[0].numpy()


def export_onnx(
    generator_pt: Path,
    out_dir: Path,
    faces: ParityFaces | np.ndarray | None = None,
    store: ModelStore | None = None,
    opset: int = OPSET,
    tolerance: float = TOLERANCE,
) -> ExportReport:
    """Export ``generator_pt`` to ``out_dir/generator.onnx`` + ``generator.contract.json``
    and verify it.

    Parameters
    ----------
    generator_pt : an exported generator (:func:`training.registry.export_generator`).
    out_dir : output folder (created).
    faces : real aligned faces for the parity check (:class:`ParityFaces`, or bare (N, C, C,
        3) uint8 crops whose embeddings are computed with ``store``); None checks on seeded
        random inputs instead (the report says ``inputs="random"``).
    store : model store for the recogniser when embeddings must be computed.
    opset : ONNX opset.
    tolerance : largest allowed max |Δ| on outputs in [-1, 1].

    Raises
    ------
    FileNotFoundError : ``generator_pt`` is missing.
    ValueError : unusable faces, or onnxruntime differs from PyTorch beyond ``tolerance``.
    """
    from training.registry import load_generator

    module, meta = load_generator(Path(generator_pt))
    contract = contract_for(module, meta)
    if isinstance(faces, np.ndarray):
        faces = ParityFaces(crops=faces)
    inputs = parity_inputs(contract, faces, store)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / ONNX_FILE
    example = _example(contract, inputs)
    start = time.perf_counter()
    export_graph(module, contract, example, onnx_path, opset)
    seconds = time.perf_counter() - start
    written = contract.write(contract_path(onnx_path))
    rows = check_parity(module, OnnxSwapModel(onnx_path, contract), inputs, tolerance)
    report = ExportReport(
        onnx_path, written, contract, rows, seconds, "random" if faces is None else "faces",
        tolerance,
    )  # fmt: skip
    log.info("%s", "; ".join(report.lines()))
    return report


def _example(contract: GeneratorContract, inputs: tuple) -> list[torch.Tensor]:
    """Example tensors of the export, at batch 2 (a batch of 1 would be specialised)."""
    target, z, extras = inputs
    arrays = [target[:2], z[:2], *(extras[n][:2] for n in contract.extra_inputs)]
    if contract.noise is not None:
        arrays.append(draw_noise(contract.noise, 2))
    return [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in arrays]


def signature_of(contract: GeneratorContract):
    """The MLflow ``ModelSignature`` of an exported graph: one float32 tensor spec per input
    and the output, batch axis −1."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    s, f32 = contract.image_size, np.dtype(np.float32)
    channels = {"source": 3, "face_mask": 1, "regions": 4, "source_regions": 4}
    shapes = {"target": (-1, 3, s, s), "z_id": (-1, contract.id_dim)}
    shapes |= {n: (-1, channels[n], s, s) for n in contract.extra_inputs}
    if (n := contract.noise) is not None:
        shapes[n.name] = (-1, n.draws, 3, n.side, n.side)
    inputs = Schema([TensorSpec(f32, shapes[name], name) for name in contract.onnx_inputs])
    outputs = Schema([TensorSpec(f32, (-1, 3, s, s), contract.onnx_outputs[0])])
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_onnx_model(
    onnx_path: Path,
    contract: GeneratorContract,
    run_id: str | None,
    paths: ProjectPaths,
    registered_name: str | None = None,
) -> str:
    """Log an exported graph to MLflow as an ONNX model named :data:`MLFLOW_MODEL_NAME`.

    Into run ``run_id`` (the training run, ``contract.mlflow_run_id``) when given and present
    in ``paths.tracking_uri``, else into a new run of ``paths.experiment``. The model carries
    :func:`signature_of`, the contract in its metadata (``fsp_contract``) and as
    ``contract.json``; the run gets the tag :data:`MLFLOW_MODEL_TAG` = the model URI, which
    :func:`training.swap_model.load_swap_model` follows from a run id. ``registered_name``
    also registers it in the model registry (``models:/<name>/<version>``).

    Returns the model URI (``models:/<model id>``). Raises what the MLflow client raises.
    """
    import onnx

    from infra.tracking import check_reachable, ensure_experiment

    check_reachable(paths.tracking_uri)
    mlflow = use_tracking(paths)
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    if run_id is not None:
        try:
            client.get_run(run_id)
        except MlflowException:
            log.warning(
                "training run %s not in %s: logging to a new run", run_id, paths.tracking_uri
            )
            run_id = None
    if run_id is None:
        run_id = client.create_run(ensure_experiment(mlflow, paths), run_name="export").info.run_id
    staged = Path(onnx_path).with_name(CONTRACT_FILE)
    contract.write(staged)
    try:
        with mlflow.start_run(run_id=run_id):
            info = mlflow.onnx.log_model(
                onnx.load(str(onnx_path)),
                name=MLFLOW_MODEL_NAME,
                signature=signature_of(contract),
                metadata={MLFLOW_CONTRACT_KEY: contract.model_dump(mode="json")},
                extra_files=[str(staged)],
                pip_requirements=["onnx==1.23.2", "onnxruntime==1.31.1"],
                registered_model_name=registered_name,
                save_as_external_data=False,
            )
            mlflow.set_tag(MLFLOW_MODEL_TAG, info.model_uri)
            mlflow.log_dict(contract.model_dump(mode="json"), f"export/{CONTRACT_FILE}")
    finally:
        staged.unlink(missing_ok=True)
    return info.model_uri
