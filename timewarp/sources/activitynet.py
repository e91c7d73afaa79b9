"""``--source activitynet``: ActivityNet Captions annotation files and the videos they describe.

The root holds JSON files of the ActivityNet Captions shape (``train.json``, ``val_1.json``,
``val_2.json``, or any name), ``{key: {"duration": s, "timestamps": [[start, end], ...], "sentences":
[...]}}``, and the videos as ``<key>.mp4|.mkv|.webm`` (or without the ``v_`` prefix of the keys)
anywhere below it. A JSON file of another shape is not an annotation file and is passed over. Each
sentence is an event; overlapping events (most ActivityNet videos have them) merge into one clip
whose caption lists them in start order (``base.events_video``). A key annotated in two files (the
val_1 / val_2 pair annotates the same videos twice) is taken from the first file in path order; the
other is a reject naming both.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Optional

from timewarp.core.errors import ItemError
from timewarp.core.schema import SourceRef, SourceVideo
from timewarp.sources.base import (ClipOptions, Provenance, ScanProblem, Source, check_name, events_video,
                                   read_text, safe_id, walk_files)
from timewarp.sources.timestamps import parse_timestamp

SUFFIXES = (".mp4", ".mkv", ".webm")   # preferred in this order when a key has several


def annotation_file(path: Path) -> Optional[dict]:
    """The records of an ActivityNet-Captions-shaped JSON file, or None for any other JSON file."""
    try:
        data = json.loads(read_text(path))
    except (ItemError, ValueError):
        return None
    if not isinstance(data, dict) or not data:
        return None
    first = next(iter(data.values()))
    return data if isinstance(first, dict) and "timestamps" in first and "sentences" in first else None


def record_events(rec) -> list:
    """(start, end, sentence) of one record; ItemError when the record is not of the shape."""
    if not isinstance(rec, dict):
        raise ItemError("annotation is not an object", type(rec).__name__)
    stamps, sentences = rec.get("timestamps"), rec.get("sentences")
    if not isinstance(stamps, list) or not isinstance(sentences, list):
        raise ItemError("annotation lacks timestamps or sentences lists")
    if len(stamps) != len(sentences):
        raise ItemError("timestamps and sentences differ in length", f"{len(stamps)} timestamps, {len(sentences)} sentences")
    out = []
    for pair, sentence in zip(stamps, sentences):
        ok = isinstance(pair, (list, tuple)) and len(pair) == 2
        out.append((parse_timestamp(pair[0]) if ok else None, parse_timestamp(pair[1]) if ok else None, sentence))
    return out


class ActivityNet(Source):
    name = "activitynet"
    root_help = "ActivityNet Captions JSON files and <key>.mp4|.mkv|.webm videos"
    provenance = Provenance(
        name="ActivityNet Captions", url="https://cs.stanford.edu/people/ranjaykrishna/densevid/", license="other",
        terms="ActivityNet Captions annotations are released by their authors for research use; the videos are "
              "YouTube videos (ActivityNet) under their uploaders' terms. Check both before sharing derived videos.",
        about="YouTube videos from ActivityNet with human-written, time-stamped sentence descriptions (Krishna et "
              "al., Dense-Captioning Events in Videos, ICCV 2017)",
        attribution="`source_id` (the ActivityNet key: `v_<YouTube id>`), `source_file` (the video below the "
                    "input folder) and `source_json` (the annotation file)",
        video_license="remain under the terms of the original YouTube videos")

    def scan(self, opts: ClipOptions) -> Iterator[SourceVideo | ScanProblem]:
        files = list(walk_files(self.root, self.exclude))
        videos: dict[str, Path] = {}
        for p in sorted((p for p in files if p.suffix.lower() in SUFFIXES),
                        key=lambda p: (SUFFIXES.index(p.suffix.lower()), p)):
            videos.setdefault(p.stem, p)
        first_in: dict[str, Path] = {}
        for js in (p for p in files if p.suffix.lower() == ".json"):
            data = None if check_name(js) else annotation_file(js)
            for key, rec in sorted((data or {}).items()):
                video = videos.get(key) or (videos.get(key[2:]) if key.startswith("v_") else None)
                label = f"{js}#{key}"
                if key in first_in:
                    yield ScanProblem(safe_id(key), "duplicate video id",
                                      f"annotated in {first_in[key]} and {js}: the first is used", label)
                    continue
                first_in[key] = js
                if video is None:
                    yield ScanProblem(safe_id(key), "annotated video not found",
                                      f"no {key}{{{','.join(SUFFIXES)}}} below {self.root}", label)
                    continue
                if check_name(video):
                    yield check_name(video)
                    continue
                ref = SourceRef("files", str(video.resolve()), json_path=str(js.resolve()))
                try:
                    yield events_video(ref, key, record_events(rec), opts, json_name=js.name)
                except ItemError as exc:
                    yield ScanProblem(safe_id(key), exc.reason, exc.detail, label)
