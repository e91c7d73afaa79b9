"""The stage machinery: a config's options are spelled once (argparse, the config, the stats), workers raise
ItemError and the parallel map turns it into a typed rejection that StageRun records."""
from __future__ import annotations

import argparse
import pickle
from dataclasses import dataclass
from typing import Optional

import pytest

from timewarp.core.errors import ItemError, UsageError
from timewarp.core.layout import Layout
from timewarp.core.parallel import Executor, Failed, Rejected, pmap
from timewarp.core.stage import StageConfig, StageRun, add_common_args, executor_from_args, option







@dataclass(frozen=True, kw_only=True)
class Demo(StageConfig):
    per_video: int = option(3, "items per video")
    ratio: Optional[float] = option(None, "a ratio", type=float)
    names: tuple = option(("a", "b"), "names", nargs="+")
    loud: bool = option(False, "say more")


def _parse(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--root_dir", required=True)
    Demo.add_arguments(p)
    add_common_args(p)
    return p.parse_args(argv)


def test_options_are_spelled_once(tmp_path):
    args = _parse(["--root_dir", str(tmp_path), "--per_video", "5", "--names", "x", "--loud", "--seed", "7"])
    cfg = Demo.from_args(args)
    assert (cfg.per_video, cfg.ratio, cfg.names, cfg.loud, cfg.seed) == (5, None, ("x",), True, 7)
    assert cfg.layout == Layout(tmp_path)
    assert cfg.options() == {"root_dir": str(tmp_path), "seed": 7, "limit": None, "overwrite": False,
                             "per_video": 5, "ratio": None, "names": ["x"], "loud": True}
    assert pickle.loads(pickle.dumps(cfg)) == cfg      # carried whole to worker processes
    defaults = Demo.from_args(_parse(["--root_dir", str(tmp_path)]))
    assert defaults == Demo(layout=Layout(tmp_path))    # argparse defaults are the dataclass defaults
    assert "(default: 3)" in _help()


def _help() -> str:
    p = argparse.ArgumentParser()
    Demo.add_arguments(p)
    return p.format_help()


def _work(x: int) -> int:
    if x == 2:
        raise ItemError("two is bad", "detail of two")
    if x == 3:
        raise KeyError("bug")
    return x * 10


@pytest.mark.parametrize("workers", [1, 2])
def test_item_error_is_a_typed_rejection_recorded_once(tmp_path, workers):
    res = list(pmap(_work, [1, 2, 3, 4], Executor(workers=workers), disable=True))
    assert res[0] == 10 and res[3] == 40
    assert res[1] == Rejected("two is bad", "detail of two") and isinstance(res[2], Failed)
    stage = StageRun("demo", Layout(tmp_path), {})
    ok = list(stage.succeeded(["a", "b", "c", "d"], res, ["sa", "sb", "sc", "sd"]))
    assert ok == [("a", 10), ("d", 40)]
    assert [(r.id, r.reason, r.detail, r.source) for r in stage.rejects] == [
        ("b", "two is bad", "detail of two", "sb"), ("c", "internal error", "KeyError: 'bug'", "sc")]


def test_executor_is_explicit_and_checked():
    assert executor_from_args(argparse.Namespace()) == Executor()
    assert executor_from_args(argparse.Namespace(executor="local", workers=3, ray_address=None)).workers == 3
    with pytest.raises(UsageError, match="--ray_address needs --executor ray"):
        Executor("local", ray_address="auto")
    with pytest.raises(UsageError, match="--workers must be >= 1"):
        Executor(workers=0)


def stage_configs():
    from timewarp import export
    from timewarp.benchmark import generate_normal_benchmark
    from timewarp.preprocess import preprocess, shuffle_clips
    from timewarp.pref_data import combine_pref, generate_pref_implicit, generate_sft_explicit

    return {"preprocess": (preprocess.Config, dict(root_dir="in", scale=3)), "shuffle_clips": (shuffle_clips.Config, {}),
            "export": (export.Config, dict(format="trl")), "sft": (generate_sft_explicit.Config, {}),
            "benchmark": (generate_normal_benchmark.Config, {}), "combine": (combine_pref.Config, {}),
            "implicit": (generate_pref_implicit.Config, {})}


BAD_VALUES = [
    ("preprocess", dict(scale=0), "--scale must be positive"),
    ("preprocess", dict(engine="ffmpeg"), "--engine must be one of"),
    ("preprocess", dict(test_fraction=1.5), r"--test_fraction must be in \[0, 1\]"),
    ("shuffle_clips", dict(permutations_per_video=0), "--permutations_per_video must be >= 1"),
    ("export", dict(frames=4, fps=1.0), "not both"),
    ("export", dict(frames=0), "--frames must be >= 1"),
    ("export", dict(fps=-1.0), "--fps must be > 0"),
    ("export", dict(max_frames=8), "--max_frames caps --fps"),
    ("sft", dict(qa_per_video=0), "--qa_per_video must be >= 1"),
    ("benchmark", dict(questions_per_video=0), "--questions_per_video must be >= 1"),
    ("combine", dict(implicit_ratio=1.5), "ratio of implicit"),
    ("combine", dict(external=("hound.jsonl:2",)), "ratio of hound.jsonl"),
    ("combine", dict(dedup_by="prompt"), "--dedup_by"),
    ("implicit", dict(corruptions=("shuffle", "melt")), "unknown --corruptions melt"),
    ("implicit", dict(rejected_mode="invent"), "--rejected_mode must be"),
    ("implicit", dict(corruptions=()), "needs at least one of --corruptions"),
    ("implicit", dict(rejected_mode="both", hallucinations_per_video=0), "--hallucinations_per_video"),
    ("implicit", dict(frames=1), "--frames must be >= 2"),
    ("implicit", dict(fps=0.0), "--fps must be > 0"),
]


@pytest.mark.parametrize("stage,values,message", BAD_VALUES, ids=[f"{s}-{next(iter(v))}" for s, v, _ in BAD_VALUES])
def test_a_config_is_checked_when_it_is_made(tmp_path, stage, values, message):
    """A Config is valid by construction: the same checks for the command line and for a test's Config(...),
    before any stage work (no folder is read: the layout's root need not exist)."""
    cls, required = stage_configs()[stage]
    layout = Layout(tmp_path / "not-there")
    cls(layout=layout, **required)                                  # the defaults are valid
    with pytest.raises(UsageError, match=message):
        cls(layout=layout, **{**required, **values})
