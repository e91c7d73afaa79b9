"""Calling a stage from a test: ``run_stage(module, root, **options)`` = ``module.run(module.Config(
layout=Layout(root), **options), ...)``, so a test names only the options it sets."""
from __future__ import annotations

from pathlib import Path

from timewarp.layout import Layout


def run_stage(module, root, *, backend=None, **options) -> dict:
    """Run a generation stage (its ``Config`` + ``run(cfg, backend)``) on ``root`` with ``options``;
    ``backend``: the wording backend (default: template)."""
    return module.run(module.Config(layout=Layout(Path(root)), **options), backend)
