"""Caption files on their worst day (hand-edited, converted, exported by odd tools): each one either parses
to the clips its cues name, checked against the frame numbers drawn into the video, or is a reject whose
one-line detail names the file and what is wrong, while the other videos of the run go on."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from timewarp.core.errors import ItemError
from timewarp.core.layout import Layout
from timewarp.preprocess import preprocess
from timewarp.sources.base import DUPLICATE, MERGED
from timewarp.sources.captions import parse_cues, parse_json_events
from timewarp.core.store import read_jsonl

from stages import run_video_stage
from test_sources import _check_item, _render

pytestmark = pytest.mark.video   # renders videos and runs stages on them (the slow tier)

# 100 frames at 25 fps (4 s): frame k starts at 0.04 k s
SRT = (
    "3\n00:00:02.400 --> 00:00:03,200\n<i>Third</i> &amp; last\n\n"          # out of order; "." and "," mixed
    "3\n00:00:02,400 --> 00:00:03,200\nThird &amp; <b>last</b>\n\n"           # the same cue pasted twice
    "1\n00:00:00,200-->00:00:00,800 X1:10 X2:20 Y1:5 Y2:9\nFirst <b>one</b>,\n<font color=\"red\">in red</font>\n\n"
    "2\n00:00:01,200 --> 00:00:01,800\n{\\an8}Second\n"                         # no blank line before the next cue
    "4\n00:00:01,600 --> 00:00:02,000\noverlaps it\n\n"
    "5\n00:00:02,080 --> 00:00:02,200\n\n"                                    # an empty cue
    "6\n00:00:03,400 --> 00:00:05,000\nPast the end\n\n"                       # ends 1 s after the video: clamped
    "7\n00:00:09,000 --> 00:00:10,000\nFar past the end\n\n")                  # starts after it: dropped
SRT_CLIPS = [(5, 20, "First one, in red"), (30, 50, "Second overlaps it"), (60, 80, "Third & last"),
             (85, 100, "Past the end")]
SRT_CUT = {52, 53, 54, 55}   # the empty cue's frames, its stated end frame included

VTT = (
    "WEBVTT - a worst day\nKind: captions\nLanguage: en\n\n"
    "STYLE\n::cue { color: yellow }\n\n"
    "NOTE a note\nover two lines\n\n"
    "REGION\nid:fred width:40%\n\n"
    "intro\n00:00.200 --> 00:00.800 align:start position:10% line:0\n<v Roger>Hello</v> <c.loud>there</c>\n\n"
    "00:00:01.200 --> 00:00:02.000 region:fred\nTwo <00:00:01.600>lines\nof text &lt;ok&gt;\n")
VTT_CLIPS = [(5, 20, "Hello there"), (30, 50, "Two lines of text <ok>")]

JSON_STRING_TIMES = [{"start": "0.2", "end": "00:00:00.800", "text": "String times"},
                     {"start": "1.2", "end": "2", "text": "work too"}]
JSON_CLIPS = [(5, 20, "String times"), (30, 50, "work too")]

# caption file name -> (its bytes, the reject reason, a part of the detail)
BAD = {
    "dict.json": (json.dumps({"segments": JSON_STRING_TIMES, "text": "x"}).encode(),
                  "caption file is not a list of {start, end, text}", "a JSON dict with keys segments, text"),
    "renamed.json": (json.dumps([{"from": 0.2, "to": 0.8, "text": "x"}]).encode(),
                     "caption file is not a list of {start, end, text}", "item 0 has keys from, to, text"),
    "words.json": (json.dumps([{"start": "soon", "end": "later", "text": "x"}]).encode(),
                   "cue time does not parse", "item 0: start 'soon', end 'later'"),
    "cp1252.srt": ("1\r\n00:00:00,200 --> 00:00:00,800\r\nCaf\u00e9 cr\u00e8me\r\n".encode("cp1252"),
                   "caption file is not valid UTF-8", "save it as UTF-8"),
    "semicolon.srt": (b"1\n00:00:00;200 --> 00:00:00;800\nx\n", "cue time does not parse",
                      "line 2: '00:00:00;200 --> 00:00:00;800'"),
    "blank.srt": (b"\xef\xbb\xbf\r\n\r\n", "caption file has no cues", "no line with -->"),
    "headless.vtt": (b"00:00.200 --> 00:00.800\nx\n", "not a WebVTT file", "the first line is not WEBVTT"),
}


@pytest.fixture(scope="module")
def worst_out(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("worst")
    _render(root / "srt.mp4", 100, "25")
    for name in ["vtt", "json"] + [Path(n).stem for n in BAD]:
        shutil.copy(root / "srt.mp4", root / f"{name}.mp4")
    (root / "srt.srt").write_bytes(b"\xef\xbb\xbf" + SRT.replace("\n", "\r\n").encode())   # BOM, CRLF
    (root / "vtt.vtt").write_text(VTT)
    (root / "json.json").write_text(json.dumps(JSON_STRING_TIMES))
    for name, (data, _, _) in BAD.items():
        (root / name).write_bytes(data)
    out = tmp_path_factory.mktemp("worst_out")
    run_video_stage(preprocess, out, root_dir=root, source="captions", scale=20, workers=2)
    return root, out


def test_worst_day_caption_files_parse_to_the_frames_they_name(worst_out):
    layout = Layout(worst_out[1])
    assert sorted(layout.normal_ids()) == ["json", "srt", "vtt"]
    ann = _check_item(layout, "srt", SRT_CLIPS, SRT_CUT)
    assert ann["skipped"][DUPLICATE] == 1 and ann["skipped"][MERGED] == 1
    _check_item(layout, "vtt", VTT_CLIPS)
    _check_item(layout, "json", JSON_CLIPS)


def test_a_broken_caption_file_is_one_line_naming_it_and_the_run_goes_on(worst_out):
    root, out = worst_out
    rejects = {Path(r["source"]).name: r for r in read_jsonl(Layout(out).rejects_file("preprocess"))}
    assert set(rejects) == set(BAD)
    for name, (_, reason, detail) in BAD.items():
        r = rejects[name]
        assert (r["id"], r["reason"], Path(r["source"])) == (Path(name).stem, reason, root / name)
        assert detail in r["detail"] and "\n" not in r["detail"] + r["reason"]


def test_missing_blank_line_between_cues_keeps_them_apart():
    """Before: the second cue's index and timing line became the first cue's text."""
    text = "1\n00:00:01,000 --> 00:00:02,000\nHello\n2\n00:00:03,000 --> 00:00:04,000\nWorld\n"
    assert parse_cues(text) == [(1.0, 2.0, "Hello"), (3.0, 4.0, "World")]
    # a caption line of digits with its blank line kept is text
    assert parse_cues("00:00:01.000 --> 00:00:02.000\n1984\n\n")[0][2] == "1984"


@pytest.mark.parametrize("text, reason", [
    ("1\n00:00:01,000 --> soon\nx\n\n2\nlater --> never\ny\n", "cue time does not parse"),
    ("WEBVTT\n\nNOTE only a note\n", "caption file has no cues"),
])
def test_cue_parse_errors_name_the_line(text, reason):
    with pytest.raises(ItemError) as err:
        parse_cues(text)
    assert err.value.reason == reason
    if reason == "cue time does not parse":
        assert err.value.detail == "line 6: 'later --> never'"   # the first cue keeps its one known time


def test_json_errors_say_what_the_file_holds():
    with pytest.raises(ItemError, match="not a list"):
        parse_json_events('"just a string"')
    with pytest.raises(ItemError) as err:
        parse_json_events("[]")
    assert err.value.reason == "caption file has no cues"
    assert parse_json_events('[{"start": 1, "end": "00:02", "text": "a"}]') == [(1.0, 2.0, "a")]
