"""A real multi-node Ray cluster: three nodes on 127.0.0.1 (``ray.cluster_utils.Cluster``, one CPU each)
run every stage of ``setup_dataset.sh`` with ``--ray_address 127.0.0.1:PORT``; a worker node is removed
while preprocess runs, another while shuffle_clips runs, and one task's worker is killed twice during
filter_corrupted. The output is the same as a local run's: byte-identical JSON (annotations, ...) and
frame-exact videos. With retries off, the killed task is a reject instead (the check can fail).

Each disruption is set off by the pipeline's own ffmpeg calls, not by a clock: every node runs ffmpeg
through the script ``GATED_FFMPEG`` (``TIMEWARP_FFMPEG``), which passes each call to the real ffmpeg except

- on a node given LOSE_PATTERN: the first call whose arguments contain it writes its pid to
  ``<gates>/lost-<node>/pid`` and hangs; the test then removes that node (its task is running there,
  so Ray must re-run it elsewhere) and ends the hung process;
- on every node, KILL_PATTERN: the first two calls whose arguments contain it kill the Ray worker
  that made them (SIGKILL, as the kernel's OOM killer would); ``<gates>/kill-1``, ``kill-2`` record them;
- on the other nodes, HOLD_PATTERNS: a call whose arguments contain one of them waits until the node
  to lose in that stage has hung in its gate. So those nodes cannot finish the stage's tasks alone:
  the scheduler must give one to the node to lose, however fast the tasks are.

Marked ``cluster`` (``pytest -m cluster``); all traffic stays on 127.0.0.1; about a minute here.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from timewarp.core.layout import Layout  # noqa: E402
from timewarp.core.store import TEMP_PREFIXES, read_jsonl, remove_stale_temp  # noqa: E402
from timewarp.media.video import ffmpeg_exe  # noqa: E402

from same_outputs import assert_same_outputs  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.video]

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("preprocess", "filter_corrupted", "final_assertions", "shuffle_clips")
GATE_WAIT = 150  # seconds: a gate that never opens is a failed test, not a hang
KILLED = "rand30"  # the video whose filter_corrupted task is killed twice (one of conftest's wild videos)
# the video an ffmpeg call works on, from its source copy, scratch output or normal video: src-pal25-..., .tmp-pal25-...
VIDEO_IN_ARGS = re.compile(r"/(?:src-|\.tmp-|normal/videos/)([A-Za-z0-9]+)[-.]")
PYTHONPATH = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # nodes and stages import this checkout

GATED_FFMPEG = """#!/bin/sh
# ffmpeg for one test node (tests/test_ray_cluster.py): see that module's docstring
case " $* " in *" -version "*) exec "{real}" "$@";; esac
echo "$(date +%s.%N) $NODE $*" >> "{gates}/calls.log"
if [ -n "$KILL_PATTERN" ]; then
  case "$*" in *"$KILL_PATTERN"*)
    if mkdir "{gates}/kill-1" 2>/dev/null || mkdir "{gates}/kill-2" 2>/dev/null; then kill -9 "$PPID"; exit 1; fi;;
  esac
fi
for hold in $HOLD_PATTERNS; do  # "<pattern>=<node to lose>"
  case "$*" in *"${{hold%=*}}"*)
    i=0; while [ ! -e "{gates}/lost-${{hold#*=}}/pid" ] && [ $i -lt 3000 ]; do sleep 0.1; i=$((i + 1)); done;;
  esac
done
if [ -n "$LOSE_PATTERN" ]; then
  case "$*" in *"$LOSE_PATTERN"*)
    if mkdir "{gates}/lost-$NODE" 2>/dev/null; then
      echo "$$ $*" > "{gates}/lost-$NODE/pid.tmp" && mv "{gates}/lost-$NODE/pid.tmp" "{gates}/lost-$NODE/pid"
      exec sleep 3600
    fi;;
  esac
fi
exec "{real}" "$@"
"""


def _wait_for(path: Path, proc: subprocess.Popen) -> tuple[int, str]:
    """The pid and ffmpeg arguments in ``path`` once a gate writes them (the run must still be going)."""
    deadline = time.monotonic() + GATE_WAIT
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path.parent.name}: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, f"no task reached {path.parent.name} in {GATE_WAIT} s"
        time.sleep(0.05)
    pid, args = path.read_text().strip().split(" ", 1)
    return int(pid), args


def _end(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class ThreeNodes:
    """head (the driver's node) + worker "lose_pre" (lost during preprocess) + worker "lose_shuffle"
    (lost during shuffle_clips), one CPU each, all on 127.0.0.1."""

    def __init__(self, gates: Path):
        self.gates = gates
        wrapper = gates / "ffmpeg"
        wrapper.write_text(GATED_FFMPEG.format(real=ffmpeg_exe(), gates=gates))
        wrapper.chmod(0o755)
        common = {"TIMEWARP_FFMPEG": str(wrapper), "PYTHONPATH": PYTHONPATH,
                  "KILL_PATTERN": f"/.tmp-verify-{KILLED}-"}   # the content pass's decode of its re-encoded frames
        node = dict(node_ip_address="127.0.0.1", num_cpus=1, object_store_memory=80 * 1024 * 1024)
        lose = {"lose_pre": "/normal/videos/", "lose_shuffle": "/shuffled_videos/"}  # node -> its gate's pattern
        holds = {name: " ".join(f"{pattern}={other}" for other, pattern in lose.items() if other != name)
                 for name in ("head", *lose)}
        self.cluster = Cluster(initialize_head=True, head_node_args=dict(
            node, include_dashboard=False, env_vars={**common, "NODE": "head", "HOLD_PATTERNS": holds["head"]}))
        self.workers = {name: self.cluster.add_node(**node, env_vars={
            **common, "NODE": name, "LOSE_PATTERN": pattern, "HOLD_PATTERNS": holds[name]})
            for name, pattern in lose.items()}

    @property
    def address(self) -> str:
        return self.cluster.address

    def lose(self, name: str, proc: subprocess.Popen) -> tuple[str, float]:
        """Once a task hangs in the gate on node ``name``: remove the node. Returns the video the task
        was working on and the time of the removal."""
        pid, args = _wait_for(self.gates / f"lost-{name}" / "pid", proc)
        self.cluster.remove_node(self.workers.pop(name))
        removed = time.time()
        _end(pid)  # the hung "ffmpeg" outlives its node (it is no Ray process)
        return set(VIDEO_IN_ARGS.findall(args)).pop(), removed

    def rerun_after(self, lost: tuple[str, float]) -> float:
        """Seconds from a node's removal until the re-run of its task (on another node) started ffmpeg."""
        video, removed = lost
        for line in (self.gates / "calls.log").read_text().splitlines():
            when, _node, args = line.split(" ", 2)
            if float(when) > removed and video in VIDEO_IN_ARGS.findall(args):
                return float(when) - removed
        raise AssertionError(f"the task on {video} was never run again")

    def shutdown(self) -> None:
        self.cluster.shutdown()


def _setup_dataset(src: Path, out: Path, timewarp_args: str = "") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("TIMEWARP_ARGS", "TIMEWARP_PREPROCESS_ARGS", "RAY_ADDRESS")}
    env.update(TIMEWARP_ARGS=timewarp_args,
               TIMEWARP_PREPROCESS_ARGS="--test_fraction 0.5 --write_clips",
               PYTHONPATH=PYTHONPATH)
    return subprocess.Popen([str(ROOT / "setup_dataset.sh"), str(src), str(out), "4"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=GATE_WAIT)
    assert proc.returncode == 0, err
    return err


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, wild_dataset) -> Path:
    out = tmp_path_factory.mktemp("cluster_local") / "out"
    _finish(_setup_dataset(wild_dataset, out, "--workers 2"))
    return out


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    nodes = ThreeNodes(tmp_path_factory.mktemp("gates"))
    try:
        yield nodes
    finally:
        nodes.shutdown()


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory, wild_dataset, nodes) -> tuple[Path, str]:
    """setup_dataset.sh through the three-node cluster, losing a node in preprocess and one in shuffle_clips."""
    out = tmp_path_factory.mktemp("cluster_ray") / "out"
    t0 = time.monotonic()
    proc = _setup_dataset(wild_dataset, out, f"--executor ray --ray_address {nodes.address} --workers 3")
    try:
        lost = [nodes.lose("lose_pre", proc), nodes.lose("lose_shuffle", proc)]
        err = _finish(proc)
    finally:
        if proc.poll() is None:  # a failed check: stop the run (its stage is the script's child)
            subprocess.run(["pkill", "-KILL", "-P", str(proc.pid)], check=False)
            proc.kill()
            proc.communicate()
    rerun = [nodes.rerun_after(loss) for loss in lost]
    print(f"\n3-node cluster run, two nodes lost: {time.monotonic() - t0:.1f} s; the lost tasks ran again "
          f"{rerun[0]:.1f} s (preprocess) and {rerun[1]:.1f} s (shuffle_clips) after their node was removed")
    return out, err


def test_setup_dataset_on_three_nodes_losing_two_equals_a_local_run(cluster_run, local_run, nodes):
    out, err = cluster_run
    # each stage joined the loopback cluster as given (Ray had made it the machine's own address and hung)
    joined = [line for line in err.splitlines() if line.startswith(f"INFO timewarp: ray: connected to {nodes.address}")]
    assert len(joined) == 4 and "3 CPUs in 3 node(s)" in joined[0] and "1 CPUs in 1 node(s)" not in joined[3], err
    assert (nodes.gates / "lost-lose_pre").is_dir() and (nodes.gates / "lost-lose_shuffle").is_dir()
    assert (nodes.gates / "kill-1").is_dir() and (nodes.gates / "kill-2").is_dir()  # KILLED's worker died twice
    # a task lost with its node leaves its scratch files (temp names: never taken for outputs); the next run
    # of a stage removes them at its start (remove_stale_temp), as after a kill of a local run
    litter = [p for p in out.rglob("*") if p.is_file() and p.name.startswith(TEMP_PREFIXES)]
    assert {p.parent.name for p in litter} <= {"shuffled_videos"}, litter  # preprocess's went at shuffle's start
    assert remove_stale_temp(out) == len(litter)
    jsons, videos = assert_same_outputs(local_run, out, STAGES)
    assert {f"normal/annotations/{v}.json" for v in ("ntsc30", "film24", "pal25", KILLED)} <= set(jsons)
    assert any(f.startswith("shuffled/shuffled_videos/") for f in videos)
    for stage in STAGES:
        assert read_jsonl(Layout(out).rejects_file(stage)) == [], stage


def _filter_corrupted(out: Path, address: str, retries: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "timewarp/preprocess/filter_corrupted.py"), "--root_dir",
                           str(out), "--overwrite", "--executor", "ray", "--ray_address", address, "--workers", "1",
                           "--ray_max_retries", str(retries)], capture_output=True, text=True, timeout=GATE_WAIT,
                          env={**os.environ, "PYTHONPATH": PYTHONPATH})


def test_a_worker_killed_twice_is_a_reject_with_retries_off_and_none_with_retries(cluster_run, nodes, tmp_path):
    """The check above can fail: the same two kills with ``--ray_max_retries 0`` lose the video."""
    for retries, rejected in ((0, [KILLED]), (2, [])):
        out = tmp_path / f"retries{retries}"
        shutil.copytree(cluster_run[0], out)
        for k in (1, 2):  # arm the kill gate again: the next two decodes of KILLED's video kill their worker
            shutil.rmtree(nodes.gates / f"kill-{k}", ignore_errors=True)
        r = _filter_corrupted(out, nodes.address, retries)
        assert r.returncode == 0, r.stderr
        assert (nodes.gates / "kill-1").is_dir() and (nodes.gates / "kill-2").is_dir() == (retries > 0)
        rejects = read_jsonl(Layout(out).rejects_file("filter_corrupted"))
        assert [rj["id"] for rj in rejects] == rejected, rejects
        if rejected:  # (an internal error is no proof of a corrupt file: the video stays for the next run)
            assert rejects[0]["reason"] == "internal error" and "Worker" in rejects[0]["detail"], rejects


def test_ray_address_auto_joins_the_loopback_cluster_that_RAY_ADDRESS_names(cluster_run, nodes, tmp_path):
    """Before: Ray made RAY_ADDRESS=127.0.0.1:PORT the machine's own address, and the stage hung."""
    out = shutil.copytree(cluster_run[0], tmp_path / "out")
    env = {**os.environ, "RAY_ADDRESS": nodes.address, "PYTHONPATH": PYTHONPATH}
    r = subprocess.run([sys.executable, str(ROOT / "timewarp/preprocess/final_assertions.py"), "--root_dir",
                        str(out), "--executor", "ray", "--ray_address", "auto", "--workers", "1"],
                       capture_output=True, text=True, timeout=GATE_WAIT, env=env)
    assert r.returncode == 0, r.stderr
    assert f"INFO timewarp: ray: connected to {nodes.address}," in r.stderr, r.stderr
