"""Generation stages with the model backend: SIGKILL mid-run and a server that dies mid-run.

After either, rerunning the same command finishes only what is missing (no paid call twice) and
the output is byte-identical to an uninterrupted run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fake_openai import FakeOpenAI
from test_resume import kill_when
from timewarp.core.layout import Layout
from timewarp.pref_data import generate_sft_explicit
from timewarp.core.store import read_jsonl

ROOT = Path(__file__).resolve().parents[1]


def _rewrite(req: dict) -> str:
    """A well-behaved model: keeps every text, adds a little wording (same as test_gen_cli)."""
    user = json.loads(req["messages"][-1]["content"])
    if "events" in user:  # a merged caption
        return json.dumps({"caption": "First, " + " Then, ".join(user["events"])})
    return json.dumps({k: f"Well, {v}" for k, v in user.items()})


def _args(root: Path, server: FakeOpenAI, *extra) -> list[str]:
    return ["--root_dir", str(root), "--backend", "openai", "--llm_base_url", server.base_url, "--llm_model",
            server.model, "--llm_concurrency", "1", *extra]


def _reference(processed: Path, tmp_path: Path) -> tuple[bytes, int]:
    ref = tmp_path / "ref"
    shutil.copytree(processed, ref)
    with FakeOpenAI(responder=_rewrite) as server:
        assert generate_sft_explicit.main(_args(ref, server)) == 0
        calls = server.chat_calls
    return Layout(ref).sft_explicit_file.read_bytes(), calls


def _cache_files(root: Path) -> int:
    return len(list(Layout(root).cache_dir.rglob("*.json"))) if Layout(root).cache_dir.is_dir() else 0


def test_sigkill_during_model_calls_then_rerun(processed, tmp_path):
    want, n_requests = _reference(processed, tmp_path)
    assert n_requests >= 3
    root = tmp_path / "out"
    shutil.copytree(processed, root)
    with FakeOpenAI(responder=_rewrite) as server:
        server.delay = 0.15
        cmd = [sys.executable, "timewarp/pref_data/generate_sft_explicit.py", *_args(root, server)]
        assert kill_when(cmd, lambda: _cache_files(root) >= 2), "finished before it could be killed"
        assert not Layout(root).sft_explicit_file.exists()  # nothing half-written under the final name
        cached = _cache_files(root)
        server.delay = 0.0
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        # each request answered once, except at most the one in flight when the process died
        assert server.chat_calls <= n_requests + 1
        assert server.chat_calls - cached <= n_requests - cached + 1
    assert Layout(root).sft_explicit_file.read_bytes() == want


def test_server_dies_mid_run_then_rerun_finishes_only_the_missing(processed, tmp_path):
    want, n_requests = _reference(processed, tmp_path)
    root = tmp_path / "out"
    shutil.copytree(processed, root)
    answered = 2
    server = FakeOpenAI()

    def dying(req):
        if len(server.chat_requests) >= answered:  # the server goes away after answering `answered` calls
            threading.Thread(target=server.stop, daemon=True).start()
        return _rewrite(req)

    server.responder = dying
    with server:
        assert generate_sft_explicit.main(_args(root, server, "--llm_max_retries", "0", "--llm_timeout", "2")) == 0
    rows = read_jsonl(Layout(root).sft_explicit_file)
    assert rows and sum(r["wording"] == "llm" for r in rows) <= answered + 1  # the rest kept template wording
    rejects = read_jsonl(Layout(root).rejects_file("generate_sft_explicit"))
    assert rejects and all("model reply not used" in r["reason"] for r in rejects)
    failed = len(rejects)
    with FakeOpenAI(responder=_rewrite) as back:  # the server is back (on another port: the cache does not care)
        assert generate_sft_explicit.main(_args(root, back)) == 0
        assert back.chat_calls == failed  # only what was missing
    assert Layout(root).sft_explicit_file.read_bytes() == want
    assert read_jsonl(Layout(root).rejects_file("generate_sft_explicit")) == []


MODEL_STAGES = ["pref_data/merge_normal_captions.py", "pref_data/merge_shuffled_captions.py",
                "pref_data/generate_sft_explicit.py", "pref_data/generate_pref_explicit.py",
                "benchmark/generate_normal_benchmark.py"]


def _outputs(root: Path) -> dict[str, bytes]:
    """Every data file a generation stage writes (JSON annotations, JSONL outputs, rejects); not stats or cache."""
    keep = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and p.suffix in (".json", ".jsonl") and rel.parts[0] not in ("stats", "cache", "state"):
            keep[rel.as_posix()] = p.read_bytes()
    return keep


@pytest.fixture(scope="module")
def generated_base(processed, tmp_path_factory):
    """The processed fixture after the whole template pipeline: every stage's input exists."""
    base = tmp_path_factory.mktemp("gen_base") / "root"
    shutil.copytree(processed, base)
    subprocess.run(["bash", "generate_data.sh", str(base)], cwd=ROOT, check=True, capture_output=True)
    return base


@pytest.mark.parametrize("script", MODEL_STAGES)
def test_every_model_stage_survives_sigkill(script, generated_base, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    shutil.copytree(generated_base, ref)
    shutil.copytree(generated_base, out)
    with FakeOpenAI(responder=_rewrite) as server:
        subprocess.run([sys.executable, f"timewarp/{script}", *_args(ref, server)], cwd=ROOT, check=True,
                       capture_output=True)
        n_requests = server.chat_calls
    with FakeOpenAI(responder=_rewrite) as server:
        server.delay = 0.1
        cmd = [sys.executable, f"timewarp/{script}", *_args(out, server)]
        assert kill_when(cmd, lambda: _cache_files(out) >= 1), "finished before it could be killed"
        # nothing of this run is visible half-written: outputs are the old (template) ones or new whole ones
        for rel, data in _outputs(out).items():
            if rel.endswith(".json"):
                json.loads(data)
            else:
                [json.loads(line) for line in data.splitlines() if line.strip()]
        server.delay = 0.0
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        assert server.chat_calls <= n_requests + 1  # answered replies are never paid for twice
    assert _outputs(out) == _outputs(ref)


def test_generate_data_sh_with_the_model_backend_for_every_stage(generated_base, tmp_path):
    """The README's TIMEWARP_ARGS="--backend openai ..." ./generate_data.sh: every stage must accept it."""
    root = tmp_path / "out"
    shutil.copytree(generated_base, root)
    with FakeOpenAI(responder=_rewrite) as server:
        env = {**os.environ, "TIMEWARP_ARGS": f"--backend openai --llm_base_url {server.base_url} "
                                              f"--llm_model {server.model} --llm_concurrency 2"}
        res = subprocess.run(["bash", "generate_data.sh", str(root)], cwd=ROOT, capture_output=True, text=True, env=env)
        assert res.returncode == 0, res.stderr[-2000:]
        assert server.chat_calls > 0
    assert read_jsonl(Layout(root).benchmark_shuffled_file)


def test_generate_data_sh_with_renamed_shuffled_folders(generated_base, tmp_path):
    """Every stage honours the shuffled folder names (given once, through TIMEWARP_ARGS)."""
    root = tmp_path / "out"
    shutil.copytree(generated_base, root)
    ref = _outputs(root)
    (root / "shuffled" / "shuffled_annotations").rename(root / "shuffled" / "ann")
    (root / "shuffled" / "shuffled_videos").rename(root / "shuffled" / "vids")
    (root / "shuffled").rename(root / "sh")
    env = {**os.environ, "TIMEWARP_ARGS": "--shuffled_dir_name sh --annotation_dir_name ann --video_dir_name vids"}
    res = subprocess.run(["bash", "generate_data.sh", str(root)], cwd=ROOT, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = read_jsonl(Layout(root).benchmark_shuffled_file)
    assert rows and all(r["video"].startswith("sh/vids/") for r in rows)
    moved = {k.replace("shuffled/shuffled_annotations/", "sh/ann/"): v for k, v in ref.items()}
    out = _outputs(root)
    # same data, only the shuffled video paths differ
    for rel in ("sft/sft_explicit.jsonl", "pref/pref_explicit.jsonl", "benchmark/normal.jsonl", "captions/normal.jsonl"):
        assert out[rel] == moved[rel], rel
