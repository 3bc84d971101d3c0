"""``fsp swap`` on a synthetic video of a real face: frames/s and temporal stability, with
the landmark smoothing on and off, side by side in one run.

    python -m pipelines.benchmarks.swap_video [--model outputs/train/generator.pt]
        [--frames 125] [--width 640] [--height 360]

The video is built from a ../shared/faces photo (:func:`synthetic_face_video`): the face
drifts and zooms slowly across a larger canvas, one stretch of frames shows no face, and a
440 Hz AAC track rides along. Each setting swaps the same video with the trained generator
and prints frames, fps, frames without a face, frames/s and the stability figure (output /
input landmark motion).
"""

from __future__ import annotations

import argparse
import math
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from infra.config import load_stage
from infra.models import ModelStore
from pipelines.face_swap import FaceSwapper
from pipelines.swap_config import SwapConfig
from pipelines.swap_media import read_image, swap_media
from training.swap_model import load_swap_model

#: Default face and no-face pictures of the synthetic video (under ../shared/faces).
FACE = "lfw_subset_krasserm/George_W_Bush/George_W_Bush_0001.jpg"
NO_FACE = "no_face/inspireface_view.jpg"


def synthetic_face_video(
    path: Path,
    face: np.ndarray,
    empty: np.ndarray,
    frames: int,
    size: tuple[int, int],
    no_face: set[int],
    fps: Fraction = Fraction(25),
    codec: str = "ffv1",
    pix_fmt: str = "bgr0",
    motion: float = 1.0,
) -> list[np.ndarray]:
    """Write a video of a real face moving over a canvas, with an AAC audio track.

    Parameters
    ----------
    path : output file (``.mkv`` for the lossless default codec).
    face : (h, w, 3) uint8 RGB photo with one face; ``empty`` the same without a face.
    frames : frame count.
    size : ``(width, height)`` of the frames, pixels.
    no_face : frame indices that show ``empty`` (resized to the frame) instead.
    fps : frame rate.
    codec, pix_fmt : video encoder and pixel format (default lossless FFV1 in RGB).
    motion : scale of the face's drift (pixels per frame ≈ ``motion``) and zoom (±3 %).

    Returns
    -------
    The frames written, (H, W, 3) uint8 RGB each (decoded back identically with FFV1).
    """
    W, H = size
    h, w = face.shape[:2]
    scale = 0.6 * min(W / w, H / h)
    blank = cv2.resize(empty, (W, H))
    out_frames = []
    for i in range(frames):
        if i in no_face:
            out_frames.append(blank)
            continue
        s = scale * (1.0 + 0.03 * math.sin(i / 7))
        cx = W / 2 + motion * 12 * math.sin(i / 15)
        cy = H / 2 + motion * 6 * math.cos(i / 11)
        M = np.array([[s, 0, cx - s * w / 2], [0, s, cy - s * h / 2]], np.float64)
        out_frames.append(cv2.warpAffine(face, M, (W, H), borderMode=cv2.BORDER_REPLICATE))
    container = av.open(str(path), "w")
    video = container.add_stream(codec, rate=fps)
    video.width, video.height, video.pix_fmt = W, H, pix_fmt
    audio = container.add_stream("aac", rate=16000)
    for i, f in enumerate(out_frames):
        frame = av.VideoFrame.from_ndarray(f, format="rgb24")
        frame.pts = i
        container.mux(video.encode(frame))
    container.mux(video.encode(None))
    t, samples = 0, int(frames / fps * 16000)
    while t < samples:
        wave = np.sin(2 * np.pi * 440 * np.arange(t, t + 1024) / 16000).astype(np.float32)
        chunk = av.AudioFrame.from_ndarray(wave[None], format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = 16000, t
        container.mux(audio.encode(chunk))
        t += 1024
    container.mux(audio.encode(None))
    container.close()
    return out_frames


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", default=None, help="default: the train stage's generator.pt")
    ap.add_argument("--frames", type=int, default=125)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--keep", type=Path, default=None, help="folder to keep the videos in")
    args = ap.parse_args(argv)
    cfg, paths = load_stage(SwapConfig, "swap", Path(args.params))
    faces = paths.data_root
    model = load_swap_model(args.model or str(paths.stage_dir("train") / "generator.pt"), paths)
    store = ModelStore(paths.models_dir)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        src = folder / "input.mkv"
        gap = set(range(args.frames // 2, args.frames // 2 + 10))
        synthetic_face_video(
            src,
            read_image(faces / FACE, "face"),
            read_image(faces / NO_FACE, "no-face"),
            args.frames,
            (args.width, args.height),
            gap,
        )
        source = faces / "lfw_subset_krasserm/Colin_Powell/Colin_Powell_0001.jpg"
        print(f"{args.frames} frames {args.width}x{args.height}, {len(gap)} without a face")
        for smoothing in (cfg.temporal.smoothing, 0.0):
            run = cfg.model_copy(
                update={"temporal": cfg.temporal.model_copy(update={"smoothing": smoothing})}
            )
            swapper = FaceSwapper(model, run, store)
            out = folder / f"swapped-smoothing{smoothing:g}.mp4"
            r = swap_media(swapper, source, src, out, progress=False)
            print(
                f"smoothing {smoothing:g}: {r.frames} frames at {r.fps:g} fps, "
                f"{r.frames_without_face} without a face, {r.frames_per_s:.2f} frames/s, "
                f"stability {r.stability:.3f} (motion out {r.motion_out:.4f} / in "
                f"{r.motion_in:.4f} eye distances per frame), restoration {r.restoration}"
            )


if __name__ == "__main__":
    main()
