"""A full disk stops the run with one line (every later item would fail too) and leaves no half file."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_resume import no_half_files
from timewarp.core.errors import DiskFullError
from timewarp.core.store import write_json

ROOT = Path(__file__).resolve().parents[1]


def test_enospc_while_writing_is_a_disk_full_error(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFullError, match="no space left"):
        write_json(tmp_path / "a.json", {"x": 1})
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


@pytest.fixture()
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=120k", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize("engine", ["smartcut", "one-encode"])
def test_preprocess_on_a_full_disk_stops_with_one_line(wild_dataset, small_disk, engine):
    out = small_disk / f"out-{engine}"
    res = subprocess.run([sys.executable, "timewarp/preprocess/preprocess.py", "--root_dir", str(wild_dataset),
                          "--save_dir", str(out), "--scale", "4", "--workers", "2", "--engine", engine], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    err = res.stderr.strip().splitlines()
    assert "no space left" in err[-1] and "Traceback" not in res.stderr
    assert [ln for ln in err if "error" in ln.lower()] == [err[-1]]
    no_half_files(out)  # what finished is whole; the rest is simply not there
