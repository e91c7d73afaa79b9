"""Smoke run of the video benchmark on a tiny input: it runs end to end and prints its table, and the
figures that do not depend on timing are right.

No timing is asserted (the numbers of a tiny run mean nothing); the real run is documented in
benchmarks/README.md. What is checked against facts the test finds itself: the memory shard's row count
and size (the fewest copies of the source video, whose file it reads, that hold --memory_gb), and the
videos column (the rows of the input shard, read with pyarrow).
"""
from __future__ import annotations

import importlib.util
import json
import math
import re
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
    data = json.loads(out_json.read_text())
    first = tmp_path / "work" / f"gop{data['args']['gop_seconds'][0]:g}s"
    source_bytes = (first / "src" / "bench000.mp4").stat().st_size
    check_memory_figures(out, source_bytes, gb=0.01)
    check_videos_column(out, shard_rows(first))
    wrong = re.sub(r"(page per video \(PLAIN\)\s+\d+\s+)(\d+)", lambda m: m.group(1) + str(int(m.group(2)) - 1), out)
    with pytest.raises(AssertionError, match="fewest copies"):   # the check can fail: one row short
        check_memory_figures(wrong, source_bytes, gb=0.01)
    with pytest.raises(AssertionError, match="videos column"):
        check_videos_column(out, shard_rows(first) + 1)
    # the baseline needs moviepy (requirements-bench.txt, installed by .ci/run); without it the rest runs
    baseline = importlib.util.find_spec("moviepy") is not None
    needles = ["variant", "project preprocess+shuffle (--workers 2)",
               "project preprocess+shuffle (--workers 1)", "floor: 1 ffmpeg encode/video",
               "project / floor", "throughput --workers 2 / 1",
               "pyarrow default (1 dict page)", "page per video (PLAIN)"]
    needles += ["moviepy baseline", "baseline / project"] if baseline else ["moviepy baseline skipped"]
    for needle in needles:
        assert needle in out, f"{needle!r} missing from:\n{out}"
    r = data["results"]
    variants = ("project", "floor", "baseline") if baseline else ("project", "floor")
    assert r["project"]["videos"] == 1 and ("baseline" in r) == baseline
    assert not baseline or r["baseline"]["videos"] == 1
    assert all(r[k]["peak_rss"] > 0 for k in variants)
    for layout in data["results"]["memory"]["layouts"].values():
        assert len(layout["chosen_rows"]) == 2
        assert layout["peak_rss"] > 0


def memory_table(out: str) -> dict:
    """Shard layout -> (shard MB, rows) as the memory table prints them."""
    found = {}
    for name in ("pyarrow default (1 dict page)", "page per video (PLAIN)"):
        m = re.search(re.escape(name) + r"\s+(\d+)\s+(\d+)\s", out)
        assert m, f"no memory line {name!r} in:\n{out}"
        found[name] = (int(m.group(1)), int(m.group(2)))
    return found


def check_memory_figures(out: str, source_bytes: int, gb: float) -> None:
    """The shard repeats the one source video until it holds >= gb GB: rows is the fewest copies that do
    (ceil(gb / video size)), and the shard's size is about that many videos (+ parquet and padding)."""
    want = math.ceil(gb * 1e9 / source_bytes)
    for name, (mb, rows) in memory_table(out).items():
        assert rows == want, f"{name}: {rows} rows, the fewest copies of a {source_bytes}-byte video holding {gb} GB: {want}"
        assert abs(mb - rows * source_bytes / 2**20) < 1.5, f"{name}: {mb} MB for {rows} x {source_bytes} bytes"


def shard_rows(work: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(work / "finevideo" / "data" / "train-00000-of-00001.parquet").metadata.num_rows


def check_videos_column(out: str, rows: int) -> None:
    """Every timed variant ran on each video of the input shard once: its videos column is the shard's rows."""
    counts = [int(m.group(1)) for m in re.finditer(r"^(?:moviepy baseline|smart-cut preprocess|project preprocess|floor:)"
                                                    r".*?\)\s+(\d+)\s+[\d.]+", out, re.M)]
    assert len(counts) >= 4 and set(counts) == {rows}, f"videos column {counts}, the input shard has {rows} rows"
