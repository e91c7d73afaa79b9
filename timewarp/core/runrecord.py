"""What decides which videos and clips a dataset holds, recorded in its output folder.

preprocess ranks usable videos by a seeded hash and takes the first ``--scale`` that succeed, so
with the same input and selection options the first N are a prefix of the first M > N: a rerun
with a larger ``--scale`` extends the dataset. Any other change (smaller scale, another seed,
other clip options or input) would leave the earlier run's videos beside the new ones, and the
later stages would use them all. ``check_selection`` refuses that (one line), or with
``--overwrite`` says the earlier items must go first. The source (``--source``) is part of the
selection: two datasets never mix in one output, even from one root folder.
"""
from __future__ import annotations

import contextlib
import logging

from timewarp.core.errors import UsageError
from timewarp.core.layout import Layout
from timewarp.core.store import read_json, write_json

log = logging.getLogger("timewarp.core.runrecord")

STAGE = "preprocess"
VERSION = 1
UNRECORDED = {"source": "finevideo"}  # what a record written before a key existed meant by its absence


def _flag(key: str, value) -> str:
    return f"--{key} {value}"


def check_selection(layout: Layout, scale: int, selection: dict, overwrite: bool) -> bool:
    """Compare this run with the one recorded in ``state/preprocess.json``, then record this one.

    ``selection``: option name -> value of everything besides ``--scale`` that decides which
    videos and clips are chosen. Returns True when the earlier run's items must be removed first
    (``--overwrite`` over another selection); raises UsageError when they would be mixed.
    An output without a record (new, or from an older version) is taken as it is.
    """
    path = layout.state_file(STAGE)
    old = None
    if path.is_file():
        try:
            old = read_json(path)
        except (OSError, ValueError) as exc:
            log.warning("%s is unreadable (%s): the earlier run's options are unknown", path, exc)
    clear = False
    if isinstance(old, dict) and old.get("version") == VERSION and layout.normal_ids():
        before = {**UNRECORDED, **(old.get("selection") or {})}
        diffs = [k for k in sorted(set(before) | set(selection)) if before.get(k) != selection.get(k)]
        smaller = scale < int(old.get("scale") or 0)
        if diffs or smaller:
            was = [_flag(k, before.get(k)) for k in diffs] + ([_flag("scale", old["scale"])] if smaller else [])
            now = [_flag(k, selection.get(k)) for k in diffs] + ([_flag("scale", scale)] if smaller else [])
            if not overwrite:
                raise UsageError(
                    f"{layout.root} holds a dataset made with {' '.join(was)}, this run asks for {' '.join(now)}: "
                    f"the two would mix. Rerun with the earlier options (a larger --scale with the same seed "
                    f"extends it), use another --save_dir, or add --overwrite to redo it")
            log.warning("--overwrite: removing the dataset made with %s before making the one with %s",
                        " ".join(was), " ".join(now))
            clear = True
    write_json(path, {"version": VERSION, "scale": scale, "selection": selection})
    return clear


def remove_shuffled(layout: Layout) -> None:
    """Remove the shuffled items in the default folders (with --overwrite over another selection, they
    belong to the earlier dataset; shuffle_clips makes them again)."""
    layout.check_inside(layout.shuffled_annotations_dir, layout.shuffled_videos_dir)
    for sid in sorted(set(layout.shuffled_ids()) | set(layout.item_ids(layout.shuffled_videos_dir, ".mp4"))):
        for path in (layout.shuffled_annotation(sid), layout.shuffled_video(sid)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
