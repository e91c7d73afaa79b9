"""Generation-stage helpers, for the six stages that write captions, SFT, pairs and benchmarks.

What they share on top of ``stage.py`` (the runner of every stage): loading and checking annotations,
the stage start (root and input checks, one-line errors), the text backend from the CLI options
(``textgen.py``), and the end (model usage in the stats)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from timewarp.errors import ItemError, UsageError
from timewarp.layout import Layout, split_shuffled_id
from timewarp.llm import client_from_args
from timewarp.schema import NormalAnnotation, ShuffledAnnotation
from timewarp.stage import StageRun, require_root
from timewarp.store import read_json
from timewarp.textgen import backend_for


def layout_for(root_dir, layout: Optional[Layout] = None) -> Layout:
    root = require_root(root_dir, "--root_dir")
    if layout is None:
        return Layout(root)
    return layout


def layout_names(layout: Layout) -> tuple:
    return (layout.shuffled_dir_name, layout.shuffled_annotation_dir_name, layout.shuffled_video_dir_name)


def require_normal_ids(layout: Layout) -> list[str]:
    ids = layout.normal_ids() if layout.normal_annotations_dir.is_dir() else []
    if not ids:
        raise UsageError(f"no normal annotations in {layout.normal_annotations_dir}: run ./setup_dataset.sh "
                         f"(preprocess.py, shuffle_clips.py) on this root_dir first")
    return ids


def require_file(path: Path, hint: str) -> None:
    if not path.is_file():
        raise UsageError(f"{path} not found: {hint}")


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


def backend_from_args(args: argparse.Namespace, layout: Layout):
    """The text backend of the CLI options; for openai, the server is checked before any work."""
    return backend_for(client_from_args(args, layout))


def llm_options(args: argparse.Namespace) -> dict:
    if getattr(args, "backend", "template") != "openai":
        return {"backend": "template"}
    return {"backend": "openai", "llm_base_url": args.llm_base_url, "llm_model": args.llm_model}


def note_usage(stage: StageRun, backend) -> None:
    usage = backend.usage
    if usage:
        stage.extra["llm_usage"] = usage
