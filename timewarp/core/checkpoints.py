"""Test hook: Ctrl-C at a named moment of a stage, deterministically (no timing).

``TIMEWARP_TEST_SIGINT_AT="<stage>:<n>"`` makes the process of stage ``<stage>`` (its script's name
without ``.py``, e.g. ``shuffle_clips``) send SIGINT to its whole process group, as a terminal's
Ctrl-C does, when it reaches its ``n``-th checkpoint (1-based). Checkpoints are the moments where an
interrupt can leave a mark: just before and just after each file is renamed into place
(``store.atomic_path``), each file moved (``filter_corrupted``'s quarantine), and the first moment
of the stage. ``TIMEWARP_TEST_CHECKPOINTS=<file>`` appends one line per checkpoint passed
(``<stage> <n> <phase>``), so a test can list every moment of a run and interrupt each.

Unset (every real run), a checkpoint costs one dictionary lookup.
"""
from __future__ import annotations

import os
import signal
import sys
import time

_count = 0


def stage_name() -> str:
    return os.path.splitext(os.path.basename(sys.argv[0] or ""))[0]


def checkpoint(phase: str) -> None:
    """One moment of the run; a no-op unless a test named it (module docstring)."""
    at = os.environ.get("TIMEWARP_TEST_SIGINT_AT")
    listing = os.environ.get("TIMEWARP_TEST_CHECKPOINTS")
    if not at and not listing:
        return
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        return  # a pool worker: moments are counted in the stage's main process (all of them with --workers 1)
    global _count
    _count += 1
    name = stage_name()
    if listing:
        with open(listing, "a", encoding="utf-8") as fh:
            fh.write(f"{name} {_count} {phase}\n")
    if at and at == f"{name}:{_count}":
        os.killpg(0, signal.SIGINT)
        for _ in range(600):  # the KeyboardInterrupt comes out of the first sleep
            time.sleep(0.1)
        raise KeyboardInterrupt  # SIGINT was ignored here (a background job): interrupt all the same
