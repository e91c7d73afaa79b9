"""Exports: every format loads with `datasets` (the loader TRL, LLaMA-Factory and ms-swift use), every
video / frame path exists, every answer is the source record's, and sampled frames are the right ones."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from generated_output import build, fresh_copy
from timewarp import export
from timewarp.media.frames import sample_indices
from timewarp.core.layout import Layout
from timewarp.core.parallel import Executor
from timewarp.sample_data import frame_id as sample_frame_id
from timewarp.core.store import read_json, read_jsonl

datasets = pytest.importorskip("datasets")  # requirements-dev.txt


@pytest.fixture(scope="module")
def generated(processed, tmp_path_factory) -> Path:
    return build(processed, tmp_path_factory)


def export_to(root: Path, fmt: str, workers: int = 1, **options) -> dict:
    """export.py on ``root`` as its main() runs it: the stage's Config, the executor explicit."""
    return export.run(export.Config(layout=Layout(root), format=fmt, **options), Executor(workers=workers))


@pytest.fixture(scope="module")
def exported(generated, tmp_path_factory) -> Path:
    """Every format with its defaults (what a user gets from --format all)."""
    out = fresh_copy(generated, tmp_path_factory.mktemp("export") / "out")
    export_to(out, "all", workers=2)
    return out


def load(path: Path, cache: Path) -> list[dict]:
    datasets.disable_progress_bars()
    ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache))
    return [dict(r) for r in ds]


def frame_id(path: Path) -> int:
    """The source frame number drawn into a sample_data frame (read from the JPEG)."""
    import cv2

    return sample_frame_id(cv2.imread(str(path)))


def test_every_format_loads_with_datasets_and_keeps_the_answers(exported, tmp_path):
    layout = Layout(exported)
    pref = read_jsonl(layout.pref_explicit_file)
    sft = read_jsonl(layout.sft_explicit_file)
    bench = {"normal": read_jsonl(layout.benchmark_normal_file), "shuffled": read_jsonl(layout.benchmark_shuffled_file)}
    assert pref and sft and bench["normal"] and bench["shuffled"]
    ex = layout.exports_dir
    cache = tmp_path / "hf"

    def video_of(rows, key="video"):
        for r in rows:
            v = r[key]
            for p in (v if isinstance(v, list) else [v]):
                assert os.path.isabs(p) and Path(p).exists(), p

    rows = load(ex / "trl_dpo" / "pref_explicit.jsonl", cache)
    assert len(rows) == len(pref)
    for r, s in zip(rows, pref):
        assert r["prompt"] == [{"role": "user", "content": [{"type": "image"}] * 8 + [{"type": "text", "text": s["question"]}]}]
        assert r["chosen"] == [{"role": "assistant", "content": [{"type": "text", "text": s["chosen"]}]}]
        assert r["rejected"] == [{"role": "assistant", "content": [{"type": "text", "text": s["rejected"]}]}]
        assert r["video"] == str((exported / s["video"]).resolve()) and len(r["images"]) == 8
        assert r["frame_times"] == sorted(r["frame_times"])
    video_of(rows, "images")

    rows = load(ex / "ms_swift" / "pref_explicit.jsonl", cache)
    assert [(r["messages"][0]["content"], r["messages"][1]["content"], r["rejected_response"]) for r in rows] == \
        [("<video>" + s["question"], s["chosen"], s["rejected"]) for s in pref]
    assert [r["messages"][1]["role"] for r in rows] == ["assistant"] * len(pref)
    video_of(rows, "videos")

    rows = load(ex / "llava_hound_dpo" / "pref_explicit.jsonl", cache)
    assert set(rows[0]) == {"id", "video", "prompt", "answer", "chosen", "rejected", "chosen_score", "rejected_score"}
    for r, s in zip(rows, pref):
        assert (r["id"], r["prompt"], r["answer"], r["chosen"], r["rejected"]) == (s["pid"], s["question"], s["chosen"], s["chosen"], s["rejected"])
        assert r["chosen_score"] > r["rejected_score"]
        frames = sorted(Path(r["video"]).glob("*.jpg"))
        assert Path(r["video"]).is_dir() and len(frames) == 8

    lf = ex / "llamafactory"
    info = read_json(lf / "dataset_info.json")
    assert info["timewarp_pref_explicit"]["ranking"] is True and info["timewarp_pref_explicit"]["formatting"] == "sharegpt"
    rows = load(lf / info["timewarp_pref_explicit"]["file_name"], cache)
    cols = info["timewarp_pref_explicit"]["columns"]
    for r, s in zip(rows, pref):
        assert r[cols["messages"]] == [{"from": "human", "value": "<video>" + s["question"]}]
        assert r[cols["chosen"]] == {"from": "gpt", "value": s["chosen"]}
        assert r[cols["rejected"]] == {"from": "gpt", "value": s["rejected"]}
    video_of(rows, cols["videos"])
    rows = load(lf / info["timewarp_sft_explicit"]["file_name"], cache)
    assert [r["conversations"][1]["value"] for r in rows] == [s["answer"] for s in sft]
    assert "ranking" not in info["timewarp_sft_explicit"]

    for name, suffix, token in (("llava_next_video_sft", ".json", "<image>"), ("llava_hound_sft", ".json", "<video>"),
                                ("videollama3_sft", ".jsonl", "<video>")):
        rows = load(ex / name / f"sft_explicit{suffix}", cache)
        assert len(rows) == len(sft)
        for r, s in zip(rows, sft):
            assert r["conversations"] == [{"from": "human", "value": token + "\n" + s["question"]},
                                          {"from": "gpt", "value": s["answer"]}]
        video_of(rows)
    assert load(ex / "llava_next_video_sft" / "sft_explicit.json", cache)[0]["video"].endswith(".mp4")
    assert Path(load(ex / "llava_hound_sft" / "sft_explicit.json", cache)[0]["video"]).is_dir()
    assert isinstance(load(ex / "videollama3_sft" / "sft_explicit.jsonl", cache)[0]["video"], list)

    for name, src in bench.items():
        rows = load(ex / "mvbench" / f"{name}.json", cache)
        assert len(rows) == len(src)
        for r, s in zip(rows, src):
            assert r["question"] == s["question"] and r["candidates"] == s["options"]
            assert r["answer"] == s["options"][s["answer_index"]] and r["answer_letter"] == s["answer"]
            assert r["key_changed"] == s["key_changed"] and r["video"].endswith(s["video"])
        video_of(rows)


def mvbench_indices(ann: dict) -> list[int]:
    """MVBench's frame folders are 3 fps whatever sampling was asked (its readers take a folder as 3 fps)."""
    return sample_indices(ann["frame_count"], fps=3.0, video_fps=ann["fps"])


def test_frames_are_the_sampled_frames_of_each_video(generated, tmp_path):
    out = fresh_copy(generated, tmp_path / "out")
    layout = Layout(out)
    export_to(out, "mvbench,trl_dpo", frames=4)
    for name in ("normal", "shuffled"):
        for r in read_json(layout.export_dir("mvbench") / f"{name}.json"):
            files = sorted(Path(r["video"]).glob("*.jpg"))
            ann = read_json((layout.normal_annotation if name == "normal" else layout.shuffled_annotation)(r["video_id"]))
            idx = mvbench_indices(ann)  # the k-th file is the k-th sampled frame
            assert [f.name for f in files] == [f"{k:05d}.jpg" for k in range(1, len(idx) + 1)] and len(idx) > 4
            src = read_json(layout.normal_annotation(r["video_id"].split("__")[0]))
            if name == "normal":
                # frame k of a normal video shows source frame k
                assert [frame_id(f) for f in files] == idx
            else:
                # a shuffled video's frame shows the source frame its clip (in permuted order) came from
                shuf = read_json(layout.shuffled_annotation(r["video_id"]))
                for f, j in zip(files, idx):
                    c = next(c for c in shuf["clips"] if c["start_frame"] <= j < c["end_frame"])
                    expect = src["clips"][c["source_index"]]["start_frame"] + j - c["start_frame"]
                    assert frame_id(f) == expect
    rows = load(layout.export_dir("trl_dpo") / "pref_explicit.jsonl", tmp_path / "hf")
    for r in rows:
        assert len(r["images"]) == 4 and all(Path(p).is_file() for p in r["images"])
        blocks = r["prompt"][0]["content"]
        assert [b["type"] for b in blocks] == ["image"] * 4 + ["text"]
    # frames of a video that changed since they were written are written again
    first = read_json(layout.export_dir("mvbench") / "normal.json")[0]
    frame, other = sorted(Path(first["video"]).glob("*.jpg"))[:2]
    want = frame_id(frame)
    frame.write_bytes(other.read_bytes())  # now shows another frame
    video = out / read_json(layout.normal_annotation(first["video_id"]))["video"]
    os.utime(video, ns=(video.stat().st_atime_ns, video.stat().st_mtime_ns + 10**9))  # the video was re-made
    export_to(out, "mvbench", frames=4)
    assert frame_id(frame) == want
    # a frame folder missing a frame (a run that died) is written again
    other.unlink()
    export_to(out, "mvbench", frames=4)
    assert other.is_file() and len(list(Path(first["video"]).iterdir())) == len(mvbench_indices(
        read_json(layout.normal_annotation(first["video_id"]))))
    # a rerun with another sampling does not leave stray frames in the folders trainers read whole
    export_to(out, "trl_dpo", frames=8)
    export_to(out, "trl_dpo", fps=1.0, max_frames=3)
    for r in read_jsonl(layout.export_dir("trl_dpo") / "pref_explicit.jsonl"):
        folder = Path(r["images"][0]).parent
        assert "fps1_max3" in str(folder) and 1 <= len(list(folder.glob("*.jpg"))) <= 3


def test_video_root_makes_paths_relative_and_missing_videos_are_rejected(generated, tmp_path):
    out = fresh_copy(generated, tmp_path / "out")
    layout = Layout(out)
    bench = read_jsonl(layout.benchmark_normal_file)
    gone = out / bench[0]["video"]
    gone.unlink()
    stats = export_to(out, "mvbench,ms_swift", video_root=str(out))
    rows = read_json(layout.export_dir("mvbench") / "normal.json")
    lost = [b for b in bench if b["video"] == bench[0]["video"]]
    assert len(rows) == len(bench) - len(lost)
    assert all(not os.path.isabs(r["video"]) and (out / r["video"]).is_file() for r in rows)
    swift = read_jsonl(layout.export_dir("ms_swift") / "pref_explicit.jsonl")
    assert all((out / r["videos"][0]).is_file() for r in swift)
    assert stats["rejects_by_reason"].get("video missing", 0) >= len(lost)
    rejects = read_jsonl(layout.rejects_file("export"))
    assert {r["reason"] for r in rejects} == {"video missing"}


def test_unusable_input_is_one_line_exit_2(tmp_path, capsys):
    assert export.main(["--root_dir", str(tmp_path), "--format", "nope"]) == 2
    assert "unknown nope" in capsys.readouterr().err
    assert export.main(["--root_dir", str(tmp_path), "--format", "trl_dpo"]) == 2
    err = capsys.readouterr().err
    assert "nothing to export" in err and len(err.strip().splitlines()) == 1
    assert export.main(["--root_dir", str(tmp_path / "missing"), "--format", "all"]) == 2
    capsys.readouterr()
    assert export.main(["--root_dir", str(tmp_path), "--format", "llava_sft"]) == 2
    assert "llava_next_video_sft" in capsys.readouterr().err


def test_shuffled_folder_names_are_honoured(generated, tmp_path):
    """A pipeline run with other shuffled folder names (shuffle_clips --shuffled_dir_name ...): export reads the
    shuffled videos' frame counts from that folder, as every other stage does."""
    out = fresh_copy(generated, tmp_path / "out")
    names = ["--shuffled_dir_name", "shuf2", "--annotation_dir_name", "ann2", "--video_dir_name", "vid2"]
    (out / "shuffled" / "shuffled_annotations").rename(out / "shuffled" / "ann2")
    (out / "shuffled" / "shuffled_videos").rename(out / "shuffled" / "vid2")
    (out / "shuffled").rename(out / "shuf2")
    for path in [out / "benchmark" / "shuffled.jsonl", *sorted((out / "shuf2" / "ann2").glob("*.json"))]:
        path.write_text(path.read_text().replace("shuffled/shuffled_videos/", "shuf2/vid2/"))
    layout = Layout(out, "shuf2", "ann2", "vid2")
    shuffled = read_jsonl(layout.benchmark_shuffled_file)
    argv = ["--root_dir", str(out), "--format", "mvbench", "--frames", "4", "--workers", "1"]
    assert export.main(argv) == 0  # default names: the shuffled videos have no annotation, so no frames
    assert {r["reason"] for r in read_jsonl(layout.rejects_file("export"))} == {"video has no annotation", "no frames"}
    assert export.main(argv + names) == 0
    assert read_jsonl(layout.rejects_file("export")) == []
    rows = read_json(layout.export_dir("mvbench") / "shuffled.json")
    assert len(rows) == len(shuffled) and all("/shuf2/vid2/" in r["video"] for r in rows)
    for r in rows:  # the frames are the sampled ones of the shuffled video in the renamed folder
        ann = read_json(layout.shuffled_annotation(r["video_id"]))
        files = sorted(Path(r["video"]).glob("*.jpg"))
        src = read_json(layout.normal_annotation(ann["normal_id"]))
        assert len(files) == len(mvbench_indices(ann))
        for f, j in zip(files, mvbench_indices(ann)):
            c = next(c for c in ann["clips"] if c["start_frame"] <= j < c["end_frame"])
            assert frame_id(f) == src["clips"][c["source_index"]]["start_frame"] + j - c["start_frame"]


def test_a_video_whose_frames_fail_is_one_reject_and_its_rows_say_so(generated, tmp_path):
    out = fresh_copy(generated, tmp_path / "out")
    layout = Layout(out)
    bench = read_jsonl(layout.benchmark_normal_file)
    vid = bench[0]["video_id"]
    ann_path = layout.normal_annotation(vid)
    ann = read_json(ann_path)
    ann["frame_count"] += 500  # the annotation promises frames the video does not have
    ann_path.write_text(json.dumps(ann))
    stats = export_to(out, "mvbench", workers=2, frames=4)
    rejects = read_jsonl(layout.rejects_file("export"))
    video = [r for r in rejects if r["id"].startswith("frames fps3:")]
    assert [(r["id"], r["reason"]) for r in video] == [(f"frames fps3:{ann['video']}", "video shorter than expected")]
    mine = [b for b in bench if b["video"] == ann["video"]]
    assert sorted(r["id"] for r in rejects if r["reason"] == "no frames") == sorted(f"mvbench:normal:{b['qid']}" for b in mine)
    assert stats["items_out"] == stats["items_in"] - len(mine)
    assert len(read_json(layout.export_dir("mvbench") / "normal.json")) == len(bench) - len(mine)


def test_options_that_would_do_nothing_are_refused(generated, tmp_path, capsys):
    out = fresh_copy(generated, tmp_path / "out")
    assert export.main(["--root_dir", str(out), "--format", "mvbench", "--frames", "4", "--max_frames", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max_frames" in err[0] and "--fps" in err[0]
    assert export.main(["--root_dir", str(out), "--format", "mvbench", "--frames", "4", "--fps", "1"]) == 2
    assert "not both" in capsys.readouterr().err
    assert "--seed" not in export.build_parser().format_help()
    assert "seed" not in export_to(out, "mvbench")["options"]


def tree(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_adding_a_format_is_one_record_and_changes_no_existing_output(generated, tmp_path, monkeypatch):
    out = fresh_copy(generated, tmp_path / "out")
    layout = Layout(out)
    export_to(out, "all", frames=4)
    before = tree(layout.exports_dir)
    assert any(k.startswith("llamafactory/dataset_info.json") for k in before) and len(before) > 20

    def plain_qa(row: dict, m: export.Media) -> dict:
        return {"question": row["question"], "answer": row["answer"], "frames": m.frames}

    new = export.Format("plain_qa", (export.Part("sft", plain_qa, ".jsonl"),), "question, answer and frames.",
                        video_root="plain_qa: nothing", needs="nothing",
                        index=lambda written: ("index.json", [out.name for _, _, out in written]))
    monkeypatch.setitem(export.FORMATS, "plain_qa", new)
    assert "plain_qa" in export.format_list() and "plain_qa: nothing" in export.video_roots()
    export_to(out, "all", frames=4)
    after = tree(layout.exports_dir)
    added = {k: v for k, v in after.items() if k.startswith("plain_qa/")}
    assert sorted(added) == ["plain_qa/index.json", "plain_qa/sft_explicit.jsonl"]
    sft = read_jsonl(layout.sft_explicit_file)
    assert [(r["question"], r["answer"], len(r["frames"])) for r in read_jsonl(layout.export_dir("plain_qa") / "sft_explicit.jsonl")] \
        == [(s["question"], s["answer"], 4) for s in sft]
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert changed == [] and {k: v for k, v in after.items() if k not in added} == before
