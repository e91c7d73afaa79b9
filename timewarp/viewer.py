"""A static page to look at the generated data, opened from disk (no server, no build step).

  python timewarp/viewer.py --root_dir <out>        ->  <out>/report/viewer/index.html (open it in a browser)

For each video: the normal and the shuffled video side by side, the clip timeline of both with the captions
and the permutation drawn between them (click a clip to seek), the SFT questions and answers, the preference
pairs (chosen / rejected; the negative order, or the corruption of an implicit pair), and the benchmark
questions with the normal and the shuffled key and whether the shuffle changed it. Filters by split, category
and text. The data is in data.js beside the page (browsers block fetch() of local files, not <script src>);
the list shows one thumbnail per video and each clip has one (the middle frame of the clip, decoded once into
thumbs/). Videos are referenced relative to the page, so keep the page inside <out>. Read-only on the data;
only report/viewer/ is written.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

from timewarp.media import frames as framelib
from timewarp.core.errors import ItemError, UsageError
from timewarp.core.layout import Layout
from timewarp.core.parallel import LOCAL, Executor, pmap
from timewarp.core.stage import (StageConfig, StageRun, add_common_args, add_shuffled_dir_args, cli, executor_from_args,
                            log, require_root)
from timewarp.core.store import atomic_path, read_json, read_jsonl, write_text

ASSETS = Path(__file__).resolve().parent / "viewer_assets"
ASSET_FILES = ("index.html", "viewer.css", "viewer.js")
THUMB_SIDE = 160


def viewer_dir(layout: Layout) -> Path:
    """report/viewer/: beside the stats report, inside the folder every dataset scan already skips."""
    return layout.report_dir / "viewer"


def _rows(path: Path) -> list:
    if not path.is_file():
        return []
    try:
        return read_jsonl(path)
    except (OSError, ValueError) as exc:
        log.error("%s: skipped, does not parse (%s)", path, exc)
        return []


def _annotations(folder: Path) -> list:
    out = []
    if folder.is_dir():
        for p in sorted(folder.glob("*.json")):
            if p.name.startswith("."):
                continue
            try:
                a = read_json(p)
                if not isinstance(a, dict) or not isinstance(a.get("clips"), list):
                    raise ValueError("not an annotation")
                out.append(a)
            except (OSError, ValueError) as exc:
                log.error("%s: skipped (%s)", p, exc)
    return out


def thumb_frames(ann: dict) -> list[int]:
    """The frame each clip is shown by: its middle frame."""
    return [(int(c["start_frame"]) + int(c["end_frame"]) - 1) // 2 for c in ann["clips"]]


@dataclass(frozen=True, kw_only=True)
class Config(StageConfig):
    """No options of its own: root_dir (with its shuffled folder names) and the common --overwrite."""


def make_thumbs(cfg: Config, item: tuple) -> int:
    """The clip thumbnails of one video (kept when newer than the video, unless --overwrite); how many."""
    vid, rel, idx = item
    video = cfg.layout.root / rel
    out = viewer_dir(cfg.layout) / "thumbs" / vid
    want = [out / framelib.frame_name(i) for i in idx]
    try:
        mtime = video.stat().st_mtime
        if cfg.overwrite or not all(w.is_file() and w.stat().st_mtime >= mtime for w in want):
            frames = [framelib.resize_max_side(f, THUMB_SIDE) for f in framelib.extract_frames(video, idx)]
            framelib.write_frames(frames, idx, out, quality=80)
    except OSError as exc:
        raise ItemError("thumbnails not written", str(exc)) from None
    return len(want)


def collect(layout: Layout, page_dir: Path) -> dict:
    """Everything the page shows, per video (plain JSON)."""
    def url(rel: str) -> Optional[str]:
        if not isinstance(rel, str) or not (layout.root / rel).is_file():
            return None
        return Path(os.path.relpath(layout.root / rel, page_dir)).as_posix()

    normals = _annotations(layout.normal_annotations_dir)
    shuffled = collections.defaultdict(list)
    for s in _annotations(layout.shuffled_annotations_dir):
        shuffled[s.get("normal_id", s.get("id"))].append(s)
    per = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in _rows(layout.sft_explicit_file):
        per[r.get("id")]["sft"].append({k: r.get(k) for k in ("qid", "kind", "question", "answer")})
    for r in _rows(layout.pref_explicit_file):
        per[r.get("id")]["pref"].append({k: r.get(k) for k in (
            "pid", "kind", "question", "chosen", "rejected", "negative", "negative_order", "shuffled_id")})
    for r in _rows(layout.pref_implicit_file):
        per[r.get("id")]["implicit"].append({k: r.get(k) for k in (
            "pid", "prompt", "chosen", "rejected", "rejected_mode", "rejected_prompt", "corruption", "distance")})
    shuffled_keys = {r.get("qid"): r for r in _rows(layout.benchmark_shuffled_file)}
    for r in _rows(layout.benchmark_normal_file):
        s = shuffled_keys.get(r.get("qid"), {})
        per[r.get("id")]["bench"].append({
            "qid": r.get("qid"), "kind": r.get("kind"), "question": r.get("question"), "options": r.get("options"),
            "normal_answer": r.get("answer"), "shuffled_answer": s.get("answer"), "key_changed": s.get("key_changed"),
            "shuffled_video_id": s.get("video_id")})
    videos = []
    for a in normals:
        vid = a["id"]
        videos.append({
            "id": vid, "split": a.get("split", "?"), "category": a.get("category") or "(none)",
            "title": a.get("title", ""), "duration": a.get("duration"), "fps": a.get("fps"),
            "size": [a.get("width"), a.get("height")], "video": url(a.get("video")),
            "source_id": a.get("source_id"),
            "clips": [{"index": c["index"], "start": c["start"], "end": c["end"], "caption": c.get("caption", ""),
                       "thumb": f"thumbs/{vid}/{framelib.frame_name(f)}"}
                      for c, f in zip(a["clips"], thumb_frames(a))],
            "shuffled": [{"id": s["id"], "video": url(s.get("video")), "duration": s.get("duration"),
                          "permutation": s.get("permutation"),
                          "clips": [{"index": c["index"], "source_index": c["source_index"], "start": c["start"],
                                     "end": c["end"]} for c in s["clips"]]}
                         for s in sorted(shuffled.get(vid, []), key=lambda s: s.get("permutation_index", 0))],
            **{k: per[vid][k] for k in ("sft", "pref", "implicit", "bench")},
        })
    return {"videos": videos, "report": "../index.html" if layout.report_file.is_file() else None}


def run(cfg: Config, executor: Executor = LOCAL) -> Path:
    layout = cfg.layout
    root = require_root(layout.root, "--root_dir")
    if not layout.normal_annotations_dir.is_dir():
        raise UsageError(f"{root} has no normal/annotations: is it the output root_dir of ./setup_dataset.sh?")
    page_dir = viewer_dir(layout)
    page_dir.mkdir(parents=True, exist_ok=True)
    data = collect(layout, page_dir)
    if not data["videos"]:
        raise UsageError(f"{root} has no readable annotations to show")
    # thumbnails: one decode pass per video
    items = []
    anns = {a["id"]: a for a in _annotations(layout.normal_annotations_dir)}
    for v in data["videos"]:
        if v["video"]:
            items.append((v["id"], anns[v["id"]]["video"], thumb_frames(anns[v["id"]])))
    # the videos' problems are recorded by StageRun.succeeded (the viewer writes no stats: root_dir is only read)
    problems = StageRun("viewer", layout, cfg.options())
    results = pmap(partial(make_thumbs, cfg), items, executor, desc="viewer thumbnails")
    ok_thumbs = {vid for vid, _ in problems.succeeded([it[0] for it in items], results)}
    for r in problems.rejects:
        if r.reason != "internal error":  # succeeded() logged those
            log.error("%s: no thumbnails (%s %s)", r.id, r.reason, r.detail)
    for v in data["videos"]:
        if v["id"] not in ok_thumbs:
            for c in v["clips"]:
                c["thumb"] = None
    for name in ASSET_FILES:
        with atomic_path(page_dir / name) as tmp:
            shutil.copyfile(ASSETS / name, tmp)
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    # "</" cannot end a script in a file, but keep the data inert anyway; U+2028/9 are legal in JSON, not in old JS
    text = text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    write_text(page_dir / "data.js", "window.TIMEWARP_DATA = " + text + ";\n")
    index = page_dir / "index.html"
    print(f"[viewer] {len(data['videos'])} videos ({len(data['videos']) - len(ok_thumbs)} without thumbnails); "
          f"open in a browser: {index.resolve().as_uri()}")
    return index


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="viewer.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root_dir", required=True, help="output root_dir of setup_dataset.sh (+ generate_data.sh)")
    add_shuffled_dir_args(p)
    add_common_args(p, seed=False, limit=False,
                    overwrite_help="decode every thumbnail again (default: keep those newer than their video)")
    return p


def main(argv: Optional[list] = None) -> int:
    return cli(lambda a: run(Config.from_args(a), executor_from_args(a)) and 0, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
