"""``fsp swap`` on an image or a video: the source face into the target, with counts.

:func:`swap_media` reads the source (and reference) image, builds a
:class:`~pipelines.face_swap.FaceSwapper` around the generator, and swaps either one image
or every frame of a video (:func:`pipelines.video_io.transcode`: frame rate, frame count
and audio kept). Frames without a face pass through unchanged and are counted. For a video
it measures temporal stability (:class:`StabilityMeter`) and shows a progress bar with
frames/s.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pipelines.face_swap import FaceSwapper, FrameResult, LandmarkSmoother
from pipelines.video_io import VideoError, probe, transcode
from preprocessing.decode import load_image
from preprocessing.facemesh import FaceMesh

log = logging.getLogger(__name__)

#: Suffixes read as images; everything else is opened as a video.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
#: Largest image read, pixels (as prepare's ``max_image_pixels`` default guards).
MAX_PIXELS = 80_000_000


@dataclass
class SwapReport:
    """What a swap did.

    Attributes
    ----------
    output : the written file.
    frames : frames read (1 for an image) = frames written.
    frames_swapped : frames with at least one swapped face.
    frames_without_face : frames passed through unchanged (no face, or none chosen).
    faces_swapped : swapped faces over all frames.
    fps : frame rate of the video (None for an image).
    seconds : wall time of the swap (models loaded), seconds.
    frames_per_s : ``frames / seconds``.
    motion_in, motion_out : mean frame-to-frame FaceMesh landmark motion of the main face
        in the input and in the output, in eye distances per frame (None for an image or
        fewer than two consecutive face frames).
    stability : ``motion_out / motion_in`` (1 = the output face moves as the input face;
        above 1 the swap adds jitter).
    restoration : the restoration model used, or None.
    """

    output: str
    frames: int = 0
    frames_swapped: int = 0
    frames_without_face: int = 0
    faces_swapped: int = 0
    fps: float | None = None
    seconds: float = 0.0
    frames_per_s: float = 0.0
    motion_in: float | None = None
    motion_out: float | None = None
    stability: float | None = None
    restoration: str | None = None
    counts: dict = field(default_factory=dict)

    def add(self, result: FrameResult) -> None:
        """Count one frame's result."""
        self.frames += 1
        self.faces_swapped += len(result.faces)
        if result.faces:
            self.frames_swapped += 1
        else:
            self.frames_without_face += 1

    def as_dict(self) -> dict:
        return asdict(self)


class StabilityMeter:
    """Temporal stability of a swapped video: mean frame-to-frame motion of the main face's
    468 FaceMesh landmarks in the input and in the output, in eye distances.

    The main face is the largest swapped face; motion between frames ``t−1`` and ``t``
    counts when both hold it (same track). Output landmarks are measured by FaceMesh on the
    output frame in the input face's box, so a swap that jitters while the input face is
    still moves them and raises ``motion_out / motion_in`` above 1.

    Parameters
    ----------
    facemesh : the FaceMesh model (shared with the swapper).
    """

    def __init__(self, facemesh: FaceMesh):
        self.facemesh = facemesh
        self.prev: tuple[int, np.ndarray, np.ndarray] | None = None
        self.moves_in: list[float] = []
        self.moves_out: list[float] = []

    def update(self, result: FrameResult) -> None:
        """Measure one frame (after :meth:`FaceSwapper.swap_frame`)."""
        if not result.faces:
            self.prev = None
            return
        face = result.faces[0]
        lm_in = face.landmarks468[:, :2]
        lm_out = self.facemesh.predict(result.frame, face.box)[:, :2]
        if self.prev is not None and self.prev[0] == face.track:
            eye = max(float(np.hypot(*(face.landmarks5[1] - face.landmarks5[0]))), 1.0)
            self.moves_in.append(float(np.linalg.norm(lm_in - self.prev[1], axis=1).mean()) / eye)
            self.moves_out.append(float(np.linalg.norm(lm_out - self.prev[2], axis=1).mean()) / eye)
        self.prev = (face.track, lm_in, lm_out)

    def summary(self) -> tuple[float | None, float | None, float | None]:
        """``(motion_in, motion_out, motion_out / motion_in)``; Nones without measurements."""
        if not self.moves_in:
            return None, None, None
        m_in, m_out = float(np.mean(self.moves_in)), float(np.mean(self.moves_out))
        return m_in, m_out, (m_out / m_in if m_in > 0 else None)


def read_image(path: Path, what: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file; FileNotFoundError or ValueError naming
    ``what`` and the cause when it is missing or does not decode."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} image {path} not found")
    decoded = load_image(Path(path), MAX_PIXELS)
    if decoded.image is None:
        raise ValueError(f"{what} image {path} cannot be read: {decoded.reason} ({decoded.detail})")
    return decoded.image


def is_image(path: Path) -> bool:
    """Whether ``path`` is read as an image (by suffix) rather than a video."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def swap_media(
    swapper: FaceSwapper,
    source: Path,
    target: Path,
    output: Path,
    reference: Path | None = None,
    progress: bool = True,
) -> SwapReport:
    """Swap the largest face of ``source`` into ``target`` and write ``output``.

    Parameters
    ----------
    swapper : the frame swapper (generator, detector, FaceMesh, identity encoder).
    source : image holding the source face.
    target : image (by suffix, :data:`IMAGE_SUFFIXES`) or video.
    output : file to write; an image keeps the target's size, a video its frame count,
        frame rate and audio.
    reference : image of the target face to swap (``swap.faces = reference``).
    progress : show a progress bar over video frames.

    Returns
    -------
    :class:`SwapReport`.

    Raises
    ------
    FileNotFoundError : source, target or reference is missing.
    NoSourceFaceError : no face in the source (or reference) image.
    ValueError : an image does not decode; :class:`VideoError` for an unreadable video or
        an unsupported codec.
    """
    src = swapper.source_face(read_image(source, "source"), "source")
    ref = None
    if swapper.cfg.faces == "reference":
        if reference is None:
            raise ValueError("swap.faces=reference needs --reference IMAGE")
        ref = swapper.reference_embedding(read_image(reference, "reference"))
    if not Path(target).exists():
        raise FileNotFoundError(f"target {target} not found")
    report = SwapReport(str(output))
    report.restoration = swapper.restorer.name if swapper.restorer is not None else None
    started = time.perf_counter()
    if is_image(target):
        result = swapper.swap_frame(read_image(target, "target"), src, ref)
        report.add(result)
        output.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(output), np.ascontiguousarray(result.frame[..., ::-1])):
            raise ValueError(f"cannot write image {output} (unknown suffix?)")
    else:
        _swap_video(swapper, src, ref, Path(target), Path(output), report, progress)
    report.seconds = time.perf_counter() - started
    report.frames_per_s = report.frames / report.seconds if report.seconds > 0 else 0.0
    return report


def _swap_video(swapper, src, ref, target: Path, output: Path, report: SwapReport, progress):
    """Every frame of ``target`` through the swapper into ``output`` (see
    :func:`swap_media`); fills ``report`` (counts, fps, stability)."""
    info = probe(target)
    report.fps = float(info.fps)
    t = swapper.cfg.temporal
    smoother = LandmarkSmoother(t.smoothing, t.reset_motion, t.track_iou)
    meter = StabilityMeter(swapper.facemesh)
    bar = tqdm(total=info.frames or None, unit="frame", disable=not progress, desc="swap")

    def process(frame: np.ndarray, index: int) -> np.ndarray:
        result = swapper.swap_frame(frame, src, ref, smoother)
        report.add(result)
        meter.update(result)
        bar.update(1)
        return result.frame

    try:
        written = transcode(target, output, process, swapper.cfg.video)
    finally:
        bar.close()
    if written != report.frames:  # pragma: no cover - transcode calls process per frame
        raise VideoError(f"{written} frames written for {report.frames} read")
    report.motion_in, report.motion_out, report.stability = meter.summary()
