"""H.264 bitstream facts read without decoding: avcC, SPS fields, NAL unit splitting.

Used by the smart-cut engine (which copies packets) and by ``video.probe``'s packet fast path
(which reads frame times from packets). Anything outside what these readers handle raises
``Unsupported`` with a stable reason; callers fall back to decoding.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

PROFILES = {66: "baseline", 77: "main", 100: "high"}
NAL_SLICE, NAL_IDR, NAL_SPS, NAL_PPS, NAL_AUD = 1, 5, 7, 8, 9


class Unsupported(Exception):
    """This source cannot be smart-cut safely; ``reason`` (a stable category) says why, ``detail`` the facts."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _unescape(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


class _Bits:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3] if self.pos >> 3 < len(self.data) else 0
            v = (v << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise Unsupported("malformed exp-Golomb code in a parameter set")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        v = self.ue()
        return (v + 1) // 2 if v & 1 else -(v // 2)


@dataclass(frozen=True)
class Sps:
    profile_idc: int
    constraints: int
    level_idc: int
    sps_id: int
    chroma_format_idc: int
    bit_depth: int
    frame_mbs_only: bool


def parse_sps(nal: bytes) -> Sps:
    """The SPS fields that decide whether x264 can make pieces that decode in the same stream."""
    b = _Bits(_unescape(nal[1:]))
    profile, constraints, level = b.u(8), b.u(8), b.u(8)
    sps_id = b.ue()
    chroma, depth = 1, 8
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma = b.ue()
        if chroma == 3:
            b.u(1)
        depth = b.ue() + 8
        b.ue()
        b.u(1)
        if b.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma != 3 else 12):
                if b.u(1):
                    last = nxt = 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + b.se() + 256) % 256
                        last = nxt or last
    b.ue()  # log2_max_frame_num_minus4
    poc_type = b.ue()
    if poc_type == 0:
        b.ue()
    elif poc_type == 1:
        b.u(1)
        b.se()
        b.se()
        for _ in range(b.ue()):
            b.se()
    b.ue()  # max_num_ref_frames
    b.u(1)
    b.ue()
    b.ue()
    return Sps(profile, constraints, level, sps_id, chroma, depth, bool(b.u(1)))


def pps_ids(nal: bytes) -> tuple[int, int]:
    """(pps_id, sps_id) of a PPS NAL unit."""
    b = _Bits(_unescape(nal[1:]))
    return b.ue(), b.ue()


@dataclass
class AvcC:
    length_size: int
    header: bytes           # configurationVersion, profile, compat, level
    sps: list[bytes]
    pps: list[bytes]
    tail: bytes             # high-profile extension (chroma format, bit depth, SPS ext), kept as is

    @classmethod
    def parse(cls, data: bytes) -> "AvcC":
        if len(data) < 7 or data[0] != 1:
            raise Unsupported("no avcC parameter sets", "Annex B or avc3 stream")
        pos, out = 6, []
        n_sps = data[5] & 0x1F
        sps = []
        for _ in range(n_sps):
            n = int.from_bytes(data[pos:pos + 2], "big")
            sps.append(data[pos + 2:pos + 2 + n])
            pos += 2 + n
        n_pps = data[pos]
        pos += 1
        for _ in range(n_pps):
            n = int.from_bytes(data[pos:pos + 2], "big")
            out.append(data[pos + 2:pos + 2 + n])
            pos += 2 + n
        if not sps or not out:
            raise Unsupported("avcC without SPS or PPS")
        return cls((data[4] & 3) + 1, data[1:4], sps, out, data[pos:])

    def to_bytes(self) -> bytes:
        body = bytes([1]) + self.header + bytes([0xFC | (self.length_size - 1), 0xE0 | len(self.sps)])
        for s in self.sps:
            body += len(s).to_bytes(2, "big") + s
        body += bytes([len(self.pps)])
        for p in self.pps:
            body += len(p).to_bytes(2, "big") + p
        return body + self.tail


def split_length_prefixed(data: bytes, size: int) -> list[bytes]:
    nals, pos = [], 0
    while pos + size <= len(data):
        n = int.from_bytes(data[pos:pos + size], "big")
        pos += size
        if n == 0 or pos + n > len(data):
            raise Unsupported("a packet's NAL lengths do not add up")
        nals.append(data[pos:pos + n])
        pos += n
    return nals


_START = re.compile(b"\x00\x00\x01")


def split_annexb(data: bytes) -> list[bytes]:
    starts = [m.end() for m in _START.finditer(data)]
    nals = []
    for i, s in enumerate(starts):
        e = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
        nals.append(data[s:e].rstrip(b"\x00") if i + 1 < len(starts) else data[s:e])
    return [n for n in nals if n]


def length_prefixed(nals: Sequence[bytes], size: int) -> bytes:
    return b"".join(len(n).to_bytes(size, "big") + n for n in nals)


@dataclass(frozen=True)
class PacketFacts:
    pts: int
    dts: int
    keyframe: bool   # the container marks it a sync sample
    idr: bool        # it holds an IDR slice


def scan_packets(container, stream, avcc: AvcC):
    """Yield each video packet's facts in decode order, without decoding (PyAV demux).

    Raises ``Unsupported`` where packets stop saying what the frames are: a packet without
    timestamps, one marked discard (edit lists) or corrupt, or in-band SPS/PPS (a parameter-set
    change the avcC does not show). Empty flush packets are skipped.
    """
    for pkt in container.demux(stream):
        if pkt.size == 0 and pkt.pts is None:
            continue
        if pkt.pts is None or pkt.dts is None:
            raise Unsupported("packet without timestamps")
        if pkt.is_discard or pkt.is_corrupt:
            raise Unsupported("packets marked discard/corrupt", "edit list or damage")
        types = {n[0] & 0x1F for n in split_length_prefixed(bytes(pkt), avcc.length_size)}
        if NAL_SPS in types or NAL_PPS in types:
            raise Unsupported("in-band parameter sets")
        yield PacketFacts(pkt.pts, pkt.dts, pkt.is_keyframe, NAL_IDR in types)
