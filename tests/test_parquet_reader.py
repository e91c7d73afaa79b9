"""extract_mp4 reads one row's bytes by walking page headers; it must agree with pyarrow on every layout."""
from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from timewarp.sources import parquet_pages
from timewarp.core.errors import ItemError
from timewarp.sources.finevideo import extract_mp4
from timewarp.core.schema import SourceRef


def _values(n=17, seed=1):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        size = rng.choice([1, 5, 100, 7000, 70000, 300000])
        if i % 7 == 3:
            out.append(None)
        elif rng.random() < 0.3:  # compressible
            out.append((b"abcdefgh" * (size // 8 + 1))[:size] + rng.randbytes(rng.randint(0, 50)))
        else:
            out.append(rng.randbytes(size))
    return out


LAYOUTS = [dict(compression=c, use_dictionary=d, data_page_version=v, row_group_size=r)
           for c in ("snappy", "none", "gzip", "zstd") for d in (True, False) for v in ("1.0", "2.0") for r in (None, 5)]
LAYOUTS += [dict(compression="snappy", use_dictionary=True, dictionary_pagesize_limit=20000),
            dict(compression="snappy", use_dictionary=False, data_page_size=10),
            dict(compression="snappy", use_dictionary=False, data_page_size=10_000_000)]


@pytest.mark.parametrize("stream_pages", [False, True], ids=["whole-page", "streamed"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_extract_matches_pyarrow(layout, stream_pages, tmp_path, monkeypatch):
    """Both ways of reading a page: decompressed whole (small pages) and streamed (pages too big to hold)."""
    if stream_pages:
        monkeypatch.setattr(parquet_pages, "_WHOLE_PAGE", 0)
    values = _values()
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"mp4": pa.array(values, pa.binary()), "json": pa.array([{"a": i} for i in range(len(values))])}),
                   path, **layout)
    fallbacks = []
    real = parquet_pages.extract_with_pyarrow
    monkeypatch.setattr(parquet_pages, "extract_with_pyarrow", lambda *a: (fallbacks.append(a), real(*a))[1])
    expected = pq.read_table(path, columns=["mp4"]).column(0).to_pylist()
    assert expected == values
    for row, want in enumerate(values):
        dst = tmp_path / f"{row}.bin"
        if want:
            extract_mp4(SourceRef("parquet", str(path), row=row), dst)
            assert dst.read_bytes() == want, row
        else:
            with pytest.raises(ItemError, match="empty mp4 bytes"):
                extract_mp4(SourceRef("parquet", str(path), row=row), dst)
    with pytest.raises(ItemError, match="out of range"):
        extract_mp4(SourceRef("parquet", str(path), row=len(values)), tmp_path / "x.bin")
    if layout.get("compression") in ("snappy", "none", "gzip"):
        assert not fallbacks  # the page reader, not pyarrow's whole-row-group decode, did the work
