"""Reading FineVideo in any of the layouts people have on disk, and turning metadata into clips.

Layouts (all may be mixed under one root):
  1. parquet shards (``data/train-*.parquet``; any ``*.parquet`` below root) with columns ``mp4``
     (bytes) and ``json`` (struct, or a JSON string / bytes);
  2. ``videos/<name>.mp4`` + ``metadata/<name>.json`` (the dataset card's subset example);
  3. ``<id>.mp4`` + ``<id>.json`` side by side.

Selection reads only the ``json`` column, batch by batch; the ``mp4`` bytes of a chosen video are
read alone, streamed from its row group (``extract_mp4``), so a 500 MB shard is never loaded.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from timewarp.errors import ItemError
from timewarp.layout import SHUFFLE_SUFFIX, Layout
from timewarp.schema import ClipSpan, DroppedScene, SourceRef, SourceVideo
from timewarp.timestamps import parse_timestamp

log = logging.getLogger("timewarp.finevideo")

JSON_BATCH_ROWS = 64
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


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


def meta_of(value) -> dict:
    """The metadata dict from a ``json`` cell: dict, JSON string or JSON bytes."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ItemError("metadata is not valid UTF-8", str(exc))
    if isinstance(value, str):
        try:
            value = json.loads(value)
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
    """``text`` with each lone UTF-16 surrogate (unwritable as UTF-8) replaced by U+FFFD, said in ``warnings``."""
    bad = sum(1 for ch in text if 0xD800 <= ord(ch) <= 0xDFFF)
    if not bad:
        return text
    warnings.append(f"{what}: {bad} lone UTF-16 surrogate(s) replaced by U+FFFD")
    return "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)


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
        else:
            out.append((start, end, desc or ""))
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
    """The video's id: ``original_video_filename`` without ``.mp4``; else the file name or shard row."""
    vname = meta.get("original_video_filename") if isinstance(meta, dict) else None
    if isinstance(vname, str) and vname.strip():
        source_id = Path(vname.strip().replace("\\", "/")).name
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
    dur = meta.get("duration_seconds")
    title = clean_text(str((cm.get("title") if isinstance(cm, dict) else None) or meta.get("youtube_title") or ""),
                       "title", warnings)
    return SourceVideo(
        id=safe_id(source_id),
        source_id=source_id,
        ref=ref,
        json_name=str(meta.get("original_json_filename") or (Path(ref.json_path).name if ref.json_path else "")),
        title=title,
        category=str(meta.get("content_parent_category") or ""),
        duration_seconds=float(dur) if isinstance(dur, (int, float)) else None,
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


def iter_metadata(root: Path, exclude: Optional[Path] = None) -> Iterator[tuple[SourceRef, object] | ScanProblem]:
    """Every (reference, raw metadata) in the dataset, or a ScanProblem for what cannot be read.

    Only the ``json`` column of a shard is read, ``JSON_BATCH_ROWS`` rows at a time.
    """
    import pyarrow.parquet as pq

    shards, pairs, orphans = find_inputs(root, exclude)
    for shard in shards:
        label = str(shard)
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


def extract_mp4(ref: SourceRef, dst: Path) -> Path:
    """Make the source mp4 of ``ref`` available as a file; returns its path.

    For a parquet row, only that row's ``mp4`` value is materialised: the row group is streamed
    one row at a time with a bounded read buffer.
    """
    if ref.kind == "files":
        return Path(ref.path)
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return _extract_parquet_row(pq, ref, dst)
    except (OSError, pa.ArrowException) as exc:
        raise ItemError("unreadable mp4 in parquet", f"{ref.label()}: {type(exc).__name__}: {exc}"[:300])


def _extract_parquet_row(pq, ref: SourceRef, dst: Path) -> Path:
    pf = pq.ParquetFile(ref.path)
    row = int(ref.row)
    for rg in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(rg).num_rows
        if row < n:
            break
        row -= n
    else:
        raise ItemError("parquet row out of range", ref.label())
    try:
        found = _PageReader(pf, ref.path, rg, "mp4").extract(row, dst)
    except _Unsupported as exc:
        log.debug("%s: page reader: %s; reading with pyarrow", ref.label(), exc)
        found = _extract_with_pyarrow(pf, rg, row, dst)
    except (IndexError, ValueError, OverflowError) as exc:  # a page the reader misparsed: pyarrow knows better
        log.warning("%s: page reader failed (%s: %s); reading with pyarrow", ref.label(), type(exc).__name__, exc)
        found = _extract_with_pyarrow(pf, rg, row, dst)
    if found is None:
        raise ItemError("parquet row out of range", ref.label())
    if found == 0:
        raise ItemError("empty mp4 bytes", ref.label())
    return dst


def _extract_with_pyarrow(pf, rg: int, row: int, dst: Path) -> Optional[int]:
    """Fallback for layouts the page reader does not handle: reads the row group up to ``row``."""
    for i, batch in enumerate(pf.iter_batches(batch_size=1, row_groups=[rg], columns=["mp4"], use_threads=False)):
        if i == row:
            value = batch.column(0)[0].as_py()
            if not value:
                return 0
            with open(dst, "wb") as fh:
                fh.write(value)
            return len(value)
    return None


# ------------------------------------------------- reading one value of a parquet column chunk
#
# pyarrow cannot start decoding a column chunk at a given row: it decodes the row group from its
# start (and a dictionary-encoded chunk's whole dictionary page, which for an mp4 column holds
# every video of the row group) with memory several times the row group. A shard is ~500 MB, often
# one row group, so ``_PageReader`` walks the chunk's page headers instead (Thrift compact,
# a few dozen bytes each), seeks over the pages before the wanted row, and decodes only the page
# holding it; a value inside a dictionary page is streamed out of that page (uncompressed, snappy
# or gzip) without holding the page. Anything else raises ``_Unsupported`` (pyarrow fallback).

class _Unsupported(Exception):
    pass


_PAGE_DATA, _PAGE_INDEX, _PAGE_DICT, _PAGE_DATA_V2 = 0, 1, 2, 3
_ENC_PLAIN, _ENC_PLAIN_DICT, _ENC_RLE, _ENC_RLE_DICT = 0, 2, 3, 8
_COPY = 1 << 20
_WHOLE_PAGE = 64 << 20


class _Thrift:
    """Minimal Thrift compact-protocol decoder over a binary file object (structs as {id: value})."""

    def __init__(self, fh):
        self.fh = fh

    def byte(self) -> int:
        b = self.fh.read(1)
        if not b:
            raise _Unsupported("truncated page header")
        return b[0]

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise _Unsupported("bad varint in page header")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, t: int):
        if t in (1, 2):
            return t == 1
        if t == 3:
            return self.byte()
        if t in (4, 5, 6):
            return self.zigzag()
        if t == 7:
            return self.fh.read(8)
        if t == 8:
            return self.fh.read(self.varint())
        if t in (9, 10):
            h = self.byte()
            n, et = h >> 4, h & 0x0F
            if n == 15:
                n = self.varint()
            return [self.byte() == 1 if et in (1, 2) else self.value(et) for _ in range(n)]
        if t == 11:
            n = self.varint()
            if not n:
                return {}
            kv = self.byte()
            return {self.value(kv >> 4): self.value(kv & 0x0F) for _ in range(n)}
        if t == 12:
            return self.struct()
        raise _Unsupported(f"thrift type {t}")

    def struct(self) -> dict:
        out, last = {}, 0
        while True:
            h = self.byte()
            if h == 0:
                return out
            t, delta = h & 0x0F, h >> 4
            fid = last + delta if delta else self.zigzag()
            out[fid] = self.value(t)
            last = fid


def _hybrid(buf, pos: int, end: int, bit_width: int, count: int) -> list[int]:
    """The first ``count`` values of an RLE / bit-packed hybrid run list."""
    out: list[int] = []
    vbytes = (bit_width + 7) // 8
    mask = (1 << bit_width) - 1
    while len(out) < count and pos < end:
        shift = header = 0
        while True:
            b = buf[pos]
            pos += 1
            header |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if header & 1:
            groups = header >> 1
            nbytes = groups * bit_width
            bits = int.from_bytes(bytes(buf[pos:pos + nbytes]), "little")
            for k in range(min(groups * 8, count - len(out))):
                out.append((bits >> (k * bit_width)) & mask)
            pos += nbytes
        else:
            value = int.from_bytes(bytes(buf[pos:pos + vbytes]), "little")
            out.extend([value] * min(header >> 1, count - len(out)))
            pos += vbytes
    if len(out) < count:
        raise _Unsupported("short level / index run")
    return out


class _SnappyStream:
    """Raw snappy (as parquet stores it), decompressed incrementally with a bounded window."""

    WINDOW = 1 << 16

    def __init__(self, fh, size: int):
        self.fh, self.left = fh, size
        self.win = bytearray()
        self.pending = memoryview(b"")
        self._varint()  # uncompressed length: not needed

    def _in(self, n: int) -> bytes:
        if n > self.left:
            raise _Unsupported("snappy data runs past its page")
        b = self.fh.read(n)
        if len(b) != n:
            raise _Unsupported("truncated snappy page")
        self.left -= n
        return b

    def _varint(self) -> int:
        shift = result = 0
        while True:
            b = self._in(1)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def _element(self) -> bytes:
        tag = self._in(1)[0]
        kind = tag & 3
        if kind == 0:
            n = tag >> 2
            if n >= 60:
                n = int.from_bytes(self._in(n - 59), "little")
            out = self._in(n + 1)
        else:
            if kind == 1:
                n, off = 4 + ((tag >> 2) & 7), ((tag >> 5) << 8) | self._in(1)[0]
            elif kind == 2:
                n, off = (tag >> 2) + 1, int.from_bytes(self._in(2), "little")
            else:
                n, off = (tag >> 2) + 1, int.from_bytes(self._in(4), "little")
            if off == 0 or off > len(self.win):
                raise _Unsupported("snappy copy reaches past the kept window")
            start = len(self.win) - off
            if off >= n:
                out = bytes(self.win[start:start + n])
            else:
                rep = self.win[start:]
                out = bytes((rep * (n // off + 1))[:n])
        self.win += out
        if len(self.win) > 2 * self.WINDOW:
            del self.win[:len(self.win) - self.WINDOW]
        return out

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at the end of the stream)."""
        parts, got = [], 0
        while got < n:
            if not self.pending:
                if self.left <= 0:
                    break
                self.pending = memoryview(self._element())
                continue
            take = self.pending[:n - got]
            parts.append(bytes(take))
            got += len(take)
            self.pending = self.pending[len(take):]
        return b"".join(parts)


class _FileSlice:
    """An uncompressed page payload read straight from the file."""

    def __init__(self, fh, size: int):
        self.fh, self.left = fh, size

    def read(self, n: int) -> bytes:
        b = self.fh.read(min(n, self.left))
        self.left -= len(b)
        return b


class _GzipStream:
    def __init__(self, fh, size: int):
        import zlib

        self.fh, self.left = fh, size
        self.z = zlib.decompressobj(wbits=47)  # gzip or zlib header
        self.buf = b""

    def read(self, n: int) -> bytes:
        while len(self.buf) < n and (self.left > 0 or self.z.unconsumed_tail):
            data = self.z.unconsumed_tail or self.fh.read(min(_COPY, self.left))
            if not self.z.unconsumed_tail:
                self.left -= len(data)
            self.buf += self.z.decompress(data, max(n - len(self.buf), _COPY))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


class _PageReader:
    def __init__(self, pf, path: str, rg: int, column: str):
        md = pf.metadata
        idx = next((i for i in range(md.num_columns) if md.schema.column(i).path == column), None)
        if idx is None:
            raise _Unsupported(f"no flat column {column}")
        desc = md.schema.column(idx)
        if desc.max_repetition_level != 0 or desc.max_definition_level > 1 or desc.physical_type != "BYTE_ARRAY":
            raise _Unsupported("nested or non-binary column")
        self.max_def = desc.max_definition_level
        self.chunk = md.row_group(rg).column(idx)
        self.codec = self.chunk.compression.upper()
        if self.codec not in ("UNCOMPRESSED", "SNAPPY", "GZIP", "ZSTD", "BROTLI", "LZ4_RAW"):
            raise _Unsupported(f"codec {self.codec}")
        self.path = path

    def _decompress(self, data: bytes, size: int) -> bytes:
        if self.codec == "UNCOMPRESSED":
            return data
        import pyarrow as pa

        return pa.Codec(self.codec.lower()).decompress(data, decompressed_size=size).to_pybytes()

    def extract(self, row: int, dst: Path) -> Optional[int]:
        """Write the value of ``row`` (index inside the row group) to ``dst``; its length, 0 if null/empty."""
        c = self.chunk
        offsets = [c.data_page_offset]
        if c.has_dictionary_page and c.dictionary_page_offset:
            offsets.append(c.dictionary_page_offset)
        start = min(offsets)
        end = start + c.total_compressed_size
        dictionary = None
        seen = 0
        with open(self.path, "rb", buffering=1 << 16) as fh:
            fh.seek(start)
            th = _Thrift(fh)
            while fh.tell() < end:
                header = th.struct()
                ptype, usize, csize = header.get(1), header.get(2), header.get(3)
                if usize is None or csize is None or csize < 0:
                    raise _Unsupported("page header without sizes")
                payload = fh.tell()
                if ptype == _PAGE_DICT:
                    dh = header.get(7) or {}
                    if dh.get(2, _ENC_PLAIN) not in (_ENC_PLAIN, _ENC_PLAIN_DICT):
                        raise _Unsupported("dictionary page not PLAIN")
                    dictionary = (payload, csize, usize, dh.get(1, 0))
                elif ptype in (_PAGE_DATA, _PAGE_DATA_V2):
                    h = header.get(5 if ptype == _PAGE_DATA else 8) or {}
                    num = h.get(3) if ptype == _PAGE_DATA_V2 else h.get(1)
                    if num is None:
                        raise _Unsupported("data page without a value count")
                    if row < seen + num:
                        return self._from_page(fh, ptype, h, csize, usize, row - seen, num, dictionary, dst)
                    seen += num
                fh.seek(payload + csize)
        return None

    def _stream(self, fh, size: int, usize: int):
        """The decompressed bytes of the ``size`` bytes at the file position, read incrementally (or None).

        A page of at most ``_WHOLE_PAGE`` bytes is decompressed at once by pyarrow's C++ codec:
        the pure-Python streams are for pages too big to hold, and slow on compressible data.
        """
        if self.codec == "UNCOMPRESSED":
            return _FileSlice(fh, size)
        if size <= _WHOLE_PAGE and usize <= _WHOLE_PAGE:
            return io.BytesIO(self._decompress(fh.read(size), usize))
        if self.codec == "SNAPPY":
            return _SnappyStream(fh, size)
        if self.codec == "GZIP":
            return _GzipStream(fh, size)
        return None

    def _from_page(self, fh, ptype, h, csize, usize, k, num, dictionary, dst) -> int:
        encoding = h.get(2) if ptype == _PAGE_DATA else h.get(4)
        if encoding == _ENC_PLAIN and csize > _COPY:
            # a big page of PLAIN values (writers put many videos in one page): stream it
            payload = fh.tell()
            if ptype == _PAGE_DATA:
                stream = self._stream(fh, csize, usize)
                if stream is not None:
                    levels = None
                    if self.max_def:
                        if h.get(3, _ENC_RLE) != _ENC_RLE:
                            raise _Unsupported("definition levels not RLE")
                        n = int.from_bytes(_exact(stream, 4), "little")
                        levels = _hybrid(_exact(stream, n), 0, n, 1, k + 1)
                    return self._plain_value(fh, stream, levels, k, dst)
            else:
                dl, rl = h.get(5, 0), h.get(6, 0)
                level_bytes = fh.read(dl + rl)
                body = csize - dl - rl
                stream = self._stream(fh, body, usize - dl - rl) if h.get(7, True) else _FileSlice(fh, body)
                if stream is not None:
                    levels = _hybrid(level_bytes, rl, rl + dl, 1, k + 1) if self.max_def else None
                    return self._plain_value(fh, stream, levels, k, dst)
            fh.seek(payload)
        raw = fh.read(csize)
        if len(raw) != csize:
            raise _Unsupported("truncated data page")
        if ptype == _PAGE_DATA:
            data = memoryview(self._decompress(raw, usize))
            pos = 0
            levels = None
            if self.max_def:
                if h.get(3, _ENC_RLE) != _ENC_RLE:
                    raise _Unsupported("definition levels not RLE")
                n = int.from_bytes(data[:4], "little")
                levels = _hybrid(data, 4, 4 + n, 1, k + 1)
                pos = 4 + n
        else:
            dl, rl = h.get(5, 0), h.get(6, 0)
            levels_raw = raw[:dl + rl]
            body = raw[dl + rl:]
            if h.get(7, True):
                body = self._decompress(body, usize - dl - rl)
            data = memoryview(levels_raw + body)
            levels = _hybrid(data, rl, rl + dl, 1, k + 1) if self.max_def else None
            pos = dl + rl
        if levels is not None:
            if levels[k] < self.max_def:
                return 0
            k = sum(1 for v in levels[:k] if v == self.max_def)
        if encoding == _ENC_PLAIN:
            for _ in range(k):
                pos += 4 + int.from_bytes(data[pos:pos + 4], "little")
            n = int.from_bytes(data[pos:pos + 4], "little")
            if pos + 4 + n > len(data):
                raise _Unsupported("value runs past its page")
            with open(dst, "wb") as out:
                out.write(data[pos + 4:pos + 4 + n])
            return n
        if encoding in (_ENC_RLE_DICT, _ENC_PLAIN_DICT):
            if dictionary is None:
                raise _Unsupported("dictionary-encoded page without a dictionary")
            width = data[pos]
            index = _hybrid(data, pos + 1, len(data), width, k + 1)[k] if width else 0
            del data, raw
            return self._from_dictionary(fh, dictionary, index, dst)
        raise _Unsupported(f"value encoding {encoding}")

    def _from_dictionary(self, fh, dictionary, index: int, dst: Path) -> int:
        payload, csize, usize, count = dictionary
        if index >= count:
            raise _Unsupported("dictionary index out of range")
        fh.seek(payload)
        stream = self._stream(fh, csize, usize)
        if stream is None:
            raise _Unsupported(f"streaming a {self.codec} dictionary page")
        return self._plain_value(fh, stream, None, index, dst)

    @staticmethod
    def _plain_value(fh, stream, levels: Optional[list], k: int, dst: Path) -> int:
        """Skip to the k-th PLAIN BYTE_ARRAY value of ``stream`` (k counts rows when ``levels`` is given)."""
        if levels is not None:
            if levels[k] < 1:
                return 0
            k = sum(1 for v in levels[:k] if v >= 1)
        for _ in range(k):
            n = int.from_bytes(_exact(stream, 4), "little")
            if isinstance(stream, _FileSlice):
                if n > stream.left:
                    raise _Unsupported("value runs past its page")
                fh.seek(n, 1)
                stream.left -= n
            else:
                while n:
                    n -= len(_exact(stream, min(n, _COPY)))
        n = total = int.from_bytes(_exact(stream, 4), "little")
        with open(dst, "wb") as out:
            while n:
                chunk = _exact(stream, min(n, _COPY))
                out.write(chunk)
                n -= len(chunk)
        return total


def _exact(stream, n: int) -> bytes:
    b = stream.read(n)
    if len(b) != n:
        raise _Unsupported("page shorter than its values")
    return b
