"""onnxruntime sessions with explicit thread and provider settings."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def providers(use_gpu: bool) -> list[str]:
    """CUDA first when asked for and available (onnxruntime-gpu), else the CPU."""
    if use_gpu and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class DeviceUnavailableError(RuntimeError):
    """``device: cuda`` was asked for on a process that cannot run CUDA."""


def require_cuda() -> None:
    """Check that this process can run the models on CUDA: onnxruntime has its CUDA provider
    (the ``gpu`` extra, ``make setup-gpu``) and torch sees a device (on Ray: the actor
    reserved ``gpus_per_actor``).

    Raises
    ------
    DeviceUnavailableError : one line naming what is missing.
    """
    import torch

    missing = []
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        missing.append("onnxruntime has no CUDAExecutionProvider (install the gpu extra)")
    if not torch.cuda.is_available():
        missing.append("torch sees no CUDA device")
    if missing:
        raise DeviceUnavailableError("device cuda: " + "; ".join(missing))


def make_session(model: Path | str | bytes, threads: int = 1, use_gpu: bool = False):
    """An ``onnxruntime.InferenceSession`` on a file path or serialised model bytes.

    Parameters
    ----------
    model : ONNX file path or ``ModelProto.SerializeToString()`` bytes.
    threads : intra-op threads (1 inside a Ray actor that reserves one CPU or less).
    use_gpu : prefer the CUDA provider when installed.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, sess_options=options, providers=providers(use_gpu))
