"""Smart-cut engine: re-encode only the frames a cut needs, stream-copy the source's packets elsewhere.

``preprocess.py --engine smartcut``, the default engine. The normal video (source frames ``[0, n_frames)``) is written
with a keyframe (IDR) at every clip start *and* clip end, so the shuffle stage and ``--write_clips``
can keep cutting it by stream copy. For each source GOP (IDR to IDR, closed):

* no cut inside it: its packets are copied as they are;
* a cut c inside it: the longest decode-order prefix of the GOP that holds exactly the frames
  ``[g, p)`` with ``p <= c`` is copied (with B-frames, p is the last mini-GOP boundary before c);
  frames ``[p, next GOP)`` are decoded and re-encoded with libx264 (no B-frames), IDR at p and at
  every cut: one call of the bundled ffmpeg per video, which decodes the source file from its start
  (and, for preprocess, writes the content pass's reference decode of it from the same decode, see
  ``_encode_ranges`` and docs/verification.md). Only the GOP holding ``n_frames`` is cut short.

The encoded pieces get their own SPS/PPS ids (x264 ``sps-id``), both parameter-set pairs go in the
``avcC`` of one ``avc1`` track, and every packet gets new timestamps: frame k at k/fps, and a DTS that
equals the PTS at every IDR (the concat demuxer's ``outpoint`` compares DTS, see docs/smartcut.md).

A source that is not plainly constant-rate 8-bit 4:2:0 progressive H.264 with closed GOPs in
``avc1`` (or any check below) raises ``Unsupported``: preprocess then uses the one-encode engine for
that video and counts why. PyAV (``av``) reads and writes the packets; nothing is decoded by it.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Sequence

from timewarp.core.errors import DiskFullError, ItemError, UsageError
from timewarp.media.h264 import (NAL_AUD, NAL_IDR, NAL_PPS, NAL_SLICE, NAL_SPS, PROFILES, AvcC, Sps, Unsupported,
                           length_prefixed, parse_sps, pps_ids, scan_packets, split_annexb)
from timewarp.core.store import atomic_path, disk_full_message
from timewarp.media.video import EncodeSettings, first_frame, output_size, run_ffmpeg

log = logging.getLogger(__name__)
MIN_TICKS_PER_FRAME = 64  # output time base: room for the DTS steps inside one frame's duration


@dataclass
class Plan:
    """What one smart cut does: copied packets and encoded frame ranges, in output order."""
    n_frames: int
    gop_starts: list[int]
    encode_ranges: list[tuple[int, int]]       # [a, b) re-encoded, each starting with an IDR
    keyframes: list[int]                      # IDRs forced inside the encoded ranges
    copied_frames: int = 0

    @property
    def encoded_frames(self) -> int:
        return sum(b - a for a, b in self.encode_ranges)


@dataclass
class Result:
    frames: int
    encoded_frames: int
    copied_frames: int
    encode_ranges: list[tuple[int, int]] = field(default_factory=list)


# ------------------------------------------------------------------ source analysis

@dataclass
class Source:
    """What the demux saw, per packet in decode order; the packets' bytes are not kept (``packet_data``)."""
    path: Path
    pts: list[int]
    frames: list[int]             # frame index of each packet (presentation order, 0-based)
    idr: list[bool]               # packet is an IDR access unit
    keyframe: list[bool]          # the container marks it a keyframe (sync sample)
    avcc: AvcC
    sps: Sps
    stream: object


def packet_data(src: Source, wanted: Sequence[int]):
    """Yield ``(i, bytes)`` for packet indices ``wanted`` (ascending) by demuxing the source again.

    One packet in memory at a time: a long source is never held whole. The second demux must see
    the same packets (pts checked), or the source is refused.
    """
    import av

    todo = iter(wanted)
    nxt = next(todo, None)
    if nxt is None:
        return
    with av.open(str(src.path)) as container:
        i = 0
        for pkt in container.demux(container.streams.video[0]):
            if pkt.size == 0 and pkt.pts is None:
                continue
            if i == nxt:
                if i >= len(src.pts) or pkt.pts != src.pts[i]:
                    raise Unsupported("packets differ on a second read", f"packet {i}")
                yield i, bytes(pkt)
                nxt = next(todo, None)
                if nxt is None:
                    return
            i += 1
    raise Unsupported("packets differ on a second read", f"packet {nxt} missing")


def analyse(container, fps: Fraction, need_frames: int | None = None) -> Source:
    """Read the video packets (no decoding) and check the source is safe to copy from.

    With ``need_frames`` the demux stops at the first keyframe at or past that frame that closes
    every frame before it (the packets so far show exactly frames 0..k-1): later packets are never
    copied, and a long source is not held in memory for a few minutes of clips.
    """
    streams = container.streams.video
    if not streams:
        raise Unsupported("no video stream")
    st = streams[0]
    cp = st.codec_context
    if cp.name != "h264":
        raise Unsupported("not H.264", f"codec {cp.name}")
    if st.codec_context.pix_fmt != "yuv420p":
        raise Unsupported("pixel format not yuv420p", str(cp.pix_fmt))
    if cp.width % 2 or cp.height % 2:
        raise Unsupported("odd frame size", f"{cp.width}x{cp.height}")
    avcc = AvcC.parse(bytes(cp.extradata or b""))
    sps = parse_sps(avcc.sps[0])
    if len(avcc.sps) != 1:
        raise Unsupported("in-band parameter sets", "more than one SPS in avcC")
    if sps.profile_idc not in PROFILES or sps.chroma_format_idc != 1 or sps.bit_depth != 8:
        raise Unsupported("H.264 profile x264 pieces cannot match",
                          f"profile_idc {sps.profile_idc}, chroma {sps.chroma_format_idc}, {sps.bit_depth} bit")
    if not sps.frame_mbs_only:
        raise Unsupported("interlaced H.264", "frame_mbs_only_flag 0")
    tb = st.time_base
    step = 1 / (fps * tb)  # ticks per frame, exact
    pts_list, idr, keyframe = [], [], []
    shown_max = 0   # the latest frame index shown so far (the first packet shows frame 0)
    for pkt in scan_packets(container, st, avcc):
        if need_frames is not None and pts_list:
            k = round((pkt.pts - pts_list[0]) / step)
            if pkt.keyframe and k >= need_frames and k == len(pts_list) and shown_max == k - 1 \
                    and min(pts_list) == pts_list[0]:
                break  # frames 0..k-1 are all in the packets read; nothing after is needed
            shown_max = max(shown_max, k)
        idr.append(pkt.idr)
        keyframe.append(pkt.keyframe)
        pts_list.append(pkt.pts)
    if not pts_list:
        raise Unsupported("no video packets")
    p0 = min(pts_list)
    frames = []
    for p in pts_list:
        k = round((p - p0) / step)
        if abs((p - p0) - k * step) > 1:  # more than one tick off the constant-rate grid
            raise Unsupported("not constant frame rate", "a packet is off the 1/fps grid")
        frames.append(k)
    if sorted(frames) != list(range(len(frames))):
        raise Unsupported("not constant frame rate", "frame timestamps have holes or duplicates")
    return Source(Path(container.name), pts_list, frames, idr, keyframe, avcc, sps, st)


def gop_starts(src: Source) -> tuple[list[int], dict[int, int]]:
    """Frames where a closed GOP starts (an IDR whose GOP needs nothing before it); with their packet index.

    An IDR at decode position i starts a clean GOP when every packet before i shows an earlier frame
    and every packet from i on a later one.
    """
    n = len(src.frames)
    prefix_max = [-1] * (n + 1)
    for i, f in enumerate(src.frames):
        prefix_max[i + 1] = max(prefix_max[i], f)
    suffix_min = [n] * (n + 1)
    for i in range(n - 1, -1, -1):
        suffix_min[i] = min(suffix_min[i + 1], src.frames[i])
    starts = {}
    for i in range(n):
        f = src.frames[i]
        if src.idr[i] and prefix_max[i] < f and suffix_min[i] == f and prefix_max[i] == f - 1:
            starts[f] = i
    if 0 not in starts:
        raise Unsupported("open GOPs", "the stream does not start with a closed-GOP IDR")
    for i, key in enumerate(src.keyframe):
        if key and starts.get(src.frames[i]) != i:
            raise Unsupported("open GOPs", f"keyframe at frame {src.frames[i]} is not an IDR starting a closed GOP")
    keys = sorted(starts)
    return keys, starts


def prefix_points(src: Source, first: int, last: int) -> dict[int, int]:
    """Frames x such that decode-order packets [first, j) show exactly frames [f0, x); x -> j."""
    out, hi, f0 = {}, -1, src.frames[first]
    for j in range(first, last):
        hi = max(hi, src.frames[j])
        if hi - f0 == j - first:  # j - first + 1 distinct frames, all <= hi, starting at f0
            out[hi + 1] = j + 1
    out[f0] = first
    return out


def make_plan(src: Source, n_frames: int, cuts: Sequence[int]):
    """Per GOP: copy whole, or copy a decode-order prefix and re-encode the rest; returns (plan, pieces).

    pieces is the output in decode order: ("copy", first_packet, end_packet) or ("encode", a, b).
    """
    if n_frames > len(src.frames):
        raise Unsupported("source shorter than its annotation", f"{len(src.frames)} frames, clips need {n_frames}")
    starts, at = gop_starts(src)
    bounds = starts + [len(src.frames)]
    cut_set = sorted({c for c in cuts if 0 < c < n_frames} | {n_frames})
    pieces, ranges, forced = [], [], []
    copied = 0
    for gi, g in enumerate(starts):
        if g >= n_frames:
            break
        g_end = bounds[gi + 1]
        first = at[g]
        last = at[starts[gi + 1]] if gi + 1 < len(starts) else len(src.frames)
        inside = [c for c in cut_set if g < c < g_end]
        if not inside and g_end <= n_frames:
            pieces.append(("copy", first, last))
            copied += g_end - g
            continue
        pts = prefix_points(src, first, last)
        c0 = inside[0] if inside else n_frames
        p = max(x for x in pts if x <= c0)
        if p > g:
            pieces.append(("copy", first, pts[p]))
            copied += p - g
        end = min(g_end, n_frames)
        if p < end:  # else the prefix ends exactly at n_frames: nothing to encode
            pieces.append(("encode", p, end))
            ranges.append((p, end))
            forced += [p] + [c for c in inside if c < end]
    plan = Plan(n_frames, starts, ranges, sorted(set(forced)), copied)
    if plan.copied_frames + plan.encoded_frames != n_frames:
        raise Unsupported("internal: plan does not cover every frame")
    return plan, pieces


# ------------------------------------------------------------------ output

def output_ticks(fps: Fraction) -> tuple[int, int]:
    """(timescale, ticks per frame): an integer number of ticks per frame, at least MIN_TICKS_PER_FRAME."""
    m = 1
    while fps.denominator * m < MIN_TICKS_PER_FRAME:
        m *= 2
    return fps.numerator * m, fps.denominator * m


def assign_dts(frames: Sequence[int], ticks: int) -> list[int]:
    """Strictly increasing DTS with DTS <= PTS, equal to the PTS wherever no later packet shows an earlier frame.

    DTS of packet j is (the earliest frame shown by packet j or any later one) minus a tick for each
    later packet sharing that value. At an IDR of a closed GOP this is the IDR's own PTS, so a
    concat ``outpoint`` at a keyframe's time (which compares DTS) ends exactly before it.
    """
    n = len(frames)
    m = [0] * n
    lo = None
    for j in range(n - 1, -1, -1):
        lo = frames[j] if lo is None else min(lo, frames[j])
        m[j] = lo
    dts = [0] * n
    j = 0
    while j < n:
        k = j
        while k + 1 < n and m[k + 1] == m[j]:
            k += 1
        run = k - j + 1
        if run >= ticks:
            raise Unsupported("reordering too deep", str(run))
        for i in range(j, k + 1):
            dts[i] = m[j] * ticks - (k - i)
        j = k + 1
    return dts


@contextlib.contextmanager
def _scratch(near: Path, tag: str, suffix: str):
    """A scratch file beside ``near``, removed afterwards; its ``.tmp-`` name lets remove_stale_temp clear it after a kill."""
    near.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".tmp-{near.stem[:40]}-{tag}-", suffix=suffix, dir=near.parent)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def normal_video(src: Path, dst: Path, fps: Fraction, n_frames: int, cuts: Sequence[int], width: int, height: int,
                 settings: EncodeSettings = EncodeSettings(), reference=None) -> Result:
    """The normal video by smart cut, with the first audio track re-encoded when ``keep_audio``.

    Raises ``Unsupported`` before writing anything when the output could not be the source's own
    frames at the source's size (``--max_height`` resizing, odd sizes) or the source is unsafe.
    """
    if output_size(width, height, settings.max_height) != (width, height):
        raise Unsupported("resized output (--max_height or odd size)",
                          f"{width}x{height} -> {'x'.join(map(str, output_size(width, height, settings.max_height)))}")
    if not settings.keep_audio:
        return smart_cut(src, dst, fps, n_frames, cuts, settings, reference)
    with _scratch(Path(dst), "video", ".mp4") as video_only:
        res = smart_cut(src, video_only, fps, n_frames, cuts, settings, reference)
        with atomic_path(dst) as tmp:
            try:
                run_ffmpeg(["-i", video_only, "-i", src, "-map", "0:v:0", "-map", "1:a:0?", "-c:v", "copy",
                             "-c:a", "aac", "-b:a", "128k", "-t", f"{float(n_frames / fps):.6f}",
                             "-map_metadata", "-1", tmp], "smart-cut audio")
            except ItemError as exc:
                raise Unsupported("audio mux failed", exc.detail)
    return res


def smart_cut(src_path: Path, dst: Path, fps: Fraction, n_frames: int, cuts: Sequence[int],
              settings: EncodeSettings = EncodeSettings(), reference=None) -> Result:
    """Write frames [0, n_frames) of ``src_path`` to ``dst`` with an IDR at every cut; see the module doc.

    ``reference`` = (``verify.SourceDecode``, path): the same decode also writes the content pass's
    reference decode of the source there (``_encode_ranges``).

    Raises ``Unsupported`` (nothing written) when the source cannot be smart-cut safely.
    """
    try:
        import av
    except ImportError as exc:  # pragma: no cover - requirements.txt installs it
        raise Unsupported("PyAV not installed", str(exc))
    try:
        first = first_frame(src_path)
        # copied packets keep the stored orientation and a display matrix that PyAV and decord ignore;
        # the one-encode engine writes upright pixels
        if first is None or first.rotated:
            raise Unsupported("rotated video (display matrix)" if first else "no frame decodes")
        with av.open(str(src_path)) as container:
            src = analyse(container, fps, need_frames=n_frames)
            plan, pieces = make_plan(src, n_frames, cuts)
            with _scratch(Path(dst), "pieces", ".h264") as out:  # ".tmp-": remove_stale_temp clears it after a kill
                encoded, enc_sps, enc_pps = _encode_ranges(src, plan, fps, settings, out, reference)
            _write(av, src, plan, pieces, encoded, enc_sps, enc_pps, fps, Path(dst))
    except (av.FFmpegError, ValueError) as exc:
        if getattr(exc, "errno", None) == errno.ENOSPC:
            raise DiskFullError(disk_full_message(dst)) from None
        raise Unsupported("PyAV error", str(exc)[:300])
    return Result(n_frames, plan.encoded_frames, plan.copied_frames, plan.encode_ranges)


def _encode_ranges(src: Source, plan: Plan, fps: Fraction, settings: EncodeSettings, out: Path,
                   reference=None):
    """Decode the source and re-encode the frames of plan.encode_ranges: one ffmpeg call.

    ffmpeg decodes the source file from its first frame (to the last encoded frame, or to the content
    pass's ``until`` when ``reference`` = (``verify.SourceDecode``, path) asks for its reference decode);
    ``select`` keeps the wanted decoded frames (by count, never by time; every decoded frame's time is
    checked against the packets first) and libx264 encodes them with an IDR at each range start and cut,
    the source's profile and level, and SPS/PPS ids the source does not use. The reference branch leaves
    the decoder before any of that (``split`` right after ``showinfo``) and keeps the content pass's own
    thumbnails of the encoded frames and their neighbours, every frame's time and the decoder's errors.
    The bundled ffmpeg is used rather than PyAV's codecs: same binary as the one-encode engine and the
    check, and its decoder is several times faster than PyAV's build here.
    Returns ({frame: length-prefixed sample}, x264 SPS, x264 PPS).
    """
    from timewarp.media import verify

    if not plan.encode_ranges and reference is None:
        return {}, None, None
    used = {parse_sps(n).sps_id for n in src.avcc.sps} | {pps_ids(p)[0] for p in src.avcc.pps}
    pid = min(i for i in range(32) if i not in used)
    forced = set(plan.keyframes)
    wanted = [k for a, b in plan.encode_ranges for k in range(a, b)]
    forced_out = [i for i, k in enumerate(wanted) if k in forced and i > 0]
    until = reference[0].until if reference is not None else float((plan.n_frames - Fraction(1, 2)) / fps)
    cc = src.stream.codec_context
    graph = ["[0:v:0]showinfo=checksum=0" + (",split=2[e][r]" if reference is not None and wanted else
                                             "[r]" if reference is not None else "[e]")]
    # the decoder's threads as the encoder's (one per video, videos in parallel: frame threads cost ~3 % CPU
    # here); its frames are the same with any thread count
    args = ["-loglevel", "level+info", "-threads", settings.threads, "-t", f"{until:.6f}", "-i", src.path]
    ref_frames: list[int] = []
    if wanted:
        select = "+".join(f"between(n,{x},{y - 1})" for x, y in plan.encode_ranges)
        filters = [f"select='{select}'", f"setpts=N*{fps.denominator}/{fps.numerator}/TB"]
        sar = cc.sample_aspect_ratio
        if sar and sar != 1:
            filters.append(f"setsar={sar.numerator}/{sar.denominator}")
        graph.append("[e]" + ",".join(filters) + "[eo]")
    if reference is not None:
        ref_frames = sorted({k + d for k in wanted for d in (-1, 0, 1)} - {-1})
        keep = "+".join(f"between(n,{x},{y})" for x, y in _runs(ref_frames)) or "0"
        graph.append(f"[r]select='{keep}'," + verify.thumb_chain(reference[0].size, reference[0].crop) + "[ro]")
    args += ["-filter_complex", ";".join(graph)]
    if wanted:
        args += ["-map", "[eo]", "-fps_mode", "passthrough",
                 "-c:v", "libx264", "-preset", settings.preset, "-crf", settings.crf, "-bf", 0,
                 "-profile:v", PROFILES[src.sps.profile_idc], "-level:v", f"{src.sps.level_idc / 10:.1f}",
                 "-forced-idr", 1, "-x264-params", f"sps-id={pid}:open-gop=0", "-pix_fmt", "yuv420p",
                 "-threads", settings.threads]
        for opt, attr in (("-color_primaries", "color_primaries"), ("-color_trc", "color_trc"),
                          ("-colorspace", "colorspace"), ("-color_range", "color_range")):
            value = getattr(cc, attr, None)
            if isinstance(value, int) and value not in (0, 2):  # 2 = unspecified (0 for range)
                args += [opt, value]
        if forced_out:
            args += ["-force_key_frames",
                     ",".join(f"{float((Fraction(i) - Fraction(1, 2)) / fps):.6f}" for i in forced_out)]
        args += ["-f", "h264", out]
    with contextlib.ExitStack() as stack:
        thumbs = None
        if reference is not None:
            thumbs = stack.enter_context(_scratch(out, "thumbs", ".gray"))
            args += ["-map", "[ro]", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "gray", thumbs]
        try:
            res = run_ffmpeg(args, "smart-cut encode")
        except ItemError as exc:
            raise Unsupported("re-encoding the cut GOPs failed", exc.detail)
        _decoded_as_packets(src, res.stderr, plan.n_frames)
        if reference is not None:
            dec = verify.parse_decode(res.stderr, thumbs.read_bytes(), reference[0].size)
            shown = [k for k in ref_frames if k < len(dec.times)]
            if len(dec.thumbs) == len(shown):  # else no reference: the check decodes the source itself
                verify.save_reference(reference[1], reference[0], shown, dec)
    if not wanted:
        return {}, None, None
    aus: list[list[bytes]] = []  # access units: a new one starts after a slice, at a non-slice NAL or a first slice
    prev_vcl = False
    for n in split_annexb(out.read_bytes()):
        vcl = n[0] & 0x1F in (NAL_SLICE, NAL_IDR)
        if not aus or (prev_vcl and (not vcl or _first_mb_is_zero(n))):
            aus.append([])
        aus[-1].append(n)
        prev_vcl = vcl
    if len(aus) != len(wanted):
        raise Unsupported("x264 did not return one frame per wanted frame", f"{len(aus)} for {len(wanted)}")
    encoded: dict[int, bytes] = {}
    sps = pps = None
    for k, au in zip(wanted, aus):
        types = [n[0] & 0x1F for n in au]
        if k in forced and NAL_IDR not in types:
            raise Unsupported("x264 missed a forced keyframe", f"frame {k} is not an IDR")
        for n in au:
            t = n[0] & 0x1F
            if t == NAL_SPS:
                if sps is not None and n != sps:
                    raise Unsupported("x264 changed its SPS")
                sps = n
            elif t == NAL_PPS:
                pps = pps or n
        encoded[k] = length_prefixed([n for n in au if n[0] & 0x1F not in (NAL_SPS, NAL_PPS, NAL_AUD)],
                                     src.avcc.length_size)
    if sps is None or pps is None:
        raise Unsupported("x264 wrote no SPS/PPS")
    if parse_sps(sps).sps_id != pid or pps_ids(pps) != (pid, pid):
        raise Unsupported("x264 ignored sps-id")
    return encoded, sps, pps


def _runs(frames: Sequence[int]) -> list[tuple[int, int]]:
    """Ascending frame numbers as inclusive runs [(first, last), ...]."""
    runs: list[list[int]] = []
    for k in frames:
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    return [(a, b) for a, b in runs]


def _decoded_as_packets(src: Source, stderr: str, n_frames: int) -> None:
    """Decoded frame k is the packets' frame k for every k < n_frames (``select`` picks by count: a packet that
    does not decode would shift every later pick by a frame); Unsupported otherwise."""
    from timewarp.media.verify import showinfo_times

    times, missing = showinfo_times(stderr)
    if len(times) < n_frames or missing is not None:
        raise Unsupported("the source does not decode whole", f"{len(times)} frames decoded, {n_frames} needed")
    want = sorted(src.pts)
    tb = Fraction(src.stream.time_base)
    for k in range(n_frames):
        if times[k] != (want[k] - want[0]) * tb:
            raise Unsupported("decoded frames differ from the packets", f"decoded frame {k} is not packet frame {k}")


def _first_mb_is_zero(nal: bytes) -> bool:
    """A slice whose first_mb_in_slice is 0 starts a new picture (ue(v) 0 is a single 1 bit)."""
    return len(nal) > 1 and bool(nal[1] & 0x80)


def _write(av, src: Source, plan: Plan, pieces, encoded: dict, enc_sps, enc_pps, fps: Fraction, dst: Path):
    timescale, ticks = output_ticks(fps)
    order: list[tuple[int, int, bool]] = []  # (frame, source packet or -1 for encoded, keyframe), decode order
    keys = set(plan.keyframes)
    for kind, x, y in pieces:
        if kind == "copy":
            order += [(src.frames[j], j, src.idr[j]) for j in range(x, y)]
        else:
            order += [(k, -1, k in keys) for k in range(x, y)]
    frames = [f for f, _, _ in order]
    copies = [j for _, j, _ in order if j >= 0]
    if copies != sorted(copies):
        raise Unsupported("internal: copied packets out of decode order")
    if sorted(frames) != list(range(plan.n_frames)):
        raise Unsupported("internal: output frames are not 0..n-1")
    dts = assign_dts(frames, ticks)
    avcc = AvcC(src.avcc.length_size, src.avcc.header, list(src.avcc.sps), list(src.avcc.pps), src.avcc.tail)
    if enc_sps is not None:  # ISO/IEC 14496-15: parameter sets in ascending id order
        avcc.sps = sorted(avcc.sps + [enc_sps], key=lambda n: parse_sps(n).sps_id)
        avcc.pps = sorted(avcc.pps + [enc_pps], key=lambda n: pps_ids(n)[0])
    tb = Fraction(1, timescale)
    with atomic_path(dst) as tmp:
        with av.open(str(tmp), "w", format="mp4") as out:
            st = out.add_stream_from_template(src.stream)
            st.time_base = tb
            st.codec_context.extradata = avcc.to_bytes()
            st.metadata.clear() if hasattr(st.metadata, "clear") else None
            source = packet_data(src, copies)
            for j, ((f, i, key), d) in enumerate(zip(order, dts)):
                if i >= 0:
                    got, data = next(source)
                    if got != i:
                        raise Unsupported("internal: copied packet out of order", f"{got} for {i}")
                else:
                    data = encoded[f]
                pkt = av.Packet(data)
                pkt.stream = st
                pkt.time_base = tb
                # MP4 sample durations are DTS steps; the last one must reach n_frames / fps, or the
                # track (and every player's frame rate = frames / duration) comes out short
                last = j == len(order) - 1
                pkt.pts, pkt.dts, pkt.duration = f * ticks, d, (plan.n_frames * ticks - d) if last else ticks
                pkt.is_keyframe = key
                out.mux(pkt)


# ------------------------------------------------------------------ preprocess's dispatch

def try_engine(engine: str, src: Path, dst: Path, info, n_frames: int, clips, settings: EncodeSettings,
               ranges: Sequence[Sequence[int]] = (), reference=None) -> dict:
    """Run the smart cut when asked; returns what was done, for the stats.

    ``{"engine": "smartcut", ...}`` when ``dst`` is written; otherwise ``{"engine": "one-encode", ...}``
    (with ``fallback`` = the reason when smartcut was asked for) and the caller encodes as usual.
    """
    if engine != "smartcut":
        return {"engine": "one-encode", "frames": n_frames, "encoded_frames": n_frames}
    cuts = [c.start_frame for c in clips] + [c.end_frame for c in clips]
    try:
        if ranges and [list(r) for r in ranges] != [[0, n_frames]]:  # a scene was cut out: not one source span
            raise Unsupported("normal video is cut from several source ranges", f"source_ranges {list(ranges)}")
        if info.start_time:
            raise Unsupported("first frame not at time 0", f"starts at {float(info.start_time):.6f}s")
        res = normal_video(src, dst, info.fps, n_frames, cuts, info.width, info.height, settings, reference)
    except Unsupported as exc:
        log.info("smartcut falls back to one encode for %s: %s", src, exc)
        return {"engine": "one-encode", "frames": n_frames, "encoded_frames": n_frames,
                "fallback": exc.reason, "fallback_detail": exc.detail}
    except (UsageError, MemoryError):
        raise
    except OSError as exc:
        if exc.errno == errno.ENOSPC:  # the one-encode engine would fill the same disk: the run stops
            raise DiskFullError(disk_full_message(dst)) from None
        log.warning("smartcut failed on %s, using one encode: %r", src, exc)
        return {"engine": "one-encode", "frames": n_frames, "encoded_frames": n_frames,
                "fallback": f"internal error ({type(exc).__name__})", "fallback_detail": str(exc)[:300]}
    except Exception as exc:  # noqa: BLE001 - a bug here must cost speed, not the video; counted as such
        log.warning("smartcut failed on %s, using one encode: %r", src, exc)
        return {"engine": "one-encode", "frames": n_frames, "encoded_frames": n_frames,
                "fallback": f"internal error ({type(exc).__name__})", "fallback_detail": str(exc)[:300]}
    return {"engine": "smartcut", "frames": res.frames, "encoded_frames": res.encoded_frames}


def count(counts, res: dict) -> None:
    """Add one video's engine facts to a stage's counts (videos done by an earlier run have none)."""
    if "engine" not in res:
        return
    counts[f"engine: {res['engine']}"] += 1
    counts["frames written"] += res["frames"]
    counts["frames re-encoded"] += res["encoded_frames"]
    if res.get("fallback"):
        counts[f"smartcut fell back to one-encode: {res['fallback']}"] += 1
