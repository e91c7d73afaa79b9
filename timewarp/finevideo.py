"""Reading FineVideo in any of the layouts people have on disk, and turning metadata into clips.

Layouts (all may be mixed under one root):
  1. parquet shards (``data/train-*.parquet``; any ``*.parquet`` below root) with columns ``mp4``
     (bytes) and ``json`` (struct, or a JSON string / bytes);
  2. ``videos/<name>.mp4`` + ``metadata/<name>.json`` (the dataset card's subset example);
  3. ``<id>.mp4`` + ``<id>.json`` side by side.

Selection reads only the ``json`` column, batch by batch; the ``mp4`` bytes of a chosen video are
read alone, streamed from its row group (``extract_mp4``, by ``timewarp.parquet_pages``), so a
500 MB shard is never loaded.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pyarrow as pa

from timewarp.errors import ItemError, UsageError
from timewarp.layout import SHUFFLE_SUFFIX, Layout
from timewarp.parquet_pages import extract_value
from timewarp.schema import ClipSpan, DroppedScene, SourceRef, SourceVideo
from timewarp.store import without_surrogates
from timewarp.timestamps import parse_timestamp

log = logging.getLogger("timewarp.finevideo")

JSON_BATCH_ROWS = 64
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_WORD = re.compile(r"[^\W_]")


def safe_id(raw: str) -> str:
    """A file-name-safe id: the raw id when it is already safe, else a cleaned form plus a hash.

    Never contains '/', '..' as a component, quotes, spaces or shell characters.
    """
    raw = str(raw)
    cleaned = _SAFE.sub("_", raw).strip("._-")[:80]
    # "<id>__p<k>" names the k-th extra shuffle of <id> (shuffle_clips), so no source id may look like one
    if cleaned == raw and cleaned and not SHUFFLE_SUFFIX.search(cleaned):
        return cleaned
    digest = hashlib.sha1(raw.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned or 'video'}-{digest}"


def decode_json_text(data: bytes) -> str:
    """The text of a JSON file as editors write it: UTF-8 with or without a BOM, or UTF-16/32 (BOM or not).

    The encoding is detected as RFC 8259 / ``json.loads`` does; ItemError names it when the bytes do not decode.
    """
    encoding = json.detect_encoding(data)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        bits = re.match(r"utf-(8|16|32)", encoding).group(1)
        raise ItemError(f"metadata is not valid UTF-{bits}", str(exc))


def meta_of(value) -> dict:
    """The metadata dict from a ``json`` cell or file: dict, JSON string or JSON bytes (any BOM)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = decode_json_text(bytes(value))
    if isinstance(value, str):
        try:
            value = json.loads(value.lstrip("\ufeff"))  # a BOM kept in a string column
        except json.JSONDecodeError as exc:
            raise ItemError("metadata is not valid JSON", str(exc))
    if value is None:
        raise ItemError("metadata is null")
    if not isinstance(value, dict):
        raise ItemError("metadata is not an object", type(value).__name__)
    return value


@dataclass(frozen=True)
class ClipOptions:
    """How clips are cut from the metadata (defaults = the published method)."""

    max_seconds: float = 105.0   # stop at the first clip that ends after this
    min_clips: int = 2           # a video needs at least this many clips
    max_clips: Optional[int] = None
    min_clip_seconds: float = 0.0  # clips shorter than this are skipped (published: only start >= end)


def content_metadata(meta: dict) -> Optional[dict]:
    """``content_metadata`` as a dict (copies may hold it as a JSON string), or None."""
    cm = meta.get("content_metadata")
    if isinstance(cm, (str, bytes, bytearray)):
        try:
            cm = meta_of(cm)
        except ItemError:
            return None
    return cm if isinstance(cm, dict) else None


def _scene_times(scene: dict) -> list[float]:
    ts = scene.get("timestamps")
    ts = ts if isinstance(ts, dict) else {}
    return [t for t in (parse_timestamp(ts.get("start_timestamp")), parse_timestamp(ts.get("end_timestamp")))
            if t is not None]


def clean_text(text: str, what: str, warnings: list) -> str:
    """``text`` in Unicode NFC with each lone UTF-16 surrogate (unwritable as UTF-8) replaced by U+FFFD,
    said in ``warnings``. NFC: one caption typed with composed or decomposed accents is one event."""
    clean = without_surrogates(text)
    if clean != text:
        bad = sum(1 for a, b in zip(text, clean) if a != b)
        warnings.append(f"{what}: {bad} lone UTF-16 surrogate(s) replaced by U+FFFD")
    return unicodedata.normalize("NFC", clean)


def has_words(text: str) -> bool:
    """True when ``text`` has a letter or digit (any script): "." or an emoji alone says no event."""
    return bool(_WORD.search(text))


def _activities(scene: dict, skipped: Counter, known: list[float]) -> list[tuple[float, float, str]]:
    """The scene's valid activities (start, end, description), sorted by time; the rest counted by reason."""
    out = []
    for act in scene.get("activities") or []:
        if not isinstance(act, dict):
            skipped["activity skipped: not an object"] += 1
            continue
        ts = act.get("timestamp")
        ts = ts if isinstance(ts, dict) else {}
        start, end = parse_timestamp(ts.get("start_timestamp")), parse_timestamp(ts.get("end_timestamp"))
        known += [t for t in (start, end) if t is not None]
        desc = act.get("description")
        if start is None or end is None:
            skipped["activity skipped: times missing or unparseable"] += 1
        elif start >= end:
            skipped["activity skipped: ends before it starts or is empty"] += 1
        elif desc is not None and not isinstance(desc, str):
            skipped["activity skipped: description is not text"] += 1
        else:  # a description without a letter or digit ("." or an emoji) times the clip but captions nothing
            out.append((start, end, desc if desc and has_words(desc) else ""))
    return sorted(out, key=lambda a: (a[0], a[1]))


def clip_spans(meta: dict, opts: ClipOptions) -> tuple[list[ClipSpan], Counter, list[DroppedScene], list[str]]:
    """Clips from the scenes, plus why other scenes and activities gave none.

    Each activity is validated (both times parse, start < end, a text description); one clip per
    scene with a valid activity: from the earliest valid start to the latest valid end, caption =
    the valid descriptions in time order joined with spaces. Scenes are taken in time order (not
    list order); reading stops at the first clip that ends after ``max_seconds``. Returns (spans,
    skip counts by reason, scenes that gave no clip with where they are, warnings about repairs).
    """
    skipped: Counter = Counter()
    warnings: list[str] = []
    cm = content_metadata(meta)
    if cm is None:
        raise ItemError("metadata has no content_metadata")
    scenes = cm.get("scenes")
    if not isinstance(scenes, list) or not scenes:
        raise ItemError("metadata has no scenes")
    dropped: list[DroppedScene] = []
    candidates: list[ClipSpan] = []

    def drop(n: int, known: list[float], reason: str) -> None:
        skipped[reason] += 1
        dropped.append(DroppedScene(n, min(known) if known else None, max(known) if known else None, reason))

    for n, scene in enumerate(scenes):
        if not isinstance(scene, dict):
            skipped["scene is not an object"] += 1
            continue
        known = _scene_times(scene)
        acts = _activities(scene, skipped, known)
        if not acts:
            drop(n, known, "scene without activities" if not scene.get("activities") else "scene without a valid activity")
            continue
        caption = " ".join(" ".join(d.strip() for _, _, d in acts).split())
        if not caption:
            drop(n, known, "activities without descriptions")
            continue
        caption = clean_text(caption, f"scene {n} caption", warnings)
        candidates.append(ClipSpan(n, min(a[0] for a in acts), max(a[1] for a in acts), caption))
    candidates.sort(key=lambda c: (c.start, c.end, c.scene_index))
    spans: list[ClipSpan] = []
    for span in candidates:
        if span.end > opts.max_seconds:
            skipped[f"ends after {opts.max_seconds:g}s (reading stops)"] += 1
            break
        if span.end - span.start < opts.min_clip_seconds:
            drop(span.scene_index, [span.start, span.end], "shorter than min_clip_seconds")
            continue
        spans.append(span)
        if opts.max_clips and len(spans) >= opts.max_clips:
            break
    return spans, skipped, dropped, warnings


def describe_skips(skipped: Counter) -> str:
    return "; ".join(f"{k}: {v}" for k, v in sorted(skipped.items())) or "no scenes gave a clip"


def source_id_of(ref: SourceRef, meta: Optional[dict]) -> str:
    """The video's id: ``original_video_filename`` without ``.mp4``; else the file name or shard row.

    A lone surrogate (a JSON ``\\ud800`` escape, a file name that is not UTF-8) becomes U+FFFD, so the
    id that ranks, splits and names the video is the one written into its annotation.
    """
    return without_surrogates(_raw_source_id(ref, meta))


def _raw_source_id(ref: SourceRef, meta: Optional[dict]) -> str:
    vname = meta.get("original_video_filename") if isinstance(meta, dict) else None
    if isinstance(vname, str) and vname.strip():  # kept whole ("../../x" stays so); safe_id makes the file name
        source_id = vname.strip()
        return source_id[:-4] if source_id.lower().endswith(".mp4") else source_id
    if ref.kind == "files":
        return Path(ref.path).stem
    return f"{Path(ref.path).stem}_row{ref.row}"


def source_video(ref: SourceRef, meta: dict, opts: ClipOptions) -> SourceVideo:
    """Validate one metadata record (from ``meta_of``) and plan its clips; ItemError says why it is unusable."""
    source_id = source_id_of(ref, meta)
    spans, skipped, dropped, warnings = clip_spans(meta, opts)
    if len(spans) < opts.min_clips:
        raise ItemError(f"fewer than {opts.min_clips} clips", f"{len(spans)} clip(s); {describe_skips(skipped)}")
    lost = [d for d in dropped if d.start is None]
    if lost:
        raise ItemError("scene without any usable time",
                        f"scene {lost[0].scene_index} ({lost[0].reason}) states no time that parses: where it plays "
                        f"is unknown, so it cannot be cut out of the normal video")
    cm = content_metadata(meta) or {}
    title = clean_text(str((cm.get("title") if isinstance(cm, dict) else None) or meta.get("youtube_title") or ""),
                       "title", warnings)
    return SourceVideo(
        id=safe_id(source_id),
        source_id=source_id,
        ref=ref,
        json_name=str(meta.get("original_json_filename") or (Path(ref.json_path).name if ref.json_path else "")),
        title=title,
        category=str(meta.get("content_parent_category") or ""),
        spans=spans,
        dropped=dropped,
        skipped=dict(skipped),
        warnings=warnings,
    )


# ---------------------------------------------------------------- discovery

@dataclass
class ScanProblem:
    """A file or row that could not be read, reported as a reject by the caller."""

    id: str
    reason: str
    detail: str
    source: str


def _pruned_dirs(root: Path, save_dir: Optional[Path]) -> set[Path]:
    """Folders of our own outputs that lie under the dataset root (never scanned as input)."""
    if save_dir is None:
        return set()
    root, save_dir = root.resolve(), save_dir.resolve()
    if save_dir == root:
        return {p.resolve() for p in Layout(save_dir).output_dirs()}
    return {save_dir} if root in save_dir.parents else set()


def find_inputs(root: Path, exclude: Optional[Path] = None) -> tuple[list[Path], list[tuple[Path, Optional[Path]]], list[Path]]:
    """Parquet shards, (mp4, metadata json or None) pairs, and metadata/ files with no video; sorted.

    Hidden folders and the outputs of a save_dir (``exclude``) inside root are not walked.
    """
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".parquet":
        return [root], [], []  # one shard given as the whole dataset
    pruned = _pruned_dirs(root, exclude)
    shards, pairs, orphans = [], [], []
    jsons = set()
    mp4s = []
    for dirpath, dirs, files in os.walk(root):
        here = Path(dirpath)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() not in pruned)
        for name in sorted(files):
            p = here / name
            suffix = p.suffix.lower()
            if suffix == ".parquet":
                shards.append(p)
            elif suffix == ".mp4":
                mp4s.append(p)
            elif suffix == ".json":
                jsons.add(p)
    shards.sort()
    mp4s.sort()
    used = set()
    for mp4 in mp4s:
        cands = [mp4.with_suffix(".json")]
        if mp4.parent.name == "videos":
            cands.insert(0, mp4.parent.parent / "metadata" / f"{mp4.stem}.json")
        meta = next((c for c in cands if c in jsons), None)
        if meta is not None:
            used.add(meta)
        pairs.append((mp4, meta))
    # a lone .json elsewhere may be anything (a README, dataset_info.json): only metadata/ counts
    orphans = sorted(js for js in jsons - used if js.parent.name == "metadata")
    return shards, pairs, orphans


def require_input(root_dir, what: str = "--root_dir") -> Path:
    """The dataset root: a folder, or one ``.parquet`` shard taken as a one-shard dataset."""
    root = Path(root_dir)
    if root.is_dir() or (root.is_file() and root.suffix.lower() == ".parquet"):
        return root
    if root.exists():
        raise UsageError(f"{what} {root} is neither a folder nor a .parquet file")
    raise UsageError(f"{what} {root} does not exist")


def iter_metadata(root: Path, exclude: Optional[Path] = None) -> Iterator[tuple[SourceRef, object] | ScanProblem]:
    """Every (reference, raw metadata) in the dataset, or a ScanProblem for what cannot be read.

    Only the ``json`` column of a shard is read, ``JSON_BATCH_ROWS`` rows at a time.
    """
    import pyarrow.parquet as pq

    shards, pairs, orphans = find_inputs(root, exclude)
    for shard in shards:
        label = str(shard)
        if not _utf8_name(shard):
            yield _name_problem(shard)
            continue
        try:
            pf = pq.ParquetFile(shard)
            names = set(pf.schema_arrow.names)
            missing = {"json", "mp4"} - names
            if missing:
                yield ScanProblem(shard.name, "parquet shard lacks columns", f"missing {sorted(missing)}", label)
                continue
            row = 0
            for batch in pf.iter_batches(batch_size=JSON_BATCH_ROWS, columns=["json"], use_threads=False):
                for value in batch.column(0).to_pylist():
                    yield SourceRef("parquet", str(shard.resolve()), row=row), value
                    row += 1
        except Exception as exc:  # noqa: BLE001 - an unreadable shard is one reject, the run goes on
            yield ScanProblem(shard.name, "unreadable parquet", f"{type(exc).__name__}: {exc}"[:300], label)
    for mp4, meta in pairs:
        bad = next((p for p in (mp4, meta) if p is not None and not _utf8_name(p)), None)
        if bad is not None:
            yield _name_problem(bad)
            continue
        if meta is None:
            yield ScanProblem(mp4.stem, "video without metadata", "no matching .json", str(mp4))
            continue
        try:
            raw = meta.read_bytes()
        except OSError as exc:
            yield ScanProblem(mp4.stem, "unreadable metadata file", str(exc), str(meta))
            continue
        yield SourceRef("files", str(mp4.resolve()), json_path=str(meta.resolve())), raw
    for js in orphans:
        yield ScanProblem(js.stem, "metadata without video", "no matching .mp4", str(js))


def _utf8_name(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _name_problem(path: Path) -> ScanProblem:
    """A file whose name is not UTF-8 (Python holds its bytes as lone surrogates): video libraries
    fail or crash on such a path, so it is one reject naming the file (shown with U+FFFD)."""
    return ScanProblem(safe_id(without_surrogates(path.stem)), "file name is not valid UTF-8",
                       "rename the file (e.g. with convmv -f latin1 -t utf8)", str(path))


def extract_mp4(ref: SourceRef, dst: Path) -> Path:
    """Make the source mp4 of ``ref`` available as a file; returns its path.

    For a parquet row, only that row's ``mp4`` value is materialised (``timewarp.parquet_pages``).
    """
    if ref.kind == "files":
        return Path(ref.path)
    try:
        found = extract_value(ref.path, int(ref.row), "mp4", dst, label=ref.label())
    except (OSError, pa.ArrowException) as exc:
        raise ItemError("unreadable mp4 in parquet", f"{ref.label()}: {type(exc).__name__}: {exc}"[:300])
    if found is None:
        raise ItemError("parquet row out of range", ref.label())
    if found == 0:
        raise ItemError("empty mp4 bytes", ref.label())
    return dst
