"""Frame sampling: which frames of a video to take, decoding them in one pass, and a JPEG cache.

* ``sample_indices(frame_count, n=8)``: ``n`` frames uniform over the video (the middle frame of
  each of ``n`` equal segments), or ``fps=R``: one frame every ``video_fps / R`` frames (optionally
  capped by ``max_frames``, spread uniformly over the ones the rate gives).
* ``extract_frames(video, indices)``: one sequential decode pass (OpenCV ``grab()`` on every frame,
  ``retrieve()`` only on wanted ones; no seeking, which is slow and inexact on long-GOP videos).
  Returns BGR ``uint8`` arrays (OpenCV's order), one per requested index, in the order asked.
* ``write_frames(frames, indices, out_dir)``: JPEGs ``<out_dir>/<index:05d>.jpg``, written atomically.
* ``cached_frames(video, indices, out_dir)``: the JPEG bytes of those frames, from the cache when it
  holds them for this very video file (``frames.json`` records its size and mtime), else decoded
  once and written. Reading the bytes back from the cache makes reruns byte-identical.

Used by the implicit preference stage (frames sent to a vision model); general enough for trainer
exports (e.g. 8 frames per video as JPEG files).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # set before cv2 opens a video: no FFmpeg chatter on stderr
import cv2  # noqa: E402 - after the log level above

from timewarp.core.errors import ItemError  # noqa: E402
from timewarp.core.store import atomic_path, read_json, write_json  # noqa: E402

DEFAULT_QUALITY = 90
MANIFEST = "frames.json"


def sample_indices(frame_count: int, n: Optional[int] = None, fps: Optional[float] = None,
                   video_fps: Optional[float] = None, max_frames: Optional[int] = None) -> list[int]:
    """Sorted distinct frame indices in ``[0, frame_count)``.

    Exactly one of ``n`` (uniform: the middle frame of each of n equal segments; all frames if the
    video has fewer than n) or ``fps`` (a frame every ``video_fps / fps`` frames, starting at 0;
    ``video_fps`` required; at most ``max_frames`` of them, taken uniformly) must be given.
    """
    frame_count = int(frame_count)
    if frame_count <= 0:
        return []
    if (n is None) == (fps is None):
        raise ValueError("give exactly one of n (frames per video) or fps (frames per second)")
    if n is not None:
        n = int(n)
        if n <= 0:
            raise ValueError(f"n must be >= 1, got {n}")
        if n >= frame_count:
            return list(range(frame_count))
        return [min(frame_count - 1, int((2 * k + 1) * frame_count // (2 * n))) for k in range(n)]
    if not fps or fps <= 0 or not math.isfinite(fps):
        raise ValueError(f"fps must be > 0, got {fps}")
    if not video_fps or video_fps <= 0:
        raise ValueError("sampling by fps needs the video's frame rate")
    step = float(video_fps) / float(fps)
    idx: list[int] = []
    k = 0
    while True:
        i = int(math.floor(k * step + 1e-9))
        if i >= frame_count:
            break
        if not idx or i != idx[-1]:
            idx.append(i)
        k += 1
    if max_frames and len(idx) > max_frames:
        idx = [idx[j] for j in sample_indices(len(idx), n=int(max_frames))]
    return idx


def extract_frames(video: Path, indices: Sequence[int]) -> list[np.ndarray]:
    """The frames at ``indices`` (any order, repeats allowed) as BGR arrays, in one sequential pass.

    Raises ``ItemError`` if the video does not open or ends before the last wanted frame.
    """
    video = Path(video)
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return []
    if wanted[0] < 0:
        raise ValueError(f"negative frame index {wanted[0]}")
    if not video.is_file():
        raise ItemError("video missing", str(video))
    cap = cv2.VideoCapture(str(video))
    got: dict[int, np.ndarray] = {}
    try:
        if not cap.isOpened():
            raise ItemError("video does not open", str(video))
        pos = 0
        todo = iter(wanted)
        nxt = next(todo)
        while True:
            if not cap.grab():
                break
            if pos == nxt:
                ok, img = cap.retrieve()
                if not ok or img is None:
                    raise ItemError("frame does not decode", f"{video}: frame {pos}")
                got[pos] = img
                nxt = next(todo, None)
                if nxt is None:
                    break
            pos += 1
    finally:
        cap.release()
    missing = [i for i in wanted if i not in got]
    if missing:
        raise ItemError("video shorter than expected",
                        f"{video}: {len(missing)} wanted frame(s) from {missing[0]} are past its end")
    return [got[int(i)] for i in indices]


def encode_jpeg(frame: np.ndarray, quality: int = DEFAULT_QUALITY) -> bytes:
    """JPEG bytes of a BGR frame (deterministic for the same frame, quality and OpenCV build)."""
    ok, buf = cv2.imencode(".jpg", frame, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    """A BGR frame from JPEG (or PNG) bytes."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("image does not decode")
    return img


def resize_max_side(frame: np.ndarray, max_side: Optional[int]) -> np.ndarray:
    """The frame scaled down (area interpolation) so its longer side is at most ``max_side``."""
    if not max_side:
        return frame
    h, w = frame.shape[:2]
    if max(h, w) <= max_side:
        return frame
    scale = max_side / max(h, w)
    return cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def frame_name(index: int) -> str:
    return f"{int(index):05d}.jpg"


def write_frames(frames: Sequence[np.ndarray], indices: Sequence[int], out_dir: Path,
                 quality: int = DEFAULT_QUALITY) -> list[Path]:
    """Write each frame as ``<out_dir>/<index:05d>.jpg`` (atomic); return the paths, in order."""
    if len(frames) != len(indices):
        raise ValueError(f"{len(frames)} frames but {len(indices)} indices")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for frame, index in zip(frames, indices):
        path = out_dir / frame_name(index)
        with atomic_path(path) as tmp:
            tmp.write_bytes(encode_jpeg(frame, quality))
        paths.append(path)
    return paths


def video_stamp(video: Path) -> dict:
    """What says a video file changed since frames were cut from it: its size and mtime."""
    st = Path(video).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cached_frames(video: Path, indices: Sequence[int], out_dir: Path, quality: int = DEFAULT_QUALITY,
                  refresh: bool = False) -> list[bytes]:
    """JPEG bytes of the frames at ``indices`` of ``video``, cached as files in ``out_dir``.

    The cache is used when its manifest names this video file (same size and mtime) and quality and
    every wanted file exists; otherwise (or with ``refresh``) the frames are decoded in one pass and
    written. The bytes returned are always the ones on disk, so a rerun sends identical images.
    """
    video = Path(video)
    out_dir = Path(out_dir)
    if not video.is_file():
        raise ItemError("video missing", str(video))
    stamp = {**video_stamp(video), "quality": int(quality)}
    manifest_path = out_dir / MANIFEST
    wanted = sorted(set(int(i) for i in indices))
    known: set = set()
    if not refresh:
        try:
            manifest = read_json(manifest_path)
        except (OSError, ValueError):
            manifest = None
        if isinstance(manifest, dict) and manifest.get("stamp") == stamp:
            known = {int(i) for i in manifest.get("indices", []) if (out_dir / frame_name(int(i))).is_file()}
    todo = [i for i in wanted if i not in known]
    if todo:
        write_frames(extract_frames(video, todo), todo, out_dir, quality)
        write_json(manifest_path, {"video": video.name, "stamp": stamp, "indices": sorted(known | set(todo))})
    return [(out_dir / frame_name(int(i))).read_bytes() for i in indices]
