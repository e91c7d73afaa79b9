"""Reading one value of a Parquet binary column without decoding its row group.

Why: FineVideo's shards keep every video of a shard in the ``mp4`` column of one row group, and
pyarrow cannot start decoding a column chunk at a given row. ``ParquetFile.iter_batches`` decodes
the row group from its start and, for a dictionary-encoded chunk, the whole dictionary page (every
video of the row group). Measured earlier: ~650 MB-1.4 GB peak RSS to read one value of a
dictionary-encoded shard with pyarrow, ~17 MB with this reader. Re-measured (pyarrow 26, one 10 MB
value, row 15 of a 200 MB snappy shard of 20 rows, peak RSS over the ~65 MB of imports): this
reader +10 MB (0.1 s); pyarrow default +655 MB (dictionary) / +495 MB (PLAIN, a page per value);
pyarrow buffered (``buffer_size`` 1 MB, ``pre_buffer=False``) +457 MB in both layouts. The
buffered pass is the fallback for layouts the reader does not handle: bounded by the row group,
not by the file.

How: ``PageReader`` walks the column chunk's page headers (Thrift compact protocol, a few dozen
bytes each; the field ids are named below as in ``parquet.thrift``), seeks over the pages before
the wanted row and decodes only the page holding it; a value inside a big PLAIN page or a
dictionary page is streamed out of that page (uncompressed, snappy or gzip) without holding the
page. Anything it does not handle (nested columns, zstd/brotli/lz4 pages too big to decompress at
once, unknown encodings) raises ``Unsupported`` and ``extract_value`` reads the row with pyarrow,
buffered. ``tests/test_parquet_reader.py`` checks it byte for byte against pyarrow on every layout.
"""
from __future__ import annotations

import io
import logging
import zlib
from pathlib import Path
from typing import Callable, Optional

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger("timewarp.sources.parquet_pages")


def extract_value(path, row: int, column: str, dst: Path, label: str = "", opener: Optional[Callable] = None,
                  metadata=None) -> Optional[int]:
    """Write the ``column`` value of file row ``row`` of the Parquet file ``path`` to ``dst``.

    Returns its length (0 for a null or empty value), or None when the file has no such row.
    Raises ``OSError`` / ``pyarrow.ArrowException`` for a file pyarrow cannot read either.
    ``opener()`` gives a seekable binary file of the Parquet bytes instead of ``path`` (a remote file
    read by ranges, ``timewarp.sources.hub``); ``metadata``: its footer, already read.
    """
    label = label or f"{path}#{row}"
    opener = opener or (lambda: open(path, "rb", buffering=1 << 16))
    pf = pq.ParquetFile(opener(), metadata=metadata)
    for rg in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(rg).num_rows
        if row < n:
            break
        row -= n
    else:
        return None
    try:
        return PageReader(pf, opener, rg, column).extract(row, dst)
    except Unsupported as exc:
        log.debug("%s: page reader: %s; reading with pyarrow", label, exc)
    except (IndexError, ValueError, OverflowError) as exc:  # a page the reader misparsed: pyarrow knows better
        log.warning("%s: page reader failed (%s: %s); reading with pyarrow", label, type(exc).__name__, exc)
    return extract_with_pyarrow(opener(), rg, row, column, dst, metadata)


def extract_with_pyarrow(source, rg: int, row: int, column: str, dst: Path, metadata=None) -> Optional[int]:
    """Fallback: stream row group ``rg`` one row at a time through a bounded read buffer up to ``row``."""
    pf = pq.ParquetFile(source, buffer_size=_COPY, pre_buffer=False, metadata=metadata)
    for i, batch in enumerate(pf.iter_batches(batch_size=1, row_groups=[rg], columns=[column], use_threads=False)):
        if i == row:
            value = batch.column(0)[0].as_py()
            if not value:
                return 0
            with open(dst, "wb") as fh:
                fh.write(value)
            return len(value)
    return None


class Unsupported(Exception):
    """A page layout this reader does not handle (the caller falls back to pyarrow)."""


# parquet.thrift: PageType and Encoding values
_PAGE_DATA, _PAGE_INDEX, _PAGE_DICT, _PAGE_DATA_V2 = 0, 1, 2, 3
_ENC_PLAIN, _ENC_PLAIN_DICT, _ENC_RLE, _ENC_RLE_DICT = 0, 2, 3, 8

# parquet.thrift field ids of the structs read here (a struct decodes to {field id: value})
PH_TYPE, PH_UNCOMPRESSED_SIZE, PH_COMPRESSED_SIZE = 1, 2, 3      # PageHeader
PH_DATA_HEADER, PH_DICT_HEADER, PH_DATA_HEADER_V2 = 5, 7, 8       # PageHeader: the per-type header
DP_NUM_VALUES, DP_ENCODING, DP_DEF_LEVEL_ENCODING = 1, 2, 3        # DataPageHeader
DICT_NUM_VALUES, DICT_ENCODING = 1, 2                              # DictionaryPageHeader
DP2_NUM_ROWS, DP2_ENCODING = 3, 4                                  # DataPageHeaderV2
DP2_DEF_LEVELS_BYTES, DP2_REP_LEVELS_BYTES, DP2_IS_COMPRESSED = 5, 6, 7

# Thrift compact-protocol type ids
T_TRUE, T_FALSE, T_BYTE, T_I16, T_I32, T_I64, T_DOUBLE, T_BINARY, T_LIST, T_SET, T_MAP, T_STRUCT = range(1, 13)

_COPY = 1 << 20         # values are copied out in chunks of this size; the pyarrow fallback's read buffer
_WHOLE_PAGE = 64 << 20  # pages up to this size are decompressed at once (C++ codec), bigger ones streamed


class _Thrift:
    """Minimal Thrift compact-protocol decoder over a binary file object (structs as {id: value})."""

    def __init__(self, fh):
        self.fh = fh

    def byte(self) -> int:
        b = self.fh.read(1)
        if not b:
            raise Unsupported("truncated page header")
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
                raise Unsupported("bad varint in page header")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, t: int):
        if t in (T_TRUE, T_FALSE):
            return t == T_TRUE
        if t == T_BYTE:
            return self.byte()
        if t in (T_I16, T_I32, T_I64):
            return self.zigzag()
        if t == T_DOUBLE:
            return self.fh.read(8)
        if t == T_BINARY:
            return self.fh.read(self.varint())
        if t in (T_LIST, T_SET):
            h = self.byte()
            n, et = h >> 4, h & 0x0F
            if n == 15:
                n = self.varint()
            return [self.byte() == 1 if et in (T_TRUE, T_FALSE) else self.value(et) for _ in range(n)]
        if t == T_MAP:
            n = self.varint()
            if not n:
                return {}
            kv = self.byte()
            return {self.value(kv >> 4): self.value(kv & 0x0F) for _ in range(n)}
        if t == T_STRUCT:
            return self.struct()
        raise Unsupported(f"thrift type {t}")

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
        raise Unsupported("short level / index run")
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
            raise Unsupported("snappy data runs past its page")
        b = self.fh.read(n)
        if len(b) != n:
            raise Unsupported("truncated snappy page")
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
                raise Unsupported("snappy copy reaches past the kept window")
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


class PageReader:
    def __init__(self, pf, opener: Callable, rg: int, column: str):
        md = pf.metadata
        idx = next((i for i in range(md.num_columns) if md.schema.column(i).path == column), None)
        if idx is None:
            raise Unsupported(f"no flat column {column}")
        desc = md.schema.column(idx)
        if desc.max_repetition_level != 0 or desc.max_definition_level > 1 or desc.physical_type != "BYTE_ARRAY":
            raise Unsupported("nested or non-binary column")
        self.max_def = desc.max_definition_level
        self.chunk = md.row_group(rg).column(idx)
        self.codec = self.chunk.compression.upper()
        if self.codec not in ("UNCOMPRESSED", "SNAPPY", "GZIP", "ZSTD", "BROTLI", "LZ4_RAW"):
            raise Unsupported(f"codec {self.codec}")
        self.opener = opener   # () -> a seekable binary file of the Parquet bytes

    def _decompress(self, data: bytes, size: int) -> bytes:
        if self.codec == "UNCOMPRESSED":
            return data
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
        with self.opener() as fh:
            fh.seek(start)
            th = _Thrift(fh)
            while fh.tell() < end:
                header = th.struct()
                ptype = header.get(PH_TYPE)
                usize, csize = header.get(PH_UNCOMPRESSED_SIZE), header.get(PH_COMPRESSED_SIZE)
                if usize is None or csize is None or csize < 0:
                    raise Unsupported("page header without sizes")
                payload = fh.tell()
                if ptype == _PAGE_DICT:
                    dh = header.get(PH_DICT_HEADER) or {}
                    if dh.get(DICT_ENCODING, _ENC_PLAIN) not in (_ENC_PLAIN, _ENC_PLAIN_DICT):
                        raise Unsupported("dictionary page not PLAIN")
                    dictionary = (payload, csize, usize, dh.get(DICT_NUM_VALUES, 0))
                elif ptype in (_PAGE_DATA, _PAGE_DATA_V2):
                    h = header.get(PH_DATA_HEADER if ptype == _PAGE_DATA else PH_DATA_HEADER_V2) or {}
                    num = h.get(DP2_NUM_ROWS) if ptype == _PAGE_DATA_V2 else h.get(DP_NUM_VALUES)
                    if num is None:
                        raise Unsupported("data page without a value count")
                    if row < seen + num:
                        if hasattr(fh, "limit_read_ahead"):   # a remote file: fetch nothing past this page
                            fh.limit_read_ahead(payload + csize)
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
        encoding = h.get(DP_ENCODING) if ptype == _PAGE_DATA else h.get(DP2_ENCODING)
        if encoding == _ENC_PLAIN and csize > _COPY:
            # a big page of PLAIN values (writers put many videos in one page): stream it
            payload = fh.tell()
            if ptype == _PAGE_DATA:
                stream = self._stream(fh, csize, usize)
                if stream is not None:
                    levels = None
                    if self.max_def:
                        if h.get(DP_DEF_LEVEL_ENCODING, _ENC_RLE) != _ENC_RLE:
                            raise Unsupported("definition levels not RLE")
                        n = int.from_bytes(_exact(stream, 4), "little")
                        levels = _hybrid(_exact(stream, n), 0, n, 1, k + 1)
                    return self._plain_value(fh, stream, levels, k, dst)
            else:
                dl, rl = h.get(DP2_DEF_LEVELS_BYTES, 0), h.get(DP2_REP_LEVELS_BYTES, 0)
                level_bytes = fh.read(dl + rl)
                body = csize - dl - rl
                stream = (self._stream(fh, body, usize - dl - rl) if h.get(DP2_IS_COMPRESSED, True)
                          else _FileSlice(fh, body))
                if stream is not None:
                    levels = _hybrid(level_bytes, rl, rl + dl, 1, k + 1) if self.max_def else None
                    return self._plain_value(fh, stream, levels, k, dst)
            fh.seek(payload)
        raw = fh.read(csize)
        if len(raw) != csize:
            raise Unsupported("truncated data page")
        if ptype == _PAGE_DATA:
            data = memoryview(self._decompress(raw, usize))
            pos = 0
            levels = None
            if self.max_def:
                if h.get(DP_DEF_LEVEL_ENCODING, _ENC_RLE) != _ENC_RLE:
                    raise Unsupported("definition levels not RLE")
                n = int.from_bytes(data[:4], "little")
                levels = _hybrid(data, 4, 4 + n, 1, k + 1)
                pos = 4 + n
        else:
            dl, rl = h.get(DP2_DEF_LEVELS_BYTES, 0), h.get(DP2_REP_LEVELS_BYTES, 0)
            levels_raw = raw[:dl + rl]
            body = raw[dl + rl:]
            if h.get(DP2_IS_COMPRESSED, True):
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
                raise Unsupported("value runs past its page")
            with open(dst, "wb") as out:
                out.write(data[pos + 4:pos + 4 + n])
            return n
        if encoding in (_ENC_RLE_DICT, _ENC_PLAIN_DICT):
            if dictionary is None:
                raise Unsupported("dictionary-encoded page without a dictionary")
            width = data[pos]
            index = _hybrid(data, pos + 1, len(data), width, k + 1)[k] if width else 0
            del data, raw
            return self._from_dictionary(fh, dictionary, index, dst)
        raise Unsupported(f"value encoding {encoding}")

    def _from_dictionary(self, fh, dictionary, index: int, dst: Path) -> int:
        payload, csize, usize, count = dictionary
        if index >= count:
            raise Unsupported("dictionary index out of range")
        fh.seek(payload)
        stream = self._stream(fh, csize, usize)
        if stream is None:
            raise Unsupported(f"streaming a {self.codec} dictionary page")
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
                    raise Unsupported("value runs past its page")
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
        raise Unsupported("page shorter than its values")
    return b
