"""Parquet shards on the Hugging Face hub (``hf://datasets/OWNER/NAME[/folder]``), read by byte ranges.

Listing goes through ``huggingface_hub``'s ``HfFileSystem`` (it honours ``HF_ENDPOINT`` and the token of
``hf auth login`` / ``HF_TOKEN``); bytes are read with explicit HTTP range requests on the file's resolve
URL, never through fsspec's read-ahead cache (which reads megabytes past what is asked). What is read:

- per shard, its footer (the last 8 bytes, then the metadata) and, per row group, the one byte span
  that holds every leaf of the ``json`` column: selection decodes these with pyarrow from memory;
- per chosen video, the page headers of its row group's ``mp4`` chunk up to its page (a few KB each)
  and its value (``timewarp.sources.parquet_pages``), read ahead in doubling steps, so at most 2x the value.

Everything fetched is kept under ``<out>/cache/sources/hub/``: the footer and json spans of each
shard (about 1/400 of a FineVideo shard) and each chosen video's mp4 (its size in the shard). A rerun,
final_assertions and publish read these files and fetch nothing again; deleting the folder is safe
(it is fetched again when needed). Requests are retried with backoff on dropped connections, 429
and 5xx (``huggingface_hub.utils.http_backoff``), and on a short body.
"""
from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from timewarp.core.errors import ItemError, UsageError
from timewarp.core.store import TEMP_PREFIXES, read_json, write_json

log = logging.getLogger("timewarp.hub")

PREFIX = "hf://"
MIN_READ = 4096              # bytes fetched at least on a jump (a page header is ~30-100 bytes)
MAX_READ = 8 << 20           # read-ahead of a sequential read doubles up to this
RETRIES = 6                  # http_backoff's retries (429, 5xx, connection errors): waits BACKOFF, 2x, ... <= 16x s
BACKOFF = 0.5
REREADS = 3                  # and ours on top, for a body shorter than asked or an error after those retries


def is_hub(root) -> bool:
    return str(root).startswith("hf:/")   # also a Path("hf://...") that collapsed the slashes


def hub_url(root) -> str:
    """``root`` as an ``hf://`` URL without a trailing slash."""
    return PREFIX + str(root)[len("hf:"):].lstrip("/").rstrip("/")


class RangeFile(io.RawIOBase):
    """A seekable read-only file over ``fetch(start, end) -> bytes``: what was fetched is kept (in memory,
    and on disk under ``store`` when given); a read fetches only what is not kept, with read-ahead that
    doubles while reads are sequential and starts again at MIN_READ after a jump."""

    def __init__(self, fetch: Callable[[int, int], bytes], size: int, store: Optional[Path] = None):
        super().__init__()
        self.fetch, self.size, self.store = fetch, size, store
        self.pos = 0
        self.spans: dict[int, bytes] = {}   # start -> bytes, disjoint
        self._ahead, self._last = MIN_READ, -1
        self._limit = size   # read-ahead stops here (the end of the page being read)
        if store is not None and store.is_dir():
            for p in store.glob("*.bin"):
                a, _, b = p.stem.partition("-")
                if a.isdigit() and b.isdigit():
                    data = p.read_bytes()
                    if len(data) == int(b) - int(a):
                        self.spans[int(a)] = data
                    else:   # not what its name says (a disk that lost a write): fetched again
                        log.warning("%s: %d bytes, its name says %d; fetching them again", p, len(data), int(b) - int(a))
                        p.unlink(missing_ok=True)

    def readable(self) -> bool:
        return True

    def limit_read_ahead(self, end: int) -> None:
        """Read ahead no further than ``end`` (the reader knows where the value it streams ends)."""
        self._limit = min(self.size, end)

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else self.size + offset
        return self.pos

    def readinto(self, b) -> int:
        data = self.get(self.pos, min(self.size, self.pos + len(b)))
        b[:len(data)] = data
        self.pos += len(data)
        return len(data)

    def _kept(self, a: int) -> Optional[tuple[int, bytes]]:
        return next(((s, d) for s, d in self.spans.items() if s <= a < s + len(d)), None)

    def prefetch(self, a: int, b: int) -> None:
        """Make [a, b) kept with as few requests as its missing parts need, fetching nothing more."""
        pos = a
        while pos < b:
            kept = self._kept(pos)
            if kept:
                pos = kept[0] + len(kept[1])
                continue
            nxt = min((s for s in self.spans if s > pos), default=self.size)
            end = min(b, nxt)
            self._add(pos, self.fetch(pos, end))
            pos = end

    def _add(self, a: int, data: bytes) -> None:
        self.spans[a] = data
        if self.store is not None:
            self.store.mkdir(parents=True, exist_ok=True)
            tmp = temp_beside(self.store / f"{a}-{a + len(data)}.bin")
            tmp.write_bytes(data)
            keep(tmp, self.store / f"{a}-{a + len(data)}.bin")
        elif len(self.spans) > 8:   # streaming a value: keep memory bounded
            del self.spans[min(self.spans, key=lambda s: s if s + len(self.spans[s]) <= self.pos else self.size)]

    def get(self, a: int, b: int) -> bytes:
        """Bytes [a, b), fetching the missing part with read-ahead."""
        if b <= a:
            return b""
        kept = self._kept(a)
        if kept is None:
            self._ahead = min(self._ahead * 2, MAX_READ) if a == self._last else MIN_READ
            nxt = min((s for s in self.spans if s > a), default=self.size)
            limit = self._limit if a < self._limit else self.size
            self.prefetch(a, min(nxt, max(b, min(limit, a + self._ahead))))
            kept = self._kept(a)
        s, data = kept
        out = data[a - s:b - s]
        self._last = a + len(out)
        return out if len(out) == b - a else out + self.get(a + len(out), b)


class Hub:
    """One ``hf://`` root: its parquet files, their sizes, and ranged reads with retries."""

    def __init__(self, url: str):
        try:
            from huggingface_hub import HfFileSystem
        except ImportError:
            raise UsageError(f"reading {url} needs huggingface_hub (in requirements.txt): python3 -m pip install -r requirements.txt") from None
        self.url = hub_url(url)
        endpoint = os.environ.get("HF_ENDPOINT") or None   # read now: huggingface_hub reads it once, at import
        self.fs = HfFileSystem(endpoint=endpoint) if endpoint else HfFileSystem()
        self._headers = None

    def _ask(self, what: str, call):
        """``call()``, its failures as one-line UsageErrors naming the option ``what`` and the root."""
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - not found, network or auth: one line
            why = " ".join(str(exc).split())
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if isinstance(exc, FileNotFoundError) or status == 404:
                raise UsageError(f"{what} {self.url} not found on the hub ({why[:200]}); for a gated dataset "
                                 "accept its terms on its page and log in (hf auth login, or HF_TOKEN)") from None
            raise UsageError(f"{what} {self.url}: cannot list it ({type(exc).__name__}: {why})"[:400]) from None

    def check(self, what: str = "--root_dir") -> None:
        """UsageError (one line) unless the root exists on the hub (one metadata request)."""
        self._ask(what, lambda: self.fs.info(self.url))

    def files(self) -> list[tuple[str, int, str]]:
        """(path, size, content id) of every ``*.parquet`` below the root, sorted by path."""
        found = self._ask("--root_dir", lambda: self.fs.find(self.url, detail=True))
        out = []
        for path, info in sorted(found.items()):
            if path.lower().endswith(".parquet") and info.get("type") != "directory":
                lfs = info.get("lfs") or {}
                oid = (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) or info.get("blob_id") or ""
                out.append((path, int(info["size"]), str(oid)))
        return out

    def size(self, path: str) -> int:
        return int(self.fs.info(path)["size"])

    def relative(self, path: str) -> str:
        """``path`` (as the file system lists it) relative to the root."""
        base = self.url[len(PREFIX):] if is_hub(self.url) else self.url
        path = path[len(PREFIX):] if is_hub(path) else path
        return path[len(base):].lstrip("/") if path.startswith(base) else path

    def fetch(self, path: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of ``path`` by one range request; retried with backoff on a dropped connection,
        429 and 5xx, or a body shorter than asked."""
        from huggingface_hub.utils import hf_raise_for_status, http_backoff
        if self._headers is None:
            self._headers = self.fs._api._build_hf_headers()
        url = self.fs.url(path)
        wait = BACKOFF
        for attempt in range(REREADS + 1):
            try:
                r = http_backoff("GET", url, headers={**self._headers, "Range": f"bytes={start}-{end - 1}"},
                                 max_retries=RETRIES, base_wait_time=BACKOFF, max_wait_time=16 * BACKOFF,
                                 follow_redirects=True)
                hf_raise_for_status(r)
                data = r.content
                if r.status_code == 206 and len(data) == end - start:
                    return data
                if r.status_code == 200 and len(data) >= end:   # a server that ignores Range
                    return data[start:end]
                problem = f"{len(data)} bytes for a range of {end - start} (status {r.status_code})"
            except Exception as exc:  # noqa: BLE001 - anything the retries of http_backoff did not absorb
                problem = f"{type(exc).__name__}: {exc}"
            if attempt == REREADS:
                raise ItemError("hub read failed", f"{path} bytes {start}-{end}: {problem}"[:300])
            log.info("%s bytes %d-%d: %s; retrying in %.1fs", path, start, end, problem, wait)
            time.sleep(wait)
            wait = min(wait * 2, 16 * BACKOFF)
        raise AssertionError("unreachable")

    def open(self, path: str, size: int, store: Optional[Path] = None) -> RangeFile:
        return RangeFile(lambda a, b: self.fetch(path, a, b), size, store)


def ahead(items, window: int = 8):
    """(key, result getter) for each (key, work) of ``items``, in order, with up to ``window`` works running in
    threads ahead of the consumer (network waits overlap; memory holds at most ``window`` results)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor
    items = iter(items)
    with ThreadPoolExecutor(window) as pool:
        queue: deque = deque()
        for key, work in items:
            queue.append((key, pool.submit(work)))
            if len(queue) >= window:
                k, fut = queue.popleft()
                yield k, fut.result
        while queue:
            k, fut = queue.popleft()
            yield k, fut.result


def footer(rf: RangeFile):
    """The Parquet footer (pyarrow FileMetaData) of a RangeFile: two exact reads, kept like any span."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    if rf.size < 12:
        raise ValueError("file too small to be Parquet")
    tail = rf.get(rf.size - 8, rf.size)
    if tail[4:] != b"PAR1":
        raise ValueError("not a Parquet file (no PAR1 at its end)")
    n = int.from_bytes(tail[:4], "little")
    if n + 8 > rf.size:
        raise ValueError("footer longer than the file")
    rf.prefetch(rf.size - 8 - n, rf.size)
    meta = rf.get(rf.size - 8 - n, rf.size)
    return pq.read_metadata(pa.BufferReader(b"PAR1" + meta))


def column_spans(md, column: str) -> list[tuple[int, int]]:
    """Per row group, the byte span [start, end) holding every leaf column chunk of top-level ``column``."""
    spans = []
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        lo, hi = None, None
        for i in range(rg.num_columns):
            c = rg.column(i)
            if c.path_in_schema.split(".")[0] != column:
                continue
            start = min(o for o in (c.data_page_offset, c.dictionary_page_offset if c.has_dictionary_page else None)
                        if o is not None and o > 0) if c.data_page_offset else 0
            lo = start if lo is None else min(lo, start)
            hi = start + c.total_compressed_size if hi is None else max(hi, start + c.total_compressed_size)
        if lo is not None:
            spans.append((lo, hi))
    return spans


def reset_store(store: Path, oid: str, size: int) -> None:
    """Empty ``store`` when it holds spans of another version of the file (another content id or size)."""
    ident = {"oid": oid, "size": size}
    mark = store / "file.json"
    try:
        if mark.is_file() and read_json(mark) == ident:
            return
    except (OSError, ValueError):
        pass
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True, exist_ok=True)
    write_json(mark, ident)


# ---------------------------------------------------------------- cache files: whole or absent

def temp_beside(target: Path) -> Path:
    """A new empty file of its own beside ``target`` (two processes fetching the same bytes never share one),
    named ``.tmp-...`` so that a killed run's leftovers are removed by the next preprocess (``remove_stale_temp``)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{TEMP_PREFIXES[0]}{target.name[:60]}-", suffix=".part", dir=target.parent)
    os.close(fd)
    return Path(name)


def keep(part: Path, target: Path, mark: Optional[dict] = None) -> None:
    """Make the finished ``part`` the cache file ``target``: its bytes reach the disk, then one rename; with
    ``mark``, ``<target>.json`` (its size and ``mark``) is written last and says the file is whole."""
    with open(part, "rb+") as fh:
        os.fsync(fh.fileno())
    if mark is not None:
        marker(target).unlink(missing_ok=True)
    os.replace(part, target)
    if mark is not None:
        write_json(marker(target), {"size": target.stat().st_size, **mark})


def marker(target: Path) -> Path:
    return target.with_name(target.name + ".json")


def kept_whole(target: Path, mark: dict) -> bool:
    """True when ``target`` was finished by ``keep(..., mark)`` with this ``mark`` and still has its size.
    A file without its marker (a run killed between the rename and the marker, a file put there by hand),
    a truncated one, or one kept for another version of its shard is not whole: it is fetched again."""
    try:
        want = read_json(marker(target))
        return target.stat().st_size == want.pop("size") and want == mark
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
