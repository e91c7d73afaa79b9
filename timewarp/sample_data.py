"""A small FineVideo-shaped dataset, generated (no download): ``python -m timewarp.sample_data DIR``.

Each video is a sequence of scenes, each scene a distinct background colour and a shape drawn in the
colour farthest from it, as its caption says ("An orange circle ... on a blue background"); every frame
also carries its own frame number as a row of black/white blocks, so a test (or a curious user)
can read back from any decoded frame which source frame it shows (``read_frame_ids``).
The shard is written as ``DIR/data/train-00000-of-00001.parquet`` with the hub's columns
``mp4`` (bytes) and ``json`` (struct).
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from timewarp.sources.timestamps import format_timestamp
from timewarp.media.video import ffmpeg_exe

ID_BITS = 14
ID_COLS = 7
ID_ROWS = 2
ID_BAND = 0.4  # top fraction of the frame that holds the id blocks

COLORS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40),
    "purple": (140, 50, 170), "orange": (240, 140, 30), "cyan": (40, 200, 210), "pink": (240, 120, 180),
    "brown": (120, 80, 40), "gray": (128, 128, 128),
}
SHAPES = ("square", "circle", "bar", "cross")
ACTIONS = {
    "square": "{a} {color} square slides from the left edge to the right edge",
    "circle": "{a} {color} circle bounces up and down in the middle of the frame",
    "bar": "{a} {color} vertical bar sweeps across the frame",
    "cross": "{a} {color} cross grows from the centre until it fills the frame",
}


def article(word: str) -> str:
    """"An" before a vowel sound ("an orange circle"), else "A" (the colour names here have no silent h)."""
    return "An" if word[:1].lower() in "aeiou" else "A"


def contrast_color(background: str) -> str:
    """The named colour farthest from ``background`` (in RGB): the colour a scene's shape is drawn in."""
    bg = COLORS[background]
    return max(sorted(COLORS), key=lambda name: sum((a - b) ** 2 for a, b in zip(COLORS[name], bg)))


def _cell(width: int, height: int, bit: int) -> tuple[int, int, int, int]:
    band = int(height * ID_BAND)
    cw, ch = width // ID_COLS, band // ID_ROWS
    r, c = divmod(bit, ID_COLS)
    return c * cw, r * ch, cw, ch


def draw_frame(width: int, height: int, frame_id: int, background, shape: str, phase: float,
               foreground=None) -> np.ndarray:
    """One frame: the frame number as blocks in the top band, below it ``shape`` in ``foreground`` (RGB;
    default: the inverse of ``background``) on ``background``, at ``phase`` (0..1) of its movement."""
    img = np.empty((height, width, 3), np.uint8)
    img[:] = background
    band = int(height * ID_BAND)
    img[:band] = 0
    for bit in range(ID_BITS):
        x, y, cw, ch = _cell(width, height, bit)
        if (frame_id >> bit) & 1:
            img[y + ch // 6:y + ch - ch // 6, x + cw // 6:x + cw - cw // 6] = 255
    lo = band + 2
    span_h = max(4, height - lo - 2)
    size = max(4, min(width, span_h) // 3)
    cx = int(size + phase * (width - 2 * size))
    cy = lo + span_h // 2
    fg = tuple(255 - v for v in background) if foreground is None else foreground
    if shape == "square":
        img[cy - size // 2:cy + size // 2, cx - size // 2:cx + size // 2] = fg
    elif shape == "circle":
        yy, xx = np.ogrid[:height, :width]
        cy2 = int(lo + size / 2 + abs(np.sin(phase * np.pi * 2)) * max(1, span_h - size))
        img[((yy - cy2) ** 2 + (xx - width // 2) ** 2 <= (size // 2) ** 2) & (yy >= lo)] = fg
    elif shape == "bar":
        img[lo:, max(0, cx - size // 4):cx + size // 4] = fg
    else:
        s = max(2, int(size * (0.3 + phase)))
        img[max(lo, cy - s // 4):cy + s // 4, max(0, width // 2 - s):width // 2 + s] = fg
        img[max(lo, cy - s):cy + s, max(0, width // 2 - s // 4):width // 2 + s // 4] = fg
    return img


def frame_id(img: np.ndarray) -> int:
    """The frame number drawn into one (decoded, possibly re-encoded or resized) frame."""
    h, w = img.shape[:2]
    value = 0
    for bit in range(ID_BITS):
        x, y, cw, ch = _cell(w, h, bit)
        patch = img[y + ch // 3:y + ch - ch // 3, x + cw // 3:x + cw - cw // 3]
        if patch.size and patch.mean() > 127:
            value |= 1 << bit
    return value


def read_frame_ids(path: Path) -> list[int]:
    """The frame number drawn into each decoded frame of a video, in decode order."""
    cap = cv2.VideoCapture(str(path))
    ids = []
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                break
            ids.append(frame_id(img))
    finally:
        cap.release()
    return ids


@dataclass
class SceneSpec:
    frames: int
    color: str
    shape: str
    # activities as frame offsets inside the scene: (start, end) pairs; None = whole scene
    activities: Optional[list[tuple[int, int]]] = None
    shape_color: Optional[str] = None  # the shape's colour name; None: contrast_color(color)

    @property
    def foreground(self) -> str:
        return self.shape_color or contrast_color(self.color)


@dataclass
class VideoSpec:
    name: str
    scenes: list[SceneSpec]
    fps: str = "30000/1001"
    size: tuple[int, int] = (176, 144)
    bframes: int = 3
    audio_channels: int = 0
    extra: dict = field(default_factory=dict)


def render_video(spec: VideoSpec, path: Path, ffmpeg: Optional[str] = None) -> int:
    """Encode the spec's frames with libx264 (B-frames as in the wild); return the frame count."""
    exe = ffmpeg or ffmpeg_exe()
    w, h = spec.size
    total = sum(s.frames for s in spec.scenes)
    fps = Fraction(spec.fps)
    cmd = [exe, "-hide_banner", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
           "-r", spec.fps, "-i", "-"]
    if spec.audio_channels:
        layout = {1: "mono", 2: "stereo", 6: "5.1"}.get(spec.audio_channels, "stereo")
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000,aformat=channel_layouts={layout}",
                "-map", "0:v", "-map", "1:a", "-c:a", "aac", "-t", f"{float(total / fps):.3f}"]
    pix = "yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p"
    profile = [] if pix == "yuv420p" else ["-profile:v", "high444"]
    cmd += ["-c:v", "libx264", "-preset", "medium", "-bf", str(spec.bframes), "-g", "48", "-pix_fmt", pix,
            *profile, "-crf", "18", str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    frame_id = 0
    try:
        for scene in spec.scenes:
            bg = COLORS[scene.color]
            for i in range(scene.frames):
                proc.stdin.write(draw_frame(w, h, frame_id, bg, scene.shape, i / max(1, scene.frames - 1),
                                            COLORS[scene.foreground]).tobytes())
                frame_id += 1
        proc.stdin.close()
    except BrokenPipeError:
        pass
    err = proc.stderr.read().decode(errors="replace")
    if proc.wait() != 0:
        raise RuntimeError(f"ffmpeg failed rendering {spec.name}: {err.strip()[-300:]}")
    return total


def _ts(frame: int, fps: Fraction) -> str:
    """A frame boundary as FineVideo writes it: frame-quantised, then rounded to milliseconds."""
    return format_timestamp(float(Fraction(frame) / fps))


def metadata_for(spec: VideoSpec) -> dict:
    """FineVideo-shaped metadata whose scene activities match the rendered frames."""
    fps = Fraction(spec.fps)
    scenes = []
    start = 0
    for n, scene in enumerate(spec.scenes):
        acts = scene.activities if scene.activities is not None else [(0, scene.frames)]
        fg, bg = scene.foreground, scene.color
        activities = [{
            "description": ACTIONS[scene.shape].format(a=article(fg), color=fg)
            + f" on {article(bg).lower()} {bg} background."
            if k == 0 else f"The {fg} {scene.shape} stops and the frame holds still (part {k + 1}).",
            "timestamp": {"start_timestamp": _ts(start + a, fps), "end_timestamp": _ts(start + b, fps)},
        } for k, (a, b) in enumerate(acts)]
        scenes.append({
            "activities": activities,
            "audioVisualCorrelation": 0.5,
            "cast": [],
            "characterInteraction": [],
            "contextualRelevance": "",
            "dynamismScore": 0.5,
            "mood": {"description": "Calm", "keyMoments": []},
            "narrativeProgression": [],
            "props": [],
            "sceneId": n + 1,
            "thematicElements": "",
            "timestamps": {"start_timestamp": _ts(start, fps), "end_timestamp": _ts(start + scene.frames - 1, fps)},
            "title": f"The {fg} {scene.shape} on {bg}",
            "videoEditingDetails": [],
        })
        start += scene.frames
    meta = {
        "content_fine_category": "Synthetic Shapes",
        "content_metadata": {
            "characterList": [],
            "description": "Coloured shapes moving, one per scene.",
            "fps": float(fps),
            "qAndA": [],
            "scenes": scenes,
            "storylines": {"climax": {"description": "", "timestamp": "00:00:00.000"}, "description": "",
                           "scenes": list(range(1, len(scenes) + 1))},
            "title": f"Shapes video {spec.name}",
            "trimmingSuggestions": [],
        },
        "content_parent_category": "Education",
        "duration_seconds": int(start / fps),
        "original_json_filename": f"{spec.name}.json",
        "original_video_filename": f"{spec.name}.mp4",
        "resolution": f"{spec.size[0]}x{spec.size[1]}",
        "text_to_speech": "",
        "timecoded_text_to_speech": [],
        "youtube_title": f"Shapes {spec.name}",
    }
    meta.update(spec.extra)
    return meta


def random_spec(name: str, rng: random.Random, n_scenes: Optional[int] = None, fps: Optional[str] = None,
                size: Optional[tuple[int, int]] = None) -> VideoSpec:
    n_scenes = n_scenes or rng.randint(3, 5)
    colors = rng.sample(sorted(COLORS), n_scenes)
    scenes = []
    for c in colors:
        frames = rng.randint(36, 80)
        a = rng.randint(0, 8)
        b = frames - rng.randint(0, 8)
        scenes.append(SceneSpec(frames, c, rng.choice(SHAPES), [(a, b)]))
    return VideoSpec(name, scenes, fps=fps or rng.choice(["30000/1001", "24000/1001", "25", "30"]),
                     size=size or rng.choice([(176, 144), (320, 180), (256, 144)]),
                     bframes=rng.choice([0, 2, 3]), audio_channels=rng.choice([0, 2]))


def write_shard(path: Path, rows: Sequence[tuple[bytes, object]], json_as: str = "struct",
                row_group_size: Optional[int] = None) -> None:
    """Write ``(mp4 bytes, metadata)`` rows as a FineVideo parquet shard (json as struct or string)."""
    mp4 = pa.array([r[0] for r in rows], type=pa.binary())
    if json_as == "struct":
        js = pa.array([r[1] for r in rows])
    else:
        js = pa.array([r[1] if isinstance(r[1], str) else json.dumps(r[1]) for r in rows], type=pa.string())
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"mp4": mp4, "json": js}), path, row_group_size=row_group_size)


def build(out_dir: Path, videos: int = 12, seed: int = 0) -> Path:
    """Write a sample dataset of ``videos`` generated videos into ``out_dir``; return the shard path."""
    rng = random.Random(seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(videos):
            spec = random_spec(f"sample{i:03d}", rng)
            p = Path(tmp) / f"{spec.name}.mp4"
            render_video(spec, p)
            rows.append((p.read_bytes(), metadata_for(spec)))
    shard = Path(out_dir) / "data" / "train-00000-of-00001.parquet"
    write_shard(shard, rows)
    return shard


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m timewarp.sample_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="folder to write the sample dataset into")
    parser.add_argument("--videos", type=int, default=12, help="number of videos (default: 12)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)
    shard = build(Path(args.out_dir), args.videos, args.seed)
    print(f"wrote {args.videos} sample videos to {shard}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
