"""Stage 3: check that every annotation agrees with its videos and with the other annotations.

Normal items: the annotation parses and its id is its file name; at least --min_clips clips, indexed
0..n-1, ordered and non-overlapping, each start/end equal to start_frame/end_frame / fps within 1 ms
and inside the video, the video ending at the last clip; the video's fps, size and frame count
match the annotation and its frames are at k/fps (read from its packets; --decode also decodes it
and fails any decode error). What the frames show: an item whose files filter_corrupted verified
(same size and mtime in state/filter_corrupted.json, against the source) is not checked again;
any other gets the same content pass here (``timewarp/media/verify.py``: every frame against the source
frame its annotation names, clip times against the source's decoded frame times, when --source_root,
by default preprocess's root_dir, has the source; else the clips' frames only against the metadata
times by the source's frame times or k/fps); each clip file is the normal video's packets of its
clip. Across items: no two annotations share a source_id, and no source_id is in both splits.
Shuffled items (if any): the permutation is a non-identity permutation of the normal clips, each
clip carries the caption, length and times of the normal clip it names, the shuffled timeline is
contiguous, and the shuffled video is packet for packet the normal video's clips in that order.

Violations are printed as a table (id, check, detail), written as rejects/final_assertions.jsonl,
and make the exit status 1; with none, one summary line and exit status 0. Nothing is modified.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from collections import defaultdict
from dataclasses import dataclass, field, replace
from functools import partial
from fractions import Fraction
from pathlib import Path
from typing import Optional

from timewarp.media import verify
from timewarp.core.errors import ItemError, UsageError
from timewarp.core.layout import Layout
from timewarp.core.parallel import LOCAL, Executor, pmap
from timewarp.core.schema import NormalAnnotation, ShuffledAnnotation
from timewarp.core.stage import (NO_SEED_HELP, StageConfig, StageRun, add_common_args, add_shuffled_dir_args, cli,
                            executor_from_args, log, option, require_root)
from timewarp.core.store import read_json
from timewarp.sources.timestamps import parse_rate
from timewarp.preprocess.filter_corrupted import is_verified, load_record, stat_key
from timewarp.media.video import decode_errors, frame_rate, probe

STAGE = "final_assertions"
TIME_TOLERANCE = 0.001      # seconds: times are frame times rounded for JSON
FPS_TOLERANCE = 0.001       # frames per second: the container's rate vs the annotation's
CLIP_FRAME_TOLERANCE = 1    # frames: a stream-copied clip file may gain or lose one at its edges


@dataclass(frozen=True)
class Violation:
    id: str
    check: str
    detail: str
    source: str = ""        # the file the violation is about, relative to root_dir
    kind: str = "normal"    # what it is charged to: a "normal" or "shuffled" item (ids may be equal), or a "video"


@dataclass(frozen=True, kw_only=True)
class Config(StageConfig):
    decode: bool = option(False, "also decode every video and fail it on any error ffmpeg reports (frame counts and "
                                 "times are read from the packets; what frames show is checked against the source)")
    source_root: Optional[str] = option(None, verify.SOURCE_ROOT_HELP)
    min_clips: int = option(2, "fewest clips an annotation may have")


@dataclass(frozen=True)
class Checked:
    """What one item's checks found: its violations, and its source_id and split for the cross checks
    (None when its annotation does not load)."""

    violations: list
    source_id: Optional[str] = None
    split: Optional[str] = None
    content: str = ""     # how the frames were checked: "filter_corrupted", "source", "times" (no source)


@dataclass
class Report:
    """What run() returns: the violations found (sorted) and the stats written."""

    violations: list[Violation] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations


class Checker:
    """Collects the violations of one item."""

    def __init__(self, item_id: str, source: str, kind: str):
        self.id = item_id
        self.source = source
        self.kind = kind
        self.found: list[Violation] = []

    def fail(self, check: str, detail: str, source: str = "") -> None:
        self.found.append(Violation(self.id, check, detail, source or self.source, self.kind))

    def expect(self, cond: bool, check: str, detail: str, source: str = "") -> bool:
        if not cond:
            self.fail(check, detail, source)
        return cond


def _load(path: Path, cls, item_id: str, ck: Checker, prefix: str = ""):
    """The record in ``path`` or None (with the violation recorded)."""
    try:
        rec = cls.from_dict(read_json(path))
    except OSError as exc:
        ck.fail(f"{prefix}annotation parses", f"unreadable: {exc.strerror or exc}")
        return None
    except (ValueError, TypeError) as exc:
        ck.fail(f"{prefix}annotation parses", str(exc))
        return None
    if not ck.expect(rec.id == item_id, f"{prefix}id matches file name", f"id is {rec.id!r}"):
        return None
    return rec


def _video_facts(path: Path, decode: bool, ck: Checker, check: str, rel: str):
    """(fps, frames, width, height) of a video from its packets (no decoding), or None with a violation.

    The frame times are read, not assumed: a video whose frames are not at k/fps fails "video frame
    times". With ``decode`` the video is decoded and any error ffmpeg reports is a violation too.
    """
    try:
        pk = verify.read_packets(path)
    except ItemError as exc:
        ck.fail(check, f"{exc.reason}: {rel}", rel)
        return None
    fps, irregular = frame_rate(pk.times(), pk.nominal, pk.time_base)
    if irregular:
        ck.fail("video frame times", f"{rel}: {irregular[0]}: {irregular[1]}", rel)
    if decode:
        err = decode_errors(path)
        ck.expect(err is None, "video decodes cleanly", f"{rel}: {err}", rel)
    return fps, len(pk), pk.width, pk.height


def _recorded_video(video: Path, recorded: str, rel: str, decode: bool, ck: Checker, prefix: str):
    """Facts of the video an annotation names (``recorded``), after checking it is the expected file and exists."""
    if not ck.expect(recorded == rel, f"{prefix}video path", f"video is {recorded!r}, expected {rel!r}"):
        return None
    if not ck.expect(video.is_file(), f"{prefix}video exists", f"{rel} is missing", rel):
        return None
    return _video_facts(video, decode, ck, f"{prefix}video opens", rel)


def _rate(value, ck: Checker, check: str) -> Optional[Fraction]:
    try:
        return parse_rate(value)
    except (ValueError, ZeroDivisionError, TypeError) as exc:
        ck.fail(check, f"fps_rational {value!r} is not a frame rate: {exc}")
        return None


def _near(a: float, b: float, tol: float = TIME_TOLERANCE) -> bool:
    return abs(a - b) <= tol + 1e-9


def check_normal(cfg: Config, vid: str, verified: Optional[dict] = None) -> Checked:
    """All checks of one normal item that need only its own files (and its source); ``verified``: what
    filter_corrupted's record says it verified of this id ({rel path: stamp})."""
    layout = cfg.layout
    ck = Checker(vid, layout.rel(layout.normal_annotation(vid)), "normal")
    ann = _load(layout.normal_annotation(vid), NormalAnnotation, vid, ck)
    if ann is None:
        return Checked(ck.found)
    content = ""
    try:
        content = _check_normal(ann, layout, cfg, ck, verified or {})
    except (TypeError, AttributeError, ValueError) as exc:  # a field of the wrong type
        ck.fail("annotation field types", f"{type(exc).__name__}: {exc}")
    return Checked(ck.found, ann.source_id, ann.split, content)


def _check_content(ann: NormalAnnotation, layout: Layout, cfg: Config, ck: Checker, verified: dict) -> str:
    """What the normal video's frames show, unless filter_corrupted verified these very files against the
    source; returns how it was checked ("filter_corrupted", "source" or "times": no source reachable, the
    clips' frames checked against the metadata times only, and the video decoded whole unless
    filter_corrupted did that already)."""
    video = layout.normal_video(ann.id)
    rel = layout.rel(video)
    files = [video] + sorted(layout.clip_dir(ann.id).glob("*.mp4"))
    stamp = verify.source_stamp(ann, cfg.source_root, cfg.layout)
    recorded = False
    with contextlib.suppress(OSError):
        recorded = all(is_verified(verified.get(layout.rel(p)), stat_key(p, stamp if p == video else ""))
                       for p in files)
    if recorded and stamp:
        return "filter_corrupted"
    with verify.open_source(ann, cfg.source_root, cfg.layout) as found:
        if found is None:
            _check_clip_times(ann, parse_rate(ann.fps_rational), cfg, ck)
        try:
            if found is not None or not recorded:
                verify.verify_normal(ann, video, *(found or (None, "")), rel=rel,
                                     reference=layout.reference_file(ann.id))
        except ItemError as exc:
            ck.fail(exc.reason, exc.detail.replace(str(video), rel), rel)
    return "source" if found else "times"


def _check_normal(ann: NormalAnnotation, layout: Layout, cfg: Config, ck: Checker, verified: dict) -> str:
    ck.expect(ann.split in ("train", "test"), "split", f"split is {ann.split!r}, not train or test")
    fps = _rate(ann.fps_rational, ck, "fps")
    if fps is None:
        return
    ck.expect(_near(ann.fps, float(fps), FPS_TOLERANCE), "fps", f"fps {ann.fps} but fps_rational {ann.fps_rational}")
    ck.expect(_near(ann.duration, float(ann.frame_count / fps)), "duration",
              f"duration {ann.duration} but frame_count/fps = {float(ann.frame_count / fps):.6f}")

    # clips
    clips = ann.clips
    ck.expect(len(clips) >= cfg.min_clips, "clip count", f"{len(clips)} clip(s), at least {cfg.min_clips} needed")
    prev_end = 0
    for i, c in enumerate(clips):
        ck.expect(c.index == i, "clip index", f"clip {i} has index {c.index}")
        ck.expect(0 <= c.start_frame < c.end_frame, "clip frames",
                  f"clip {i}: frames [{c.start_frame}, {c.end_frame}) are empty or negative")
        ck.expect(c.start_frame >= prev_end, "clips ordered and non-overlapping",
                  f"clip {i} starts at frame {c.start_frame}, before the end of clip {i - 1} at frame {prev_end}")
        prev_end = max(prev_end, c.end_frame)
        for what, t, frame in (("start", c.start, c.start_frame), ("end", c.end, c.end_frame)):
            ck.expect(_near(t, float(frame / fps)), "clip times match frames",
                      f"clip {i}: {what} {t} but {what}_frame {frame} is at {float(frame / fps):.6f}s")
        ck.expect(c.end_frame <= ann.frame_count and c.end <= ann.duration + TIME_TOLERANCE, "clip inside video",
                  f"clip {i} ends at frame {c.end_frame} ({c.end}s), the video has {ann.frame_count} frames "
                  f"({ann.duration}s)")
    if clips:
        ck.expect(clips[-1].end_frame == ann.frame_count, "video ends at last clip",
                  f"frame_count {ann.frame_count} but the last clip ends at frame {clips[-1].end_frame}")

    # the normal video
    video = layout.normal_video(ann.id)
    rel = layout.rel(video)
    facts = _recorded_video(video, ann.video, rel, cfg.decode, ck, "")
    matches = False
    if facts:
        v_fps, v_frames, v_w, v_h = facts
        matches = all([
            ck.expect(_near(float(v_fps), float(fps), FPS_TOLERANCE), "video fps",
                      f"{rel} runs at {float(v_fps):.6f} fps, annotation says {ann.fps_rational}", rel),
            ck.expect((v_w, v_h) == (ann.width, ann.height), "video size",
                      f"{rel} is {v_w}x{v_h}, annotation says {ann.width}x{ann.height}", rel),
            ck.expect(v_frames == ann.frame_count, "video frame count",
                      f"{rel} has {v_frames} frames, annotation frame_count is {ann.frame_count}", rel)])
    # what the frames show (a video that does not match its annotation already failed)
    content = _check_content(ann, layout, cfg, ck, verified) if matches else ""
    if not content:
        _check_clip_times(ann, fps, cfg, ck)

    # clip files (optional)
    folder = layout.clip_dir(ann.id)
    normal_packets: dict = {}
    if folder.is_dir():
        by_index = {str(c.index): c for c in clips}
        for stem in layout.item_ids(folder, ".mp4"):
            path = folder / f"{stem}.mp4"
            crel = layout.rel(path)
            c = by_index.get(stem)
            if not ck.expect(c is not None, "clip file without clip", f"{crel} names no clip of the annotation", crel):
                continue
            facts = _video_facts(path, cfg.decode, ck, "clip file opens", crel)
            if facts:
                want = c.end_frame - c.start_frame
                if ck.expect(abs(facts[1] - want) <= CLIP_FRAME_TOLERANCE, "clip file frames",
                             f"{crel} has {facts[1]} frames, clip {c.index} spans {want}", crel):
                    _check_copy(video, rel, path, [(c.start_frame, c.end_frame)], crel, ck,
                                "clip file is the clip's frames", normal_packets)
    return content


def _check_copy(normal: Path, normal_rel: str, copy: Path, spans, rel: str, ck: Checker, check: str,
                cache: Optional[dict] = None) -> None:
    """``copy`` is packet for packet the normal video's frames ``spans``, or a violation ``check``;
    ``cache`` keeps the normal video's packets for the next copy of the same item."""
    cache = {} if cache is None else cache
    try:
        if "normal" not in cache:
            cache["normal"] = verify.read_packets(normal)
        verify.verify_copy(normal, copy, spans, rel, cache["normal"])
    except ItemError as exc:
        ck.fail(check, f"{exc.reason}: {exc.detail.replace(str(copy), rel).replace(str(normal), normal_rel)}", rel)


def source_times(ann: NormalAnnotation, source_root: str, until: float,
                 layout: Optional[Layout] = None) -> Optional[tuple[list, str]]:
    """(frame times in seconds, file label) of the source an annotation names, or None if it is not reachable.

    The source is re-opened as the content pass opens it (``verify.open_source``: through the protocol of
    the one preprocess used; bytes a remote source fetched are read from the output's cache). A
    constant-rate source's frame k is at k/fps (its pts are within the time-base rounding of that, which
    ``probe`` checks); any other source's frames are at their decoded pts.
    """
    with verify.open_source(ann, source_root, layout) as found:
        if found is None:
            return None
        path, label = found
        info = probe(path, until=until)
    if info.irregular:
        return list(info.times), label
    return [Fraction(k) / info.fps for k in range(info.frame_count)], label


def _check_clip_times(ann: NormalAnnotation, fps: Fraction, cfg: Config, ck: Checker) -> None:
    """Every clip holds exactly the source frames whose time t has meta_start <= t < meta_end (1 ms snap).

    Normal frame j is mapped to its source frame by the recorded ``source_ranges``; the source's
    frame times are decoded from the source itself when it is reachable (``--source_root``, by
    default the preprocess run's root_dir), else taken as k/fps.
    """
    ranges = ann.source_ranges or [[0, ann.frame_count]]
    src_of = [k for a, b in ranges for k in range(a, b)]
    if not ck.expect(len(src_of) == ann.frame_count, "source ranges",
                     f"source_ranges {ranges} hold {len(src_of)} frames, the video has {ann.frame_count}"):
        return
    until = max((c.meta_end if c.meta_end is not None else c.end) for c in ann.clips) + 2.0 if ann.clips else 0
    found = None
    try:
        found = source_times(ann, cfg.source_root, until, cfg.layout)
    except ItemError as exc:
        ck.fail("source decodes", f"{exc.reason}: {exc.detail}")
        return
    times, where = found if found else ([Fraction(k) / fps for k in range(max(src_of, default=-1) + 1)], "")
    why = verify.clip_times_problem(ann, src_of, times, where)
    if why:
        ck.fail("clip frames inside metadata times", why)


def check_shuffled(cfg: Config, sid: str) -> Checked:
    """All checks of one shuffled item against its normal annotation and its video."""
    layout = cfg.layout
    ck = Checker(sid, layout.rel(layout.shuffled_annotation(sid)), "shuffled")
    sh = _load(layout.shuffled_annotation(sid), ShuffledAnnotation, sid, ck, "shuffled ")
    if sh is None:
        return Checked(ck.found)
    try:
        _check_shuffled(sh, layout, cfg, ck)
    except (TypeError, AttributeError, ValueError) as exc:
        ck.fail("shuffled annotation field types", f"{type(exc).__name__}: {exc}")
    return Checked(ck.found, sh.source_id, sh.split)


def _check_shuffled(sh: ShuffledAnnotation, layout: Layout, cfg: Config, ck: Checker) -> None:
    npath = layout.normal_annotation(sh.normal_id)
    try:
        ann = NormalAnnotation.from_dict(read_json(npath))
    except (OSError, ValueError, TypeError) as exc:
        ck.fail("shuffled normal annotation", f"normal_id {sh.normal_id!r}: {layout.rel(npath)} does not load: {exc}")
        return
    for name in ("source_id", "split", "fps_rational", "width", "height"):
        ck.expect(getattr(sh, name) == getattr(ann, name), "shuffled matches normal",
                  f"{name} is {getattr(sh, name)!r}, normal {ann.id} has {getattr(ann, name)!r}")
    ck.expect(sh.normal_video == ann.video, "shuffled matches normal",
              f"normal_video is {sh.normal_video!r}, normal {ann.id} has {ann.video!r}")
    fps = _rate(sh.fps_rational, ck, "shuffled fps")
    if fps is None:
        return

    n = len(ann.clips)
    perm = list(sh.permutation)
    if not ck.expect(sorted(perm) == list(range(n)), "shuffled permutation",
                     f"{perm} is not a permutation of the {n} normal clips"):
        return
    ck.expect(perm != list(range(n)), "shuffled permutation", f"{perm} is the identity")
    if not ck.expect(len(sh.clips) == n, "shuffled clips follow permutation",
                     f"{len(sh.clips)} clips, the permutation has {n}"):
        return
    pos = 0
    for i, c in enumerate(sh.clips):
        ck.expect(c.index == i and c.source_index == perm[i], "shuffled clips follow permutation",
                  f"clip {i} has index {c.index}, source_index {c.source_index}; permutation says {perm[i]}")
        if ck.expect(0 <= c.source_index < n, "shuffled clips follow permutation",
                     f"clip {i} has source_index {c.source_index}, the normal video has {n} clips"):
            k, src = c.source_index, ann.clips[c.source_index]
            ck.expect(c.caption == src.caption, "shuffled clip caption",
                      f"clip {i} caption differs from normal clip {k}")
            length, want = c.end_frame - c.start_frame, src.end_frame - src.start_frame
            ck.expect(length == want, "shuffled clip length",
                      f"clip {i} spans {length} frames, normal clip {k} spans {want}")
            ck.expect(_near(c.source_start, src.start) and _near(c.source_end, src.end), "shuffled clip source times",
                      f"clip {i} source [{c.source_start}, {c.source_end}] but normal clip {k} is "
                      f"[{src.start}, {src.end}]")
        ck.expect(c.start_frame == pos, "shuffled timeline contiguous",
                  f"clip {i} starts at frame {c.start_frame}, the previous clip ends at frame {pos}")
        for what, t, frame in (("start", c.start, c.start_frame), ("end", c.end, c.end_frame)):
            ck.expect(_near(t, float(frame / fps)), "shuffled clip times match frames",
                      f"clip {i}: {what} {t} but {what}_frame {frame} is at {float(frame / fps):.6f}s")
        pos = c.end_frame
    total = sum(c.end_frame - c.start_frame for c in sh.clips)
    ck.expect(sh.frame_count == total, "shuffled frame count",
              f"frame_count {sh.frame_count}, the clips sum to {total} frames")
    ck.expect(_near(sh.duration, float(sh.frame_count / fps)), "shuffled duration",
              f"duration {sh.duration} but frame_count/fps = {float(sh.frame_count / fps):.6f}")

    video = layout.shuffled_video(sh.id)
    rel = layout.rel(video)
    facts = _recorded_video(video, sh.video, rel, cfg.decode, ck, "shuffled ")
    if facts:
        ck.expect(_near(float(facts[0]), float(fps), FPS_TOLERANCE), "shuffled video fps",
                  f"{rel} runs at {float(facts[0]):.6f} fps, annotation says {sh.fps_rational}", rel)
        if ck.expect(facts[1] == total, "shuffled video frame count",
                     f"{rel} has {facts[1]} frames, the clips sum to {total}", rel):
            _check_copy(layout.root / ann.video, ann.video, video, [(ann.clips[i].start_frame, ann.clips[i].end_frame)
                                                         for i in perm], rel, ck, "shuffled video is the clips' frames")


def cross_checks(normal: dict[str, Checked], shuffled: dict[str, Checked], layout: Layout) -> list[Violation]:
    """Unique source ids among normal annotations; no source id in both splits (normal and shuffled)."""
    found = []
    by_source: dict[str, list[str]] = defaultdict(list)
    splits: dict[str, dict[str, list[tuple[str, str, str]]]] = defaultdict(lambda: defaultdict(list))
    for kind, items, path_of in (("normal", normal, layout.normal_annotation),
                                 ("shuffled", shuffled, layout.shuffled_annotation)):
        for item_id, res in items.items():
            if res.source_id is None:
                continue
            if kind == "normal":
                by_source[res.source_id].append(item_id)
            splits[res.source_id][res.split].append((kind, item_id, layout.rel(path_of(item_id))))
    for source_id, ids in sorted(by_source.items()):
        for item_id in ids if len(ids) > 1 else []:
            others = ", ".join(i for i in ids if i != item_id)
            found.append(Violation(item_id, "duplicate source_id", f"source_id {source_id!r} is also in {others}",
                                   layout.rel(layout.normal_annotation(item_id))))
    for source_id, by_split in sorted(splits.items()):
        if len(by_split) > 1:
            detail = f"source_id {source_id!r} is in " + "; ".join(
                f"{split}: {', '.join(sorted(rel for _, _, rel in items))}"
                for split, items in sorted(by_split.items()))
            found += [Violation(item_id, ("shuffled " if kind == "shuffled" else "") + "source_id in both splits",
                                detail, rel, kind)
                      for items in by_split.values() for kind, item_id, rel in items]
    return found


def format_table(violations: list[Violation]) -> str:
    rows = [("id", "check", "detail")] + [(v.id, v.check, v.detail) for v in violations]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    lines.insert(1, f"{'-' * w0}  {'-' * w1}  {'-' * 6}")
    return "\n".join(lines)


def _call(fn, cfg: Config, job: tuple):
    return fn(cfg, *job)


def run(cfg: Config, executor: Executor = LOCAL) -> Report:
    layout = cfg.layout
    require_root(layout.root, "--root_dir")
    if cfg.min_clips < 1:
        raise UsageError(f"--min_clips must be >= 1, got {cfg.min_clips}")
    all_normal = layout.item_ids(layout.normal_annotations_dir, ".json")
    if not all_normal:
        raise UsageError(f"no normal annotations in {layout.normal_annotations_dir}: run preprocess.py first")
    all_shuffled = layout.item_ids(layout.shuffled_annotations_dir, ".json")
    normal_ids, shuffled_ids = all_normal[:cfg.limit or None], all_shuffled[:cfg.limit or None]
    cfg = replace(cfg, source_root=verify.resolve_source_root(layout, cfg.source_root))
    stage = StageRun(STAGE, layout, cfg.options())
    violations: list[Violation] = []
    results: dict[str, dict[str, Checked]] = {"normal": {}, "shuffled": {}}
    internal = StageRun(STAGE, layout, {})  # only collects what stage.succeeded turns into rejects
    record = load_record(layout)   # what filter_corrupted verified against the sources
    for kind, ids, fn in (("normal", normal_ids, check_normal), ("shuffled", shuffled_ids, check_shuffled)):
        jobs = [(i, record.get(i, {})) for i in ids] if kind == "normal" else [(i,) for i in ids]
        checked = pmap(partial(_call, fn, cfg), jobs, executor, desc=f"{STAGE} ({kind})", unit="item")
        for item_id, res in internal.succeeded(ids, checked):
            results[kind][item_id] = res
            violations += res.violations
            if res.content:
                stage.counts[f"normal videos' frames checked by {res.content}"] += 1
        # a check that crashed is a bug, not a verdict: it must not pass for a clean item
        violations += [Violation(r.id, r.reason, r.detail, kind=kind) for r in internal.rejects]
        internal.rejects.clear()
        stage.counts[f"{kind} annotations checked"] = len(ids)

    # files no annotation claims (filter_corrupted moves them; here they are only reported)
    for vid in sorted(set(layout.item_ids(layout.normal_videos_dir, ".mp4")) - set(all_normal)):
        rel = layout.rel(layout.normal_video(vid))
        violations.append(Violation(vid, "video without annotation", f"{rel} has no annotation", rel, "video"))
    # a shuffled video whose annotation is not written yet is shuffle_clips' unfinished item (its annotation,
    # written last, marks an item done): its next run (after this stage in setup_dataset.sh) redoes it
    unfinished = set(layout.item_ids(layout.shuffled_videos_dir, ".mp4")) - set(all_shuffled)
    if unfinished:
        stage.counts["unfinished shuffles (shuffle_clips redoes them)"] = len(unfinished)
        log.info("%d shuffled videos without annotation (e.g. %s): unfinished, shuffle_clips.py redoes them",
                 len(unfinished), layout.rel(layout.shuffled_video(min(unfinished))))
    violations += cross_checks(results["normal"], results["shuffled"], layout)
    violations.sort(key=lambda v: (v.id, v.check, v.detail))

    for v in violations:
        stage.reject(v.id, v.check, v.detail, v.source)
    bad = {(v.kind, v.id) for v in violations}
    n_items = len(normal_ids) + len(shuffled_ids)
    n_ok = sum(1 for kind in results for i in results[kind] if (kind, i) not in bad)
    stage.counts["violations"] = len(violations)
    if violations:
        print(format_table(violations))
        summary = f"{len(violations)} violations in {len(bad)} items; {n_ok} of {n_items} annotations pass"
    else:
        summary = f"all checks pass: {len(normal_ids)} normal and {len(shuffled_ids)} shuffled annotations"
    stats = stage.finish(n_items, n_ok, summary)
    return Report(violations, stats)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="final_assertions.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root_dir", required=True, help="output root_dir of preprocess.py (and shuffle_clips.py)")
    Config.add_arguments(p)
    add_shuffled_dir_args(p)
    add_common_args(p, seed_help=NO_SEED_HELP, overwrite_help="no effect: this stage only reads")
    return p


def main(argv: Optional[list] = None) -> int:
    return cli(lambda a: 0 if run(Config.from_args(a), executor_from_args(a)).ok else 1, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
