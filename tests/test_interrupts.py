"""Ctrl-C at every moment of every stage, then "rerun the same command to resume".

Real processes and a real SIGINT to the whole process group, as a terminal's Ctrl-C sends it, at a
moment named by ``TIMEWARP_TEST_SIGINT_AT=<stage>:<n>`` (``timewarp/core/checkpoints.py``: just before and
after each file is renamed into place or moved, and the start of each stage): no timing involved.
Each interrupted run must end with status 130 and one line, and the rerun of the same command must
give exactly what an uninterrupted run gives: byte-identical JSON and the same video frames.
"""
from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from timewarp.core.layout import Layout
from timewarp.sample_data import SceneSpec, VideoSpec, metadata_for, read_frame_ids, render_video, write_shard

pytestmark = pytest.mark.video   # renders videos and runs stages on them (the slow tier)

ROOT = Path(__file__).resolve().parents[1]
SETUP = [str(ROOT / "setup_dataset.sh")]
GENERATE = [str(ROOT / "generate_data.sh")]
SETUP_STAGES = ("preprocess", "filter_corrupted", "final_assertions", "shuffle_clips")
GENERATE_STAGES = ("merge_normal_captions", "merge_shuffled_captions", "generate_sft_explicit",
                   "generate_pref_explicit", "generate_normal_benchmark", "generate_shuffled_benchmark")
MESSAGE = "interrupted; rerun the same command to resume"


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def env(**extra) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("TIMEWARP_")}
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    e.update(extra)
    return e


def run(cmd: list, **extra) -> subprocess.CompletedProcess:
    """``cmd`` in its own process group (SIGINT at its default, as under a terminal)."""
    if cmd[0] == SETUP[0]:  # one process per stage: the n-th checkpoint is the same moment in every run
        extra.setdefault("TIMEWARP_ARGS", "--workers 1")
        extra.setdefault("TIMEWARP_PREPROCESS_ARGS", "--test_fraction 0.5")  # benchmarks too
    return subprocess.run(cmd, capture_output=True, text=True, env=env(**extra), cwd=ROOT, timeout=600,
                          start_new_session=True, preexec_fn=_default_sigint)


def said(proc: subprocess.CompletedProcess) -> list[str]:
    """What a person reads on stderr, without the stage headers and log lines."""
    return [line for line in proc.stderr.strip().splitlines()
            if line.strip() and not line.startswith(("== ", "INFO ")) and "\r" not in line]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """Three short videos of three scenes each (one activity per scene: three clips per video)."""
    root = tmp_path_factory.mktemp("fv_int")
    tmp = tmp_path_factory.mktemp("render_int")
    rows = []
    for i, colors in enumerate((("red", "green", "blue"), ("yellow", "purple", "cyan"), ("orange", "gray", "pink"))):
        spec = VideoSpec(f"v{i}", [SceneSpec(15, c, "square", [(1, 14)]) for c in colors], fps="10",
                         size=(176, 144), bframes=2)
        render_video(spec, tmp / f"v{i}.mp4")
        rows.append(((tmp / f"v{i}.mp4").read_bytes(), metadata_for(spec)))
    write_shard(root / "data" / "train-00000-of-00001.parquet", rows)
    return root


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory):
    """Uninterrupted runs: (output after setup_dataset.sh, output after both scripts, every checkpoint
    passed as {stage: [phase of checkpoint 1, 2, ...]})."""
    base = tmp_path_factory.mktemp("ref")
    out, listing = base / "out", base / "checkpoints"
    r = run(SETUP + [str(source), str(out), "3"], TIMEWARP_TEST_CHECKPOINTS=str(listing))
    assert r.returncode == 0, r.stderr
    shutil.copytree(out, base / "setup_only")
    r = run(GENERATE + [str(out)], TIMEWARP_TEST_CHECKPOINTS=str(listing))
    assert r.returncode == 0, r.stderr
    phases = collections.defaultdict(list)
    for line in listing.read_text().splitlines():
        stage, n, phase = line.split(" ", 2)
        phases[stage].append(phase)
        assert int(n) == len(phases[stage])
    return base / "setup_only", out, dict(phases)


def outputs(root: Path) -> dict[str, object]:
    """Every output by relative path: JSON/JSONL bytes, and each video's drawn frame numbers.

    Left out: stats (they hold timings), the lock file, and the stages' resume records (state/)."""
    found = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_dir() or rel.parts[0] in ("stats", "state") or p.name == ".timewarp.lock":
            continue
        found[rel.as_posix()] = read_frame_ids(p) if p.suffix == ".mp4" else p.read_bytes()
    return found


def check_interrupt_then_resume(cmd: list[str], stage: str, n: int, out: Path, ref: Path) -> None:
    """Run ``cmd`` with Ctrl-C at checkpoint ``n`` of ``stage``: one line and status 130; then rerun
    ``cmd`` as it is: it must give the reference outputs."""
    r = run(cmd, TIMEWARP_TEST_SIGINT_AT=f"{stage}:{n}")
    lines = said(r)
    assert r.returncode == 130 and len(lines) == 1 and MESSAGE in lines[0], (stage, n, r.stderr)
    assert "Traceback" not in r.stderr
    r = run(cmd)
    assert r.returncode == 0, (stage, n, r.stderr)
    got, want = outputs(out), outputs(ref)
    assert sorted(got) == sorted(want), (stage, n)
    for rel in want:
        assert got[rel] == want[rel], (stage, n, rel)


EVERY = bool(os.environ.get("TIMEWARP_TEST_EVERY_INTERRUPT"))  # 1: every checkpoint (minutes), not a sample


def points(phases: dict, stages) -> list[tuple[str, int]]:
    """The checkpoints to interrupt: all of them with TIMEWARP_TEST_EVERY_INTERRUPT=1; else per stage
    the first (before its imports), the one just after its first item's first output file is renamed into
    place (a video whose annotation is not written yet), and its last."""
    found = []
    for stage in stages:
        ph = phases[stage]
        if EVERY:
            found += [(stage, n) for n in range(1, len(ph) + 1)]
            continue
        first = next((i for i, p in enumerate(ph, 1) if p.startswith("after writing") and "." in p
                      and not p.endswith((f"{stage}.json", ".npz"))), 2)   # (.npz: a cache, the check's reference)
        found += [(stage, n) for n in sorted({1, first, len(ph)})]
    return found


def test_every_stage_has_checkpoints(reference):
    *_, phases = reference
    assert set(phases) == set(SETUP_STAGES + GENERATE_STAGES), phases
    assert phases["shuffle_clips"][:6] == ["start, before the stage's imports", "start of the run",
                                           "before writing v0.mp4", "after writing v0.mp4",
                                           "before writing v0.json", "after writing v0.json"]


def test_ctrl_c_anywhere_in_setup_dataset_resumes_to_the_same_outputs(source, reference, tmp_path):
    """Moments of each setup_dataset.sh stage; among them a shuffled video written and its annotation
    not yet, which once made every rerun fail at final_assertions (it runs before shuffle_clips)."""
    ref, _, phases = reference
    for k, (stage, n) in enumerate(points(phases, SETUP_STAGES)):
        out = tmp_path / f"o{k}"
        check_interrupt_then_resume(SETUP + [str(source), str(out), "3"], stage, n, out, ref)
        shutil.rmtree(out)


def test_ctrl_c_anywhere_in_generate_data_resumes_to_the_same_outputs(reference, tmp_path):
    ref_setup, ref, phases = reference
    todo = points(phases, GENERATE_STAGES)
    if not EVERY:  # these stages are alike (one file each, written whole): the ends of the script, and mid-stage
        todo = [(s, n) for s, n in todo if (s, n) in ((GENERATE_STAGES[0], 1), (GENERATE_STAGES[-1], len(phases[s])))
                or 1 < n < len(phases[s])]
    for k, (stage, n) in enumerate(todo):
        out = tmp_path / f"g{k}"
        shutil.copytree(ref_setup, out)
        check_interrupt_then_resume(GENERATE + [str(out)], stage, n, out, ref)
        shutil.rmtree(out)


def test_ctrl_c_in_a_single_stage_resumes_with_the_same_command(source, reference, tmp_path):
    """The stages by hand, as the README lists them: each interrupted while it writes its first item,
    rerun with its own command; it says its own one line (no shell script around it)."""
    ref, _, phases = reference
    out = tmp_path / "out"
    cmds = [[sys.executable, str(ROOT / "timewarp/preprocess/preprocess.py"), "--root_dir", str(source),
             "--save_dir", str(out), "--scale", "3", "--workers", "1", "--test_fraction", "0.5"]]
    cmds += [[sys.executable, str(ROOT / "timewarp/preprocess" / f"{s}.py"), "--root_dir", str(out), "--workers", "1"]
             for s in SETUP_STAGES[1:]]
    for idx, stage in enumerate(SETUP_STAGES):
        n = phases[stage].index(next(p for p in phases[stage] if p.startswith("after writing"))) + 1
        r = run(cmds[idx], TIMEWARP_TEST_SIGINT_AT=f"{stage}:{n}")
        lines = said(r)
        assert r.returncode == 130 and len(lines) == 1 and lines[0] == f"{stage}.py: {MESSAGE}", r.stderr
        r = run(cmds[idx])
        assert r.returncode == 0, (stage, n, r.stderr)
    got, want = outputs(out), outputs(ref)
    assert sorted(got) == sorted(want) and got == want


def test_the_comparison_sees_a_missing_or_changed_output(reference, tmp_path):
    """The comparison these tests rely on fails when one output is missing or differs."""
    ref, _, _ = reference
    out = tmp_path / "broken"
    shutil.copytree(ref, out)
    layout = Layout(out)
    sorted(layout.shuffled_annotations_dir.glob("*.json"))[0].unlink()
    assert sorted(outputs(out)) != sorted(outputs(ref))
    shutil.rmtree(out)
    shutil.copytree(ref, out)
    video = sorted(layout.shuffled_videos_dir.glob("*.mp4"))
    shutil.copy(video[1], video[0])  # another video's frames under the first one's name
    assert outputs(out) != outputs(ref)


def test_ctrl_c_between_two_quarantine_moves_resumes(reference, tmp_path):
    """filter_corrupted moves a bad item's files one by one; Ctrl-C before each move, rerun: the same
    files end in quarantine/ as without the interrupt, and final_assertions passes (before: a Ctrl-C after
    the normal files left the item's shuffled files behind, and final_assertions failed every rerun)."""
    ref_setup, _, _ = reference
    base = tmp_path / "base"
    shutil.copytree(ref_setup, base)
    video = Layout(base).normal_video("v1")
    video.write_bytes(video.read_bytes()[:len(video.read_bytes()) // 2])  # v1 no longer opens
    stage = [sys.executable, str(ROOT / "timewarp/preprocess/filter_corrupted.py"), "--workers", "1", "--root_dir"]
    check = [sys.executable, str(ROOT / "timewarp/preprocess/final_assertions.py"), "--workers", "1", "--root_dir"]
    want = tmp_path / "want"
    shutil.copytree(base, want)
    listing = tmp_path / "checkpoints"
    assert run(stage + [str(want)], TIMEWARP_TEST_CHECKPOINTS=str(listing)).returncode == 0
    moves = [int(n) for _, n, phase in (line.split(" ", 2) for line in listing.read_text().splitlines())
             if phase.startswith("before moving")]
    assert len(moves) == 4  # v1's shuffled video and annotation, normal video and annotation

    def placed(root: Path) -> list[str]:
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                      if p.is_file() and p.relative_to(root).parts[0] in ("quarantine", "normal", "shuffled"))

    assert "quarantine/filter_corrupted/shuffled/shuffled_annotations/v1.json" in placed(want)
    for n in moves:
        out = tmp_path / f"m{n}"
        shutil.copytree(base, out)
        r = run(stage + [str(out)], TIMEWARP_TEST_SIGINT_AT=f"filter_corrupted:{n}")
        assert r.returncode == 130, r.stderr
        assert run(stage + [str(out)]).returncode == 0
        assert placed(out) == placed(want), n
        r = run(check + [str(out)])
        assert r.returncode == 0, (n, r.stdout[-1500:])
