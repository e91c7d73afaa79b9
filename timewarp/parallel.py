"""The one parallel map over items (videos, annotations): a process pool with a tqdm bar.

Results come back in input order whatever ``workers`` is, so outputs do not depend on it.
An exception inside ``fn`` never stops the run: it comes back as a ``Failed`` value naming it.
"""
from __future__ import annotations

import multiprocessing
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Failed:
    """An unexpected exception raised by the mapped function for one item."""

    error: str
    traceback: str


def _call(fn, item):
    try:
        return fn(item)
    except Exception as exc:  # noqa: BLE001 - one bad item must not stop the run
        return Failed(f"{type(exc).__name__}: {exc}", traceback.format_exc())


def pmap(fn: Callable[[T], R], items: Sequence[T], workers: int = 1, desc: str = "",
         unit: str = "video", disable: bool | None = None) -> Iterator[R | Failed]:
    """Yield ``fn(item)`` for each item, in order, using ``workers`` processes (1 = in-process)."""
    items = list(items)
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=disable, dynamic_ncols=True, leave=False)
    try:
        if workers <= 1 or len(items) <= 1:
            for item in items:
                yield _call(fn, item)
                bar.update(1)
            return
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=ctx) as pool:
            futures = [pool.submit(_call, fn, item) for item in items]
            for fut in futures:
                yield fut.result()
                bar.update(1)
    finally:
        bar.close()


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
