"""Video in, video out with PyAV: every frame processed once, audio copied untouched.

:func:`transcode` demuxes the input's first video stream and its first audio stream in one
pass: video frames are decoded to RGB, handed to a callback and encoded in order; audio
packets are remuxed as they are (no re-encoding). The output has the input's frame count
and average frame rate (constant rate: frame ``i`` at ``i / fps``) and the input's audio.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipelines.swap_config import VideoConfig


class VideoError(ValueError):
    """A video cannot be read or written (the message names the file and the cause)."""


@dataclass
class VideoInfo:
    """What the input video holds.

    Attributes
    ----------
    fps : average frame rate, frames per second (exact fraction).
    frames : frame count the container declares (0 when it does not say).
    width, height : frame size in pixels.
    codec : video codec name.
    audio_codec : audio codec name, None without audio.
    """

    fps: Fraction
    frames: int
    width: int
    height: int
    codec: str
    audio_codec: str | None


def _open(path: Path):
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise VideoError(f"cannot read video {path}: {e}") from None


def _streams(container, path: Path):
    if not container.streams.video:
        raise VideoError(f"{path} has no video stream")
    video = container.streams.video[0]
    if video.codec_context is None or not video.codec_context.codec:
        raise VideoError(f"{path}: its video codec is not supported by this FFmpeg build")
    audio = container.streams.audio[0] if container.streams.audio else None
    return video, audio


def probe(path: Path) -> VideoInfo:
    """The input's :class:`VideoInfo`. VideoError when it cannot be opened, has no video
    stream, or its codec is unsupported."""
    with _open(path) as c:
        video, audio = _streams(c, path)
        rate = video.average_rate or video.guessed_rate
        if not rate:
            raise VideoError(f"{path}: the video stream declares no frame rate")
        return VideoInfo(
            fps=Fraction(rate),
            frames=int(video.frames or 0),
            width=video.codec_context.width,
            height=video.codec_context.height,
            codec=video.codec_context.name,
            audio_codec=audio.codec_context.name if audio is not None else None,
        )


def check_encoder(cfg: VideoConfig) -> None:
    """VideoError when this FFmpeg build has no encoder ``cfg.codec``."""
    try:
        av.codec.Codec(cfg.codec, "w")
    except (av.FFmpegError, ValueError) as e:
        raise VideoError(f"video encoder {cfg.codec!r} is not available here ({e})") from None


def transcode(
    src: Path,
    dst: Path,
    process: Callable[[np.ndarray, int], np.ndarray],
    cfg: VideoConfig,
) -> int:
    """Decode ``src``, map every frame through ``process``, encode ``dst``.

    Parameters
    ----------
    src : input video (any container/codec FFmpeg decodes).
    dst : output video; the container follows its suffix (``.mp4``, ``.mkv``…).
    process : ``(frame (H, W, 3) uint8 RGB, index) -> (H, W, 3) uint8 RGB``.
    cfg : encoder settings (codec, pixel format, CRF).

    Returns
    -------
    The number of frames written (= frames decoded).

    Raises
    ------
    VideoError : the input cannot be opened or decoded, or the encoder or the output
        container refuses the stream (the partial output is removed).
    """
    check_encoder(cfg)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with _open(src) as inp:
        video, audio = _streams(inp, src)
        rate = Fraction(video.average_rate or video.guessed_rate)
        try:
            out = av.open(str(dst), "w")
        except (av.FFmpegError, OSError) as e:
            raise VideoError(f"cannot write {dst}: {e}") from None
        try:
            written = _copy(inp, out, video, audio, rate, process, cfg)
        except av.FFmpegError as e:
            out.close()
            dst.unlink(missing_ok=True)
            raise VideoError(f"{src} → {dst}: {e}") from None
        out.close()
    return written


def _copy(inp, out, video, audio, rate: Fraction, process, cfg: VideoConfig) -> int:
    """Demux ``inp`` once: re-encode ``video`` frames through ``process`` at ``rate`` (frame
    ``i`` at pts ``i``), remux ``audio`` packets unchanged; returns frames written."""
    vout = out.add_stream(cfg.codec, rate=rate)
    vout.width, vout.height = video.codec_context.width, video.codec_context.height
    vout.pix_fmt = cfg.pix_fmt
    if cfg.crf is not None and cfg.codec in ("libx264", "libx265"):
        vout.options = {"crf": str(cfg.crf)}
    aout = out.add_stream_from_template(audio) if audio is not None else None
    written = 0
    for packet in inp.demux(*[s for s in (video, audio) if s is not None]):
        if packet.stream.type == "audio":
            if packet.dts is not None:  # the demuxer's final flush packet carries nothing
                packet.stream = aout
                out.mux(packet)
            continue
        for frame in packet.decode():
            rgb = process(frame.to_ndarray(format="rgb24"), written)
            new = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            new.pts, new.time_base = written, 1 / rate
            out.mux(vout.encode(new))
            written += 1
    out.mux(vout.encode(None))
    return written
