"""Preprocess's reference decode: the smart-cut engine's one decode of the source also gives the content pass
its thumbnails, frame times and decoder errors, so filter_corrupted need not decode the source again.

The reference is checked against the check's own decode of the source (the independent fact), and the check
that uses it must still fail on outputs broken on purpose: the engine picking the wrong frames (its ``select``
moved by one frame, after the reference branch left the decoder), a damaged source, a stale or damaged
reference file (the check then decodes the source itself).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages import run_video_stage
from test_smartcut import gop_spec, render, x264
from test_verify import rewrite_packets
from timewarp.core.errors import ItemError
from timewarp.core.layout import Layout
from timewarp.core.schema import NormalAnnotation
from timewarp.core.store import read_json
from timewarp.media import smartcut, verify
from timewarp.preprocess import filter_corrupted, preprocess
from timewarp.sample_data import metadata_for, read_frame_ids, write_shard

pytestmark = pytest.mark.video

pytest.importorskip("av")


def make_item(tmp: Path, name: str = "src") -> dict:
    spec = gop_spec(name)
    src = tmp / f"{name}.mp4"
    render(src, spec, x264(30, bf=2))
    root = tmp / "fv"
    write_shard(root / "data" / "train-00000-of-00001.parquet", [(src.read_bytes(), metadata_for(spec))])
    out = tmp / "out"
    run_video_stage(preprocess, out, root_dir=root, scale=1)
    lay = Layout(out)
    ann = NormalAnnotation.from_dict(read_json(lay.normal_annotation(name)))
    return {"src": src, "root": root, "out": out, "lay": lay, "ann": ann, "ref": lay.reference_file(name),
            "video": lay.normal_video(name)}


def record_decodes(monkeypatch) -> list:
    """The paths ``verify.decode_thumbs`` decodes from now on in this process (each decode still runs)."""
    decoded: list = []
    real = verify.decode_thumbs
    monkeypatch.setattr(verify, "decode_thumbs", lambda path, *a, **k: decoded.append(path) or real(path, *a, **k))
    return decoded


@pytest.fixture(scope="module")
def item(tmp_path_factory) -> dict:
    return make_item(tmp_path_factory.mktemp("reference"))


def test_the_reference_is_the_checks_own_decode(item):
    """Thumbnails, frame times and errors equal those of the check's own decode of the source, and cover every
    re-encoded frame and its neighbours."""
    ann = item["ann"]
    _, spec = verify.source_decode(ann, item["src"], (ann.width, ann.height))
    own = verify.decode_thumbs(item["src"], spec.size, spec.until, spec.crop)
    with np.load(item["ref"]) as z:
        frames, thumbs = z["frames"], z["thumbs"]
    assert len(frames) and np.array_equal(own.thumbs[frames], thumbs)
    ref = verify.load_reference(item["ref"], spec, [])
    assert ref.times == own.times and ref.errors == own.errors == []
    out = verify.read_packets(item["video"])
    src_pk = verify.read_packets(item["src"])
    copied = verify.copied_frames(out, src_pk, verify.source_frames(ann))
    rank = out.ranks()
    encoded = {rank[i] for i in range(len(out)) if not copied[i]}
    assert encoded and {k + d for k in encoded for d in (-1, 0, 1)} - {-1} <= set(frames.tolist())


def test_the_check_uses_it_and_passes_good_output(item):
    res = verify.verify_normal(item["ann"], item["video"], item["src"], reference=item["ref"])
    assert res.reference and res.source_frames_decoded == 0 and res.by_pixels > 0
    assert read_frame_ids(item["video"]) == verify.source_frames(item["ann"])   # the independent fact


def test_wrong_frames_from_the_engine_fail_through_the_reference(tmp_path, monkeypatch):
    """The engine's encode branch picks every re-encoded frame one source frame late (as a wrong count or probe
    would); the reference branch leaves the decoder before that select, so the check sees it."""
    real = smartcut.run_ffmpeg

    def late(args, what, **kw):
        args = list(args)
        i = args.index("-filter_complex")
        head, enc, ref = args[i + 1].split(";")
        enc = enc.replace("between(n,", "between(n-1,")
        args[i + 1] = ";".join([head, enc, ref])
        return real(args, what, **kw)

    monkeypatch.setattr(smartcut, "run_ffmpeg", late)
    it = make_item(tmp_path)
    monkeypatch.undo()
    assert it["ref"].is_file()
    decoded = record_decodes(monkeypatch)
    with pytest.raises(ItemError) as exc:
        verify.verify_normal(it["ann"], it["video"], it["src"], reference=it["ref"])
    assert exc.value.reason == "frame differs from its source frame"
    assert it["src"] not in decoded   # found through the reference, the source not decoded again
    monkeypatch.undo()
    with pytest.raises(ItemError) as exc:   # and the check's own decode agrees
        verify.verify_normal(it["ann"], it["video"], it["src"])
    assert exc.value.reason == "frame differs from its source frame"


def test_a_reference_of_other_source_bytes_is_not_used(item, tmp_path):
    """The source damaged after preprocess: the reference (made from the good bytes) does not stand for it."""
    bad = tmp_path / "src.mp4"

    def damage(rows):
        data = bytearray(rows[40][3])
        for p in range(len(data) // 3, len(data)):
            data[p] ^= 0xA5
        rows[40][3] = bytes(data)

    rewrite_packets(item["src"], bad, damage)
    with pytest.raises(ItemError) as exc:
        verify.verify_normal(item["ann"], item["video"], bad, reference=item["ref"])
    assert exc.value.reason == "source does not decode"


@pytest.mark.parametrize("how", ["truncated", "other item", "missing thumbnails"])
def test_a_damaged_or_foreign_reference_means_the_check_decodes(item, tmp_path, how):
    ref = tmp_path / "ref.npz"
    if how == "truncated":
        ref.write_bytes(item["ref"].read_bytes()[:1000])
    elif how == "other item":   # same file, another decode asked for: a longer `until`
        ann = item["ann"]
        _, spec = verify.source_decode(ann, item["src"], (ann.width, ann.height))
        other = verify.SourceDecode(spec.size, spec.until + 1, spec.crop, spec.packets)
        dec = verify.load_reference(item["ref"], spec, [])
        with np.load(item["ref"]) as z:
            frames = z["frames"]
        verify.save_reference(ref, other, frames.tolist(), verify.Decoded(dec.times, dec.thumbs[frames], dec.errors))
    else:   # one thumbnail the check needs is not in it
        with np.load(item["ref"]) as z:
            data = {k: z[k] for k in z.files}
        keep = np.arange(len(data["frames"])) != len(data["frames"]) // 2
        data["frames"], data["thumbs"] = data["frames"][keep], data["thumbs"][keep]
        with open(ref, "wb") as fh:
            np.savez_compressed(fh, **data)
    res = verify.verify_normal(item["ann"], item["video"], item["src"], reference=ref)
    assert not res.reference and res.source_frames_decoded > 0


def test_filter_corrupted_uses_it_once_then_decodes(tmp_path):
    it = make_item(tmp_path)
    res = run_video_stage(filter_corrupted, it["out"])
    counts = res["counts"]
    assert counts["sources from preprocess's reference decode"] == 1 and counts["source frames decoded"] == 0
    assert counts["videos verified"] == 1 and not it["ref"].exists()   # a cache that served its check
    counts = run_video_stage(filter_corrupted, it["out"], overwrite=True)["counts"]
    assert counts["sources from preprocess's reference decode"] == 0 and counts["source frames decoded"] > 0


def test_a_source_damaged_in_a_copied_gop_is_rejected_through_the_reference(tmp_path, monkeypatch):
    """The engine's decode runs through the GOPs it copies: their decoder errors are in the reference, and
    filter_corrupted rejects the item by name without decoding the source."""
    spec = gop_spec("src")
    good = tmp_path / "good.mp4"
    render(good, spec, x264(30, bf=2))
    src = tmp_path / "src.mp4"

    def damage(rows):   # a P-frame in the middle of the second GOP (copied whole: no cut inside it)
        data = bytearray(rows[45][3])
        for p in range(len(data) // 3, len(data)):
            data[p] ^= 0xA5
        rows[45][3] = bytes(data)

    rewrite_packets(good, src, damage)
    root = tmp_path / "fv"
    write_shard(root / "data" / "train-00000-of-00001.parquet", [(src.read_bytes(), metadata_for(spec))])
    out = tmp_path / "out"
    pre = run_video_stage(preprocess, out, root_dir=root, scale=1)
    assert pre["counts"].get("engine: smartcut") == 1
    lay = Layout(out)
    with np.load(lay.reference_file("src")) as z:
        assert str(z["errors"])
    own = verify.decode_thumbs(src, *(lambda s: (s.size, s.until, s.crop))(
        verify.source_decode(NormalAnnotation.from_dict(read_json(lay.normal_annotation("src"))), src,
                             spec.size)[1]))
    assert own.errors   # the independent fact: the check's own decode reports the damage too
    decoded = record_decodes(monkeypatch)
    run_video_stage(filter_corrupted, out)   # in this process (one worker): the patch sees every decode
    assert not [p for p in decoded if Path(p).name.startswith("verify-src-")]   # the source was not decoded again
    rejects = lay.rejects_file("filter_corrupted").read_text()
    assert "source does not decode" in rejects and own.errors[0] in rejects
    assert not lay.reference_file("src").exists()


def test_no_frame_re_encoded_still_gives_a_whole_reference(tmp_path):
    """Every cut on a source GOP start: nothing is encoded, and the reference (no thumbnails, every frame's
    time) lets the check prove the whole video by bytes without decoding the source."""
    from fractions import Fraction
    from timewarp.core.schema import Clip

    spec = gop_spec("src")
    src = tmp_path / "src.mp4"
    render(src, spec, x264(30, bf=2))
    fps = Fraction(30000, 1001)
    clips = [Clip(index=i, start=float(a / fps), end=float(b / fps), start_frame=a, end_frame=b, caption=f"c{i}",
                  meta_start=float(a / fps), meta_end=float(b / fps))
             for i, (a, b) in enumerate([(0, 60), (60, 120), (120, 210)])]
    ann = NormalAnnotation(id="src", source_id="src", source_file="src.mp4", source_row=None, source_json=None,
                           split="train", video="v.mp4", fps=float(fps), fps_rational="30000/1001", frame_count=210,
                           duration=float(210 / fps), width=320, height=180, source_duration=10.0, title="",
                           category="", clips=clips, source_ranges=[[0, 210]], skipped={}, warnings=[])
    ref = tmp_path / "ref.npz"
    _, want = verify.source_decode(ann, src, (320, 180))
    dst = tmp_path / "v.mp4"
    res = smartcut.smart_cut(src, dst, fps, 210, [0, 60, 120, 210], reference=(want, ref))
    assert res.encoded_frames == 0 and ref.is_file()
    checked = verify.verify_normal(ann, dst, src, reference=ref)
    assert checked.reference and checked.by_bytes == 210 and checked.source_frames_decoded == 0
    assert read_frame_ids(dst) == list(range(210))
