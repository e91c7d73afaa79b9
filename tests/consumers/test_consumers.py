"""Each consumer's own loader, run in its own environment on TimeWarp's exports; what it read is checked here
against the frame number drawn into every frame of the sample videos (and the source records' text)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from consumer_envs import venv_python
from generated_output import fresh_copy
from test_export import export_to, generated  # noqa: F401 - the fixture and the export call
from timewarp import export
from timewarp.media.frames import sample_indices
from timewarp.core.layout import Layout
from timewarp.sample_data import frame_id
from timewarp.core.store import read_jsonl

pytestmark = pytest.mark.consumers
HERE = Path(__file__).resolve().parent
FORMS = {"mp4": {}, "frames8": {"frames": 8}, "fps2": {"fps": 2.0}, "video_root": {"video_root": True}}


def run_in(env: str, script: str, tmp: Path, jobs: dict, extra_env: dict | None = None) -> dict:
    """``script`` (tests/consumers/) run once by consumer ``env``'s Python on ``jobs``; its last stdout line is JSON."""
    python = venv_python(env)
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    res = subprocess.run([str(python), str(HERE / script), str(tmp / "jobs.json")], capture_output=True, text=True,
                         cwd=tmp, env={**clean, "HF_HOME": str(tmp / "hf"), "HF_HUB_OFFLINE": "1",
                                       "MODELSCOPE_CACHE": str(tmp / "ms"), **(extra_env or {})})
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def ids_of(files) -> list[int]:
    from PIL import Image

    return [frame_id(np.asarray(Image.open(f).convert("RGB"))[:, :, ::-1]) for f in files]


@pytest.fixture(scope="module")
def exports(generated, tmp_path_factory) -> dict:
    """form -> output root with the llamafactory and ms_swift exports in that form."""
    roots = {}
    for form, options in FORMS.items():
        out = fresh_copy(generated, tmp_path_factory.mktemp(f"consumer_{form}") / "out")
        export_to(out, "llamafactory,ms_swift", **{k: (str(out) if k == "video_root" else v) for k, v in options.items()})
        roots[form] = out
    return roots


def check_video(form: str, video, facts: tuple, files=None):
    """One video of the right frames: the mp4, or the exported frames in time order (``files``: what the
    consumer decoded, when it did)."""
    count, vfps = facts
    if form in ("mp4", "video_root"):
        assert isinstance(video, str) and video.endswith(".mp4") and Path(video).is_file()
        if files is not None:
            ids = ids_of(files)
            assert ids == sorted(ids) and len(ids) >= 2
        return
    assert isinstance(video, list)
    want = sample_indices(count, n=8) if form == "frames8" else sample_indices(count, fps=2.0, video_fps=vfps)
    assert ids_of(video) == want
    if files is not None:
        ids = ids_of(files)
        assert ids[:len(want)] == want and ids[len(want):] in ([], [want[-1]])  # (Qwen2-VL pads to an even count)


@pytest.fixture(scope="module")
def llamafactory_read(exports, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("lf_read")
    return run_in("llamafactory", "llamafactory_reader.py", tmp, {
        form: [str(Layout(root).export_dir("llamafactory")), str(root) if form == "video_root" else None,
               str(tmp / form), 2.0] for form, root in exports.items()})


@pytest.mark.parametrize("form", list(FORMS))
def test_llamafactory_loads_each_row_as_one_video_of_the_right_frames(exports, llamafactory_read, form):
    """LLaMA-Factory 0.9.5's dataset loader and Qwen2-VL plugin (tests/consumers/llamafactory_reader.py): one
    <video> per row, its frames the exported ones in time order; with --fps 2 (LLaMA-Factory's default video_fps)
    the times it gives Qwen2-VL (frame k at k / video_fps) are the frames' real times."""
    layout = Layout(exports[form])
    known = export.video_facts(layout)
    got = llamafactory_read[form]
    sources = {"timewarp_pref_explicit": layout.pref_explicit_file, "timewarp_sft_explicit": layout.sft_explicit_file}
    assert sorted(got) == sorted(sources)
    for name, rows in got.items():
        src = read_jsonl(sources[name])
        assert len(rows) == len(src)
        for r, s in zip(rows, src):
            (video,) = r["videos"]
            assert r["prompt"][0]["content"] == "<video>" + s["question"]
            answers = [m["content"] for m in r["response"]]
            assert answers == ([s["chosen"], s["rejected"]] if "pref" in name else [s["answer"]])
            check_video(form, video, known[s["video"]], r["frames"])
            if form == "fps2":
                count, vfps = known[s["video"]]
                want = sample_indices(count, fps=2.0, video_fps=vfps)
                stated = [k / r["fps"] for k in range(len(want))]
                assert np.allclose(stated, [i / vfps for i in want], atol=1.0 / vfps + 1e-6)


@pytest.fixture(scope="module")
def ms_swift_read(exports, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("swift_read")
    return run_in("ms-swift", "ms_swift_reader.py", tmp, {
        form: [str(Layout(root).export_dir("ms_swift") / "pref_explicit.jsonl"),
               str(root) if form == "video_root" else None] for form, root in exports.items()})


@pytest.mark.parametrize("form", list(FORMS))
def test_ms_swift_loads_each_pair_as_one_video_of_the_right_frames(exports, ms_swift_read, form):
    """ms-swift 4.6's dataset loader and TemplateInputs (tests/consumers/ms_swift_reader.py): chosen and rejected
    each one <video> with the same video, the exported frames in time order (or the mp4), paths resolved."""
    layout = Layout(exports[form])
    known = export.video_facts(layout)
    rows = ms_swift_read[form]
    src = read_jsonl(layout.pref_explicit_file)
    assert len(rows) == len(src)
    for r, s in zip(rows, src):
        chosen, rejected = r["chosen"], r["rejected"]
        assert chosen["videos"] == rejected["videos"] and len(chosen["videos"]) == 1 and not chosen["images"]
        assert [m["content"] for m in chosen["messages"]] == ["<video>" + s["question"], s["chosen"]]
        assert [m["content"] for m in rejected["messages"]] == ["<video>" + s["question"], s["rejected"]]
        check_video(form, chosen["videos"][0], known[s["video"]])


def test_lmms_eval_builds_the_timewarp_group_and_scores_it(generated, tmp_path):
    """lmms-eval 0.7.3's TaskManager / get_task_dict on lmms_eval_tasks/ (tests/consumers/lmms_eval_reader.py),
    with timewarp importable as a package: every question with its video, and the metrics of the yaml from
    the task's own aggregation: the key scores 100%; answering in story order scores 0% on key-changed
    questions, all of which it answers in story order."""
    layout = Layout(generated)
    bench = {"timewarp_normal": read_jsonl(layout.benchmark_normal_file),
             "timewarp_shuffled": read_jsonl(layout.benchmark_shuffled_file)}
    key = {task: {r["qid"]: f"({r['answer']})" for r in rows} for task, rows in bench.items()}  # (qids repeat)
    story = {task: {r["qid"]: r.get("normal_answer") or r["answer"] for r in rows} for task, rows in bench.items()}
    tasks = str(HERE.parents[1] / "lmms_eval_tasks")
    got = run_in("lmms-eval", "lmms_eval_reader.py", tmp_path, {"key": [tasks, key], "story": [tasks, story]},
                 {"TIMEWARP_ROOT": str(generated), "PYTHONPATH": str(HERE.parents[1])})
    assert sorted(got["key"]) == sorted(bench)
    for task, rows in bench.items():
        docs = got["key"][task]["docs"]
        assert [d["qid"] for d in docs] == [r["qid"] for r in rows]
        for d, r in zip(docs, rows):
            assert d["visual"] == [str((generated / r["video"]).resolve())] and r["question"] in d["text"]
            assert all(f"{letter}. {o}" in d["text"] for letter, o in zip("ABCD", r["options"]))
        assert got["key"][task]["metrics"]["timewarp_accuracy"] == 100.0
    shuffled = got["story"]["timewarp_shuffled"]["metrics"]
    assert any(r["key_changed"] for r in bench["timewarp_shuffled"])
    assert shuffled["timewarp_key_changed_accuracy"] == 0.0 and shuffled["timewarp_story_order_rate"] == 100.0
