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
import ipaddress
import logging
import multiprocessing
import os
import signal
import socket
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, TypeVar

from tqdm import tqdm

from timewarp.core.checkpoints import checkpoint
from timewarp.core.errors import ItemError, UsageError

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("timewarp")

EXECUTORS = ("local", "ray")
RAY_MISSING = "--executor ray needs the ray package, which is not installed: pip install -r requirements-ray.txt"
PACKAGE_DIR = Path(__file__).resolve().parent.parent   # .../timewarp (this file is timewarp/core/)
CONNECT_TIMEOUT = 5.0                                  # seconds to reach a --ray_address before giving up


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
        if self.max_retries < 0:
            raise UsageError(f"--ray_max_retries must be >= 0, got {self.max_retries}")
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

    ``address`` is host:port or ``auto`` ($RAY_ADDRESS, else the cluster last started on this machine);
    it is checked first (``_check_reachable``: a few seconds at most), so a wrong address stops the run
    with one line naming it instead of Ray's minutes of retries. A loopback address is joined as given
    (``_as_given``). Workers must import ``timewarp``: a local instance's workers import the installed
    package (``pip install -e .``); a cluster gets the package shipped as a runtime_env ``py_modules``
    (its dependencies, requirements.txt, must be installed on every node). The caller owns the
    connection it made (``ray.shutdown()``); ``pmap`` calls this itself when Ray is not running.
    """
    ray = _import_ray()
    if ray.is_initialized():
        return False
    init_kwargs.setdefault("logging_level", logging.WARNING)
    given = address
    if address:
        address = cluster_address(address)
        problem = _check_reachable(address)
        if problem:
            raise UsageError(f"cannot connect to Ray at {_named(address, given)}: {problem}")
        host = _host_port(address)[0]
        if _is_loopback(host):  # every node is this machine: workers import its timewarp, as a local instance's do
            init_kwargs.setdefault("_node_ip_address", host)
        else:
            env = dict(init_kwargs.pop("runtime_env", None) or {})
            env.setdefault("py_modules", [str(PACKAGE_DIR)])
            init_kwargs["runtime_env"] = env
    else:
        init_kwargs.setdefault("include_dashboard", False)
    try:
        with _as_given(init_kwargs.get("_node_ip_address")):
            ray.init(address=address or "local", **init_kwargs)  # "local": a new instance, never a stale cluster
    except (ConnectionError, RuntimeError, ValueError) as exc:  # a Ray/Python version mismatch, a bad address
        raise UsageError(f"cannot {'connect to Ray at ' + _named(address, given) if address else 'start Ray'}: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
    log.info("ray: %s, %d CPUs in %d node(s)", f"connected to {address}" if address else "started a local instance",
             ray.cluster_resources().get("CPU", 0), len([n for n in ray.nodes() if n.get("Alive")]))
    return True


def cluster_address(address: str) -> str:
    """The host:port ``--ray_address`` names: ``auto`` is $RAY_ADDRESS, else the cluster that ``ray start``
    (or a ``ray.cluster_utils.Cluster``) last started on this machine, as Ray itself resolves ``auto``."""
    if address != "auto":
        return address
    found = os.environ.get("RAY_ADDRESS")
    if not found:
        with contextlib.suppress(Exception):  # Ray's own record of the latest cluster (a private helper)
            from ray._private.utils import read_ray_address

            found = read_ray_address()
    if not found:
        raise UsageError("--ray_address auto: no Ray cluster is running on this machine (start one with "
                         "`ray start --head`, or give --ray_address host:port)")
    return found


def _named(address: str, given: Optional[str]) -> str:
    return f"{address} (--ray_address auto)" if given == "auto" else f"--ray_address {address}"


def _host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--ray_address must be auto or host:port, got {address!r}")
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# An HTTP/2 client's first bytes (connection preface + an empty SETTINGS frame); a gRPC server, as Ray's
# GCS is, answers with a SETTINGS frame (type 4 in the 4th byte of its 9-byte frame header).
_H2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> Optional[str]:
    """Why Ray's head cannot be reached at host:port (None if it answers as a gRPC server), in ``timeout``
    seconds at most: Ray itself retries an unreachable or wrong address for minutes, quietly or with a
    "Failed to connect to GCS" warning every few seconds. (A non-host:port address goes to Ray as given.)"""
    if "://" in address:  # ray://... (Ray client) and the like: Ray's own business
        return None
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return None  # a TLS head answers only after a handshake: the TCP connection is the check
            sock.settimeout(timeout)
            sock.sendall(_H2_HELLO)
            head = b""
            while len(head) < 9:
                chunk = sock.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except socket.timeout:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)
    if len(head) < 9 or head[3] != 4:
        return "something answers there, but not a Ray head (no gRPC server)"
    return None


@contextlib.contextmanager
def _as_given(node_ip: Optional[str]):
    """Let Ray use a loopback address as given. Ray (2.x, on Linux) replaces 127.0.0.1 / localhost in the
    address to join and in ``_node_ip_address`` by the machine's own network address
    (``services.resolve_ip_for_localhost``; ray-project/ray#59110), where a cluster bound to loopback does not
    listen: Ray then retries for minutes. Ray keeps loopback as it is when its cluster mode is off
    (``ray_constants.ENABLE_RAY_CLUSTER``, the RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER switch); turn it off while
    ``ray.init`` runs, when this node's address is loopback. Workers are unaffected (their raylet tells them
    its address)."""
    if node_ip is None or not _is_loopback(node_ip):
        yield
        return
    from ray._private import ray_constants

    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        yield
        return
    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


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
