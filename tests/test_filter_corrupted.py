"""filter_corrupted: damaged or unpaired items end in quarantine with their reason; good ones stay."""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import pytest

from timewarp.core.layout import Layout
from timewarp.preprocess import filter_corrupted, final_assertions
from timewarp.core.store import read_json, read_jsonl, write_json

from stages import run_video_stage

STAGE = filter_corrupted.STAGE
IDS = ["film24", "ntsc30", "pal25", "rand30"]


@pytest.fixture
def out(processed, tmp_path) -> Path:
    """A private copy of the preprocessed + shuffled output (the session fixture stays untouched)."""
    dst = tmp_path / "out"
    shutil.copytree(processed, dst)
    return dst


def tree(root: Path, under: str = "") -> dict[str, str]:
    """{relative path: sha1} of every file below root/under (quarantine, bookkeeping and preprocess's reference
    decodes excluded: a cache the check removes once it served)."""
    base = root / under
    files = {}
    for p in sorted(base.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith(("quarantine/", "rejects/", "stats/", "state/", "cache/reference/")):
            files[rel] = hashlib.sha1(p.read_bytes()).hexdigest()
    return files


def files_of(lay: Layout, vid: str) -> set[str]:
    """Relative paths of everything that belongs to one id (normal, clips, shuffled)."""
    found = {lay.rel(p) for p in (lay.normal_annotation(vid), lay.normal_video(vid),
                                  lay.shuffled_annotation(vid), lay.shuffled_video(vid)) if p.exists()}
    if lay.clip_dir(vid).is_dir():
        found |= {lay.rel(p) for p in lay.clip_dir(vid).glob("*.mp4")}
    return found


def rejects(root: Path) -> list[dict]:
    return read_jsonl(Layout(root).rejects_file(STAGE))


def stats(root: Path) -> dict:
    return read_json(Layout(root).stats_file(STAGE))


# ------------------------------------------------------------------ damage, one item at a time

def truncate(lay, vid):
    p = lay.normal_video(vid)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def random_bytes(lay, vid):
    lay.normal_video(vid).write_bytes(random.Random(1).randbytes(20000))


def empty_file(lay, vid):
    lay.normal_video(vid).write_bytes(b"")


def corrupt_middle(lay, vid):
    """The container stays intact (moov at the end); the H.264 data in the middle is garbage."""
    p = lay.normal_video(vid)
    data = bytearray(p.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 2000] = random.Random(2).randbytes(2000)
    p.write_bytes(bytes(data))


def broken_json(lay, vid):
    p = lay.normal_annotation(vid)
    p.write_text(p.read_text()[:40])


def missing_field(lay, vid):
    data = read_json(lay.normal_annotation(vid))
    del data["clips"]
    write_json(lay.normal_annotation(vid), data)


def wrong_id(lay, vid):
    data = read_json(lay.normal_annotation(vid))
    data["id"] = "somebody_else"
    write_json(lay.normal_annotation(vid), data)


def orphan_annotation(lay, vid):
    lay.normal_video(vid).unlink()


def corrupt_clip(lay, vid):
    lay.clip_video(vid, 1).write_bytes(random.Random(3).randbytes(5000))


DAMAGE = [
    # (damage, id it is done to, the reject reason expected)
    (truncate, "ntsc30", "video does not open"),
    (random_bytes, "film24", "video does not open"),
    (empty_file, "rand30", "empty or missing video file"),
    (corrupt_middle, "pal25", "video does not decode"),
    (broken_json, "pal25", "annotation is not valid JSON"),
    (missing_field, "film24", "annotation does not match the schema"),
    (wrong_id, "rand30", "annotation id differs from its file name"),
    (orphan_annotation, "rand30", "annotation without video"),
    (corrupt_clip, "ntsc30", "clip: video does not open"),
]


@pytest.mark.parametrize("damage,vid,reason", DAMAGE, ids=[d[0].__name__ for d in DAMAGE])
def test_damaged_item_is_quarantined_with_its_reason(out, damage, vid, reason):
    lay = Layout(out)
    damage(lay, vid)
    belongs = files_of(lay, vid)
    assert any(p.startswith("shuffled/") for p in belongs)  # its shuffled outputs must move too
    damaged_bytes = {rel: h for rel, h in tree(out).items() if rel in belongs}
    others = {rel: h for rel, h in tree(out).items() if rel not in belongs}

    st = run_video_stage(filter_corrupted, out, workers=1)

    rows = rejects(out)
    assert [(r["id"], r["reason"]) for r in rows] == [(vid, reason)], rows
    assert rows[0]["stage"] == STAGE and rows[0]["source"]
    assert st["items_in"] == 4 and st["items_out"] == 3
    assert st["rejects_by_reason"] == {reason: 1}
    # everything of the id moved, byte for byte, to the same relative path under quarantine
    qroot = lay.quarantine_dir / STAGE
    for rel, digest in damaged_bytes.items():
        assert not (out / rel).exists(), rel
        assert hashlib.sha1((qroot / rel).read_bytes()).hexdigest() == digest, rel
    assert not lay.clip_dir(vid).exists()
    # the good items are untouched, and what is left passes the final checks
    assert tree(out) == others
    assert run_video_stage(final_assertions, out).ok


def test_orphan_video_and_clip_folder_are_quarantined(out):
    lay = Layout(out)
    before = tree(out)
    shutil.copy(lay.normal_video("pal25"), lay.normal_video("ghost"))
    lay.clip_dir("phantom").mkdir()
    shutil.copy(lay.clip_video("pal25", 0), lay.clip_video("phantom", 0))

    st = run_video_stage(filter_corrupted, out, workers=2)

    assert [(r["id"], r["reason"]) for r in rejects(out)] == [("ghost", "video without annotation"),
                                                             ("phantom", "clip folder without annotation")]
    q = lay.quarantine_dir / STAGE
    assert (q / "normal/videos/ghost.mp4").read_bytes() == lay.normal_video("pal25").read_bytes()
    assert (q / "normal/clips/phantom/0.mp4").read_bytes() == lay.clip_video("pal25", 0).read_bytes()
    assert tree(out) == before
    assert st["items_in"] == 6 and st["items_out"] == 4 and st["counts"]["ids quarantined"] == 2


def test_quarantine_never_overwrites_an_earlier_one(out):
    lay = Layout(out)
    first, second = b"first orphan", b"second orphan"
    lay.normal_video("ghost").write_bytes(first)
    run_video_stage(filter_corrupted, out)
    lay.normal_video("ghost").write_bytes(second)
    run_video_stage(filter_corrupted, out)
    q = lay.quarantine_dir / STAGE / "normal" / "videos"
    assert (q / "ghost.mp4").read_bytes() == first
    assert (q / "ghost~1.mp4").read_bytes() == second
    assert [r["reason"] for r in rejects(out)] == ["video without annotation"]


def test_rerun_skips_verified_files_until_they_change(out):
    lay = Layout(out)
    n_clips = sum(len(list(lay.clip_dir(v).glob("*.mp4"))) for v in IDS)
    st = run_video_stage(filter_corrupted, out, workers=2)
    assert st["counts"]["videos verified"] == 4 and st["counts"]["clip files verified"] == n_clips
    assert st["counts"]["videos already verified"] == 0
    record = read_json(lay.state_file(STAGE))
    assert sorted(record["verified"]) == IDS

    st = run_video_stage(filter_corrupted, out)
    assert st["counts"]["videos verified"] == 0 and st["counts"]["clip files verified"] == 0
    assert st["counts"]["videos already verified"] == 4
    assert st["counts"]["clip files already verified"] == n_clips
    assert st["items_out"] == 4 and st["rejected"] == 0

    # a touched video is decoded again; the others are not
    video = lay.normal_video("film24")
    os.utime(video, ns=(video.stat().st_atime_ns, video.stat().st_mtime_ns + 10**9))
    st = run_video_stage(filter_corrupted, out)
    assert st["counts"]["videos verified"] == 1 and st["counts"]["videos already verified"] == 3

    # a verified video damaged afterwards (same name, new size) is caught on the next run
    truncate(lay, "pal25")
    st = run_video_stage(filter_corrupted, out)
    assert [(r["id"], r["reason"]) for r in rejects(out)] == [("pal25", "video does not open")]
    assert "pal25" not in read_json(lay.state_file(STAGE))["verified"]

    # --overwrite decodes everything again
    assert filter_corrupted.main(["--root_dir", str(out), "--overwrite", "--workers", "1"]) == 0
    st = stats(out)
    assert st["counts"]["videos verified"] == 3 and st["counts"]["videos already verified"] == 0
    assert st["options"]["overwrite"] is True


def test_unreadable_record_means_decode_again(out):
    lay = Layout(out)
    run_video_stage(filter_corrupted, out)
    lay.state_file(STAGE).write_text("{not json")
    st = run_video_stage(filter_corrupted, out)
    assert st["counts"]["videos verified"] == 4
    assert read_json(lay.state_file(STAGE))["version"] == filter_corrupted.RECORD_VERSION


def test_limit_checks_only_the_first_ids_and_keeps_the_record(out):
    run_video_stage(filter_corrupted, out)
    lay = Layout(out)
    truncate(lay, "rand30")  # last in sorted order: outside --limit 2
    st = run_video_stage(filter_corrupted, out, limit=2, overwrite=True)
    assert st["items_in"] == 2 and st["counts"]["videos verified"] == 2 and st["rejected"] == 0
    assert lay.normal_video("rand30").exists()
    assert sorted(read_json(lay.state_file(STAGE))["verified"]) == IDS


def test_usage_errors_are_one_line(tmp_path, capsys):
    assert filter_corrupted.main(["--root_dir", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing" in err and "Traceback" not in err

    (tmp_path / "empty" / "normal" / "videos").mkdir(parents=True)
    (tmp_path / "empty" / "normal" / "videos" / "a.mp4").write_bytes(b"x")
    assert filter_corrupted.main(["--root_dir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no normal annotations" in err
    assert (tmp_path / "empty" / "normal" / "videos" / "a.mp4").exists()  # nothing moved


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        filter_corrupted.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--root_dir", "--workers", "--limit", "--overwrite", "--log_level", "--shuffled_dir_name"):
        assert opt in text
    assert filter_corrupted.build_parser().parse_args(["--root_dir", "x", "--seed", "7"]).seed == 7


def test_rejects_and_moves_do_not_depend_on_workers(processed, tmp_path):
    outputs = []
    for workers in (1, 2):
        dst = tmp_path / f"w{workers}"
        shutil.copytree(processed, dst)
        lay = Layout(dst)
        truncate(lay, "ntsc30")
        broken_json(lay, "pal25")
        run_video_stage(filter_corrupted, dst, workers=workers)
        rows = Layout(dst).rejects_file(STAGE).read_text()
        record = json.loads(lay.state_file(STAGE).read_text())
        outputs.append((rows, sorted(record["verified"]), tree(dst)))
    assert outputs[0] == outputs[1]
