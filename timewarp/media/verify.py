"""Content verification: every output frame is the source frame its annotation names, by bytes or pixels.

One pass per item, independent of the engine (it never reads what the engine probed or planned,
only the annotation, the source file and the outputs):

* the source is decoded once, from its first frame to just past the last frame a clip uses, by the
  bundled ffmpeg: every frame's real timestamp (``showinfo``), a small grey thumbnail of every frame,
  and every error the decoder reports. When preprocess's smart-cut decode of the same source bytes
  already ran this module's filter chain on a branch of its decoder (``save_reference``, bound to the
  source's packets and to this decode by ``SourceDecode``), that reference stands in for the decode.
  A decode error there is a named reject ("source does not decode"), whatever engine made the
  outputs and wherever their cuts fall. The decoded times say
  which source frames lie inside each clip's metadata [start, end); the annotation's frames must be
  exactly those ("clip frames inside metadata times").
* the normal video's packets are read without decoding. A run of packets that starts at an IDR and
  is byte for byte a run of the source's packets starting at an IDR (same parameter sets), each shown
  at the output position whose source frame it is, is a copy of those source frames: nothing to decode.
  Every other frame (re-encoded, or a copy in the wrong place) is decoded, in whole output GOPs, and
  its thumbnail compared with the source frame it must show: the mean absolute difference must be
  small and smaller than to each neighbouring source frame that differs from the expected one
  ("frame differs from its source frame").
* clip files and shuffled videos are stream copies of the normal video: their packets must be the
  normal video's packets of those clips, in order, byte for byte, each at its position (no decode).

``docs/verification.md`` says why and what it costs.
"""
from __future__ import annotations

import bisect
import contextlib
import hashlib
import os
import re
import subprocess
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from timewarp.core.errors import ItemError
from timewarp.sources.timestamps import SNAP_TOLERANCE

THUMB_SIZE = 128         # pixels, the longer side: thumbnails keep the id blocks and shapes, cost little to hold
MAX_DIFFERENCE = 6.0     # mean absolute luma difference (0-255) a re-encoded frame may have from its source frame
NEIGHBOUR_MARGIN = 1.0   # a neighbouring source frame closer to the expected one than this cannot be told apart

_SHOWINFO = re.compile(r"\] n:\s*(\d+) pts:\s*(-?\d+|NOPTS)")
_CONFIG = re.compile(r"config in time_base: (\d+)/(\d+)")


# ------------------------------------------------------------------ packets (no decoding)

@dataclass
class Packets:
    """The first video stream's packets in decode order, with what a check needs of each."""
    pts: list[int]
    digest: list[bytes]
    idr: list[bool]
    time_base: Fraction
    width: int
    height: int
    codec: str
    nominal: Optional[Fraction] = None           # the container's frame rate
    params: dict = field(default_factory=dict)   # ("sps"|"pps", id) -> NAL bytes from the avcC
    in_band: bool = False                        # some packet carries its own SPS/PPS
    length_size: int = 4
    extradata: bytes = b""

    def __len__(self) -> int:
        return len(self.pts)

    def ranks(self) -> list[int]:
        """Presentation position of each packet (by pts)."""
        order = sorted(range(len(self.pts)), key=lambda i: self.pts[i])
        rank = [0] * len(order)
        for r, i in enumerate(order):
            rank[i] = r
        return rank

    def times(self) -> list[Fraction]:
        """Presentation times in seconds from the first frame, sorted."""
        pts = sorted(self.pts)
        return [(p - pts[0]) * self.time_base for p in pts] if pts else []


def read_packets(path: Path, until: Optional[float] = None) -> Packets:
    """Demux ``path``'s first video stream (PyAV); ``until``: stop at packets decoded that many seconds in.

    ItemError when the file does not open, has no video stream or a packet without a pts.
    """
    import av
    from timewarp.media import h264

    if not Path(path).is_file() or Path(path).stat().st_size == 0:
        raise ItemError("empty or missing video file", str(path))
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ItemError("no video stream", str(path))
            st = container.streams.video[0]
            cc = st.codec_context
            tb = Fraction(st.time_base)
            rate = st.guessed_rate or st.average_rate
            out = Packets([], [], [], tb, cc.width, cc.height, cc.name, Fraction(rate) if rate else None,
                          extradata=bytes(cc.extradata or b""))
            avcc = None
            if cc.name == "h264":
                with contextlib.suppress(h264.Unsupported, IndexError):
                    avcc = h264.AvcC.parse(out.extradata)
            if avcc is not None:
                out.length_size = avcc.length_size
                out.params = {**{("sps", h264.parse_sps(n).sps_id): n for n in avcc.sps},
                              **{("pps", h264.pps_ids(n)[0]): n for n in avcc.pps}}
            same_sets = set(out.params.values())
            limit = None if until is None else int(Fraction(until) / tb)
            first_dts = None
            for pkt in container.demux(st):
                if pkt.size == 0 and pkt.pts is None:
                    continue
                if pkt.pts is None:
                    raise ItemError("packet without timestamp", f"{path}: packet {len(out)}")
                dts = pkt.dts if pkt.dts is not None else pkt.pts
                first_dts = dts if first_dts is None else first_dts
                if limit is not None and dts - first_dts > limit:
                    break
                data = bytes(pkt)
                idr = False
                if avcc is not None:
                    with contextlib.suppress(h264.Unsupported):
                        nals = h264.split_length_prefixed(data, avcc.length_size)
                        idr = any(n[0] & 0x1F == h264.NAL_IDR for n in nals)
                        # a stream copy may repeat the avcC's own parameter sets before a keyframe: no change
                        kept = [n for n in nals if n not in same_sets]
                        out.in_band |= any(n[0] & 0x1F in (h264.NAL_SPS, h264.NAL_PPS) for n in kept)
                        data = h264.length_prefixed(kept, avcc.length_size)
                out.pts.append(pkt.pts)
                out.digest.append(hashlib.blake2b(data, digest_size=16).digest())
                out.idr.append(idr)
    except av.FFmpegError as exc:
        raise ItemError("video does not open", f"{path}: {exc}")
    if not out.pts:
        raise ItemError("video has no frames", str(path))
    return out


# ------------------------------------------------------------------ decoding (ffmpeg, thumbnails)

@dataclass
class Decoded:
    times: list[Fraction]      # each decoded frame's pts in seconds from the first one
    thumbs: np.ndarray         # (frames, h, w) uint8 luma
    errors: list[str]          # what the decoder reported at level error or worse


def thumb_size(width: int, height: int) -> tuple[int, int]:
    """Thumbnail size for frames of ``width`` x ``height``: the longer side at most THUMB_SIZE, even sides."""
    scale = min(1.0, THUMB_SIZE / max(width, height))
    return max(2, int(width * scale / 2) * 2), max(2, int(height * scale / 2) * 2)


def thumb_chain(size: tuple[int, int], crop: Optional[tuple[int, int]] = None) -> str:
    """The filters that turn a decoded frame into its thumbnail (after ``showinfo``), here and in preprocess's
    reference decode: ``crop`` (w, h) takes the top-left first (how the one-encode engine makes odd sizes even)."""
    w, h = size
    return (f"crop={crop[0]}:{crop[1]}:0:0," if crop else "") + f"scale={w}:{h}:flags=area,format=gray"


def decode_thumbs(path: Path, size: tuple[int, int], until: Optional[float] = None,
                  crop: Optional[tuple[int, int]] = None) -> Decoded:
    """Decode ``path``'s first video stream (to ``until`` seconds) once: frame times, thumbnails, errors."""
    from timewarp.media.video import FFMPEG_TIMEOUT, ffmpeg_exe

    w, h = size
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "level+info"]
    if until is not None:
        args += ["-t", f"{until:.6f}"]
    args += ["-i", str(path), "-map", "0:v:0", "-an", "-sn", "-dn", "-vf", "showinfo=checksum=0," + thumb_chain(size, crop),
             "-fps_mode", "passthrough", "-enc_time_base:v", "demux", "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"]
    try:
        res = subprocess.run(args, capture_output=True, timeout=FFMPEG_TIMEOUT)
    except subprocess.TimeoutExpired:
        return Decoded([], np.zeros((0, h, w), np.uint8), [f"decode timed out after {FFMPEG_TIMEOUT}s"])
    return parse_decode(res.stderr.decode("utf-8", "replace"), res.stdout, size, res.returncode)


def parse_decode(err: str, raw: bytes, size: tuple[int, int], returncode: int = 0) -> Decoded:
    """A ``Decoded`` from one ffmpeg run's stderr (``-loglevel level+info``, one ``showinfo`` on every decoded
    frame) and its raw grey thumbnails."""
    from timewarp.media.video import error_lines

    w, h = size
    errors = error_lines(err)
    if returncode != 0 and not errors:
        errors.append(f"ffmpeg exit {returncode}")
    times, missing = showinfo_times(err)
    if missing is not None:
        errors.append(f"decoded frame {missing} has no timestamp")
    n = len(raw) // (w * h)
    thumbs = np.frombuffer(raw[:n * w * h], np.uint8).reshape(n, h, w)
    return Decoded(times, thumbs, errors)


def showinfo_times(err: str) -> tuple[list[Fraction], Optional[int]]:
    """Each decoded frame's time in seconds from the first one, from ffmpeg's ``showinfo`` lines (frames
    without a timestamp left out), and the number of the first such frame (None: every frame has one)."""
    cfg = _CONFIG.search(err)
    tb = Fraction(int(cfg.group(1)), int(cfg.group(2))) if cfg else Fraction(0)
    pts = [m.group(2) for m in _SHOWINFO.finditer(err)]
    missing = pts.index("NOPTS") if "NOPTS" in pts else None
    pts = [int(p) for p in pts if p != "NOPTS"]
    return [(p - pts[0]) * tb for p in pts], missing


# ------------------------------------------------------------------ preprocess's reference decode

REFERENCE_VERSION = 1


@dataclass(frozen=True)
class SourceDecode:
    """What the content pass decodes of an item's source: to ``until`` seconds, thumbnails of ``size`` (after
    ``crop``); ``packets`` is the hash of the source's packets it covers (what a reference decode is bound to)."""
    size: tuple[int, int]
    until: float
    crop: Optional[tuple[int, int]]
    packets: str

    def key(self) -> str:
        return f"v{REFERENCE_VERSION} {self.size} {self.until:.6f} {self.crop} {self.packets}"


def source_decode(ann, source: Path, out_size: tuple[int, int]) -> tuple[Packets, SourceDecode]:
    """The source's packets up to a little past what the clips use, and what the content pass decodes of it.

    The same for preprocess (before it writes the item, ``out_size`` its output size) and for the check: a
    reference decode made by preprocess is used only when both agree on every field.
    """
    from timewarp.sources.timestamps import parse_rate

    fps = parse_rate(ann.fps_rational)
    src_of = source_frames(ann)
    last_meta = max((c.meta_end if c.meta_end is not None else c.end) for c in ann.clips)
    n_used = max(src_of) + 1
    # the packets up to a little past what the clips use (a long source is not demuxed whole)
    src_pk = read_packets(source, until=max(float(last_meta), n_used / float(fps)) + 3.0)
    s_w, s_h = src_pk.width, src_pk.height
    crop = out_size if out_size == (s_w - s_w % 2, s_h - s_h % 2) != (s_w, s_h) else None
    # to just past the last frame used: its time, or the last clip's metadata end, plus a frame
    src_times = src_pk.times()
    end_t = max(Fraction(last_meta), src_times[n_used - 1] if n_used <= len(src_times) else Fraction(last_meta))
    h = hashlib.blake2b(digest_size=16)
    for p, d in zip(src_pk.pts, src_pk.digest):
        h.update(p.to_bytes(8, "little", signed=True) + d)
    h.update(src_pk.extradata)
    return src_pk, SourceDecode(thumb_size(*out_size), float(end_t + Fraction(3, 2) / fps), crop, h.hexdigest())


def save_reference(path: Path, spec: SourceDecode, frames: Sequence[int], dec: Decoded) -> None:
    """Write a reference decode: ``dec.thumbs`` are the thumbnails of source ``frames`` (ascending), ``dec.times``
    and ``dec.errors`` those of the whole decode (atomically: a reference is whole or absent)."""
    from timewarp.core.store import atomic_path

    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, key=np.array(spec.key()), frames=np.asarray(frames, np.int64),
                                thumbs=dec.thumbs, num=np.array([t.numerator for t in dec.times], np.int64),
                                den=np.array([t.denominator for t in dec.times], np.int64),
                                errors=np.array("\n".join(dec.errors)))


def load_reference(path: Optional[Path], spec: SourceDecode, needed: Sequence[int]) -> Optional[Decoded]:
    """The reference decode at ``path`` as a ``Decoded`` of every frame (thumbnails only where it has them),
    when it was made for ``spec`` and has a thumbnail of every ``needed`` frame; None otherwise (the check then
    decodes the source itself)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != spec.key():
                return None
            frames, thumbs = z["frames"], z["thumbs"]
            times = [Fraction(int(a), int(b)) for a, b in zip(z["num"], z["den"])]
            errors = [e for e in str(z["errors"]).split("\n") if e]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # a damaged cache file: decode instead
        import logging
        logging.getLogger(__name__).warning("%s is unreadable (%s): the source is decoded", path, exc)
        return None
    w, h = spec.size
    if thumbs.shape != (len(frames), h, w) or len(frames) and (frames.min() < 0 or frames.max() >= len(times)):
        return None
    if not {k for k in needed if 0 <= k < len(times)} <= set(frames.tolist()):
        return None
    full = np.zeros((len(times), h, w), np.uint8)
    full[frames] = thumbs
    return Decoded(times, full, errors)


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails (0-255)."""
    return float(_differences(a[None], b[None])[0])


def _differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute difference of each pair of thumbnails a[i], b[i] (0-255), float64."""
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=(1, 2))


def frame_problem(out: np.ndarray, src: np.ndarray, k: int) -> Optional[str]:
    """Why thumbnail ``out`` is not source frame ``k`` (src[k]), or None when it is.

    It must be close to src[k] (MAX_DIFFERENCE), and closer to src[k] than to a neighbour src[n] wherever
    the two can be told apart: they differ by more than NEIGHBOUR_MARGIN and by more than twice the
    output's distance to the nearer of them (a shifted or repeated frame is much nearer its true
    source frame; an output as far from both as they are from each other, e.g. film grain re-encoded,
    says nothing either way).
    """
    found = frames_problem(out[None], src, [k])
    return None if found is None else found[1]


def frames_problem(outs: np.ndarray, src: np.ndarray, ks: Sequence[int],
                   chunk: int = 256) -> Optional[tuple[int, str]]:
    """``frame_problem`` for every thumbnail outs[i] against source frame ks[i], in numpy batches of
    ``chunk`` frames: (i, why) of the first one that is not its source frame, or None."""
    n_src = len(src)
    for lo in range(0, len(ks), chunk):
        out = outs[lo:lo + chunk]
        k = np.asarray(ks[lo:lo + chunk], dtype=np.int64)
        d = _differences(out, src[k])
        far = np.flatnonzero(d > MAX_DIFFERENCE)
        first = (int(far[0]), f"mean difference {d[far[0]]:.2f} (at most {MAX_DIFFERENCE} allowed)") \
            if len(far) else None
        for step in (-1, 1):
            nb = k + step
            ok = (nb >= 0) & (nb < n_src)
            nbc = np.clip(nb, 0, n_src - 1)
            dn = _differences(out, src[nbc])
            apart = _differences(src[nbc], src[k])
            bad = ok & (d <= MAX_DIFFERENCE) & (apart > np.maximum(NEIGHBOUR_MARGIN, 2 * np.minimum(d, dn))) & (dn <= d)
            hit = np.flatnonzero(bad)
            # the earlier neighbour is looked at first for the same frame
            if len(hit) and (first is None or int(hit[0]) < first[0]):
                i = int(hit[0])
                first = (i, f"it is closer to source frame {nb[i]} ({dn[i]:.2f}) than to source frame {k[i]} "
                            f"({d[i]:.2f}); those two differ by {apart[i]:.2f}")
        if first is not None:
            return lo + first[0], first[1]
    return None


# ------------------------------------------------------------------ the checks

def source_frames(ann) -> list[int]:
    """Source frame of each normal-video frame (through ``source_ranges``)."""
    ranges = ann.source_ranges or [[0, ann.frame_count]]
    return [k for a, b in ranges for k in range(a, b)]


def clip_times_problem(ann, src_of: Sequence[int], times: Sequence[Fraction], where: str = "") -> Optional[str]:
    """Why a clip does not hold exactly the source frames whose time t has meta_start <= t < meta_end
    (times snapped by 1 ms), given the source's frame ``times``; None when every clip does."""
    ordered = all(a < b for a, b in zip(times, times[1:]))
    for c in ann.clips:
        lo = Fraction(c.meta_start if c.meta_start is not None else c.start) - SNAP_TOLERANCE
        hi = Fraction(c.meta_end if c.meta_end is not None else c.end) - SNAP_TOLERANCE
        frames = list(src_of[c.start_frame:c.end_frame])
        inside = list(range(bisect.bisect_left(times, lo), bisect.bisect_left(times, hi))) if ordered \
            else [k for k in range(len(times)) if lo <= times[k] < hi]
        if frames != inside:
            bad = next((k for k in frames if k >= len(times) or not lo <= times[k] < hi), None)
            what = (f"source frame {bad} at {float(times[bad]):.6f}s" if bad is not None and bad < len(times)
                    else f"source frame {bad} (past the source end)" if bad is not None
                    else f"it lacks source frame(s) {sorted(set(inside) - set(frames))[:5]}")
            return (f"clip {c.index} should hold the source frames in [{float(lo + SNAP_TOLERANCE):.3f}s, "
                    f"{float(hi + SNAP_TOLERANCE):.3f}s) but holds {what}" + (f" (times decoded from {where})"
                                                                            if where else ""))
    return None


def output_times_problem(pk: Packets, fps: Fraction) -> Optional[str]:
    """Why the output's frames are not at k/fps (within the time base), from its packets."""
    from timewarp.media.video import timing_tolerance

    tol = timing_tolerance(pk.time_base)
    for k, t in enumerate(pk.times()):
        if abs(t - Fraction(k) / fps) > tol:
            return f"frame {k} is at {float(t):.6f}s, not {float(Fraction(k) / fps):.6f}s"
    return None


def copied_frames(out: Packets, src: Packets, src_of: Sequence[int]) -> list[bool]:
    """Per output packet (decode order): it is, with every packet since its GOP's IDR, byte for byte the
    source's packets since one of its IDRs, under the source's parameter sets, at the output position
    whose source frame it shows (so it decodes to exactly that frame, no decoding needed)."""
    copied = [False] * len(out)
    if not src.params or any(out.params.get(k) != v for k, v in src.params.items()) or src.in_band:
        return copied
    src_rank, out_rank = src.ranks(), out.ranks()
    idr_at: dict[bytes, list[int]] = {}
    for k, (d, idr) in enumerate(zip(src.digest, src.idr)):
        if idr:
            idr_at.setdefault(d, []).append(k)
    nxt = None
    for i in range(len(out)):
        if out.idr[i]:
            nxt = next((k for k in idr_at.get(out.digest[i], [])
                        if out_rank[i] < len(src_of) and src_rank[k] == src_of[out_rank[i]]),
                       (idr_at.get(out.digest[i]) or [None])[0])
        elif nxt is not None and (nxt >= len(src) or out.digest[i] != src.digest[nxt]):
            nxt = None
        if nxt is None:
            continue
        r = out_rank[i]
        copied[i] = r < len(src_of) and src_rank[nxt] == src_of[r]
        nxt += 1
    return copied


def _remux(path: Path, wanted: Sequence[int], dst: Path) -> None:
    """Write packets ``wanted`` (decode order indices) of ``path``'s first video stream to ``dst`` (MP4),
    timestamps and bytes as they are (PyAV): whole GOPs of it, to decode alone."""
    import av

    todo = set(wanted)
    with av.open(str(path)) as container, av.open(str(dst), "w", format="mp4") as out:
        st = container.streams.video[0]
        ost = out.add_stream_from_template(st)
        i = 0
        for pkt in container.demux(st):
            if pkt.size == 0 and pkt.pts is None:
                continue
            if i in todo:
                pkt.stream = ost
                out.mux(pkt)
            i += 1


def decode_output(path: Path, out: Packets, need: Sequence[bool], size, crop=None) -> tuple[list[int], Decoded]:
    """Decode the output GOPs holding a packet with ``need`` set: (presentation position of each decoded frame, decoded)."""
    gop, g = [], -1
    for i in range(len(out)):
        g += out.idr[i] or i == 0
        gop.append(g)
    gops = {gop[i] for i in range(len(out)) if need[i]}
    wanted = [i for i in range(len(out)) if gop[i] in gops]
    rank = out.ranks()
    if len(wanted) == len(out) or not out.params:
        return sorted(rank), decode_thumbs(path, size)
    fd, name = tempfile.mkstemp(prefix=f".tmp-verify-{Path(path).stem[:40]}-", suffix=".mp4", dir=Path(path).parent)
    os.close(fd)
    try:
        _remux(path, wanted, Path(name))
        dec = decode_thumbs(Path(name), size)
    finally:
        Path(name).unlink(missing_ok=True)
    return sorted(rank[i] for i in wanted), dec


@dataclass
class Verified:
    """What ``verify_normal`` did: frames proven by packet bytes, frames compared by pixels."""
    frames: int
    by_bytes: int
    by_pixels: int
    source_frames_decoded: int
    reference: bool = False    # the source's frames came from preprocess's reference decode


def verify_normal(ann, video: Path, source: Optional[Path], label: str = "", rel: str = "",
                  reference: Optional[Path] = None) -> Verified:
    """Check the normal video of ``ann`` against its source, frame by frame; ItemError names the first problem.

    ``source`` None (not reachable): the normal video is only decoded whole (errors, frame count).
    ``reference``: preprocess's reference decode of this source (``save_reference``), used instead of
    decoding the source when it was made for the same source packets and decode and holds every frame needed.
    """
    from timewarp.sources.timestamps import parse_rate

    rel = rel or str(video)
    label = label or str(source)
    fps = parse_rate(ann.fps_rational)
    out = read_packets(video)
    if len(out) != ann.frame_count:
        raise ItemError("video frame count", f"{rel} has {len(out)} frames, annotation frame_count is {ann.frame_count}")
    bad = output_times_problem(out, fps)
    if bad:
        raise ItemError("video frame times", f"{rel}: {bad}")
    size = thumb_size(out.width, out.height)
    if source is None:
        dec = decode_thumbs(video, size)
        _decode_ok(dec, len(out), rel)
        return Verified(len(out), 0, 0, 0)
    src_of = source_frames(ann)
    if len(src_of) != ann.frame_count:
        raise ItemError("source ranges", f"source_ranges {ann.source_ranges} hold {len(src_of)} frames, "
                                         f"the video has {ann.frame_count}")
    if not ann.clips:
        raise ItemError("clip count", "the annotation has no clips")
    n_used = max(src_of) + 1
    src_pk, spec = source_decode(ann, source, (out.width, out.height))
    src_times = src_pk.times()
    # the source's packets can stand for its decoded frames when they are H.264 covering the used range;
    # the output frames that are not copies of them are decoded while the source decodes (another thread
    # waits on that ffmpeg), and checked only once the source's decoded times confirm the packets' times
    bytes_ok = src_pk.codec == "h264" and len(src_times) >= n_used
    copied = copied_frames(out, src_pk, src_of) if bytes_ok else [False] * len(out)
    need = [not c for c in copied]
    rank = out.ranks()
    needed = {src_of[rank[i]] + d for i in range(len(out)) if need[i] for d in (-1, 0, 1)}
    ref = load_reference(reference, spec, needed)

    def decode_source():
        return decode_thumbs(source, size, spec.until, spec.crop)

    with ThreadPoolExecutor(max_workers=1) as pool:
        src_job = pool.submit(decode_source) if ref is None else None
        decoded = decode_output(video, out, need, size) if any(need) else None
        src = ref if ref is not None else src_job.result()
    _source_ok(ann, src, src_of, n_used, label)
    # the source's packets are its decoded frames (same count and times) in the used range: bytes may stand for pixels
    same = bytes_ok and all(src_times[k] == src.times[k] for k in range(min(len(src.times), len(src_times))))
    if not same and not all(need):
        if ref is not None:  # every frame is compared now: the reference holds only the ones bytes did not prove
            src, ref = decode_source(), None
            _source_ok(ann, src, src_of, n_used, label)
        need = [True] * len(out)
        decoded = decode_output(video, out, need, size)
    by_pixels = 0
    if decoded is not None:
        positions, dec = decoded
        _decode_ok(dec, len(positions), rel)
        check = {rank[i] for i in range(len(out)) if need[i]}
        picked = [n for n, j in enumerate(positions) if j in check]
        ks = [src_of[positions[n]] for n in picked]
        found = frames_problem(dec.thumbs[picked], src.thumbs, ks)
        if found is not None:
            j = positions[picked[found[0]]]
            raise ItemError("frame differs from its source frame",
                            f"{rel}: frame {j} should show source frame {src_of[j]} of {label}: {found[1]}")
        by_pixels = len(picked)
    return Verified(len(out), len(out) - sum(need), by_pixels, 0 if ref is not None else len(src.thumbs), ref is not None)


def _source_ok(ann, src: Decoded, src_of: Sequence[int], n_used: int, label: str) -> None:
    """The source decoded without error, to the last frame the clips use, each clip holding the frames inside its times."""
    if src.errors:
        raise ItemError("source does not decode", f"{label}: {src.errors[0]}")
    if len(src.times) != len(src.thumbs):
        raise ItemError("source does not decode", f"{label}: {len(src.times)} frame times for {len(src.thumbs)} frames")
    if len(src.thumbs) < n_used:
        raise ItemError("source shorter than its annotation",
                        f"{label}: {len(src.thumbs)} frames decode, the clips use {n_used}")
    why = clip_times_problem(ann, src_of, src.times, label)
    if why:
        raise ItemError("clip frames inside metadata times", why)


def _decode_ok(dec: Decoded, frames: int, rel: str) -> None:
    if dec.errors:
        raise ItemError("video does not decode", f"{rel}: {dec.errors[0]}")
    if len(dec.thumbs) != frames:
        raise ItemError("video does not decode", f"{rel}: {len(dec.thumbs)} frames decode, its packets hold {frames}")


def verify_copy(normal: Path, copy: Path, spans: Sequence[tuple[int, int]], rel: str = "",
                normal_packets: Optional[Packets] = None) -> None:
    """``copy`` is frames [a, b) of ``normal`` for each span, in order, by stream copy: packet by packet,
    byte for byte, each at its position, the same parameter sets; no decoding. ItemError otherwise."""
    rel = rel or str(copy)
    src = normal_packets or read_packets(normal)
    out = read_packets(copy)
    if out.extradata != src.extradata:
        raise ItemError("copy differs from the normal video", f"{rel}: its parameter sets (avcC) differ")
    rank = src.ranks()
    expect_digest, expect_rank = [], []
    pos = 0
    for a, b in spans:
        run = [i for i in range(len(src)) if a <= rank[i] < b]
        if len(run) != b - a or run != list(range(run[0], run[0] + len(run))) or not src.idr[run[0]]:
            raise ItemError("normal video cannot be cut there",
                            f"frames [{a}, {b}) of {normal} are not a run of packets starting at an IDR")
        expect_digest += [src.digest[i] for i in run]
        expect_rank += [pos + rank[i] - a for i in run]
        pos += b - a
    if len(out) != len(expect_digest):
        raise ItemError("copy frame count", f"{rel} has {len(out)} frames, its clips hold {len(expect_digest)}")
    out_rank = out.ranks()
    for i in range(len(out)):
        if out.digest[i] != expect_digest[i] or out_rank[i] != expect_rank[i]:
            raise ItemError("copy differs from the normal video",
                            f"{rel}: packet {i} (frame {out_rank[i]}) is not the normal video's frame it must be")


SOURCE_ROOT_HELP = ("input root of preprocess's --source (a folder, a .parquet file or an hf:// path): every output "
                    "frame is checked against the source frame its annotation names (none: preprocess's --root_dir "
                    "from stats/preprocess.json; '' = no source: outputs are only decoded)")


def resolve_source_root(layout, value: Optional[str]) -> str:
    """``--source_root`` as given (checked by the recorded source: a folder, a .parquet file, an hf:// path),
    or (None) the root preprocess read, from its stats; '' when there is none."""
    from timewarp import sources
    from timewarp.core.store import read_json

    if value is None:
        with contextlib.suppress(OSError, ValueError, AttributeError, KeyError, TypeError):
            return str(read_json(layout.stats_file("preprocess"))["options"]["root_dir"] or "")
        return ""
    if value:
        sources.open_source(sources.recorded(layout)[0], value).check("--source_root")
    return value


def _reopen(ann, source_root: Optional[str], layout):
    """(source, reference) of the file an annotation names, through the protocol of the source preprocess
    used (its cache of fetched bytes included); None when ``source_root`` is empty or the file is not there."""
    from timewarp import sources

    if not source_root:
        return None
    name = sources.recorded(layout)[0] if layout is not None else sources.DEFAULT
    source = sources.open_source(name, source_root, cache_dir=sources.cache_dir(layout) if layout is not None else None)
    ref = source.reopen(ann.source_file, ann.source_row)
    return None if ref is None else (source, ref)


def source_stamp(ann, source_root: Optional[str], layout=None) -> str:
    """Which source file (and row) an annotation's check used, with its size and mtime (a remote file: its
    address, whose bytes the output's cache pins); '' when unreachable."""
    found = _reopen(ann, source_root, layout)
    if found is None:
        return ""
    source, ref = found
    row = "" if ref.row is None else f"#row{ref.row}"
    path = Path(ref.path)
    try:
        st = path.stat()
    except (OSError, ValueError):
        return f"{ref.path}{row}" if "://" in str(ref.path) else ""
    return f"{path.resolve()}{row}:{st.st_size}:{st.st_mtime_ns}"


@contextlib.contextmanager
def open_source(ann, source_root: Optional[str], layout=None) -> Iterator[Optional[tuple[Path, str]]]:
    """(path, label) of a local file with the bytes of the source an annotation names (extracted from its
    parquet row, or read from the output's cache of a remote source); None when ``source_root`` is empty
    or the file is not there."""
    found = _reopen(ann, source_root, layout)
    if found is None:
        yield None
        return
    source, ref = found
    with tempfile.TemporaryDirectory(prefix=".tmp-verify-src-") as scratch:
        suffix = Path(ref.path).suffix if ref.kind == "files" else ".mp4"
        yield source.open(ref, Path(scratch) / f"verify-src-{ann.id}{suffix}"), ref.label()   # (the id: in ps and logs)
