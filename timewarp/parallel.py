"""The one parallel map over items (videos, annotations): a process pool or Ray tasks, one tqdm bar.

Results come back in input order whatever ``workers`` is, so outputs do not depend on it. A worker
returns its value or raises: ``ItemError`` comes back as ``Rejected`` (reason, detail), any other
exception as ``Failed``; ``StageRun.succeeded`` is the one place that turns both into rejects.

Two executors, an ``Executor`` value every ``run`` takes explicitly (stage scripts: ``--executor``):

- ``local`` (default): a fork process pool of ``workers`` processes (1 = in-process).
- ``ray``: each item is one Ray task (``@ray.remote(max_retries=...)``: Ray re-runs a task whose
  worker died); at most ``workers`` tasks are in flight. Tasks get only the small job (a shard path
  + row index, a file path), read their own input and write atomically into root_dir, which must
  be a path every node sees. Ray is imported only when this executor is chosen
  (``pip install -r requirements-ray.txt``).
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, TypeVar

from tqdm import tqdm

from timewarp.checkpoints import checkpoint
from timewarp.errors import ItemError, UsageError

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("timewarp")

EXECUTORS = ("local", "ray")
RAY_MISSING = "--executor ray needs the ray package, which is not installed: pip install -r requirements-ray.txt"
PACKAGE_DIR = Path(__file__).resolve().parent          # .../timewarp


@dataclass(frozen=True)
class Failed:
    """An unexpected exception raised by the mapped function for one item (a bug, or a crashed worker)."""

    error: str
    traceback: str


@dataclass(frozen=True)
class Rejected:
    """The mapped function raised ``ItemError`` for one item: a reject with this reason, the run goes on."""

    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Executor:
    """Where and how wide per-item work runs; an explicit argument of every ``run`` (never a global).

    ``local``: a fork process pool of ``workers`` processes (1 = in-process). ``ray``: one Ray task per
    item, at most ``workers`` in flight; ``ray_address`` None starts a local instance, ``auto`` or
    host:port joins a cluster; Ray re-runs a task whose worker died up to ``max_retries`` times.
    """

    kind: str = "local"
    workers: int = 1
    ray_address: Optional[str] = None
    max_retries: int = 3

    def __post_init__(self):
        if self.kind not in EXECUTORS:
            raise UsageError(f"--executor must be one of {', '.join(EXECUTORS)}, got {self.kind!r}")
        if self.workers < 1:
            raise UsageError(f"--workers must be >= 1, got {self.workers}")
        if self.kind == "ray":
            _import_ray()
        elif self.ray_address:
            raise UsageError("--ray_address needs --executor ray")


LOCAL = Executor()                       # in-process: generation stages (milliseconds per item) and tests
_ray_started = False                     # this process called ray.init (so shutdown() ends it)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError(RAY_MISSING) from None
    return ray


def start_ray(address: Optional[str] = None, **init_kwargs) -> bool:
    """Connect to Ray at ``address`` or start a local instance; False (and nothing done) if already connected.

    Workers must import ``timewarp``: a local instance's workers import the installed package
    (``pip install -e .``); a cluster gets the package shipped as a runtime_env ``py_modules`` (its
    dependencies, requirements.txt, must be installed on every node). The caller owns the connection it made
    (``ray.shutdown()``); ``pmap`` calls this itself when Ray is not running.
    """
    ray = _import_ray()
    if ray.is_initialized():
        return False
    init_kwargs.setdefault("logging_level", logging.WARNING)
    if address:
        env = dict(init_kwargs.pop("runtime_env", None) or {})
        env.setdefault("py_modules", [str(PACKAGE_DIR)])
        init_kwargs["runtime_env"] = env
    else:
        init_kwargs.setdefault("include_dashboard", False)
    try:
        ray.init(address=address or "local", **init_kwargs)  # "local": a new instance, never a stale cluster
    except (ConnectionError, RuntimeError) as exc:  # unreachable, or a Ray/Python version mismatch
        raise UsageError(f"cannot {'connect to Ray at --ray_address ' + address if address else 'start Ray'}: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
    log.info("ray: %s, %d CPUs in %d node(s)", f"connected to {address}" if address else "started a local instance",
             ray.cluster_resources().get("CPU", 0), len([n for n in ray.nodes() if n.get("Alive")]))
    return True


def shutdown() -> None:
    """Shut Ray down if ``pmap`` started or connected it (a later Ray ``pmap`` does so again)."""
    global _ray_started
    if _ray_started:
        import ray

        ray.shutdown()
    _ray_started = False


def _ignore(signum, frame) -> None:
    pass


def _worker_init() -> None:
    """A pool worker leaves Ctrl-C to the main process, which stops the pool (no traceback per worker);
    a handler, not SIG_IGN, so that the ffmpeg a worker runs still gets the default and stops at once."""
    signal.signal(signal.SIGINT, _ignore)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked while pmap forked this worker


def _call(fn, item):
    try:
        return fn(item)
    except ItemError as exc:  # the item is bad: a typed rejection, recorded by StageRun.succeeded
        return Rejected(exc.reason, exc.detail)
    except UsageError:  # the run as a whole cannot go on (e.g. the disk is full): stop, do not reject
        raise
    except Exception as exc:  # noqa: BLE001 - one bad item must not stop the run
        return Failed(f"{type(exc).__name__}: {exc}", traceback.format_exc())


def pmap(fn: Callable[[T], R], items: Sequence[T], executor: Executor = LOCAL, desc: str = "",
         unit: str = "video", disable: bool | None = None) -> Iterator[R | Rejected | Failed]:
    """Yield ``fn(item)`` for each item, in input order: its value, ``Rejected`` (it raised
    ``ItemError``) or ``Failed`` (any other exception); ``UsageError`` stops the whole map.

    Local: ``executor.workers`` processes (1 = in-process). Ray: ``executor.workers`` tasks in flight.
    """
    items = list(items)
    workers = executor.workers
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=disable, dynamic_ncols=True, leave=False)
    try:
        if executor.kind == "ray" and items:
            yield from _ray_map(fn, items, executor, bar)
            return
        if workers <= 1 or len(items) <= 1:
            for item in items:
                yield _call(fn, item)
                bar.update(1)
            return
        ctx = multiprocessing.get_context("fork")
        pool = ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=ctx, initializer=_worker_init)
        try:
            # workers are forked here: with Ctrl-C blocked, so that none can get it before _worker_init (a
            # traceback per worker); one that comes meanwhile reaches this process when it is unblocked
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                futures = [pool.submit(_call, fn, item) for item in items]
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            checkpoint("worker processes started")
            for fut in futures:
                yield fut.result()
                bar.update(1)
        finally:  # on a stop (UsageError, Ctrl-C, caller gone) queued items are not started
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()


_remote_call = {}   # max_retries -> the remote function (one per process; Ray exports it once)


def _ray_map(fn, items: list, executor: Executor, bar) -> Iterator:
    """Submit one Ray task per item (at most ``executor.workers`` pending), yield results in input order."""
    global _ray_started
    ray = _import_ray()
    if start_ray(executor.ray_address):
        _ray_started = True
    in_flight = executor.workers
    remote = _remote_call.get(executor.max_retries)
    if remote is None:
        remote = _remote_call[executor.max_retries] = ray.remote(max_retries=executor.max_retries)(_call)
    fn_ref = ray.put(fn)                                # serialised once, not per task
    index: dict = {}                                    # ObjectRef -> item position
    done: dict[int, object] = {}
    next_submit = next_yield = 0
    try:
        while next_yield < len(items):
            while next_submit < len(items) and len(index) < in_flight:
                index[remote.remote(fn_ref, items[next_submit])] = next_submit
                next_submit += 1
            ready, rest = ray.wait(list(index), num_returns=1)
            if rest:  # collect every other finished task too, without waiting
                ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            for ref in ready:
                done[index.pop(ref)] = _ray_result(ray, ref)
                bar.update(1)
            while next_yield in done:
                yield done.pop(next_yield)
                next_yield += 1
    finally:
        for ref in index:  # the caller stopped early or the run was interrupted
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)


def _ray_result(ray, ref):
    """The task's value; a task Ray could not run (worker died past its retries, out of memory) is Failed."""
    try:
        return ray.get(ref)
    except Exception as exc:  # noqa: BLE001 - RayTaskError, WorkerCrashedError, OutOfMemoryError, ...
        cause = getattr(exc, "cause", None) or exc
        if isinstance(cause, UsageError):  # as locally: the run stops
            raise cause from None
        lines = str(cause).strip().splitlines()
        return Failed(f"{type(cause).__name__}: {lines[0] if lines else ''}", str(exc))


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
