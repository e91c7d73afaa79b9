"""Sources: the one seam between a dataset and the pipeline (``base.Source``), and the registry of them.

A new dataset is one module with a ``Source`` subclass and one line in ``REGISTRY`` (docs/sources.md).
``preprocess --source NAME`` picks one; ``state/preprocess.json`` records it, so later stages
(final_assertions re-reading a source, publish writing the card) ask ``recorded(layout)``.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional

from timewarp.core.errors import UsageError
from timewarp.sources.base import Provenance, ScanProblem, Source  # noqa: F401

REGISTRY = {   # --source name -> "module:class"
    "finevideo": "timewarp.sources.finevideo:FineVideo",
    "activitynet": "timewarp.sources.activitynet:ActivityNet",
    "captions": "timewarp.sources.captions:Captions",
}
DEFAULT = "finevideo"   # outputs made before sources were recorded came from FineVideo


def source_class(name: str) -> type[Source]:
    if name not in REGISTRY:
        raise UsageError(f"--source must be one of {', '.join(REGISTRY)}, got {name!r}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def open_source(name: str, root, exclude: Optional[Path] = None, cache_dir: Optional[Path] = None) -> Source:
    """The source ``name`` over ``root`` (not scanned yet)."""
    return source_class(name)(root, exclude=exclude, cache_dir=cache_dir)


def recorded(layout) -> tuple[str, Optional[str]]:
    """(source name, input root) of the preprocess run that made ``layout`` (FineVideo when unrecorded)."""
    from timewarp.core.store import read_json
    try:
        sel = read_json(layout.state_file("preprocess")).get("selection") or {}
    except (OSError, ValueError, AttributeError):
        sel = {}
    return str(sel.get("source") or DEFAULT), sel.get("root_dir")


def cache_dir(layout) -> Path:
    """Where a remote source keeps the bytes it fetched for an output (``<out>/cache/sources``)."""
    return layout.cache_dir / "sources"
