"""Timestamp parsing and time <-> frame conversion.

FineVideo writes times as ``HH:MM:SS.mmm``; copies and other exports may hold ``HH:MM:SS,mmm``,
``MM:SS``, bare seconds, ``1.5s`` or ``None``.
Times are frame-quantised then rounded to milliseconds, so a time within a millisecond of a frame
boundary is snapped to that boundary.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Optional

SNAP_TOLERANCE = Fraction(1, 1000)


def parse_timestamp(value) -> Optional[float]:
    """Seconds from a time as exports write it; None if unusable (the caller counts it with a reason).

    Accepted: ``HH:MM:SS.mmm``, ``HH:MM:SS,mmm`` (SubRip style: a comma before the fraction of
    the last field), ``MM:SS(.mmm)``, a number, a numeric string, and seconds with a unit
    (``1.5s``). Seconds are not checked to be < 60 (old PySceneDetect wrote ``00:00:60.000``).
    Anything else (``1e3``, ``-1``, ``1,5``, ``1.5ms``, ``n/a``) is None.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) and value >= 0 else None
    text = str(value).strip()
    if text[-1:] in ("s", "S") and ":" not in text:
        text = text[:-1].rstrip()  # "1.5s", "90 s": seconds with their unit
    parts = text.split(":")
    if len(parts) > 3:
        return None
    if len(parts) > 1 and "," in parts[-1] and "." not in parts[-1]:
        parts[-1] = parts[-1].replace(",", ".", 1)  # "00:00:02,500" (SubRip, European locales)
    if any(not _DECIMAL.fullmatch(p.strip()) for p in parts):
        return None  # rejects "", "1e3", "-0", "1,5", "inf", "1.5ms"
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + float(p)
    return seconds if math.isfinite(seconds) else None


_DECIMAL = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")


def parse_rate(rate: float | str | Fraction) -> Fraction:
    """An exact frame rate: NTSC-style floats (29.97002997) become 30000/1001."""
    if isinstance(rate, Fraction):
        return rate
    if isinstance(rate, str) and "/" in rate:
        num, den = rate.split("/")
        return Fraction(int(num), int(den))
    value = float(rate)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"bad frame rate {rate!r}")
    ntsc = round(value * 1.001)
    if abs(value - round(value)) > 1e-3 and abs(ntsc * 1000 / 1001 - value) < 1e-3:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(value).limit_denominator(1001)


def time_to_frame(seconds: float, fps: Fraction) -> int:
    """Index of the first frame at or after ``seconds`` (frame k shows [k/fps, (k+1)/fps)).

    A time within a millisecond of a frame boundary is snapped to it, so both the start
    (inclusive) and end (exclusive) of a span map through this one function.
    """
    t = Fraction(seconds)
    exact = t * fps
    nearest = round(exact)
    if abs(Fraction(nearest) / fps - t) <= SNAP_TOLERANCE:
        return max(0, int(nearest))
    return max(0, math.ceil(exact))


def frame_to_time(frame: int, fps: Fraction) -> float:
    """Presentation time of frame ``frame``, rounded to microseconds for JSON."""
    return round(float(Fraction(frame) / fps), 6)


def format_timestamp(seconds: float) -> str:
    """``HH:MM:SS.mmm`` as FineVideo writes it."""
    ms = int(round(seconds * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"
