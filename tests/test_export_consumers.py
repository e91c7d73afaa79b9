"""Each export read by its consumer's own loading code, and the frames it gets checked against the video.

TRL installs cleanly beside the project (requirements-train.txt / requirements-dev.txt), so its DPOTrainer
runs here on the trl_dpo export and on the published card's recipe, with a tiny vision-language model built
from a config. LLaMA-Factory, ms-swift and lmms-eval do not install beside it (LLaMA-Factory 0.9.5 pins
datasets<=4.0 and trl<=0.24, ms-swift 4.6 trl<1.0, lmms-eval pulls wandb/yt-dlp...): their own code runs in
their own environments in tests/consumers/; the rules restated here for them are the fast check. LLaVA-NeXT,
LLaVA-Hound, VideoLLaMA3 and MVBench are research repos, not packages: their reading code is restated here
line for line, with the source file named.
"""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from generated_output import fresh_copy
from test_export import export_to, exported, generated  # noqa: F401 - the fixtures and the export call
from timewarp import export
from timewarp.media.frames import sample_indices
from timewarp.core.layout import Layout
from timewarp.sample_data import frame_id
from timewarp.core.store import read_json, read_jsonl

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported_frames(generated, tmp_path_factory) -> Path:
    """The frame forms: --frames 8."""
    out = fresh_copy(generated, tmp_path_factory.mktemp("consumers_frames") / "out")
    export_to(out, "mvbench,videollama3_sft,llamafactory,ms_swift", frames=8, workers=2)
    return out


def facts(root: Path) -> dict:
    """video path -> (frame_count, fps) from the annotations (the facts the frames are checked against)."""
    return export.video_facts(Layout(root))


def ids_of(images) -> list[int]:
    """The frame number drawn into each image (PIL RGB or a file path)."""
    from PIL import Image

    out = []
    for im in images:
        im = Image.open(im) if isinstance(im, (str, Path)) else im
        out.append(frame_id(np.asarray(im.convert("RGB"))[:, :, ::-1]))
    return out


# ------------------------------------------------------------------ TRL (runs TRL's own code)

def tiny_vlm():
    """A LLaVA processor (byte-level BPE trained here, CLIP image processor at 28x28 = 4 image tokens) and a
    randomly initialised LlavaForConditionalGeneration: no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor, PreTrainedTokenizerFast)
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["What happens first in the video? A red square, then a blue circle."],
                            trainers.BpeTrainer(vocab_size=300, special_tokens=special, show_progress=False,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
                "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% elif c['type'] == 'text' %}"
                "{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = template
    images = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    proc = LlavaProcessor(image_processor=images, tokenizer=tok, chat_template=template, patch_size=14,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)
    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    cfg = LlavaConfig(vision_config=CLIPVisionConfig(**small, image_size=28, patch_size=14),
                      text_config=LlamaConfig(**small, num_key_value_heads=2, vocab_size=len(tok)),
                      image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1)
    return proc, LlavaForConditionalGeneration(cfg)


def test_trl_dpo_trainer_feeds_every_frame_to_the_model(exported, tmp_path):
    """trl/trainer/dpo_trainer.py: a dataset with "images" goes through DataCollatorForVisionPreference
    (prepare_multimodal_messages fills the prompt's image blocks from "images"); without it, the text path."""
    import datasets  # (not importorskip: requirements-dev.txt installs TRL, and this test must run in CI)
    import torch
    from trl import DPOConfig, DPOTrainer

    path = Layout(exported).export_dir("trl_dpo") / "pref_explicit.jsonl"
    datasets.disable_progress_bars()
    ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))
    rows = [dict(r) for r in ds]
    proc, model = tiny_vlm()
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), per_device_train_batch_size=len(rows), report_to=[],
                     max_length=None, use_cpu=True, seed=0)
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=ds, processing_class=proc)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "pixel_values" in batch, "TRL's DPO data path dropped the video"
    n = len(rows)
    known = facts(exported)
    for r in rows:
        count, fps = known[os.path.relpath(r["video"], exported)]
        want = sample_indices(count, n=8)
        assert ids_of(r["images"]) == want  # the 8 sampled frames of the row's video, in time order
        assert r["frame_times"] == pytest.approx([i / fps for i in want], abs=1e-5)
    assert batch["pixel_values"].shape[0] == 2 * n * 8  # 8 frames per prompt, prompts repeated for chosen/rejected
    per_image = (28 // 14) ** 2
    assert (batch["input_ids"] == model.config.image_token_id).sum(1).tolist() == [8 * per_image] * (2 * n)
    # each prompt's pixel values are exactly one row's 8 frames, in order (the sampler shuffles rows)
    expect = [proc.image_processor(images=r["images"], return_tensors="pt")["pixel_values"] for r in rows]
    got = batch["pixel_values"].reshape(2 * n, 8, *batch["pixel_values"].shape[1:])
    videos = [next(r["video"] for r, e in zip(rows, expect) if torch.equal(g, e)) for g in got[:n]]
    assert sorted(videos) == sorted(r["video"] for r in rows)
    assert torch.equal(got[:n], got[n:])
    with torch.no_grad():  # the model accepts them: image features and image tokens match
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"])
    assert torch.isfinite(out.logits).all()


def card_trl_code(card: str) -> str:
    """The Python block under the card's "DPO with TRL" line, as a user copies it."""
    import re

    m = re.search(r"DPO with TRL[^\n]*\n+```python\n(.*?)```", card, re.S)
    assert m, "the card shows no TRL code"
    return m.group(1)


@pytest.mark.parametrize("frames", [8, None], ids=["frames", "mp4"])
def test_published_cards_trl_code_gives_trl_the_frames(generated, tmp_path, monkeypatch, frames):
    """The card's TRL recipe run as written (the hub download answered by the local folder), then TRL's own
    DPOTrainer collator: every batch carries the pixels of each pair's 8 uniform frames, in time order."""
    import datasets
    import huggingface_hub
    import torch
    from trl import DPOConfig, DPOTrainer

    from timewarp import publish

    dest = tmp_path / "hub"
    publish.run(publish.Config(layout=Layout(generated), dest=str(dest), frames=frames))
    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, **kw: calls.append(repo) or str(dest))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    datasets.disable_progress_bars()
    scope: dict = {}
    exec(card_trl_code((dest / "README.md").read_text(encoding="utf-8")), scope)
    assert calls == ["<user>/<repo>"]
    pairs = scope["pairs"]
    videos = [r["video"] for r in read_jsonl(Layout(generated).pref_explicit_file)]
    assert len(pairs) == len(videos)
    known = facts(generated)
    for r, v in zip(pairs, videos):
        assert ids_of(r["images"]) == sample_indices(known[v][0], n=8)
    proc, model = tiny_vlm()
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), per_device_train_batch_size=2, report_to=[], max_length=None,
                     use_cpu=True, seed=0)
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=pairs, processing_class=proc)
    expect = [proc.image_processor(images=r["images"], return_tensors="pt")["pixel_values"] for r in pairs]
    batches = list(trainer.get_train_dataloader())
    assert len(batches) == (len(pairs) + 1) // 2
    seen = []
    for batch in batches:
        assert "pixel_values" in batch, "TRL took the text path: the frames never reach the model"
        n = batch["input_ids"].shape[0] // 2
        got = batch["pixel_values"].reshape(2 * n, 8, *batch["pixel_values"].shape[1:])
        seen += [next(videos[i] for i, e in enumerate(expect) if torch.equal(g, e)) for g in got[:n]]
        assert torch.equal(got[:n], got[n:])  # chosen and rejected see the same frames
    assert sorted(seen) == sorted(videos)  # every pair's own frames, each pair once


# ------------------------------------------------------------------ MVBench

def mvbench_read_frame(video_path, num_segments=8, bound=None, fps=3):
    """OpenGVLab/Ask-Anything video_chat2/mvbench.ipynb, MVBench_dataset.get_index + read_frame, verbatim."""
    from PIL import Image

    max_frame = len(os.listdir(video_path))
    first_idx = 1  # frame_idx starts from 1
    start, end = (bound[0], bound[1]) if bound else (-100000, 100000)
    start_idx = max(first_idx, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    seg_size = float(end_idx - start_idx) / num_segments
    frame_indices = np.array([int(start_idx + (seg_size / 2) + np.round(seg_size * idx)) for idx in range(num_segments)])
    return frame_indices, [Image.open(os.path.join(video_path, f"{frame_index:05d}.jpg")) for frame_index in frame_indices]


def mvbench_answer_index(data) -> int:
    """mvbench.ipynb MVBench_dataset.qa_template: the answer is found by text among the candidates."""
    return next((i for i, c in enumerate(data["candidates"]) if c == data["answer"]), -1)


def test_mvbench_frame_reader_opens_every_frame(exported_frames):
    layout = Layout(exported_frames)
    known = facts(exported_frames)
    for name in ("normal", "shuffled"):
        src = read_jsonl(getattr(layout, f"benchmark_{name}_file"))
        rows = read_json(layout.export_dir("mvbench") / f"{name}.json")
        assert len(rows) == len(src)
        for r, s in zip(rows, src):
            picked, frames = mvbench_read_frame(r["video"])  # FileNotFoundError unless named 00001.jpg ...
            assert len(frames) == 8
            if name == "normal":  # a normal video's frame k shows source frame k; file k is the k-th sampled
                count, vfps = known[s["video"]]
                want = sample_indices(count, fps=3.0, video_fps=vfps)  # the folder is 3 fps, as read_frame assumes
                assert len(os.listdir(r["video"])) == len(want)
                assert ids_of(frames) == [want[k - 1] for k in picked]
            assert mvbench_answer_index(r) == s["answer_index"]


@pytest.mark.parametrize("eval_fps", [1, 3])  # evaluation/evaluate.py: --fps default 1
def test_videollama3_mvbench_evaluator_reads_the_frames_real_times(exported_frames, eval_fps):
    """DAMO-NLP-SG/VideoLLaMA3 evaluation/benchmarks/mvbench.py MVBenchDataset.load_data (video_path =
    os.path.join(video_folder, data["video"]), no start/end for video tasks) and base.py
    BaseVideoEvalDataset.__getitem__ -> mm_utils.load_video -> load_video_from_ids for a folder (3 fps)."""
    layout = Layout(exported_frames)
    src = read_jsonl(layout.benchmark_normal_file)
    rows = read_json(layout.export_dir("mvbench") / "normal.json")
    known = facts(exported_frames)
    for r, s in zip(rows, src):
        video_path = os.path.join("/unused-data-root/video/task/", r["video"])
        count, vfps = known[s["video"]]
        files, stamps = videollama3_frame_folder(video_path, fps=eval_fps, max_frames=180)
        real = [i / vfps for i in ids_of(files)]  # normal videos: the drawn number is the frame's index
        assert np.allclose(stamps, real, atol=1.0 / vfps + 1e-6), (stamps, real)
        every = sorted(os.listdir(video_path))
        assert len(files) == (len(every) if eval_fps == 3 else len(range(1, len(every), 3)))
        assert real[-1] > count / vfps - 1.0  # the whole video, not its first seconds


# ------------------------------------------------------------------ VideoLLaMA3

def videollama3_frame_folder(video_path, fps=None, max_frames=180):
    """DAMO-NLP-SG/VideoLLaMA3 videollama3/mm_utils.py load_video_from_ids + frame_sample, the frame-folder
    branch (s = e = None): the folder is read as 3 fps. Returns (frame files, timestamps)."""
    frame_files = sorted(os.listdir(video_path))
    vid_fps = 3
    duration = len(frame_files)
    if fps is not None and duration / vid_fps < max_frames:
        segment_len = min(vid_fps // fps, duration)
        sampled = np.arange(segment_len // 2, duration, segment_len, dtype=int)
    else:
        sampled = np.arange(duration).astype(int) if duration <= max_frames else np.linspace(0, duration - 1, max_frames, dtype=int)
    return [os.path.join(video_path, frame_files[i]) for i in sampled], [x / vid_fps for x in sampled]


@pytest.mark.parametrize("train_fps", [None, 1])  # VideoLLaMA3's training scripts pass --fps 1
def test_videollama3_reads_the_frames_real_times(exported_frames, train_fps):
    layout = Layout(exported_frames)
    sft = read_jsonl(layout.sft_explicit_file)
    rows = read_jsonl(layout.export_dir("videollama3_sft") / "sft_explicit.jsonl")
    known = facts(exported_frames)
    assert len(rows) == len(sft)
    for r, s in zip(rows, sft):
        (video,) = r["video"]
        video = os.path.join("/unused-data-folder", video)  # train.py: os.path.join(data_folder, video[0])
        assert os.path.isdir(video)
        files, stamps = videollama3_frame_folder(video, fps=train_fps)
        vfps = known[s["video"]][1]
        real = [i / vfps for i in ids_of(files)]  # sft videos are normal videos: the drawn number is the frame's index
        assert len(files) >= 2
        assert np.allclose(stamps, real, atol=1.0 / vfps + 1e-6), (stamps, real)
        assert r["conversations"][0]["value"].count("<video>") == 1


# ------------------------------------------------------------------ LLaVA-NeXT(-Video), LLaVA-Hound / Video-LLaVA

LLAVA_NEXT_DEFAULT_IMAGE_TOKEN = "<image>"  # LLaVA-VL/LLaVA-NeXT llava/constants.py; the only media token it knows
LLAVA_HOUND_TOKENS = {"IMAGE": "<image>", "VIDEO": "<video>", "AUDIO": "<audio>", "THERMAL": "<thermal>", "DEPTH": "<depth>"}


def test_llava_next_video_sft_is_an_mp4_with_the_image_token(exported):
    """LLaVA-NeXT llava/train/train.py LazySupervisedDataset: "video" joined to --video_folder is decoded with
    process_video_with_decord (a frame folder only for shareVideoGPTV paths); preprocess_multimodal and
    llava/mm_utils.py tokenizer_image_token split the prompt on "<image>" only: "<video>" stays plain text."""
    layout = Layout(exported)
    sft = read_jsonl(layout.sft_explicit_file)
    rows = read_json(layout.export_dir("llava_next_video_sft") / "sft_explicit.json")
    assert len(rows) == len(sft)
    for r, s in zip(rows, sft):
        video = os.path.join("/unused-video-folder", r["video"])
        assert os.path.isfile(video) and video.endswith(".mp4") and "shareVideoGPTV" not in video
        human = r["conversations"][0]["value"]
        assert len(human.split(LLAVA_NEXT_DEFAULT_IMAGE_TOKEN)) == 2  # one image slot: the video's features
        assert "<video>" not in human and s["question"] in human
        assert r["conversations"][1] == {"from": "gpt", "value": s["answer"]}


def llava_hound_frames(frames_dir, num_frames=8):
    """RifleZhang/LLaVA-Hound-DPO llava/model/multimodal_encoder/languagebind/video/processing_video.py:
    load_frames (sorted listdir) + sample_frames (linspace), the 'frames' backend."""
    names = sorted(os.listdir(frames_dir))
    return [f"{frames_dir}/{names[i]}" for i in np.linspace(0, len(names) - 1, num_frames, dtype=int).tolist()]


@pytest.mark.parametrize("fmt,source", [("llava_hound_sft", "sft"), ("llava_hound_dpo", "pref")])
def test_llava_hound_reads_a_frame_folder_in_time_order(exported, fmt, source):
    layout = Layout(exported)
    src = read_jsonl(layout.sft_explicit_file if source == "sft" else layout.pref_explicit_file)
    path = layout.export_dir(fmt) / ("sft_explicit.json" if source == "sft" else "pref_explicit.jsonl")
    rows = read_json(path) if path.suffix == ".json" else read_jsonl(path)
    known = facts(exported)
    assert len(rows) == len(src)
    for r, s in zip(rows, src):
        folder = os.path.join("/unused-video-folder", r["video"])  # train.py: os.path.join(video_folder, video)
        assert os.path.isdir(folder)
        assert ids_of(llava_hound_frames(folder)) == sample_indices(known[s["video"]][0], n=8)
        if source == "pref":  # dpo_scripts/run_dpo.py strips "<video>" from "prompt" and puts it first itself
            assert r["prompt"] == s["question"]
        if source == "sft":
            human = r["conversations"][0]["value"]
            assert [t for t in LLAVA_HOUND_TOKENS.values() if t in human] == ["<video>"]


# ------------------------------------------------------------------ LLaMA-Factory, ms-swift

def llamafactory_check(row: dict, entry: dict, media_dir: Path):
    """LLaMA-Factory src/llamafactory/data/converter.py SharegptDatasetConverter (tags human/gpt alternate;
    ranking: odd message count, chosen/rejected from the assistant tag; _find_medias joins media_dir) and
    data/mm_plugin.py _validate_messages (as many <image>/<video> placeholders as images/videos)."""
    cols = entry["columns"]
    messages = row[cols["messages"]]
    for i, m in enumerate(messages):
        assert m["from"] == ("human", "gpt")[i % 2]
    assert len(messages) % 2 == (1 if entry.get("ranking") else 0)
    if entry.get("ranking"):
        assert row[cols["chosen"]]["from"] == "gpt" and row[cols["rejected"]]["from"] == "gpt"
    text = "".join(m["value"] for m in messages)
    images, videos = row.get(cols.get("images", ""), []) or [], row.get(cols.get("videos", ""), []) or []
    assert text.count("<image>") == len(images) and text.count("<video>") == len(videos)
    assert images or videos
    for p in images + [f for v in videos for f in (v if isinstance(v, list) else [v])]:  # a video: file or frames
        assert os.path.isfile(os.path.join(media_dir, p)), p


def ms_swift_check(row: dict, root_image_dir: str | None):
    """ms-swift swift/template/base.py (one <image>/<video> placeholder per media item) and
    swift/template/vision_utils.py _check_path (a relative path is joined to $ROOT_IMAGE_DIR)."""
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"] and isinstance(row["rejected_response"], str)
    text = row["messages"][0]["content"]
    images, videos = row.get("images", []), row.get("videos", [])
    assert text.count("<image>") == len(images) and text.count("<video>") == len(videos) and (images or videos)
    for p in images + [f for v in videos for f in (v if isinstance(v, list) else [v])]:  # a video: file or frames
        assert os.path.exists(p if root_image_dir is None else os.path.join(root_image_dir, p)), p


@pytest.mark.parametrize("form", ["mp4", "frames", "video_root"])
def test_llamafactory_and_ms_swift_rules(exported, exported_frames, generated, tmp_path, form):
    if form == "video_root":
        root = fresh_copy(generated, tmp_path / "out")
        export_to(root, "llamafactory,ms_swift", video_root=str(root))
    else:
        root = exported if form == "mp4" else exported_frames
    layout = Layout(root)
    lf = layout.export_dir("llamafactory")
    info = read_json(lf / "dataset_info.json")
    media_dir = root if form == "video_root" else lf  # data_args.py: media_dir defaults to dataset_dir
    known = facts(root)

    def one_video(r, src):  # the --frames form: the 8 sampled frames as one video, in time order
        if form == "frames":
            (frames,) = r["videos"]
            assert ids_of(frames) == sample_indices(known[src["video"]][0], n=8)
        else:
            assert isinstance(r["videos"][0], str) and r["videos"][0].endswith(".mp4")

    for name, entry in info.items():
        rows = read_json(lf / entry["file_name"])
        src = read_jsonl(layout.pref_explicit_file if entry.get("ranking") else layout.sft_explicit_file)
        assert len(rows) == len(src)
        for r, s in zip(rows, src):
            llamafactory_check(r, entry, media_dir)
            one_video(r, s)
    for r, s in zip(read_jsonl(layout.export_dir("ms_swift") / "pref_explicit.jsonl"), read_jsonl(layout.pref_explicit_file)):
        ms_swift_check(r, str(root) if form == "video_root" else None)
        one_video(r, s)


def test_video_root_help_names_each_consumers_setting(capsys):
    with pytest.raises(SystemExit):
        export.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for setting in ("media_dir", "ROOT_IMAGE_DIR", "--video_folder", "--data_folder"):
        assert setting in text


# ------------------------------------------------------------------ lmms-eval

TASK_DIR = ROOT / "lmms_eval_tasks" / "timewarp"


def test_lmms_eval_group_has_an_aggregate_metric_its_subtasks_report():
    """lmms_eval/api/group.py GroupConfig / AggMetricConfig ("mean" is the only named aggregation) and
    lmms_eval/evaluator_utils.py consolidate_group_results (no aggregate_metric_list = no group score)."""
    group = yaml.safe_load((TASK_DIR / "timewarp.yaml").read_text())
    aggs = group.get("aggregate_metric_list")
    assert aggs, "the group has no score"
    aggs = [aggs] if isinstance(aggs, dict) else aggs
    for agg in aggs:
        assert set(agg) <= {"metric", "aggregation", "weight_by_size", "filter_list"}
        assert agg.get("aggregation", "mean") == "mean" and isinstance(agg.get("weight_by_size", False), bool)
        for task in group["task"]:
            text = (TASK_DIR / f"{task}.yaml").read_text().replace("!function", "")
            metrics = [m["metric"] for m in yaml.safe_load(text)["metric_list"]]
            assert agg["metric"] in metrics, (task, agg["metric"])


def test_lmms_eval_task_folder_works_outside_the_checkout(generated, tmp_path):
    """The task folder copied anywhere (as --include_path takes it), timewarp importable as a package:
    lmms_eval/utils.py import_function loads utils.py beside the yaml by file location."""
    tasks = tmp_path / "elsewhere" / "timewarp"
    shutil.copytree(TASK_DIR, tasks)
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('utils', {str(tasks / 'utils.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print(m.NORMAL_DATA_FILE)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TIMEWARP_ROOT": str(generated)}  # ROOT stands in for an install
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(Layout(generated).benchmark_normal_file.resolve())
    assert "sys.path" not in (tasks / "utils.py").read_text()
