"""Reading the annotations preprocess.py and shuffle_clips.py wrote, checked: what every stage after them
reads (a problem with one video is an ``ItemError``, a reject; none at all is a ``UsageError``)."""
from __future__ import annotations

from typing import Optional

from timewarp.core.errors import ItemError, UsageError
from timewarp.core.layout import Layout, split_shuffled_id
from timewarp.core.schema import NormalAnnotation, ShuffledAnnotation
from timewarp.core.store import read_json


def require_normal_ids(layout: Layout) -> list[str]:
    ids = layout.normal_ids() if layout.normal_annotations_dir.is_dir() else []
    if not ids:
        raise UsageError(f"no normal annotations in {layout.normal_annotations_dir}: run ./setup_dataset.sh "
                         f"(preprocess.py, shuffle_clips.py) on this root_dir first")
    return ids


def load_normal(layout: Layout, vid: str) -> NormalAnnotation:
    """The normal annotation, with clips usable for questions; ItemError (a reject) otherwise."""
    path = layout.normal_annotation(vid)
    try:
        ann = NormalAnnotation.from_dict(read_json(path))
    except FileNotFoundError:
        raise ItemError("missing normal annotation", str(path))
    except (OSError, ValueError, TypeError) as exc:
        raise ItemError("annotation does not parse", f"{path}: {exc}")
    if not isinstance(ann.clips, list) or not ann.clips:
        raise ItemError("annotation has no clips", str(path))
    for k, c in enumerate(ann.clips):
        if c.index != k:
            raise ItemError("annotation does not parse", f"{path}: clip {k} has index {c.index}")
        if not isinstance(c.caption, str) or not c.caption.strip():
            raise ItemError("empty clip caption", f"{path}: clip {k}")
    return ann


def load_shuffled(layout: Layout, sid: str, n_clips: Optional[int] = None) -> ShuffledAnnotation:
    """A shuffled annotation whose permutation is a real permutation consistent with its clips."""
    path = layout.shuffled_annotation(sid)
    if not path.is_file():
        raise ItemError("missing shuffled annotation", str(path))
    try:
        s = ShuffledAnnotation.from_dict(read_json(path))
    except (OSError, ValueError, TypeError) as exc:
        raise ItemError("shuffled annotation does not parse", f"{path}: {exc}")
    perm = s.permutation
    if (not isinstance(perm, list) or not perm or sorted(perm) != list(range(len(perm)))
            or [c.source_index for c in s.clips] != perm):
        raise ItemError("inconsistent shuffled annotation", f"{path}: permutation {perm!r} vs clips")
    if n_clips is not None and len(perm) != n_clips:
        raise ItemError("inconsistent shuffled annotation",
                        f"{path}: {len(perm)} clips, the normal annotation has {n_clips}")
    if not all(isinstance(c.caption, str) and c.caption.strip() for c in s.clips):
        raise ItemError("empty clip caption", str(path))
    return s


def shuffled_ids_by_video(layout: Layout) -> dict[str, list[str]]:
    """normal id -> its shuffled ids, permutation 0 (``<id>``, expected even if missing) first, then by k."""
    found: dict[str, list[tuple[int, str]]] = {}
    for sid in layout.shuffled_ids():
        nid, k = split_shuffled_id(sid)
        found.setdefault(nid, []).append((k, sid))
    return {nid: [nid] + [sid for k, sid in sorted(pairs) if k > 0] for nid, pairs in found.items()}
