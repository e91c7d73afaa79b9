"""Stage 4: one (or more) non-identity permutation of each video's clips, as a shuffled video.

The permutation comes from an RNG seeded by ``--seed`` and the video id (same result whatever
``--workers`` is). The shuffled video is one concat-demuxer stream copy of the normal video's clip
frame spans in permuted order (gaps dropped): no re-encode, frame-identical to the normal video
(checked packet by packet against it before the annotation is written).
The shuffled annotation records the permutation, each clip's source index and its start/end on
the shuffled timeline; it is written after the video, so its presence marks the item done.
"""
from __future__ import annotations

import argparse
import contextlib
import random
import sys
from dataclasses import dataclass
from functools import partial
from typing import Optional

from timewarp.media import verify
from timewarp.core.errors import ItemError, UsageError
from timewarp.core.layout import Layout, shuffled_id, split_shuffled_id
from timewarp.core.parallel import LOCAL, Executor, pmap
from timewarp.core.schema import NormalAnnotation, ShuffledAnnotation, ShuffledClip
from timewarp.core.splits import item_seed
from timewarp.core.stage import (StageConfig, StageRun, add_common_args, add_shuffled_dir_args, cli, executor_from_args,
                            option, require_root)
from timewarp.core.store import read_json, remove_stale_temp, write_json
from timewarp.sources.timestamps import frame_to_time, parse_rate
from timewarp.media.video import concat_copy, ffmpeg_exe

STAGE = "shuffle_clips"
MAX_DRAWS = 1000


def draw_permutations(n: int, count: int, seed: int, key: str) -> list[list[int]]:
    """``count`` distinct non-identity permutations of range(n) (fewer if n! - 1 < count)."""
    rng = random.Random(item_seed(seed, key))
    identity = list(range(n))
    perms: list[list[int]] = []
    for _ in range(MAX_DRAWS):
        if len(perms) >= count:
            break
        p = identity[:]
        rng.shuffle(p)
        if p != identity and p not in perms:
            perms.append(p)
    return perms


def shuffled_annotation(ann: NormalAnnotation, perm: list[int], k: int, seed: int, layout: Layout) -> ShuffledAnnotation:
    fps = parse_rate(ann.fps_rational)
    clips = []
    pos = 0
    for i, src in enumerate(perm):
        c = ann.clips[src]
        n = c.end_frame - c.start_frame
        clips.append(ShuffledClip(i, src, frame_to_time(pos, fps), frame_to_time(pos + n, fps), pos, pos + n,
                                  c.start, c.end, c.caption))
        pos += n
    sid = shuffled_id(ann.id, k)
    return ShuffledAnnotation(
        id=sid, normal_id=ann.id, source_id=ann.source_id, permutation_index=k, seed=seed, permutation=perm,
        split=ann.split, video=layout.rel(layout.shuffled_video(sid)), normal_video=ann.video, fps=ann.fps,
        fps_rational=ann.fps_rational, frame_count=pos, duration=frame_to_time(pos, fps), width=ann.width,
        height=ann.height, title=ann.title, category=ann.category, clips=clips)


def is_done(layout: Layout, s: ShuffledAnnotation) -> bool:
    """An earlier run wrote exactly this shuffle (same clips, same permutation) and its video.

    A rerun after preprocess --overwrite changed a video's clips must not keep the old shuffle.
    """
    try:
        old = read_json(layout.shuffled_annotation(s.id))
    except (OSError, ValueError):
        return False
    new = s.to_dict()
    same = isinstance(old, dict) and all(old.get(k) == v for k, v in new.items() if k != "merged_caption")
    return same and layout.shuffled_video(s.id).is_file()


def remove_extra_shuffles(layout: Layout, vid: str, count: int) -> None:
    """Drop shuffles <vid>__p<k>, k >= count, that an earlier run with more permutations made."""
    for path in layout.shuffled_annotations_dir.glob(f"{vid}__p*.json"):
        nid, k = split_shuffled_id(path.stem)
        if nid == vid and k >= count:
            for p in (path, layout.shuffled_video(path.stem)):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()


@dataclass(frozen=True, kw_only=True)
class Config(StageConfig):
    permutations_per_video: int = option(1, "distinct non-identity permutations per video; the k-th (k >= 1) is "
                                            "named <id>__p<k>")
    keep_audio: bool = option(False, "copy the audio track too, if the normal video has one")

    def __post_init__(self):
        if self.permutations_per_video < 1:
            raise UsageError(f"--permutations_per_video must be >= 1, got {self.permutations_per_video}")


@dataclass(frozen=True)
class Shuffled:
    """What ``shuffle_video`` did for one video: ``count`` shuffles, ``skipped`` if an earlier run made them all."""

    count: int
    skipped: bool


def shuffle_video(cfg: Config, vid: str) -> Shuffled:
    layout = cfg.layout
    try:
        ann = NormalAnnotation.from_dict(read_json(layout.normal_annotation(vid)))
    except (OSError, ValueError) as exc:
        raise ItemError("annotation does not parse", f"{layout.normal_annotation(vid)}: {exc}")
    video = layout.root / ann.video
    if not video.is_file():
        raise ItemError("normal video missing", str(video))
    if len(ann.clips) < 2:
        raise ItemError("fewer than 2 clips", f"{len(ann.clips)} clip(s)")
    perms = draw_permutations(len(ann.clips), cfg.permutations_per_video, cfg.seed, ann.id)
    shuffled = [shuffled_annotation(ann, p, k, cfg.seed, layout) for k, p in enumerate(perms)]
    remove_extra_shuffles(layout, vid, len(shuffled))
    if not cfg.overwrite and all(is_done(layout, s) for s in shuffled):
        return Shuffled(len(shuffled), skipped=True)
    layout.shuffled_videos_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(layout.shuffled_video(s.id), [(ann.clips[i].start_frame, ann.clips[i].end_frame) for i in s.permutation])
            for s in shuffled]
    concat_copy(video, parse_rate(ann.fps_rational), jobs, keep_audio=cfg.keep_audio)
    try:  # packet for packet the normal video's clips (verify.py; no decode)
        normal_packets = verify.read_packets(video)
        for path, spans in jobs:
            verify.verify_copy(video, path, spans, layout.rel(path), normal_packets)
    except ItemError:  # nothing of this video's shuffles is left to look done
        for sh in shuffled:
            layout.shuffled_video(sh.id).unlink(missing_ok=True)
            layout.shuffled_annotation(sh.id).unlink(missing_ok=True)
        raise
    for s in shuffled:
        write_json(layout.shuffled_annotation(s.id), s.to_dict())
    return Shuffled(len(shuffled), skipped=False)


def run(cfg: Config, executor: Executor = LOCAL) -> dict:
    layout = cfg.layout
    require_root(layout.root, "--root_dir")
    ids = layout.normal_ids()
    if not ids:
        raise UsageError(f"no normal annotations in {layout.normal_annotations_dir}: run preprocess.py first")
    ffmpeg_exe()
    if cfg.limit:
        ids = ids[:cfg.limit]
    layout.check_inside(layout.shuffled_annotations_dir, layout.shuffled_videos_dir)  # earlier shuffles are replaced
    remove_stale_temp(layout.root)
    stage = StageRun(STAGE, layout, cfg.options())
    layout.shuffled_annotations_dir.mkdir(parents=True, exist_ok=True)
    out = 0
    for _, res in stage.succeeded(ids, pmap(partial(shuffle_video, cfg), ids, executor, desc=STAGE)):
        out += 1
        stage.counts["shuffled videos"] += res.count
        if res.skipped:
            stage.counts["already done"] += 1
    if not cfg.limit:  # a video whose annotation was never written (an interrupted or failed item) is not output
        for sid in set(layout.item_ids(layout.shuffled_videos_dir, ".mp4")) - set(layout.shuffled_ids()):
            layout.shuffled_video(sid).unlink(missing_ok=True)
            stage.counts["unfinished shuffled videos removed"] += 1
    return stage.finish(len(ids), out, f"{stage.counts['shuffled videos']} shuffled videos of {out} videos "
                                         f"in {layout.shuffled_dir}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shuffle_clips.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root_dir", required=True, help="output root_dir of preprocess.py")
    Config.add_arguments(p)
    add_shuffled_dir_args(p)
    add_common_args(p)
    return p


def main(argv: Optional[list] = None) -> int:
    return cli(lambda a: run(Config.from_args(a), executor_from_args(a)), build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
