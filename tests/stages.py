"""Calling a stage from a test, naming only the options it sets:

- ``run_stage(module, root, backend=None, **options)``: a generation stage, ``module.run(module.Config(
  layout=Layout(root), **options), backend)``;
- ``run_video_stage(module, root, workers=1, executor=None, **options)``: a stage with per-video work,
  ``module.run(module.Config(layout=Layout(root), **options), executor or Executor(workers=workers))``
  (preprocess: ``root`` is its --save_dir, ``root_dir=`` the FineVideo input).
"""
from __future__ import annotations

from pathlib import Path

from timewarp.core.layout import Layout
from timewarp.core.parallel import Executor


def run_stage(module, root, *, backend=None, **options) -> dict:
    """Run a generation stage on ``root`` with ``options``; ``backend``: the wording backend (default: template)."""
    return module.run(module.Config(layout=Layout(Path(root)), **options), backend)


def run_video_stage(module, root, *, workers: int = 1, executor: Executor | None = None, **options) -> dict:
    """Run ``module`` (preprocess, filter_corrupted, final_assertions, shuffle_clips) on ``root`` with ``options``
    on ``executor`` (default: a local pool of ``workers``)."""
    return module.run(module.Config(layout=Layout(Path(root)), **options), executor or Executor(workers=workers))
