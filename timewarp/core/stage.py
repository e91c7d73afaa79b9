"""Stage runner, for every stage script: common options, logging, rejects, stats and the one-line error.

(``generation.py``: what the six generation stages add on top; ``textgen.py``: their wording backends.)

A stage script is ``main(argv)`` = parse args, then ``run(...)``; ``run`` uses a ``StageRun`` to
record rejects and write ``rejects/<stage>.jsonl`` and ``stats/<stage>.json`` when it ends.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import logging
import os
import shutil
import sys
import time
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterator, Optional

from timewarp.core import parallel
from timewarp.core.checkpoints import checkpoint
from timewarp.core.errors import UsageError
from timewarp.core.layout import Layout
from timewarp.core.schema import Reject
from timewarp.core.store import write_json, write_jsonl

log = logging.getLogger("timewarp")


def add_common_args(parser: argparse.ArgumentParser, *, workers: bool = True, seed: bool = True,
                    seed_help: Optional[str] = None, overwrite_help: Optional[str] = None,
                    limit: bool = True, overwrite: bool = True) -> None:
    """The options every stage takes; a stage can say what --seed / --overwrite mean for it, and leave out
    the ones it would ignore (``limit=False``, ``overwrite=False``: e.g. a stage that always rewrites)."""
    g = parser.add_argument_group("common options")
    if workers:
        g.add_argument("--workers", type=int, default=max(1, min(os.cpu_count() or 1, 8)),
                       help="parallel worker processes, or with --executor ray the most tasks in flight across "
                            "the cluster (default: number of cores, at most 8)")
        g.add_argument("--executor", choices=parallel.EXECUTORS, default="local",
                       help="where per-item work runs: local = process pool on this machine; ray = Ray tasks, "
                            "needs pip install -r requirements-ray.txt (default: local)")
        g.add_argument("--ray_address", default=None,
                       help="with --executor ray: the cluster to join ('auto' or host:port); root_dir and the "
                            "input must be on a path every node sees (default: start a local Ray instance)")
        g.add_argument("--ray_max_retries", type=int, default=None,
                       help="with --executor ray: times Ray re-runs a task whose worker process or node died, "
                            f"before the item becomes an 'internal error' reject "
                            f"(default: {parallel.Executor.max_retries})")
    if seed:
        g.add_argument("--seed", type=int, default=42,
                       help=seed_help or "random seed; outputs are a function of it (default: 42)")
    if limit:
        g.add_argument("--limit", type=int, default=None, help="process at most this many items (for trial runs)")
    if overwrite:
        g.add_argument("--overwrite", action="store_true",
                       help=overwrite_help or "redo items whose outputs already exist (default: resume)")
    g.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="logging verbosity (default: INFO)")


NO_SEED_HELP = "no effect: nothing here is random (accepted so one TIMEWARP_ARGS fits every stage)"


def add_shuffled_dir_args(parser: argparse.ArgumentParser) -> None:
    """--shuffled_dir_name / --annotation_dir_name / --video_dir_name: where shuffle_clips' outputs are."""
    g = parser.add_argument_group("shuffled folders (as shuffle_clips wrote them)")
    g.add_argument("--shuffled_dir_name", default="shuffled",
                   help="folder of the shuffled outputs under root_dir (default: shuffled)")
    g.add_argument("--annotation_dir_name", default="shuffled_annotations",
                   help="folder of the shuffled annotations inside it (default: shuffled_annotations)")
    g.add_argument("--video_dir_name", default="shuffled_videos",
                   help="folder of the shuffled videos inside it (default: shuffled_videos)")


def layout_from_args(args: argparse.Namespace) -> Layout:
    """The Layout of ``--root_dir`` (which must exist) with the shuffled folder names given, if any."""
    root = require_root(args.root_dir, "--root_dir")
    names = [getattr(args, n, d) for n, d in (("shuffled_dir_name", "shuffled"),
                                               ("annotation_dir_name", "shuffled_annotations"),
                                               ("video_dir_name", "shuffled_videos"))]
    try:
        return Layout(root, *names)
    except ValueError as exc:
        raise UsageError(str(exc))


def executor_from_args(args: argparse.Namespace) -> parallel.Executor:
    """The ``Executor`` of --executor / --workers / --ray_address / --ray_max_retries (in-process for a stage
    without them)."""
    retries = getattr(args, "ray_max_retries", None)
    if retries is not None and getattr(args, "executor", "local") != "ray":
        raise UsageError("--ray_max_retries needs --executor ray")
    return parallel.Executor(getattr(args, "executor", "local"), getattr(args, "workers", 1),
                             getattr(args, "ray_address", None),
                             parallel.Executor.max_retries if retries is None else retries)


def option(default=MISSING, help: str = "", **argparse_kw):
    """A config field that is also the command-line option ``--<field name>``: its default, help and any
    argparse keywords (``type``, ``choices``, ``nargs``, ...) are written once, here."""
    return field(default=default, metadata={"help": help, "argparse": argparse_kw})


@dataclass(frozen=True, kw_only=True)
class StageConfig:
    """Base of each stage's config: a frozen dataclass built once (``from_args``, or by a test), passed
    whole to ``run`` and carried as it is to workers (it and its ``Layout`` pickle).

    Fields made with ``option(...)`` are the stage's own command-line options (``add_arguments``);
    ``seed``/``limit``/``overwrite`` are the common ones ``add_common_args`` defines; ``options()`` is
    what ``stats/<stage>.json`` records.
    """

    layout: Layout
    seed: int = 42
    limit: Optional[int] = None
    overwrite: bool = False

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, group: Optional[str] = None) -> None:
        """``--<name>`` for every ``option(...)`` field, with its default in the help text."""
        target = parser.add_argument_group(group) if group else parser
        for f in fields(cls):
            if "help" not in f.metadata:
                continue
            kw = dict(f.metadata["argparse"])
            default = f.default if f.default is not MISSING else None
            if isinstance(default, bool) and "action" not in kw:
                kw["action"] = "store_false" if default else "store_true"
            elif "action" not in kw and "type" not in kw and default is not None:
                seq = isinstance(default, (tuple, list))
                kw["type"] = (type(default[0]) if default else str) if seq else type(default)
            if f.default is MISSING:
                kw["required"] = True
            else:
                kw["default"] = list(default) if isinstance(default, tuple) else default
            shown = f" (default: {_shown(default)})" if f.default is not MISSING and not kw.get("required") else ""
            target.add_argument(f"--{f.name}", help=f.metadata["help"] + shown, **kw)

    @classmethod
    def from_args(cls, args: argparse.Namespace, **given):
        """The config of parsed options (a field absent from ``args`` keeps its default); ``given`` wins."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if f.name != "layout" and hasattr(args, f.name)}
        values.update(given)
        if "layout" not in values:
            values["layout"] = layout_from_args(args)
        for f in fields(cls):  # argparse gives lists; the config is frozen (hashable, stable)
            if isinstance(values.get(f.name), list):
                values[f.name] = tuple(values[f.name])
        return cls(**values)

    def options(self) -> dict:
        """What stats/<stage>.json records as the options used: root_dir and every other field."""
        out: dict = {"root_dir": str(self.layout.root)}
        for f in fields(self):
            if f.name != "layout":
                v = getattr(self, f.name)
                out[f.name] = list(v) if isinstance(v, tuple) else (str(v) if isinstance(v, Path) else v)
        return out


def _shown(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) or "none"
    return "off" if value is False else ("none" if value is None else str(value))


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)
    for name in ("httpx", "httpx2", "urllib3"):  # HTTP libraries (openai, huggingface_hub) log every request at INFO
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


def require_root(root_dir, what: str = "root_dir") -> Path:
    root = Path(root_dir)
    if not root.is_dir():
        raise UsageError(f"{what} {root} does not exist or is not a directory")
    return root


LOCK_NAME = ".timewarp.lock"


@contextlib.contextmanager
def output_lock(out_dir, create: bool = False) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<out_dir>/.timewarp.lock`` while a stage runs.

    A second run on the same output folder gets a UsageError "another run is using <out_dir>". The
    kernel drops the lock when the process ends, however it ends (no stale lock after a crash or
    kill -9). ``create``: make the folder first (preprocess's --save_dir); a run that fails before it
    writes anything there removes it again (and the parents it made). Without a usable folder
    (missing, read-only) the run goes on unlocked and the stage itself reports what is wrong with it.
    """
    out = Path(out_dir)
    made = []  # the folders made here (innermost first): removed again if the run fails and leaves them empty
    try:
        if create:
            for folder in (out, *out.parents):
                if folder.exists():
                    break
                made.append(folder)
            out.mkdir(parents=True, exist_ok=True)
        fh = open(out / LOCK_NAME, "a+", encoding="utf-8")
    except OSError as exc:
        log.debug("no lock in %s: %s", out, exc)
        yield
        return
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip()
            raise UsageError(f"another run is using {out}{' (' + holder + ')' if holder else ''}: "
                             f"wait for it to end, or use another output folder") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}, {Path(sys.argv[0]).name}")
        fh.flush()
        try:
            yield  # the lock goes with the file's closing (or the process's end)
        except BaseException:
            if made and _holds_no_output(out):  # failed before writing anything: leave no output folder behind
                shutil.rmtree(out, ignore_errors=True)
                for folder in made[1:]:
                    with contextlib.suppress(OSError):
                        folder.rmdir()
            raise


def _holds_no_output(out: Path) -> bool:
    """Nothing in ``out`` but the lock file, empty folders and the stages' resume records (state/)."""
    state = Layout(out).state_dir
    return all(p.name == LOCK_NAME or p.parent == state for p in out.rglob("*") if not p.is_dir())


def locked_output(args: argparse.Namespace):
    """The lock of the output folder a stage writes: ``--save_dir`` when it has one (preprocess, made
    if missing), else an existing ``--root_dir``; no lock for a stage without one."""
    if getattr(args, "save_dir", None):
        return output_lock(args.save_dir, create=True)
    root = getattr(args, "root_dir", None)
    return output_lock(root) if root and Path(root).is_dir() else contextlib.nullcontext()


def cli(run_from_args: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser,
        argv: Optional[list] = None) -> int:
    """Parse, set up logging, lock the output folder, run; a UsageError is one line on stderr and exit status 2."""
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "log_level", "INFO"))
    try:
        try:
            checkpoint("start of the run")
            with locked_output(args):
                result = run_from_args(args)
            sys.stdout.flush()  # a closed pipe fails here, inside the try, and not at exit
        finally:
            parallel.shutdown()
    except UsageError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout went away (`... | head`): stop quietly, as a process killed by SIGPIPE would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (the exit's own flush must not fail)
        return 141
    except KeyboardInterrupt:  # run by a shell script (timewarp/core/stage.sh), which prints the one line itself
        if not os.environ.get("TIMEWARP_SHELL_SCRIPT"):
            print(f"{parser.prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


class StageRun:
    """Collects the rejects and counters of one stage run and writes them when it ends."""

    def __init__(self, stage: str, layout: Layout, options: dict):
        self.stage = stage
        self.layout = layout
        self.options = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}
        self.rejects: list[Reject] = []
        self.counts: collections.Counter = collections.Counter()
        self.extra: dict = {}
        self.t0 = time.monotonic()

    def reject(self, item_id: str, reason: str, detail: str = "", source: str = "") -> None:
        self.rejects.append(Reject(self.stage, item_id, reason, detail, source))
        log.debug("reject %s: %s %s", item_id, reason, detail)

    def internal_error(self, item_id: str, failed, source: str = "") -> None:
        """An unexpected exception in one item (a ``parallel.Failed``): a reject, one log line, traceback at DEBUG."""
        self.reject(item_id, "internal error", failed.error, source)
        log.error("%s: internal error: %s", item_id, failed.error)
        log.debug("%s", failed.traceback)

    def succeeded(self, ids, results, sources=None):
        """The one place per-item results become rejects: pair ids with their ``pmap`` results and
        yield ``(id, result)`` for the items that succeeded.

        ``Rejected`` (the worker raised ``ItemError``) becomes a reject with its reason and detail,
        ``Failed`` an ``internal error`` reject; ``sources[i]`` names the item's input.
        """
        sources = sources or [""] * len(ids)
        for item_id, source, res in zip(ids, sources, results):
            if isinstance(res, parallel.Failed):
                self.internal_error(item_id, res, source)
            elif isinstance(res, parallel.Rejected):
                self.reject(item_id, res.reason, res.detail, source)
            else:
                yield item_id, res

    def finish(self, items_in: int, items_out: int, summary: str = "") -> dict:
        """Write rejects and stats, print the one-line summary, return the stats."""
        rejects = sorted(self.rejects, key=lambda r: (r.id, r.reason, r.detail))
        by_reason = collections.Counter(r.reason for r in rejects)
        write_jsonl(self.layout.rejects_file(self.stage), (r.to_dict() for r in rejects))
        stats = {
            "stage": self.stage,
            "items_in": items_in,
            "items_out": items_out,
            "rejected": len(rejects),
            "rejects_by_reason": dict(sorted(by_reason.items())),
            "counts": dict(sorted(self.counts.items())),
            "seconds": round(time.monotonic() - self.t0, 3),
            "options": self.options,
            **self.extra,
        }
        write_json(self.layout.stats_file(self.stage), stats)
        line = summary or f"{items_out} of {items_in} items done"
        top = ", ".join(f"{k}: {v}" for k, v in by_reason.most_common(3))
        print(f"[{self.stage}] {line}; {len(rejects)} rejected{' (' + top + ')' if top else ''}; "
              f"{stats['seconds']:.1f}s; stats in {self.layout.stats_file(self.stage)}")
        return stats
