"""The consumer tier: each consumer's own code, installed in its own virtual environment, run on the exports.

The environments live in $TIMEWARP_VENVS (default ~/.cache/timewarp/venvs), one per consumer, made by
tests/consumers/make_venvs.sh (which .ci/run calls); a test whose environment is missing is skipped.
Run the tier alone with `python -m pytest -m consumers tests/consumers`."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared fixtures and helpers


def pytest_configure(config):
    config.addinivalue_line("markers", "consumers: runs a consumer's own code in its virtual environment (tests/consumers)")
