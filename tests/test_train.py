"""Training recipes on the tiny offline Qwen2-VL, for real: TRL's DPO/SFT trainers on the sample data's
TRL vision export (and on the pipeline's own rows), checked against the frames themselves."""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from generated_output import fresh_copy
from stages import run_stage, run_video_stage
from timewarp.media import frames as framelib
from timewarp.core.errors import UsageError
from timewarp.core.layout import Layout
from timewarp.sample_data import frame_id
from timewarp.core.store import read_json, read_jsonl, write_jsonl

if os.environ.get("CI"):  # .ci/run installs requirements-train.txt: a missing package is a failure there, not a skip
    import torch
    import trl  # noqa: F401
else:
    torch = pytest.importorskip("torch")
    pytest.importorskip("trl")

from timewarp.train import data as datalib  # noqa: E402
from timewarp.train import recipe, tiny  # noqa: E402

pytestmark = pytest.mark.video  # renders its own videos (conftest.py: the fast tier)

ROOT = Path(__file__).resolve().parents[1]
N_FRAMES = 8


def annotation_facts(root: Path) -> dict:
    """video path -> frame_count, straight from the annotations (independent of the training code)."""
    layout = Layout(root)
    facts = {}
    for d in (layout.normal_annotations_dir, layout.shuffled_annotations_dir):
        for p in sorted(d.glob("*.json")):
            a = read_json(p)
            facts[a["video"]] = int(a["frame_count"])
    return facts


def write_trl_dpo_export(root: Path, limit: int) -> Path:
    """The real ``export.py --format trl_dpo`` (8 frames per video as JPEGs, image blocks in the prompt) of
    the first ``limit`` preference pairs: training reads exactly what users export."""
    from timewarp import export

    export.run(export.Config(layout=Layout(root), format="trl_dpo", limit=limit))
    return Layout(root).export_dir("trl_dpo") / "pref_explicit.jsonl"


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """The README's sample data, small: 5 generated videos, 3 of them train (7 pairs), through every stage
    (read-only: tests copy it)."""
    from timewarp import sample_data
    from timewarp.benchmark import generate_normal_benchmark, generate_shuffled_benchmark
    from timewarp.preprocess import preprocess, shuffle_clips
    from timewarp.pref_data import (generate_pref_explicit, generate_sft_explicit, merge_normal_captions,
                                    merge_shuffled_captions)

    tmp = tmp_path_factory.mktemp("train_sample")
    sample_data.build(tmp / "finevideo", videos=5, seed=1)
    out = tmp / "out"
    run_video_stage(preprocess, out, root_dir=tmp / "finevideo", scale=5, workers=2, test_fraction=0.3)
    run_video_stage(shuffle_clips, out, workers=2)
    for stage in (merge_normal_captions, merge_shuffled_captions, generate_sft_explicit, generate_pref_explicit,
                  generate_normal_benchmark, generate_shuffled_benchmark):
        run_stage(stage, out)
    return out


@pytest.fixture(scope="module")
def trl_root(generated, tmp_path_factory) -> Path:
    out = fresh_copy(generated, tmp_path_factory.mktemp("train") / "out")
    write_trl_dpo_export(out, limit=4)
    return out


def args_for(trainer: str, argv: list):
    return recipe.build_parser(trainer, "t", "").parse_args(argv)


class ForwardSpy:
    """A TrainerCallback that hooks the model's forward and records what pixels reach it."""

    def __init__(self):
        from transformers import TrainerCallback

        spy = self
        self.calls = []  # (pixel_values, image_grid_thw, input_ids)

        class CB(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kw):
                def hook(module, a, kwargs):
                    if kwargs.get("pixel_values") is not None:
                        spy.calls.append((kwargs["pixel_values"].detach().clone(), kwargs["image_grid_thw"].clone(),
                                          kwargs["input_ids"].clone()))
                model.register_forward_pre_hook(hook, with_kwargs=True)

        self.callback = CB()

    def chunks(self) -> list[str]:
        """sha256 of every image's pixel rows, per forward call, split by image_grid_thw."""
        out = []
        for pv, thw, _ in self.calls:
            sizes = [int(t * h * w) for t, h, w in thw.tolist()]
            assert sum(sizes) == pv.shape[0]
            out.append([_digest(c) for c in torch.split(pv, sizes)])
        return out


def _digest(t) -> str:
    return hashlib.sha256(t.to(torch.float32).contiguous().numpy().tobytes()).hexdigest()


def test_dpo_tiny_on_trl_export_every_frame_reaches_forward_and_loss_falls(trl_root, tmp_path):
    from PIL import Image

    export_file = Layout(trl_root).export_dir("trl_dpo") / "pref_explicit.jsonl"
    rows = read_jsonl(export_file)
    assert len(rows) == 4 and len({r["images"][0].rsplit("/", 1)[0] for r in rows}) >= 2  # pairs of 2+ videos
    # the independent fact: the pixels the tiny model's own image processor makes of each exported frame file
    proc = tiny.build_processor()
    expected = {}
    for row in rows:
        for rel in row["images"]:
            f = export_file.parent / rel
            pv = proc.image_processor(images=[Image.open(f).convert("RGB")], return_tensors="pt")["pixel_values"]
            expected[_digest(pv)] = f
    files = {f for f in expected.values()}
    assert sum(len(r["images"]) for r in rows) == len(rows) * N_FRAMES
    assert len(expected) == len(files) >= 2 * N_FRAMES  # every distinct frame file gives distinct pixels

    spy = ForwardSpy()
    out = tmp_path / "run"
    summary = recipe.run("dpo", args_for("dpo", [
        "--root_dir", str(trl_root), "--model", "tiny", "--max_steps", "4", "--output_dir", str(out),
        "--learning_rate", "1e-3", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
        "--seed", "3"]), callbacks=[spy.callback])
    assert summary["data"][0]["file"] == str(export_file)  # the TRL export, not the fallback
    assert summary["examples"] == 4 and summary["settings"]["lora"] is True  # explicit config: LoRA

    seen = spy.chunks()
    # every forward got 8 frames per sequence: 2 pairs x (chosen, rejected) x 8
    assert all(len(c) == 2 * 2 * N_FRAMES for c in seen), [len(c) for c in seen]
    got = {d for c in seen for d in c}
    assert set(expected) <= got, f"{len(set(expected) - got)} exported frames never reached forward"
    # each sequence's image placeholders match its images (the processor expanded every image block)
    image_token = proc.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for pv, thw, ids in spy.calls:
        assert int((ids == image_token).sum()) == int(thw.prod(dim=1).sum()) // 4

    state = json.loads((out / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4]
    assert all(math.isfinite(x) for x in losses)
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at step 1
    assert losses[-1] < losses[0] - 0.02, losses
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert read_json(out / recipe.STATE_FILE)["steps"] == 4

    # the trained model answers both benchmarks through predict.py; evaluate.py scores them
    from timewarp.benchmark import evaluate, predict

    layout = Layout(trl_root)
    for bench in (layout.benchmark_normal_file, layout.benchmark_shuffled_file):
        preds = tmp_path / f"{bench.stem}.preds.jsonl"
        predict.run(predict.Config(layout=layout, benchmark=bench, output=preds, model=str(out), max_new_tokens=4,
                                   frames=4, limit=3))
        assert [r["qid"] for r in read_jsonl(preds)] == [r["qid"] for r in read_jsonl(bench)][:3]
        s = evaluate.run(bench, preds, quiet=True)
        assert s["n"] == len(read_jsonl(bench)) and s["missing_predictions"] == s["n"] - 3
        assert 0.0 <= s["accuracy"] <= 3 / s["n"]


def test_sft_tiny_on_pipeline_rows_samples_the_right_frames(generated, tmp_path):
    root = fresh_copy(generated, tmp_path / "out")
    out = tmp_path / "sft"
    rc = subprocess.run([sys.executable, str(ROOT / "timewarp/train/train_sft.py"), "--root_dir", str(root), "--model", "tiny",
                         "--max_steps", "2", "--limit", "2", "--no-lora", "--learning_rate", "1e-3",
                         "--output_dir", str(out), "--log_level", "WARNING"], capture_output=True, text=True, timeout=600)
    assert rc.returncode == 0, rc.stderr[-2000:]
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    summary = read_json(out / recipe.STATE_FILE)
    assert summary["data"][0]["file"].endswith("sft/sft_explicit.jsonl") and summary["settings"]["lora"] is False
    # frames were sampled from the videos: the numbers drawn in them are sample_indices of the annotation's count
    facts = annotation_facts(root)
    for row in read_jsonl(Layout(root).sft_explicit_file)[:2]:
        d = Layout(root).frames_dir / Path(row["video"]).with_suffix("")
        idx = framelib.sample_indices(facts[row["video"]], n=N_FRAMES)
        import cv2
        assert [frame_id(cv2.imread(str(d / framelib.frame_name(i)))) for i in idx] == idx


def test_pipeline_rows_and_trl_export_give_the_same_examples(trl_root):
    layout = Layout(trl_root)
    src = datalib.FrameSource([layout.export_dir("trl_dpo"), trl_root], layout.frames_dir, N_FRAMES, trl_root)
    from_export, skipped = datalib.read_examples(layout.export_dir("trl_dpo") / "pref_explicit.jsonl", datalib.pref_example, src)
    from_rows, skipped2 = datalib.read_examples(layout.pref_explicit_file, datalib.pref_example, src, limit=4)
    assert skipped == skipped2 == 0 and len(from_export) == len(from_rows) == 4
    import cv2
    for a, b in zip(from_export, from_rows):
        assert (a["prompt"], a["chosen"], a["rejected"]) == (b["prompt"], b["chosen"], b["rejected"])
        assert [frame_id(cv2.imread(p)) for p in a["images"]] == [frame_id(cv2.imread(p)) for p in b["images"]]


def test_bad_rows_are_skipped_with_one_line_and_configs_check_their_inputs(trl_root, tmp_path, caplog):
    layout = Layout(trl_root)
    good = read_jsonl(layout.export_dir("trl_dpo") / "pref_explicit.jsonl")[0]
    bad = tmp_path / "bad.jsonl"
    rows = [dict(good, images=good["images"][:-1]),                       # 7 images, 8 image blocks
            dict(good, images=good["images"][:-1] + ["frames/nope.jpg"]),  # a frame file that is not there
            {k: v for k, v in good.items() if k != "rejected"}, good]
    bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n[1]\n")
    src = datalib.FrameSource([layout.export_dir("trl_dpo")], layout.frames_dir, N_FRAMES, trl_root)
    got, skipped = datalib.read_examples(bad, datalib.pref_example, src)
    assert len(got) == 1 and skipped == 4
    lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(lines) == 4 and all(str(bad) in m and "\n" not in m for m in lines)
    assert "image blocks do not match images" in lines[0] and "nope.jpg" in lines[1] and "rejected" in lines[2]

    with pytest.raises(UsageError, match="external base set"):
        recipe.run("dpo", args_for("dpo", ["--root_dir", str(trl_root), "--config", "combined", "--model", "tiny",
                                            "--output_dir", str(tmp_path / "x")]))
    with pytest.raises(UsageError, match="pref_implicit"):
        recipe.run("dpo", args_for("dpo", ["--root_dir", str(trl_root), "--config", "implicit", "--model", "tiny",
                                            "--output_dir", str(tmp_path / "x")]))
    rc = subprocess.run([sys.executable, str(ROOT / "timewarp/train/train_dpo.py"), "--root_dir", str(trl_root),
                         "--config", "sft", "--output_dir", str(tmp_path / "y")], capture_output=True, text=True)
    assert rc.returncode == 2 and rc.stderr.strip().count("\n") == 0 and "train_sft.py" in rc.stderr


def test_external_llava_hound_set_joins_the_combined_mix(trl_root, tmp_path):
    """Combined = explicit + implicit + an external base set; LLaVA-Hound's DPO rows name a frame folder."""
    layout = Layout(trl_root)
    ext_root = tmp_path / "hound_frames"
    # a LLaVA-Hound-style external set: one folder of 10 frames per video, rows {id, video, prompt, chosen, rejected}
    facts = annotation_facts(trl_root)
    video = sorted(facts)[0]
    idx = list(range(10))
    framelib.write_frames(framelib.extract_frames(trl_root / video, idx), idx, ext_root / "v0")
    ext = tmp_path / "sft_dpo_17k.jsonl"
    write_jsonl(ext, [{"id": "v0_0", "video": "v0", "prompt": "What happens?", "answer": "a", "chosen": "a square",
                       "rejected": "a dog", "chosen_score": 5.0, "rejected_score": 1.0}])
    implicit = layout.pref_dir / "pref_implicit.jsonl"
    if not implicit.exists():  # the implicit stage needs a vision model: stand in with explicit rows of its shape
        write_jsonl(implicit, [{**r, "prompt": r["question"]} for r in read_jsonl(layout.pref_explicit_file)[:2]])
    args = args_for("dpo", ["--root_dir", str(trl_root), "--config", "combined", "--external", str(ext),
                            "--external_root", str(ext_root), "--limit", "2", "--model", "tiny", "--output_dir", "x"])
    cfg = recipe.load_config("combined")
    examples, report = recipe.load_examples("dpo", cfg, layout, args, N_FRAMES)
    assert [r["examples"] for r in report] == [2, 2, 1] and report[-1]["external"]
    import cv2
    hound = examples[-1]
    # 8 of the folder's 10 frames, uniformly, in order
    assert [frame_id(cv2.imread(p)) for p in hound["images"]] == framelib.sample_indices(10, n=N_FRAMES)


def test_dpo_full_finetune_keeps_a_frozen_reference(trl_root, tmp_path):
    """--no-lora: the reference is a frozen copy of the start weights (a model built in memory has no path
    TRL could reload it from); --gradient_checkpointing and --max_pixels go through too."""
    out = tmp_path / "full"
    summary = recipe.run("dpo", args_for("dpo", [
        "--root_dir", str(trl_root), "--model", "tiny", "--max_steps", "2", "--limit", "1", "--no-lora",
        "--gradient_checkpointing", "--max_pixels", "3136", "--gradient_accumulation_steps", "1",
        "--learning_rate", "1e-3", "--output_dir", str(out)]))
    assert summary["settings"]["lora"] is False and summary["steps"] == 2 and summary["all_losses_finite"]
    assert summary["first_loss"] == pytest.approx(math.log(2), abs=1e-4) and summary["last_loss"] < summary["first_loss"]


@pytest.mark.parametrize("typo", ["runs/explicitt", "./explicit-run", "/nowhere/model", "~/no-such-model-folder"])
def test_a_missing_local_model_folder_fails_at_once_without_asking_the_hub(trl_root, tmp_path, monkeypatch, capsys, typo):
    """A typo in a local --model path: one line naming it, exit 2, and the hub is never asked (its retries cost
    about a minute of warnings). Hub names (org/name) still go to the hub."""
    import transformers

    from timewarp.benchmark import predict
    from timewarp.train import models, train_dpo

    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    asked = []
    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained",
                        lambda name, **kw: asked.append(name) or (_ for _ in ()).throw(OSError("offline")))
    assert train_dpo.main(["--root_dir", str(trl_root), "--model", typo, "--max_steps", "1",
                           "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"--model {typo}: no such folder" in err
    bench = Layout(trl_root).benchmark_normal_file
    assert predict.main(["--benchmark", str(bench), "--output", str(tmp_path / "p.jsonl"), "--model", typo]) == 2
    assert f"--model {typo}: no such folder" in capsys.readouterr().err
    assert asked == []
    with pytest.raises(UsageError, match="not a loadable hub name"):  # a hub name is asked for
        models.load("Qwen/Qwen2-VL-2B-Instruct")
    assert asked == ["Qwen/Qwen2-VL-2B-Instruct"]


def test_dpo_tiny_qwen2_vl_trains_on_video_input_of_the_exported_frames(trl_root, tmp_path):
    """--model tiny:qwen2_vl: each example's 8 exported frames reach forward as ONE video (pixel_values_videos,
    video_grid_thw with 4 temporal patches of 2 frames, video tokens in the text), in time order; losses finite.
    The independent fact: the tiny model's own image processor applied to each exported frame file."""
    from PIL import Image

    export_file = Layout(trl_root).export_dir("trl_dpo") / "pref_explicit.jsonl"
    rows = read_jsonl(export_file)
    proc = tiny.build_processor()
    ip = proc.image_processor
    tp, ps = ip.temporal_patch_size, ip.patch_size

    def frame_rows(pv, n_frames):  # one frame's patches (its first temporal copy): (S, C, ps, ps)
        return pv.reshape(n_frames, -1, 3, tp, ps, ps)[:, :, :, 0]

    videos = {}
    for row in rows:
        per = [frame_rows(ip(images=[Image.open(export_file.parent / rel).convert("RGB")], return_tensors="pt")
                          ["pixel_values"], 1)[0] for rel in row["images"]]
        videos[tuple(_digest(f) for f in per)] = row["id"]

    calls = []

    class Spy(ForwardSpy):
        def __init__(self):
            from transformers import TrainerCallback

            class CB(TrainerCallback):
                def on_train_begin(self, args, state, control, model=None, **kw):
                    def hook(module, a, kwargs):
                        assert kwargs.get("pixel_values") is None  # no image path
                        calls.append((kwargs["pixel_values_videos"].detach().clone(), kwargs["video_grid_thw"].clone(),
                                      kwargs["input_ids"].clone()))
                    model.register_forward_pre_hook(hook, with_kwargs=True)

            self.callback = CB()

    out = tmp_path / "run"
    summary = recipe.run("dpo", args_for("dpo", [
        "--root_dir", str(trl_root), "--model", "tiny:qwen2_vl", "--max_steps", "3", "--output_dir", str(out),
        "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1"]), callbacks=[Spy().callback])
    assert summary["steps"] == 3 and summary["all_losses_finite"]
    video_token = proc.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    image_token = proc.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    seen = set()
    for pv, thw, ids in calls:
        assert thw.tolist() == [[N_FRAMES // 2, *thw[0, 1:].tolist()]] * len(thw)  # 8 frames = 4 temporal patches
        assert int((ids == image_token).sum()) == 0
        assert (ids == video_token).sum(1).tolist() == [int(t.prod()) // 4 for t in thw]  # one video per sequence
        for chunk, t in zip(torch.split(pv, [int(t.prod()) for t in thw]), thw):
            frames = chunk.reshape(int(t[0]), -1, 3, tp, ps, ps).permute(0, 3, 1, 2, 4, 5).reshape(N_FRAMES, -1, 3, ps, ps)
            key = tuple(_digest(f) for f in frames)
            assert key in videos, "a video whose frames are not one example's exported frames in time order"
            seen.add(key)
    assert seen == set(videos) and len(videos) >= 2  # every exported video (pairs share their video's frames)


def test_a_checkpoint_folder_trains_on_video_input_and_predicts_on_video(trl_root, tmp_path):
    """--video_input with a Qwen2-VL folder (the tiny one saved by path, as a real checkpoint is loaded): the
    same video path; the trained folder's processor keeps it, so predict.py feeds it video too."""
    from timewarp.benchmark import predict

    tiny.build(seed=1, save_dir=tmp_path / "ckpt")
    seen = []

    from transformers import TrainerCallback

    class CB(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            model.register_forward_pre_hook(lambda m, a, k: seen.append(sorted(x for x in ("pixel_values", "pixel_values_videos")
                                                                             if k.get(x) is not None)), with_kwargs=True)

    out = tmp_path / "run"
    summary = recipe.run("dpo", args_for("dpo", ["--root_dir", str(trl_root), "--model", str(tmp_path / "ckpt"),
                                                 "--video_input", "--max_steps", "1", "--output_dir", str(out)]),
                         callbacks=[CB()])
    assert summary["settings"]["video_input"] is True and summary["all_losses_finite"]
    assert seen and all(s == ["pixel_values_videos"] for s in seen)
    from timewarp.train import models

    _, proc = models.load(str(out))
    assert type(proc).__name__ == models.VIDEO_PROCESSOR
    layout = Layout(trl_root)
    preds = tmp_path / "p.jsonl"
    predict.run(predict.Config(layout=layout, benchmark=layout.benchmark_normal_file, output=preds, model=str(out),
                               max_new_tokens=2, frames=4, limit=2))
    assert [r.get("error") for r in read_jsonl(preds)] == [None, None]


def test_dpo_tiny_qwen2_5_vl_gets_the_video_and_the_frames_real_spacing(trl_root, tmp_path):
    """--model tiny:qwen2_5_vl: the frames as one video as for Qwen2-VL, and second_per_grid_ts (seconds per
    temporal patch of 2 frames, what its video RoPE counts time with) from the export's frame times, which are
    checked here against the annotation (frame index / fps)."""
    export_file = Layout(trl_root).export_dir("trl_dpo") / "pref_explicit.jsonl"
    rows = read_jsonl(export_file)
    facts = {a["video"]: (int(a["frame_count"]), float(a["fps"])) for d in (Layout(trl_root).normal_annotations_dir,)
             for a in map(read_json, sorted(d.glob("*.json")))}
    want = set()
    for r in rows:
        count, fps = facts[os.path.relpath(r["video"], trl_root)]
        idx = framelib.sample_indices(count, n=N_FRAMES)
        assert r["frame_times"] == pytest.approx([i / fps for i in idx], abs=1e-5)
        want.add(round(2 * (idx[-1] - idx[0]) / (len(idx) - 1) / fps, 4))
    calls = []
    from transformers import TrainerCallback

    class CB(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            model.register_forward_pre_hook(lambda m, a, k: calls.append((k.get("pixel_values_videos") is not None,
                                                                          k.get("second_per_grid_ts"))), with_kwargs=True)

    summary = recipe.run("dpo", args_for("dpo", ["--root_dir", str(trl_root), "--model", "tiny:qwen2_5_vl",
                                                 "--max_steps", "2", "--output_dir", str(tmp_path / "run")]),
                         callbacks=[CB()])
    assert summary["all_losses_finite"] and summary["steps"] == 2
    assert calls and all(video for video, _ in calls)
    got = {round(float(x), 4) for _, ts in calls for x in ts}
    assert got and got <= want and all(x > 0 for x in got)
    with pytest.raises(UsageError, match="frame times|frame_times"):  # pipeline rows carry no times
        recipe.run("sft", args_for("sft", ["--root_dir", str(trl_root), "--model", "tiny:qwen2_5_vl", "--max_steps", "1",
                                           "--output_dir", str(tmp_path / "sft")]))


def train_frames_model(trl_root: Path, tmp_path: Path, family: str, keys: tuple):
    """Two DPO steps of ``--model tiny:<family>`` on the trl_dpo export, recording ``keys`` of every forward.
    Returns (processor, {one example's frames as the family's image processor makes them from the exported
    files, hashed in time order}, [recorded values per forward])."""
    from PIL import Image
    from transformers import TrainerCallback

    export_file = Layout(trl_root).export_dir("trl_dpo") / "pref_explicit.jsonl"
    _, proc = tiny.build_frames_model(family)
    videos = {tuple(_digest(proc.image_processor(images=[Image.open(export_file.parent / rel).convert("RGB")],
                                                 return_tensors="pt")["pixel_values"][0]) for rel in r["images"])
              for r in read_jsonl(export_file)}
    calls = []

    class CB(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            model.register_forward_pre_hook(lambda m, a, k: calls.append(tuple(k.get(x) for x in keys)), with_kwargs=True)

    summary = recipe.run("dpo", args_for("dpo", ["--root_dir", str(trl_root), "--model", f"tiny:{family}",
                                                 "--max_steps", "2", "--per_device_train_batch_size", "2",
                                                 "--output_dir", str(tmp_path / "run")]), callbacks=[CB()])
    assert summary["all_losses_finite"] and summary["steps"] == 2 and calls
    return proc, videos, calls


def test_dpo_tiny_llava_next_video_gets_each_examples_frames_as_its_video(trl_root, tmp_path):
    """--model tiny:llava_next_video (LLaVA-NeXT-Video, the LLaVA-Hound lineage in transformers): forward gets
    pixel_values_videos (batch, 8 frames, C, H, W), each one example's exported frames in time order (hashes
    against the CLIP image processor on the frame files), <video> tokens for them, no images; losses finite."""
    proc, videos, calls = train_frames_model(trl_root, tmp_path, "llava_next_video",
                                             ("pixel_values", "pixel_values_videos", "input_ids"))
    video_token = proc.tokenizer.convert_tokens_to_ids("<video>")
    seen = set()
    for images, pv, ids in calls:
        assert images is None and pv.shape[1] == N_FRAMES
        assert (ids == video_token).sum(1).tolist() == [N_FRAMES * 4] * ids.shape[0]  # 4 pooled tokens a frame
        for video in pv:
            key = tuple(_digest(f) for f in video)
            assert key in videos, "a video whose frames are not one example's exported frames in time order"
            seen.add(key)
    assert seen == videos


def test_dpo_tiny_internvl_gets_each_examples_frames_as_marked_frame_tiles(trl_root, tmp_path):
    """--model tiny:internvl (InternVideo2.5's base): InternVL's video form, each frame a tile in pixel_values
    behind a "Frame k:" marker with its <IMG_CONTEXT> tokens; every sequence's 8 tiles are one example's exported
    frames in time order (hashes against its image processor on the frame files); losses finite."""
    proc, videos, calls = train_frames_model(trl_root, tmp_path, "internvl", ("pixel_values", "input_ids"))
    context = proc.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    seen = set()
    for pv, ids in calls:
        assert pv.shape[0] == ids.shape[0] * N_FRAMES
        assert (ids == context).sum(1).tolist() == [N_FRAMES * tiny.TOKENS_PER_FRAME] * ids.shape[0]
        text = proc.tokenizer.decode(ids[0])
        assert [f"Frame{k}: <img>" in text for k in range(1, N_FRAMES + 1)] == [True] * N_FRAMES
        for video in pv.reshape(ids.shape[0], N_FRAMES, *pv.shape[1:]):
            key = tuple(_digest(f) for f in video)
            assert key in videos, "a sequence whose frames are not one example's exported frames in time order"
            seen.add(key)
    assert seen == videos


def save_checkpoint_folder(family: str, folder: Path):
    """The tiny model of ``family`` saved as a real checkpoint folder is: config.json (the real model_type),
    weights, tokenizer files with the chat template, preprocessor_config.json (the family's image processor
    type). Returns the tiny processor (the independent reference for the frames)."""
    if family == "qwen2_5_vl":
        model, proc = tiny.build(family=family)
    else:
        model, proc = tiny.build_frames_model(family)
    model.save_pretrained(folder)
    proc.tokenizer.save_pretrained(folder)
    proc.image_processor.save_pretrained(folder)
    assert read_json(folder / "config.json")["model_type"] == family
    return proc


def forward_videos(family: str, proc, k: dict) -> list:
    """Each sequence's video in one forward's kwargs, as the tuple of its frames' hashes (time order)."""
    if family == "qwen2_5_vl":
        assert k.get("pixel_values") is None and k["second_per_grid_ts"] is not None
        ip = proc.image_processor
        tp, ps = ip.temporal_patch_size, ip.patch_size
        out = []
        for chunk, t in zip(torch.split(k["pixel_values_videos"], [int(t.prod()) for t in k["video_grid_thw"]]),
                            k["video_grid_thw"]):
            frames = chunk.reshape(int(t[0]), -1, 3, tp, ps, ps).permute(0, 3, 1, 2, 4, 5).reshape(N_FRAMES, -1, 3, ps, ps)
            out.append(tuple(_digest(f) for f in frames))
        return out
    if family == "llava_next_video":
        assert k.get("pixel_values") is None
        return [tuple(_digest(f) for f in video) for video in k["pixel_values_videos"]]
    pv, ids = k["pixel_values"], k["input_ids"]
    assert "Frame8: <img>" in proc.tokenizer.decode(ids[0])
    return [tuple(_digest(f) for f in video) for video in pv.reshape(ids.shape[0], N_FRAMES, *pv.shape[1:])]


def exported_videos(family: str, proc, export_file: Path) -> set:
    """Every exported example's frames, each made by the tiny family's own image processor from the frame file."""
    from PIL import Image

    ip = proc.image_processor
    out = set()
    for r in read_jsonl(export_file):
        frames = [ip(images=[Image.open(export_file.parent / rel).convert("RGB")], return_tensors="pt")["pixel_values"]
                  for rel in r["images"]]
        if family == "qwen2_5_vl":  # one frame's patches: its first temporal copy
            frames = [f.reshape(1, -1, 3, ip.temporal_patch_size, ip.patch_size, ip.patch_size)[0, :, :, 0] for f in frames]
        else:
            frames = [f[0] for f in frames]
        out.add(tuple(_digest(f) for f in frames))
    return out


def check_videos(got: list, want: set) -> None:
    for key in got:
        assert key in want, "a video whose frames are not one example's exported frames in time order"
    assert set(got) == want


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_next_video", "internvl"])
def test_a_checkpoint_folder_of_each_video_family_trains_on_video_input(trl_root, tmp_path, family):
    """A checkpoint folder (save_pretrained: config.json with the real model_type, tokenizer, preprocessor config;
    no processor class of ours) of Qwen2.5-VL / LLaVA-NeXT-Video / InternVL, given as --model with no other
    option, trains on video input through the same code as its tiny model, without torchvision: every forward's
    video is one example's exported frames in time order (hashes against the tiny processor on the frame files);
    reversed frames fail the check; losses finite; predict.py runs on the trained folder, on video."""
    from transformers import TrainerCallback

    from timewarp.train import models

    folder = tmp_path / "ckpt"
    proc = save_checkpoint_folder(family, folder)
    assert not (folder / "processor_config.json").exists()
    want = exported_videos(family, proc, Layout(trl_root).export_dir("trl_dpo") / "pref_explicit.jsonl")
    calls = []

    class CB(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            model.register_forward_pre_hook(lambda m, a, k: calls.append(forward_videos(family, proc, k)), with_kwargs=True)

    out = tmp_path / "run"
    summary = recipe.run("dpo", args_for("dpo", ["--root_dir", str(trl_root), "--model", str(folder), "--max_steps", "2",
                                                 "--per_device_train_batch_size", "2", "--output_dir", str(out)]),
                         callbacks=[CB()])
    assert summary["all_losses_finite"] and summary["steps"] == 2 and summary["settings"]["video_input"] is True
    got = [key for keys in calls for key in keys]
    assert got and len(want) >= 2
    check_videos(got, want)
    with pytest.raises(AssertionError, match="time order"):  # the check fails on reversed frames
        check_videos([key[::-1] for key in got], want)
    assert models.is_video(models.load(str(out))[1])  # the trained folder's processor keeps video
    from timewarp.benchmark import predict

    layout, preds = Layout(trl_root), tmp_path / "p.jsonl"
    predict.run(predict.Config(layout=layout, benchmark=layout.benchmark_normal_file, output=preds, model=str(out),
                               max_new_tokens=2, frames=4, limit=2))
    assert [r.get("error") for r in read_jsonl(preds)] == [None, None]
