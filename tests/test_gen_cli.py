"""Generation stages from the command line: bad input, the openai backend against a loopback fake
server (tests/fake_openai.py), and the two shell scripts end to end."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fake_openai import Fault, fake_openai  # noqa: E402,F401 - fake_openai is a fixture

from stages import run_stage  # noqa: E402
from timewarp.benchmark import generate_normal_benchmark, generate_shuffled_benchmark  # noqa: E402
from timewarp.pref_data import (generate_pref_explicit, generate_sft_explicit, merge_normal_captions,  # noqa: E402
                                merge_shuffled_captions)
from timewarp.text.generation import NO_MODEL_OVERWRITE_HELP  # noqa: E402
from timewarp.core.stage import NO_SEED_HELP  # noqa: E402
from timewarp.text.temporal import KINDS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MAINS = [merge_normal_captions.main, merge_shuffled_captions.main, generate_sft_explicit.main,
         generate_pref_explicit.main, generate_normal_benchmark.main, generate_shuffled_benchmark.main]


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def root(processed, tmp_path) -> Path:
    return Path(shutil.copytree(processed, tmp_path / "out", ignore=shutil.ignore_patterns("*.mp4")))


@pytest.mark.parametrize("main", MAINS)
def test_missing_and_empty_root_is_one_line_error(main, tmp_path, capsys):
    assert main(["--root_dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err
    assert main(["--root_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no normal annotations" in err and "Traceback" not in err


def test_bad_annotations_are_rejected_and_the_run_goes_on(root):
    train = sorted(p for p in (root / "normal/annotations").glob("*.json") if json.loads(p.read_text())["split"] == "train")
    test = sorted(p for p in (root / "normal/annotations").glob("*.json") if json.loads(p.read_text())["split"] == "test")
    (root / "normal/annotations/broken.json").write_text("{not json")
    noclips = json.loads(train[0].read_text())
    noclips.update(id="noclips", clips=[])
    (root / "normal/annotations/noclips.json").write_text(json.dumps(noclips))
    (root / "shuffled/shuffled_annotations" / test[0].name).unlink()  # a test video loses its shuffle
    run_stage(merge_normal_captions, root)
    run_stage(merge_shuffled_captions, root)
    run_stage(generate_sft_explicit, root)
    run_stage(generate_pref_explicit, root)
    run_stage(generate_normal_benchmark, root)
    run_stage(generate_shuffled_benchmark, root)
    reasons = {stage: {(r["id"], r["reason"]) for r in rows(root / "rejects" / f"{stage}.jsonl")}
               for stage in ("merge_normal_captions", "merge_shuffled_captions", "generate_sft_explicit",
                             "generate_normal_benchmark")}
    assert ("broken", "annotation does not parse") in reasons["merge_normal_captions"]
    assert ("noclips", "annotation has no clips") in reasons["generate_sft_explicit"]
    assert ("broken", "annotation does not parse") in reasons["generate_normal_benchmark"]
    assert (test[0].stem, "missing shuffled annotation") in reasons["merge_shuffled_captions"]
    assert (test[0].stem, "missing shuffled annotation") in reasons["generate_normal_benchmark"]
    assert {r["id"] for r in rows(root / "sft/sft_explicit.jsonl")} == {p.stem for p in train}
    assert test[0].stem not in {r["id"] for r in rows(root / "benchmark/normal.jsonl")}
    assert rows(root / "benchmark/normal.jsonl"), "the other test videos still made it"


def test_pref_honours_dir_names_and_rejects_missing_shuffle(root, capsys):
    (root / "shuffled").rename(root / "shuf2")
    (root / "shuf2/shuffled_annotations").rename(root / "shuf2/ann2")
    (root / "shuf2/shuffled_videos").mkdir(parents=True, exist_ok=True)
    (root / "shuf2/shuffled_videos").rename(root / "shuf2/vid2")
    assert generate_sft_explicit.main(["--root_dir", str(root)]) == 0
    sft = rows(root / "sft/sft_explicit.jsonl")
    victim = sft[0]["id"]
    assert generate_pref_explicit.main(["--root_dir", str(root)]) == 2  # default names: not there
    assert "no shuffled annotations" in capsys.readouterr().err
    named = ["--root_dir", str(root), "--shuffled_dir_name", "shuf2", "--annotation_dir_name", "ann2",
             "--video_dir_name", "vid2", "--mirrored"]
    assert generate_pref_explicit.main(named) == 0
    pref = rows(root / "pref/pref_explicit.jsonl")
    mirrored = [r for r in pref if r["negative"] == "mirrored"]
    assert mirrored and all(r["video"] == f"shuf2/vid2/{r['shuffled_id']}.mp4" for r in mirrored)
    (root / "shuf2/ann2" / f"{victim}.json").unlink()
    assert generate_pref_explicit.main(named) == 0
    pref = rows(root / "pref/pref_explicit.jsonl")
    assert all(r["id"] != victim for r in pref)
    rej = rows(root / "rejects/generate_pref_explicit.jsonl")
    assert {"id": victim, "reason": "missing shuffled annotation"}.items() <= next(r for r in rej if r["id"] == victim).items()
    stats = json.loads((root / "stats/generate_pref_explicit.json").read_text())
    assert stats["options"]["annotation_dir_name"] == "ann2" and stats["options"]["video_dir_name"] == "vid2"


def test_openai_without_key_or_server_fails_before_any_work(root, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for main in (generate_sft_explicit.main, merge_normal_captions.main):
        assert main(["--root_dir", str(root), "--backend", "openai", "--llm_base_url", "https://api.example.invalid/v1"]) == 2
        err = capsys.readouterr().err.strip()
        assert "OPENAI_API_KEY" in err and err.count("\n") == 0
    assert generate_normal_benchmark.main(["--root_dir", str(root), "--backend", "openai", "--llm_base_url",
                                           "http://127.0.0.1:9/v1", "--llm_timeout", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot reach" in err and err.count("\n") == 0
    assert not (root / "stats").joinpath("generate_sft_explicit.json").exists()
    assert not (root / "sft").exists() and not (root / "benchmark").exists()


def _rewrite(req: dict) -> str:
    """A well-behaved model: keeps every text, only adds a little wording."""
    user = json.loads(req["messages"][-1]["content"])
    if "events" in user:
        return json.dumps({"caption": "First, " + " Then, ".join(user["events"])})
    return json.dumps({k: f"Well, {v}" for k, v in user.items()})


def test_openai_backend_with_faults_then_rerun_hits_cache_only(root, fake_openai):
    fake_openai.responder = _rewrite
    fake_openai.push(Fault.rate_limited(0), Fault.server_error(500), Fault.hang(5), Fault.malformed())
    args = ["--root_dir", str(root), "--backend", "openai", "--llm_base_url", fake_openai.base_url, "--llm_model",
            fake_openai.model, "--llm_timeout", "1", "--llm_max_retries", "4", "--llm_concurrency", "2"]
    assert generate_sft_explicit.main(args) == 0
    sft = rows(root / "sft/sft_explicit.jsonl")
    assert sft and all(r["wording"] == "llm" and (r["answer"].startswith("Well, ") or r["answer"] in {k.none_answer for k in KINDS.values()})
                       for r in sft)  # "Nothing follows it: ..." names no event: never sent, template text
    for r in sft:  # the model did not touch the answer: still the real-order answer
        ann = json.loads((root / "normal/annotations" / f"{r['id']}.json").read_text())
        caps = [c["caption"].rstrip(".") for c in ann["clips"]]
        if r["answer_clips"]:
            assert all(caps[c].lower() in r["answer"].lower() for c in r["answer_clips"])
    stats = json.loads((root / "stats/generate_sft_explicit.json").read_text())
    usage = stats["llm_usage"]
    assert usage["retries"] >= 4 and usage["failures"] == 0 and usage["prompt_tokens"] > 0
    assert stats["rejected"] == 0
    calls = fake_openai.chat_calls
    first = (root / "sft/sft_explicit.jsonl").read_bytes()
    assert generate_sft_explicit.main(args) == 0
    assert fake_openai.chat_calls == calls, "a rerun must be served from the cache"
    assert (root / "sft/sft_explicit.jsonl").read_bytes() == first
    assert json.loads((root / "stats/generate_sft_explicit.json").read_text())["llm_usage"]["cache_hits"] == len(sft)


def test_llm_caption_that_drops_an_event_falls_back_with_reply_saved(root, fake_openai):
    def lossy(req):
        user = json.loads(req["messages"][-1]["content"])
        return json.dumps({"caption": "First, " + " Then, ".join(user["events"][:-1])})  # loses the last clip

    fake_openai.responder = lossy
    assert merge_normal_captions.main(["--root_dir", str(root), "--llm", "--llm_base_url", fake_openai.base_url,
                                       "--llm_model", fake_openai.model, "--llm_max_retries", "1"]) == 0
    view = rows(root / "captions/normal.jsonl")
    assert view and all(r["method"] == "join" for r in view)
    for r in view:
        ann = json.loads((root / "normal/annotations" / f"{r['id']}.json").read_text())
        assert ann["merged_caption"] == " ".join(c["caption"] for c in ann["clips"])
    rej = rows(root / "rejects/merge_normal_captions.jsonl")
    assert len(rej) == len(view)
    assert all(r["reason"] == "model reply not used (malformed reply)" and "missing" in r["detail"]
               and "reply: {" in r["detail"] for r in rej)

    fake_openai.responder = _rewrite
    assert merge_normal_captions.main(["--root_dir", str(root), "--llm", "--llm_base_url", fake_openai.base_url,
                                       "--llm_model", fake_openai.model]) == 0
    view = rows(root / "captions/normal.jsonl")
    assert all(r["method"] == "llm" and r["merged_caption"].startswith("First, ") for r in view)
    assert rows(root / "rejects/merge_normal_captions.jsonl") == []


@pytest.mark.video
def test_shell_scripts_end_to_end(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    subprocess.run([sys.executable, "-m", "timewarp.sample_data", str(tmp_path / "fv"), "--videos", "6"], cwd=ROOT,
                   check=True, capture_output=True)
    out = tmp_path / "out"
    r = subprocess.run([str(ROOT / "setup_dataset.sh"), str(tmp_path / "fv"), str(out), "6"], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([str(ROOT / "generate_data.sh"), str(out)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "done:" in r.stderr and str(out / "benchmark") in r.stderr
    for rel in ("captions/normal.jsonl", "captions/shuffled.jsonl", "sft/sft_explicit.jsonl", "pref/pref_explicit.jsonl",
                "benchmark/normal.jsonl", "benchmark/shuffled.jsonl"):
        assert (out / rel).is_file(), rel
    assert rows(out / "sft/sft_explicit.jsonl") and rows(out / "captions/shuffled.jsonl")
    for stage in ("merge_normal_captions", "generate_pref_explicit", "generate_shuffled_benchmark"):
        assert (out / "stats" / f"{stage}.json").is_file()
    r = subprocess.run([str(ROOT / "generate_data.sh"), str(tmp_path / "missing")], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "setup_dataset.sh" in r.stderr


def test_llm_base_url_alone_uses_the_model_and_overwrite_asks_again(root, fake_openai):
    """--llm_base_url alone means --backend openai; a rerun is served from the cache, --overwrite asks again."""
    fake_openai.responder = _rewrite
    args = ["--root_dir", str(root), "--llm_base_url", fake_openai.base_url, "--llm_model", fake_openai.model]
    assert generate_sft_explicit.main(args) == 0
    sent = fake_openai.chat_calls
    sft = rows(root / "sft/sft_explicit.jsonl")
    assert sent > 0 and any(r["wording"] == "llm" for r in sft)
    stats = json.loads((root / "stats/generate_sft_explicit.json").read_text())
    assert stats["options"]["backend"] == "openai" and stats["options"]["llm_base_url"] == fake_openai.base_url
    assert generate_sft_explicit.main(args) == 0
    assert fake_openai.chat_calls == sent  # cached
    assert generate_sft_explicit.main(args + ["--overwrite"]) == 0
    assert fake_openai.chat_calls == 2 * sent  # every request asked again
    usage = json.loads((root / "stats/generate_sft_explicit.json").read_text())["llm_usage"]
    assert usage["cache_hits"] == 0
    assert rows(root / "sft/sft_explicit.jsonl") == sft


def test_merge_overwrite_rewrites_unchanged_annotations(root):
    assert merge_normal_captions.main(["--root_dir", str(root)]) == 0
    n = len(rows(root / "captions/normal.jsonl"))
    assert merge_normal_captions.main(["--root_dir", str(root)]) == 0
    counts = json.loads((root / "stats/merge_normal_captions.json").read_text())["counts"]
    assert counts["annotations unchanged"] == n and "annotations updated" not in counts
    before = {p.name: p.stat().st_ino for p in (root / "normal/annotations").glob("*.json")}
    assert merge_normal_captions.main(["--root_dir", str(root), "--overwrite"]) == 0
    counts = json.loads((root / "stats/merge_normal_captions.json").read_text())["counts"]
    assert counts["annotations updated"] == n and "annotations unchanged" not in counts
    after = {p.name: p.stat().st_ino for p in (root / "normal/annotations").glob("*.json")}
    assert sum(before[k] != after[k] for k in before) == n  # each one written anew (temp file + rename)


@pytest.mark.parametrize("main", MAINS)
def test_generation_stages_offer_only_what_they_honour(main, root, capsys):
    """In-process stages: no --workers/--executor/--ray_address; the shuffled benchmark says which
    accepted options have no effect."""
    for opt in (["--workers", "2"], ["--executor", "local"], ["--ray_address", "auto"]):
        with pytest.raises(SystemExit) as exc:
            main(["--root_dir", str(root), *opt])
        assert exc.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    if main is generate_shuffled_benchmark.main:
        assert "this stage calls no model" in text  # the model options, accepted for TIMEWARP_ARGS
        assert NO_SEED_HELP in text and " ".join(NO_MODEL_OVERWRITE_HELP.split()) in text
    else:
        assert "ask the model again" in text  # --overwrite
