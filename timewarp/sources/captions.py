"""``--source captions``: a folder of videos, each with a caption file of the same name beside it.

``<name>.mp4|.mkv|.webm|.mov|.m4v|.avi`` + ``<name>.srt`` (SubRip), ``<name>.vtt`` (WebVTT) or
``<name>.json`` (a list of ``{"start", "end", "text"}``; times in seconds or ``HH:MM:SS.mmm``), in any
sub-folder. Every cue is an event; overlapping cues merge into one clip (``base.events_video``).
Cue text loses its markup (``<i>``, ``<c.x>``, ``{\\an8}``) and line breaks.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Iterator, Optional

from timewarp.core.errors import ItemError
from timewarp.core.schema import SourceRef, SourceVideo
from timewarp.sources.base import (VIDEO_SUFFIXES, ClipOptions, Provenance, ScanProblem, Source, check_name,
                                   events_video, fill_in, flat_source_id, read_text, safe_id, walk_files)
from timewarp.sources.timestamps import parse_timestamp

CAPTION_SUFFIXES = (".srt", ".vtt", ".json")   # the first one present beside a video is used
_MARKUP = re.compile(r"<[^>]*>|\{\\[^}]*\}")
_CUE_TIMES = re.compile(r"^\s*(\S+?)\s*-->\s*(\S+)")

Event = tuple[Optional[float], Optional[float], object]


def _caption(lines: list[str]) -> str:
    """Cue text lines as one caption: markup (``<i>``, ``<c.x>``, ``<00:01.000>``, ``{\\an8}``) and
    entities (``&amp;``) gone, lines joined by spaces."""
    return " ".join(html.unescape(_MARKUP.sub("", line)) for line in lines)


def parse_cues(text: str) -> list[Event]:
    """SubRip or WebVTT cues as (start, end, text); ItemError for a file with no cue, or a cue neither of
    whose times parses (where it plays is unknown: it could not be cut out), naming its line.

    A line with ``-->`` starts a cue; its text is the lines after it up to a blank line or the next
    cue's timing line. What is not after a timing line (a WEBVTT header, NOTE, STYLE and REGION
    blocks, a SubRip index or WebVTT cue id) is no text; when a blank line between two cues is
    missing, a line of digits just before the next timing line is taken as that cue's index.
    """
    events: list[Event] = []
    cue: Optional[list] = None   # [start, end, text lines]
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for n, line in enumerate(lines, 1):
        if "-->" in line:
            if cue is not None and cue[2] and cue[2][-1].strip().isdigit():
                cue[2].pop()   # "2" before "00:00:03,000 --> ...": the next cue's index, not text
            m = _CUE_TIMES.match(line)
            start, end = (parse_timestamp(m.group(1)), parse_timestamp(m.group(2))) if m else (None, None)
            if start is None and end is None:
                raise ItemError("cue time does not parse", f"line {n}: {line.strip()[:80]!r}")
            cue = [start, end, []]
            events.append(cue)
        elif not line.strip():
            cue = None
        elif cue is not None:
            cue[2].append(line)
    if not events:
        raise ItemError("caption file has no cues", "no line with -->")
    return [(a, b, _caption(t)) for a, b, t in events]


def parse_json_events(text: str) -> list[Event]:
    """A JSON list of ``{start, end, text}`` (times in seconds, as numbers or strings like ``"1.5"`` or
    ``"00:00:01.500"``) as (start, end, text); ItemError when it is not that shape, or an item has
    neither time that parses."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ItemError("caption file is not valid JSON", str(exc))
    if not isinstance(items, list):
        keys = f" with keys {', '.join(map(str, list(items)[:6]))}" if isinstance(items, dict) else ""
        raise ItemError("caption file is not a list of {start, end, text}", f"a JSON {type(items).__name__}{keys}")
    bad = next((n for n, it in enumerate(items) if not isinstance(it, dict)), None)
    if bad is not None:
        raise ItemError("caption file is not a list of {start, end, text}", f"item {bad} is not an object")
    events = [(parse_timestamp(it.get("start")), parse_timestamp(it.get("end")), it.get("text")) for it in items]
    lost = next((n for n, (a, b, _) in enumerate(events) if a is None and b is None), None)
    if lost is not None:
        it = items[lost]
        if "start" not in it and "end" not in it:   # another tool's names ("from", "start_time", ...)
            raise ItemError("caption file is not a list of {start, end, text}",
                            f"item {lost} has keys {', '.join(map(str, list(it)[:6]))}")
        raise ItemError("cue time does not parse", f"item {lost}: start {it.get('start')!r}, end {it.get('end')!r}"[:200])
    if not events:
        raise ItemError("caption file has no cues", "an empty list")
    return events


def read_events(path: Path) -> list[Event]:
    """The events of one caption file (by its suffix); ItemError names what is wrong."""
    text = read_text(path, "caption file")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return parse_json_events(text)
    if suffix == ".vtt" and not text.lstrip().startswith("WEBVTT"):
        raise ItemError("not a WebVTT file", "the first line is not WEBVTT")
    return parse_cues(text)


class Captions(Source):
    name = "captions"
    root_help = "videos (.mp4, .mkv, .webm, .mov, .m4v, .avi) each with a same-name .srt, .vtt or .json caption file"
    provenance = Provenance(
        name=fill_in("the name of your video collection"), url=fill_in("where your videos come from (a URL)"),
        license="other", terms=fill_in("the terms under which your videos and captions may be shared"),
        about=fill_in("what the videos are, who made them and who wrote the captions"),
        attribution="`source_id` (the video's path below the input folder, without its suffix), `source_file` "
                    "(the video) and `source_json` (its caption file)",
        video_license=fill_in("the videos' license and how to attribute them"))

    def scan(self, opts: ClipOptions) -> Iterator[SourceVideo | ScanProblem]:
        files = list(walk_files(self.root, self.exclude))
        present = set(files)
        used = set()
        for video in (p for p in files if p.suffix.lower() in VIDEO_SUFFIXES):
            caption = next((c for c in (video.with_suffix(s) for s in CAPTION_SUFFIXES) if c in present), None)
            problem = next((check_name(p) for p in (video, caption) if p is not None and check_name(p)), None)
            source_id = flat_source_id(video, self.root)
            if problem:
                yield problem
            elif caption is None:
                yield ScanProblem(safe_id(source_id), "video without captions",
                                  f"no {', '.join(video.stem + s for s in CAPTION_SUFFIXES)} beside it", str(video))
            else:
                used.add(caption)
                ref = SourceRef("files", str(video.resolve()), json_path=str(caption.resolve()))
                try:
                    yield events_video(ref, source_id, read_events(caption), opts, json_name=caption.name)
                except ItemError as exc:
                    yield ScanProblem(safe_id(source_id), exc.reason, exc.detail, str(caption))
        for orphan in (p for p in files if p.suffix.lower() in (".srt", ".vtt") and p not in used):
            yield ScanProblem(safe_id(flat_source_id(orphan, self.root)), "captions without video",
                              f"no {orphan.stem}{{{','.join(VIDEO_SUFFIXES)}}} beside it", str(orphan))
