"""Video benchmark: the published moviepy method vs this project's two engines vs the floors.

For each source GOP length in ``--gop_seconds`` (default 5 s and 2 s: real uploads vary) it
generates the same FineVideo-shaped input (one parquet shard of lavfi ``testsrc2`` videos with
B-frames and fixed-length closed GOPs, ``--clips`` annotated scenes each whose clips start and end
mid-GOP, gaps between clips) and times, each variant in its own process so peak memory is separate:

* baseline: the published method's video work re-done with moviepy: the normal video (0 s to the
  end of the last clip) rendered with libx264, then the shuffled video rendered by concatenating
  subclips of it (moviepy defaults, as the release passes none: preset medium, ffmpeg threads);
  sequential, as the release is;
* project (one-encode engine): ``preprocess.run`` + ``shuffle_clips.run`` from the shard (``--workers``);
* smart-cut: the same with ``engine="smartcut"``; prints the share of frames it re-encoded;
* floor: one bare ``ffmpeg`` libx264 encode per video of the same frames with the same settings
  (preset, crf, ``-bf 0``, no audio, same encoder ``-threads`` and the same number of parallel videos);
* decode floor: one bare ``ffmpeg`` decode of the same frames per video (``-f null``), same parallelism;
* for the first GOP length only: project and floor again at ``--workers 1`` (or 2 when
  ``--workers 1``): the scaling line; and the memory line (``bench_memory.py``): preprocess from a
  >= ``--memory_gb`` shard.

Peak RSS is the largest sampled sum of resident memory over the variant's process tree (python
plus its ffmpeg children), polled from /proc every 50 ms. Usage::

    python benchmarks/bench_video.py                      # 4 videos x 60 s at 640x360, 6 clips, GOPs 5 s and 2 s
    python benchmarks/bench_video.py --videos 1 --duration 4 --height 144 --memory_gb 0.02
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path


FPS = "30000/1001"
PAGE = os.sysconf("SC_PAGE_SIZE")
COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink", "brown", "gray"]
SHAPES = ["square", "circle", "bar", "cross"]


# ------------------------------------------------------------------ process-tree memory sampling

def _tree_rss(root_pid: int) -> tuple[int, int]:
    """Sums of RSS and of PSS (bytes) over ``root_pid`` and all its descendants.

    RSS counts pages shared by forked workers once per process (an over-count); PSS splits them.
    """
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d))
    rss = pss = 0
    todo = [root_pid]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
                for line in fh:
                    if line.startswith(b"Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith(b"Pss:"):
                        pss += int(line.split()[1]) * 1024
        except (OSError, IndexError, ValueError):
            pass
        todo.extend(children.get(pid, []))
    return rss, pss


def run_child(args: list[str], env_extra: dict | None = None) -> dict:
    """Run ``python <this script> --_child ...`` and return its JSON result plus ``peak_rss``."""
    env = {**os.environ, **(env_extra or {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True)
    peak = peak_pss = 0
    stop = threading.Event()

    def sample():
        nonlocal peak, peak_pss
        while not stop.is_set():
            rss, pss = _tree_rss(proc.pid)
            peak, peak_pss = max(peak, rss), max(peak_pss, pss)
            stop.wait(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = proc.communicate()
    stop.set()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step {args[1:4]} failed (exit {proc.returncode}):\n{err[-3000:]}")
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    res = json.loads(lines[-1])
    res["peak_rss"], res["peak_pss"] = peak, peak_pss
    # CPU seconds of the variant's whole process tree (every descendant is waited for, so counted):
    # less skewed than wall time when other work shares the machine
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    res["cpu"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return res


# ------------------------------------------------------------------ input generation

def frame_size(height: int) -> tuple[int, int]:
    w = int(round(height * 16 / 9 / 2)) * 2
    return w, height - height % 2


def generate(work: Path, videos: int, duration: float, height: int, clips: int, seed: int = 0,
             gop_seconds: float = 0.0) -> dict:
    """Render the source videos and write them as one FineVideo parquet shard; return the plan."""
    from timewarp.sample_data import SceneSpec, VideoSpec, metadata_for, write_shard
    from timewarp.sources.timestamps import parse_timestamp, time_to_frame
    from timewarp.media.video import ffmpeg_exe

    rng = random.Random(seed)
    fps = Fraction(FPS)
    w, h = frame_size(height)
    total = int(duration * fps)
    gop = max(1, round(gop_seconds * fps)) if gop_seconds else 250
    src_dir = work / "src"
    src_dir.mkdir(parents=True, exist_ok=True)
    rows, plan = [], []
    for i in range(videos):
        name = f"bench{i:03d}"
        path = src_dir / f"{name}.mp4"
        # scenes: equal shares of the video; the activity (clip) skips ~10% of each scene at both ends
        bounds = [round(total * k / clips) for k in range(clips + 1)]
        scenes = []
        for k in range(clips):
            n = bounds[k + 1] - bounds[k]
            a, b = max(0, n // 10), n - max(1, n // 10)
            scenes.append(SceneSpec(n, rng.choice(COLORS), rng.choice(SHAPES), [(a, b)]))
        spec = VideoSpec(name, scenes, fps=FPS, size=(w, h))
        # testsrc2 (moving, textured), a different pattern offset per video; B-frames as in the wild
        cmd = [ffmpeg_exe(), "-hide_banner", "-v", "error", "-y", "-f", "lavfi",
               "-i", f"testsrc2=size={w}x{h}:rate={FPS}", "-frames:v", str(total),
               "-vf", "hflip" if i % 2 else "null",
               "-c:v", "libx264", "-preset", "superfast", "-bf", "3", "-g", str(gop), "-crf", "20",
               "-x264-params", f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0", "-pix_fmt", "yuv420p", str(path)]
        subprocess.run(cmd, check=True)
        meta = metadata_for(spec)
        rows.append((path.read_bytes(), meta))
        spans = [(parse_timestamp(sc["activities"][0]["timestamp"]["start_timestamp"]),
                  parse_timestamp(sc["activities"][0]["timestamp"]["end_timestamp"]))
                 for sc in meta["content_metadata"]["scenes"]]
        perm = list(range(clips))
        while perm == list(range(clips)):
            rng.shuffle(perm)
        plan.append({"name": name, "src": str(path), "spans": spans, "perm": perm,
                     "n_frames": time_to_frame(spans[-1][1], fps)})
    write_shard(work / "finevideo" / "data" / "train-00000-of-00001.parquet", rows)
    return {"videos": plan, "size": [w, h], "fps": FPS, "frames": total, "gop": gop}


# ------------------------------------------------------------------ the variants (child side)

def child_baseline(plan: dict, out: Path, limit: int, preset: str) -> dict:
    from moviepy import VideoFileClip, concatenate_videoclips

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    done = 0
    for v in plan["videos"][:limit]:
        normal = out / f"{v['name']}.mp4"
        shuffled = out / f"{v['name']}_shuffled.mp4"
        spans = v["spans"]
        with VideoFileClip(v["src"], audio=False) as clip:
            clip.subclipped(0, min(spans[-1][1], clip.duration)).write_videofile(
                str(normal), codec="libx264", audio=False, preset=preset, logger=None)
        with VideoFileClip(str(normal), audio=False) as clip:
            parts = [clip.subclipped(spans[i][0], min(spans[i][1], clip.duration)) for i in v["perm"]]
            concatenate_videoclips(parts).write_videofile(str(shuffled), codec="libx264", audio=False,
                                                          preset=preset, logger=None)
        done += 1
    return {"seconds": time.perf_counter() - t0, "videos": done}


REFERENCE_COUNT = "sources from preprocess's reference decode"


def child_project(work: Path, out: Path, videos: int, workers: int, preset: str, crf: int,
                  engine: str = "one-encode", setup: bool = False) -> dict:
    """preprocess + shuffle_clips; with ``setup`` all four stages of setup_dataset.sh, in its order
    (preprocess, filter_corrupted, final_assertions, shuffle_clips), each timed."""
    import logging

    from timewarp.core.layout import Layout
    from timewarp.core.parallel import Executor
    from timewarp.preprocess import filter_corrupted, final_assertions, preprocess, shuffle_clips

    logging.disable(logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    executor = Executor(workers=workers)
    stages: dict = {}
    t0 = time.perf_counter()
    pre = preprocess.run(preprocess.Config(layout=Layout(out), root_dir=work / "finevideo", scale=videos,
                                           test_fraction=0.0, preset=preset, crf=crf, engine=engine), executor)
    stages["preprocess"] = time.perf_counter() - t0
    ref_bytes = sum(p.stat().st_size for p in (out / "cache" / "reference").glob("*.npz"))
    checks: dict = {}
    if setup:
        for name, module in (("filter_corrupted", filter_corrupted), ("final_assertions", final_assertions)):
            t = time.perf_counter()
            res = module.run(module.Config(layout=Layout(out)), executor)
            stages[name] = time.perf_counter() - t
            checks[name] = res.stats["counts"] if name == "final_assertions" else res["counts"]
    t = time.perf_counter()
    shuffle_clips.run(shuffle_clips.Config(layout=Layout(out)), executor)
    stages["shuffle_clips"] = time.perf_counter() - t
    n = len(list((out / "shuffled" / "shuffled_videos").glob("*.mp4")))
    if n != videos:
        raise SystemExit(f"project made {n} shuffled videos, expected {videos}: {pre}")
    c = pre["counts"]
    return {"seconds": stages["preprocess"] + stages["shuffle_clips"], "preprocess": stages["preprocess"],
            "shuffle": stages["shuffle_clips"], "stages": stages, "script_seconds": sum(stages.values()),
            "checks": checks, "videos": n, "reference_bytes": ref_bytes,
            "frames": c.get("frames written", 0), "frames_reencoded": c.get("frames re-encoded", 0),
            "engines": {k: v for k, v in c.items() if k.startswith(("engine", "smartcut"))}}


def floor_threads() -> int:
    """The same encoder threads preprocess uses (a fixed default; decoding threads are ffmpeg's choice)."""
    from timewarp.media.video import EncodeSettings

    return EncodeSettings().threads


def child_floor(plan: dict, out: Path, workers: int, preset: str, crf: int) -> dict:
    from timewarp.media.video import ffmpeg_exe

    out.mkdir(parents=True, exist_ok=True)
    threads = str(floor_threads())
    exe = ffmpeg_exe()

    def one(v):
        subprocess.run([exe, "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", v["src"],
                        "-map", "0:v:0", "-an", "-frames:v", str(v["n_frames"]), "-c:v", "libx264",
                        "-preset", preset, "-crf", str(crf), "-bf", "0", "-pix_fmt", "yuv420p",
                        "-threads", threads, str(out / f"{v['name']}.mp4")], check=True)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, plan["videos"]))
    return {"seconds": time.perf_counter() - t0, "videos": len(plan["videos"])}


def child_decode(plan: dict, workers: int) -> dict:
    """The decode-only floor: ffmpeg decodes the same frames of each source and throws them away."""
    from timewarp.media.video import ffmpeg_exe

    exe = ffmpeg_exe()

    def one(v):
        subprocess.run([exe, "-hide_banner", "-nostdin", "-v", "error", "-i", v["src"], "-map", "0:v:0",
                        "-frames:v", str(v["n_frames"]), "-f", "null", "-"], check=True)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, plan["videos"]))
    return {"seconds": time.perf_counter() - t0, "videos": len(plan["videos"])}


def child_main(argv: list[str]) -> int:
    kind, work, spec = argv[0], Path(argv[1]), json.loads(argv[2])
    plan = json.loads((work / "plan.json").read_text())
    out = work / spec["out"]
    shutil.rmtree(out, ignore_errors=True)
    if kind == "baseline":
        res = child_baseline(plan, out, spec["limit"], spec["preset"])
    elif kind == "project":
        res = child_project(work, out, len(plan["videos"]), spec["workers"], spec["preset"], spec["crf"],
                            spec.get("engine", "one-encode"), spec.get("setup", False))
    elif kind == "decode":
        res = child_decode(plan, spec["workers"])
    elif kind == "floor":
        res = child_floor(plan, out, spec["workers"], spec["preset"], spec["crf"])
    else:
        raise SystemExit(f"unknown child {kind}")
    shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(res))
    return 0


# ------------------------------------------------------------------ parent

def variant(kind: str, work: Path, **spec) -> dict:
    return run_child([__file__, "--_child", kind, str(work), json.dumps(spec)])


def mb(n: int) -> str:
    return f"{n / 2**20:.0f}"


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=4, help="source videos (default: 4)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per source video (default: 60)")
    p.add_argument("--height", type=int, default=360, help="frame height, 16:9 (default: 360, i.e. 640x360)")
    p.add_argument("--gop_seconds", type=lambda v: [float(x) for x in v.split(",")], default=[5.0, 2.0],
                   help="source GOP lengths to generate inputs for, comma-separated seconds (default: 5,2)")
    p.add_argument("--clips", type=int, default=6, help="annotated clips per video (default: 6)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel videos (default: nproc)")
    p.add_argument("--preset", default="veryfast", help="x264 preset of project and floor (default: veryfast)")
    p.add_argument("--crf", type=int, default=23)
    p.add_argument("--baseline_preset", default="medium",
                   help="x264 preset of the moviepy baseline (default: medium, moviepy's default, as published)")
    p.add_argument("--baseline_videos", type=int, default=None,
                   help="run the (slow) baseline on only this many videos; ratios use seconds per video "
                        "(default: all)")
    p.add_argument("--no_baseline", action="store_true")
    p.add_argument("--memory_gb", type=float, default=1.0, help="size of the memory-benchmark shard (default: 1)")
    p.add_argument("--memory_rows", type=int, default=3, help="videos preprocess picks from it (default: 3)")
    p.add_argument("--no_memory", action="store_true", help="skip the memory benchmark")
    p.add_argument("--work_dir", default=None, help="where to generate inputs (default: a temp dir, removed)")
    p.add_argument("--json", default=None, help="also write the results here")
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--_child":
        return child_main(argv[1:])
    a = p.parse_args(argv)
    if a.videos < 1 or a.clips < 2 or a.workers < 1:
        p.error("need --videos >= 1, --clips >= 2, --workers >= 1")
    os.environ["TQDM_DISABLE"] = "1"

    tmp = None
    if a.work_dir:
        work = Path(a.work_dir)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="timewarp-bench-")
        work = Path(tmp)
    try:
        return _bench(a, work)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _bench(a, work: Path) -> int:
    if not a.no_baseline and importlib.util.find_spec("moviepy") is None:
        print("# moviepy baseline skipped: moviepy is not installed (pip install -r requirements-bench.txt)", flush=True)
        a.no_baseline = True
    results: dict = {"by_gop": {}}
    ratios: dict = {"by_gop": {}}
    for i, gop_s in enumerate(a.gop_seconds):
        sub = work / f"gop{gop_s:g}s"
        sub.mkdir(parents=True, exist_ok=True)
        first = i == 0
        r, q = _bench_input(a, sub, gop_s, scaling=first)
        results["by_gop"][f"{gop_s:g}"], ratios["by_gop"][f"{gop_s:g}"] = r, q
        if first:  # the keys older readers of --json know
            results.update({k: v for k, v in r.items() if k != "plan"})
            ratios.update(q)
            first_work, first_plan = sub, r["plan"]
    if not a.no_memory:
        from bench_memory import memory_benchmark

        mem = memory_benchmark(first_work, first_plan, gb=a.memory_gb, chosen=a.memory_rows, workers=a.workers,
                               preset=a.preset, crf=a.crf)
        results["memory"] = mem
        print()
        for line in mem["lines"]:
            print(line)
    print(f"# load average at the end {load()} (other work on the machine skews every number)")
    if a.json:
        for r in results["by_gop"].values():
            r.pop("plan", None)
        Path(a.json).write_text(json.dumps({"args": vars(a), "results": results, "ratios": ratios}, indent=2))
    return 0


def _bench_input(a, work: Path, gop_s: float, scaling: bool) -> tuple[dict, dict]:
    t0 = time.perf_counter()
    plan = generate(work, a.videos, a.duration, a.height, a.clips, gop_seconds=gop_s)
    (work / "plan.json").write_text(json.dumps(plan))
    gen_s = time.perf_counter() - t0
    w, h = plan["size"]
    print(f"\n# source GOP {plan['gop']} frames (~{gop_s:g} s), B-frames: {a.videos} videos x {a.duration:g} s, "
          f"{w}x{h} @ 29.97 fps, {a.clips} clips each (starts and ends mid-GOP); x264 {a.preset} crf {a.crf}; "
          f"--workers {a.workers}; {os.cpu_count()} CPUs ({cpu_model()}); inputs generated in {gen_s:.1f} s; "
          f"load average {load()}", flush=True)

    ww = a.workers if a.workers > 1 else 2  # the other side of the scaling line
    results: dict = {"plan": plan}
    common = dict(preset=a.preset, crf=a.crf)
    results["floor"] = variant("floor", work, out="o_floor", workers=a.workers, **common)
    results["decode"] = variant("decode", work, out="o_decode", workers=a.workers)
    results["project"] = variant("project", work, out="o_project", workers=a.workers, **common)
    results["smartcut"] = variant("project", work, out="o_smart", workers=a.workers, engine="smartcut", setup=True,
                                  **common)
    other = 1 if a.workers > 1 else ww
    if scaling:
        results["floor_other"] = variant("floor", work, out="o_floor1", workers=other, **common)
        results["project_other"] = variant("project", work, out="o_project1", workers=other, **common)
    if not a.no_baseline:
        limit = min(a.videos, a.baseline_videos or a.videos)
        results["baseline"] = variant("baseline", work, out="o_base", limit=limit, preset=a.baseline_preset)

    def per(r):
        return r["seconds"] / r["videos"]

    def cpu(r):
        return r["cpu"] / r["videos"]

    rows = []
    if "baseline" in results:
        rows.append((f"moviepy baseline (published; {a.baseline_preset}, sequential)", results["baseline"]))
    rows += [(f"smart-cut preprocess+shuffle (--workers {a.workers})", results["smartcut"]),
             (f"project preprocess+shuffle (--workers {a.workers})", results["project"]),
             (f"floor: 1 ffmpeg encode/video (--workers {a.workers})", results["floor"]),
             (f"decode floor: 1 ffmpeg decode/video (--workers {a.workers})", results["decode"])]
    if scaling:
        rows += [(f"project preprocess+shuffle (--workers {other})", results["project_other"]),
                 (f"floor: 1 ffmpeg encode/video (--workers {other})", results["floor_other"])]
    print()
    print(f"{'variant':<56} {'videos':>6} {'seconds':>8} {'s/video':>8} {'cpu s/video':>11} {'peak RSS MB':>12} "
          f"{'peak PSS MB':>12}")
    for name, r in rows:
        print(f"{name:<56} {r['videos']:>6} {r['seconds']:>8.2f} {per(r):>8.2f} {cpu(r):>11.2f} "
              f"{mb(r['peak_rss']):>12} {mb(r['peak_pss']):>12}")
    pr, sc = results["project"], results["smartcut"]
    print(f"{'  of which preprocess / shuffle':<56} {'':>6} {pr['preprocess']:>8.2f} {'':>8} "
          f"{'':>12}  shuffle {pr['shuffle']:.2f} s")
    share = sc["frames_reencoded"] / sc["frames"] if sc.get("frames") else float("nan")
    print(f"{'  smart-cut: frames re-encoded':<56} {sc['frames_reencoded']:>6} of {sc['frames']} "
          f"({100 * share:.1f} %); engines {sc['engines']}")
    st = sc["stages"]
    print(f"{'  setup_dataset.sh stages (smart-cut), seconds':<56} " + ", ".join(f"{k} {v:.2f}" for k, v in st.items())
          + f"; whole script {sc['script_seconds']:.2f}")
    fc = sc["checks"].get("filter_corrupted", {})
    print(f"{'  content pass (filter_corrupted)':<56} {fc.get('frames proven by packet bytes', 0)} frames by packet bytes, "
          f"{fc.get('frames compared by pixels', 0)} by pixels, {fc.get('source frames decoded', 0)} source frames decoded, "
          f"{fc.get(REFERENCE_COUNT, 0)} sources from preprocess's reference decode "
          f"({sc.get('reference_bytes', 0) / max(1, sc['videos']) / 1e6:.2f} MB per video until checked)")
    print()

    def verdict(ok):
        return "PASS" if ok else "MISS"

    ratios = {"smartcut_reencoded_share": share}
    checks_s = st.get("filter_corrupted", 0) + st.get("final_assertions", 0)
    ratios["checks_over_preprocess"] = checks_s / st["preprocess"]
    ratios["checks_share_of_script"] = checks_s / sc["script_seconds"]
    if "baseline" in results:
        ratios["baseline_over_script"] = per(results["baseline"]) / (sc["script_seconds"] / sc["videos"])
        want = 10 if gop_s >= 5 else 15
        print(f"baseline / setup_dataset.sh {ratios['baseline_over_script']:6.2f}x   (all four stages; target >= {want} at "
              f"{gop_s:g} s GOPs)  {verdict(ratios['baseline_over_script'] >= want)}")
    # the least any pipeline of this design can cost: every used source frame decoded once (the engine's
    # re-encode and the content pass's decoder errors need it), every re-encoded frame encoded once and
    # decoded once by the check; from this run's own floors, nothing else (no Python, no muxing, no probing)
    dec_s = results["decode"]["seconds"]
    bound = dec_s + share * (results["floor"]["seconds"] - dec_s) + share * dec_s
    ratios["script_over_design_floor"] = sc["script_seconds"] / bound
    if "baseline" in results:
        ratios["baseline_over_design_floor"] = results["baseline"]["seconds"] / results["baseline"]["videos"] \
            / (bound / sc["videos"])
        print(f"design floor                {bound:6.2f} s  (one decode + the re-encoded share encoded and decoded "
              f"again): setup_dataset.sh is {ratios['script_over_design_floor']:.2f}x it; baseline / floor "
              f"{ratios['baseline_over_design_floor']:.2f}x is the best ratio this design can reach here")
    print(f"checks / preprocess         {ratios['checks_over_preprocess']:6.2f}    (filter_corrupted + final_assertions; "
          f"target <= 0.5)  {verdict(ratios['checks_over_preprocess'] <= 0.5)}; "
          f"{100 * ratios['checks_share_of_script']:.0f} % of the script")
    if "baseline" in results:
        ratios["baseline_over_project"] = per(results["baseline"]) / per(pr)
        ratios["baseline_over_smartcut"] = per(results["baseline"]) / per(sc)
    ratios["project_over_smartcut"] = per(pr) / per(sc)
    ratios["project_over_smartcut_cpu"] = cpu(pr) / cpu(sc)
    if "baseline" in results:
        ratios["baseline_over_smartcut_cpu"] = cpu(results["baseline"]) / cpu(sc)
    ratios["project_over_floor"] = per(pr) / per(results["floor"])
    ratios["smartcut_over_decode_floor"] = per(sc) / per(results["decode"])
    ratios["floor_over_decode_floor"] = per(results["floor"]) / per(results["decode"])
    if "baseline_over_smartcut" in ratios:
        print(f"baseline / smart-cut        {ratios['baseline_over_smartcut']:6.2f}x   (target >= 10 with ~2 s GOPs)  "
              f"{verdict(ratios['baseline_over_smartcut'] >= 10)}   cpu seconds: "
              f"{ratios['baseline_over_smartcut_cpu']:.2f}x")
        print(f"baseline / project          {ratios['baseline_over_project']:6.2f}x   (one-encode engine)")
    print(f"project / smart-cut         {ratios['project_over_smartcut']:6.2f}x   (target >= 2 with ~5 s GOPs)   "
          f"{verdict(ratios['project_over_smartcut'] >= 2)}   cpu seconds: {ratios['project_over_smartcut_cpu']:.2f}x")
    print(f"smart-cut / decode floor    {ratios['smartcut_over_decode_floor']:6.2f}x   "
          f"(encode floor / decode floor {ratios['floor_over_decode_floor']:.2f}x)")
    print(f"project / floor             {ratios['project_over_floor']:6.2f}x   (target <= 1.2)  "
          f"{verdict(ratios['project_over_floor'] <= 1.2)}", flush=True)
    if scaling:
        w1, w2 = (results["project_other"], pr) if a.workers > 1 else (pr, results["project_other"])
        f1, f2 = ((results["floor_other"], results["floor"]) if a.workers > 1
                  else (results["floor"], results["floor_other"]))
        hi = max(a.workers, ww)
        ratios["project_workers_scaling"] = per(w1) / per(w2)
        ratios["floor_workers_scaling"] = per(f1) / per(f2)
        print(f"throughput --workers {hi} / 1  {ratios['project_workers_scaling']:6.2f}x   (the floor: "
              f"{ratios['floor_workers_scaling']:.2f}x, the most the hardware gives)", flush=True)
    return results, ratios


if __name__ == "__main__":
    sys.exit(main())
