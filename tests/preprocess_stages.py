"""Calling a per-video stage from a test: ``run_video_stage(module, root, workers=2, **options)`` =
``module.run(module.Config(layout=Layout(root), **options), Executor(workers=workers))``, so a test names
only the options it sets (preprocess: ``root`` is its --save_dir, ``root_dir=`` the FineVideo input)."""
from __future__ import annotations

from pathlib import Path

from timewarp.layout import Layout
from timewarp.parallel import Executor


def run_video_stage(module, root, *, workers: int = 1, executor: Executor | None = None, **options):
    """Run ``module`` (preprocess, filter_corrupted, final_assertions, shuffle_clips) on ``root`` with ``options``
    on ``executor`` (default: a local pool of ``workers``)."""
    return module.run(module.Config(layout=Layout(Path(root)), **options), executor or Executor(workers=workers))
