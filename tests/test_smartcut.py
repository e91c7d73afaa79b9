"""The smart-cut engine (preprocess --engine smartcut) on real generated videos, frame by frame.

Every check compares with an independent fact: the frame number drawn into each source frame (the
annotation says which source frames a video must show), the source file's own packet bytes (for
what the engine claims it copied), and four decoders (ffmpeg, OpenCV, PyAV, decord).
"""
from __future__ import annotations

import hashlib
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

import test_preprocess
from timewarp.media import smartcut
from timewarp.core.layout import Layout
from timewarp.preprocess import final_assertions, preprocess, shuffle_clips
from timewarp.sample_data import SceneSpec, VideoSpec, draw_frame, metadata_for, read_frame_ids, write_shard
from timewarp.core.schema import NormalAnnotation
from timewarp.core.store import read_json
from timewarp.media.video import decode_errors, ffmpeg_exe

from stages import run_video_stage

VIDEO_FIXTURES = {"smart", "gops"}  # render videos (conftest.py: the fast tier)

av = pytest.importorskip("av")
COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink"]


def render(path: Path, spec: VideoSpec, codec: list[str], setpts: str | None = None) -> None:
    """Draw the spec's frames (each carries its number) and encode them with the given codec options."""
    w, h = spec.size
    cmd = [ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
           "-r", spec.fps, "-i", "-"]
    if setpts:
        cmd += ["-vf", f"setpts={setpts}", "-fps_mode", "vfr"]
    cmd += [*codec, str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    k = 0
    for sc in spec.scenes:
        for i in range(sc.frames):
            proc.stdin.write(draw_frame(w, h, k, (40 + 25 * (k // 7 % 8), 90, 160), sc.shape, i / sc.frames).tobytes())
            k += 1
    proc.stdin.close()
    assert proc.wait() == 0, proc.stderr.read().decode()


def x264(gop: int, bf: int = 3, extra: str = "") -> list[str]:
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0" + (f":{extra}" if extra else "")
    return ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-bf", str(bf), "-pix_fmt", "yuv420p",
            "-x264-params", params]


def gop_spec(name: str, fps: str = "30000/1001", size=(320, 180), scenes: int = 4, frames: int = 75) -> VideoSpec:
    """Scenes of ``frames`` frames whose clip leaves 9 / 7 frames out: clip starts and ends fall mid-GOP."""
    return VideoSpec(name, [SceneSpec(frames, COLORS[i], "square", [(9, frames - 7)]) for i in range(scenes)],
                     fps=fps, size=size)


def dataset(tmp: Path, items: list[tuple[VideoSpec, list[str], str | None]]) -> Path:
    rows = []
    for spec, codec, setpts in items:
        p = tmp / f"{spec.name}.mp4"
        render(p, spec, codec, setpts)
        rows.append((p.read_bytes(), metadata_for(spec)))
    root = tmp / "fv"
    write_shard(root / "data" / "train-00000-of-00001.parquet", rows)
    return root


def decodes_everywhere(path: Path, frames: int) -> None:
    """ffmpeg reports no error, and OpenCV, PyAV and decord each decode exactly ``frames`` frames."""
    assert decode_errors(path) is None, path
    assert len(read_frame_ids(path)) == frames, path  # OpenCV
    with av.open(str(path)) as c:
        assert sum(1 for _ in c.decode(video=0)) == frames, path
    decord = pytest.importorskip("decord")
    vr = decord.VideoReader(str(path))
    assert len(vr) == frames and vr.get_batch(list(range(frames))).shape[0] == frames, path


def every_output(out: Path):
    layout = Layout(out)
    for vid in layout.normal_ids():
        ann = NormalAnnotation.from_dict(read_json(layout.normal_annotation(vid)))
        yield layout.root / ann.video, ann.frame_count
        for c in ann.clips:
            if layout.clip_video(vid, c.index).exists():
                yield layout.clip_video(vid, c.index), c.end_frame - c.start_frame
    for sid in layout.shuffled_ids():
        sh = read_json(layout.shuffled_annotation(sid))
        yield layout.root / sh["video"], sh["frame_count"]


# ------------------------------------------------------------------ the wild test set (B-frames, NTSC, 5.1 audio)

@pytest.fixture(scope="module")
def smart(processed) -> tuple[Path, dict]:
    """The session's wild-set output: smart-cut is preprocess's default engine."""
    return processed, read_json(Layout(processed).stats_file("preprocess"))


def test_wild_set_is_frame_exact_and_counts_engines(smart):
    out, stats = smart
    test_preprocess.test_normal_videos_and_clips_are_frame_exact(out)
    test_preprocess.test_shuffled_videos_follow_the_permutation(out)
    counts = stats["counts"]
    # pal25 is 175x143 4:4:4: the one encode crops it to 174x142, a copy cannot
    assert counts["engine: smartcut"] == 3 and counts["engine: one-encode"] == 1
    assert counts["smartcut fell back to one-encode: resized output (--max_height or odd size)"] == 1
    assert stats["options"]["engine"] == "smartcut"
    assert 0 < counts["frames re-encoded"] < counts["frames written"]
    # the stage that checks annotations against videos (frame counts by full decode, fps, durations)
    assert run_video_stage(final_assertions, out, workers=1, decode=True).ok
    assert not list(out.rglob(".tmp-*"))  # no scratch file left beside the videos


def test_wild_set_decodes_in_ffmpeg_opencv_pyav_decord(smart):
    out, _ = smart
    seen = 0
    for path, frames in every_output(out):
        decodes_everywhere(path, frames)
        seen += 1
    assert seen == 4 + 14 + 4


def test_bytes_do_not_depend_on_workers(smart, wild_dataset, tmp_path):
    out, _ = smart
    other = tmp_path / "w1"
    run_video_stage(preprocess, other, root_dir=wild_dataset, scale=4, workers=1, write_clips=True,
                    test_fraction=0.5, engine="smartcut")
    run_video_stage(shuffle_clips, other, workers=1)
    def digest(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*.mp4"))}
    assert digest(other) == digest(out)


def test_keep_audio_51(wild_rows, tmp_path):
    film24 = next(r for r in wild_rows if r[1]["original_video_filename"] == "film24.mp4")  # 5.1 AAC, 23.976 fps
    write_shard(tmp_path / "fv" / "data" / "s.parquet", [film24])
    stats = run_video_stage(preprocess, tmp_path / "out", root_dir=tmp_path / "fv", scale=1, workers=1,
                            engine="smartcut", keep_audio=True)
    assert stats["counts"]["engine: smartcut"] == 1
    video = tmp_path / "out" / "normal" / "videos" / "film24.mp4"
    ann = read_json(tmp_path / "out" / "normal" / "annotations" / "film24.json")
    assert read_frame_ids(video) == list(range(ann["frame_count"]))
    info = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(video)], capture_output=True, text=True).stderr
    assert "Audio: aac" in info and "5.1" in info
    decodes_everywhere(video, ann["frame_count"])


# ------------------------------------------------------------------ long GOPs: most frames copied, copies bit-exact

@pytest.fixture(scope="module")
def gops(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("gops")
    root = dataset(tmp, [(gop_spec("gop2s"), x264(60), None),
                         (gop_spec("gop5s", fps="25", scenes=3, frames=110), x264(125, bf=2), None),
                         (gop_spec("nobf"), x264(50, bf=0), None)])
    out = tmp / "out"
    run_video_stage(preprocess, out, root_dir=root, scale=3, workers=2, write_clips=True, test_fraction=0.0,
                    engine="smartcut")
    run_video_stage(shuffle_clips, out, workers=2, permutations_per_video=2)
    return tmp, out


def _expected(spec: VideoSpec) -> list[tuple[int, int]]:
    return test_preprocess.expected_clip_frames(spec)


def test_long_gops_frame_exact_with_copies(gops):
    tmp, out = gops
    layout = Layout(out)
    stats = read_json(layout.stats_file("preprocess"))
    assert stats["counts"]["engine: smartcut"] == 3
    assert stats["counts"]["frames re-encoded"] < 0.8 * stats["counts"]["frames written"]
    specs = {s.name: s for s in (gop_spec("gop2s"), gop_spec("gop5s", fps="25", scenes=3, frames=110), gop_spec("nobf"))}
    for vid, spec in specs.items():
        ann = NormalAnnotation.from_dict(read_json(layout.normal_annotation(vid)))
        assert [(c.start_frame, c.end_frame) for c in ann.clips] == _expected(spec)
        assert read_frame_ids(layout.root / ann.video) == list(range(ann.frame_count)), vid
        for c in ann.clips:
            assert read_frame_ids(layout.clip_video(vid, c.index)) == list(range(c.start_frame, c.end_frame))
    test_preprocess.test_shuffled_videos_follow_the_permutation(out)
    for path, frames in every_output(out):
        decodes_everywhere(path, frames)
    assert run_video_stage(final_assertions, out, workers=1, decode=True).ok


def test_only_the_packets_the_cuts_need_are_read(gops):
    """A normal video that ends early in a long source: the demux stops at the first keyframe that
    closes every frame before the end (a 10-minute source is not held in memory for a 1-minute clip),
    and the cut is still frame-exact. gop2s: 300 frames, closed GOPs of 60 with B-frames."""
    tmp, _ = gops
    src = tmp / "gop2s.mp4"
    fps = Fraction(30000, 1001)
    with av.open(str(src)) as c:
        assert len(smartcut.analyse(c, fps).frames) == 300
    for need, read in ((100, 120), (120, 120), (121, 180), (299, 300)):
        with av.open(str(src)) as c:
            got = smartcut.analyse(c, fps, need_frames=need)
        assert sorted(got.frames) == list(range(read)), need
    dst = tmp / "first100.mp4"
    res = smartcut.smart_cut(src, dst, fps, 100, [9, 68, 84])
    assert res.frames == 100 and read_frame_ids(dst) == list(range(100))
    assert decode_errors(dst) is None


def test_copied_frames_are_the_source_packets(gops):
    """Frames the engine says it copied are the source's packets byte for byte; the rest are new IDR pieces."""
    tmp, out = gops
    src = tmp / "gop5s.mp4"
    spec = gop_spec("gop5s", fps="25", scenes=3, frames=110)
    clips = _expected(spec)
    n = clips[-1][1]
    dst = tmp / "direct.mp4"
    res = smartcut.smart_cut(src, dst, Fraction(25), n, [c for ab in clips for c in ab])
    assert res.copied_frames > n // 2 and res.copied_frames + res.encoded_frames == n
    encoded = {k for a, b in res.encode_ranges for k in range(a, b)}

    def packets(path):
        with av.open(str(path)) as c:
            st = c.streams.video[0]
            pk = [(p.pts, bytes(p), p.is_keyframe) for p in c.demux(st) if p.size]
            step = min(b[0] - a[0] for a, b in zip(sorted(pk), sorted(pk)[1:]))
            first = min(p[0] for p in pk)
            return {(p - first) // step: (data, key) for p, data, key in pk}

    source, made = packets(src), packets(dst)
    assert sorted(made) == list(range(n))
    for k in range(n):
        if k in encoded:
            assert made[k][0] != source[k][0]
        else:
            assert made[k][0] == source[k][0], k
    for c in {c for ab in clips for c in ab if c < n}:
        assert made[c][1], f"no keyframe at cut {c}"
    assert read_frame_ids(dst) == list(range(n))


def test_dts_equals_pts_at_every_idr():
    """Decode-order frames of a B-pyramid stream: DTS strictly increases, never passes PTS, equals it at IDRs."""
    frames = [0, 4, 2, 1, 3, 8, 6, 5, 7, 9, 10, 14, 12, 11, 13]  # IDRs at 0, 9 and 10
    dts = smartcut.assign_dts(frames, 64)
    assert all(b > a for a, b in zip(dts, dts[1:]))
    assert all(d <= f * 64 for d, f in zip(dts, frames))
    assert dts[0] == 0 and dts[9] == 9 * 64 and dts[10] == 10 * 64


# ------------------------------------------------------------------ sources smart-cut refuses: the one encode instead

@pytest.mark.video
def test_unsafe_sources_fall_back_and_stay_exact(tmp_path):
    items = [
        (gop_spec("opengop", scenes=3), x264(30, extra="open-gop=1"), None),
        (gop_spec("mpeg4", scenes=3), ["-c:v", "mpeg4", "-q:v", "3", "-g", "30"], None),
        (gop_spec("high10", scenes=3), x264(30)[:-4] + ["-pix_fmt", "yuv420p10le", "-x264-params", "keyint=30"], None),
        (gop_spec("vfr", scenes=3), x264(30, bf=0), "N+5*gte(N\\,100)"),
    ]
    root = dataset(tmp_path, items)
    out = tmp_path / "out"
    stats = run_video_stage(preprocess, out, root_dir=root, scale=4, workers=2, test_fraction=0.0, engine="smartcut")
    c = stats["counts"]
    assert c["engine: one-encode"] == 3 and "engine: smartcut" not in c
    assert c["smartcut fell back to one-encode: open GOPs"] == 1
    assert c["smartcut fell back to one-encode: not H.264"] == 1
    assert c["smartcut fell back to one-encode: pixel format not yuv420p"] == 1
    # a source with a timestamp hole never reaches an engine: the probe rejects it with its reason
    assert stats["rejects_by_reason"] == {"dropped frames (timestamp holes)": 1}  # setpts jumps 5 frames at 100
    layout = Layout(out)
    for vid in ("opengop", "mpeg4", "high10"):
        ann = read_json(layout.normal_annotation(vid))
        assert read_frame_ids(layout.root / ann["video"]) == list(range(ann["frame_count"])), vid


def test_max_height_resize_falls_back(wild_rows, tmp_path):
    film24 = next(r for r in wild_rows if r[1]["original_video_filename"] == "film24.mp4")  # 640x272
    write_shard(tmp_path / "fv" / "data" / "s.parquet", [film24])
    stats = run_video_stage(preprocess, tmp_path / "out", root_dir=tmp_path / "fv", scale=1, workers=1,
                            engine="smartcut", max_height=136)
    assert stats["counts"]["smartcut fell back to one-encode: resized output (--max_height or odd size)"] == 1
    ann = read_json(tmp_path / "out" / "normal" / "annotations" / "film24.json")
    assert (ann["width"], ann["height"]) == (320, 136)
    assert read_frame_ids(tmp_path / "out" / ann["video"]) == list(range(ann["frame_count"]))


def test_engine_option_is_checked(wild_dataset, tmp_path, capsys):
    with pytest.raises(SystemExit):
        preprocess.main(["--root_dir", str(wild_dataset), "--save_dir", str(tmp_path / "o"), "--scale", "1",
                         "--engine", "nope"])
    assert "--engine" in capsys.readouterr().err
    from timewarp.core.errors import UsageError
    with pytest.raises(UsageError, match="--engine"):
        run_video_stage(preprocess, tmp_path / "o", root_dir=wild_dataset, scale=1, engine="fast")
