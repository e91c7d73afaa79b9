"""Preprocess + shuffle on real generated videos, checked frame by frame against the source specs."""
from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import pytest

from conftest import wild_specs
from timewarp.core.layout import Layout
from timewarp.preprocess import preprocess, shuffle_clips
from timewarp.sample_data import SceneSpec, VideoSpec, metadata_for, read_frame_ids, render_video, write_shard
from timewarp.core.schema import NormalAnnotation, ShuffledAnnotation
from timewarp.core.store import read_json, read_jsonl

from stages import run_video_stage


def expected_clip_frames(spec: VideoSpec) -> list[tuple[int, int]]:
    """Independent oracle: the frames each scene's activities cover, from the spec that drew them."""
    out, start = [], 0
    for scene in spec.scenes:
        acts = scene.activities or [(0, scene.frames)]
        out.append((start + acts[0][0], start + acts[-1][1]))
        start += scene.frames
    return out


@pytest.fixture(params=["processed", "processed_one_encode"])
def engine_output(request) -> Path:
    """The wild set through each engine: smart-cut (the default) and one-encode."""
    return request.getfixturevalue(request.param)


def test_both_engines_ran(processed, processed_one_encode):
    assert read_json(Layout(processed).stats_file("preprocess"))["counts"]["engine: smartcut"] == 3
    assert read_json(Layout(processed_one_encode).stats_file("preprocess"))["counts"]["engine: one-encode"] == 4


def test_normal_videos_and_clips_are_frame_exact(engine_output):
    processed = engine_output
    layout = Layout(processed)
    specs = {s.name: s for s in wild_specs()}
    assert layout.normal_ids() == sorted(specs)
    for vid, spec in specs.items():
        ann = NormalAnnotation.from_dict(read_json(layout.normal_annotation(vid)))
        assert Fraction(ann.fps_rational) == Fraction(spec.fps)
        assert [(c.start_frame, c.end_frame) for c in ann.clips] == expected_clip_frames(spec)
        fps = Fraction(spec.fps)
        for c in ann.clips:  # seconds agree with frames to the microsecond
            assert abs(c.start - float(c.start_frame / fps)) < 1e-6 and abs(c.end - float(c.end_frame / fps)) < 1e-6
        ids = read_frame_ids(layout.root / ann.video)
        assert ids == list(range(ann.clips[-1].end_frame)), vid  # 0 .. end of last clip, gaps included
        for c in ann.clips:
            assert read_frame_ids(layout.clip_video(vid, c.index)) == list(range(c.start_frame, c.end_frame)), (vid, c.index)
        assert (ann.width, ann.height) == (spec.size[0] - spec.size[0] % 2, spec.size[1] - spec.size[1] % 2)


def test_shuffled_videos_follow_the_permutation(engine_output):
    layout = Layout(engine_output)
    for sid in layout.shuffled_ids():
        sh = ShuffledAnnotation.from_dict(read_json(layout.shuffled_annotation(sid)))
        normal = NormalAnnotation.from_dict(read_json(layout.normal_annotation(sh.normal_id)))
        assert sorted(sh.permutation) == list(range(len(normal.clips)))
        assert sh.permutation != list(range(len(normal.clips)))
        expected = []
        for src in sh.permutation:
            c = normal.clips[src]
            expected += range(c.start_frame, c.end_frame)
        assert read_frame_ids(layout.root / sh.video) == expected, sid
        pos = 0
        for i, c in enumerate(sh.clips):
            src = normal.clips[sh.permutation[i]]
            assert c.source_index == sh.permutation[i] and c.caption == src.caption
            assert (c.start_frame, c.end_frame) == (pos, pos + src.end_frame - src.start_frame)
            pos = c.end_frame


def test_shuffle_is_seeded_and_resumes(processed, tmp_path):
    out = tmp_path / "o"
    shutil.copytree(processed, out)
    layout = Layout(out)
    before = {s: read_json(layout.shuffled_annotation(s))["permutation"] for s in layout.shuffled_ids()}
    stats = run_video_stage(shuffle_clips, out, workers=1)
    assert stats["counts"]["already done"] == len(before)
    stats = run_video_stage(shuffle_clips, out, workers=1, seed=7, overwrite=True, permutations_per_video=2)
    after = {s: read_json(layout.shuffled_annotation(s))["permutation"] for s in layout.shuffled_ids()}
    assert len(after) == 2 * len(before)
    assert any(after[s] != before[s] for s in before)  # another seed, other permutations
    for vid in before:
        assert after[vid] != after[f"{vid}__p1"]


def test_scale_is_exact_and_skips_bad_videos(wild_rows, tmp_path):
    bad = [(b"\x00" * 4000 + b"not an mp4", metadata_for(VideoSpec(f"bad{i}", wild_specs()[0].scenes))) for i in range(3)]
    root = tmp_path / "fv"
    write_shard(root / "data" / "train-00000-of-00002.parquet", wild_rows[:2] + bad[:2])
    write_shard(root / "data" / "train-00001-of-00002.parquet", wild_rows[2:] + bad[2:], json_as="string")
    out = tmp_path / "out"
    stats = run_video_stage(preprocess, out, root_dir=root, scale=3, workers=2)
    assert len(Layout(out).normal_ids()) == 3 and stats["items_out"] == 3
    rejected = {r["id"]: r["reason"] for r in read_jsonl(Layout(out).rejects_file("preprocess"))}
    assert set(rejected.values()) <= {"video does not open", "video does not decode", "no video stream"}
    # asking for more than exists gives all usable ones and says so
    out2 = tmp_path / "out2"
    stats = run_video_stage(preprocess, out2, root_dir=root, scale=10, workers=1)
    assert stats["items_out"] == 4 and len(Layout(out2).normal_ids()) == 4
    assert {r["id"] for r in read_jsonl(Layout(out2).rejects_file("preprocess"))} == {"bad0", "bad1", "bad2"}


def test_selection_is_seeded_and_independent_of_file_order(wild_rows, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_shard(a / "data" / "train-00000.parquet", wild_rows[:2])
    write_shard(a / "data" / "train-00001.parquet", wild_rows[2:])
    write_shard(b / "x" / "zz.parquet", wild_rows[2:][::-1])
    write_shard(b / "y" / "aa.parquet", wild_rows[:2][::-1])
    picks = {}
    for name, root in (("a", a), ("b", b)):
        run_video_stage(preprocess, tmp_path / f"out_{name}", root_dir=root, scale=2, seed=3, workers=1)
        picks[name] = Layout(tmp_path / f"out_{name}").normal_ids()
    assert picks["a"] == picks["b"] and len(picks["a"]) == 2
    run_video_stage(preprocess, tmp_path / "out_seed", root_dir=a, scale=2, seed=4, workers=1)
    seeds = {tuple(Layout(tmp_path / "out_seed").normal_ids())}
    for s in range(5, 12):  # some other seed picks another pair
        run_video_stage(preprocess, tmp_path / f"out_s{s}", root_dir=a, scale=2, seed=s, workers=1)
        seeds.add(tuple(Layout(tmp_path / f"out_s{s}").normal_ids()))
    assert len(seeds) > 1


def _zero_mp4_chunks(shard: Path, rows_to_damage: set[int]) -> None:
    """Overwrite the mp4 column chunk of the given rows (one row per row group) with garbage on disk."""
    import pyarrow.parquet as pq

    md = pq.ParquetFile(shard).metadata
    col = md.schema.to_arrow_schema().get_field_index("mp4")
    with open(shard, "r+b") as fh:
        for rg in rows_to_damage:
            cc = md.row_group(rg).column(col)
            start = cc.dictionary_page_offset or cc.data_page_offset
            fh.seek(start)
            fh.write(b"\xff" * cc.total_compressed_size)


def test_selection_never_reads_unchosen_mp4_bytes(wild_rows, tmp_path):
    from timewarp.core.splits import rank_key

    shard = tmp_path / "fv" / "data" / "train-00000-of-00001.parquet"
    write_shard(shard, wild_rows, row_group_size=1)
    ids = [r[1]["original_video_filename"][:-4] for r in wild_rows]
    order = sorted(range(len(ids)), key=lambda i: rank_key(42, ids[i]))
    chosen, unchosen = order[:2], order[2:]
    _zero_mp4_chunks(shard, set(unchosen))
    out = tmp_path / "out"
    stats = run_video_stage(preprocess, out, root_dir=tmp_path / "fv", scale=2, workers=1)
    assert stats["rejected"] == 0
    assert Layout(out).normal_ids() == sorted(ids[i] for i in chosen)


def test_other_layouts_and_json_forms(wild_rows, tmp_path):
    root = tmp_path / "fv"
    (root / "videos").mkdir(parents=True)
    (root / "metadata").mkdir()
    (root / "pairs").mkdir()
    mp4, meta = wild_rows[0]
    (root / "videos" / "sample_0.mp4").write_bytes(mp4)
    (root / "metadata" / "sample_0.json").write_text(json.dumps(meta))
    mp4, meta = wild_rows[1]
    (root / "pairs" / "abc.mp4").write_bytes(mp4)
    (root / "pairs" / "abc.json").write_bytes(json.dumps(meta).encode())
    (root / "pairs" / "lonely.mp4").write_bytes(mp4)
    out = tmp_path / "out"
    stats = run_video_stage(preprocess, out, root_dir=root, scale=5, workers=1)
    assert Layout(out).normal_ids() == sorted([wild_rows[0][1]["original_video_filename"][:-4],
                                               wild_rows[1][1]["original_video_filename"][:-4]])
    assert {r["reason"] for r in read_jsonl(Layout(out).rejects_file("preprocess"))} == {"video without metadata"}
    assert stats["items_out"] == 2


def test_max_height_and_audio(wild_rows, tmp_path):
    root = tmp_path / "fv"
    write_shard(root / "data" / "s.parquet", [wild_rows[1]])  # 640x272, 5.1 audio
    out = tmp_path / "out"
    run_video_stage(preprocess, out, root_dir=root, scale=1, workers=1, max_height=136, keep_audio=True)
    layout = Layout(out)
    ann = NormalAnnotation.from_dict(read_json(layout.normal_annotation("film24")))
    assert (ann.width, ann.height) == (320, 136)
    import cv2
    cap = cv2.VideoCapture(str(layout.root / ann.video))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (320, 136)
    cap.release()
    assert read_frame_ids(layout.root / ann.video) == list(range(ann.frame_count))
    from timewarp.media.video import ffmpeg_exe
    import subprocess
    info = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(layout.root / ann.video)], capture_output=True, text=True).stderr
    assert "Audio: aac" in info


@pytest.mark.video
def test_times_not_on_frame_boundaries_and_past_the_end(tmp_path):
    """Times off the frame grid, clips past the real end (clamped within tolerance, dropped beyond)."""
    spec = VideoSpec("offgrid", [SceneSpec(30, "red", "square"), SceneSpec(30, "blue", "bar"), SceneSpec(30, "green", "circle")],
                     fps="30000/1001", bframes=2)
    meta = metadata_for(spec)
    scenes = meta["content_metadata"]["scenes"]
    scenes[0]["activities"][0]["timestamp"] = {"start_timestamp": "00:00:00.250", "end_timestamp": "00:00:01.000"}
    scenes[1]["activities"][0]["timestamp"] = {"start_timestamp": "00:00:01.500", "end_timestamp": "00:00:02.000"}
    scenes[2]["activities"][0]["timestamp"] = {"start_timestamp": "00:00:02.100", "end_timestamp": "00:00:04.000"}
    src = tmp_path / "offgrid.mp4"
    render_video(spec, src)
    root = tmp_path / "fv"
    write_shard(root / "data" / "s.parquet", [(src.read_bytes(), meta)])
    out = tmp_path / "out"
    run_video_stage(preprocess, out, root_dir=root, scale=1, workers=1)
    ann = NormalAnnotation.from_dict(read_json(Layout(out).normal_annotation("offgrid")))
    fps = Fraction(30000, 1001)
    # frame k is in [s, e) iff s <= k/fps < e; 90 frames = 3.003 s so the last clip is clamped
    def frames(s, e):
        return [k for k in range(90) if Fraction(s) <= k / fps < Fraction(e)]
    want = [frames("0.25", "1.0"), frames("1.5", "2.0"), frames("2.1", "4.0")]
    assert [list(range(c.start_frame, c.end_frame)) for c in ann.clips] == want
    assert read_frame_ids(Layout(out).root / ann.video) == list(range(90))


def test_resume_skips_done_videos(wild_dataset, tmp_path):
    out = tmp_path / "out"
    run_video_stage(preprocess, out, root_dir=wild_dataset, scale=2, workers=1)
    layout = Layout(out)
    first = {v: layout.normal_video(v).stat().st_mtime_ns for v in layout.normal_ids()}
    stats = run_video_stage(preprocess, out, root_dir=wild_dataset, scale=3, workers=1)
    assert stats["counts"]["already done"] == 2
    assert {v: layout.normal_video(v).stat().st_mtime_ns for v in first} == first
    assert len(layout.normal_ids()) == 3
    assert not list(layout.root.rglob(".tmp-*"))


def test_overwrite_with_other_clips_leaves_nothing_stale(wild_dataset, tmp_path):
    from timewarp.preprocess import final_assertions

    out = tmp_path / "out"
    run_video_stage(preprocess, out, root_dir=wild_dataset, scale=2, workers=1, write_clips=True)
    run_video_stage(shuffle_clips, out, workers=1, permutations_per_video=2)
    layout = Layout(out)
    run_video_stage(preprocess, out, root_dir=wild_dataset, scale=2, workers=1, write_clips=True, overwrite=True,
                    max_clips=2)
    for vid in layout.normal_ids():
        ann = read_json(layout.normal_annotation(vid))
        assert len(ann["clips"]) == 2
        assert sorted(p.name for p in layout.clip_dir(vid).iterdir()) == ["0.mp4", "1.mp4"]
    run_video_stage(shuffle_clips, out, workers=1)  # not --overwrite: the old 3-4 clip shuffles must not be kept
    for vid in layout.normal_ids():
        assert read_json(layout.shuffled_annotation(vid))["permutation"] == [1, 0]
        assert not layout.shuffled_annotation(f"{vid}__p1").exists() and not layout.shuffled_video(f"{vid}__p1").exists()
    assert run_video_stage(final_assertions, out, workers=1).ok


def test_save_dir_around_or_equal_to_the_dataset(wild_rows, tmp_path):
    """--save_dir may contain --root_dir, or be it: our outputs are never read back as input."""
    outer = tmp_path / "outer"
    write_shard(outer / "fv" / "data" / "s.parquet", wild_rows[:2])
    (outer / "fv" / "README.json").write_text("{}")  # a stray json is no video's metadata
    stats = run_video_stage(preprocess, outer, root_dir=outer / "fv", scale=2, workers=1)
    assert stats["items_out"] == 2 and stats["rejected"] == 0
    same = tmp_path / "same"
    write_shard(same / "data" / "s.parquet", wild_rows[:2])
    run_video_stage(preprocess, same, root_dir=same, scale=2, workers=1)
    stats = run_video_stage(preprocess, same, root_dir=same, scale=2, workers=1, overwrite=True)  # normal/videos/*.mp4 are not inputs
    assert stats["rejected"] == 0 and stats["records_seen"] == 2


def test_main_builds_the_config_and_the_executor_from_the_command_line(monkeypatch, tmp_path):
    """Each option reaches the run: --executor/--workers as the Executor (before, preprocess ran --executor ray
    on the local pool), every other option as a field of the stage's Config."""
    from timewarp.core.parallel import Executor
    from timewarp.preprocess import filter_corrupted, final_assertions

    src = tmp_path / "fv"
    src.mkdir()
    common = ["--executor", "ray", "--workers", "3", "--limit", "2", "--log_level", "WARNING"]
    cases = [
        (preprocess, ["--root_dir", str(src), "--save_dir", str(tmp_path / "out"), "--scale", "7", "--max_clips", "3",
                      "--keep_audio", "--x264_threads", "2", "--engine", "smartcut", "--write_clips"],
         dict(layout=Layout(tmp_path / "out"), root_dir=str(src), scale=7, max_clips=3, keep_audio=True,
              x264_threads=2, engine="smartcut", write_clips=True)),
        (shuffle_clips, ["--root_dir", str(tmp_path), "--permutations_per_video", "2", "--seed", "5",
                         "--shuffled_dir_name", "s2"],
         dict(layout=Layout(tmp_path, "s2"), permutations_per_video=2, seed=5)),
        (filter_corrupted, ["--root_dir", str(tmp_path), "--overwrite"], dict(layout=Layout(tmp_path), overwrite=True)),
        (final_assertions, ["--root_dir", str(tmp_path), "--decode", "--source_root", "", "--min_clips", "3"],
         dict(layout=Layout(tmp_path), decode=True, source_root="", min_clips=3)),
    ]
    for module, argv, fields in cases:
        seen = []
        monkeypatch.setattr(module, "run", lambda cfg, executor: seen.append((cfg, executor)) or final_assertions.Report())
        assert module.main(argv + common) == 0
        assert seen == [(module.Config(limit=2, **fields), Executor("ray", workers=3))], module.__name__
    cfg = preprocess.Config(layout=Layout(tmp_path), root_dir=src, scale=1, max_clips=3, preset="slow", x264_threads=2)
    assert (cfg.clip.max_clips, cfg.encode.preset, cfg.encode.threads) == (3, "slow", 2)
