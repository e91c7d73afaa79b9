"""Reading FineVideo in any of the layouts people have on disk, and turning metadata into clips.

Layouts (all may be mixed under one root):
  1. parquet shards (``data/train-*.parquet``; any ``*.parquet`` below root) with columns ``mp4``
     (bytes) and ``json`` (struct, or a JSON string / bytes);
  2. ``videos/<name>.mp4`` + ``metadata/<name>.json`` (the dataset card's subset example);
  3. ``<id>.mp4`` + ``<id>.json`` side by side.

Selection reads only the ``json`` column, batch by batch; the ``mp4`` bytes of a chosen video are
read alone, streamed from its row group (``extract_mp4``, by ``timewarp.sources.parquet_pages``), so a
500 MB shard is never loaded.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Iterator, Optional

import pyarrow as pa

from timewarp.core.errors import ItemError
from timewarp.sources.parquet_pages import extract_value
from timewarp.core.schema import ClipSpan, DroppedScene, SourceRef, SourceVideo
from timewarp.sources.base import (ClipOptions, Provenance, ScanProblem, Source, check_name, clean_text,  # noqa: F401
                                   decode_json_text, describe_skips, has_words, meta_of, planned_video, safe_id,
                                   select_spans, walk_files)
from timewarp.sources import hub
from timewarp.core.store import read_json, without_surrogates
from timewarp.sources.timestamps import parse_timestamp

log = logging.getLogger("timewarp.sources.finevideo")

JSON_BATCH_ROWS = 64


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
    return select_spans(candidates, opts, skipped, drop), skipped, dropped, warnings


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
    sv = planned_video(ref, source_id, spans, skipped, dropped, warnings, opts,
                       json_name=str(meta.get("original_json_filename") or (Path(ref.json_path).name if ref.json_path else "")),
                       category=str(meta.get("content_parent_category") or ""))
    cm = content_metadata(meta) or {}
    sv.title = clean_text(str((cm.get("title") if isinstance(cm, dict) else None) or meta.get("youtube_title") or ""),
                          "title", warnings)
    return sv


# ---------------------------------------------------------------- discovery

def find_inputs(root: Path, exclude: Optional[Path] = None) -> tuple[list[Path], list[tuple[Path, Optional[Path]]], list[Path]]:
    """Parquet shards, (mp4, metadata json or None) pairs, and metadata/ files with no video; sorted.

    Hidden folders and the outputs of a save_dir (``exclude``) inside root are not walked.
    """
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".parquet":
        return [root], [], []  # one shard given as the whole dataset
    shards, pairs, orphans = [], [], []
    jsons = set()
    mp4s = []
    for p in walk_files(root, exclude):
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


def iter_metadata(root: Path, exclude: Optional[Path] = None) -> Iterator[tuple[SourceRef, object] | ScanProblem]:
    """Every (reference, raw metadata) in the dataset, or a ScanProblem for what cannot be read.

    Only the ``json`` column of a shard is read, ``JSON_BATCH_ROWS`` rows at a time.
    """
    import pyarrow.parquet as pq

    shards, pairs, orphans = find_inputs(root, exclude)
    for shard in shards:
        if check_name(shard):
            yield check_name(shard)
            continue
        yield from shard_rows(str(shard.resolve()), str(shard), lambda s=shard: pq.ParquetFile(s))
    for mp4, meta in pairs:
        bad = next((check_name(p) for p in (mp4, meta) if p is not None and check_name(p)), None)
        if bad is not None:
            yield bad
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


def shard_rows(ref_path: str, label: str, open_shard) -> Iterator[tuple[SourceRef, object] | ScanProblem]:
    """(reference, raw ``json`` value) of every row of one shard (``open_shard()`` gives its ParquetFile),
    or one ScanProblem when it cannot be read or lacks the columns."""
    name = label.rstrip("/").rsplit("/", 1)[-1]
    try:
        pf = open_shard()
        missing = {"json", "mp4"} - set(pf.schema_arrow.names)
        if missing:
            yield ScanProblem(name, "parquet shard lacks columns", f"missing {sorted(missing)}", label)
            return
        row = 0
        for batch in pf.iter_batches(batch_size=JSON_BATCH_ROWS, columns=["json"], use_threads=False):
            for value in batch.column(0).to_pylist():
                yield SourceRef("parquet", ref_path, row=row), value
                row += 1
    except ItemError as exc:  # a remote shard whose bytes could not be fetched (after retries)
        yield ScanProblem(name, exc.reason, exc.detail, label)
    except Exception as exc:  # noqa: BLE001 - an unreadable shard is one reject, the run goes on
        yield ScanProblem(name, "unreadable parquet", f"{type(exc).__name__}: {exc}"[:300], label)


def extract_mp4(ref: SourceRef, dst: Path, **remote) -> Path:
    """Make the source mp4 of ``ref`` available as a file; returns its path.

    For a parquet row, only that row's ``mp4`` value is materialised (``timewarp.sources.parquet_pages``).
    """
    if ref.kind == "files":
        return Path(ref.path)
    try:
        found = extract_value(ref.path, int(ref.row), "mp4", dst, label=ref.label(), **remote)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise ItemError("unreadable mp4 in parquet", f"{ref.label()}: {type(exc).__name__}: {exc}"[:300])
    if found is None:
        raise ItemError("parquet row out of range", ref.label())
    if found == 0:
        raise ItemError("empty mp4 bytes", ref.label())
    return dst



FINEVIDEO = "HuggingFaceFV/finevideo"
FINEVIDEO_TERMS = (
    "FineVideo is a collection of Creative Commons videos. Any use of all or part of the videos must abide by "
    "the terms of the original licenses, including attribution clauses when relevant. FineVideo is regularly "
    "updated to enact validated data removal requests; keep your copy in line with the most recent usable "
    "version named by its maintainers. To host, share, or otherwise provide access to FineVideo (and so to "
    "videos derived from it, as here), these terms must be included and users must agree to them.")


class FineVideo(Source):
    """FineVideo in any local layout (module docstring), or on the hub (``hf://datasets/OWNER/NAME``)."""

    name = "finevideo"
    root_help = "*.parquet shards or *.mp4 files"
    accepts_file = True
    provenance = Provenance(
        name="FineVideo", url=f"https://huggingface.co/datasets/{FINEVIDEO}", license="cc-by-4.0",
        terms=FINEVIDEO_TERMS, hub_id=FINEVIDEO,
        about="a collection of YouTube videos published under Creative Commons Attribution licenses (via "
              "YouTube-Commons), with model-written scene and activity annotations",
        attribution="`source_id` (the YouTube id, so the original is `https://www.youtube.com/watch?v=<source_id>` "
                    "and attribution goes to its channel), `source_file` / `source_row` (the FineVideo shard and "
                    "row) and `source_json`",
        clips="one FineVideo scene that has activities, from its first activity's start to its last activity's end",
        video_license="keep their original Creative Commons Attribution licenses: attribute the original creators "
                      "when you use them",
        removal="If FineVideo removes a video on request, remove it here too (republish from an updated FineVideo).")

    def __init__(self, root, exclude: Optional[Path] = None, cache_dir: Optional[Path] = None):
        super().__init__(root, exclude, cache_dir)
        self.hub = hub.Hub(str(root)) if hub.is_hub(root) else None

    def check(self, what: str = "--root_dir") -> None:
        if self.hub is None:
            super().check(what)
        else:
            self.hub.check(what)

    def key(self) -> str:
        return self.hub.url if self.hub else super().key()

    def empty_message(self) -> str:
        if self.hub:
            return f"no FineVideo data under {self.hub.url}: no *.parquet files"
        return f"no FineVideo data under {self.root}: no *.parquet shards and no *.mp4 files"

    def source_file(self, ref: SourceRef) -> str:
        return self.hub.relative(ref.path) if self.hub else super().source_file(ref)

    def reopen(self, source_file: str, source_row: Optional[int]) -> Optional[SourceRef]:
        if self.hub:
            return SourceRef("parquet", f"{self.hub.url}/{source_file}", row=source_row)
        return super().reopen(source_file, source_row)

    def _store(self, path: str) -> Optional[Path]:
        """Where the footer and json spans of one remote shard are kept."""
        return self.cache_dir / "hub" / "shards" / safe_id(self.hub.relative(path)) if self.cache_dir else None

    def _remote_rows(self) -> Iterator[tuple[SourceRef, object] | ScanProblem]:
        import pyarrow.parquet as pq

        def open_shard(path: str, size: int, store: Optional[Path]):
            rf = self.hub.open(path, size, store)
            md = hub.footer(rf)
            for a, b in hub.column_spans(md, "json"):   # the json column, one request per row group
                rf.prefetch(a, b)
            return pq.ParquetFile(rf, metadata=md, pre_buffer=False)

        def start(item):
            path, size, oid = item
            url = hub.PREFIX + path if not hub.is_hub(path) else path
            store = self._store(url)
            if store is not None:
                hub.reset_store(store, oid, size)
            return url, lambda: open_shard(url, size, store)

        # footers and json spans of the next shards are fetched while this one is read (in shard order)
        for url, ready in hub.ahead(map(start, self.hub.files())):
            yield from shard_rows(url, url, ready)

    def scan(self, opts: ClipOptions) -> Iterator[SourceVideo | ScanProblem]:
        rows = self._remote_rows() if self.hub else iter_metadata(self.root, exclude=self.exclude)
        for item in rows:
            if isinstance(item, ScanProblem):
                yield item
                continue
            ref, raw = item
            meta = None
            try:
                meta = meta_of(raw)
                yield source_video(ref, meta, opts)
            except ItemError as exc:
                yield ScanProblem(safe_id(source_id_of(ref, meta)), exc.reason, exc.detail, ref.label())

    def open(self, ref: SourceRef, dst: Path) -> Path:
        if self.hub is None:
            return extract_mp4(ref, dst)
        store = self._store(ref.path)
        try:
            ident = read_json(store / "file.json") if store is not None and (store / "file.json").is_file() else {}
        except (OSError, ValueError):
            ident = {}
        mark = {"oid": str(ident.get("oid") or "")}   # the shard version the bytes came from
        target = dst
        if self.cache_dir is not None:   # kept for later stages and reruns: fetched once per output
            target = self.cache_dir / "hub" / "videos" / f"{safe_id(self.hub.relative(ref.path))}-row{ref.row}.mp4"
            if hub.kept_whole(target, mark):
                return target
            target.parent.mkdir(parents=True, exist_ok=True)
        try:
            size = int(ident.get("size") or self.hub.size(ref.path))
            md = hub.footer(self.hub.open(ref.path, size, store))
        except (OSError, ValueError) as exc:
            raise ItemError("unreadable parquet", f"{ref.label()}: {type(exc).__name__}: {exc}"[:300])
        part = hub.temp_beside(target)
        try:
            extract_mp4(ref, part, opener=lambda: self.hub.open(ref.path, size), metadata=md)
            # whole or absent: a killed run leaves no cached half video (kept_whole checks its marker)
            hub.keep(part, target, mark if self.cache_dir is not None else None)
        finally:
            part.unlink(missing_ok=True)
        return target
