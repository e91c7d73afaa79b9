"""final_assertions: passes on clean output; each tampered annotation or video is named as a violation."""
from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import pytest

from timewarp.core.errors import ItemError
from timewarp.core.layout import Layout
from timewarp.preprocess import final_assertions
from timewarp.core.store import read_json, read_jsonl, write_json
from timewarp.media.verify import read_packets

from stages import run_video_stage

STAGE = final_assertions.STAGE


@pytest.fixture
def out(processed, tmp_path) -> Path:
    """A private copy of the preprocessed + shuffled output (the session fixture stays untouched)."""
    dst = tmp_path / "out"
    shutil.copytree(processed, dst)
    return dst


def edit(path: Path, fn) -> None:
    data = read_json(path)
    fn(data)
    write_json(path, data)


def fps_of(ann: dict) -> Fraction:
    return Fraction(ann["fps_rational"])


def set_frames(clip: dict, fps: Fraction, start: int | None = None, end: int | None = None) -> None:
    """Move a clip's frames and keep its times consistent with them (so only the intended check fails)."""
    if start is not None:
        clip["start_frame"], clip["start"] = start, round(float(start / fps), 6)
    if end is not None:
        clip["end_frame"], clip["end"] = end, round(float(end / fps), 6)


# ------------------------------------------------------------------ tampering

def clip_past_video_end(lay):
    def fn(a):
        set_frames(a["clips"][-1], fps_of(a), end=a["frame_count"] + 30)
    edit(lay.normal_annotation("film24"), fn)
    return {"film24"}, "clip inside video"


def wrong_frame_count(lay):
    def fn(a):
        a["frame_count"] += 5
        a["duration"] = round(float(a["frame_count"] / fps_of(a)), 6)
        set_frames(a["clips"][-1], fps_of(a), end=a["frame_count"])
    edit(lay.normal_annotation("rand30"), fn)
    return {"rand30"}, "video frame count"


def overlapping_clips(lay):
    def fn(a):
        set_frames(a["clips"][1], fps_of(a), start=a["clips"][0]["end_frame"] - 5)
    edit(lay.normal_annotation("pal25"), fn)
    return {"pal25"}, "clips ordered and non-overlapping"


def time_off_its_frame(lay):
    edit(lay.normal_annotation("ntsc30"), lambda a: a["clips"][2].update(start=a["clips"][2]["start"] + 0.01))
    return {"ntsc30"}, "clip times match frames"


def one_clip_only(lay):
    def fn(a):
        a["clips"] = a["clips"][-1:]
        a["clips"][0]["index"] = 0
    edit(lay.normal_annotation("film24"), fn)
    return {"film24"}, "clip count"


def duplicate_source_id(lay):
    # rand30 and pal25 are both in the test split: a plain duplicate
    edit(lay.normal_annotation("pal25"), lambda a: a.update(source_id="rand30"))
    edit(lay.shuffled_annotation("pal25"), lambda a: a.update(source_id="rand30"))
    return {"pal25", "rand30"}, "duplicate source_id"


def source_id_in_both_splits(lay):
    assert read_json(lay.normal_annotation("film24"))["split"] == "train"
    assert read_json(lay.shuffled_annotation("ntsc30"))["split"] == "test"
    # the shuffled copy of a test video claims to be training data
    edit(lay.shuffled_annotation("ntsc30"), lambda a: a.update(split="train"))
    return {"ntsc30"}, "source_id in both splits"


def normal_duplicate_across_splits(lay):
    # ntsc30 (test) claims film24's (train) source video: the same video would be in both splits
    edit(lay.normal_annotation("ntsc30"), lambda a: a.update(source_id="film24"))
    edit(lay.shuffled_annotation("ntsc30"), lambda a: a.update(source_id="film24"))
    return {"ntsc30", "film24"}, "source_id in both splits"


def id_not_file_name(lay):
    edit(lay.normal_annotation("pal25"), lambda a: a.update(id="pal26"))
    return {"pal25"}, "id matches file name"


def video_of_another_id(lay):
    shutil.copy(lay.normal_video("ntsc30"), lay.normal_video("pal25"))
    return {"pal25"}, "video size"


def clip_file_of_wrong_length(lay):
    shutil.copy(lay.clip_video("ntsc30", 1), lay.clip_video("ntsc30", 0))  # 39 frames where 34 belong
    return {"ntsc30"}, "clip file frames"


def orphan_video(lay):
    shutil.copy(lay.normal_video("pal25"), lay.normal_video("ghost"))
    return {"ghost"}, "video without annotation"


def identity_permutation(lay):
    def fn(s):
        s["permutation"] = sorted(s["permutation"])
    edit(lay.shuffled_annotation("film24"), fn)
    return {"film24"}, "shuffled permutation"


def permutation_not_of_the_clips(lay):
    edit(lay.shuffled_annotation("pal25"), lambda s: s.update(permutation=[2, 1, 1]))
    return {"pal25"}, "shuffled permutation"


def permutation_disagrees_with_clips(lay):
    # a valid non-identity permutation, but not the one the clips (and the video) follow
    def fn(s):
        s["permutation"] = s["permutation"][1:] + s["permutation"][:1]
    edit(lay.shuffled_annotation("ntsc30"), fn)
    return {"ntsc30"}, "shuffled clips follow permutation"


def shuffled_caption_swapped(lay):
    def fn(s):
        s["clips"][0]["caption"], s["clips"][1]["caption"] = s["clips"][1]["caption"], s["clips"][0]["caption"]
    edit(lay.shuffled_annotation("rand30"), fn)
    return {"rand30"}, "shuffled clip caption"


def shuffled_timeline_gap(lay):
    def fn(s):
        fps = fps_of(s)
        for c in s["clips"][1:]:
            set_frames(c, fps, start=c["start_frame"] + 3, end=c["end_frame"] + 3)
    edit(lay.shuffled_annotation("film24"), fn)
    return {"film24"}, "shuffled timeline contiguous"


def shuffled_video_is_the_normal_one(lay):
    shutil.copy(lay.normal_video("rand30"), lay.shuffled_video("rand30"))
    return {"rand30"}, "shuffled video frame count"


TAMPER = [clip_past_video_end, wrong_frame_count, overlapping_clips, time_off_its_frame, one_clip_only,
          duplicate_source_id, source_id_in_both_splits, normal_duplicate_across_splits, id_not_file_name,
          video_of_another_id, clip_file_of_wrong_length, orphan_video, identity_permutation,
          permutation_not_of_the_clips, permutation_disagrees_with_clips, shuffled_caption_swapped,
          shuffled_timeline_gap, shuffled_video_is_the_normal_one]


def test_clean_output_passes(out, capsys):
    assert Layout(out).shuffled_ids(), "the fixture should include shuffled outputs"
    assert final_assertions.main(["--root_dir", str(out), "--workers", "2"]) == 0
    text = capsys.readouterr().out
    assert "all checks pass: 4 normal and 4 shuffled annotations" in text
    st = read_json(Layout(out).stats_file(STAGE))
    assert st["items_in"] == 8 and st["items_out"] == 8 and st["rejected"] == 0
    assert read_jsonl(Layout(out).rejects_file(STAGE)) == []


def test_clean_output_passes_when_decoding(out):
    report = run_video_stage(final_assertions, out, decode=True)
    assert report.ok, report.violations


@pytest.mark.parametrize("tamper", TAMPER, ids=[t.__name__ for t in TAMPER])
def test_tampering_is_named(out, tamper, capsys):
    lay = Layout(out)
    ids, check = tamper(lay)

    rc = final_assertions.main(["--root_dir", str(out), "--workers", "1"])

    assert rc == 1
    text = capsys.readouterr().out
    rows = read_jsonl(lay.rejects_file(STAGE))
    found = {(r["id"], r["reason"]) for r in rows}
    for vid in ids:
        assert (vid, check) in found, rows
    assert {r["id"] for r in rows} <= ids, rows           # nothing else is blamed
    header = text.splitlines()[0].split()
    assert header == ["id", "check", "detail"]
    assert any(line.split()[0] in ids and check in line for line in text.splitlines()[2:]), text
    st = read_json(lay.stats_file(STAGE))
    assert st["rejects_by_reason"].get(check, 0) >= 1 and st["rejected"] == len(rows)


def test_short_video_is_caught_with_and_without_decode(out):
    """A normal video cut short (a valid file, one clip missing): the container count and the decode both see it,
    and the clip file and shuffled video of the missing clip are no longer copies of the normal video's frames."""
    lay = Layout(out)
    ann = read_json(lay.normal_annotation("pal25"))
    assert run_video_stage(final_assertions, out, decode=True).ok
    from timewarp.media.video import concat_copy
    tmp = lay.root / "cut.mp4"
    concat_copy(lay.normal_video("pal25"), Fraction(ann["fps_rational"]),
                [(tmp, [(0, ann["clips"][1]["end_frame"])])])
    tmp.replace(lay.normal_video("pal25"))
    for decode in (False, True):
        report = run_video_stage(final_assertions, out, decode=decode)
        assert [(v.id, v.kind, v.check) for v in report.violations] == [
            ("pal25", "normal", "clip file is the clip's frames"),
            ("pal25", "shuffled", "shuffled video is the clips' frames"), ("pal25", "normal", "video frame count")]
        assert "normal/videos/pal25.mp4" in report.violations[0].detail and str(out) not in report.violations[0].detail
        assert report.stats["items_out"] == 6


def test_decode_counts_the_frames_really_there(out):
    """A video cut short behind an intact index (moov first): the packets really there are counted, not the
    container's claim (and the copies of the lost frames are no longer copies)."""
    import subprocess

    from timewarp.media.video import ffmpeg_exe
    lay = Layout(out)
    video = lay.normal_video("pal25")
    front = lay.root / "front.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(video), "-c", "copy", "-movflags", "+faststart",
                    str(front)], check=True)
    data = front.read_bytes()
    video.write_bytes(data[: int(len(data) * 0.7)])
    front.unlink()
    report = run_video_stage(final_assertions, out)  # the container still claims every frame
    assert ("pal25", "video frame count") in [(v.id, v.check) for v in report.violations]
    assert {v.id for v in report.violations} == {"pal25"}
    report = run_video_stage(final_assertions, out, decode=True)
    assert ("pal25", "video frame count") in [(v.id, v.check) for v in report.violations]
    assert report.stats["options"]["decode"] is True


def test_a_crashing_check_fails_the_run(out, monkeypatch):
    def boom(cfg, sid):
        raise RuntimeError("bug in a check")
    monkeypatch.setattr(final_assertions, "check_shuffled", boom)
    report = run_video_stage(final_assertions, out, workers=1)
    assert not report.ok
    assert {(v.id, v.check) for v in report.violations} == {(i, "internal error") for i in Layout(out).shuffled_ids()}
    assert report.stats["items_out"] == 4
    assert all("RuntimeError: bug in a check" in v.detail for v in report.violations)


def test_a_check_raising_item_error_is_a_violation_too(out, monkeypatch):
    """Whatever a worker raises (ItemError -> Rejected, anything else -> Failed), the item does not pass."""
    def refuse(cfg, vid, *_record):
        raise ItemError("cannot check", vid)
    monkeypatch.setattr(final_assertions, "check_normal", refuse)
    report = run_video_stage(final_assertions, out, workers=1)  # (a local function does not pickle to a pool)
    assert {(v.id, v.check, v.detail) for v in report.violations} == {(i, "cannot check", i)
                                                                      for i in Layout(out).normal_ids()}
    assert report.stats["items_out"] == len(Layout(out).shuffled_ids())


def test_limit_and_usage_errors(out, tmp_path, capsys):
    report = run_video_stage(final_assertions, out, limit=1)
    assert report.ok and report.stats["items_in"] == 2
    assert final_assertions.main(["--root_dir", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing" in err and "Traceback" not in err
    (tmp_path / "bare").mkdir()
    assert final_assertions.main(["--root_dir", str(tmp_path / "bare")]) == 2
    assert "no normal annotations" in capsys.readouterr().err


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        final_assertions.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--root_dir", "--decode", "--min_clips", "--workers", "--limit", "--log_level"):
        assert opt in text


def shift_one_frame(video: Path) -> None:
    """Re-encode ``video`` with every frame one late (the first shown twice): same count, size and rate."""
    import subprocess

    from timewarp.media.video import ffmpeg_exe
    tmp = video.with_name("shifted.mp4")
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(video), "-vf", "tpad=start=1:start_mode=clone",
                    "-frames:v", str(len(read_packets(video))),
                    "-c:v", "libx264", "-bf", "0", "-pix_fmt", "yuv420p", str(tmp)], check=True)
    tmp.replace(video)


def test_frames_are_checked_here_unless_filter_corrupted_verified_these_files(out):
    """After filter_corrupted the content pass is not paid twice; a video changed since is checked here, by
    its pixels against the source (times and counts alone pass a video whose frames are one late)."""
    from timewarp.preprocess import filter_corrupted
    run_video_stage(filter_corrupted, out)
    report = run_video_stage(final_assertions, out)
    assert report.ok and report.stats["counts"]["normal videos' frames checked by filter_corrupted"] == 4
    shift_one_frame(Layout(out).normal_video("ntsc30"))
    report = run_video_stage(final_assertions, out)
    checks = {(v.id, v.kind, v.check) for v in report.violations}
    assert ("ntsc30", "normal", "frame differs from its source frame") in checks
    assert {v.id for v in report.violations} == {"ntsc30"}
    assert report.stats["counts"]["normal videos' frames checked by source"] == 1
    # without the source only times and counts are left: they cannot see it
    report = run_video_stage(final_assertions, out, source_root="")
    assert ("ntsc30", "normal", "frame differs from its source frame") not in {
        (v.id, v.kind, v.check) for v in report.violations}


def test_without_a_source_the_video_is_still_decoded_whole(out):
    """No source to compare with (--source_root ''): a damaged packet is still found, by decoding the video."""
    from test_filter_corrupted import corrupt_middle
    corrupt_middle(Layout(out), "pal25")
    report = run_video_stage(final_assertions, out, source_root="")
    assert ("pal25", "normal", "video does not decode") in {(v.id, v.kind, v.check) for v in report.violations}
    assert report.stats["counts"]["normal videos' frames checked by times"] == 4
