"""One local Ray instance for a whole script run: ``setup_dataset.sh`` with ``--executor ray`` and no
``--ray_address`` starts this once (``timewarp/core/stage.sh``) and gives every stage ``--ray_address`` of it,
instead of each stage starting and stopping its own instance (seconds each, and Ray's notices each time).

Prints one line, ``<host:port> <RAY_AUTH_MODE or nothing>`` (the address to join, bound to 127.0.0.1, and
the authentication mode the stages must use), then runs until its standard input closes: the script holds
the other end, so the instance ends with the script however the script ends (its end, Ctrl-C, a kill).
Ctrl-C is for the stages (they stop and save their work); this process ignores it.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Optional

from timewarp.core import parallel
from timewarp.core.errors import UsageError


def serve(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="ray_head.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_cpus", type=int, default=None,
                        help="CPUs the instance offers to tasks (default: Ray's count of this machine's)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        parallel.start_ray(None, _node_ip_address="127.0.0.1", num_cpus=args.num_cpus, log_to_driver=False)
    except UsageError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    import ray

    print(ray.get_runtime_context().gcs_address, os.environ.get("RAY_AUTH_MODE", ""), flush=True)
    sys.stdin.read()  # until the script closes its end
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(serve())
