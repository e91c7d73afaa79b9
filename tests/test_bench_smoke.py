"""Smoke run of the video benchmark on a tiny input: it runs end to end and prints its table.

No timing is asserted (the numbers of a tiny run mean nothing); the real run is documented in
benchmarks/README.md.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.video  # renders its own videos (conftest.py: the fast tier)

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_prints_table(tmp_path):
    out_json = tmp_path / "bench.json"
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_video.py"), "--videos", "1", "--duration", "4",
         "--height", "144", "--workers", "2", "--memory_gb", "0.01", "--memory_rows", "2",
         "--work_dir", str(tmp_path / "work"), "--json", str(out_json)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    # the baseline needs moviepy (requirements-bench.txt, installed by .ci/run); without it the rest runs
    baseline = importlib.util.find_spec("moviepy") is not None
    needles = ["variant", "project preprocess+shuffle (--workers 2)",
               "project preprocess+shuffle (--workers 1)", "floor: 1 ffmpeg encode/video",
               "project / floor", "throughput --workers 2 / 1",
               "pyarrow default (1 dict page)", "page per video (PLAIN)"]
    needles += ["moviepy baseline", "baseline / project"] if baseline else ["moviepy baseline skipped"]
    for needle in needles:
        assert needle in out, f"{needle!r} missing from:\n{out}"
    data = json.loads(out_json.read_text())
    r = data["results"]
    variants = ("project", "floor", "baseline") if baseline else ("project", "floor")
    assert r["project"]["videos"] == 1 and ("baseline" in r) == baseline
    assert not baseline or r["baseline"]["videos"] == 1
    assert all(r[k]["peak_rss"] > 0 for k in variants)
    for layout in data["results"]["memory"]["layouts"].values():
        assert len(layout["chosen_rows"]) == 2
        assert layout["peak_rss"] > 0
