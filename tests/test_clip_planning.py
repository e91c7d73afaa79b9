"""Clip planning on metadata as real exports write it (issue 12), checked on real videos frame by frame.

Activities out of order or with start and end swapped, scenes listed out of time order, a scene
whose times do not parse, non-text descriptions, a lone UTF-16 surrogate, a scene with no time
at all. The oracle is the metadata itself: each kept clip holds exactly the source frames whose
time lies in [earliest valid start, latest valid end) of its scene; a scene that gives no clip is
not visible anywhere in the normal video; every skip is counted by reason in the annotation and
in stats/preprocess.json.
"""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from test_real_world_video import render
from timewarp.core.layout import Layout
from timewarp.preprocess import final_assertions, preprocess, shuffle_clips
from timewarp.sample_data import read_frame_ids
from timewarp.core.schema import NormalAnnotation, ShuffledAnnotation
from timewarp.core.store import read_json, read_jsonl
from timewarp.sources.timestamps import format_timestamp

from stages import run_video_stage

pytestmark = pytest.mark.video  # renders its own videos (conftest.py: the fast tier)

RATE = 30
FRAMES = 120
SNAP = Fraction(1, 1000)


def act(desc, start, end) -> dict:
    ts = lambda t: format_timestamp(t) if isinstance(t, (int, float)) else t  # noqa: E731
    return {"description": desc, "timestamp": {"start_timestamp": ts(start), "end_timestamp": ts(end)}}


def scene(start, end, *acts) -> dict:
    ts = lambda t: format_timestamp(t) if isinstance(t, (int, float)) else t  # noqa: E731
    return {"timestamps": {"start_timestamp": ts(start), "end_timestamp": ts(end)}, "activities": list(acts)}


# name -> (scenes, expected clips [(start, end, caption)], dropped scene hulls [(start, end)] cut from the video,
#          expected skip reasons, expected reject reason or None)
CASES = {
    "acts_unordered": ([scene(0.0, 0.9, act("Then B.", 0.5, 0.9), act("First A.", 0.0, 0.4)),
                        scene(1.0, 2.0, act("C.", 1.0, 2.0)), scene(2.0, 3.0, act("D.", 2.0, 2.9))],
                       [(0.0, 0.9, "First A. Then B."), (1.0, 2.0, "C."), (2.0, 2.9, "D.")], [], {}, None),
    "acts_swapped": ([scene(0.0, 0.9, act("A.", 0.4, 0.0), act("B.", 0.9, 0.5)),
                      scene(1.0, 2.0, act("C.", 1.0, 2.0)), scene(2.0, 3.0, act("D.", 2.0, 2.9))],
                     [(1.0, 2.0, "C."), (2.0, 2.9, "D.")], [(0.0, 0.9)],
                     {"activity skipped: ends before it starts or is empty": 2, "scene without a valid activity": 1}, None),
    "scenes_unordered": ([scene(1.0, 2.0, act("C.", 1.0, 2.0)), scene(0.0, 0.9, act("A.", 0.0, 0.9)),
                          scene(2.0, 3.0, act("D.", 2.0, 2.9))],
                         [(0.0, 0.9, "A."), (1.0, 2.0, "C."), (2.0, 2.9, "D.")], [], {}, None),
    "scene_bad_times": ([scene(0.0, 0.9, act("A.", 0.0, 0.9)), scene(1.0, 1.9, act("B.", None, "n/a")),
                         scene(2.0, 3.0, act("D.", 2.0, 2.9))],
                        [(0.0, 0.9, "A."), (2.0, 2.9, "D.")], [(1.0, 1.9)],
                        {"activity skipped: times missing or unparseable": 1, "scene without a valid activity": 1}, None),
    "desc_not_text": ([scene(0.0, 0.9, act({"text": "hidden"}, 0.0, 0.4), act("A.", 0.0, 0.9)),
                       scene(1.0, 2.0, act(["C"], 1.0, 2.0)), scene(2.0, 3.0, act("D.", 2.0, 2.9))],
                      [(0.0, 0.9, "A."), (2.0, 2.9, "D.")], [(1.0, 2.0)],
                      {"activity skipped: description is not text": 2, "scene without a valid activity": 1}, None),
    "surrogate": ([scene(0.0, 0.9, act("A \ud800 b.", 0.0, 0.9)), scene(1.0, 2.0, act("C.", 1.0, 2.0))],
                  [(0.0, 0.9, "A \ufffd b."), (1.0, 2.0, "C.")], [], {}, None),
    "scene_no_time": ([scene(0.0, 0.9, act("A.", 0.0, 0.9)), scene(None, None, act("B.", None, None)),
                       scene(2.0, 3.0, act("D.", 2.0, 2.9))], [], [], {}, "scene without any usable time"),
}


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan_src")
    out = tmp_path_factory.mktemp("plan_out")
    render(root / "base.mp4", FRAMES)
    for name, (scenes, *_rest) in CASES.items():
        (root / f"{name}.mp4").write_bytes((root / "base.mp4").read_bytes())
        meta = {"original_video_filename": f"{name}.mp4", "content_metadata": {"title": name, "scenes": scenes}}
        (root / f"{name}.json").write_text(json.dumps(meta))
    (root / "base.mp4").unlink()
    stats = run_video_stage(preprocess, out, root_dir=root, scale=len(CASES), write_clips=True)
    run_video_stage(shuffle_clips, out)
    return Layout(out), stats


def frames_in(start: float, end: float) -> list[int]:
    return [k for k in range(FRAMES) if Fraction(start) - SNAP <= Fraction(k, RATE) < Fraction(end) - SNAP]


@pytest.mark.parametrize("name", sorted(CASES))
def test_clips_follow_the_valid_metadata(planned, name):
    layout, stats = planned
    _scenes, clips, dropped, skips, reject = CASES[name]
    rejects = {r["id"]: r for r in read_jsonl(layout.rejects_file("preprocess"))}
    if reject:
        assert rejects[name]["reason"] == reject
        assert not layout.normal_annotation(name).exists()
        return
    assert name not in rejects, rejects.get(name)
    ann = NormalAnnotation.from_dict(read_json(layout.normal_annotation(name)))
    assert [(c.caption) for c in ann.clips] == [c for _, _, c in clips]
    ids = read_frame_ids(layout.root / ann.video)
    for c, (a, b, _) in zip(ann.clips, clips):
        assert ids[c.start_frame:c.end_frame] == frames_in(a, b), c.index
        assert read_frame_ids(layout.clip_video(name, c.index)) == frames_in(a, b)
    # a scene that gave no clip never plays; un-annotated gaps do
    hidden = {k for a, b in dropped for k in range(FRAMES) if Fraction(a) - SNAP <= Fraction(k, RATE) <= Fraction(b) + SNAP}
    in_clips = {k for a, b, _ in clips for k in frames_in(a, b)}   # a kept clip's frames are never cut
    shown = [k for k in range(FRAMES) if Fraction(k, RATE) < Fraction(clips[-1][1]) - SNAP
             and (k in in_clips or k not in hidden)]
    assert ids == shown
    # the source frames the normal video is made of are recorded
    assert [k for a, b in ann.source_ranges for k in range(a, b)] == shown
    for reason, n in skips.items():
        assert ann.skipped.get(reason) == n, ann.skipped
        assert stats["counts"][f"clips skipped: {reason}"] >= n
    if name == "surrogate":
        assert ann.warnings and "U+FFFD" in ann.warnings[0]
        assert "\ufffd" in Path(layout.normal_annotation(name)).read_text(encoding="utf-8")
    assert "{" not in " ".join(c.caption for c in ann.clips)  # no Python repr of a dict/list


def test_shuffles_and_final_assertions_on_cut_videos(planned):
    layout, _ = planned
    for sid in layout.shuffled_ids():
        sh = ShuffledAnnotation.from_dict(read_json(layout.shuffled_annotation(sid)))
        clips = CASES[sh.normal_id][1]
        want = [k for i in sh.permutation for k in frames_in(clips[i][0], clips[i][1])]
        assert read_frame_ids(layout.root / sh.video) == want, sid
    report = run_video_stage(final_assertions, layout.root)
    assert report.ok, report.violations


def test_audio_follows_the_cut(tmp_path):
    """--keep_audio with a scene cut out: the audio is cut from the same source ranges (same length as the video)."""
    import subprocess

    from timewarp.sample_data import SceneSpec, VideoSpec, render_video
    from timewarp.media.video import ffmpeg_exe

    root = tmp_path / "src"
    root.mkdir()
    render_video(VideoSpec("aud", [SceneSpec(90, "red", "square")], fps="30", size=(96, 64), audio_channels=2),
                 root / "aud.mp4")
    scenes = [scene(0.0, 0.9, act("A.", 0.0, 0.9)), scene(1.0, 1.9, act("B.", 1.9, 1.0)),
              scene(2.0, 3.0, act("D.", 2.0, 2.9))]
    (root / "aud.json").write_text(json.dumps({"content_metadata": {"scenes": scenes}}))
    run_video_stage(preprocess, tmp_path / "out", root_dir=root, scale=1, keep_audio=True)
    layout = Layout(tmp_path / "out")
    video = layout.normal_video("aud")
    assert read_frame_ids(video) == list(range(30)) + list(range(58, 87))
    lengths = {}
    for stream in ("v", "a"):
        res = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(video), "-map", f"0:{stream}:0", "-f", "null", "-"],
                             capture_output=True, text=True)
        last = [ln for ln in res.stderr.replace("\r", "\n").splitlines() if "time=" in ln][-1]
        h, m, s = last.split("time=")[1].split()[0].split(":")
        lengths[stream] = int(h) * 3600 + int(m) * 60 + float(s)
    assert abs(lengths["a"] - lengths["v"]) < 0.05, lengths
