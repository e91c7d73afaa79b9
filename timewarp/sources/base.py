"""What every source shares: the protocol a dataset implements, and the checks every source's clips pass.

A source turns one dataset into candidate videos with timestamped events (``scan``: metadata only,
one ``SourceVideo`` per usable video, a ``ScanProblem`` per unusable one), makes one video's bytes a
local file on demand (``open``), and says where the data comes from (``provenance``, for the card).
Everything after ``preprocess`` ignores which dataset an item came from. A new dataset is one module
with a ``Source`` subclass and one line in ``timewarp.sources.REGISTRY`` (docs/sources.md).

Flat event lists (subtitles, ActivityNet Captions) become clips through ``events_video``: every
event is validated (times parse, start < end, a caption with a letter or digit), sorted by time,
and a group of overlapping events becomes ONE clip from the group's first start to its last end,
whose caption lists the group's events in start order (``merge_overlaps``).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator, Optional, Sequence

from timewarp.core.errors import ItemError, UsageError
from timewarp.core.layout import SHUFFLE_SUFFIX, Layout
from timewarp.core.schema import ClipSpan, DroppedScene, SourceRef, SourceVideo
from timewarp.core.store import without_surrogates

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


def describe_skips(skipped: Counter) -> str:
    return "; ".join(f"{k}: {v}" for k, v in sorted(skipped.items())) or "no scenes gave a clip"


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


def walk_files(root: Path, exclude: Optional[Path] = None) -> Iterator[Path]:
    """Every file below ``root`` in sorted order; hidden folders and our own outputs (``exclude``) not walked."""
    pruned = _pruned_dirs(root, exclude)
    for dirpath, dirs, files in os.walk(root):
        here = Path(dirpath)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() not in pruned)
        for name in sorted(files):
            yield here / name


def check_name(path: Path) -> Optional[ScanProblem]:
    """A ScanProblem for a file whose name is not UTF-8, else None."""
    return None if _utf8_name(path) else _name_problem(path)


# ---------------------------------------------------------------- clips from spans and events

def select_spans(candidates: list[ClipSpan], opts: ClipOptions, skipped: Counter, drop) -> list[ClipSpan]:
    """The clips taken from candidate spans in time order: reading stops at the first one ending after
    ``max_seconds``; one shorter than ``min_clip_seconds`` is dropped (``drop(index, times, reason)``)."""
    spans: list[ClipSpan] = []
    for span in sorted(candidates, key=lambda c: (c.start, c.end, c.scene_index)):
        if span.end > opts.max_seconds:
            skipped[f"ends after {opts.max_seconds:g}s (reading stops)"] += 1
            break
        if span.end - span.start < opts.min_clip_seconds:
            drop(span.scene_index, [span.start, span.end], "shorter than min_clip_seconds")
            continue
        spans.append(span)
        if opts.max_clips and len(spans) >= opts.max_clips:
            break
    return spans


def planned_video(ref: SourceRef, source_id: str, spans: list[ClipSpan], skipped: Counter,
                  dropped: list[DroppedScene], warnings: list[str], opts: ClipOptions, **about) -> SourceVideo:
    """The SourceVideo of validated spans, or ItemError: too few clips, or a dropped part that states no time."""
    if len(spans) < opts.min_clips:
        raise ItemError(f"fewer than {opts.min_clips} clips", f"{len(spans)} clip(s); {describe_skips(skipped)}")
    lost = [d for d in dropped if d.start is None]
    if lost:
        raise ItemError("scene without any usable time",
                        f"scene {lost[0].scene_index} ({lost[0].reason}) states no time that parses: where it plays "
                        f"is unknown, so it cannot be cut out of the normal video")
    return SourceVideo(id=safe_id(source_id), source_id=source_id, ref=ref, spans=spans, dropped=dropped,
                       skipped=dict(skipped), warnings=warnings, **{"json_name": "", "title": "", "category": "", **about})


MERGED = "overlapping events merged into one clip"
DUPLICATE = "event skipped: same times and caption as an earlier one"


def merge_overlaps(events: list[tuple[float, float, int, str]]) -> tuple[list[ClipSpan], int]:
    """Valid events (start, end, index, caption) -> one ClipSpan per group of overlapping events.

    Events are taken in (start, end, index) order; an event that starts before the group's end so far
    joins it (touching, start == end, does not). The clip runs from the group's first start to its last
    end, its caption is the group's captions in that order joined by spaces, its index the first
    event's. Returns (clips, number of events merged into an earlier one).
    """
    groups: list[list[tuple[float, float, int, str]]] = []
    for ev in sorted(events):
        if groups and ev[0] < max(e[1] for e in groups[-1]):
            groups[-1].append(ev)
        else:
            groups.append([ev])
    spans = [ClipSpan(g[0][2], g[0][0], max(e[1] for e in g), " ".join(e[3] for e in g)) for g in groups]
    return spans, sum(len(g) - 1 for g in groups)


def events_video(ref: SourceRef, source_id: str, events: Sequence[tuple[Optional[float], Optional[float], object]],
                 opts: ClipOptions, **about) -> SourceVideo:
    """Plan the clips of a flat event list (start, end, caption); times in seconds on the source, None unparsed.

    Each event is validated: both times (else its known time is cut out of the normal video, and an
    event with no known time rejects the video, as for FineVideo), start < end, a caption with a
    letter or digit (NFC, spaces collapsed). Overlapping events merge (``merge_overlaps``).
    """
    skipped: Counter = Counter()
    warnings: list[str] = []
    dropped: list[DroppedScene] = []

    def drop(n: int, known: list[float], reason: str) -> None:
        skipped[reason] += 1
        dropped.append(DroppedScene(n, min(known) if known else None, max(known) if known else None, reason))

    valid, seen = [], set()
    for n, (start, end, text) in enumerate(events):
        known = [t for t in (start, end) if t is not None]
        caption = clean_text(" ".join(text.split()), f"event {n} caption", warnings) if isinstance(text, str) else ""
        if (start, end, caption) in seen and start is not None and end is not None:
            skipped[DUPLICATE] += 1   # a cue pasted twice is one event (its frames are in the first one's clip)
            continue
        seen.add((start, end, caption))
        if start is None or end is None:
            drop(n, known, "event skipped: times missing or unparseable")
        elif start >= end:
            drop(n, known, "event skipped: ends before it starts or is empty")
        elif not has_words(caption):
            drop(n, known, "event skipped: caption has no letter or digit")
        else:
            valid.append((start, end, n, caption))
    candidates, merged = merge_overlaps(valid)
    if merged:
        skipped[MERGED] += merged
    spans = select_spans(candidates, opts, skipped, drop)
    return planned_video(ref, source_id, spans, skipped, dropped, warnings, opts, **about)


# ---------------------------------------------------------------- the protocol

@dataclass(frozen=True)
class Provenance:
    """Where a source's data comes from, as the dataset card states it."""

    name: str                     # "FineVideo"
    url: str                      # the page that describes the dataset
    license: str                  # the card header's license id for the derived videos ("cc-by-4.0", "other")
    terms: str                    # terms of use the card quotes and asks users to accept
    about: str                    # what the videos are and who wrote their captions (one or two sentences)
    attribution: str = ""         # how a row of `annotations` names its original
    hub_id: Optional[str] = None  # "owner/name" on the hub: the card's source_datasets
    clips: str = ("one captioned event, or one group of overlapping events merged into one clip whose caption "
                  "lists them in start order")   # what one clip is, for the card's method section
    video_license: str = ""       # what the derived videos' license is (the card's License paragraph)
    removal: str = ""             # what to do when the source removes a video


def fill_in(what: str) -> str:
    """A placeholder the card shows where a source cannot know the fact (the user's own videos)."""
    return f"<fill in: {what}>"


class Source:
    """One dataset of videos with timestamped events. Subclasses set ``name``, ``provenance``, ``root_help``
    and implement ``scan``; ``open`` returns the video file itself unless the bytes live elsewhere."""

    name: ClassVar[str] = ""
    provenance: ClassVar[Provenance]
    root_help: ClassVar[str] = "a folder"
    accepts_file: ClassVar[bool] = False   # a single file may be given as the root (one FineVideo shard)

    def __init__(self, root, exclude: Optional[Path] = None, cache_dir: Optional[Path] = None):
        self.root = Path(root)
        self.exclude = exclude          # our own output folder when it lies under the root (never scanned)
        self.cache_dir = cache_dir      # where fetched bytes are kept (remote sources)

    def check(self, what: str = "--root_dir") -> None:
        """UsageError (one line) unless the root can hold this source."""
        root = self.root
        if root.is_dir() or (self.accepts_file and root.is_file() and root.suffix.lower() == ".parquet"):
            return
        if root.exists():
            kind = "neither a folder nor a .parquet file" if self.accepts_file else "not a folder"
            raise UsageError(f"{what} {root} is {kind}")
        raise UsageError(f"{what} {root} does not exist")

    def key(self) -> str:
        """What the selection record keeps as the input (another value would mix two datasets)."""
        return str(self.root.resolve())

    def scan(self, opts: ClipOptions) -> Iterator[SourceVideo | ScanProblem]:
        """Every video with its planned clips (metadata only), or a ScanProblem naming what is wrong."""
        raise NotImplementedError

    def empty_message(self) -> str:
        """The one-line error when ``scan`` found nothing at all."""
        return f"no {self.name} data under {self.root}: expected {self.root_help}"

    def open(self, ref: SourceRef, dst: Path) -> Path:
        """A local file with the video's bytes: the file itself, or ``dst`` (or a cached copy) written now."""
        return Path(ref.path)

    def _base(self) -> Path:
        base = self.root.resolve()
        return base.parent if base.is_file() else base

    def source_file(self, ref: SourceRef) -> str:
        """``ref``'s file relative to the root, as annotations record it (``source_file``)."""
        try:
            return Path(ref.path).relative_to(self._base()).as_posix()
        except ValueError:
            return ref.path

    def reopen(self, source_file: str, source_row: Optional[int]) -> Optional[SourceRef]:
        """The reference of an annotation's ``source_file`` / ``source_row``, or None when it is not here."""
        path = self._base() / source_file
        if not path.is_file():
            return None
        return SourceRef("parquet", str(path), row=source_row) if source_row is not None else SourceRef("files", str(path))


VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".m4v", ".avi")   # what flat-event sources take as videos


def read_text(path: Path, what: str = "caption file") -> str:
    """A text file as editors write it (UTF-8 with or without a BOM, UTF-16/32); ItemError naming ``what``
    when it cannot be read or does not decode."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ItemError(f"unreadable {what}", f"{path}: {exc.strerror or exc}")
    try:
        return decode_json_text(data).lstrip("\ufeff")
    except ItemError as exc:   # e.g. a Windows-1252 file: say which byte, and how to fix it
        raise ItemError(exc.reason.replace("metadata", what), f"{exc.detail}; save it as UTF-8") from None


def flat_source_id(path: Path, root: Path) -> str:
    """A flat-event video's id: its path below the root without the suffix ("sub/clip1"), so two folders'
    ``clip1`` differ; ``safe_id`` makes the file name."""
    try:
        rel = path.relative_to(root).with_suffix("")
    except ValueError:
        rel = Path(path.stem)
    return without_surrogates(rel.as_posix())
