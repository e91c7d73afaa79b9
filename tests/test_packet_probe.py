"""Frame times from packets (``video.packet_probe``) against frame times from decoding (``decode_probe``).

Preprocess reads a source's frame times from its packets (no decode pass) where that is known to
give what decoding gives. The independent fact here is ffmpeg's own decode of the same file:
wherever the packet probe answers, every field must equal the decode probe's, on every shape the
real-world tests make (and a few more), with and without ``until``. Where packets can lie (a packet
whose bytes do not decode), the encode that decodes the frames anyway must notice, and preprocess
must end where a decode probe would have.
"""
from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

import test_real_world_video as wild
from timewarp.media import video
from timewarp.core.layout import Layout
from timewarp.preprocess import preprocess
from timewarp.sample_data import read_frame_ids
from timewarp.core.schema import NormalAnnotation
from timewarp.core.store import read_json, read_jsonl
from timewarp.media.video import FramesDiffer, decode_probe, encode_normal, ffmpeg_exe, packet_probe

from stages import run_video_stage

pytestmark = pytest.mark.video  # renders its own videos (conftest.py: the fast tier)

FIELDS = ("fps", "frame_count", "width", "height", "times", "time_base", "start_time", "container_duration",
          "irregular")
UNTILS = (None, 1.0, 1.5, 2.0333333)
# plain constant-rate progressive H.264 in MP4: the packet probe must answer for these
ANSWERS = {"iphone600", "tenbit", "editlist", "noeditlist", "startpts", "ntsc_bframes", "open_gop", "audio_ahead",
           "video_ahead", "badpacket"}
# decoding changes or decides what these show: the packet probe must leave them to decode_probe
DECLINES = {"rotated", "rotated180", "hevc", "vp9", "av1", "av1aom", "tiny1x1", "mpegts_named_mp4", "vfr10then30",
            "hole2", "trimcopy", "join_size", "join_range", "join_profile", "join_bframes"}


def ff(*args: str) -> None:
    res = subprocess.run([ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", *args], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-500:]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("probe_src")
    out = {}
    for case in wild.CASES:
        out[case.name] = root / f"{case.name}.mp4"
        case.make(out[case.name])
    ntsc = out["ntsc_bframes"] = root / "ntsc_bframes.mp4"
    ff("-f", "lavfi", "-i", "testsrc2=s=96x64:r=30000/1001:d=3", "-c:v", "libx264", "-bf", "3", "-g", "30", str(ntsc))
    ff("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=4", "-c:v", "libx264", "-bf", "3",
       "-x264-params", "open-gop=1:keyint=40", str(root / "open_gop.mp4"))
    ff("-i", str(ntsc), "-c", "copy", "-f", "mpegts", str(root / "mpegts_named_mp4.mp4"))
    plain, audio = root / "plain.mp4", root / "audio.m4a"
    ff("-f", "lavfi", "-i", "testsrc2=s=96x64:r=30:d=3", "-c:v", "libx264", str(plain))
    ff("-f", "lavfi", "-i", "sine=d=4", "-c:a", "aac", str(audio))
    # the container starts before the video (audio first) and after it: ffmpeg shifts times by the container start
    ff("-itsoffset", "0.7", "-i", str(plain), "-i", str(audio), "-map", "0:v", "-map", "1:a", "-c", "copy",
       str(root / "audio_ahead.mp4"))
    ff("-i", str(plain), "-itsoffset", "0.4", "-i", str(audio), "-map", "0:v", "-map", "1:a", "-c", "copy",
       str(root / "video_ahead.mp4"))
    for name in ("open_gop", "mpegts_named_mp4", "audio_ahead", "video_ahead"):
        out[name] = root / f"{name}.mp4"
    return out


def test_the_lists_cover_every_source(sources):
    assert set(sources) - {"plain"} <= ANSWERS | DECLINES | {"hevc", "vp9", "av1", "av1aom"}


@pytest.mark.parametrize("until", UNTILS)
def test_packet_times_equal_decoded_times_wherever_they_answer(sources, until):
    answered = set()
    for name, path in sorted(sources.items()):
        fast = packet_probe(path, until)
        if name in DECLINES and (until is None or name not in ("hole2", "vfr10then30", "trimcopy")):
            assert fast is None, name  # (the first seconds of hole2, vfr10then30, trimcopy are constant rate)
        if fast is None:
            continue
        answered.add(name)
        if name == "badpacket":
            continue  # below: its packets promise a frame the decoder drops
        slow = decode_probe(path, until)
        assert {f: getattr(fast, f) for f in FIELDS} == {f: getattr(slow, f) for f in FIELDS}, name
        assert not fast.decoded and slow.decoded
    if until is None:
        assert answered == ANSWERS
    else:
        assert ANSWERS <= answered


def test_a_packet_that_does_not_decode_is_caught_by_the_encode(sources, tmp_path):
    """badpacket: its 90 packets all have good timestamps, but one does not decode: 89 frames."""
    path = sources["badpacket"]
    fast, slow = packet_probe(path), decode_probe(path)
    assert fast.frame_count == 90 and slow.frame_count == 89 and slow.irregular[0] == "source does not decode"
    expect = [fast.start_time + t for t in fast.times]
    with pytest.raises(FramesDiffer) as err:
        encode_normal(path, tmp_path / "x.mp4", fast.fps, 60, [0], fast.width, fast.height, expect_times=expect)
    assert "frame " in err.value.detail and str(path) in err.value.detail
    assert not (tmp_path / "x.mp4").exists()
    # a clean file passes the same check, and its frames are the source's
    clean = sources["noeditlist"]
    info = packet_probe(clean)
    encode_normal(clean, tmp_path / "y.mp4", info.fps, 60, [0, 30], info.width, info.height,
                  expect_times=[info.start_time + t for t in info.times])
    assert read_frame_ids(tmp_path / "y.mp4") == list(range(60))


def test_preprocess_decodes_only_when_packets_cannot_say(sources, tmp_path, monkeypatch):
    """In-process preprocess over a clean and a broken H.264 file: decode_probe runs only for the broken one,
    whose reject is the one a decode probe gives; the clean one is kept frame-exact."""
    root = tmp_path / "src"
    root.mkdir()
    case = {c.name: c for c in wild.CASES}
    for name in ("noeditlist", "badpacket"):
        (root / f"{name}.mp4").write_bytes(sources[name].read_bytes())
        (root / f"{name}.json").write_text(json.dumps(wild.metadata(name, case[name].scenes)))
    calls = []
    real = video.decode_probe
    monkeypatch.setattr(video, "decode_probe", lambda path, until=None: calls.append(Path(path).name) or real(path, until))
    out = tmp_path / "out"
    # one-encode: smart-cut would copy badpacket's broken GOP untouched (filter_corrupted's content pass names it)
    run_video_stage(preprocess, out, root_dir=root, scale=2, workers=1, engine="one-encode")
    layout = Layout(out)
    assert calls == ["badpacket.mp4"], calls
    rejects = {r["id"]: r["reason"] for r in read_jsonl(layout.rejects_file("preprocess"))}
    assert rejects == {"badpacket": "source does not decode"}
    ann = NormalAnnotation.from_dict(read_json(layout.normal_annotation("noeditlist")))
    got = read_frame_ids(layout.root / ann.video)
    for c, (a, b) in zip(ann.clips, wild.THREE):
        assert got[c.start_frame:c.end_frame] == wild.expected_ids(case["noeditlist"], a, b, range(200))
    assert Fraction(ann.fps_rational) == 30
