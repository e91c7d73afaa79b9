"""Timestamp parsing and time <-> frame conversion.

FineVideo writes times as ``HH:MM:SS.mmm``; copies may hold ``MM:SS``, bare seconds or ``None``.
Times are frame-quantised then rounded to milliseconds, so a time within a millisecond of a frame
boundary is snapped to that boundary.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional

SNAP_TOLERANCE = Fraction(1, 1000)


def parse_timestamp(value) -> Optional[float]:
    """Seconds from ``HH:MM:SS.mmm``, ``MM:SS(.mmm)``, a number or a numeric string; None if unusable.

    Seconds are not checked to be < 60 (old PySceneDetect wrote ``00:00:60.000``).
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) and value >= 0 else None
    text = str(value).strip()
    if not text:
        return None
    parts = text.split(":")
    if len(parts) > 3:
        return None
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        return None
    if any(not math.isfinite(n) or n < 0 for n in nums):
        return None
    if any(not p.strip().replace(".", "", 1).isdigit() for p in parts):
        return None  # rejects forms like "1e3" or "-0"
    seconds = 0.0
    for n in nums:
        seconds = seconds * 60 + n
    return seconds


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
