"""Two output folders hold the same results: the same files, byte-identical JSON, videos with the same
frames (the frame numbers drawn into their pixels and a digest of every decoded frame), and the same
stats and rejects per stage. For runs of one input under two executors (tests/test_ray*.py)."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from timewarp.core.layout import Layout
from timewarp.sample_data import read_frame_ids
from timewarp.core.store import read_json, read_jsonl

RUN_FILES = ("stats/", "state/", "rejects/")  # how a run went (times, paths): compared apart
SCRATCH = ("tmp/", ".lock")                     # a run's scratch space and its lock file


def frames_digest(path: Path) -> str:
    import cv2

    cap, h = cv2.VideoCapture(str(path)), hashlib.sha256()
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                return h.hexdigest()
            h.update(img.tobytes())
    finally:
        cap.release()


def stats(out: Path, stage: str) -> dict:
    """``stats/<stage>.json`` without its time and the paths of the run."""
    st = read_json(Layout(out).stats_file(stage))
    st.pop("seconds")
    st["options"] = {k: v for k, v in st["options"].items() if k not in ("root_dir", "save_dir")}
    return st


def rejects(out: Path, stage: str) -> list:
    """Rejects with the output root and preprocess's random temp-file suffix (mkstemp) masked."""
    text = json.dumps(read_jsonl(Layout(out).rejects_file(stage))).replace(str(out), "<out>")
    return json.loads(re.sub(r"(src-[^\"/]*-)[a-z0-9_]{8}\.mp4", r"\1XXXXXXXX.mp4", text))


def result_files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                  if p.is_file() and not p.relative_to(out).as_posix().startswith(SCRATCH))


def assert_same_outputs(local: Path, remote: Path, stages: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Assert ``remote`` holds what ``local`` does; returns the JSON and video files compared."""
    files = result_files(local)
    assert files == result_files(remote)
    jsons = [f for f in files if f.endswith(".json") and not f.startswith(RUN_FILES)]
    videos = [f for f in files if f.endswith(".mp4")]
    for f in jsons:
        assert (local / f).read_bytes() == (remote / f).read_bytes(), f
    for f in videos:
        ids = read_frame_ids(local / f)
        assert ids and ids == read_frame_ids(remote / f), f
        assert frames_digest(local / f) == frames_digest(remote / f), f
    for stage in stages:
        assert stats(local, stage) == stats(remote, stage), stage
        assert rejects(local, stage) == rejects(remote, stage), stage
    return jsons, videos
