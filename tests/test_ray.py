"""--executor ray gives the same outputs as the local process pool: byte-identical JSON,
frame-identical videos, the same stats and rejects; per-item failures are Failed either way.

Skipped when Ray is not installed (pip install -r requirements-ray.txt; CI installs it).
"""
from __future__ import annotations

import copy
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray import cloudpickle  # noqa: E402 - the one Ray pickles tasks with

from timewarp.core import parallel  # noqa: E402
from timewarp.core.layout import Layout  # noqa: E402
from timewarp.core.parallel import Executor, Failed, pmap  # noqa: E402
from timewarp.preprocess import preprocess, shuffle_clips  # noqa: E402
from timewarp.sample_data import write_shard  # noqa: E402
from timewarp.core.store import read_json, read_jsonl  # noqa: E402

from same_outputs import assert_same_outputs, stats  # noqa: E402
from stages import run_video_stage  # noqa: E402

# functions defined here travel to Ray workers by value (workers cannot import this test module)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance for the module (2 CPUs, no dashboard); executor back to local after."""
    t0 = time.monotonic()
    assert parallel.start_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"\nray.init: {time.monotonic() - t0:.1f}s (ray {ray.__version__})")
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def fv_root(tmp_path_factory, wild_dataset, wild_rows):
    """The wild dataset plus a shard whose one row has undecodable mp4 bytes under valid metadata."""
    root = tmp_path_factory.mktemp("fv_ray") / "fv"
    shutil.copytree(wild_dataset, root)
    meta = copy.deepcopy(wild_rows[2][1])
    meta["original_video_filename"] = "garbage.mp4"
    write_shard(root / "data" / "train-bad.parquet", [(b"\x00\x01not an mp4" * 200, meta)])
    return root


def _run(executor: str, src: Path, out: Path) -> None:
    run_video_stage(preprocess, out, executor=Executor(executor, workers=2), root_dir=src, scale=10,
                    write_clips=True, test_fraction=0.5)
    # shuffle through the CLI: --executor/--workers parsed by stage.add_common_args, given by main to run
    assert shuffle_clips.main(["--root_dir", str(out), "--workers", "2", "--executor", executor,
                               "--permutations_per_video", "2", "--log_level", "WARNING"]) == 0


def test_ray_run_equals_local_run(ray_local, fv_root, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "ray"
    t0 = time.monotonic()
    _run("local", fv_root, local)
    t1 = time.monotonic()
    _run("ray", fv_root, remote)
    print(f"local {t1 - t0:.1f}s, ray {time.monotonic() - t1:.1f}s")

    jsons, videos = assert_same_outputs(local, remote, ("preprocess", "shuffle_clips"))
    assert len(jsons) == 4 + 8 and len(videos) == 4 + 8 + sum(
        len(read_json(local / f)["clips"]) for f in jsons if f.startswith("normal/"))
    # the undecodable row is the same reject under both executors, and the run went on
    bad = [r for r in read_jsonl(Layout(remote).rejects_file("preprocess")) if r["id"] == "garbage"]
    assert len(bad) == 1 and bad[0]["reason"] in {"video does not open", "no video stream", "video does not decode"}
    assert "train-bad.parquet" in bad[0]["source"]
    assert stats(remote, "preprocess")["items_out"] == 4


def test_exceptions_come_back_as_failed_in_input_order(ray_local):
    items = [str(i) for i in range(25)] + ["not a number"] + [str(i) for i in range(25, 30)]
    got = list(pmap(int, items, Executor("ray", workers=2), disable=True))
    want = list(pmap(int, items, Executor("local", workers=2), disable=True))
    assert got[:25] == want[:25] == list(range(25)) and got[26:] == list(range(25, 30))
    assert isinstance(got[25], Failed) and got[25].error == want[25].error == \
        "ValueError: invalid literal for int() with base 10: 'not a number'"


def _die_once(marker: str) -> int:
    """Kill the worker process the first time (as an OOM kill or lost node would); succeed after."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)
    return os.getpid()


def test_worker_death_is_retried_by_ray(ray_local, tmp_path):
    [pid] = list(pmap(_die_once, [str(tmp_path / "died")], Executor("ray", max_retries=1), disable=True))
    assert isinstance(pid, int) and pid != os.getpid()
    # no retries left: the item is Failed, the run goes on
    res = list(pmap(_die_once, [str(tmp_path / "again"), str(tmp_path / "died")], Executor("ray", max_retries=0),
                    disable=True))
    assert isinstance(res[0], Failed) and "Worker" in res[0].error and isinstance(res[1], int)


# ------------------------------------------------------------------ --ray_address that cannot be joined

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _preprocess_cli(fv_root: Path, out: Path, *options: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """preprocess as a user runs it, with ``--executor ray`` and ``options``; 120 s is a hang, not slowness."""
    return subprocess.run([sys.executable, str(ROOT / "timewarp/preprocess/preprocess.py"), "--root_dir", str(fv_root),
                           "--save_dir", str(out), "--scale", "2", "--workers", "1", "--executor", "ray", *options],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


@pytest.fixture
def not_ray(tmp_path):
    """A real server on 127.0.0.1 that is not a Ray head (HTTP/1.1): it accepts the connection, then answers wrong."""
    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_an_address_that_cannot_be_joined_is_one_line_naming_it(fv_root, tmp_path, not_ray):
    """Before: Ray retried a closed port or a non-Ray server for minutes ("Failed to connect to GCS" every
    few seconds) and the stage never said which --ray_address was wrong."""
    closed = f"127.0.0.1:{_free_port()}"
    cases = [(["--ray_address", closed], {}, f"--ray_address {closed}: Connection refused"),
             (["--ray_address", not_ray], {}, f"--ray_address {not_ray}: something answers there, but not a Ray head "
                                                                   "(no gRPC server)"),
             (["--ray_address", "auto"], {"RAY_ADDRESS": closed}, f"{closed} (--ray_address auto): Connection refused")]
    for k, (options, env, says) in enumerate(cases):
        r = _preprocess_cli(fv_root, tmp_path / f"out{k}", *options, env=env)
        errors = [line for line in r.stderr.splitlines() if "error" in line.lower() or "GCS" in line]
        assert r.returncode == 2 and errors == [f"preprocess.py: error: cannot connect to Ray at {says}"], r.stderr
        assert not list((tmp_path / f"out{k}").glob("normal/*/*")), "nothing written without a cluster"


def test_ray_max_retries_is_checked():
    from argparse import Namespace

    from timewarp.core.errors import UsageError
    from timewarp.core.stage import executor_from_args

    given = dict(workers=1, ray_address=None)
    assert executor_from_args(Namespace(executor="ray", ray_max_retries=0, **given)).max_retries == 0
    assert executor_from_args(Namespace(executor="ray", ray_max_retries=None, **given)).max_retries == 3
    with pytest.raises(UsageError, match="--ray_max_retries needs --executor ray"):
        executor_from_args(Namespace(executor="local", ray_max_retries=0, **given))
    with pytest.raises(UsageError, match="--ray_max_retries must be >= 0, got -1"):
        executor_from_args(Namespace(executor="ray", ray_max_retries=-1, **given))


# ------------------------------------------------------------------ one Ray instance per script run

def _setup_dataset_ray(fv_root: Path, out: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("TIMEWARP_ARGS", "RAY_ADDRESS", "RAY_AUTH_MODE")}
    env.update(TIMEWARP_ARGS="--executor ray --workers 2", TIMEWARP_PREPROCESS_ARGS="--test_fraction 0.5")
    return subprocess.Popen([str(ROOT / "setup_dataset.sh"), str(fv_root), str(out), "2"], env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


JOINED = re.compile(r"^INFO timewarp: ray: connected to (127\.0\.0\.1:\d+),")


def test_setup_dataset_starts_ray_once_and_stops_it(fv_root, tmp_path):
    """Before: each of the four stages started (and stopped) its own Ray instance, seconds each, and each
    printed Ray's token-authentication notice."""
    proc = _setup_dataset_ray(fv_root, tmp_path / "out")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    joined = [m.group(1) for m in map(JOINED.match, err.splitlines()) if m]
    assert len(joined) == 4 and len(set(joined)) == 1, err  # every stage joined the one instance
    assert err.count("Token authentication is enabled") <= 1, err
    assert parallel._check_reachable(joined[0]) is not None, "Ray outlived the script"


def test_ctrl_c_in_setup_dataset_with_ray_stops_ray_too(fv_root, tmp_path):
    proc = _setup_dataset_ray(fv_root, tmp_path / "out")
    address = None
    for line in proc.stderr:  # Ctrl-C once the first stage has joined the script's Ray instance
        m = JOINED.match(line)
        if m:
            address = m.group(1)
            break
    assert address, "no stage joined Ray"
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the whole foreground process group
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert parallel._check_reachable(address) is not None, "Ray outlived the interrupted script"
