"""The consumer tier: each consumer's own code, installed in its own virtual environment, run on the exports.

The environments live in $TIMEWARP_VENVS (default ~/.cache/timewarp/venvs), one per consumer, made by
tests/consumers/make_venvs.sh (which .ci/run calls); a test whose environment is missing is skipped.
Run the tier alone with `python -m pytest -m consumers tests/consumers`."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared fixtures and helpers


def pytest_configure(config):
    config.addinivalue_line("markers", "consumers: runs a consumer's own code in its virtual environment (tests/consumers)")


VENVS = Path(os.environ.get("TIMEWARP_VENVS") or Path.home() / ".cache" / "timewarp" / "venvs")


def venv_python(name: str) -> Path:
    """The Python of consumer ``name``'s environment, or a skip naming how to make it."""
    py = VENVS / name / "bin" / "python"
    if not py.is_file():
        pytest.skip(f"no {name} environment in {VENVS} (make it with tests/consumers/make_venvs.sh {name})")
    return py
