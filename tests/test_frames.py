"""timewarp.media.frames: index sampling, one sequential decode pass, the JPEG cache (on real decoded frames)."""
from __future__ import annotations

import json

import pytest

from timewarp.core.errors import ItemError
from timewarp.media.frames import cached_frames, decode_jpeg, extract_frames, sample_indices, write_frames
from timewarp.core.layout import Layout
from timewarp.sample_data import frame_id  # noqa: F401 - test_implicit and test_corruptions import it from here
from timewarp.core.schema import NormalAnnotation
from timewarp.core.store import read_json


def normal(processed, vid: str) -> tuple[Layout, NormalAnnotation]:
    layout = Layout(processed)
    return layout, NormalAnnotation.from_dict(read_json(layout.normal_annotation(vid)))


def test_sample_indices_uniform_and_by_rate():
    assert sample_indices(80, n=8) == [5, 15, 25, 35, 45, 55, 65, 75]  # middle of each tenth-frame segment
    assert sample_indices(5, n=8) == [0, 1, 2, 3, 4]                  # shorter than n: every frame
    assert sample_indices(0, n=8) == []
    idx = sample_indices(107, n=8)
    assert len(idx) == 8 and idx == sorted(set(idx)) and 0 <= idx[0] and idx[-1] < 107
    assert sample_indices(100, fps=1.0, video_fps=25.0) == [0, 25, 50, 75]
    assert sample_indices(90, fps=2.0, video_fps=30000 / 1001) == [0, 14, 29, 44, 59, 74, 89]
    capped = sample_indices(3000, fps=2.0, video_fps=30.0, max_frames=8)
    assert len(capped) == 8 and capped == sorted(capped) and all(i % 15 == 0 for i in capped)
    with pytest.raises(ValueError):
        sample_indices(10, n=4, fps=1.0, video_fps=25)
    with pytest.raises(ValueError):
        sample_indices(10)


def test_extract_frames_one_sequential_pass(processed, monkeypatch):
    import cv2

    layout, ann = normal(processed, "ntsc30")
    calls = {"grab": 0, "retrieve": 0, "set": 0, "read": 0}
    real = cv2.VideoCapture

    class Counting:
        def __init__(self, *a):
            self.cap = real(*a)

        def __getattr__(self, name):
            if name in calls:
                calls[name] += 1
            return getattr(self.cap, name)

    monkeypatch.setattr(cv2, "VideoCapture", Counting)
    want = [100, 3, 50, 3]  # any order, repeats allowed
    frames = extract_frames(layout.root / ann.video, want)
    assert [frame_id(f) for f in frames] == want
    assert calls["set"] == 0 and calls["read"] == 0          # no seeking
    assert calls["retrieve"] == 3                             # decoded only the wanted frames
    assert calls["grab"] == 101                               # and stopped after the last one
    assert frames[0].shape == (ann.height, ann.width, 3)


def test_extract_frames_past_the_end_is_an_item_error(processed):
    layout, ann = normal(processed, "pal25")
    with pytest.raises(ItemError, match="shorter"):
        extract_frames(layout.root / ann.video, [0, ann.frame_count + 5])


def test_write_and_cache(processed, tmp_path, monkeypatch):
    layout, ann = normal(processed, "film24")
    video = layout.root / ann.video
    idx = sample_indices(ann.frame_count, n=8)
    paths = write_frames(extract_frames(video, idx), idx, tmp_path / "w")
    assert [p.name for p in paths] == [f"{i:05d}.jpg" for i in idx]

    out = Layout(tmp_path).frame_dir(ann.id)
    first = cached_frames(video, idx, out)
    assert [frame_id(decode_jpeg(b)) for b in first] == idx
    assert sorted(p.name for p in out.glob("*.jpg")) == [f"{i:05d}.jpg" for i in idx]
    assert json.loads((out / "frames.json").read_text())["indices"] == idx

    import timewarp.media.frames as frames_mod

    def no_decode(*a, **k):
        raise AssertionError("cache not used")

    monkeypatch.setattr(frames_mod, "extract_frames", no_decode)
    assert cached_frames(video, idx, out) == first            # served from disk, byte-identical
    with pytest.raises(AssertionError):
        cached_frames(video, idx, out, refresh=True)          # refresh decodes again
