"""Atomic file writes and JSON helpers: a killed run never leaves a half file under its final name."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from timewarp.core.checkpoints import checkpoint
from timewarp.core.errors import DiskFullError


_UMASK = os.umask(0)
os.umask(_UMASK)


def dumps(obj) -> str:
    """The one JSON form of every record we write (stable key order is the dataclass field order)."""
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


@contextlib.contextmanager
def atomic_path(final: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success it is renamed onto ``final``.

    The temporary name keeps the extension (ffmpeg picks the muxer from it) and starts with
    ``.tmp-`` so listings by extension ignore it.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = final.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{final.stem[:40]}-", suffix=suffix, dir=final.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are shared data, like any open()ed file
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        checkpoint(f"before writing {final.name}")
        os.replace(tmp_path, final)
        checkpoint(f"after writing {final.name}")
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(disk_full_message(final)) from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def disk_full_message(path) -> str:
    """The one line for a full disk, naming the folder that was being written."""
    return (f"no space left on the device of {Path(path).parent}: free some and rerun the same command "
            f"(finished work is kept)")


TEMP_PREFIXES = (".tmp-", ".concat-")


def remove_stale_temp(root: Path) -> int:
    """Delete temporary files a killed run left under ``root`` (they never carry a final name).

    Call at the start of a stage; one run per root_dir at a time is assumed.
    """
    n = 0
    root = Path(root)
    if not root.is_dir():
        return 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.startswith(TEMP_PREFIXES) or Path(dirpath).name == "tmp" and Path(dirpath).parent == root:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(dirpath, name))
                    n += 1
    return n


_SURROGATE = re.compile("[\ud800-\udfff]")


def without_surrogates(text: str) -> str:
    """``text`` with every lone UTF-16 surrogate (from a JSON ``\\ud800`` escape or an undecodable file
    name) replaced by U+FFFD, so that it can be written as UTF-8."""
    return _SURROGATE.sub("\ufffd", text)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` as UTF-8, atomically; a lone surrogate is written as U+FFFD instead of failing the item."""
    text = without_surrogates(text)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())


def write_json(path: Path, obj) -> None:
    write_text(path, dumps(obj))


def write_jsonl(path: Path, rows: Iterable) -> int:
    n = 0
    lines = []
    for row in rows:
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
        n += 1
    write_text(path, "".join(lines))
    return n


def read_json(path: Path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def parse_json_rows(text: str) -> list:
    """The rows of a file that holds either one JSON array or JSON lines (blank lines skipped); ValueError if neither."""
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_jsonl(path: Path) -> list:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
    return rows
