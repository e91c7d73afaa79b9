"""The video engine: one libx264 encode per video, everything else by stream copy.

The normal video is encoded once with ``-bf 0`` (no B-frames) and a keyframe forced at the first
frame of every clip. A clip (or a shuffled sequence of clips) is then a concat-demuxer stream copy
with ``inpoint``/``outpoint`` on those keyframes: frame-identical to the normal video's frames and
~0.1 s per output. Frames, not seconds, are the unit: frame k is shown at k/fps.

The ffmpeg binary is the one the ``imageio-ffmpeg`` wheel ships (no system ffmpeg needed).
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence

from timewarp.errors import DiskFullError, ItemError, UsageError
from timewarp.store import atomic_path, disk_full_message
from timewarp.timestamps import parse_rate

# OpenCV's bundled FFmpeg would print libav errors ("moov atom not found") for every bad file;
# we report those ourselves as rejects, one line each.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

FFMPEG_TIMEOUT = 1800  # seconds for one ffmpeg call; a stuck decode must not hold a night's run


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of a working ffmpeg binary (``TIMEWARP_FFMPEG`` overrides the imageio-ffmpeg one)."""
    exe = os.environ.get("TIMEWARP_FFMPEG")
    if not exe:
        try:
            import imageio_ffmpeg
            exe = imageio_ffmpeg.get_ffmpeg_exe()
        except Exception as exc:  # noqa: BLE001
            raise UsageError(f"no ffmpeg binary: install imageio-ffmpeg (pip install -r requirements.txt): {exc}")
    try:
        res = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"ffmpeg binary {exe} does not run: {exc}")
    if res.returncode != 0:
        raise UsageError(f"ffmpeg binary {exe} does not run (exit {res.returncode})")
    return exe


def _run_ffmpeg(args: Sequence[str], what: str, timeout: int = FFMPEG_TIMEOUT) -> subprocess.CompletedProcess:
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", *map(str, args)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ItemError(f"{what}: ffmpeg timed out", f"after {timeout}s")
    if res.returncode != 0:
        if "No space left on device" in res.stderr:
            raise DiskFullError(disk_full_message(args[-1]))
        last = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        raise ItemError(f"{what}: ffmpeg failed", last[-1][:300] if last else f"exit {res.returncode}")
    return res


@dataclass(frozen=True)
class VideoInfo:
    fps: Fraction
    frame_count: int
    width: int
    height: int

    @property
    def duration(self) -> float:
        return float(self.frame_count / self.fps)


def probe(path: Path) -> VideoInfo:
    """Stream facts of a video file, read once with OpenCV. ItemError if it has no decodable video."""
    import cv2

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise ItemError("empty or missing video file", str(path))
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ItemError("video does not open", str(path))
        fps = cap.get(cv2.CAP_PROP_FPS)
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if not fps or not math.isfinite(fps) or fps <= 0 or width <= 0 or height <= 0:
            raise ItemError("no video stream", str(path))
        if frames <= 0:
            raise ItemError("video has no frames", str(path))
        ok, _ = cap.read()
        if not ok:
            raise ItemError("video does not decode", f"{path}: first frame unreadable")
    finally:
        cap.release()
    return VideoInfo(parse_rate(fps), frames, width, height)


def output_size(width: int, height: int, max_height: Optional[int]) -> tuple[int, int]:
    """Size of the normal video: scaled to max_height if taller, always even (yuv420p)."""
    if max_height and height > max_height:
        w = int(round(width * max_height / height / 2)) * 2
        return max(2, w), max_height - max_height % 2
    return width - width % 2, height - height % 2


@dataclass(frozen=True)
class EncodeSettings:
    preset: str = "veryfast"
    crf: int = 23
    max_height: Optional[int] = None
    keep_audio: bool = False
    # x264's output depends on its thread count, so it is fixed (not derived from --workers or the
    # machine): the same input gives the same bytes on any machine with any --workers. One thread per
    # encode, and one encode per core (--workers = cores): parallelism across videos scales to any
    # number of cores (and nodes) and costs x264 nothing, where frame threads lose a little quality.
    threads: int = 1


def encode_normal(src: Path, dst: Path, fps: Fraction, n_frames: int, keyframes: Sequence[int],
                  width: int, height: int, settings: EncodeSettings = EncodeSettings()) -> int:
    """Encode frames [0, n_frames) of ``src`` once, keyframes forced at ``keyframes``; return frames written.

    Decoded frame k is given pts k/fps whatever the source's timestamps say (FineVideo's times
    count decoded frames), so frame k of the output is frame k of the source.
    """
    out_w, out_h = output_size(width, height, settings.max_height)
    filters = [f"setpts=N*{fps.denominator}/{fps.numerator}/TB"]
    if (out_w, out_h) != (width, height):
        if out_h != height - height % 2 or out_w != width - width % 2:
            filters.append(f"scale={out_w}:{out_h}")
        else:
            filters.append(f"crop={out_w}:{out_h}:0:0")
    # half a frame before each keyframe's time: the first frame at or after it is exactly that frame
    kf = ",".join(f"{float((Fraction(k) - Fraction(1, 2)) / fps):.6f}" for k in sorted(set(keyframes)) if k > 0)
    args = ["-i", src, "-map", "0:v:0"]
    if settings.keep_audio:
        args += ["-map", "0:a:0?", "-c:a", "aac", "-b:a", "128k", "-t", f"{float(n_frames / fps):.6f}"]
    else:
        args += ["-an"]
    args += ["-sn", "-dn", "-map_metadata", "-1", "-vf", ",".join(filters),
             "-frames:v", n_frames, "-r", f"{fps.numerator}/{fps.denominator}", "-fps_mode", "cfr",
             "-c:v", "libx264", "-preset", settings.preset, "-crf", settings.crf, "-bf", 0,
             "-pix_fmt", "yuv420p", "-threads", settings.threads]
    if kf:
        args += ["-force_key_frames", kf]
    with atomic_path(dst) as tmp:
        res = _run_ffmpeg([*args, "-progress", "pipe:1", "-nostats", tmp], "encode")
        produced = _progress_frames(res.stdout)
        if produced < n_frames:
            raise ItemError("source shorter than its annotation",
                            f"decoded {produced} frames, clips need {n_frames}")
    return produced


def _progress_frames(progress: str) -> int:
    frames = 0
    for line in progress.splitlines():
        if line.startswith("frame="):
            with contextlib.suppress(ValueError):
                frames = int(line.split("=", 1)[1])
    return frames


def _ceil_us(t: Fraction) -> str:
    return f"{math.ceil(t * 1_000_000) / 1_000_000:.6f}"


def _floor_us(t: Fraction) -> str:
    return f"{math.floor(t * 1_000_000) / 1_000_000:.6f}"


def concat_list(src: Path, fps: Fraction, spans: Sequence[tuple[int, int]]) -> str:
    """A concat-demuxer script: frames [a, b) of ``src`` for each span, in the given order.

    inpoint is rounded up to the microsecond so the demuxer's seek lands on the span's own
    keyframe, not the one before; outpoint is rounded down so frame b is excluded.
    """
    quoted = "'" + str(Path(src).resolve()).replace("'", "'\\''") + "'"
    lines = ["ffconcat version 1.0"]
    for a, b in spans:
        if not 0 <= a < b:
            raise ValueError(f"bad frame span [{a}, {b})")
        lines += [f"file {quoted}", f"inpoint {_ceil_us(Fraction(a) / fps)}", f"outpoint {_floor_us(Fraction(b) / fps)}"]
    return "\n".join(lines) + "\n"


def concat_copy(src: Path, fps: Fraction, jobs: Sequence[tuple[Path, Sequence[tuple[int, int]]]],
                keep_audio: bool = False) -> None:
    """Write each ``(dst, spans)`` job as a stream copy of those frame spans of ``src``; one ffmpeg call.

    ``src`` must come from ``encode_normal`` (a keyframe at every span start, no B-frames).
    """
    if not jobs:
        return
    with contextlib.ExitStack() as stack:
        args: list = []
        lists = []
        for dst, spans in jobs:
            fd, list_path = tempfile.mkstemp(prefix=".concat-", suffix=".txt", dir=Path(dst).parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(concat_list(src, fps, spans))
            stack.callback(os.unlink, list_path)
            lists.append(list_path)
            args += ["-f", "concat", "-safe", "0", "-i", list_path]
        for i, (dst, _spans) in enumerate(jobs):
            tmp = stack.enter_context(atomic_path(Path(dst)))
            args += ["-map", f"{i}:v:0"] + (["-map", f"{i}:a:0?"] if keep_audio else [])
            args += ["-c", "copy", "-map_metadata", "-1", "-avoid_negative_ts", "make_zero", tmp]
        _run_ffmpeg(args, "stream copy")


def decode_errors(path: Path, timeout: int = FFMPEG_TIMEOUT) -> Optional[str]:
    """Fully decode the video stream; None if clean, else the first error ffmpeg reports."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0",
           "-f", "null", "-"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"decode timed out after {timeout}s"
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    if res.returncode != 0 or lines:
        return (lines[0] if lines else f"ffmpeg exit {res.returncode}")[:300]
    return None


def count_frames(path: Path) -> int:
    """Frames actually decoded from the file (OpenCV, sequential)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    n = 0
    try:
        while cap.grab():
            n += 1
    finally:
        cap.release()
    return n
