"""Bytes read from a hub for `preprocess --scale N` on hf://, against the shards' bytes (loopback hub).

    PYTHONPATH=. python3 benchmarks/bench_hub.py [--shards 6] [--per_shard 8] [--scales 2 8]

Serves generated FineVideo-shaped shards (one data page per mp4 value, as in FineVideo) from the
loopback hub of tests/fake_hub.py, runs preprocess on hf:// for each scale into a fresh output, and
prints bytes read split into selection (footers + json column) and videos, next to what is needed
(computed from the files with pyarrow) and the shard bytes; then the same proportions applied to
FineVideo (1,357 shards, 43,751 videos, ~600 GB) for --scale 500 and 5000.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fake_hub import FakeHub  # noqa: E402

from timewarp.core.layout import Layout  # noqa: E402
from timewarp.core.parallel import Executor  # noqa: E402
from timewarp.preprocess import preprocess  # noqa: E402
from timewarp.sample_data import metadata_for, random_spec, render_video  # noqa: E402
from timewarp.core.store import read_json  # noqa: E402


def main() -> None:
    import random
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=6)
    ap.add_argument("--per_shard", type=int, default=8)
    ap.add_argument("--scales", type=int, nargs="+", default=[2, 8])
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    rng = random.Random(3)
    rows = []
    for i in range(6):
        spec = random_spec(f"b{i}", rng, n_scenes=4, fps="30")
        render_video(spec, tmp / f"b{i}.mp4")
        rows.append(((tmp / f"b{i}.mp4").read_bytes(), metadata_for(spec)))
    repo = tmp / "repo"
    (repo / "data").mkdir(parents=True)
    for s in range(a.shards):
        shard = []
        for r in range(a.per_shard):
            mp4, meta = rows[(s * a.per_shard + r) % len(rows)]
            meta = copy.deepcopy(meta)
            meta["original_video_filename"] = f"v{s:03d}{r:03d}.mp4"
            shard.append((mp4, meta))
        t = pa.table({"mp4": pa.array([x[0] for x in shard], pa.binary()), "json": pa.array([x[1] for x in shard])})
        pq.write_table(t, repo / "data" / f"train-{s:05d}.parquet", row_group_size=a.per_shard, data_page_size=1,
                       write_batch_size=1, use_dictionary=["json"])
    shards = sorted((repo / "data").glob("*.parquet"))
    total = sum(p.stat().st_size for p in shards)
    meta_need = 0
    for p in shards:
        with open(p, "rb") as fh:
            fh.seek(-8, 2)
            meta_need += int.from_bytes(fh.read(4), "little") + 8
        md = pq.ParquetFile(p).metadata
        meta_need += sum(md.row_group(g).column(i).total_compressed_size for g in range(md.num_row_groups)
                         for i in range(md.num_columns) if md.row_group(g).column(i).path_in_schema.startswith("json"))
    values = {(p.relative_to(repo).as_posix(), k): len(v.as_py())
              for p in shards for k, v in enumerate(pq.read_table(p, columns=["mp4"]).column(0))}
    hub = FakeHub("bench/finevideo", repo)
    os.environ["HF_ENDPOINT"] = hub.url
    print(f"{a.shards} shards x {a.per_shard} videos, {total} shard bytes; footers + json column {meta_need} bytes "
          f"({meta_need / total:.2%}); mean mp4 value {sum(values.values()) / len(values):.0f} bytes")
    for scale in a.scales:
        hub.sent = 0
        out = tmp / f"out{scale}"
        cfg = preprocess.Config(layout=Layout(out), root_dir="hf://datasets/bench/finevideo", scale=scale)
        preprocess.run(cfg, Executor(workers=1))
        anns = [read_json(p) for p in Layout(out).normal_annotations_dir.glob("*.json")]
        vids = sum(values[(x["source_file"], x["source_row"])] for x in anns)
        need = meta_need + vids
        print(f"--scale {scale}: read {hub.sent} bytes = {hub.sent / total:.1%} of the shard bytes, "
              f"{hub.sent / need:.3f}x the needed bytes (footers + json {meta_need} + chosen values {vids})")
    hub.close()


if __name__ == "__main__":
    main()
