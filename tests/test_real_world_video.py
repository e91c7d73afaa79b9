"""Real-world video shapes (issue 12): variable rate, dropped-frame holes, a 1/600 s timescale, rotation,
10-bit, HEVC / VP9 / AV1, an edit list, a non-zero start pts, a 1x1 video.

Each source is made at test time by the bundled ffmpeg from frames that carry their own number
(``sample_data.draw_frame``); the test knows each number's presentation time from how it built the
file, independently of the pipeline. A kept video is checked frame by frame: every frame of every
clip is a source frame whose time lies in the clip's metadata [start, end) (1 ms snap) and every
such source frame is in the clip, in order. A video whose frame times do not follow one constant
rate must be rejected with a reason that names the irregularity (frames are never duplicated or
dropped to fake a rate).
"""
from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest

from timewarp.core.layout import Layout
from timewarp.preprocess import filter_corrupted, final_assertions, preprocess, shuffle_clips
from timewarp.sample_data import draw_frame, frame_id, read_frame_ids
from timewarp.core.schema import NormalAnnotation, ShuffledAnnotation
from timewarp.core.store import read_json, read_jsonl
from timewarp.sources.timestamps import format_timestamp
from timewarp.media.video import ffmpeg_exe

from stages import run_video_stage

pytestmark = pytest.mark.video  # renders its own videos (conftest.py: the fast tier)

SIZE = (96, 64)
SNAP = Fraction(1, 1000)


def encoders() -> str:
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True).stdout


def render(path: Path, n: int, *, times: Optional[str] = None, rate: str = "30", codec: list[str] = None,
           out_opts: list[str] = (), size=SIZE, rotate: int = 0, first: int = 0) -> None:
    """Frames first..first+n-1 (numbered) at ``rate``; ``times`` is an optional setpts expression (in seconds of N).

    ``rotate`` (90 or 180) stores each frame turned back by that many degrees: upright once a
    decoder applies a display matrix of ``rotate`` degrees."""
    w, h = size
    cw, ch = (h, w) if rotate == 90 else (w, h)
    cmd = [ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{cw}x{ch}", "-r", rate, "-i", "-"]
    if times:
        cmd += ["-vf", "setpts='(" + times.replace(",", "\\,") + ")/TB'", "-fps_mode", "passthrough", "-enc_time_base", "1/30"]
    cmd += list(codec or ["-c:v", "libx264", "-bf", "2", "-g", "24", "-pix_fmt", "yuv420p"]) + list(out_opts) + [str(path)]
    frames = []
    for k in range(first, first + n):
        img = draw_frame(w, h, k, (40, 70, 220) if k % 60 < 30 else (220, 40, 40), "square", (k % 30) / 29)
        frames.append(np.ascontiguousarray(np.rot90(img, -rotate // 90)) if rotate else img)
    res = subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), capture_output=True)
    assert res.returncode == 0, res.stderr.decode()[-500:]


def remux(src: Path, dst: Path, *opts: str, before: list[str] = ()) -> None:
    res = subprocess.run([ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", *before, "-i", str(src), "-c", "copy",
                          *opts, str(dst)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-500:]


def joined(path: Path, second: dict, first: Optional[dict] = None) -> None:
    """Frames 0..74 and 75..149 encoded as two files (``render`` options each), joined by
    ``ffmpeg -f concat -c copy``: the second part's parameters (size, colour range, profile, B-frames)
    change mid-stream, as in files people join from recordings made with other settings."""
    parts = [path.with_suffix(".a.mp4"), path.with_suffix(".b.mp4")]
    render(parts[0], 75, **(first or {}))
    render(parts[1], 75, first=75, **second)
    listing = path.with_suffix(".txt")
    listing.write_text("".join(f"file '{p.resolve()}'\n" for p in parts))
    remux(listing, path, before=["-f", "concat", "-safe", "0"])
    for p in [*parts, listing]:
        p.unlink()


def destroy_packet(path: Path, index: int) -> None:
    """Overwrite the payload of video packet ``index`` (decode order) with seeded noise, length fields kept."""
    import av
    import random

    with av.open(str(path)) as c:
        pkt = [p for p in c.demux(video=0) if p.size][index]
        pos, size = pkt.pos, pkt.size
    data = bytearray(path.read_bytes())
    rng = random.Random(index)
    data[pos + 4:pos + size] = bytes(rng.randrange(256) for _ in range(size - 4))
    path.write_bytes(bytes(data))


def stored_frame_ids(path: Path) -> list[int]:
    """Frame numbers of the frames as stored, no display matrix applied (PyAV does not apply it, nor does decord)."""
    import av

    with av.open(str(path)) as c:
        return [frame_id(f.to_ndarray(format="bgr24")) for f in c.decode(video=0)]


def metadata(name: str, scenes: list[tuple[float, float]]) -> dict:
    return {"original_video_filename": f"{name}.mp4", "content_parent_category": "Test",
            "content_metadata": {"title": name, "scenes": [
                {"sceneId": n + 1, "timestamps": {"start_timestamp": format_timestamp(a), "end_timestamp": format_timestamp(b)},
                 "activities": [{"description": f"Scene {n} of {name} happens.",
                                 "timestamp": {"start_timestamp": format_timestamp(a), "end_timestamp": format_timestamp(b)}}]}
                for n, (a, b) in enumerate(scenes)]}}


class Case:
    def __init__(self, name: str, make: Callable[[Path], None], time_of: Callable[[int], Fraction],
                 scenes: list[tuple[float, float]], reject: Optional[str] = None, fps: Optional[str] = None,
                 size=SIZE, smartcut_reject: Optional[tuple[str, str]] = None):
        self.name, self.make, self.time_of, self.scenes = name, make, time_of, scenes
        self.reject, self.fps, self.size = reject, fps, size
        self.smartcut_reject = smartcut_reject   # (stage, reason) when the smartcut engine's differs


def cfr(rate: Fraction, first: int = 0) -> Callable[[int], Fraction]:
    return lambda k: (k - first) / rate


THREE = [(0.0, 0.9), (1.0, 2.0), (2.0, 2.8)]  # seconds; each boundary is a frame time at 30 and 29.97 fps (ms)


def _ntsc_scenes() -> list[tuple[float, float]]:
    r = Fraction(30000, 1001)
    return [(round(float(a / r), 3), round(float(b / r), 3)) for a, b in ((0, 27), (30, 60), (60, 84))]


def cases() -> list[Case]:
    enc = encoders()
    out = [
        Case("vfr10then30", lambda p: render(p, 70, times="if(lt(N,10),N/10,1+(N-10)/30)"),
             lambda k: Fraction(k, 10) if k < 10 else 1 + Fraction(k - 10, 30), [(0.0, 0.9), (1.0, 1.5), (1.5, 2.0)],
             reject="variable frame rate"),
        Case("hole2", lambda p: render(p, 88, times="(N+2*gte(N,40))/30"),
             lambda k: Fraction(k + 2 * (k >= 40), 30), THREE, reject="dropped frames (timestamp holes)"),
        Case("iphone600", lambda p: render(p, 90, rate="30000/1001", out_opts=["-video_track_timescale", "600"]),
             cfr(Fraction(30000, 1001)), _ntsc_scenes(), fps="30000/1001"),
        Case("tenbit", lambda p: render(p, 90, codec=["-c:v", "libx264", "-pix_fmt", "yuv420p10le", "-bf", "2"]),
             cfr(Fraction(30)), THREE, fps="30"),
        Case("rotated", lambda p: (render(p.with_suffix(".raw.mp4"), 90, rotate=90),
                                   remux(p.with_suffix(".raw.mp4"), p, before=["-display_rotation", "90"]),
                                   p.with_suffix(".raw.mp4").unlink()),
             cfr(Fraction(30)), THREE, fps="30"),
        # same size either way: only the display matrix says the frames are upside down
        Case("rotated180", lambda p: (render(p.with_suffix(".raw.mp4"), 90, rotate=180),
                                      remux(p.with_suffix(".raw.mp4"), p, before=["-display_rotation", "180"]),
                                      p.with_suffix(".raw.mp4").unlink()),
             cfr(Fraction(30)), THREE, fps="30"),
        # B-frames without an edit list: the first frame's pts is two frames in, no packet is marked discard
        Case("noeditlist", lambda p: (render(p.with_suffix(".raw.mp4"), 90),
                                      remux(p.with_suffix(".raw.mp4"), p, "-use_editlist", "0"),
                                      p.with_suffix(".raw.mp4").unlink()),
             cfr(Fraction(30)), THREE, fps="30"),
        # one packet's bytes destroyed: its timestamps are fine, the decoder reports errors and drops the frame.
        # The same reason and stage with either engine: one-encode decodes the source in preprocess; smart-cut's
        # decode runs through the GOP it would copy untouched, sees a frame missing and leaves the video to
        # one-encode (before the reference decode, smart-cut kept it and filter_corrupted rejected it)
        Case("badpacket", lambda p: (render(p, 90), destroy_packet(p, 10)),
             cfr(Fraction(30)), THREE, reject="source does not decode"),
        # trimmed by stream copy (-ss 1 -c copy -t 3.5, very common): an edit list at the start, and two frames
        # missing in the last 0.2 s, after every clip: that hole is no reason to lose the video
        Case("trimcopy", lambda p: (render(p.with_suffix(".raw.mp4"), 180),
                                    remux(p.with_suffix(".raw.mp4"), p, "-t", "3.5", before=["-ss", "1"]),
                                    p.with_suffix(".raw.mp4").unlink()),
             cfr(Fraction(30), first=30), THREE, fps="30"),
        Case("editlist", lambda p: (render(p.with_suffix(".raw.mp4"), 120), remux(p.with_suffix(".raw.mp4"), p, before=["-ss", "1"]),
                                    p.with_suffix(".raw.mp4").unlink()),
             cfr(Fraction(30), first=30), THREE, fps="30"),
        Case("startpts", lambda p: (render(p.with_suffix(".raw.mp4"), 90), remux(p.with_suffix(".raw.mp4"), p, before=["-itsoffset", "2.5"]),
                                    p.with_suffix(".raw.mp4").unlink()),
             cfr(Fraction(30)), THREE, fps="30"),
        # parts joined by stream copy, each change of parameters at frame 75 (2.5 s, inside the third clip):
        # ffmpeg rebuilds its filter graph there (a frame counter behind setpts restarted at 0 and the
        # one-encode output lost 2 s of frames), and a dts jump at a join of a part with B-frames to one
        # without made -fps_mode cfr repeat the last frame before it three times
        Case("join_size", lambda p: joined(p, {"size": (80, 48)}), cfr(Fraction(30)), THREE, fps="30"),
        Case("join_range", lambda p: joined(p, {"codec": ["-c:v", "libx264", "-bf", "2", "-g", "24", "-pix_fmt",
                                                          "yuvj420p", "-color_range", "pc"]}),
             cfr(Fraction(30)), THREE, fps="30"),
        Case("join_profile", lambda p: joined(p, {"codec": ["-c:v", "libx264", "-profile:v", "baseline", "-g", "24",
                                                            "-pix_fmt", "yuv420p"]}),
             cfr(Fraction(30)), THREE, fps="30"),
        Case("join_bframes", lambda p: joined(p, {"codec": ["-c:v", "libx264", "-bf", "0", "-g", "24",
                                                            "-pix_fmt", "yuv420p"]}),
             cfr(Fraction(30)), THREE, fps="30"),
        Case("tiny1x1", lambda p: subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "color=s=1x1:r=30:d=3",
                                                  "-c:v", "libx264", "-pix_fmt", "yuv444p", str(p)], check=True),
             cfr(Fraction(30)), THREE, reject="video too small to encode"),
    ]
    for name, encoder, codec in (("hevc", "libx265", ["-c:v", "libx265", "-x265-params", "log-level=error", "-tag:v", "hvc1"]),
                                 ("vp9", "libvpx-vp9", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"]),
                                 ("av1", "libsvtav1", ["-c:v", "libsvtav1", "-preset", "12"]),
                                 ("av1aom", "libaom-av1", ["-c:v", "libaom-av1", "-cpu-used", "8", "-row-mt", "1"])):
        if f" {encoder} " in enc:
            out.append(Case(name, lambda p, c=codec: render(p, 90, codec=c + ["-pix_fmt", "yuv420p"]),
                            cfr(Fraction(30)), THREE, fps="30"))
    return out


@pytest.fixture(scope="module")
def wild_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("wild_src")
    for case in CASES:
        case.make(root / f"{case.name}.mp4")
        (root / f"{case.name}.json").write_text(json.dumps(metadata(case.name, case.scenes)))
    return root


@pytest.fixture(scope="module", params=["one-encode", "smartcut"])
def wild(request, tmp_path_factory, wild_sources):
    """Every case through preprocess (and shuffle) with each engine: the same frames are owed either way."""
    out = tmp_path_factory.mktemp(f"wild_out_{request.param}")
    run_video_stage(preprocess, out, root_dir=wild_sources, scale=len(CASES), write_clips=True, workers=2,
                    engine=request.param)
    run_video_stage(filter_corrupted, out)  # as setup_dataset.sh: every output decoded before it is used
    run_video_stage(shuffle_clips, out)
    return {c.name: c for c in CASES}, Layout(out)


def expected_ids(case: Case, start: float, end: float, ids: range) -> list[int]:
    """Independent oracle: the source frames whose presentation time t has start <= t < end (1 ms snap)."""
    return [k for k in ids if Fraction(start) - SNAP <= case.time_of(k) < Fraction(end) - SNAP]


CASES = cases()


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_case_is_kept_exactly_or_rejected_with_its_reason(wild, name):
    by_name, layout = wild
    case = by_name[name]
    stage, reason = "preprocess", case.reject
    if case.smartcut_reject and read_json(layout.stats_file("preprocess"))["options"]["engine"] == "smartcut":
        stage, reason = case.smartcut_reject
    rejects = {st: {r["id"]: r for r in read_jsonl(layout.rejects_file(st))} for st in ("preprocess", "filter_corrupted")}
    if reason:
        assert name in rejects[stage] and rejects[stage][name]["reason"] == reason, rejects[stage].get(name)
        assert not layout.normal_annotation(name).exists() and not layout.normal_video(name).exists()
        return
    assert all(name not in r for r in rejects.values()), rejects
    ann = NormalAnnotation.from_dict(read_json(layout.normal_annotation(name)))
    assert Fraction(ann.fps_rational) == Fraction(case.fps)   # the exact stream rate, never an average
    assert (ann.width, ann.height) == case.size                # after the display-matrix rotation
    got = read_frame_ids(layout.root / ann.video)
    assert len(got) == ann.frame_count
    # the pixels themselves are upright: decoders that ignore a display matrix (PyAV, decord) see the same
    assert stored_frame_ids(layout.root / ann.video) == got
    assert len(ann.clips) == len(case.scenes)
    for c, (a, b) in zip(ann.clips, case.scenes):
        want = expected_ids(case, a, b, range(0, 200))
        assert want and got[c.start_frame:c.end_frame] == want, c.index
        assert read_frame_ids(layout.clip_video(name, c.index)) == want, c.index


def test_shuffled_videos_of_real_world_sources(wild):
    by_name, layout = wild
    for sid in layout.shuffled_ids():
        sh = ShuffledAnnotation.from_dict(read_json(layout.shuffled_annotation(sid)))
        case = by_name[sh.normal_id]
        want = []
        for src in sh.permutation:
            a, b = case.scenes[src]
            want += expected_ids(case, a, b, range(0, 200))
        assert read_frame_ids(layout.root / sh.video) == want, sid


def test_final_assertions_pass_on_real_world_output(wild):
    _, layout = wild
    report = run_video_stage(final_assertions, layout.root, decode=True)
    assert report.ok, report.violations


def test_final_assertions_catch_a_clip_cut_by_an_assumed_rate(wild, tmp_path):
    """The VFR bug of the old engine: clips cut at k/fps from a source whose frames are not at k/fps.

    The output of a constant-rate source is checked against a source with the same numbered
    frames at 10-then-30 fps timing: by the source's real frame times the clips hold frames outside
    their metadata times, and final_assertions must say so.
    """
    import shutil

    by_name, layout = wild
    out = tmp_path / "out"
    shutil.copytree(layout.root, out)
    src = tmp_path / "src"
    src.mkdir()
    ann = NormalAnnotation.from_dict(read_json(Layout(out).normal_annotation("tenbit")))
    render(src / ann.source_file, 90, times="if(lt(N,10),N/10,1+(N-10)/30)")
    report = run_video_stage(final_assertions, out, source_root=str(src))
    bad = [v for v in report.violations if v.check == "clip frames inside metadata times"]
    assert bad and all(v.id == "tenbit" for v in bad), report.violations
    assert "source frame" in bad[0].detail
    # with the real source back the same output passes
    shutil.copy(_source_of(layout, ann), src / ann.source_file)
    assert run_video_stage(final_assertions, out, source_root=str(src)).ok


def _source_of(layout: Layout, ann: NormalAnnotation) -> Path:
    return Path(read_json(layout.stats_file("preprocess"))["options"]["root_dir"]) / ann.source_file


def test_an_ffmpeg_failure_says_why(tmp_path):
    """Not only ffmpeg's closing 'Conversion failed!': the line that names the problem."""
    from timewarp.core.errors import ItemError
    from timewarp.media.video import run_ffmpeg

    with pytest.raises(ItemError) as err:
        run_ffmpeg(["-f", "lavfi", "-i", "color=s=64x48:d=0.2", "-c:v", "libx264", "-preset", "no-such-preset",
                     str(tmp_path / "x.mp4")], "encode")
    assert "no-such-preset" in err.value.detail, err.value.detail


def test_frame_rate_names_each_irregularity():
    from timewarp.media.video import frame_rate

    tb = Fraction(1, 90000)
    ntsc = [Fraction(round(k * 90000 * 1001 / 30000), 90000) for k in range(300)]
    assert frame_rate(ntsc, Fraction(30000, 1001), tb) == (Fraction(30000, 1001), None)
    assert frame_rate(ntsc, None, tb)[0] == Fraction(30000, 1001)   # from the times alone, not an average
    back = [Fraction(k, 30) for k in range(10)] + [Fraction(8, 30)] + [Fraction(k, 30) for k in range(11, 20)]
    assert frame_rate(back, Fraction(30), tb)[1][0] == "frame times not increasing"
    jitter = [Fraction(k, 30) + (Fraction(3, 1000) if k % 7 == 3 else 0) for k in range(60)]
    assert frame_rate(jitter, Fraction(30), tb)[1][0] == "variable frame rate"


def test_smartcut_handles_or_declines_each_case(wild):
    """Smart-cut really ran on some of these shapes and declined the ones it cannot copy, by name."""
    _, layout = wild
    stats = read_json(layout.stats_file("preprocess"))
    if stats["options"]["engine"] != "smartcut":
        pytest.skip("one-encode engine")
    counts = stats["counts"]
    assert counts.get("engine: smartcut", 0) >= 4, counts   # iphone600, editlist, noeditlist, startpts, ...
    assert counts.get("smartcut fell back to one-encode: rotated video (display matrix)") == 2, counts


def test_an_irregularity_after_every_used_frame_is_cut_off_not_rejected():
    """A rate change or hole after the last frame a clip uses costs only the frames after it; inside, a reject."""
    from timewarp.core.errors import ItemError
    from timewarp.media.video import VideoInfo, frame_rate, regular_part

    tb = Fraction(1, 15360)
    for name, times in (("variable frame rate", [Fraction(k, 30) for k in range(90)] + [3 + Fraction(k, 10) for k in range(1, 11)]),
                        ("dropped frames (timestamp holes)", [Fraction(k + 2 * (k >= 90), 30) for k in range(100)])):
        fps, irregular = frame_rate(times, Fraction(30), tb)
        assert irregular[0] == name
        info = VideoInfo(fps, len(times), 96, 64, tuple(times), tb, irregular=irregular)
        kept = regular_part(info, 2.9)
        assert (kept.fps, kept.frame_count, kept.irregular, kept.times) == (30, 90, None, tuple(times[:90]))
        with pytest.raises(ItemError) as exc:
            regular_part(info, 3.05)
        assert exc.value.reason == name
