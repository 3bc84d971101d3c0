"""``fsp swap`` on real faces: an image with several faces, a short video built from
../shared/faces frames (shifts, scale changes, frames without a face, an audio track), the
face choice, the paste-back mask, temporal smoothing and the errors users meet."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from infra.models import ModelStore
from pipelines.benchmarks.swap_video import synthetic_face_video
from pipelines.cli import app
from pipelines.face_swap import FaceSwapper, LandmarkSmoother, NoSourceFaceError
from pipelines.swap_config import SwapConfig, VideoConfig
from pipelines.swap_media import read_image, swap_media
from pipelines.video_io import VideoError, probe
from training.config import TrainConfig
from training.registry import build_generator, export_generator
from training.swap_model import load_swap_model

from ..conftest import FACES, MODELS, TINY_AEI

MULTI = FACES / "multi_face" / "mtcnn_office4.jpg"
SOURCE = FACES / "lfw_subset_krasserm" / "Colin_Powell" / "Colin_Powell_0001.jpg"
TARGET = FACES / "lfw_subset_krasserm" / "George_W_Bush" / "George_W_Bush_0001.jpg"
NO_FACE = FACES / "no_face" / "inspireface_view.jpg"
#: Frames of the test video (index → no face) and its rate.
NO_FACE_FRAMES = (4, 5, 11)
FRAMES, FPS = 14, Fraction(25)
LOSSLESS = VideoConfig(codec="ffv1", pix_fmt="bgr0", crf=None)


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory) -> Path:
    """A tiny randomly initialised AEI-Net exported like training's generator.pt, for the
    project's sample data (MobileFaceNet embeddings, 224-px ArcFace crops)."""
    torch.manual_seed(0)
    cfg = TrainConfig.model_validate({"model": "aei_net", "aei_net": {"debug": TINY_AEI}})
    gen = build_generator(cfg, id_dim=128).eval()
    meta = {
        "step": 0,
        "model": "aei_net",
        "identity_model": "mobilefacenet_128d",
        "id_dim": 128,
        "crop_size": 224,
        "template": "arcface",
        "mlflow_run_id": None,
    }
    path = tmp_path_factory.mktemp("gen") / "generator.pt"
    return export_generator("aei_net", gen, path, meta)


def _swapper(generator_file: Path, **settings) -> FaceSwapper:
    cfg = SwapConfig.model_validate({"super_resolution": "off", **settings})
    return FaceSwapper(load_swap_model(str(generator_file), None), cfg, ModelStore(MODELS))


@pytest.fixture(scope="module")
def swapper(generator_file) -> FaceSwapper:
    return _swapper(generator_file, video=LOSSLESS.model_dump())


def write_test_video(path: Path) -> list[np.ndarray]:
    """:data:`FRAMES` frames (320 × 240) of a real face drifting and zooming, the frames of
    :data:`NO_FACE_FRAMES` without a face, lossless FFV1 with an AAC track."""
    face, empty = read_image(TARGET, "target"), read_image(NO_FACE, "no-face")
    return synthetic_face_video(path, face, empty, FRAMES, (320, 240), set(NO_FACE_FRAMES), FPS)


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _audio_packets(path: Path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as c:
        return [(p.pts, bytes(p)) for p in c.demux(audio=0) if p.dts is not None]


@pytest.mark.parametrize("method", ["alpha", "poisson"])
def test_frame_changes_only_inside_the_paste_mask(generator_file, method):
    swapper = _swapper(generator_file, paste={"method": method})
    frame = read_image(TARGET, "target")
    source = swapper.source_face(read_image(SOURCE, "source"))
    result = swapper.swap_frame(frame, source)
    assert result.detected == 1 and len(result.faces) == 1
    outside = result.alpha == 0
    assert outside.mean() > 0.5  # the face is a part of the frame
    assert np.array_equal(result.frame[outside], frame[outside])
    inside = result.alpha > 0.9
    diff = np.abs(result.frame.astype(int) - frame.astype(int))[inside].mean()
    assert diff > 10, diff


def test_video_keeps_frames_rate_and_audio(swapper, tmp_path):
    src, dst = tmp_path / "in.mkv", tmp_path / "out.mkv"
    frames = write_test_video(src)
    report = swap_media(swapper, SOURCE, src, dst, progress=False)
    info_in, info_out = probe(src), probe(dst)
    out = _decode(dst)
    assert len(out) == report.frames == FRAMES and info_out.fps == info_in.fps == FPS
    assert info_out.audio_codec == "aac" and _audio_packets(dst) == _audio_packets(src)
    assert report.frames_without_face == len(NO_FACE_FRAMES)
    assert report.frames_swapped == FRAMES - len(NO_FACE_FRAMES) == report.faces_swapped
    for i, (a, b) in enumerate(zip(frames, out, strict=True)):
        if i in NO_FACE_FRAMES:
            assert np.array_equal(a, b), f"frame {i} without a face changed"
        else:
            assert (a != b).any(-1).mean() > 0.02, f"frame {i}: the face did not change"
            assert np.array_equal(a[:, :20], b[:, :20])  # the image edge is far from the face
    assert report.stability is not None and math.isfinite(report.stability)
    assert report.motion_in > 0 and report.motion_out > 0 and report.frames_per_s > 0


def _jitter(points: list[np.ndarray]) -> float:
    return float(np.mean([np.abs(b - a).mean() for a, b in itertools.pairwise(points)]))


def test_smoothing_reduces_jitter_and_restarts_on_a_jump():
    rng = np.random.default_rng(0)
    base = np.array([[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]], np.float64)
    box = np.array([[20, 20, 100, 110]], np.float32)
    raw = [base + rng.normal(0, 1.0, base.shape) for _ in range(40)]
    smoother = LandmarkSmoother(0.6, 0.25, 0.3)
    smooth = [smoother.update(box, p[None])[0][1] for p in raw]
    assert _jitter(smooth) < 0.6 * _jitter(raw)
    jumped = smoother.update(box, (base + 30)[None])[0][1]  # a cut: 0.75 eye distances
    assert np.allclose(jumped, base + 30)
    ids = [t for t, _ in smoother.update(np.array([[300, 300, 380, 390]], np.float32), base[None])]
    assert ids != [0]  # a face elsewhere starts a new track


def _faces_changed(before: np.ndarray, after: np.ndarray, boxes: np.ndarray) -> list[float]:
    out = []
    for x1, y1, x2, y2 in boxes:
        cx, cy, r = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 4
        sl = np.s_[int(cy - r) : int(cy + r), int(cx - r) : int(cx + r)]
        out.append(float(np.abs(before[sl].astype(int) - after[sl].astype(int)).mean()))
    return out


def _params(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"paths": {"models_dir": str(MODELS)}}))
    return path


def test_cli_swaps_every_face_of_a_group_photo(generator_file, tmp_path):
    out = tmp_path / "all.png"
    args = ["swap", "--source", str(SOURCE), "--target", str(MULTI), "--output", str(out)]
    args += ["--model", str(generator_file), "--faces", "all", "-p", str(_params(tmp_path))]
    result = CliRunner().invoke(app, [*args, "--set", "swap.super_resolution=off"])
    assert result.exit_code == 0, result.output
    before, after = read_image(MULTI, "t"), read_image(out, "o")
    swapper = _swapper(generator_file, faces="all")
    det = swapper.detector.detect(before)
    chosen = swapper.select(before, det, None)
    assert len(chosen) >= 2 and f"{len(chosen)} face(s) swapped" in result.output
    assert min(_faces_changed(before, after, det.boxes[chosen])) > 1


def test_reference_chooses_the_matching_face(generator_file, tmp_path):
    image = read_image(MULTI, "t")
    swapper = _swapper(generator_file, faces="reference")
    det = swapper.detector.detect(image)
    x1, y1, x2, y2 = det.boxes[1].astype(int)
    pad = (x2 - x1) // 2
    ref = image[max(y1 - pad, 0) : y2 + pad, max(x1 - pad, 0) : x2 + pad]
    cv2.imwrite(str(tmp_path / "ref.png"), ref[..., ::-1])
    swap_media(swapper, SOURCE, MULTI, tmp_path / "out.png", tmp_path / "ref.png", False)
    changed = _faces_changed(image, read_image(tmp_path / "out.png", "o"), det.boxes[:2])
    assert changed[1] > 1 and changed[0] == 0  # the other face is exactly as it was


def test_restoration_model_changes_only_the_face(generator_file, tmp_path):
    from infra.stand_ins import overlay_models_dir

    models = overlay_models_dir(MODELS, tmp_path / "models", ["gfpgan_1.4"])
    cfg = SwapConfig()  # super_resolution: auto finds the registered model
    swapper = FaceSwapper(load_swap_model(str(generator_file), None), cfg, ModelStore(models))
    assert swapper.restorer is not None and swapper.restorer.name == "gfpgan_1.4"
    frame = read_image(TARGET, "target")
    result = swapper.swap_frame(frame, swapper.source_face(read_image(SOURCE, "s")))
    plain = _swapper(generator_file).swap_frame(frame, swapper.source_face(read_image(SOURCE, "s")))
    assert not np.array_equal(result.frame, plain.frame)
    assert np.array_equal(result.frame[:, :20], frame[:, :20])


def test_errors_users_meet(generator_file, swapper, tmp_path):
    with pytest.raises(NoSourceFaceError, match="no face found in the source"):
        swap_media(swapper, NO_FACE, TARGET, tmp_path / "x.png", progress=False)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(VideoError, match="cannot read video"):
        swap_media(swapper, SOURCE, bad, tmp_path / "x.mp4", progress=False)
    codec = _swapper(generator_file, video={"codec": "no_such_codec"})
    write_test_video(tmp_path / "in.mkv")
    with pytest.raises(VideoError, match="no_such_codec"):
        swap_media(codec, SOURCE, tmp_path / "in.mkv", tmp_path / "x.mkv", progress=False)
    args = ["swap", "--source", str(NO_FACE), "--target", str(TARGET), "--output"]
    args += [str(tmp_path / "y.png"), "--model", str(generator_file), "-p", str(_params(tmp_path))]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "error: no face found in the source image" in result.output
