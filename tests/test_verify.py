"""verify.py, the content pass: it passes good outputs and fails each output broken on purpose.

The broken outputs are made here, not by the engine: frames re-encoded from a chosen list of source
frames (one shifted, one repeated), and packet surgery on a smart-cut output (one GOP's packets
swapped with another's, one byte of a packet changed). The source frames carry their own number
(``sample_data.draw_frame``), so the good outputs are also checked against that independent fact.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from test_smartcut import gop_spec, render, x264
from timewarp.media import verify
from timewarp.core.errors import ItemError
from timewarp.core.layout import Layout
from timewarp.preprocess import preprocess, shuffle_clips
from timewarp.sample_data import metadata_for, read_frame_ids, write_shard
from timewarp.core.schema import NormalAnnotation, ShuffledAnnotation
from timewarp.core.store import read_json
from timewarp.media.video import ffmpeg_exe

from stages import run_video_stage

pytestmark = pytest.mark.video   # renders videos and runs stages on them (the slow tier)

av = pytest.importorskip("av")


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    """One source (30-frame GOPs with B-frames, clips starting and ending mid-GOP), its smart-cut output
    with clip files and a shuffle, and the same item by the one-encode engine."""
    tmp = tmp_path_factory.mktemp("verify")
    spec = gop_spec("src")
    src = tmp / "src.mp4"
    render(src, spec, x264(30, bf=2))
    root = tmp / "fv"
    write_shard(root / "data" / "train-00000-of-00001.parquet", [(src.read_bytes(), metadata_for(spec))])
    outs = {}
    for engine in ("smartcut", "one-encode"):
        out = tmp / engine
        run_video_stage(preprocess, out, root_dir=root, scale=1, engine=engine, write_clips=True)
        run_video_stage(shuffle_clips, out)
        outs[engine] = out
    lay = Layout(outs["smartcut"])
    ann = NormalAnnotation.from_dict(read_json(lay.normal_annotation("src")))
    return {"src": src, "outs": outs, "ann": ann, "fps": Fraction(30000, 1001)}


def check(made, video: Path, ann=None, source=None) -> verify.Verified:
    return verify.verify_normal(ann or made["ann"], video, source or made["src"])


def encode_frames(src: Path, frames: list[int], dst: Path, fps: Fraction) -> None:
    """A video of the given source frames (by decoded index), in that order, encoded once (no B-frames)."""
    with av.open(str(src)) as c:
        pics = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    h, w = pics[0].shape[:2]
    cmd = [ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
           "-r", f"{fps.numerator}/{fps.denominator}", "-i", "-", "-c:v", "libx264", "-preset", "veryfast",
           "-crf", "23", "-bf", "0", "-pix_fmt", "yuv420p", str(dst)]
    subprocess.run(cmd, input=b"".join(pics[k].tobytes() for k in frames), check=True)


def rewrite_packets(src: Path, dst: Path, change) -> None:
    """Copy ``src``'s video packets to ``dst`` with ``change(list of [pts, dts, key, bytes])`` applied."""
    with av.open(str(src)) as c:
        st = c.streams.video[0]
        rows = [[p.pts, p.dts, p.is_keyframe, bytes(p)] for p in c.demux(st) if p.size]
        change(rows)
        with av.open(str(dst), "w", format="mp4") as out:
            ost = out.add_stream_from_template(st)
            for pts, dts, key, data in rows:
                pkt = av.Packet(data)
                pkt.stream, pkt.time_base, pkt.pts, pkt.dts, pkt.is_keyframe = ost, st.time_base, pts, dts, key
                out.mux(pkt)


def gops(rows) -> list[range]:
    starts = [i for i, r in enumerate(rows) if r[2]] + [len(rows)]
    return [range(a, b) for a, b in zip(starts, starts[1:])]


# ------------------------------------------------------------------ good outputs pass

def test_good_outputs_pass_by_bytes_and_pixels(made):
    n = made["ann"].frame_count
    sm = Layout(made["outs"]["smartcut"])
    res = check(made, sm.normal_video("src"))
    assert res.frames == n and res.by_bytes > 0 and res.by_pixels > 0 and res.by_bytes + res.by_pixels == n
    one = Layout(made["outs"]["one-encode"])
    res = check(made, one.normal_video("src"), NormalAnnotation.from_dict(read_json(one.normal_annotation("src"))))
    assert res.by_bytes == 0 and res.by_pixels == n
    # the independent fact: each frame shows the source frame its annotation names
    assert read_frame_ids(sm.normal_video("src")) == verify.source_frames(made["ann"])


def test_encoding_the_right_frames_passes(made, tmp_path):
    good = tmp_path / "good.mp4"
    encode_frames(made["src"], verify.source_frames(made["ann"]), good, made["fps"])
    assert check(made, good).by_pixels == made["ann"].frame_count


# ------------------------------------------------------------------ broken outputs fail

BROKEN = {
    "shifted": (70, lambda f, j: f[:j] + [k + 1 for k in f[j:]]),    # from frame 70 on, every frame one late
    "repeated": (100, lambda f, j: f[:j] + [f[j - 1]] + f[j + 1:]),  # frame 99 shown twice, frame 100 lost
}


@pytest.mark.parametrize("how", BROKEN)
def test_one_frame_shifted_or_repeated_fails(made, tmp_path, how):
    frames = verify.source_frames(made["ann"])
    j, make = BROKEN[how]
    bad = tmp_path / f"{how}.mp4"
    encode_frames(made["src"], make(frames, j), bad, made["fps"])
    with pytest.raises(ItemError) as exc:
        check(made, bad)
    assert exc.value.reason == "frame differs from its source frame"
    assert f"frame {j} should show source frame {frames[j]}" in exc.value.detail


def test_one_gop_from_the_wrong_place_fails(made, tmp_path):
    """Two whole copied GOPs of the smart-cut output swap places (timestamps kept): every packet still
    decodes, and the bytes are all source bytes, but not those of these positions."""
    video = Layout(made["outs"]["smartcut"]).normal_video("src")
    bad = tmp_path / "swapped.mp4"

    def swap(rows):
        full = [g for g in gops(rows) if len(g) == 30]
        a, b = full[0], full[1]
        for i, k in zip(a, b):
            rows[i][3], rows[k][3] = rows[k][3], rows[i][3]

    rewrite_packets(video, bad, swap)
    with pytest.raises(ItemError) as exc:
        check(made, bad)
    assert exc.value.reason == "frame differs from its source frame"


@pytest.mark.parametrize("where", ["copied", "re-encoded"])
def test_a_damaged_packet_fails(made, tmp_path, where):
    video = Layout(made["outs"]["smartcut"]).normal_video("src")
    bad = tmp_path / "damaged.mp4"
    src_pk = verify.read_packets(made["src"])
    copied = set(src_pk.digest)

    def damage(rows):
        out = verify.read_packets(video)
        i = next(i for i in range(5, len(rows)) if not out.idr[i] and (out.digest[i] in copied) == (where == "copied")
                 and len(rows[i][3]) > 40)
        data = bytearray(rows[i][3])
        for p in range(len(data) // 2, len(data)):
            data[p] ^= 0x5A
        rows[i][3] = bytes(data)

    rewrite_packets(video, bad, damage)
    with pytest.raises(ItemError) as exc:
        check(made, bad)
    assert exc.value.reason in ("video does not decode", "frame differs from its source frame")


def test_a_damaged_source_packet_in_a_used_range_is_a_named_reject(made, tmp_path):
    bad_src = tmp_path / "src.mp4"

    def damage(rows):
        i = 40
        data = bytearray(rows[i][3])
        for p in range(len(data) // 3, len(data)):
            data[p] ^= 0xA5
        rows[i][3] = bytes(data)

    rewrite_packets(made["src"], bad_src, damage)
    video = Layout(made["outs"]["smartcut"]).normal_video("src")
    with pytest.raises(ItemError) as exc:
        check(made, video, source=bad_src)
    assert exc.value.reason == "source does not decode"


def test_metadata_times_are_checked_on_the_sources_decoded_times(made):
    """The checker does not trust the engine's frame times: a clip whose metadata times, read against the
    source's decoded timestamps, name other frames than the annotation's fails."""
    ann = made["ann"]
    c = ann.clips[1]
    moved = replace(c, meta_start=round(c.meta_start + 1.5 * 1001 / 30000, 3))
    broken = replace(ann, clips=[moved if x.index == 1 else x for x in ann.clips])
    with pytest.raises(ItemError) as exc:
        check(made, Layout(made["outs"]["smartcut"]).normal_video("src"), broken)
    assert exc.value.reason == "clip frames inside metadata times" and "clip 1" in exc.value.detail


# ------------------------------------------------------------------ copies: clip files and shuffled videos

def shuffled_spans(lay: Layout, ann: NormalAnnotation):
    sid = lay.shuffled_ids()[0]
    sh = ShuffledAnnotation.from_dict(read_json(lay.shuffled_annotation(sid)))
    return lay.shuffled_video(sid), [(ann.clips[i].start_frame, ann.clips[i].end_frame) for i in sh.permutation]


@pytest.mark.parametrize("engine", ["smartcut", "one-encode"])
def test_copies_pass_packet_by_packet(made, engine):
    lay = Layout(made["outs"][engine])
    ann = NormalAnnotation.from_dict(read_json(lay.normal_annotation("src")))
    normal = lay.normal_video("src")
    for c in ann.clips:
        verify.verify_copy(normal, lay.clip_video("src", c.index), [(c.start_frame, c.end_frame)])
    shuffled, spans = shuffled_spans(lay, ann)
    verify.verify_copy(normal, shuffled, spans)
    assert read_frame_ids(shuffled) == [verify.source_frames(ann)[j] for a, b in spans for j in range(a, b)]


def test_broken_copies_fail(made, tmp_path):
    lay = Layout(made["outs"]["smartcut"])
    ann = made["ann"]
    normal = lay.normal_video("src")
    shuffled, spans = shuffled_spans(lay, ann)
    # the clips in another order than the annotation's permutation
    with pytest.raises(ItemError, match="differs"):
        verify.verify_copy(normal, shuffled, list(reversed(spans)))
    # one frame lost at a clip end
    short = tmp_path / "short.mp4"
    rewrite_packets(shuffled, short, lambda rows: rows.pop())
    with pytest.raises(ItemError) as exc:
        verify.verify_copy(normal, short, spans)
    assert exc.value.reason == "copy frame count"
    # one damaged packet
    damaged = tmp_path / "damaged.mp4"

    def damage(rows):
        rows[3][3] = rows[3][3][:-8] + bytes(8)
    rewrite_packets(shuffled, damaged, damage)
    with pytest.raises(ItemError) as exc:
        verify.verify_copy(normal, damaged, spans)
    assert exc.value.reason == "copy differs from the normal video" and "packet 3 " in exc.value.detail
    # two frames of one clip swapped (each packet at the other's place, timestamps kept)
    swapped = tmp_path / "swapped.mp4"

    def swap(rows):
        rows[5][3], rows[6][3] = rows[6][3], rows[5][3]
    rewrite_packets(shuffled, swapped, swap)
    with pytest.raises(ItemError, match="differs"):
        verify.verify_copy(normal, swapped, spans)


def test_thumbnail_comparison_tells_neighbours_apart():
    rng = np.random.default_rng(0)
    src = np.stack([rng.integers(100, 140, (18, 32))] * 3).astype(np.uint8)
    for k in range(3):  # frames that differ a little: a bright block moves by 8 pixels a frame
        src[k, 6:9, 8 * k:8 * k + 4] = 200

    def noisy(img, amount):
        return np.clip(img.astype(int) + rng.integers(-amount, amount + 1, img.shape), 0, 255).astype(np.uint8)

    assert verify.frame_problem(noisy(src[1], 1), src, 1) is None
    assert "closer to source frame 2" in verify.frame_problem(noisy(src[2], 1), src, 1)   # one frame late
    assert "closer to source frame 0" in verify.frame_problem(src[0], src, 1)             # the previous repeated
    assert "at most" in verify.frame_problem(255 - src[1], src, 1)                         # another picture
    assert verify.difference(src[0], src[1]) < verify.MAX_DIFFERENCE
    same = np.stack([src[0], src[0], src[0]])  # identical neighbours cannot be told apart: no failure for that
    assert verify.frame_problem(src[0], same, 1) is None
    # grain: neighbours differ by little more than the output differs from its frame: nothing to conclude
    base = rng.integers(100, 140, (18, 32)).astype(np.uint8)
    grain = np.stack([noisy(base, 8) for _ in range(3)])
    out = noisy(grain[1], 8)
    assert verify.difference(out, grain[0]) < 2 * verify.difference(grain[0], grain[1])
    assert verify.frame_problem(out, grain, 1) is None

    # in batches (how verify_normal compares): the first bad frame, named as frame_problem names it
    outs = np.stack([noisy(src[1], 1), src[2], noisy(src[1], 1), src[0], 255 - src[1]])
    assert verify.frames_problem(outs, src, [1] * 5, chunk=2) == (1, verify.frame_problem(src[2], src, 1))
    assert verify.frames_problem(outs[[0, 2]], src, [1, 1]) is None
    assert verify.frames_problem(outs[[0, 4, 3]], src, [1, 1, 1], chunk=1)[0] == 1

def test_shuffle_clips_refuses_a_shuffled_video_that_is_not_the_clips(made, tmp_path, monkeypatch):
    """shuffle_clips checks its own copies packet by packet: a copy of other frames (here the clips in
    normal order instead of the permutation's) is a reject, and no shuffled video or annotation is left."""
    from timewarp.preprocess import shuffle_clips as sc
    from timewarp.core.store import read_jsonl

    out = tmp_path / "out"
    shutil.copytree(made["outs"]["smartcut"], out)
    lay = Layout(out)
    shutil.rmtree(lay.shuffled_dir)
    real = sc.concat_copy

    def wrong_order(src, fps, jobs, keep_audio=False):
        real(src, fps, [(dst, sorted(spans)) for dst, spans in jobs], keep_audio)
    monkeypatch.setattr(sc, "concat_copy", wrong_order)
    stats = run_video_stage(sc, out)
    assert stats["rejects_by_reason"] == {"copy differs from the normal video": 1}
    assert [r["id"] for r in read_jsonl(lay.rejects_file(sc.STAGE))] == ["src"]
    assert not list(lay.shuffled_videos_dir.glob("*.mp4")) and not lay.shuffled_ids()
