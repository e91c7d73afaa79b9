"""Memory benchmark: preprocess a few videos out of a >= 1 GB FineVideo parquet shard.

The shard is made of the benchmark's real generated videos repeated under distinct ids (every row
decodes), written in two layouts, in a temp dir removed afterwards:

* ``pyarrow default`` (``pq.write_table``, what ``timewarp.sample_data.write_shard`` writes): one row
  group, the ``mp4`` column dictionary-encoded, i.e. every video inside one snappy-compressed
  dictionary page. A row's bytes can only be reached by decompressing the page from its start,
  so the reader streams through (never holds) the videos before it;
* ``page per video`` (``use_dictionary=False``, one data page per row, as the Hub now writes
  video columns): a row's page is found from the page headers and read alone.

For each layout: peak RSS of the whole preprocess process tree (target < 600 MB), the shard's bytes
read from disk (the shard is dropped from the page cache first, then its resident pages are
counted with mincore), and the chosen videos' own bytes for comparison.

Standalone: ``python benchmarks/bench_memory.py [--gb 1] [--chosen 3] [--height 720]``.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def resident_bytes(path: Path) -> int:
    """Bytes of ``path`` now in the page cache (mincore over a shared read-only mapping)."""
    size = path.stat().st_size
    if size == 0:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            pages = (size + PAGE - 1) // PAGE
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
            return sum(1 for b in bytes(vec) if b & 1) * PAGE
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def write_big_shard(path: Path, sources: list[tuple[bytes, dict]], gb: float, layout: str) -> int:
    """Rows cycling through ``sources`` (distinct ids) until the shard holds >= ``gb`` GB; row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    per = sum(len(b) for b, _ in sources) / len(sources)
    n = max(len(sources), int(gb * 1e9 / per) + 1)
    mp4, meta = [], []
    for i in range(n):
        b, m = sources[i % len(sources)]
        m = json.loads(json.dumps(m))
        m["original_video_filename"] = f"mem{i:05d}.mp4"
        m["original_json_filename"] = f"mem{i:05d}.json"
        # a trailing top-level 'free' box makes every row's bytes distinct (else a dictionary-encoded
        # column stores the repeated video once) and is ignored by demuxers
        pad = f"timewarp memory benchmark row {i}".encode()
        mp4.append(b + struct.pack(">I4s", 8 + len(pad), b"free") + pad)
        meta.append(m)
    table = pa.table({"mp4": pa.array(mp4, pa.binary()), "json": pa.array(meta)})
    del mp4
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "dictionary":
        pq.write_table(table, path)
    else:
        pq.write_table(table, path, use_dictionary=False, write_batch_size=1, data_page_size=1 << 20)
    return n


def child(argv: list[str]) -> int:
    """Runs in its own process: preprocess ``chosen`` videos of the shard; prints JSON."""
    import logging

    from timewarp.core.layout import Layout
    from timewarp.core.parallel import Executor
    from timewarp.preprocess import preprocess

    root, out, chosen, workers, preset, crf = argv[0], argv[1], int(argv[2]), int(argv[3]), argv[4], int(argv[5])
    logging.disable(logging.WARNING)
    t0 = time.perf_counter()
    stats = preprocess.run(preprocess.Config(layout=Layout(Path(out)), root_dir=root, scale=chosen, test_fraction=0.0,
                                             preset=preset, crf=crf), Executor(workers=workers))
    anns = sorted(Path(out, "normal", "annotations").glob("*.json"))
    rows = [json.loads(p.read_text()).get("source_row") for p in anns]
    print(json.dumps({"seconds": time.perf_counter() - t0, "rows": rows, "done": len(anns), "stats_out": str(stats)[:200]}))
    return 0


def memory_benchmark(work: Path, plan: dict, gb: float = 1.0, chosen: int = 3, workers: int = 1,
                     preset: str = "veryfast", crf: int = 23, layouts=("dictionary", "pages")) -> dict:
    """Build the big shard(s) under ``work`` next to ``plan``'s videos, measure, remove; result lines."""
    from bench_video import run_child
    import pyarrow.parquet as pq

    small = work / "finevideo" / "data" / "train-00000-of-00001.parquet"
    tbl = pq.read_table(small)
    sources = list(zip(tbl.column("mp4").to_pylist(), tbl.column("json").to_pylist()))
    del tbl
    w, h = plan["size"]
    lines = [f"memory: preprocess --scale {chosen} --workers {workers} from one shard of >= {gb:g} GB "
             f"({len(sources)} real {w}x{h} videos repeated under distinct ids)"]
    lines.append(f"{'shard layout':<34} {'shard MB':>9} {'rows':>5} {'seconds':>8} {'peak RSS MB':>12} {'peak PSS MB':>12} "
                 f"{'shard MB read':>14} {'chosen MB':>10}")
    out: dict = {"layouts": {}}
    for layout in layouts:
        mem_dir = Path(tempfile.mkdtemp(prefix="mem-", dir=work))
        try:
            shard = mem_dir / "finevideo" / "data" / "train-00000-of-00001.parquet"
            n = write_big_shard(shard, sources, gb, layout)
            size = shard.stat().st_size
            drop_cache(shard)
            before = resident_bytes(shard)
            res = run_child([__file__, "--_child", str(mem_dir / "finevideo"), str(mem_dir / "out"), str(chosen),
                             str(workers), preset, str(crf)])
            read = resident_bytes(shard) - before
            chosen_bytes = sum(len(sources[r % len(sources)][0]) for r in res["rows"])  # + a few pad bytes
            name = {"dictionary": "pyarrow default (1 dict page)", "pages": "page per video (PLAIN)"}[layout]
            ok = res["peak_rss"] < 600 * 2**20
            lines.append(f"{name:<34} {size / 2**20:>9.0f} {n:>5} {res['seconds']:>8.2f} "
                         f"{res['peak_rss'] / 2**20:>12.0f} {res['peak_pss'] / 2**20:>12.0f} {read / 2**20:>14.0f} {chosen_bytes / 2**20:>10.0f}"
                         f"   RSS < 600 MB: {'PASS' if ok else 'MISS'}  (rows {res['rows']})")
            out["layouts"][layout] = {"shard_bytes": size, "rows": n, "seconds": res["seconds"],
                                      "peak_rss": res["peak_rss"], "peak_pss": res["peak_pss"], "shard_bytes_read": read,
                                      "chosen_bytes": chosen_bytes, "chosen_rows": res["rows"],
                                      "cache_before": before}
        finally:
            shutil.rmtree(mem_dir, ignore_errors=True)
    out["lines"] = lines
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_child":
        return child(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gb", type=float, default=1.0)
    p.add_argument("--chosen", type=int, default=3)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--videos", type=int, default=4, help="distinct real videos to repeat (default: 4)")
    a = p.parse_args(argv)
    from bench_video import generate

    work = Path(tempfile.mkdtemp(prefix="timewarp-membench-"))
    try:
        plan = generate(work, a.videos, a.duration, a.height, 6)
        res = memory_benchmark(work, plan, a.gb, a.chosen, a.workers)
        print("\n".join(res["lines"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
