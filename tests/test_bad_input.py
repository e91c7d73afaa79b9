"""Every kind of bad FineVideo input ends as a reject with a specific reason, or one-line error."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from timewarp.core.layout import Layout
from timewarp.preprocess import preprocess
from timewarp.core.store import read_json, read_jsonl
from timewarp.media.video import ffmpeg_exe

from stages import run_video_stage

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "timewarp" / "preprocess" / "preprocess.py"


def _variant(meta: dict, name: str, edit=None) -> dict:
    m = copy.deepcopy(meta)
    m["original_video_filename"] = f"{name}.mp4"
    if edit:
        edit(m)
    return m


def _acts(m):
    return [a for s in m["content_metadata"]["scenes"] for a in s["activities"]]


def _set_all(m, start, end):
    for a in _acts(m):
        a["timestamp"] = {"start_timestamp": start, "end_timestamp": end}


def _shift(m, seconds):
    from timewarp.sources.timestamps import format_timestamp, parse_timestamp
    for a in _acts(m):
        ts = a["timestamp"]
        a["timestamp"] = {k: format_timestamp(parse_timestamp(v) + seconds) for k, v in ts.items()}


def _audio_only_mp4(tmp: Path) -> bytes:
    p = tmp / "audio.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "sine=duration=3", "-c:a", "aac", str(p)], check=True)
    return p.read_bytes()


CASES = {
    # id: (reason, how to make it)
    "no_content": ("metadata has no content_metadata", lambda m: m.pop("content_metadata")),
    "null_scenes": ("metadata has no scenes", lambda m: m["content_metadata"].update(scenes=None)),
    "null_activities": ("fewer than 2 clips", lambda m: [s.update(activities=None) for s in m["content_metadata"]["scenes"]]),
    "null_times": ("fewer than 2 clips", lambda m: [a.update(timestamp=None) for a in _acts(m)]),
    "na_times": ("fewer than 2 clips", lambda m: _set_all(m, "n/a", "throughout")),
    "reversed": ("fewer than 2 clips", lambda m: _set_all(m, "00:00:02.000", "00:00:01.000")),
    "zero_length": ("fewer than 2 clips", lambda m: _set_all(m, "00:00:01.000", "00:00:01.000")),
    "one_clip": ("fewer than 2 clips", lambda m: m["content_metadata"].update(scenes=m["content_metadata"]["scenes"][:1])),
    "past_end": ("fewer than 2 clips inside the real video", lambda m: _shift(m, 30)),
}


@pytest.fixture()
def bad_dataset(tmp_path, wild_rows):
    good_mp4, good_meta = wild_rows[0]
    other_mp4, other_meta = wild_rows[2]
    root = tmp_path / "fv"
    structs = [(good_mp4, _variant(good_meta, name, edit)) for name, (_, edit) in CASES.items()]
    structs.append((other_mp4, other_meta))  # a good video among them
    structs.append((good_mp4, _variant(good_meta, "partly_bad", lambda m: m["content_metadata"]["scenes"][0].update(
        activities=[{"description": "x", "timestamp": {"start_timestamp": "n/a", "end_timestamp": None}}]))))
    rows_json = [(good_mp4, json.dumps(_variant(good_meta, "json_str")))]
    # json as a string column (another shard), with odd ids and broken values
    json_shard = [
        (good_mp4, json.dumps(_variant(good_meta, "a b'c;$(rm -rf x)/../../evil"))),
        (b"\x00\x01garbage" * 100, json.dumps(_variant(good_meta, "random_bytes"))),
        (good_mp4[: len(good_mp4) // 3], json.dumps(_variant(good_meta, "truncated"))),
        (b"", json.dumps(_variant(good_meta, "empty_mp4"))),
        (_audio_only_mp4(tmp_path), json.dumps(_variant(good_meta, "audio_only"))),
        (good_mp4, "{not json"),
        (good_mp4, json.dumps(_variant(other_meta, "dup"))),
        (good_mp4, json.dumps(_variant(other_meta, "dup"))),
    ] + rows_json
    (root / "data").mkdir(parents=True)
    pq.write_table(pa.table({"mp4": pa.array([r[0] for r in structs], pa.binary()),
                             "json": pa.array([r[1] for r in structs])}), root / "data" / "s0.parquet")
    pq.write_table(pa.table({"mp4": pa.array([r[0] for r in json_shard], pa.binary()),
                             "json": pa.array([r[1] for r in json_shard], pa.string())}), root / "data" / "s1.parquet")
    # json as bytes, one of them not UTF-8
    pq.write_table(pa.table({"mp4": pa.array([good_mp4, good_mp4], pa.binary()),
                             "json": pa.array([json.dumps(_variant(good_meta, "json_bytes")).encode(),
                                               b"{\"original_video_filename\": \"\xff\xfe.mp4\"}"], pa.binary())}),
                   root / "data" / "s2.parquet")
    pq.write_table(pa.table({"mp4": pa.array([], pa.binary()), "json": pa.array([], pa.string())}), root / "data" / "s3_empty.parquet")
    (root / "data" / "s4_broken.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    pq.write_table(pa.table({"video": pa.array([b"x"], pa.binary())}), root / "data" / "s5_nocols.parquet")
    return root


def test_each_bad_input_gets_its_reason_and_good_videos_go_on(bad_dataset, tmp_path):
    out = tmp_path / "out"
    run_video_stage(preprocess, out, root_dir=bad_dataset, scale=50, workers=2)
    layout = Layout(out)
    rejects = read_jsonl(layout.rejects_file("preprocess"))
    by_id = {}
    for r in rejects:
        by_id.setdefault(r["id"], set()).add(r["reason"])
    for name, (reason, _) in CASES.items():
        assert by_id.get(name) == {reason}, (name, by_id.get(name))
    assert by_id["random_bytes"] <= {"video does not open", "no video stream", "video does not decode"}
    assert by_id["truncated"] & {"video does not open", "video does not decode", "source shorter than its annotation",
                                 "encode: ffmpeg failed"}
    assert by_id["empty_mp4"] == {"empty mp4 bytes"}
    assert by_id["audio_only"] <= {"no video stream", "video does not open"}
    assert by_id["dup"] == {"duplicate video id"}
    assert by_id["s4_broken.parquet"] == {"unreadable parquet"}
    assert by_id["s5_nocols.parquet"] == {"parquet shard lacks columns"}
    assert {"metadata is not valid JSON"} in by_id.values()
    assert {"metadata is not valid UTF-8"} in by_id.values()
    ids = layout.normal_ids()
    # the good ones all made it: the untouched video, json as string/bytes, the odd id, one dup, a partly bad one
    assert {"pal25", "json_str", "json_bytes", "dup", "partly_bad"} <= set(ids)
    partly = read_json(layout.normal_annotation("partly_bad"))
    assert [c["caption"] for c in partly["clips"]] == [c["caption"] for c in read_json(layout.normal_annotation("json_str"))["clips"]][1:]
    odd = [i for i in ids if "evil" in i]
    assert len(odd) == 1 and all(c.isalnum() or c in "._-" for c in odd[0])
    assert read_json(layout.normal_annotation(odd[0]))["source_id"] == "a b'c;$(rm -rf x)/../../evil"  # kept whole
    # nothing written outside save_dir, nothing half-written inside it
    assert not (tmp_path / "evil").exists() and not (out.parent / "evil").exists()
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
    for p in out.rglob("*"):
        assert out in p.resolve().parents


def _run_script(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_unusable_input_is_one_line_error(tmp_path):
    res = _run_script("--root_dir", tmp_path / "missing", "--save_dir", tmp_path / "o", "--scale", 3)
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    res = _run_script("--root_dir", tmp_path / "empty", "--save_dir", tmp_path / "o", "--scale", 3)
    assert res.returncode == 2 and "no FineVideo data" in res.stderr and "Traceback" not in res.stderr
    res = _run_script("--root_dir", tmp_path / "empty", "--save_dir", tmp_path / "o", "--scale", 0)
    assert res.returncode == 2 and "--scale" in res.stderr


def test_help_documents_every_option():
    res = _run_script("--help")
    assert res.returncode == 0
    for opt in ("--root_dir", "--save_dir", "--scale", "--source", "--max_seconds", "--min_clips", "--test_fraction", "--max_height",
                "--keep_audio", "--write_clips", "--workers", "--seed", "--limit", "--overwrite", "--log_level"):
        assert opt in res.stdout


# ---------------------------------------------------------------- text: one event per caption, the id kept whole

def _meta(*scenes, vname="v.mp4"):
    """Metadata with one scene per (start, end, description) of its single activity."""
    def ts(a, b):
        return {"start_timestamp": f"00:00:{a:06.3f}", "end_timestamp": f"00:00:{b:06.3f}"}
    return {"original_video_filename": vname, "content_metadata": {"scenes": [
        {"timestamps": ts(a, b), "activities": [{"description": d, "timestamp": ts(a, b)}]} for a, b, d in scenes]}}


def test_one_caption_in_two_unicode_forms_is_one_event():
    """Before: "Café" typed composed and decomposed gave two captions, so two events ((1) and (2))."""
    import unicodedata
    from timewarp.sources.finevideo import ClipOptions, clip_spans
    from timewarp.text.temporal import unique_clips
    composed, decomposed = "Caf\u00e9 opens.", "Cafe\u0301 opens."
    spans, *_ = clip_spans(_meta((0, 1, composed), (1, 2, "A dog runs."), (2, 3, decomposed)), ClipOptions())
    caps = [s.caption for s in spans]
    assert caps[0] == caps[2] == unicodedata.normalize("NFC", composed)
    assert unique_clips(caps) == [1]   # the café event occurs twice: never asked about


@pytest.mark.parametrize("text", [".", "...", "!?", "\U0001F389", "\U0001F600 \u2728 !", "_", "--"])
def test_a_caption_without_words_is_no_event(text):
    """Before: a scene whose only description was "." (or an emoji) became a clip, asked as "First, ."."""
    from timewarp.sources.finevideo import ClipOptions, clip_spans
    spans, skipped, dropped, _ = clip_spans(_meta((0, 1, "A man walks."), (1, 2, text), (2, 3, "He sits.")),
                                            ClipOptions())
    assert [s.caption for s in spans] == ["A man walks.", "He sits."]
    assert [(d.scene_index, d.reason) for d in dropped] == [(1, "activities without descriptions")]
    # beside a real description, a word-less one adds nothing to the caption (its time still counts)
    m = _meta((0, 1, "A man walks."), (2, 3, "He sits."))
    m["content_metadata"]["scenes"][0]["activities"].append(
        {"description": text, "timestamp": {"start_timestamp": "00:00:01.000", "end_timestamp": "00:00:01.500"}})
    spans, *_ = clip_spans(m, ClipOptions())
    assert [(s.caption, s.end) for s in spans][0] == ("A man walks.", 1.5)


@pytest.mark.parametrize("vname,source_id", [("../../escape.mp4", "../../escape"), ("a/b.MP4", "a/b"),
                                             ("  O-w6CSLiRsA.mp4 ", "O-w6CSLiRsA"), ("x\\..\\y", "x\\..\\y")])
def test_the_original_id_is_kept_and_the_file_name_is_safe(vname, source_id):
    """Before: "../../escape.mp4" was recorded as source_id "escape" (README: the original id is kept)."""
    from timewarp.sources.finevideo import ClipOptions, source_video
    from timewarp.core.schema import SourceRef
    sv = source_video(SourceRef("parquet", "/d/s.parquet", row=0), _meta((0, 1, "a"), (1, 2, "b"), vname=vname),
                      ClipOptions())
    assert sv.source_id == source_id
    assert sv.id and "/" not in sv.id and "\\" not in sv.id and ".." != sv.id and not sv.id.startswith(".")
    assert (sv.id == source_id) == (source_id == "O-w6CSLiRsA")
