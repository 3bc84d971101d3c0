"""``evaluate.generator: <released swapper>``: identity codes from the release's own encoder,
its own output folder and MLflow run, end to end on a tiny released-format model."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from evaluation.config import EvaluateConfig
from evaluation.evaluate import _identity_codes, output_dir
from infra.config import build
from infra.models import REGISTRY, InputSpec, ModelSpec
from infra.paths import PathsConfig, ProjectPaths
from training.networks.aei_net import AEINet
from training.released import RELEASED
from training.released.base import ReleasedSwapper
from training.released.ghost import GHOST_RELEASE, GhostRelease, ghost_key_map
from training.released.iresnet import IResNet

TINY = GHOST_RELEASE.model_copy(update={"image_size": 32, "base_channels": 4, "max_channels": 16})
LAYERS = (1, 1, 1, 1)


def test_output_dir_per_generator(tmp_path):
    paths = ProjectPaths.resolve(PathsConfig(output_dir=str(tmp_path)))
    assert output_dir(build(EvaluateConfig, {}, "evaluate"), paths) == tmp_path / "evaluate"
    cfg = build(EvaluateConfig, {"generator": "ghost_unet_2blocks"}, "evaluate")
    assert output_dir(cfg, paths) == tmp_path / "evaluate-ghost_unet_2blocks"


def test_released_generator_takes_its_own_identity_codes():
    """The dataset's embeddings feed a trained generator; a released one gets its encoder's
    codes of the source crops (other rows zero)."""
    torch.manual_seed(0)
    model = GhostRelease(AEINet(TINY, 512), IResNet(LAYERS)).eval()
    faces = [
        dataclasses.make_dataclass("F", ["embedding"])(np.full(512, i, np.float32))
        for i in range(4)
    ]
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    sources = torch.tensor([1, 3])
    with torch.no_grad():
        z = _identity_codes(model, faces, images, sources, batch_size=1)
        torch.testing.assert_close(z[sources], model.identity_code(images[sources]))
    assert z[[0, 2]].abs().sum() == 0
    z = _identity_codes(AEINet(TINY, 512), faces, images, sources, batch_size=1)
    assert torch.equal(z[:, 0], torch.arange(4.0))


def _tiny_release(models_dir, monkeypatch) -> str:
    """Register and write a tiny GHOST-format release (reference key names, sha256 None)."""
    torch.manual_seed(0)
    generator = AEINet(TINY, 512).eval()
    state = {ref: generator.state_dict()[ours] for ref, ours in ghost_key_map(TINY).items()}
    files = {
        "tiny_ghost_g": (state, "swapper"),
        "tiny_ghost_id": (IResNet(LAYERS).state_dict(), "swapper_id"),
    }
    for name, (sd, task) in files.items():
        spec = ModelSpec(
            name=name,
            task=task,
            file=f"swappers/tiny/{name}.pth",
            sha256=None,
            url=f"https://example.invalid/{name}.pth",
            licence="test",
            input=InputSpec(shape=(None, 3, 32, 32)),
        )
        monkeypatch.setitem(REGISTRY, name, spec)
        (models_dir / spec.file).parent.mkdir(parents=True, exist_ok=True)
        torch.save(sd, models_dir / spec.file)
    row = ReleasedSwapper(
        name="tiny_ghost",
        family="ghost",
        title="tiny GHOST-format release (test)",
        generator_model="tiny_ghost_g",
        identity_model="tiny_ghost_id",
        generator=TINY,
        identity_layers=LAYERS,
    )
    monkeypatch.setitem(RELEASED, row.name, row)
    return row.name


@pytest.mark.slow
@pytest.mark.integration
def test_evaluate_a_released_model_beside_trained_runs(prepared, tmp_path, models_dir, monkeypatch):
    from evaluation.compare import compare_runs
    from evaluation.evaluate import evaluate

    _, _, _, prep_dir, params = prepared
    models = tmp_path / "models"
    models.mkdir()
    for sub in models_dir.iterdir():  # the shared models, plus the tiny release
        (models / sub.name).symlink_to(sub)
    name = _tiny_release(models, monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    (out / "prepare").symlink_to(prep_dir)
    raw_paths = {**params["paths"], "output_dir": str(out), "models_dir": str(models)}
    paths = ProjectPaths.resolve(PathsConfig(**raw_paths))
    cfg = build(EvaluateConfig, {**params["evaluate"], "generator": name}, "evaluate")

    metrics = evaluate(cfg, paths)  # no train stage: the released model needs none

    folder = out / f"evaluate-{name}"
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics)) and not (out / "evaluate").exists()
    assert (
        saved["protocol"]["resolution"] == 32 and saved["protocol"]["recognizer"] == "dlib_resnet"
    )
    assert 0 <= saved["swap"]["id_retrieval_top1"] <= 1
    for file in ("pairs.parquet", "face_matrix.png", "blended.png"):
        assert (folder / file).stat().st_size > 0
    table = compare_runs(paths, "faceswap")
    assert list(table["run"]) == [name]
    assert table.loc[0, "swap/id_retrieval_top1"] == pytest.approx(
        saved["swap"]["id_retrieval_top1"]
    )
    import mlflow

    run = mlflow.search_runs(experiment_names=["faceswap"]).iloc[0]
    assert run["params.evaluate.generator"] == name
    assert run["params.released.identity_model"] == "tiny_ghost_id"
    assert len(run["params.released.generator_sha256"]) == 64
