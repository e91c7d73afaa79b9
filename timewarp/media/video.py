"""ffmpeg plumbing and the one-encode engine: one libx264 encode per video, everything else by stream copy.

(The default engine is the smart cut, ``smartcut.py``; it falls back to this one per video.)

The normal video is encoded once with ``-bf 0`` (no B-frames) and a keyframe forced at the first
frame of every clip. A clip (or a shuffled sequence of clips) is then a concat-demuxer stream copy
with ``inpoint``/``outpoint`` on those keyframes: frame-identical to the normal video's frames and
~0.1 s per output. Frames, not seconds, are the unit: frame k is shown at k/fps.

The ffmpeg binary is the one the ``imageio-ffmpeg`` wheel ships (no system ffmpeg needed).
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence

from timewarp.core.errors import DiskFullError, ItemError, UsageError
from timewarp.core.store import atomic_path, disk_full_message
from timewarp.sources.timestamps import SNAP_TOLERANCE, parse_rate

FFMPEG_TIMEOUT = 1800  # seconds for one ffmpeg call; a stuck decode must not hold a night's run


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of a working ffmpeg binary (``TIMEWARP_FFMPEG`` overrides the imageio-ffmpeg one)."""
    exe = os.environ.get("TIMEWARP_FFMPEG")
    if not exe:
        try:
            import imageio_ffmpeg
            exe = imageio_ffmpeg.get_ffmpeg_exe()
        except Exception as exc:  # noqa: BLE001
            raise UsageError(f"no ffmpeg binary: install imageio-ffmpeg (pip install -r requirements.txt): {exc}")
    try:
        res = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"ffmpeg binary {exe} does not run: {exc}")
    if res.returncode != 0:
        raise UsageError(f"ffmpeg binary {exe} does not run (exit {res.returncode})")
    return exe


def run_ffmpeg(args: Sequence[str], what: str, timeout: int = FFMPEG_TIMEOUT) -> subprocess.CompletedProcess:
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", *map(str, args)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ItemError(f"{what}: ffmpeg timed out", f"after {timeout}s")
    if res.returncode != 0:
        if "No space left on device" in res.stderr:
            raise DiskFullError(disk_full_message(args[-1]))
        raise ItemError(f"{what}: ffmpeg failed", ffmpeg_error(res.stderr, res.returncode))
    return res


@dataclass(frozen=True)
class VideoInfo:
    """What one ffmpeg decode pass saw: the frames' presentation times and the rate they follow.

    ``times[k]`` is decoded frame k's presentation time in seconds counted from the first decoded
    frame (exact, in the stream's time base). ``fps`` is the exact stream rate when every frame is
    within ``timing_tolerance`` of k/fps; otherwise ``irregular`` names what is wrong (variable
    frame rate, dropped frames, times not increasing) and ``fps`` is only the nominal rate.
    """

    fps: Fraction
    frame_count: int
    width: int
    height: int
    times: tuple = ()
    time_base: Fraction = Fraction(0)
    start_time: Fraction = Fraction(0)   # the first frame's pts in seconds (edit lists, offsets)
    container_duration: Optional[float] = None
    irregular: Optional[tuple[str, str]] = None   # (reason, detail)
    decoded: bool = True   # times are decoded frames' (False: read from packets by ``packet_probe``)

    @property
    def duration(self) -> float:
        return float(self.frame_count / self.fps)


SHOWINFO = re.compile(r"\] n:\s*(\d+) pts:\s*(-?\d+) .*? s:(\d+)x(\d+) ")
_CONFIG = re.compile(r"config in time_base: (\d+)/(\d+), frame_rate: (\d+)/(\d+)")
_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
# ffmpeg's closing lines that say only that something failed, never why
_GENERIC = ("Conversion failed!", "Error opening output files", "Error opening output file",
            "Nothing was written", "Error while filtering", "Terminating thread", "Error while processing",
            "Task finished with error code", "Could not open encoder before EOF", "Error sending frames to consumers")


# with "-loglevel level+info" every line says its level: "[h264 @ 0x55..] [error] error while decoding MB 0 8"
_LEVEL = re.compile(r"^\[([^\]]*) @ 0x[0-9a-fA-F]+\]\s*\[(error|fatal|panic)\]\s*(.*)$")


def error_lines(stderr: str) -> list[str]:
    """What a decoder reported at level error or worse, ffmpeg run with ``-loglevel level+info``.

    Only decoders' lines ("[h264 @ ...]", "[vist#0:0/h264 @ ...]"): a muxer's complaint about
    timestamps ("non monotonically increasing dts") says nothing about the frames."""
    out = []
    for m in map(_LEVEL.match, stderr.splitlines()):
        if m and (m.group(1).startswith("vist#") or m.group(1) in _decoder_names()):
            out.append(m.group(3).strip())
    return out


@functools.lru_cache(maxsize=1)
def _decoder_names() -> frozenset:
    try:
        import av
        return frozenset(av.codecs_available) - {"rawvideo", "wrapped_avframe", "null"}  # also muxers' names
    except ImportError:  # pragma: no cover - requirements.txt installs it
        return frozenset({"h264", "hevc", "vp9", "vp8", "av1", "libdav1d", "mpeg4", "mpeg2video"})


def timing_tolerance(time_base: Fraction) -> Fraction:
    """How far a frame's pts may sit from k/fps and still be frame k of a constant rate.

    Metadata times are snapped within 1 ms; a pts is rounded to the stream's time base (an
    iPhone's 1/600 s tick puts 29.97 fps frames up to 0.83 ms off), so the larger of the two.
    """
    return max(SNAP_TOLERANCE, time_base)


def probe(path: Path, until: Optional[float] = None, packets: bool = False) -> VideoInfo:
    """Every frame's presentation time of the first video stream, and the rate they follow.

    By one ffmpeg decode pass (``decode_probe``); with ``packets``, read from the packets
    (``packet_probe``, no decoding) where that is known to give what decoding gives. Packet times
    say nothing about whether each packet decodes: whoever decodes the frames later checks the
    times (``encode_normal(expect_times=...)``, ``FramesDiffer``).
    """
    info = packet_probe(path, until) if packets else None
    return info or decode_probe(path, until)


def _rescale_near(value: int, num: int, den: int) -> int:
    """av_rescale with AV_ROUND_NEAR_INF: value * num / den, halves away from zero."""
    q = (abs(value) * num + den // 2) // den
    return q if value >= 0 else -q


def packet_probe(path: Path, until: Optional[float] = None) -> Optional[VideoInfo]:
    """``decode_probe``'s answer read from the demuxed packets (PyAV, no decoding), or None.

    A packet is a frame and its pts the frame's time only when nothing between demuxer and
    decoder can add, drop or move a frame, so this answers only for progressive H.264 in ``avcC``
    (one access unit per packet, no field pairs) that starts with an IDR at its earliest time,
    has no in-band parameter sets, no packet marked discard (edit lists) or corrupt, a pts on every
    packet, no display matrix (rotation is applied when decoding) and frames exactly on a constant
    rate grid. Anything else (VFR, holes, HEVC, AV1, rotated, broken files) returns None, and the
    caller decodes, which also names what is wrong. Times are shifted exactly as the ffmpeg CLI
    shifts them (by the container's start time, rounded into the stream's time base), and ``until``
    keeps the frames less than that many seconds after the first one, as ``-t`` does.
    """
    try:
        import av
    except ImportError:  # pragma: no cover - requirements.txt installs it
        return None
    from timewarp.media import h264

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            st = container.streams.video[0]
            cc = st.codec_context
            if cc.name != "h264" or st.time_base is None:
                return None
            avcc = h264.AvcC.parse(bytes(cc.extradata or b""))
            if len(avcc.sps) != 1 or not h264.parse_sps(avcc.sps[0]).frame_mbs_only:
                return None
            tb = Fraction(st.time_base)
            offset = 0
            if container.start_time is not None:  # ffmpeg -i: ts_offset = -start_time, into the stream's base
                offset = _rescale_near(-container.start_time, tb.denominator, tb.numerator * 1_000_000)
            # -t keeps frames less than ``until`` (to the ms, as decode_probe passes it) after the first one
            span = None if until is None else _rescale_near(int(Fraction(f"{until:.3f}") * 1_000_000),
                                                                 tb.denominator, tb.numerator * 1_000_000)
            pts, first_pts = [], None
            for pkt in h264.scan_packets(container, st, avcc):
                if span is not None and first_pts is not None and pkt.dts - first_pts >= span:
                    break  # dts <= pts: this and every later frame are past the span
                if first_pts is None:
                    if not pkt.idr:
                        return None
                    first_pts = pkt.pts
                pts.append(pkt.pts + offset)
            duration_us = container.duration
            nominal = Fraction(st.guessed_rate) if st.guessed_rate else None  # PyAV: read before close
        first = first_frame(path)
    except (av.FFmpegError, h264.Unsupported, OSError, ValueError):
        return None
    if first is None or first.rotated:  # rotation is applied when decoding
        return None
    width, height = first.width, first.height
    if not pts or first_pts + offset != min(pts):
        return None
    pts.sort()
    if len(set(pts)) != len(pts):
        return None
    if span is not None:
        pts = [p for p in pts if p - pts[0] < span]
    times = tuple((p - pts[0]) * tb for p in pts)
    fps, irregular = frame_rate(times, nominal, tb)
    if irregular or width < 2 or height < 2:
        return None
    container_s = None
    if duration_us is not None:  # as ffmpeg prints it: "Duration: HH:MM:SS.cc", rounded to 1/100 s
        d = duration_us + 5000
        container_s = d // 1_000_000 + (d % 1_000_000) // 10_000 / 100
    return VideoInfo(fps, len(times), width, height, times, tb, pts[0] * tb, container_s, None, decoded=False)


@dataclass(frozen=True)
class FirstFrame:
    width: int
    height: int
    rotated: bool   # a display matrix: decoders rotate or flip every frame


def first_frame(path: Path) -> Optional[FirstFrame]:
    """Decode the first frame of the first video stream (PyAV): its size and whether it carries a
    display matrix. None when no frame decodes. Raises av.FFmpegError when the file does not open."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            return None
        for frame in container.decode(container.streams.video[0]):
            return FirstFrame(frame.width, frame.height, "DISPLAYMATRIX" in frame.side_data)
    return None


def decode_probe(path: Path, until: Optional[float] = None) -> VideoInfo:
    """Decode the first video stream with ffmpeg once and read every frame's presentation time.

    ``until`` (seconds) stops decoding that far into the file: the frames after it are not
    needed. Anything the bundled ffmpeg decodes is accepted (AV1, VP9, HEVC, 10-bit, rotated:
    sizes are after the display-matrix rotation ffmpeg applies). ItemError says why a file is
    unusable.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise ItemError("empty or missing video file", str(path))
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "level+info"]
    if until is not None:
        args += ["-t", f"{until:.3f}"]
    args += ["-i", str(path), "-map", "0:v:0", "-vf", "showinfo=checksum=0", "-fps_mode", "passthrough",
             "-an", "-sn", "-dn", "-f", "null", "-"]
    try:
        res = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=FFMPEG_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ItemError("video does not decode", f"{path}: ffmpeg timed out after {FFMPEG_TIMEOUT}s")
    err = res.stderr
    pts, size = [], None
    for m in SHOWINFO.finditer(err):
        pts.append(int(m.group(2)))
        size = size or (int(m.group(3)), int(m.group(4)))
    cfg = _CONFIG.search(err)
    if res.returncode != 0 and not pts:
        why = ffmpeg_error(err, res.returncode)
        if "matches no streams" in err:
            raise ItemError("no video stream", str(path))
        if "Invalid data found" in why or "moov atom not found" in why or "could not find codec" in why.lower():
            raise ItemError("video does not open", f"{path}: {why}")
        raise ItemError("video does not decode", f"{path}: {why}")
    if not pts or cfg is None or size is None:
        raise ItemError("video has no frames", str(path))
    if res.returncode != 0:
        raise ItemError("video does not decode", f"{path}: {ffmpeg_error(err, res.returncode)}")
    tb = Fraction(int(cfg.group(1)), int(cfg.group(2)))
    nominal = Fraction(int(cfg.group(3)), int(cfg.group(4))) if int(cfg.group(4)) and int(cfg.group(3)) else None
    times = tuple((p - pts[0]) * tb for p in pts)
    dur = _DURATION.search(err)
    container = (int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3))) if dur else None
    fps, irregular = frame_rate(times, nominal, tb)
    nopts = re.search(r"\] n:\s*(\d+) pts:\s*NOPTS", err)
    if nopts:  # a frame ffmpeg cannot place in time: counting it or not would both be a guess
        irregular = ("frame times missing", f"{path}: decoded frame {nopts.group(1)} has no timestamp")
    errors = error_lines(err)
    if errors:  # a damaged packet: whatever the frames' times look like, they are not the source's frames
        irregular = ("source does not decode", f"{path}: {errors[0]}")
    width, height = size
    if width < 2 or height < 2:
        irregular = irregular or ("video too small to encode",
                                  f"{path}: {width}x{height}; H.264 4:2:0 needs at least 2x2 pixels")
    return VideoInfo(fps, len(times), width, height, times, tb, pts[0] * tb, container, irregular)


def frame_rate(times: Sequence[Fraction], nominal: Optional[Fraction],
               time_base: Fraction) -> tuple[Fraction, Optional[tuple[str, str]]]:
    """(exact rate, None) when frame k is at k/rate for every k (within ``timing_tolerance``);
    else (a nominal rate, (reason, detail)) naming the irregularity. Never a rate that merely averages."""
    tol = timing_tolerance(time_base)
    n = len(times)
    candidates = [nominal] if nominal else []
    if n > 1 and times[-1] > 0:
        with contextlib.suppress(ValueError):
            candidates.append(parse_rate(float((n - 1) / times[-1])))
    for rate in candidates:
        if rate and all(abs(t - Fraction(k) / rate) <= tol for k, t in enumerate(times)):
            return rate, None
    steps = [b - a for a, b in zip(times, times[1:])]
    rate = candidates[0] if candidates else Fraction(25)
    bad = next((k for k, d in enumerate(steps) if d <= 0), None)
    if bad is not None:
        return rate, ("frame times not increasing",
                      f"frame {bad + 1} at {float(times[bad + 1]):.6f}s is not after frame {bad} at {float(times[bad]):.6f}s")
    if n < 2:
        return rate, None
    step = min(steps)
    base = parse_rate(float(1 / step)) if step > 0 else rate
    multiples = [d * base for d in steps]
    runs = [round(m) for m in multiples]
    segment = any(r > 1 and runs[k:k + 3] == [r] * 3 for k, r in enumerate(runs))
    if not segment and all(abs(m - round(m)) * (1 / base) <= tol for m in multiples):
        holes = [(k, round(m) - 1) for k, m in enumerate(multiples) if round(m) > 1]
        k, missing = holes[0]
        return base, ("dropped frames (timestamp holes)",
                      f"{sum(h for _, h in holes)} frame(s) missing at {float(base):.3f} fps in {len(holes)} hole(s), "
                      f"first after frame {k} at {float(times[k]):.3f}s ({missing} missing); frames are not "
                      f"duplicated to fake a constant rate")
    lo, hi = min(steps), max(steps)
    return rate, ("variable frame rate",
                  f"frame intervals from {float(lo) * 1000:.2f} ms to {float(hi) * 1000:.2f} ms "
                  f"({float(1 / hi):.3f} to {float(1 / lo):.3f} fps); frames are not duplicated or dropped to fake "
                  f"a constant rate")


def regular_part(info: VideoInfo, need: float) -> VideoInfo:
    """``info`` cut to its frames before the first irregularity when those reach ``need`` seconds (the last
    time a clip uses); ``info`` itself when it is regular. A hole or rate change after every used frame
    (``ffmpeg -ss 1 -i in.mp4 -c copy -t 3.5`` leaves one in its last 0.2 s) is no reason to lose the
    video; one inside it is: ItemError with the irregularity."""
    if not info.irregular:
        return info
    times, tol = info.times, timing_tolerance(info.time_base)
    best = 0
    rates = [info.fps] + ([parse_rate(float(1 / (times[1] - times[0])))] if len(times) > 1 and times[1] > times[0] else [])
    for rate in rates:
        n = next((k for k, t in enumerate(times) if abs(t - Fraction(k) / rate) > tol), len(times))
        if n > best and frame_rate(times[:n], rate, info.time_base)[1] is None:
            best, fps = n, rate
    if best < 2 or Fraction(best) / fps < Fraction(need) - SNAP_TOLERANCE:
        raise ItemError(*info.irregular)
    return VideoInfo(fps, best, info.width, info.height, tuple(times[:best]), info.time_base, info.start_time,
                     info.container_duration, None, info.decoded)


def ffmpeg_error(stderr: str, returncode: int) -> str:
    """The line of ffmpeg's stderr that says why it failed: its first error, not its closing 'Conversion failed!'."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln[:1].isspace()]
    useful = [ln for ln in lines if not any(g in ln for g in _GENERIC)]
    marked = [ln for ln in useful if re.search(r"error|invalid|not |cannot|failed|unsupported|too |must", ln, re.I)
              and not ln.startswith(("Input #", "Output #", "Stream #", "frame="))]
    pick = marked[:1] or useful[-1:] or lines[-1:]
    # "[in#0 @ 0x5564...] moov atom not found": the address differs per run; the message must not
    if not pick:
        return f"exit {returncode}"
    line = re.sub(r"\[[^\]]*@ 0x[0-9a-fA-F]+\]\s*", "", pick[0])
    return re.sub(r"^\[(?:info|warning|error|fatal|panic|verbose)\]\s*", "", line)[:300]


def output_size(width: int, height: int, max_height: Optional[int]) -> tuple[int, int]:
    """Size of the normal video: scaled to max_height if taller, always even (yuv420p)."""
    if max_height and height > max_height:
        w = int(round(width * max_height / height / 2)) * 2
        return max(2, w), max_height - max_height % 2
    return width - width % 2, height - height % 2


@dataclass(frozen=True)
class EncodeSettings:
    preset: str = "veryfast"
    crf: int = 23
    max_height: Optional[int] = None
    keep_audio: bool = False
    # x264's output depends on its thread count, so it is fixed (not derived from --workers or the
    # machine): the same input gives the same bytes on any machine with any --workers. One thread per
    # encode, and one encode per core (--workers = cores): parallelism across videos scales to any
    # number of cores (and nodes) and costs x264 nothing, where frame threads lose a little quality.
    threads: int = 1


class FramesDiffer(ItemError):
    """The decoded frames are not the ones the packets promised (a packet that does not decode)."""


def encode_normal(src: Path, dst: Path, fps: Fraction, n_frames: int, keyframes: Sequence[int],
                  width: int, height: int, settings: EncodeSettings = EncodeSettings(),
                  ranges: Optional[Sequence[Sequence[int]]] = None, start_time: Fraction = Fraction(0),
                  expect_times: Optional[Sequence[Fraction]] = None) -> int:
    """Encode decoded frames ``ranges`` ([a, b) each, default [0, n_frames)) of ``src`` back to back.

    Keyframes are forced at normal-video frames ``keyframes``; returns frames written. ``probe``
    has checked that decoded frame k is at k/fps (a constant rate, no holes), so giving output
    frame j the pts j/fps keeps every frame's time: frame j of the output is the j-th kept
    decoded frame of the source. ``start_time`` is the first frame's pts (for cutting audio).
    ``expect_times`` (a packet probe's ``start_time + times[k]``, as ffmpeg shifts them) are checked
    against the frames this encode decodes (``showinfo``, no second decode): ``FramesDiffer`` when
    one differs or is missing, before anything is kept.
    """
    out_w, out_h = output_size(width, height, settings.max_height)
    if out_w < 2 or out_h < 2:
        raise ItemError("video too small to encode", f"{src}: {width}x{height}; H.264 4:2:0 needs at least 2x2 pixels")
    ranges = [tuple(r) for r in (ranges or [(0, n_frames)])]
    cut = ranges != [(0, n_frames)]
    filters = ["showinfo=checksum=0"] if expect_times is not None else []
    filters += frame_index_filters(fps, start_time, ranges)
    if out_h != height - height % 2 or out_w != width - width % 2:
        filters.append(f"scale={out_w}:{out_h}")
    elif (out_w, out_h) != (width, height):
        filters.append(f"crop={out_w}:{out_h}:0:0")
    else:  # a no-op at this size; frames after a mid-stream size change are scaled to it
        filters.append(f"scale={out_w}:{out_h}")
    # half a frame before each keyframe's time: the first frame at or after it is exactly that frame
    kf = ",".join(f"{float((Fraction(k) - Fraction(1, 2)) / fps):.6f}" for k in sorted(set(keyframes)) if k > 0)
    args = ["-i", src, "-map", "0:v:0"]
    if settings.keep_audio and cut:
        # the same source ranges of the audio, sample-exact, back to back
        parts = "".join(f"[0:a:0]atrim=start={float(start_time + a / fps):.6f}:end={float(start_time + b / fps):.6f},"
                        f"asetpts=PTS-STARTPTS[a{i}];" for i, (a, b) in enumerate(ranges))
        graph = parts + "".join(f"[a{i}]" for i in range(len(ranges))) + f"concat=n={len(ranges)}:v=0:a=1[aout]"
        if has_audio(src):
            args += ["-filter_complex", graph, "-map", "[aout]", "-c:a", "aac", "-b:a", "128k"]
        else:
            args += ["-an"]
    elif settings.keep_audio:
        args += ["-map", "0:a:0?", "-c:a", "aac", "-b:a", "128k", "-t", f"{float(n_frames / fps):.6f}"]
    else:
        args += ["-an"]
    args += ["-sn", "-dn", "-map_metadata", "-1", "-vf", ",".join(filters),
             "-frames:v", n_frames, "-fps_mode", "passthrough", "-enc_time_base:v", f"{fps.denominator}/{fps.numerator}",
             "-c:v", "libx264", "-preset", settings.preset, "-crf", settings.crf, "-bf", 0,
             "-pix_fmt", "yuv420p", "-threads", settings.threads]
    if kf:
        args += ["-force_key_frames", kf]
    with atomic_path(dst) as tmp:
        res = run_ffmpeg([*args, "-progress", "pipe:1", "-nostats", tmp], "encode")
        produced = _progress_frames(res.stdout)
        if expect_times is not None:
            _check_decoded_times(res.stderr, expect_times, max(b for _, b in ranges), src)
        if produced < n_frames:
            raise ItemError("source shorter than its annotation",
                            f"decoded {produced} frames, clips need {n_frames}")
    return produced


def frame_index_filters(fps: Fraction, start_time: Fraction, ranges: Sequence[Sequence[int]]) -> list[str]:
    """``select`` + ``setpts``: keep source frames ``ranges`` ([a, b) each) and place them back to back at j/fps.

    A frame's index is read from its own timestamp, k = round((t - start_time) * fps) (``probe`` found
    frame k at start_time + k/fps), never from a frame counter: ffmpeg rebuilds its filter graph where a
    source's parameters change mid-stream (a join of parts with another size, colour range or profile),
    and every counter in it (select's and setpts' ``n``/``N``) starts again at 0 there.
    """
    def k(var: str) -> str:
        return f"round(({var}-{float(start_time):.9f})*{fps.numerator}/{fps.denominator})"

    select = "+".join(f"between({k('t')}\\,{a}\\,{b - 1})" for a, b in ranges)
    place, pos = "", 0
    shifts = []
    for a, b in ranges:
        shifts.append((b, pos - a))
        pos += b - a
    for b, shift in reversed(shifts):
        place = f"{k('T')}+{shift}" if not place else f"if(lt({k('T')}\\,{b})\\,{k('T')}+{shift}\\,{place})"
    # settb: times in frames; the encode then passes them through (-fps_mode passthrough): -fps_mode cfr
    # would also read each frame's duration, kept from the packets, which is 3 frames where the dts jumps
    # at a join of a part with B-frames to one without, and show that frame three times
    return [f"select={select}", f"setpts=({place})*{fps.denominator}/{fps.numerator}/TB",
            f"settb={fps.denominator}/{fps.numerator}"]


def _check_decoded_times(stderr: str, expect: Sequence[Fraction], needed: int, src: Path) -> None:
    """The first ``needed`` decoded frames (showinfo lines) are at the ``expect`` times, or FramesDiffer.

    Absolute times, not times since the first frame: a first frame that does not decode shifts all."""
    cfg = _CONFIG.search(stderr)
    pts = [int(m.group(2)) for m in SHOWINFO.finditer(stderr)]
    if cfg is None or not pts:
        raise FramesDiffer("decoded frames differ from the packets", f"{src}: the encode logged no frame times")
    tb = Fraction(int(cfg.group(1)), int(cfg.group(2)))
    got = [p * tb for p in pts[:needed]]
    for k, want in enumerate(expect[:needed]):
        if k >= len(got) or got[k] != want:
            seen = f"{float(got[k]):.6f}s" if k < len(got) else "missing"
            raise FramesDiffer("decoded frames differ from the packets",
                               f"{src}: frame {k} is at {float(want):.6f}s by its packet, decoded: {seen}")


def has_audio(path: Path) -> bool:
    res = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True, text=True,
                         errors="replace", timeout=120)
    return bool(re.search(r"Stream #\S+.*: Audio:", res.stderr))


def _progress_frames(progress: str) -> int:
    frames = 0
    for line in progress.splitlines():
        if line.startswith("frame="):
            with contextlib.suppress(ValueError):
                frames = int(line.split("=", 1)[1])
    return frames


def _ceil_us(t: Fraction) -> str:
    return f"{math.ceil(t * 1_000_000) / 1_000_000:.6f}"


def _floor_us(t: Fraction) -> str:
    return f"{math.floor(t * 1_000_000) / 1_000_000:.6f}"


def concat_list(src: Path, fps: Fraction, spans: Sequence[tuple[int, int]]) -> str:
    """A concat-demuxer script: frames [a, b) of ``src`` for each span, in the given order.

    inpoint is rounded up to the microsecond so the demuxer's seek lands on the span's own
    keyframe, not the one before; outpoint is rounded down so frame b is excluded.
    """
    quoted = "'" + str(Path(src).resolve()).replace("'", "'\\''") + "'"
    lines = ["ffconcat version 1.0"]
    for a, b in spans:
        if not 0 <= a < b:
            raise ValueError(f"bad frame span [{a}, {b})")
        lines += [f"file {quoted}", f"inpoint {_ceil_us(Fraction(a) / fps)}", f"outpoint {_floor_us(Fraction(b) / fps)}"]
    return "\n".join(lines) + "\n"


def concat_copy(src: Path, fps: Fraction, jobs: Sequence[tuple[Path, Sequence[tuple[int, int]]]],
                keep_audio: bool = False) -> None:
    """Write each ``(dst, spans)`` job as a stream copy of those frame spans of ``src``; one ffmpeg call.

    ``src`` must come from ``encode_normal`` (a keyframe at every span start, no B-frames).
    """
    if not jobs:
        return
    with contextlib.ExitStack() as stack:
        args: list = []
        lists = []
        for dst, spans in jobs:
            fd, list_path = tempfile.mkstemp(prefix=".concat-", suffix=".txt", dir=Path(dst).parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(concat_list(src, fps, spans))
            stack.callback(os.unlink, list_path)
            lists.append(list_path)
            args += ["-f", "concat", "-safe", "0", "-i", list_path]
        for i, (dst, _spans) in enumerate(jobs):
            tmp = stack.enter_context(atomic_path(Path(dst)))
            args += ["-map", f"{i}:v:0"] + (["-map", f"{i}:a:0?"] if keep_audio else [])
            args += ["-c", "copy", "-map_metadata", "-1", "-avoid_negative_ts", "make_zero", tmp]
        run_ffmpeg(args, "stream copy")


def decode_errors(path: Path, timeout: int = FFMPEG_TIMEOUT) -> Optional[str]:
    """Fully decode the video stream; None if clean, else the first error ffmpeg reports."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0",
           "-f", "null", "-"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"decode timed out after {timeout}s"
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    if res.returncode != 0 or lines:
        return (lines[0] if lines else f"ffmpeg exit {res.returncode}")[:300]
    return None
