"""setup_dataset.sh on the same generated sample, side by side in one run: locally, with --executor ray
(one local Ray instance for the run), and through a Ray cluster of 1, 2 and 3 nodes on 127.0.0.1
(``ray.cluster_utils.Cluster``, one CPU each, ``--workers`` = nodes). Prints seconds and ratios to the
local run. On one machine more nodes add no cores: the point of the cluster rows is what joining costs.

    python benchmarks/bench_ray_nodes.py [--videos 12] [--rounds 1] [--nodes 1,2,3]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_dataset(src: Path, out: Path, timewarp_args: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("TIMEWARP_ARGS", "TIMEWARP_PREPROCESS_ARGS", "RAY_ADDRESS")}
    env.update(TIMEWARP_ARGS=timewarp_args, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    t0 = time.monotonic()
    r = subprocess.run([str(ROOT / "setup_dataset.sh"), str(src), str(out), "1000000"], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"setup_dataset.sh {timewarp_args!r} failed:\n{r.stderr}")
    return time.monotonic() - t0


def on_cluster(n_nodes: int, src: Path, out: Path) -> float:
    from ray.cluster_utils import Cluster

    node = dict(node_ip_address="127.0.0.1", num_cpus=1,
                env_vars={"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    cluster = Cluster(initialize_head=True, head_node_args=dict(node, include_dashboard=False))
    try:
        for _ in range(n_nodes - 1):
            cluster.add_node(**node)
        return setup_dataset(src, out, f"--executor ray --ray_address {cluster.address} --workers {n_nodes}")
    finally:
        cluster.shutdown()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=12, help="sample videos to generate (default: 12)")
    ap.add_argument("--rounds", type=int, default=1, help="times to run every variant, interleaved (default: 1)")
    ap.add_argument("--nodes", default="1,2,3", help="cluster sizes to run (default: 1,2,3)")
    args = ap.parse_args(argv)
    sizes = [int(n) for n in args.nodes.split(",") if n]
    with tempfile.TemporaryDirectory(prefix="bench_ray_nodes-") as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "timewarp.sample_data", str(tmp / "src"), "--videos", str(args.videos)],
                       check=True, capture_output=True)
        variants = {"local (--workers 2)": lambda out: setup_dataset(tmp / "src", out, "--workers 2"),
                    "ray, one local instance (--workers 2)":
                        lambda out: setup_dataset(tmp / "src", out, "--executor ray --workers 2")}
        for n in sizes:
            variants[f"ray cluster, {n} node(s) x 1 CPU"] = lambda out, n=n: on_cluster(n, tmp / "src", out)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for k in range(args.rounds):
            for i, (name, run) in enumerate(variants.items()):
                times[name].append(run(tmp / f"out-{k}-{i}"))
                print(f"round {k + 1} {name}: {times[name][-1]:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    base = min(times["local (--workers 2)"])
    print(f"\nsetup_dataset.sh, {args.videos} sample videos, best of {args.rounds} round(s), {os.cpu_count()} cores:")
    for name, ts in times.items():
        print(f"  {name:40s} {min(ts):6.1f} s  {min(ts) / base:5.1f}x local")
    return 0


if __name__ == "__main__":
    sys.exit(main())
