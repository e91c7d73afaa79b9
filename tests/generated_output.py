"""A generated output root_dir for the export / evaluate / lmms-eval / report tests: the session's
``processed`` fixture (conftest.py) copied, then the six generation stages run on it (< 1 s)."""
from __future__ import annotations

import shutil
from pathlib import Path

_CACHE: dict = {}


def build(processed: Path, tmp_path_factory) -> Path:
    """The copy is shared by the tests of a session: treat it as read-only (copy again to change it)."""
    key = str(processed)
    if key not in _CACHE:
        from stages import run_stage
        from timewarp.benchmark import generate_normal_benchmark, generate_shuffled_benchmark
        from timewarp.pref_data import (generate_pref_explicit, generate_sft_explicit, merge_normal_captions,
                                        merge_shuffled_captions)

        out = tmp_path_factory.mktemp("generated") / "out"
        shutil.copytree(processed, out)
        for stage in (merge_normal_captions, merge_shuffled_captions, generate_sft_explicit, generate_pref_explicit,
                      generate_normal_benchmark, generate_shuffled_benchmark):
            run_stage(stage, out)
        _CACHE[key] = out
    return _CACHE[key]


def fresh_copy(generated: Path, dest: Path) -> Path:
    shutil.copytree(generated, dest)
    return dest
