"""Where the consumer tier's virtual environments are: $TIMEWARP_VENVS (default ~/.cache/timewarp/venvs)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

VENVS = Path(os.environ.get("TIMEWARP_VENVS") or Path.home() / ".cache" / "timewarp" / "venvs")


def venv_python(name: str) -> Path:
    """The Python of consumer ``name``'s environment, or a skip naming how to make it."""
    py = VENVS / name / "bin" / "python"
    if not py.is_file():
        pytest.skip(f"no {name} environment in {VENVS} (make it with tests/consumers/make_venvs.sh {name})")
    return py
