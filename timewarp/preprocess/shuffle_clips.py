"""Stage 4: one (or more) non-identity permutation of each video's clips, as a shuffled video.

The permutation comes from an RNG seeded by ``--seed`` and the video id (same result whatever
``--workers`` is). The shuffled video is one concat-demuxer stream copy of the normal video's clip
frame spans in permuted order (gaps dropped): no re-encode, frame-identical to the normal video.
The shuffled annotation records the permutation, each clip's source index and its start/end on
the shuffled timeline; it is written after the video, so its presence marks the item done.
"""
from __future__ import annotations

import argparse
import contextlib
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from timewarp.errors import ItemError, UsageError
from timewarp.layout import Layout, shuffled_id, split_shuffled_id
from timewarp.parallel import pmap
from timewarp.schema import NormalAnnotation, ShuffledAnnotation, ShuffledClip
from timewarp.splits import item_seed
from timewarp.stage import StageRun, add_common_args, add_shuffled_dir_args, cli, layout_from_args, require_root
from timewarp.store import read_json, remove_stale_temp, write_json
from timewarp.timestamps import frame_to_time, parse_rate
from timewarp.video import concat_copy, ffmpeg_exe

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


@dataclass(frozen=True)
class Config:
    root: str
    seed: int
    permutations: int
    keep_audio: bool
    overwrite: bool
    layout_names: tuple


def shuffle_video(job: tuple[str, Config]) -> dict:
    vid, cfg = job
    layout = Layout(Path(cfg.root), *cfg.layout_names)
    try:
        try:
            ann = NormalAnnotation.from_dict(read_json(layout.normal_annotation(vid)))
        except (OSError, ValueError) as exc:
            raise ItemError("annotation does not parse", f"{layout.normal_annotation(vid)}: {exc}")
        video = layout.root / ann.video
        if not video.is_file():
            raise ItemError("normal video missing", str(video))
        if len(ann.clips) < 2:
            raise ItemError("fewer than 2 clips", f"{len(ann.clips)} clip(s)")
        perms = draw_permutations(len(ann.clips), cfg.permutations, cfg.seed, ann.id)
        shuffled = [shuffled_annotation(ann, p, k, cfg.seed, layout) for k, p in enumerate(perms)]
        remove_extra_shuffles(layout, vid, len(shuffled))
        if not cfg.overwrite and all(is_done(layout, s) for s in shuffled):
            return {"id": vid, "ok": True, "skipped": True, "count": len(shuffled)}
        layout.shuffled_videos_dir.mkdir(parents=True, exist_ok=True)
        concat_copy(video, parse_rate(ann.fps_rational),
                    [(layout.shuffled_video(s.id), [(ann.clips[i].start_frame, ann.clips[i].end_frame) for i in s.permutation])
                     for s in shuffled], keep_audio=cfg.keep_audio)
        for s in shuffled:
            write_json(layout.shuffled_annotation(s.id), s.to_dict())
        return {"id": vid, "ok": True, "skipped": False, "count": len(shuffled)}
    except ItemError as exc:
        return {"id": vid, "ok": False, "reason": exc.reason, "detail": exc.detail}


def run(root_dir, *, seed: int = 42, workers: int = 1, limit: Optional[int] = None, overwrite: bool = False,
        permutations_per_video: int = 1, keep_audio: bool = False, layout: Optional[Layout] = None) -> dict:
    root = require_root(root_dir, "--root_dir")
    layout = layout or Layout(root)
    if permutations_per_video < 1:
        raise UsageError(f"--permutations_per_video must be >= 1, got {permutations_per_video}")
    ids = layout.normal_ids()
    if not ids:
        raise UsageError(f"no normal annotations in {layout.normal_annotations_dir}: run preprocess.py first")
    ffmpeg_exe()
    if limit:
        ids = ids[:limit]
    layout.check_inside(layout.shuffled_annotations_dir, layout.shuffled_videos_dir)  # earlier shuffles are replaced
    remove_stale_temp(layout.root)
    stage = StageRun(STAGE, layout, dict(root_dir=root, seed=seed, workers=workers, limit=limit, overwrite=overwrite,
                                         permutations_per_video=permutations_per_video, keep_audio=keep_audio))
    cfg = Config(str(layout.root), seed, permutations_per_video, keep_audio, overwrite,
                 (layout.shuffled_dir_name, layout.shuffled_annotation_dir_name, layout.shuffled_video_dir_name))
    layout.shuffled_annotations_dir.mkdir(parents=True, exist_ok=True)
    out = 0
    for _, res in stage.succeeded(ids, pmap(shuffle_video, [(v, cfg) for v in ids], workers, desc=STAGE)):
        out += 1
        stage.counts["shuffled videos"] += res["count"]
        if res["skipped"]:
            stage.counts["already done"] += 1
    return stage.finish(len(ids), out, f"{stage.counts['shuffled videos']} shuffled videos of {out} videos "
                                         f"in {layout.shuffled_dir}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shuffle_clips.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root_dir", required=True, help="output root_dir of preprocess.py")
    p.add_argument("--permutations_per_video", type=int, default=1,
                   help="distinct non-identity permutations per video; the k-th (k >= 1) is named <id>__p<k> (default: 1)")
    p.add_argument("--keep_audio", action="store_true", help="copy the audio track too, if the normal video has one")
    add_shuffled_dir_args(p)
    add_common_args(p)
    return p


def main(argv: Optional[list] = None) -> int:
    return cli(lambda a: run(a.root_dir, seed=a.seed, workers=a.workers, limit=a.limit, overwrite=a.overwrite,
                             permutations_per_video=a.permutations_per_video, keep_audio=a.keep_audio,
                             layout=layout_from_args(a)),
               build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
