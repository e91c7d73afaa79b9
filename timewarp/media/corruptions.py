"""Frame-sequence corruptions for self-generated preference pairs (TimeWarp-Implicit).

Each corruption is a pure function of the input frames and a seed: it never modifies its inputs,
and the same frames and seed give the same result. It returns a ``Corrupted`` that names it, holds
the parameters that redo it (JSON-safe), the corrupted frame sequence, and for every output frame
where it comes from (``sources``: ``(0, i)`` = input frame i, ``(1, j)`` = frame j of the other
video), so a record can say exactly which frames a model was shown.

A corruption is one ``Corruption`` record in ``CORRUPTIONS`` (the table below is made from them).
``DEFAULT_CORRUPTIONS`` is written out, so a new record does not join the default draw, and ``choose``
ranks corruptions by a seeded number of their own name: adding a corruption leaves every existing
output byte-identical, and listing it in ``--corruptions`` changes only the videos that draw it.

A corruption that cannot change a sequence this short raises ``NotApplicable`` (a ``ValueError``).
Frames are ``HxWx3`` ``uint8`` arrays (BGR or RGB: nothing here depends on the channel order).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from timewarp.core.splits import rank_key


class NotApplicable(ValueError):
    """The corruption cannot change a sequence like this one (e.g. reverse of one frame)."""


@dataclass
class Corrupted:
    name: str
    params: dict                      # JSON-safe; with the name and the input, enough to redo it
    frames: list                      # the corrupted sequence (input arrays reused where pixels are unchanged)
    sources: list                     # per output frame: (0, i) input frame i | (1, j) other video's frame j
    pixels_changed: bool = False      # True when frames are new images, not input frames

    def source_indices(self, own: Sequence[int], other: Sequence[int] = ()) -> list[int]:
        """The frame numbers shown, given the frame numbers of the input (and of the other video's) frames."""
        return [int(own[i]) if s == 0 else int(other[i]) for s, i in self.sources]


def _rng(seed: int) -> random.Random:
    return random.Random(int(seed))


def _need(frames: Sequence, n: int, name: str) -> None:
    if len(frames) < n:
        raise NotApplicable(f"{name} needs at least {n} frames, got {len(frames)}")


def _segment_length(rng: random.Random, n: int, length: Optional[int], lo_frac: float = 0.25,
                    hi_frac: float = 0.5, minimum: int = 1, maximum: Optional[int] = None) -> int:
    if length is None:
        lo = max(minimum, int(round(n * lo_frac)))
        hi = max(lo, int(round(n * hi_frac)))
        length = rng.randint(lo, hi)
    if maximum is not None:
        length = min(length, maximum)
    return max(minimum, int(length))


def shuffle(frames: Sequence[np.ndarray], seed: int) -> Corrupted:
    """The frames in a random order that is not the original one."""
    _need(frames, 2, "shuffle")
    rng = _rng(seed)
    n = len(frames)
    order = list(range(n))
    while order == list(range(n)):
        rng.shuffle(order)
    return Corrupted("shuffle", {"order": order}, [frames[i] for i in order], [(0, i) for i in order])


def reverse(frames: Sequence[np.ndarray], seed: int = 0) -> Corrupted:
    """The frames last to first (the seed is unused; accepted for a uniform signature)."""
    _need(frames, 2, "reverse")
    order = list(range(len(frames)))[::-1]
    return Corrupted("reverse", {}, [frames[i] for i in order], [(0, i) for i in order])


def drop(frames: Sequence[np.ndarray], seed: int, length: Optional[int] = None) -> Corrupted:
    """Without one contiguous segment of ``length`` frames (default: a quarter to a half); >= 2 frames stay."""
    _need(frames, 3, "drop")
    rng = _rng(seed)
    n = len(frames)
    length = _segment_length(rng, n, length, maximum=n - 2)
    start = rng.randint(0, n - length)
    keep = [i for i in range(n) if not start <= i < start + length]
    return Corrupted("drop", {"start": start, "end": start + length}, [frames[i] for i in keep], [(0, i) for i in keep])


def freeze(frames: Sequence[np.ndarray], seed: int, length: Optional[int] = None) -> Corrupted:
    """Frame ``p`` shown for ``length`` positions p..p+length-1 (default: a third to a half, >= 2); same count."""
    _need(frames, 2, "freeze")
    rng = _rng(seed)
    n = len(frames)
    length = _segment_length(rng, n, length, lo_frac=1 / 3, hi_frac=0.5, minimum=2, maximum=n)
    start = rng.randint(0, n - length)
    order = [start if start <= i < start + length else i for i in range(n)]
    return Corrupted("freeze", {"frame": start, "start": start, "end": start + length},
                     [frames[i] for i in order], [(0, i) for i in order])


def splice(frames: Sequence[np.ndarray], seed: int, other: Sequence[np.ndarray] = (),
           length: Optional[int] = None) -> Corrupted:
    """Positions [start, end) replaced by the other video's frames at the same positions (resized to fit)."""
    _need(frames, 2, "splice")
    if not other:
        raise NotApplicable("splice needs frames of another video")
    rng = _rng(seed)
    n = len(frames)
    length = _segment_length(rng, n, length, maximum=n - 1)
    start = rng.randint(0, n - length)
    h, w = frames[0].shape[:2]
    out, sources = [], []
    for i in range(n):
        if start <= i < start + length:
            j = min(len(other) - 1, int(i * len(other) / n)) if len(other) != n else i
            img = other[j]
            if img.shape[:2] != (h, w):
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
            out.append(img)
            sources.append((1, j))
        else:
            out.append(frames[i])
            sources.append((0, i))
    return Corrupted("splice", {"start": start, "end": start + length}, out, sources,
                     pixels_changed=any(s == 1 for s, _ in sources))


def blur(frames: Sequence[np.ndarray], seed: int = 0, sigma: Optional[float] = None) -> Corrupted:
    """Every frame under a heavy Gaussian blur (default sigma: the longer side / 15; the seed is unused)."""
    _need(frames, 1, "blur")
    h, w = frames[0].shape[:2]
    sigma = float(sigma) if sigma else round(max(h, w) / 15.0, 3)
    out = [cv2.GaussianBlur(f, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT) for f in frames]
    return Corrupted("blur", {"sigma": sigma}, out, [(0, i) for i in range(len(frames))], pixels_changed=True)


def noise(frames: Sequence[np.ndarray], seed: int, std: float = 60.0) -> Corrupted:
    """Every frame plus seeded Gaussian noise of standard deviation ``std`` (clipped to 0..255)."""
    _need(frames, 1, "noise")
    gen = np.random.default_rng(int(seed) % (2 ** 63))
    out = []
    for f in frames:
        noisy = f.astype(np.float32) + gen.normal(0.0, float(std), size=f.shape).astype(np.float32)
        out.append(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
    return Corrupted("noise", {"std": float(std)}, out, [(0, i) for i in range(len(frames))], pixels_changed=True)


@dataclass(frozen=True)
class Corruption:
    """One corruption: everything that names, documents and applies it."""

    name: str
    apply: Callable[..., Corrupted]   # apply(frames, seed, **params) -> Corrupted (+ other=frames if needs_other)
    what: str                         # one line: what it does and how many frames it gives (docs, --help)
    needs_other: bool = False         # it takes frames of another video (``other=``)


CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in (
    Corruption("shuffle", shuffle, "a random non-identity permutation of the frame order (n frames)"),
    Corruption("reverse", reverse, "the frames in reverse order (n)"),
    Corruption("drop", drop, "removes one contiguous segment, a quarter to a half of the frames (fewer)"),
    Corruption("freeze", freeze, 'one frame repeated over a segment: the video "freezes" there (n)'),
    Corruption("splice", splice, "a contiguous segment replaced by the same positions of another video (n)",
               needs_other=True),
    Corruption("blur", blur, "heavy Gaussian blur on every frame, sigma = longer side / 15 by default (n)"),
    Corruption("noise", noise, "heavy Gaussian pixel noise on every frame, std 60 by default (n)"),
)}
# What --corruptions draws from by default, written out: a corruption added above does not join it.
DEFAULT_CORRUPTIONS = ("shuffle", "reverse", "drop", "freeze", "splice", "blur", "noise")

__doc__ += "\nCorruptions (``CORRUPTIONS``):\n\n" + "\n".join(
    f"  {c.name:<9}{c.what}" for c in CORRUPTIONS.values()) + "\n"


def choose(names: Sequence[str], count: int, seed: int, key: str) -> list[str]:
    """``count`` of ``names`` for one item (``key``, e.g. a video id), seeded: each name ranks by a number
    of its own (``rank_key(seed, key/name)``), so neither the order of ``names`` nor a name added to them
    changes the choice, except where the added name ranks among the first ``count``."""
    return sorted(dict.fromkeys(names), key=lambda n: rank_key(seed, f"{key}/{n}"))[:max(0, count)]


def corrupt(name: str, frames: Sequence[np.ndarray], seed: int, other: Sequence[np.ndarray] = (),
            **params) -> Corrupted:
    """Apply the corruption called ``name`` (see ``CORRUPTIONS``)."""
    c = CORRUPTIONS.get(name)
    if c is None:
        raise ValueError(f"unknown corruption {name!r} (known: {', '.join(CORRUPTIONS)})")
    if c.needs_other:
        return c.apply(frames, seed, other=other, **params)
    return c.apply(frames, seed, **params)
