"""ONNX export of every swapper: parity with PyTorch on real faces at batch 1 and 3, the
contract beside the graph, and the swap-model loader for every kind of reference (file,
ONNX, MLflow run id, registered model) with its one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from infra.models import ModelStore
from infra.paths import PathsConfig, ProjectPaths
from training.config import TrainConfig
from training.onnx_export import TOLERANCE, ParityFaces, export_onnx, log_onnx_model
from training.registry import SWAPPERS, build_generator, export_generator
from training.swap_model import (
    GeneratorContract,
    OnnxSwapModel,
    TorchSwapModel,
    contract_path,
    load_swap_model,
)

from ..conftest import FACES, TINY_DDPM_ILVR
from .test_objectives import TINY

#: DDPM-ILVR with 2 ILVR steps: the graph unrolls the chain, so export time grows with it.
TINY_ALL = {**TINY, "ddpm_ilvr": {**TINY_DDPM_ILVR, "ilvr": {"n": 4, "steps": 2}}}
#: One swapper per generator class: swappers that share one (ghost → AEINet of aei_net,
#: cvae_gan → CVAEGenerator of cvae) export the same graph.
EXPORTED = [
    n
    for n in SWAPPERS
    if next(m for m in SWAPPERS if SWAPPERS[m].generator is SWAPPERS[n].generator) == n
]
IMAGES = [
    "lfw_subset_krasserm/Ariel_Sharon/Ariel_Sharon_0001.jpg",
    "lfw_subset_krasserm/Colin_Powell/Colin_Powell_0001.jpg",
    "lfw_subset_krasserm/Hugo_Chavez/Hugo_Chavez_0002.jpg",
]
#: Export takes 25–60 s for the swappers built on StyleGAN2 / a DDPM U-Net on 2 CPU cores.
SLOW = {"rafswap", "idatt", "ddpm_ilvr"}
META = {"identity_model": "mobilefacenet_128d", "crop_size": 112, "template": "arcface"}


@pytest.fixture(scope="module")
def faces(models_dir) -> ParityFaces:
    """Three real LFW faces: SCRFD 5 points → ArcFace 112-px crops, mobilefacenet
    embeddings, FaceMesh landmarks mapped into the crops (as prepare annotates them)."""
    from infra.geometry import transform_points
    from infra.identity import IdentityEncoder
    from preprocessing.align import align_face
    from preprocessing.config import DetectionConfig
    from preprocessing.decode import load_image
    from preprocessing.detect import FaceDetector
    from preprocessing.facemesh import FaceMesh

    store = ModelStore(models_dir)
    det, mesh = FaceDetector(store.path("scrfd_2.5g_bnkps"), DetectionConfig()), FaceMesh(store)
    crops, lmks = [], []
    for p in IMAGES:
        img = load_image(FACES / p, 10**8).image
        found = det.detect(img)
        crop, M = align_face(img, found.landmarks[0], 112)
        crops.append(crop)
        lmks.append(transform_points(mesh.predict(img, found.boxes[0])[:, :2], M))
    crops = np.stack(crops)
    emb = IdentityEncoder(store, "mobilefacenet_128d").embed(crops)
    return ParityFaces(crops, emb, np.stack(lmks).astype(np.float32))


def _generator_pt(tmp_path, name: str, extra_meta: dict | None = None):
    cfg = TrainConfig.model_validate({"model": name, name: {"debug": TINY_ALL[name]}})
    torch.manual_seed(0)
    gen = build_generator(cfg, id_dim=128).eval()
    meta = {**META, "model": name, "step": 2, "mlflow_run_id": None, **(extra_meta or {})}
    return export_generator(name, gen, tmp_path / "generator.pt", meta), meta


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in EXPORTED]
)
def test_export_matches_torch_on_real_faces(tmp_path, faces, name):
    pt, meta = _generator_pt(tmp_path, name)
    report = export_onnx(pt, tmp_path / "export", faces)
    assert [r.batch for r in report.parity] == [1, 3] and report.inputs == "faces"
    assert report.max_abs < TOLERANCE
    print(f"\n{name}: " + "; ".join(report.lines()[2:]))
    c = GeneratorContract.read(report.contract_path)
    assert report.contract_path == contract_path(report.onnx_path)
    assert (c.model, c.identity_model, c.crop_size, c.template, c.id_dim) == (
        name, meta["identity_model"], 112, "arcface", 128,
    )  # fmt: skip
    assert c.image_size == 32 and c.step == 2
    assert c.onnx_inputs[: 2 + len(c.extra_inputs)] == ["target", "z_id", *c.extra_inputs]
    assert (c.noise is not None) == (name == "ddpm_ilvr")
    # the ONNX model row by row equals the PyTorch model through the one interface
    onnx_model, torch_model = OnnxSwapModel(report.onnx_path), TorchSwapModel(pt)
    from training.onnx_export import parity_inputs

    target, z, extras = parity_inputs(c, faces, None)
    got, want = onnx_model(target, z, extras), torch_model(target, z, extras)
    assert got.shape == (3, 3, 32, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=TOLERANCE)
    if name != "ddpm_ilvr":  # its noise depends on the batch, as the module's does
        single = np.concatenate(
            [
                onnx_model(
                    target[i : i + 1], z[i : i + 1], {k: v[i : i + 1] for k, v in extras.items()}
                )
                for i in range(3)
            ]
        )
        np.testing.assert_allclose(single, got, atol=TOLERANCE)


@pytest.fixture
def tracked(tmp_path) -> ProjectPaths:
    """Project paths with a local SQLite MLflow store in tmp_path."""
    return ProjectPaths.resolve(
        PathsConfig(output_dir=str(tmp_path / "outputs"), experiment="export-test"), tmp_path
    )


def test_every_reference_kind_loads_the_same_swap(tmp_path, faces, tracked):
    from training.onnx_export import parity_inputs

    pt, _ = _generator_pt(tmp_path, "korshunova")
    report = export_onnx(pt, tmp_path / "export", faces)
    uri = log_onnx_model(report.onnx_path, report.contract, None, tracked, "tiny-swapper")
    import mlflow

    run_id = (
        mlflow.MlflowClient(tracked.tracking_uri)
        .search_runs(
            [
                mlflow.MlflowClient(tracked.tracking_uri)
                .get_experiment_by_name("export-test")
                .experiment_id
            ]
        )[0]
        .info.run_id
    )
    assert uri.startswith("models:/")
    inputs = parity_inputs(report.contract, faces, None)
    want = TorchSwapModel(pt)(*inputs)
    for ref in (str(pt), str(report.onnx_path), run_id, "models:/tiny-swapper/1"):
        model = load_swap_model(ref, tracked)
        assert model.contract.model == "korshunova" and model.contract.extra_inputs == ["face_mask"]
        np.testing.assert_allclose(model(*inputs), want, atol=TOLERANCE, err_msg=ref)


def test_errors_name_the_reference_and_the_fix(tmp_path, tracked):
    with pytest.raises(FileNotFoundError, match=r"nothing\.pt.*not found"):
        load_swap_model(str(tmp_path / "nothing.pt"), tracked)
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(b"not a graph")
    with pytest.raises(FileNotFoundError, match=r"no contract beside it.*fsp export"):
        load_swap_model(str(lonely), tracked)
    with pytest.raises(ValueError, match=r"registered model models:/absent/1 not found"):
        load_swap_model("models:/absent/1", tracked)
    with pytest.raises(ValueError, match=r"run 0{32} not found"):
        load_swap_model("0" * 32, tracked)


def test_contract_json_is_plain_and_round_trips(tmp_path):
    pt, _ = _generator_pt(tmp_path, "rafswap")
    c = TorchSwapModel(pt).contract
    path = c.write(tmp_path / "generator.contract.json")
    raw = json.loads(path.read_text())
    assert raw["extra_inputs"] == ["source", "regions", "source_regions"]
    assert "x/127.5" in raw["input_normalisation"] and GeneratorContract.read(path) == c


def test_fsp_export_cli_writes_logs_and_refuses_other_formats(tmp_path):
    """``fsp export`` without a prepared dataset: parity on seeded random inputs, logged to
    a new MLflow run; ``--format`` other than onnx is one error line."""
    import yaml
    from typer.testing import CliRunner

    from pipelines.cli import app

    pt, _ = _generator_pt(tmp_path, "cvae")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"paths": {"output_dir": str(tmp_path / "out")}}))
    runner = CliRunner()
    bad = runner.invoke(
        app, ["export", "-p", str(params), "--generator", str(pt), "--format", "tflite"]
    )
    assert bad.exit_code == 2 and "use --format onnx" in bad.output
    ok = runner.invoke(
        app, ["export", "-p", str(params), "--generator", str(pt), "--output", str(tmp_path / "x")]
    )
    assert ok.exit_code == 0, ok.output
    assert "parity batch 3 on random" in ok.output and "mlflow model: models:/" in ok.output
    assert (tmp_path / "x" / "generator.onnx").is_file()
