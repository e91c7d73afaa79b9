"""Sources other than FineVideo: a folder of videos with .srt / .vtt / .json captions, and an ActivityNet
Captions root. Videos are rendered at test time with their frame number drawn into every frame, so each
clip is checked against the frames its captions name (by pixels), independently of the pipeline."""
from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import pytest

from timewarp import sources
from timewarp.core.errors import UsageError
from timewarp.core.layout import Layout
from timewarp.preprocess import final_assertions, preprocess
from timewarp.sample_data import SceneSpec, VideoSpec, read_frame_ids, render_video
from timewarp.sources.base import MERGED, merge_overlaps
from timewarp.core.store import read_json, read_jsonl
from timewarp.sources.timestamps import format_timestamp

from stages import run_video_stage

pytestmark = pytest.mark.video   # renders videos and runs stages on them (the slow tier)


def _render(path: Path, frames: int, fps: str, bframes: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colors = ["red", "green", "blue", "yellow"]
    n = 4
    scenes = [SceneSpec(frames // n + (1 if i < frames % n else 0), colors[i], "square") for i in range(n)]
    render_video(VideoSpec(path.stem, scenes, fps=fps, size=(176, 144), bframes=bframes), path)


def _t(frame: int, fps: str) -> float:
    """A frame boundary as an annotator writes it: exact, then rounded to milliseconds."""
    return round(float(Fraction(frame) / Fraction(fps)), 3)


def _srt(events, fps):
    blocks = [f"{n}\n{format_timestamp(_t(a, fps)).replace('.', ',')} --> {format_timestamp(_t(b, fps)).replace('.', ',')}"
              f"\n{text}\n" for n, (a, b, text) in enumerate(events, 1)]
    return "\n".join(blocks)


def _vtt(events, fps):
    return "WEBVTT\n\nNOTE made by a test\n\n" + "\n".join(
        f"cue{n}\n{format_timestamp(_t(a, fps))} --> {format_timestamp(_t(b, fps))} align:start\n{text}\n"
        for n, (a, b, text) in enumerate(events))


# (frame events as written, in file order; expected clips as (first frame, end frame, caption); frames cut)
A_EVENTS = [(5, 20, "A red square appears."), (40, 60, "Someone <i>waves</i>."), (30, 45, "A dog\nbarks."),
            (62, 64, "\u266a"), (70, 90, "It leaves.")]
A_CLIPS = [(5, 20, "A red square appears."), (30, 60, "A dog barks. Someone waves."), (70, 90, "It leaves.")]
A_CUT = {62, 63, 64}   # the word-less cue's frames (its stated end frame too) leave the normal video
B_EVENTS = [(0, 30, "First thing."), (30, 60, "Second thing.")]  # touching is not overlapping
C_EVENTS = [(12, 36, "Caf\u00e9 opens."), (36, 60, "Cafe\u0301 closes.")]


@pytest.fixture(scope="module")
def captions_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("captions")
    _render(root / "a.mp4", 100, "25")
    (root / "a.srt").write_text(_srt(A_EVENTS, "25"), encoding="utf-8-sig")   # with a BOM, as editors write it
    _render(root / "sub" / "b.mkv", 70, "30000/1001")
    (root / "sub" / "b.vtt").write_text(_vtt(B_EVENTS, "30000/1001"))
    _render(root / "c.mp4", 72, "24000/1001", bframes=0)
    (root / "c.json").write_text(json.dumps([{"start": _t(a, "24000/1001"), "end": format_timestamp(_t(b, "24000/1001")),
                                              "text": t} for a, b, t in C_EVENTS]))
    shutil.copy(root / "c.mp4", root / "lonely.mp4")
    shutil.copy(root / "c.mp4", root / "bad.mp4")
    (root / "bad.json").write_text("{not json")
    shutil.copy(root / "c.mp4", root / "shapeless.mp4")
    (root / "shapeless.json").write_text(json.dumps({"start": 1}))
    shutil.copy(root / "c.mp4", root / "fake.mp4")
    (root / "fake.vtt").write_text("not a vtt\n\n00:00.000 --> 00:01.000\nx\n")
    (root / "orphan.srt").write_text(_srt(B_EVENTS, "25"))
    return root


def _normal_frames(clips, cut=()):
    return [k for k in range(clips[-1][1]) if k not in cut]


def _check_item(layout: Layout, vid: str, clips, cut=()):
    """The annotation's clips and the normal video's drawn frames match the captions' frames."""
    ann = read_json(layout.normal_annotation(vid))
    assert [c["caption"] for c in ann["clips"]] == [c for _, _, c in clips]
    assert [(c["source_start_frame"], c["source_end_frame"]) for c in ann["clips"]] == [(a, b) for a, b, _ in clips]
    frames = read_frame_ids(layout.normal_video(vid))
    assert frames == _normal_frames(clips, cut)
    for c, (a, b, _) in zip(ann["clips"], clips):
        assert frames[c["start_frame"]:c["end_frame"]] == list(range(a, b))
    return ann


@pytest.fixture(scope="module")
def captions_out(tmp_path_factory, captions_root) -> Path:
    out = tmp_path_factory.mktemp("cap_out")
    run_video_stage(preprocess, out, root_dir=captions_root, source="captions", scale=10, workers=2)
    return out


def test_captions_folder_gives_frame_exact_clips_and_named_rejects(captions_out):
    layout = Layout(captions_out)
    assert sorted(layout.normal_ids()) == ["a", "c", "sub_b-" + layout.normal_ids()[-1].split("-")[-1]]
    a = _check_item(layout, "a", A_CLIPS, A_CUT)
    assert a["source_id"] == "a" and a["source_file"] == "a.mp4" and a["source_json"] == "a.srt"
    assert a["skipped"] == {MERGED: 1, "event skipped: caption has no letter or digit": 1}
    b_id = next(i for i in layout.normal_ids() if i.startswith("sub_b"))
    b = _check_item(layout, b_id, B_EVENTS)
    assert b["source_id"] == "sub/b" and b["source_file"] == "sub/b.mkv"
    c = _check_item(layout, "c", [(a, b, "Caf\u00e9 " + t.split(" ", 1)[1]) for a, b, t in C_EVENTS])  # NFC
    assert c["fps_rational"] == "24000/1001"
    reasons = {r["id"]: r["reason"] for r in read_jsonl(layout.rejects_file("preprocess"))}
    assert reasons == {"lonely": "video without captions", "bad": "caption file is not valid JSON",
                       "shapeless": "caption file is not a list of {start, end, text}",
                       "fake": "not a WebVTT file", "orphan": "captions without video"}
    assert read_json(layout.state_file("preprocess"))["selection"]["source"] == "captions"


def test_final_assertions_reopens_the_captions_source(captions_out, tmp_path):
    out = tmp_path / "o"
    shutil.copytree(captions_out, out)
    assert run_video_stage(final_assertions, out).ok
    # break one clip by a frame: its frames no longer match the caption's times, decoded from the source
    p = Layout(out).normal_annotation("a")
    ann = read_json(p)
    ann["clips"][1]["meta_start"] = _t(31, "25")
    p.write_text(json.dumps(ann))
    report = run_video_stage(final_assertions, out)
    assert [(v.id, v.check) for v in report.violations] == [("a", "clip frames inside metadata times")]
    assert "a.mp4" in report.violations[0].detail


def test_two_sources_never_mix_in_one_output(captions_out, captions_root, tmp_path):
    out = tmp_path / "o"
    shutil.copytree(captions_out, out)
    with pytest.raises(UsageError, match="--source captions.*--source finevideo"):
        run_video_stage(preprocess, out, root_dir=captions_root, source="finevideo", scale=10)
    # an output made before the source was recorded counts as FineVideo's
    state = Layout(out).state_file("preprocess")
    record = read_json(state)
    del record["selection"]["source"]
    state.write_text(json.dumps(record))
    with pytest.raises(UsageError, match="--source finevideo.*--source captions"):
        run_video_stage(preprocess, out, root_dir=captions_root, source="captions", scale=10)


def test_unknown_source_and_empty_root_are_one_line(tmp_path):
    with pytest.raises(UsageError, match="--source must be one of finevideo, activitynet, captions"):
        run_video_stage(preprocess, tmp_path / "o", root_dir=tmp_path, source="youcook", scale=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no captions data under .*empty: expected videos"):
        run_video_stage(preprocess, tmp_path / "o", root_dir=tmp_path / "empty", source="captions", scale=1)


@pytest.mark.parametrize("events,groups", [
    ([(0, 2, 0, "a"), (1, 3, 1, "b"), (3, 4, 2, "c")], [(0, 3, "a b"), (3, 4, "c")]),   # touching stays apart
    ([(5, 9, 0, "late"), (0, 10, 1, "whole"), (2, 3, 2, "mid")], [(0, 10, "whole mid late")]),  # start order
    ([(0, 1, 0, "a"), (0, 1, 1, "b")], [(0, 1, "a b")]),   # the same span twice: one clip, both captions
    ([(0, 4, 0, "a"), (1, 2, 1, "b"), (3, 6, 2, "c")], [(0, 6, "a b c")]),   # chained through the group's end
])
def test_overlap_policy_merges_a_group_into_one_clip(events, groups):
    spans, merged = merge_overlaps(events)
    assert [(s.start, s.end, s.caption) for s in spans] == groups
    assert merged == len(events) - len(groups)


# ---------------------------------------------------------------- ActivityNet Captions

def _anet(pairs_frames, fps, sentences):
    return {"duration": 9.9, "timestamps": [[_t(a, fps), _t(b, fps)] for a, b in pairs_frames], "sentences": sentences}


@pytest.fixture(scope="module")
def anet_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("anet")
    _render(root / "videos" / "v_k1.mp4", 90, "30")
    _render(root / "videos" / "deep" / "k2.mkv", 60, "25")        # named without the key's v_ prefix
    _render(root / "v_k3.mp4", 50, "25")
    shutil.copy(root / "v_k3.mp4", root / "videos" / "v_k4.mp4")
    (root / "anno").mkdir()
    (root / "anno" / "train.json").write_text(json.dumps({
        "v_k1": _anet([(45, 75), (0, 30), (15, 45)], "30", ["Then a third.", " A man enters. ", "He sits."]),
        "v_k2": _anet([(10, 30), (30, 50)], "25", ["One.", "Two."]),
        "v_k4": {"duration": 2, "timestamps": [[0, 1]], "sentences": ["a", "b"]},
        "v_missing": _anet([(0, 10), (10, 20)], "25", ["x", "y"])}))
    (root / "anno" / "val_1.json").write_text(json.dumps({"v_k3": _anet([(0, 25), (25, 50)], "25", ["Up.", "Down."])}))
    (root / "anno" / "val_2.json").write_text(json.dumps({"v_k3": _anet([(0, 50)], "25", ["All."])}))
    (root / "other.json").write_text(json.dumps({"version": "1.3", "results": {}}))   # not of the shape: passed over
    return root


def test_activitynet_root_gives_frame_exact_clips_merging_overlaps(anet_root, tmp_path):
    out = tmp_path / "out"
    run_video_stage(preprocess, out, root_dir=anet_root, source="activitynet", scale=10, workers=2)
    layout = Layout(out)
    assert sorted(layout.normal_ids()) == ["v_k1", "v_k2", "v_k3"]
    k1 = _check_item(layout, "v_k1", [(0, 45, "A man enters. He sits."), (45, 75, "Then a third.")])
    assert k1["skipped"] == {MERGED: 1} and k1["source_json"] == "train.json"
    assert k1["source_file"] == "videos/v_k1.mp4"
    k2 = _check_item(layout, "v_k2", [(10, 30, "One."), (30, 50, "Two.")])
    assert k2["source_file"] == "videos/deep/k2.mkv"
    _check_item(layout, "v_k3", [(0, 25, "Up."), (25, 50, "Down.")])   # val_1's, not val_2's
    reasons = {r["id"]: (r["reason"], r["source"]) for r in read_jsonl(layout.rejects_file("preprocess"))}
    assert reasons["v_k3"][0] == "duplicate video id" and reasons["v_k3"][1].endswith("val_2.json#v_k3")
    assert reasons["v_k4"][0] == "timestamps and sentences differ in length"
    assert reasons["v_missing"][0] == "annotated video not found"
    assert len(reasons) == 3
    assert run_video_stage(final_assertions, out).ok


# ---------------------------------------------------------------- provenance reaches the card

@pytest.mark.parametrize("name,present,absent", [
    ("finevideo", ["FineVideo", "https://huggingface.co/datasets/HuggingFaceFV/finevideo", "Creative Commons"],
     ["<fill in"]),
    ("activitynet", ["ActivityNet Captions", "https://cs.stanford.edu/people/ranjaykrishna/densevid/"],
     ["FineVideo", "HuggingFaceFV", "<fill in"]),
    ("captions", ["<fill in: the name of your video collection>", "<fill in: where your videos come from"],
     ["FineVideo", "HuggingFaceFV", "Creative Commons", "YouTube"]),
])
def test_the_card_names_the_real_source(tmp_path, name, present, absent):
    import yaml
    from timewarp.publish import render_card
    layout = Layout(tmp_path)
    layout.state_file("preprocess").parent.mkdir(parents=True)
    layout.state_file("preprocess").write_text(json.dumps({"version": 1, "scale": 1, "selection": {"source": name}}))
    card = render_card(layout, {}, None, 0, [], {})
    header = yaml.safe_load(card.split("---")[1])
    prov = sources.source_class(name).provenance
    assert header["license"] == prov.license and header["extra_gated_prompt"].endswith(prov.terms)
    assert header.get("source_datasets") == ([prov.hub_id] if prov.hub_id else None)
    for text in present:
        assert text in card
    for text in absent:
        assert text not in card


def test_setup_dataset_sh_takes_the_source(captions_root, tmp_path):
    """--source is preprocess's option, given to the shell script like every preprocess-only option."""
    import os
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHON=sys.executable, TIMEWARP_PREPROCESS_ARGS="--source captions",
               TIMEWARP_ARGS="--workers 2")
    out = tmp_path / "out"
    r = subprocess.run([str(root / "setup_dataset.sh"), str(captions_root), str(out), "3"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    layout = Layout(out)
    assert len(layout.shuffled_ids()) == 3 and read_json(layout.stats_file("final_assertions"))["items_out"] == 3
