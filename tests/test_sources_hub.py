"""FineVideo straight from the hub: a loopback server speaking the hub's API (tests/fake_hub.py) serves
real parquet shards; selection reads footers and the json column by ranges, each chosen video's mp4
value alone, into the output's cache. Counted bytes must stay within 2x of what is needed."""
from __future__ import annotations

import copy
import filecmp
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from timewarp.core.layout import Layout
from timewarp.preprocess import final_assertions, preprocess
from timewarp.sample_data import read_frame_ids
from timewarp.sources import hub as hubmod
from timewarp.core.store import read_json

from fake_hub import FakeHub
from stages import run_video_stage

pytestmark = pytest.mark.video   # renders videos and runs stages on them (the slow tier)

REPO = "test-org/finevideo-mini"


@pytest.fixture(scope="module")
def shards(tmp_path_factory, wild_rows) -> Path:
    """3 shards of 4 rows (2 row groups each), FineVideo-shaped: 12 videos with distinct ids."""
    folder = tmp_path_factory.mktemp("hubrepo")
    (folder / "data").mkdir()
    for s in range(3):
        rows = []
        for r in range(4):
            mp4, meta = wild_rows[(s + r) % len(wild_rows)]
            meta = copy.deepcopy(meta)
            meta["original_video_filename"] = f"vid{s}{r}.mp4"
            rows.append((mp4, meta))
        # as in FineVideo's shards, whose values are larger than a page: one data page per mp4 value
        table = pa.table({"mp4": pa.array([r[0] for r in rows], pa.binary()), "json": pa.array([r[1] for r in rows])})
        pq.write_table(table, folder / "data" / f"train-{s:05d}-of-00003.parquet", row_group_size=2,
                       data_page_size=1, write_batch_size=1, use_dictionary=["json"])
    (folder / "README.md").write_text("a card")
    return folder


def serve(folder: Path, monkeypatch) -> FakeHub:
    """A loopback hub serving ``folder`` as REPO, which huggingface_hub talks to (HF_ENDPOINT)."""
    hub = FakeHub(REPO, folder)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(hubmod, "BACKOFF", 0.01)
    return hub


@pytest.fixture()
def fake(shards, monkeypatch):
    hub = serve(shards, monkeypatch)
    yield hub
    hub.close()


def needed_bytes(shards: Path, chosen: list[tuple[str, int]]) -> tuple[int, int]:
    """(footers + json column chunks of every shard + mp4 values of the chosen rows, all shard bytes),
    computed from the files with pyarrow, independently of the reader under test."""
    need = total = 0
    for p in sorted((shards / "data").glob("*.parquet")):
        total += p.stat().st_size
        with open(p, "rb") as fh:
            fh.seek(-8, 2)
            need += int.from_bytes(fh.read(4), "little") + 8
        md = pq.ParquetFile(p).metadata
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            need += sum(rg.column(i).total_compressed_size for i in range(rg.num_columns)
                        if rg.column(i).path_in_schema.split(".")[0] == "json")
    for rel, row in chosen:
        need += len(pq.read_table(shards / rel, columns=["mp4"]).column(0)[row].as_py())
    return need, total


def test_hub_source_reads_only_what_it_needs_and_matches_local(fake, shards, tmp_path):
    root = f"hf://datasets/{REPO}"
    out = tmp_path / "hub_out"
    run_video_stage(preprocess, out, root_dir=root, scale=4, workers=2, test_fraction=0.5)
    layout = Layout(out)
    ids = sorted(layout.normal_ids())
    assert len(ids) == 4
    anns = {v: read_json(layout.normal_annotation(v)) for v in ids}
    chosen = [(a["source_file"], a["source_row"]) for a in anns.values()]
    assert all(rel.startswith("data/train-") for rel, _ in chosen)
    need, total = needed_bytes(shards, chosen)
    read = fake.sent
    print(f"\nhub bytes read {read} / needed {need} / shard bytes {total}: {read / total:.3f} of the shards, "
          f"{read / need:.2f}x the needed bytes")
    assert read <= 2 * need
    # the same output as from the shards on disk (byte-identical annotations and videos)
    local = tmp_path / "local_out"
    run_video_stage(preprocess, local, root_dir=shards, scale=4, workers=2, test_fraction=0.5)
    assert sorted(Layout(local).normal_ids()) == ids
    for v in ids:
        assert read_json(Layout(local).normal_annotation(v)) == anns[v]
        assert filecmp.cmp(Layout(local).normal_video(v), layout.normal_video(v), shallow=False)
    frames = read_frame_ids(layout.normal_video(ids[0]))
    assert frames == [k for a, b in anns[ids[0]]["source_ranges"] for k in range(a, b)]
    cached = sorted((out / "cache" / "sources" / "hub" / "videos").glob("*.mp4"))
    assert len(cached) == 4
    # a rerun and final_assertions fetch nothing again: everything is in the output's cache
    before = fake.sent
    run_video_stage(preprocess, out, root_dir=root, scale=4, workers=2, test_fraction=0.5)
    assert run_video_stage(final_assertions, out).ok
    assert fake.sent == before
    # a larger scale fetches only the new videos (footers and json column are cached)
    run_video_stage(preprocess, out, root_dir=root, scale=6, workers=2, test_fraction=0.5)
    new = [(a["source_file"], a["source_row"]) for v in Layout(out).normal_ids() if v not in ids
           for a in [read_json(Layout(out).normal_annotation(v))]]
    assert len(new) == 2
    grown = fake.sent - before
    values = sum(len(pq.read_table(shards / rel, columns=["mp4"]).column(0)[row].as_py()) for rel, row in new)
    assert values <= grown <= 2 * values + 2 * hubmod.MIN_READ * len(new)   # + a page-header read or two each


def test_the_byte_bound_fails_for_a_reader_that_reads_row_groups(fake, shards, tmp_path, monkeypatch):
    """The same bound catches a selection that reads whole row groups (mp4 and json): the check can fail."""
    real = hubmod.column_spans
    monkeypatch.setattr(hubmod, "column_spans", lambda md, column: real(md, "mp4") + real(md, column))
    out = tmp_path / "out"
    run_video_stage(preprocess, out, root_dir=f"hf://datasets/{REPO}", scale=1, workers=1)
    chosen = [(a["source_file"], a["source_row"]) for a in map(read_json, Layout(out).normal_annotations_dir.glob("*.json"))]
    need, total = needed_bytes(shards, chosen)
    assert fake.sent > 2 * need


def test_hub_reads_survive_429_5xx_and_dropped_connections(fake, tmp_path):
    # the first footer read, a json span, the next footer, and reads of video pages and values
    fake.failures = {1: "429", 2: "503", 3: "drop", 6: "drop", 9: "503", 14: "429", 18: "drop", 21: "drop", 23: "503"}
    out = tmp_path / "out"
    run_video_stage(preprocess, out, root_dir=f"hf://datasets/{REPO}", scale=2, workers=1)
    assert fake.resolves > 23 and not fake.failures
    assert len(Layout(out).normal_ids()) == 2
    assert run_video_stage(final_assertions, out).ok
    # the cache may be deleted: a later stage fetches again what it needs (its size from the hub, then ranges)
    shutil.rmtree(out / "cache")
    before = fake.sent
    assert run_video_stage(final_assertions, out).ok
    assert fake.sent > before


def test_final_assertions_takes_an_explicit_hub_root(fake, tmp_path, capsys):
    root = f"hf://datasets/{REPO}"
    out = tmp_path / "out"
    run_video_stage(preprocess, out, root_dir=root, scale=2, workers=1)
    shutil.rmtree(out / "cache")   # so the frames can only come from the hub root given
    before = fake.sent
    assert final_assertions.main(["--root_dir", str(out), "--source_root", root]) == 0
    assert fake.sent > before
    assert read_json(Layout(out).stats_file("final_assertions"))["options"]["source_root"] == root
    # a root that is not on the hub is one line naming the option, before any video is checked
    assert final_assertions.main(["--root_dir", str(out), "--source_root", "hf://datasets/nobody/nothing"]) != 0
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("INFO ")]
    assert len(err) == 1 and "--source_root hf://datasets/nobody/nothing not found on the hub" in err[0]


def test_missing_hub_dataset_is_one_line(fake, tmp_path):
    from timewarp.core.errors import UsageError
    with pytest.raises(UsageError, match="hf://datasets/nobody/nothing"):
        run_video_stage(preprocess, tmp_path / "o", root_dir="hf://datasets/nobody/nothing", scale=1)


def test_setup_dataset_sh_reads_the_hub(fake, tmp_path):
    import os
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHON=sys.executable, TIMEWARP_ARGS="--workers 2", HF_TOKEN="hf_test_token")
    out = tmp_path / "out"
    r = subprocess.run([str(root / "setup_dataset.sh"), f"hf://datasets/{REPO}", str(out), "2"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(Layout(out).shuffled_ids()) == 2
    assert fake.auth == {"Bearer hf_test_token"}   # HF_TOKEN reaches every ranged read
    assert read_json(Layout(out).stats_file("preprocess"))["options"]["root_dir"] == f"hf://datasets/{REPO}"


def _damage_cache(out: Path) -> list[Path]:
    """What a killed run or a lost write can leave in the cache: a cached video cut short (marker kept), one
    cut short without its marker (killed between rename and marker, or copied in by hand), a half-written
    .part, and a shard span shorter than its name says. Returns the damaged videos."""
    videos = sorted((out / "cache" / "sources" / "hub" / "videos").glob("*.mp4"))
    assert len(videos) >= 2
    for path, keep_marker in ((videos[0], True), (videos[1], False)):
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
        if not keep_marker:
            hubmod.marker(path).unlink()
    (videos[0].parent / f".tmp-{videos[0].name}-killed.part").write_bytes(b"\0" * 1000)
    layout = Layout(out)   # a span of a shard the output's videos are in (its footer: read to find a video's bytes)
    named = {read_json(layout.normal_annotation(v))["source_file"].replace("/", "_") for v in layout.normal_ids()}
    spans = [p for p in (out / "cache" / "sources" / "hub" / "shards").rglob("*.bin")
             if any(p.parent.name.startswith(n) for n in named)]
    span = max(spans, key=lambda p: int(p.stem.split("-")[0]))
    span.write_bytes(span.read_bytes()[:3])
    return videos[:2]


def _values(shards: Path, layout: Layout) -> list[bytes]:
    """The mp4 values of the videos an output holds, read by pyarrow from the shards its annotations name."""
    anns = [read_json(layout.normal_annotation(v)) for v in layout.normal_ids()]
    return [pq.read_table(shards / a["source_file"], columns=["mp4"]).column(0)[a["source_row"]].as_py() for a in anns]


def test_a_damaged_cache_file_is_fetched_again_never_read_as_whole(fake, shards, tmp_path, monkeypatch):
    root = f"hf://datasets/{REPO}"
    out = tmp_path / "out"
    run_video_stage(preprocess, out, root_dir=root, scale=2, workers=1)
    layout = Layout(out)
    ids = sorted(layout.normal_ids())
    made = {v: (read_json(layout.normal_annotation(v)), layout.normal_video(v).read_bytes()) for v in ids}
    # final_assertions fetches the damaged videos again and finds every clip right
    damaged = _damage_cache(out)
    before = fake.sent
    assert run_video_stage(final_assertions, out).ok
    values = _values(shards, layout)
    assert sorted(p.read_bytes() for p in damaged) == sorted(values)   # whole again
    assert fake.sent - before > sum(map(len, values)) // 2            # by fetching them again (compressed)
    for span in (out / "cache" / "sources" / "hub" / "shards").rglob("*.bin"):
        a, b = map(int, span.stem.split("-"))
        assert span.stat().st_size == b - a
    # preprocess redoing the videos over a damaged cache makes the same output, frame for frame
    _damage_cache(out)
    run_video_stage(preprocess, out, root_dir=root, scale=2, workers=1, overwrite=True)
    assert {v: (read_json(layout.normal_annotation(v)), layout.normal_video(v).read_bytes()) for v in ids} == made
    assert not [p for p in (out / "cache").rglob("*") if p.name.startswith(".")]   # no leftover of a killed run
    # the check can fail: a cache that takes any file it finds for whole gives final_assertions wrong frames
    _damage_cache(out)
    monkeypatch.setattr(hubmod, "kept_whole", lambda target, mark: target.is_file())
    report = run_video_stage(final_assertions, out)
    assert not report.ok and {v.id for v in report.violations} == set(ids)


def test_a_rejected_video_stays_cached_so_a_rerun_fetches_nothing(wild_rows, tmp_path, monkeypatch):
    """preprocess retries on a rerun every video that has no annotation (a reject is not final), so the
    bytes of a video fetched and then rejected are kept: the rerun rejects it again without a fetch."""
    folder = tmp_path / "repo"
    rows = [copy.deepcopy(r) for r in wild_rows[:3]]
    rows[1] = (b"\0\0\0\x18ftypisom" + bytes(range(256)) * 40, rows[1][1])   # metadata fine, bytes no video
    for n, (_, meta) in enumerate(rows):
        meta["original_video_filename"] = f"vid{n}.mp4"
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.table({"mp4": pa.array([r[0] for r in rows], pa.binary()), "json": pa.array([r[1] for r in rows])}),
                   folder / "data" / "train-00000-of-00001.parquet")
    hub = serve(folder, monkeypatch)
    try:
        out = tmp_path / "out"
        run_video_stage(preprocess, out, root_dir=f"hf://datasets/{REPO}", scale=3, workers=1)
        layout = Layout(out)
        rejects = [json.loads(line) for line in layout.rejects_file("preprocess").read_text().splitlines()]
        assert sorted(layout.normal_ids()) == ["vid0", "vid2"] and [r["id"] for r in rejects] == ["vid1"]
        cached = sorted(p.read_bytes() for p in (out / "cache" / "sources" / "hub" / "videos").glob("*.mp4"))
        assert cached == sorted(r[0] for r in rows)   # the rejected video's bytes too, whole
        before = hub.sent
        run_video_stage(preprocess, out, root_dir=f"hf://datasets/{REPO}", scale=3, workers=1)
        again = [json.loads(line) for line in layout.rejects_file("preprocess").read_text().splitlines()]
        assert [r["id"] for r in again] == ["vid1"] and again[0]["reason"] == rejects[0]["reason"]
        assert hub.sent == before   # retried from the cache
    finally:
        hub.close()


def test_a_run_killed_mid_download_leaves_nothing_a_rerun_takes_for_whole(fake, shards, tmp_path):
    """A real preprocess process is killed (SIGKILL) while it reads an mp4 value: the server kills it on the
    second read that falls inside an mp4 column chunk, before answering. The cache then holds no video
    under its final name; a rerun fetches the video again and makes the output a local copy makes."""
    import os
    import signal
    import subprocess
    import sys
    chunks = {}   # shard path -> the byte spans of its mp4 column chunks, from the files themselves
    for p in (shards / "data").glob("*.parquet"):
        chunks[p.relative_to(shards).as_posix()] = hubmod.column_spans(pq.ParquetFile(p).metadata, "mp4")
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(repo / "timewarp" / "preprocess" / "preprocess.py"), "--root_dir",
                             f"hf://datasets/{REPO}", "--save_dir", str(out), "--scale", "1", "--workers", "1"],
                            env=dict(os.environ, PYTHONPATH=str(repo)), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reads_in_values = []

    def kill_mid_value(rel, start, end):
        if any(a <= start < b for a, b in chunks.get(rel, [])):
            reads_in_values.append(start)
            if len(reads_in_values) == 2:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
        return False

    fake.on_read = kill_mid_value
    try:
        assert proc.wait(timeout=600) == -signal.SIGKILL
    finally:
        fake.on_read = None
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    videos = out / "cache" / "sources" / "hub" / "videos"
    assert not list(videos.glob("*.mp4")) and [p.name for p in videos.iterdir() if p.name.startswith(".tmp-")]
    assert not Layout(out).normal_ids()
    before = fake.sent
    run_video_stage(preprocess, out, root_dir=f"hf://datasets/{REPO}", scale=1, workers=1)
    (vid,) = Layout(out).normal_ids()
    assert fake.sent > before and not [p for p in videos.iterdir() if p.name.startswith(".")]
    local = tmp_path / "local"
    run_video_stage(preprocess, local, root_dir=shards, scale=1, workers=1)
    assert read_json(Layout(local).normal_annotation(vid)) == read_json(Layout(out).normal_annotation(vid))
    assert filecmp.cmp(Layout(local).normal_video(vid), Layout(out).normal_video(vid), shallow=False)
