"""The device setting of prepare: validation, fractional GPU requests, and a one-line error
where CUDA is asked for but missing (these machines have no GPU; the CUDA path itself is
measured on a GPU machine when one is lent)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from infra.ort import DeviceUnavailableError, providers, require_cuda
from infra.paths import ProjectPaths
from preprocessing.config import PrepareConfig
from preprocessing.detect_pass import DetectFaces
from preprocessing.prepare import _actor_args

SOURCES = [{"name": "s", "kind": "folder", "path": "x"}]


def test_cuda_needs_a_gpu_reservation():
    with pytest.raises(ValidationError, match="gpus_per_actor > 0"):
        PrepareConfig.model_validate({"sources": SOURCES, "ray": {"device": "cuda"}})


def test_actors_request_fractional_gpus():
    cfg = PrepareConfig.model_validate(
        {"sources": SOURCES, "ray": {"device": "cuda", "gpus_per_actor": 0.25}}
    )
    assert _actor_args(cfg)["num_gpus"] == 0.25
    cpu = PrepareConfig.model_validate({"sources": SOURCES})
    assert _actor_args(cpu)["num_gpus"] is None


@pytest.mark.skipif(
    "CUDAExecutionProvider" in providers(True), reason="this machine has onnxruntime-gpu"
)
def test_missing_cuda_is_one_clear_error(tmp_path):
    with pytest.raises(DeviceUnavailableError, match="device cuda: onnxruntime has no CUDA"):
        require_cuda()
    cfg = PrepareConfig.model_validate(
        {"sources": SOURCES, "ray": {"device": "cuda", "gpus_per_actor": 0.5}}
    )
    with pytest.raises(DeviceUnavailableError) as e:
        DetectFaces(cfg, ProjectPaths.resolve(None, tmp_path))
    assert "\n" not in str(e.value)


def test_model_batch_defaults_by_device_and_can_be_set():
    cpu = PrepareConfig.model_validate({"sources": SOURCES})
    gpu = PrepareConfig.model_validate(
        {"sources": SOURCES, "ray": {"device": "cuda", "gpus_per_actor": 0.25}}
    )
    fixed = PrepareConfig.model_validate({"sources": SOURCES, "ray": {"batch_size": 8}})
    assert (cpu.ray.model_batch, gpu.ray.model_batch, fixed.ray.model_batch) == (1, 32, 8)
