"""Stage 1: a source (FineVideo by default; --source) -> normal videos and annotations.

Reads the metadata of every video (json column only), plans clips as the published method does
(scene activity spans, first 105 s, >= 2 clips), ranks usable videos by a seeded hash of their id,
and processes them in that order until ``--scale`` succeed: each chosen video's mp4 is read alone,
encoded once (keyframes at every clip start), optionally cut into clip files by stream copy, and
its annotation written last (its presence marks the video done; a rerun resumes).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, fields
from functools import partial
from fractions import Fraction
from pathlib import Path
from typing import Optional

from timewarp.core.errors import ItemError, UsageError
from timewarp import sources
from timewarp.sources.base import ClipOptions, ScanProblem, Source, describe_skips
from timewarp.core.layout import Layout
from timewarp.core.parallel import LOCAL, Executor, pmap
from timewarp.core.runrecord import check_selection, remove_shuffled
from timewarp.core.schema import Clip, NormalAnnotation, SourceVideo
from timewarp.core.splits import rank_key, split_of
from timewarp.core.stage import StageConfig, StageRun, add_common_args, cli, executor_from_args, option
from timewarp.core.store import remove_stale_temp, write_json
from timewarp.sources.timestamps import SNAP_TOLERANCE, frame_to_time, time_to_frame
from timewarp.media.video import (EncodeSettings, FramesDiffer, VideoInfo, concat_copy, encode_normal, ffmpeg_exe,
                            output_size, probe, regular_part)
from timewarp.media import smartcut, verify

log = logging.getLogger(__name__)

STAGE = "preprocess"
ENGINES = ("one-encode", "smartcut")


@dataclass(frozen=True, kw_only=True)
class Config(StageConfig):
    """Preprocess's options; ``layout`` is the output (--save_dir), ``root_dir`` the input of ``source``."""

    root_dir: Path
    source: str = option(sources.DEFAULT, "what --root_dir holds (docs/sources.md): finevideo (parquet shards, "
                         "videos/+metadata/, mp4+json pairs, one .parquet file, or hf://datasets/OWNER/NAME), "
                         "activitynet (ActivityNet Captions JSON files + <key>.mp4|.mkv|.webm videos below), "
                         "captions (videos each with a same-name .srt, .vtt or .json caption file)",
                         choices=tuple(sources.REGISTRY))
    scale: int = option(help="number of usable source videos to take", type=int)
    # clips (defaults reproduce the published method): the fields of finevideo.ClipOptions
    max_seconds: float = option(ClipOptions.max_seconds,
                                "use only the first N seconds: reading stops at the first clip ending later")
    min_clips: int = option(ClipOptions.min_clips, "keep a video only with at least this many clips")
    max_clips: Optional[int] = option(ClipOptions.max_clips, "take at most this many clips per video (none: no limit)",
                                      type=int)
    min_clip_seconds: float = option(ClipOptions.min_clip_seconds,
                                     "skip clips shorter than this (0: only empty spans are skipped)")
    duration_tolerance: float = option(2.0, "clamp a clip that ends at most this many seconds past the real video "
                                            "end; drop it beyond")
    test_fraction: float = option(0.1, "fraction of videos in the held-out test split, by a stable hash of the id")
    # video encoding (one libx264 encode per video): video.EncodeSettings
    max_height: Optional[int] = option(EncodeSettings.max_height, "scale videos taller than this down (none: keep size)",
                                       type=int)
    keep_audio: bool = option(EncodeSettings.keep_audio,
                              "keep the first audio track, as AAC (off: no audio, as published)")
    preset: str = option(EncodeSettings.preset, "x264 preset of every encoded frame (encoded without B-frames)")
    crf: int = option(EncodeSettings.crf, "x264 quality, lower is better")
    x264_threads: int = option(EncodeSettings.threads, "encoder threads per video; fixed so output bytes do not "
                               "depend on --workers; parallelism comes from --workers, one video per core")
    engine: str = option("smartcut", "smartcut: stream-copy the source's H.264 GOPs and re-encode only from each cut "
                         "to the next source keyframe (a source it cannot copy safely, e.g. not H.264, rotated or "
                         "resized, falls back to one-encode, counted in stats/preprocess.json; docs/smartcut.md); "
                         "one-encode: decode and encode every frame once (uniform --preset/--crf quality)",
                         choices=ENGINES)
    write_clips: bool = option(False, "also write each clip as normal/clips/<id>/<k>.mp4 (stream copy)")

    def __post_init__(self):
        sources.source_class(self.source)  # UsageError naming the known sources
        if self.scale <= 0:
            raise UsageError(f"--scale must be positive, got {self.scale}")
        if self.engine not in ENGINES:
            raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if not 0.0 <= self.test_fraction <= 1.0:
            raise UsageError(f"--test_fraction must be in [0, 1], got {self.test_fraction}")

    @property
    def clip(self) -> ClipOptions:
        return ClipOptions(**{f.name: getattr(self, f.name) for f in fields(ClipOptions)})

    @property
    def encode(self) -> EncodeSettings:
        return EncodeSettings(self.preset, self.crf, self.max_height, self.keep_audio, threads=self.x264_threads)

    def options(self) -> dict:
        return {**super().options(), "save_dir": str(self.layout.root)}

    def dataset(self) -> Source:
        """The input as a source (cheap: nothing is read until ``scan``/``open``)."""
        return sources.open_source(self.source, self.root_dir, exclude=self.layout.root.resolve(),
                                   cache_dir=sources.cache_dir(self.layout))


def _cut(lo: int, hi: int, keep: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """[lo, hi) minus the spans in ``keep`` (sorted, disjoint)."""
    out, pos = [], lo
    for a, b in keep:
        if b <= pos or a >= hi:
            continue
        if a > pos:
            out.append((pos, a))
        pos = max(pos, b)
    if pos < hi:
        out.append((pos, hi))
    return out


def plan_frames(sv: SourceVideo, fps, frame_count: int, duration_tolerance: float,
                min_clips: int) -> tuple[list[Clip], Counter, list[list[int]]]:
    """Clips in frames, and the source frame ranges that make the normal video.

    Source frame k (at k/fps, checked by ``probe``) belongs to a clip when start <= k/fps < end
    (times snapped to frames). A clip ending past the real video end is clamped when it overshoots
    by at most ``duration_tolerance`` seconds (FineVideo's last scene ends near floor(duration) +- 2 s),
    else it and every later clip are dropped. Clips that overlap the previous one are skipped.

    The normal video is source frames [0, end of the last clip) minus every annotated scene that
    gave no clip (from its earliest to its latest stated time, both included; frames of kept clips
    are never cut): the questions treat kept clips as adjacent, so a dropped scene must not play
    between them. Un-annotated gaps stay, as published. Returns (clips with normal-video frames,
    skip counts, source ranges [a, b)).
    """
    skipped: Counter = Counter()
    kept: list[tuple[int, int, object]] = []
    cuts: list[tuple[float, float]] = [(d.start, d.end) for d in sv.dropped if d.start is not None]
    duration = frame_count / fps
    prev_end = 0
    for span in sv.spans:
        a, b = time_to_frame(span.start, fps), time_to_frame(span.end, fps)
        if b > frame_count:
            if a >= frame_count or span.end - float(duration) > duration_tolerance:
                skipped["clip past the real video end"] += 1
                break
            b = frame_count
        if a < prev_end:
            skipped["overlaps the previous clip"] += 1
            cuts.append((span.start, span.end))
            continue
        if b <= a:
            skipped["shorter than one frame"] += 1
            cuts.append((span.start, span.end))
            continue
        kept.append((a, b, span))
        prev_end = b
    if len(kept) < min_clips:
        raise ItemError(f"fewer than {min_clips} clips inside the real video",
                        f"{len(kept)} clip(s), video is {float(duration):.3f}s; {describe_skips(skipped)}")
    end = kept[-1][1]
    clip_frames = [(a, b) for a, b, _ in kept]
    removed: list[tuple[int, int]] = []
    for s, e in cuts:
        lo = time_to_frame(s, fps)
        hi = min(end, int((Fraction(e) + SNAP_TOLERANCE) * fps) + 1)   # the frame at the stated end too
        removed += _cut(lo, hi, clip_frames)
    ranges = [[a, b] for a, b in _cut(0, end, _merge(removed))]
    clips = []
    for a, b, span in kept:
        na = a - sum(max(0, min(b2, a) - a2) for a2, b2 in _merge(removed))
        nb = na + (b - a)
        clips.append(Clip(len(clips), frame_to_time(na, fps), frame_to_time(nb, fps), na, nb, span.caption,
                          meta_start=span.start, meta_end=span.end, source_start_frame=a, source_end_frame=b))
    return clips, skipped, ranges


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def remove_item(layout: Layout, vid: str) -> None:
    """Remove one video's outputs, annotation (the done marker) first: an item is whole or absent."""
    for path in (layout.normal_annotation(vid), layout.normal_video(vid), layout.reference_file(vid)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    shutil.rmtree(layout.clip_dir(vid), ignore_errors=True)


def process_video(cfg: Config, sv: SourceVideo) -> dict:
    """Encode one video and write its annotation; returns counts for the stats (skipped clips, engine).

    Whatever an earlier run left for this id (an --overwrite, a crash after the encode) is removed
    first, and a failure (ItemError) removes what this run wrote: no stale clip files, no video
    without annotation.
    """
    layout = cfg.layout
    remove_item(layout, sv.id)
    layout.tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"src-{sv.id[:40]}-", suffix=Path(sv.ref.path).suffix if sv.ref.kind == "files" else ".mp4",
                                dir=layout.tmp_dir)
    os.close(fd)
    tmp_src = Path(name)   # scratch for bytes that are not a file of their own (a parquet value)
    try:
        src = cfg.dataset().open(sv.ref, tmp_src)
        # read only as far as the clips can reach (FineVideo videos run minutes past --max_seconds)
        until = max(sp.end for sp in sv.spans) + cfg.duration_tolerance + 1.0
        try:  # frame times from the packets when they say what decoding would (no decode pass)
            return _write_item(cfg, sv, src, probe(src, until=until, packets=True))
        except FramesDiffer as exc:  # a packet that does not decode: decode for the frames' real times
            log.info("%s: %s; probing by decoding", sv.id, exc.detail)
            remove_item(layout, sv.id)
            return _write_item(cfg, sv, src, probe(src, until=until))
    except ItemError as exc:
        remove_item(layout, sv.id)  # name the input, not our scratch copy of it (whose name is random)
        raise ItemError(exc.reason, exc.detail.replace(str(tmp_src), sv.ref.label())) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_src.unlink()


def _write_item(cfg: Config, sv: SourceVideo, src: Path, info: VideoInfo) -> dict:
    """Plan the clips on ``info``'s frame times, write the normal video (and clips) and the annotation."""
    layout = cfg.layout
    info = regular_part(info, max(sp.end for sp in sv.spans))  # an irregularity where clips are: ItemError
    clips, skipped, ranges = plan_frames(sv, info.fps, info.frame_count, cfg.duration_tolerance,
                                         cfg.clip.min_clips)
    n_frames = clips[-1].end_frame
    width, height = output_size(info.width, info.height, cfg.encode.max_height)
    video = layout.normal_video(sv.id)
    skipped = Counter(sv.skipped) + skipped
    ann = NormalAnnotation(
        id=sv.id, source_id=sv.source_id, source_file=cfg.dataset().source_file(sv.ref),
        source_row=sv.ref.row, source_json=sv.json_name, split=split_of(sv.source_id, cfg.test_fraction),
        video=layout.rel(video), fps=round(float(info.fps), 6),
        fps_rational=f"{info.fps.numerator}/{info.fps.denominator}", frame_count=n_frames,
        duration=frame_to_time(n_frames, info.fps), width=width, height=height,
        source_duration=round(info.container_duration or info.duration, 6), title=sv.title,
        category=sv.category, clips=clips, source_ranges=ranges, skipped=dict(sorted(skipped.items())),
        warnings=list(sv.warnings))
    used = smartcut.try_engine(cfg.engine, src, video, info, n_frames, clips, cfg.encode, ranges,
                               reference=_reference_request(cfg, ann, src))
    if used["engine"] != "smartcut":
        encode_normal(src, video, info.fps, n_frames, [c.start_frame for c in clips],
                      info.width, info.height, cfg.encode, ranges=ranges, start_time=info.start_time,
                      expect_times=None if info.decoded else [info.start_time + t for t in info.times])
    if cfg.write_clips:
        layout.clip_dir(sv.id).mkdir(parents=True, exist_ok=True)
        concat_copy(video, info.fps, [(layout.clip_video(sv.id, c.index), [(c.start_frame, c.end_frame)])
                                      for c in clips], keep_audio=cfg.encode.keep_audio)
    write_json(layout.normal_annotation(sv.id), ann.to_dict())
    return {"skipped": dict(skipped), "clips": len(clips), "warnings": len(sv.warnings),
            "cut_frames": clips[-1].source_end_frame - n_frames, **used}


def _reference_request(cfg: Config, ann: NormalAnnotation, src: Path):
    """(what the content pass will decode of this source, where to keep it) for the smart-cut engine's decode to
    write the check's reference decode; None when the engine is not smart-cut or the source's packets do not read
    (the check then decodes the source itself, and names what is wrong)."""
    if cfg.engine != "smartcut" or min(ann.width, ann.height) < 2:   # (a frame smaller than 2x2 is no smart cut)
        return None
    try:
        return verify.source_decode(ann, src, (ann.width, ann.height))[1], cfg.layout.reference_file(ann.id)
    except ItemError:
        return None
    except Exception as exc:  # noqa: BLE001 - a bug here must cost the check a decode, not the video
        log.warning("%s: no reference decode for the check: %r", ann.id, exc)
        return None


def select_candidates(source: Source, seed: int, clip: ClipOptions,
                      stage: StageRun) -> tuple[list[SourceVideo], int]:
    """Usable videos ranked by a seeded hash of their id; returns (ranked, records seen).

    Unusable metadata and duplicate ids become rejects. Reads only metadata.
    """
    by_id: dict[str, SourceVideo] = {}
    seen = 0
    for sv in source.scan(clip):
        seen += 1
        if isinstance(sv, ScanProblem):
            stage.reject(sv.id, sv.reason, sv.detail, sv.source)
            continue
        ref = sv.ref
        if sv.source_id in by_id:
            stage.reject(sv.id, "duplicate video id", f"also at {by_id[sv.source_id].ref.label()}", ref.label())
            continue
        by_id[sv.source_id] = sv
    ranked = sorted(by_id.values(), key=lambda v: (rank_key(seed, v.source_id), v.source_id))
    return ranked, seen


def run(cfg: Config, executor: Executor = LOCAL) -> dict:
    source = cfg.dataset()
    source.check("--root_dir")
    ffmpeg_exe()
    layout = cfg.layout
    try:
        layout.normal_annotations_dir.mkdir(parents=True, exist_ok=True)
        layout.normal_videos_dir.mkdir(parents=True, exist_ok=True)
        probe_file = layout.root / ".write-test"
        probe_file.write_text("ok")
        probe_file.unlink()
    except OSError as exc:
        raise UsageError(f"--save_dir {layout.root} is not writable: {exc.strerror or exc}")
    layout.check_inside(layout.normal_annotations_dir, layout.normal_videos_dir, layout.normal_clips_dir,
                        layout.tmp_dir)  # an item's old outputs and scratch copies are removed there
    remove_stale_temp(layout.root)
    stage = StageRun(STAGE, layout, cfg.options())
    # what decides which videos and clips are chosen: another value would mix two datasets in save_dir
    selection = dict(source=cfg.source, root_dir=source.key(), seed=cfg.seed, test_fraction=cfg.test_fraction,
                     duration_tolerance=cfg.duration_tolerance, **vars(cfg.clip))
    if check_selection(layout, cfg.scale, selection, cfg.overwrite):
        for vid in sorted(set(layout.normal_ids()) | set(layout.item_ids(layout.normal_videos_dir, ".mp4"))):
            remove_item(layout, vid)
        remove_shuffled(layout)
    ranked, seen = select_candidates(source, cfg.seed, cfg.clip, stage)
    if seen == 0:
        raise UsageError(source.empty_message())
    target = min(cfg.scale, cfg.limit) if cfg.limit else cfg.scale
    done, pos = 0, 0
    while done < target and pos < len(ranked):
        batch = ranked[pos:pos + target - done]
        pos += len(batch)
        todo = []
        for sv in batch:
            if (not cfg.overwrite and layout.normal_annotation(sv.id).is_file()
                    and layout.normal_video(sv.id).is_file()):
                stage.counts["already done"] += 1
                done += 1
            else:
                todo.append(sv)
        results = pmap(partial(process_video, cfg), todo, executor, desc=STAGE)
        for _, res in stage.succeeded([sv.id for sv in todo], results, [sv.ref.label() for sv in todo]):
            done += 1
            stage.counts["clips"] += res["clips"]
            for k, v in res["skipped"].items():
                stage.counts[f"clips skipped: {k}"] += v
            for key, n in (("warnings (repairs in kept videos)", res["warnings"]),
                           ("frames cut (scenes that gave no clip)", res["cut_frames"])):
                if n:
                    stage.counts[key] += n
            smartcut.count(stage.counts, res)
    with contextlib.suppress(OSError):
        layout.tmp_dir.rmdir()
    stage.extra.update(requested=cfg.scale, usable_candidates=len(ranked), records_seen=seen)
    short = f" (only {done} usable of {cfg.scale} requested: the data has no more)" if done < target else ""
    stats = stage.finish(pos, done, f"{done} videos ready in {layout.normal_dir}{short}")
    if done == 0:
        raise UsageError(f"no usable videos under {cfg.root_dir}; reasons in {layout.rejects_file(STAGE)}")
    return stats


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="preprocess.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root_dir", required=True, help="the input: a folder (or one .parquet file, or an hf:// path) of the --source dataset")
    p.add_argument("--save_dir", required=True, help="output root_dir shared by all stages")
    Config.add_arguments(p, "clips and video encoding (defaults reproduce the published method)")
    add_common_args(p)
    return p


def main(argv: Optional[list] = None) -> int:
    return cli(lambda a: run(Config.from_args(a, layout=Layout(Path(a.save_dir))), executor_from_args(a)),
               build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
