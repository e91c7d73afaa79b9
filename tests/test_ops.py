"""Input robustness and run safety (issue 12): real files, real processes, and a check for each case
that it failed before (each test names what the earlier code did).

Timestamps as exports write them, metadata with a BOM or in UTF-16, lone surrogates in ids and file
names, a .parquet file as the input root, symbolic links out of the output folder, two runs on one
output, reruns with another --scale / --seed, and the shell scripts' options and Ctrl-C.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from timewarp.core.errors import UsageError
from timewarp.core.layout import Layout
from timewarp.preprocess import preprocess, shuffle_clips
from timewarp.sample_data import SceneSpec, VideoSpec, metadata_for, read_frame_ids, render_video, write_shard
from timewarp.core.store import read_json, read_jsonl

from stages import run_video_stage

VIDEO_FIXTURES = {"clip3", "twelve", "small_out"}  # render videos (conftest.py: the fast tier)

ROOT = Path(__file__).resolve().parents[1]
FPS = 25
SCENE = 20  # frames per scene; 3 scenes: a 2.4 s video


def _spec(name: str, scenes: int = 3, frames: int = SCENE) -> VideoSpec:
    colors = ["red", "green", "blue", "yellow", "purple"]
    return VideoSpec(name, [SceneSpec(frames, colors[k % 5], "square") for k in range(scenes)], fps=str(FPS),
                     size=(128, 96), bframes=0)


@pytest.fixture(scope="module")
def clip3(tmp_path_factory) -> tuple[bytes, dict]:
    """One 3-scene video (frame k shows the number k) and its metadata."""
    spec = _spec("three")
    p = tmp_path_factory.mktemp("src") / "three.mp4"
    render_video(spec, p)
    return p.read_bytes(), metadata_for(spec)


@pytest.fixture(scope="module")
def twelve(tmp_path_factory) -> Path:
    """A FineVideo root with one shard of 12 short 2-scene videos."""
    tmp = tmp_path_factory.mktemp("twelve_src")
    rows = []
    for i in range(12):
        spec = _spec(f"v{i:02d}", scenes=2, frames=10)
        render_video(spec, tmp / f"{spec.name}.mp4")
        rows.append(((tmp / f"{spec.name}.mp4").read_bytes(), metadata_for(spec)))
    root = tmp_path_factory.mktemp("twelve")
    write_shard(root / "data" / "train-00000-of-00001.parquet", rows)
    return root


def _named(meta: dict, name: str) -> dict:
    m = copy.deepcopy(meta)
    m["original_video_filename"] = f"{name}.mp4"
    return m


def _files_root(tmp: Path, items: dict[str, tuple[bytes, bytes]]) -> Path:
    """videos/<name>.mp4 + metadata/<name>.json, the metadata given as raw bytes."""
    root = tmp / "fv"
    (root / "videos").mkdir(parents=True)
    (root / "metadata").mkdir()
    for name, (mp4, meta) in items.items():
        (root / "videos" / f"{name}.mp4").write_bytes(mp4)
        (root / "metadata" / f"{name}.json").write_bytes(meta)
    return root


def _annotations(out: Path) -> dict[str, dict]:
    layout = Layout(out)
    return {vid: read_json(layout.normal_annotation(vid)) for vid in layout.normal_ids()}


def _no_orphans(out: Path) -> None:
    layout = Layout(out)
    assert set(layout.item_ids(layout.normal_videos_dir, ".mp4")) == set(layout.normal_ids())


# ------------------------------------------------------------------ 1. timestamps as exports write them

def test_subrip_and_unit_timestamps_cut_the_right_frames(tmp_path, clip3):
    """Before: "00:00:00,800" and "0.8s" did not parse, their scenes vanished and the video was rejected."""
    mp4, meta = clip3
    m = _named(meta, "forms")
    forms = [("00:00:00,000", "00:00:00,800"), ("0.8s", "1.6s"), ("00:01,600", "2.4 s")]
    for scene, (a, b) in zip(m["content_metadata"]["scenes"], forms):
        scene["activities"][0]["timestamp"] = {"start_timestamp": a, "end_timestamp": b}
    root = _files_root(tmp_path, {"forms": (mp4, json.dumps(m).encode())})
    out = tmp_path / "out"
    run_video_stage(preprocess, out, root_dir=root, scale=1)
    ann = _annotations(out)["forms"]
    assert [(c["start_frame"], c["end_frame"]) for c in ann["clips"]] == [(0, 20), (20, 40), (40, 60)]
    assert read_frame_ids(out / ann["video"]) == list(range(60))  # every source frame, once, in order


# ------------------------------------------------------------------ 2. BOM and UTF-16 metadata

def test_metadata_with_a_bom_or_in_utf16_is_read(tmp_path, clip3):
    """Before: each of these was rejected as "metadata is not valid UTF-8" (or "not valid JSON")."""
    mp4, meta = clip3
    encodings = {"bom8": "utf-8-sig", "utf16": "utf-16", "utf16be": "utf-16-be", "utf16le": "utf-16-le"}
    items = {name: (mp4, json.dumps(_named(meta, name), ensure_ascii=False).encode(enc))
             for name, enc in encodings.items()}
    items["broken16"] = (mp4, json.dumps(_named(meta, "broken16")).encode("utf-16")[:-1])  # odd byte count
    root = _files_root(tmp_path, items)
    # the same in a parquet shard: a string cell with a BOM, a binary cell in UTF-16
    table = pa.table({"mp4": pa.array([mp4, mp4], pa.binary()),
                      "json": pa.array(["\ufeff" + json.dumps(_named(meta, "cellbom")),
                                        None], pa.string())})
    pq.write_table(table, root / "strings.parquet")
    table = pa.table({"mp4": pa.array([mp4], pa.binary()),
                      "json": pa.array([json.dumps(_named(meta, "cell16")).encode("utf-16")], pa.binary())})
    pq.write_table(table, root / "bytes.parquet")
    out = tmp_path / "out"
    run_video_stage(preprocess, out, root_dir=root, scale=10)
    anns = _annotations(out)
    assert sorted(anns) == sorted([*encodings, "cellbom", "cell16"])
    assert all(len(a["clips"]) == 3 for a in anns.values())
    rejects = {r["id"]: r["reason"] for r in read_jsonl(Layout(out).rejects_file("preprocess"))}
    assert rejects["broken16"] == "metadata is not valid UTF-16"
    assert rejects["strings_row1"] == "metadata is null"


# ------------------------------------------------------------------ 3. lone surrogates

def test_a_lone_surrogate_in_an_id_is_replaced_and_a_non_utf8_file_name_is_a_named_reject(tmp_path, clip3):
    """Before: the JSON-escaped surrogate gave "internal error" (the annotation could not be written as
    UTF-8) and left an orphan video; a Latin-1 file name crashed the whole stage (OpenCV segfaults on
    the path) or stopped it when its reject was written."""
    mp4, meta = clip3
    m = _named(meta, "PLACEHOLDER")
    m["content_metadata"]["title"] = "TITLE"
    text = json.dumps(m).replace("PLACEHOLDER", "bad\\ud800id").replace("TITLE", "T\\udfff")  # JSON escapes
    root = tmp_path / "fv"
    root.mkdir()
    pq.write_table(pa.table({"mp4": pa.array([mp4], pa.binary()), "json": pa.array([text], pa.string())}),
                   root / "shard.parquet")
    raw_root = os.fsencode(root)
    with open(os.path.join(raw_root, b"caf\xe9.mp4"), "wb") as fh:  # Latin-1 file names, as old archives have
        fh.write(mp4)
    with open(os.path.join(raw_root, b"caf\xe9.json"), "wb") as fh:
        fh.write(json.dumps(_named(meta, "cafe")).encode())
    with open(os.path.join(raw_root, b"lone\xff.mp4"), "wb") as fh:  # and without metadata
        fh.write(mp4)
    out = tmp_path / "out"
    run_video_stage(preprocess, out, root_dir=root, scale=5)
    anns = _annotations(out)
    assert [(a["source_id"], a["title"]) for a in anns.values()] == [("bad\ufffdid", "T\ufffd")]
    assert len(next(iter(anns.values()))["clips"]) == 3
    rejects = read_jsonl(Layout(out).rejects_file("preprocess"))
    assert sorted((r["reason"], Path(r["source"]).name) for r in rejects) == [
        ("file name is not valid UTF-8", "caf\ufffd.mp4"), ("file name is not valid UTF-8", "lone\ufffd.mp4")]
    _no_orphans(out)


# ------------------------------------------------------------------ 8. a .parquet file as the input root

def test_a_parquet_file_is_a_one_shard_dataset(tmp_path, clip3):
    """Before: "--root_dir <file> does not exist or is not a directory"."""
    mp4, meta = clip3
    shard = tmp_path / "my_videos.parquet"
    write_shard(shard, [(mp4, _named(meta, "a")), (mp4, _named(meta, "b"))])
    out = tmp_path / "out"
    run_video_stage(preprocess, out, root_dir=shard, scale=2)
    anns = _annotations(out)
    assert sorted(anns) == ["a", "b"] and {a["source_file"] for a in anns.values()} == {"my_videos.parquet"}
    r = subprocess.run([sys.executable, str(ROOT / "timewarp/preprocess/preprocess.py"), "--root_dir",
                        str(tmp_path / "notes.txt"), "--save_dir", str(tmp_path / "o2"), "--scale", "1"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "does not exist" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ 4. symbolic links out of the output

@pytest.fixture()
def small_out(tmp_path, clip3) -> Path:
    mp4, meta = clip3
    root = tmp_path / "fv"
    write_shard(root / "shard.parquet", [(mp4, _named(meta, "a")), (mp4, _named(meta, "b"))])
    out = tmp_path / "out"
    run_video_stage(preprocess, out, root_dir=root, scale=2)
    return out


def _stage(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "timewarp" / script), *args], capture_output=True, text=True)


def test_filter_corrupted_never_moves_a_file_through_a_link_out_of_the_output(tmp_path, small_out):
    """Before: normal/videos -> elsewhere made filter_corrupted move the outside file into quarantine/."""
    layout = Layout(small_out)
    elsewhere = tmp_path / "elsewhere"
    layout.normal_videos_dir.rename(elsewhere)
    layout.normal_videos_dir.symlink_to(elsewhere)
    layout.normal_annotation("a").write_text("{not json")  # a reject: its video would be moved
    before = sorted(p.name for p in elsewhere.iterdir())
    r = _stage("preprocess/filter_corrupted.py", "--root_dir", str(small_out))
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert str(layout.normal_videos_dir) in err[0] and "symbolic link" in err[0]
    assert sorted(p.name for p in elsewhere.iterdir()) == before == ["a.mp4", "b.mp4"]
    assert not layout.quarantine_dir.exists()


def test_a_video_file_linked_out_of_the_output_is_not_moved(tmp_path, small_out):
    """Before: the link was moved and the stage went on (a link out of the output is refused now)."""
    layout = Layout(small_out)
    outside = tmp_path / "outside.mp4"
    layout.normal_video("b").rename(outside)
    layout.normal_video("b").symlink_to(outside)
    layout.normal_annotation("b").write_text("[]")
    r = _stage("preprocess/filter_corrupted.py", "--root_dir", str(small_out))
    assert r.returncode == 2 and str(layout.normal_video("b")) in r.stderr, r.stderr
    assert layout.normal_video("b").is_symlink() and outside.is_file()
    # a link that stays inside the output is fine
    layout.normal_video("b").unlink()
    inside = small_out / "store" / "b.mp4"
    inside.parent.mkdir()
    outside.rename(inside)
    layout.normal_video("b").symlink_to(inside)
    layout.check_inside(layout.normal_video("b"))
    # and shuffle_clips refuses to replace shuffles through a linked folder
    layout.shuffled_dir.mkdir()
    layout.shuffled_videos_dir.symlink_to(tmp_path)
    with pytest.raises(UsageError, match="shuffled_videos is a symbolic link"):
        run_video_stage(shuffle_clips, small_out)


# ------------------------------------------------------------------ 5. two runs on one output folder

HOLD = """
import fcntl, sys, time
fh = open(sys.argv[1] + "/.timewarp.lock", "a+")
fcntl.flock(fh, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_run_on_the_same_output_is_refused_while_the_first_lives(small_out):
    """Before: both ran, interleaving their writes. The holder takes the documented lock file itself."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(small_out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for script in ("preprocess/filter_corrupted.py", "preprocess/final_assertions.py"):
            r = _stage(script, "--root_dir", str(small_out))
            err = r.stderr.strip().splitlines()
            assert r.returncode == 2 and len(err) == 1 and f"another run is using {small_out}" in err[0], r.stderr
        r = _stage("preprocess/preprocess.py", "--root_dir", str(small_out), "--save_dir", str(small_out),
                   "--scale", "2")
        assert r.returncode == 2 and "another run is using" in r.stderr
    finally:
        holder.kill()  # the kernel releases the lock with the process: no stale lock to clean up
        holder.wait()
    r = _stage("preprocess/filter_corrupted.py", "--root_dir", str(small_out))
    assert r.returncode == 0, r.stderr


def test_two_preprocess_runs_started_together_one_is_refused(tmp_path, twelve):
    """Two real stage processes on one new output: one makes the dataset, the other says who holds it."""
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "timewarp/preprocess/preprocess.py"), "--root_dir", str(twelve),
           "--save_dir", str(out), "--scale", "12", "--workers", "1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = sorted((p.wait(timeout=300), p.communicate()[1]) for p in procs)
    assert [rc for rc, _ in results] == [0, 2], results
    err = results[1][1].strip().splitlines()
    assert len(err) == 1 and f"another run is using {out}" in err[0] and "preprocess.py" in err[0]
    assert len(Layout(out).normal_ids()) == 12


# ------------------------------------------------------------------ 6. reruns with another --scale / --seed

def _ranked(seed: int) -> list[str]:
    """The selection order computed here: the 12 (all usable) ids by sha256("<seed>:<id>")."""
    ids = [f"v{i:02d}" for i in range(12)]
    return sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())


def test_rerun_with_a_smaller_scale_or_another_seed_is_refused(tmp_path, twelve):
    """Before: scale 5 over 12 said "5 videos ready" and left 12; seed 7 after seed 42 mixed both."""
    out = tmp_path / "out"
    run_video_stage(preprocess, out, root_dir=twelve, scale=3, workers=2)
    assert Layout(out).normal_ids() == sorted(_ranked(42)[:3])
    run_video_stage(preprocess, out, root_dir=twelve, scale=12, workers=2)  # a larger scale, same seed: extends
    assert Layout(out).normal_ids() == sorted(_ranked(42))
    script = "preprocess/preprocess.py"
    for extra, says in ((["--scale", "5"], "--scale 12"), (["--scale", "12", "--seed", "7"], "--seed 42"),
                        (["--scale", "12", "--max_clips", "1"], "--max_clips None")):
        r = _stage(script, "--root_dir", str(twelve), "--save_dir", str(out), *extra)
        err = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(err) == 1 and says in err[0] and "--overwrite" in err[0], r.stderr
        assert len(Layout(out).normal_ids()) == 12
    run_video_stage(shuffle_clips, out)
    # --overwrite redoes it: exactly the seed-7 selection, no video of the earlier one left
    r = _stage(script, "--root_dir", str(twelve), "--save_dir", str(out), "--scale", "3", "--seed", "7",
               "--overwrite", "--workers", "1")
    assert r.returncode == 0, r.stderr
    layout = Layout(out)
    assert layout.normal_ids() == sorted(_ranked(7)[:3]) != sorted(_ranked(42)[:3])
    assert sorted(layout.item_ids(layout.normal_videos_dir, ".mp4")) == layout.normal_ids()
    assert layout.shuffled_ids() == [] and layout.item_ids(layout.shuffled_videos_dir, ".mp4") == []
    assert read_json(layout.state_file("preprocess"))["selection"]["seed"] == 7


# ------------------------------------------------------------------ 7. the shell scripts

def _bash_env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("TIMEWARP_ARGS", None)
    env.pop("TIMEWARP_PREPROCESS_ARGS", None)
    env.update(extra)
    return env


def test_setup_dataset_passes_preprocess_only_options(tmp_path, clip3):
    """Before: TIMEWARP_ARGS="--test_fraction 1" failed at filter_corrupted, and there was no other way."""
    mp4, meta = clip3
    root = tmp_path / "fv"
    write_shard(root / "shard.parquet", [(mp4, _named(meta, "a")), (mp4, _named(meta, "b"))])
    out = tmp_path / "out"
    r = subprocess.run([str(ROOT / "setup_dataset.sh"), str(root), str(out), "2"], capture_output=True, text=True,
                       env=_bash_env(TIMEWARP_PREPROCESS_ARGS="--test_fraction 1 --max_clips 2",
                                     TIMEWARP_ARGS="--workers 1"))
    assert r.returncode == 0, r.stderr
    anns = _annotations(out)
    assert sorted(anns) == ["a", "b"]
    assert {a["split"] for a in anns.values()} == {"test"} and {len(a["clips"]) for a in anns.values()} == {2}
    assert len(Layout(out).shuffled_ids()) == 2


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(cmd: list[str], env: dict, at: str) -> tuple[int, list[str]]:
    """Run ``cmd`` in its own process group; Ctrl-C the group at checkpoint ``at`` ("<stage>:<n>",
    timewarp/core/checkpoints.py): the same moment on an idle or a busy machine. (status, stderr lines)."""
    # A shell started in the background (CI harnesses, `cmd &`) ignores SIGINT, and an ignored signal is
    # inherited and cannot be trapped: give the script the default disposition a terminal's Ctrl-C meets.
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**env, "TIMEWARP_TEST_SIGINT_AT": at},
                          start_new_session=True, preexec_fn=_default_sigint, timeout=300)
    return proc.returncode, proc.stderr.strip().splitlines()


@pytest.mark.parametrize("at", ["preprocess:1", "preprocess:2", "preprocess:5", "filter_corrupted:1",
                                "shuffle_clips:1", "shuffle_clips:3"])
def test_ctrl_c_in_setup_dataset_prints_one_message(tmp_path, twelve, at):
    """Before: "interrupted; rerun ..." and then "stage preprocess failed; fix the error above"; and a
    traceback when Ctrl-C came while a stage still imported its libraries (checkpoint 1 of a stage)."""
    out = tmp_path / "out"
    rc, err = _interrupt([str(ROOT / "setup_dataset.sh"), str(twelve), str(out), "12"],
                         _bash_env(TIMEWARP_ARGS="--workers 2"), at)
    assert rc == 130
    said = [line for line in err if not line.startswith(("== ", "INFO"))]
    assert len(said) == 1 and "interrupted; rerun the same command to resume" in said[0], err
    assert not any("failed" in line or "Traceback" in line for line in err)


@pytest.mark.parametrize("n", [1, 2])
def test_ctrl_c_in_generate_data_prints_one_message(tmp_path, n):
    """generate_data.sh interrupted while its first stage imports (1) or starts its run (2): one
    message, status 130 (before: a 33-39-line KeyboardInterrupt traceback, or nothing at all)."""
    (tmp_path / "out").mkdir()
    rc, err = _interrupt([str(ROOT / "generate_data.sh"), str(tmp_path / "out")], _bash_env(),
                         f"merge_normal_captions:{n}")
    said = [line for line in err if not line.startswith("== ")]
    assert rc == 130 and len(said) == 1 and "interrupted" in said[0], err


SWALLOWING_STAGE = """#!{python}
import os, signal, sys
with open({calls!r}, "a") as fh:
    fh.write(" ".join(sys.argv[1:2]) + "\\n")
signal.signal(signal.SIGINT, signal.SIG_IGN)
os.killpg(0, signal.SIGINT)  # Ctrl-C while this stage runs; the stage itself ignores it and ends well
"""


def test_ctrl_c_that_a_stage_ignores_still_stops_the_script(tmp_path):
    """A stage that does not catch Ctrl-C and exits 0: the script says interrupted once and runs no
    further stage (before: bash took the status 0 and went on with the next stage)."""
    calls = tmp_path / "calls"
    fake = tmp_path / "python"
    fake.write_text(SWALLOWING_STAGE.format(python=sys.executable, calls=str(calls)))
    fake.chmod(0o755)
    (tmp_path / "out").mkdir()
    proc = subprocess.run([str(ROOT / "generate_data.sh"), str(tmp_path / "out")], capture_output=True, text=True,
                          env=_bash_env(PYTHON=str(fake)), start_new_session=True, timeout=60,
                          preexec_fn=_default_sigint)
    said = [line for line in proc.stderr.strip().splitlines() if not line.startswith("== ")]
    assert proc.returncode == 130 and len(said) == 1 and "interrupted; rerun" in said[0], proc.stderr
    assert len(calls.read_text().splitlines()) == 1


# ------------------------------------------------------------------ 8. pipes and failed first runs

def test_evaluate_into_a_closed_pipe_ends_quietly(tmp_path):
    """Before: `evaluate.py ... | head` ended in a BrokenPipeError traceback. The reading end is closed
    before the process starts, so its first write fails whatever the timing."""
    bench = tmp_path / "b.jsonl"
    bench.write_text("".join(json.dumps({"qid": f"x/mcq/{i}", "options": ["a", "b", "c", "d"], "answer": "B"}) + "\n"
                             for i in range(50)))
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"qid": f"x/mcq/{i}", "prediction": "B"}) + "\n" for i in range(50)))
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        r = subprocess.run([sys.executable, str(ROOT / "timewarp/benchmark/evaluate.py"), "--benchmark", str(bench),
                            "--predictions", str(preds)], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert r.stderr == "" and r.returncode == 141, r.stderr
    ok = subprocess.run([sys.executable, str(ROOT / "timewarp/benchmark/evaluate.py"), "--benchmark", str(bench),
                         "--predictions", str(preds)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "100.0" in ok.stdout  # the check can fail: with a reader, it prints its table


def test_a_run_that_fails_on_its_input_leaves_no_output_folder(tmp_path):
    """Before: preprocess made --save_dir (for its lock), failed on the input, and left the folder with
    only .timewarp.lock in it. A folder that existed before is kept (with its lock file)."""
    empty_input = tmp_path / "fv"
    empty_input.mkdir()
    out = tmp_path / "new" / "out"
    r = _stage("preprocess/preprocess.py", "--root_dir", str(empty_input), "--save_dir", str(out), "--scale", "1")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "new").exists()
    out.mkdir(parents=True)
    r = _stage("preprocess/preprocess.py", "--root_dir", str(empty_input), "--save_dir", str(out), "--scale", "1")
    assert r.returncode == 2 and out.is_dir()
