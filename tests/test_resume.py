"""Kill and resume (real SIGKILL of a stage's process group) and determinism across --workers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from timewarp.core.layout import Layout
from timewarp.preprocess import preprocess, shuffle_clips
from timewarp.sample_data import read_frame_ids
from timewarp.core.store import TEMP_PREFIXES, read_json

from stages import run_video_stage

ROOT = Path(__file__).resolve().parents[1]


def json_files(root: Path) -> dict[str, bytes]:
    """Every JSON data output (stats excluded: they hold timings) by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.json"))
            if "stats" not in p.relative_to(root).parts and "state" not in p.relative_to(root).parts}


def kill_when(cmd: list, ready, timeout: float = 60.0) -> bool:
    """Start ``cmd`` in its own process group; SIGKILL the group as soon as ``ready()``; True if killed mid-run."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout:
            if proc.poll() is not None:
                return False
            if ready():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.005)
        raise AssertionError(f"{cmd} neither finished nor became ready in {timeout}s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def no_half_files(root: Path) -> None:
    """Every file under its final name is whole: JSON parses, every mp4 decodes to its annotated frames."""
    for p in root.rglob("*.json"):
        if not p.name.startswith(TEMP_PREFIXES):  # a temp file is half by design; only final names must be whole
            read_json(p)
    layout = Layout(root)
    for vid in layout.normal_ids():
        ann = read_json(layout.normal_annotation(vid))
        assert read_frame_ids(root / ann["video"]) == list(range(ann["frame_count"]))
    for sid in layout.shuffled_ids():
        ann = read_json(layout.shuffled_annotation(sid))
        assert len(read_frame_ids(root / ann["video"])) == ann["frame_count"]


def test_preprocess_and_shuffle_survive_sigkill(wild_dataset, tmp_path):
    ref = tmp_path / "ref"
    run_video_stage(preprocess, ref, root_dir=wild_dataset, scale=4, workers=1)
    run_video_stage(shuffle_clips, ref, workers=1)

    out = tmp_path / "out"
    layout = Layout(out)
    pre = [sys.executable, "timewarp/preprocess/preprocess.py", "--root_dir", str(wild_dataset), "--save_dir", str(out),
           "--scale", "4", "--workers", "1"]
    killed = kill_when(pre, lambda: len(list(layout.normal_annotations_dir.glob("*.json"))) >= 1)
    assert killed, "preprocess finished before it could be killed"
    assert len(layout.normal_ids()) < 4
    no_half_files(out)
    subprocess.run(pre, cwd=ROOT, check=True, capture_output=True)

    shuf = [sys.executable, "timewarp/preprocess/shuffle_clips.py", "--root_dir", str(out), "--workers", "1"]
    killed = kill_when(shuf, lambda: layout.shuffled_annotations_dir.is_dir()
                       and len(list(layout.shuffled_annotations_dir.glob("*.json"))) >= 1)
    if killed:
        no_half_files(out)
    subprocess.run(shuf, cwd=ROOT, check=True, capture_output=True)

    assert json_files(out) == json_files(ref)
    for rel in json_files(ref):
        rec = read_json(ref / rel)
        if "video" in rec and str(rec["video"]).endswith(".mp4"):
            assert read_frame_ids(out / rec["video"]) == read_frame_ids(ref / rec["video"]), rec["video"]
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-") or p.name.startswith(".concat-")]


def test_outputs_do_not_depend_on_workers(wild_dataset, tmp_path):
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        run_video_stage(preprocess, out, root_dir=wild_dataset, scale=3, workers=workers, seed=5)
        run_video_stage(shuffle_clips, out, workers=workers, seed=5, permutations_per_video=2)
        outs.append(out)
    a, b = (json_files(o) for o in outs)
    assert a == b and len(a) >= 9
    videos = [{p.relative_to(o).as_posix(): p.read_bytes() for p in sorted(o.rglob("*.mp4"))} for o in outs]
    assert videos[0] == videos[1] and len(videos[0]) >= 9  # x264 threads do not follow --workers
    assert (outs[0] / "rejects" / "preprocess.jsonl").read_bytes() == (outs[1] / "rejects" / "preprocess.jsonl").read_bytes()


def test_save_dir_not_writable_is_one_line(wild_dataset, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = subprocess.run([sys.executable, "timewarp/preprocess/preprocess.py", "--root_dir", str(wild_dataset),
                          "--save_dir", str(blocker / "out"), "--scale", "1"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2 and "not writable" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_missing_ffmpeg_is_one_line(wild_dataset, tmp_path):
    env = {**os.environ, "TIMEWARP_FFMPEG": str(tmp_path / "no-ffmpeg")}
    res = subprocess.run([sys.executable, "timewarp/preprocess/preprocess.py", "--root_dir", str(wild_dataset),
                          "--save_dir", str(tmp_path / "o"), "--scale", "1"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert res.returncode == 2 and "ffmpeg" in res.stderr and "Traceback" not in res.stderr


def test_rerun_removes_what_a_killed_run_left(wild_dataset, tmp_path):
    out = tmp_path / "out"
    run_video_stage(preprocess, out, root_dir=wild_dataset, scale=1, workers=1)
    layout = Layout(out)
    stale = [layout.normal_annotations_dir / ".tmp-x-abc.json", layout.normal_videos_dir / ".tmp-x-abc.mp4",
             layout.tmp_dir / "src-x-abc.mp4"]
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
    run_video_stage(preprocess, out, root_dir=wild_dataset, scale=1, workers=1)
    assert not any(p.exists() for p in stale)
    assert len(layout.normal_ids()) == 1
