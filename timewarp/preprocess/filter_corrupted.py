"""Stage 2: verify every normal item's frames against its source; move what fails into quarantine.

For each id under normal/ the annotation must parse (schema, id = file name), and its normal video
must show, frame by frame, the source frames its annotation names (``timewarp/media/verify.py``: the
source decoded once to just past its last used frame, any decoder error there a reject; copied
packets compared by their bytes, every other frame decoded and compared by pixels; the clips'
metadata times checked against the source's decoded frame times); each clip file under
normal/clips/<id>/ must be the normal video's packets of its clip, byte for byte. Without a
reachable source (--source_root '') the normal video is only decoded whole. An item that fails, a
video without annotation, an annotation without video and a clip folder without annotation are
moved, with the id's shuffled outputs if any, to quarantine/filter_corrupted/ under their own
relative paths, and each gets one reject with its reason in rejects/filter_corrupted.jsonl.

Resume: files that passed are recorded (size, mtime and whether the source was compared) in
state/filter_corrupted.json; a rerun does not check them again while they are unchanged
(--overwrite checks everything again). final_assertions reads the same record.
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Optional

from timewarp.media import verify
from timewarp.core.errors import ItemError, UsageError
from timewarp.core.layout import Layout, split_shuffled_id
from timewarp.core.parallel import LOCAL, Executor, pmap
from timewarp.core.schema import NormalAnnotation
from timewarp.core.stage import (NO_SEED_HELP, StageConfig, StageRun, add_common_args, add_shuffled_dir_args, cli,
                            executor_from_args, log, option, require_root)
from timewarp.core.checkpoints import checkpoint
from timewarp.core.store import read_json, write_json
from timewarp.media.video import ffmpeg_exe

STAGE = "filter_corrupted"
RECORD_VERSION = 2   # 2: a file's stamp is [size, mtime_ns, the source it was checked against] (verify.py)
CHECKPOINT_SECONDS = 30.0


def subdirs(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    return {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}


def check_annotation(layout: Layout, vid: str) -> NormalAnnotation:
    """The parsed annotation of ``vid``; ItemError naming what is wrong with it."""
    path = layout.normal_annotation(vid)
    try:
        data = read_json(path)
    except OSError as exc:
        raise ItemError("annotation unreadable", f"{layout.rel(path)}: {exc.strerror or exc}")
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ItemError("annotation is not valid JSON", f"{layout.rel(path)}: {exc}")
    try:
        ann = NormalAnnotation.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise ItemError("annotation does not match the schema", f"{layout.rel(path)}: {exc}")
    if ann.id != vid:
        raise ItemError("annotation id differs from its file name", f"{layout.rel(path)}: id is {ann.id!r}")
    return ann


@dataclass(frozen=True, kw_only=True)
class Config(StageConfig):
    """root_dir (with the shuffled folder names), --source_root, --limit, --overwrite."""
    source_root: Optional[str] = option(None, verify.SOURCE_ROOT_HELP)


@dataclass(frozen=True)
class Checked:
    """What ``verify_item`` found for one id: its decode counters and either the files it verified
    (rel path -> [size, mtime_ns]) or the problem that sends the id to quarantine.

    A corrupted item is this stage's finding, not a failure of the check: the run moves its files
    before recording the reject (with where they went), so the verdict is a value, not an ItemError.
    """

    counts: dict
    verified: dict
    problem: Optional[tuple[str, str, str]] = None     # (reason, detail, failing file rel to root)


def stat_key(path: Path, source: str = "") -> list:
    """[size, mtime_ns, ``source``]: ``source`` is ``verify.source_stamp`` of what the file was checked
    against ('' = nothing: decoded alone, or a copy checked against the normal video)."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, source]


def is_verified(before: Optional[list], now: list) -> bool:
    """A recorded check still holds: same size and mtime, checked against the same source (unchanged), if any."""
    return isinstance(before, list) and len(before) == 3 and before[:2] == now[:2] and now[2] in ("", before[2])


def verify_item(cfg: Config, job: tuple[str, dict]) -> Checked:
    """Check one id that has both annotation and video; ``job`` = (id, its files verified by an earlier run)."""
    vid, verified_before = job
    layout = cfg.layout
    counts = {"videos verified": 0, "videos already verified": 0, "clip files verified": 0,
              "clip files already verified": 0, "frames proven by packet bytes": 0,
              "frames compared by pixels": 0, "source frames decoded": 0,
              "sources from preprocess's reference decode": 0, "videos without a reachable source": 0}
    source = layout.rel(layout.normal_annotation(vid))
    try:
        ann = check_annotation(layout, vid)
        video, clip_dir = layout.normal_video(vid), layout.clip_dir(vid)
        stamp = verify.source_stamp(ann, cfg.source_root, cfg.layout)
        verified = {layout.rel(video): stat_key(video, stamp)}
        clips = [(clip_dir / f"{k}.mp4", k) for k in layout.item_ids(clip_dir, ".mp4")]
        verified.update({layout.rel(p): stat_key(p) for p, _ in clips})
        rel = source = layout.rel(video)
        again = cfg.overwrite or not is_verified(verified_before.get(rel), verified[rel])
        if not again:
            counts["videos already verified"] += 1
        else:
            with verify.open_source(ann, cfg.source_root, cfg.layout) as found:
                try:
                    res = verify.verify_normal(ann, video, *(found or (None, "")), rel=rel,
                                               reference=layout.reference_file(vid))
                except ItemError as exc:
                    raise ItemError(exc.reason, exc.detail.replace(str(video), rel) or rel)
            if found is None:
                verified[rel][2] = ""
            counts["videos verified"] += 1
            counts["videos without a reachable source"] += found is None
            counts["frames proven by packet bytes"] += res.by_bytes
            counts["frames compared by pixels"] += res.by_pixels
            counts["source frames decoded"] += res.source_frames_decoded
            counts["sources from preprocess's reference decode"] += res.reference
        by_index = {str(c.index): c for c in ann.clips}
        normal_packets = None
        for path, k in clips:
            rel = source = layout.rel(path)
            if not again and is_verified(verified_before.get(rel), verified[rel]):  # (its normal video unchanged)
                counts["clip files already verified"] += 1
                continue
            if k not in by_index:
                raise ItemError("clip file without clip", f"{rel} names no clip of the annotation")
            c = by_index[k]
            try:
                normal_packets = normal_packets or verify.read_packets(video)
                verify.verify_copy(video, path, [(c.start_frame, c.end_frame)], rel, normal_packets)
            except ItemError as exc:
                raise ItemError("clip: " + exc.reason, exc.detail.replace(str(path), rel) or rel)
            counts["clip files verified"] += 1
        return Checked(counts, verified)
    except ItemError as exc:
        return Checked(counts, {}, (exc.reason, exc.detail, source))
    finally:  # preprocess's reference decode served its one check (a cache: a later check decodes the source)
        with contextlib.suppress(FileNotFoundError):
            layout.reference_file(vid).unlink()


def shuffled_by_normal(layout: Layout, normal_ids: set[str]) -> dict[str, list[str]]:
    """Shuffled ids grouped by the normal id they come from (their annotation's normal_id, else their name)."""
    sids = set(layout.item_ids(layout.shuffled_annotations_dir, ".json")) | set(
        layout.item_ids(layout.shuffled_videos_dir, ".mp4"))
    out: dict[str, list[str]] = defaultdict(list)
    for sid in sorted(sids):
        nid = None
        try:
            data = read_json(layout.shuffled_annotation(sid))
            nid = data.get("normal_id") if isinstance(data, dict) else None
        except (OSError, ValueError):
            pass
        if not isinstance(nid, str):
            nid = sid if sid in normal_ids else split_shuffled_id(sid)[0]
        out[nid].append(sid)
    return out


def free_path(dst: Path) -> Path:
    """``dst``, or ``<stem>~<n><suffix>`` beside it if something was already quarantined there."""
    n = 0
    out = dst
    while out.exists() or out.is_symlink():
        n += 1
        out = dst.with_name(f"{dst.stem}~{n}{dst.suffix}")
    return out


def quarantine(layout: Layout, paths: list[Path]) -> list[str]:
    """Move the existing ``paths`` (files or folders inside root) to quarantine; return where they went."""
    moved = []
    for src in paths:
        if not (src.exists() or src.is_symlink()):
            continue
        layout.check_inside(src)
        dst = free_path(layout.quarantine_path(STAGE, src))
        layout.check_inside(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        checkpoint(f"before moving {src.name}")
        shutil.move(str(src), str(dst))
        moved.append(layout.rel(dst))
    return moved


def item_paths(layout: Layout, vid: str, shuffled: dict[str, list[str]]) -> list[Path]:
    """Everything of one id, in the order it is moved: what was made from the normal item first and its
    annotation last, so that a run interrupted between two moves leaves the item for the rerun to find
    (before, a Ctrl-C after the normal files left its shuffled item behind, and final_assertions failed)."""
    paths = []
    for sid in shuffled.get(vid, []):
        paths += [layout.shuffled_video(sid), layout.shuffled_annotation(sid)]
    return paths + [layout.clip_dir(vid), layout.normal_video(vid), layout.normal_annotation(vid)]


def load_record(layout: Layout) -> dict[str, dict]:
    """{id: {rel path: [size, mtime_ns]}} of files verified before; empty if absent or unreadable."""
    path = layout.state_file(STAGE)
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
        if data.get("version") == RECORD_VERSION and isinstance(data.get("verified"), dict):
            return data["verified"]
    except (OSError, ValueError, AttributeError):
        pass
    log.warning("%s is unreadable: every video is decoded again", path)
    return {}


def save_record(layout: Layout, record: dict[str, dict]) -> None:
    write_json(layout.state_file(STAGE), {"version": RECORD_VERSION,
                                          "verified": {k: record[k] for k in sorted(record)}})


def run(cfg: Config, executor: Executor = LOCAL) -> dict:
    layout = cfg.layout
    require_root(layout.root, "--root_dir")
    ann_ids = set(layout.item_ids(layout.normal_annotations_dir, ".json"))
    if not ann_ids:
        raise UsageError(f"no normal annotations in {layout.normal_annotations_dir}: run preprocess.py first")
    ffmpeg_exe()
    cfg = replace(cfg, source_root=verify.resolve_source_root(layout, cfg.source_root))
    video_ids = set(layout.item_ids(layout.normal_videos_dir, ".mp4"))
    clip_ids = subdirs(layout.normal_clips_dir)
    ids = sorted(ann_ids | video_ids | clip_ids)
    if cfg.limit:
        ids = ids[:cfg.limit]
    stage = StageRun(STAGE, layout, cfg.options())
    shuffled = shuffled_by_normal(layout, ann_ids)
    # any of these may be moved: refuse before moving anything if one leads out of root
    layout.check_inside(layout.quarantine_dir, layout.state_dir,
                        *(p for vid in ids for p in item_paths(layout, vid, shuffled)))
    old_record = load_record(layout)
    todo = set(ids)
    record = {k: v for k, v in old_record.items() if k in ann_ids and k in video_ids and k not in todo}

    def reject_and_move(vid: str, reason: str, detail: str, source: str) -> None:
        moved = quarantine(layout, item_paths(layout, vid, shuffled))
        stage.counts["ids quarantined"] += 1
        stage.counts["files quarantined"] += len(moved)
        stage.reject(vid, reason, f"{detail}; moved {', '.join(moved)}", source)

    jobs = []
    for vid in ids:
        ann, video = layout.normal_annotation(vid), layout.normal_video(vid)
        if vid not in ann_ids:
            found = video if vid in video_ids else layout.clip_dir(vid)
            reason = "video without annotation" if vid in video_ids else "clip folder without annotation"
            reject_and_move(vid, reason, f"no {layout.rel(ann)}", layout.rel(found))
        elif vid not in video_ids:
            reject_and_move(vid, "annotation without video", f"no {layout.rel(video)}", layout.rel(ann))
        else:
            jobs.append((vid, old_record.get(vid, {})))

    good = 0
    last_save = time.monotonic()
    results = pmap(partial(verify_item, cfg), jobs, executor, desc=STAGE)
    for vid, res in stage.succeeded([vid for vid, _ in jobs], results):
        for k, v in res.counts.items():
            stage.counts[k] += v
        if res.problem:
            reject_and_move(vid, *res.problem)
        else:
            good += 1
            record[vid] = res.verified
        if time.monotonic() - last_save > CHECKPOINT_SECONDS:
            save_record(layout, record)
            last_save = time.monotonic()
    save_record(layout, record)
    n_moved = stage.counts["ids quarantined"]
    where = f"; {n_moved} quarantined in {layout.quarantine_dir / STAGE}" if n_moved else ""
    return stage.finish(len(ids), good, f"{good} of {len(ids)} items verified{where}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="filter_corrupted.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root_dir", required=True, help="output root_dir of preprocess.py")
    Config.add_arguments(p)
    add_shuffled_dir_args(p)  # a quarantined id's shuffled outputs move along with it
    add_common_args(p, seed_help=NO_SEED_HELP,
                    overwrite_help="check every file again, even those verified unchanged before")
    return p


def main(argv: Optional[list] = None) -> int:
    return cli(lambda a: run(Config.from_args(a), executor_from_args(a)), build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
