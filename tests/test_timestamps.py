from fractions import Fraction

import pytest

from timewarp.sources.finevideo import safe_id
from timewarp.sources.timestamps import format_timestamp, parse_rate, parse_timestamp, time_to_frame


@pytest.mark.parametrize("text,seconds", [
    ("00:00:09.009", 9.009), ("00:01:45.981", 105.981), ("01:00:00.000", 3600.0), ("00:00:60.000", 60.0),
    ("01:05", 65.0), ("1:05.5", 65.5), ("15", 15.0), ("15.25", 15.25), (7, 7.0), (2.5, 2.5),
    # forms other exports write: SubRip's comma, seconds with their unit
    ("00:00:02,500", 2.5), ("1:02:03,250", 3723.25), ("01:05,5", 65.5), ("1.5s", 1.5), ("90 s", 90.0), ("2S", 2.0),
])
def test_parse_timestamp(text, seconds):
    assert parse_timestamp(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", [None, "", "  ", "n/a", "varies", "throughout the scene", "scene 3", "-1", "1e3",
                                 "00:-1:00", "1:2:3:4", float("nan"), -2, True,
                                 "2,5", "1,5,0", "00:00:02,500,1", "00:00:02.500,1", "00,5:10", "1.5ms", "-1s", "1e3s",
                                 "s", "1.5 sec", "inf", "00:01:02s"])
def test_parse_timestamp_rejects(bad):
    assert parse_timestamp(bad) is None


def test_rates_are_exact():
    assert parse_rate(29.97002997002997) == Fraction(30000, 1001)
    assert parse_rate(29.97) == Fraction(30000, 1001)
    assert parse_rate(23.976024615513296) == Fraction(24000, 1001)
    assert parse_rate(59.94) == Fraction(60000, 1001)
    assert parse_rate(25.0) == 25 and parse_rate(12.5) == Fraction(25, 2) and parse_rate("30000/1001") == Fraction(30000, 1001)


def test_time_to_frame_snaps_within_a_millisecond():
    ntsc = Fraction(30000, 1001)
    # 9 s at 23.976 is frame 216, written "00:00:09.009" (216 * 1001/24000 = 9.009 exactly)
    assert time_to_frame(9.009, Fraction(24000, 1001)) == 216
    # frame 45 at 29.97 is at 1.5015 s; "1.502" (rounded) snaps to it, "1.500" does not (first frame at/after is 45 too)
    assert time_to_frame(1.502, ntsc) == 45 and time_to_frame(1.5, ntsc) == 45
    # a time just after a boundary beyond the tolerance moves to the next frame
    assert time_to_frame(float(Fraction(45) / ntsc) + 0.002, ntsc) == 46
    for k in range(0, 4000, 37):  # every boundary written as FineVideo writes it maps back to its frame
        for fps in (ntsc, Fraction(24000, 1001), Fraction(25), Fraction(60000, 1001)):
            assert time_to_frame(round(float(k / fps), 3), fps) == k
            assert format_timestamp(float(k / fps)).count(":") == 2


@pytest.mark.parametrize("raw", ["a b", "x'y", 'q"q', "semi;colon", "$(rm -rf /)", "../../etc/passwd", "..", ".", "",
                                 "tab\tname", "ünïcödé", "a/b"])
def test_safe_id_is_a_plain_file_name(raw):
    sid = safe_id(raw)
    assert sid and all(c.isascii() and (c.isalnum() or c in "._-") for c in sid)
    assert sid not in (".", "..") and not sid.startswith(".")
    assert safe_id(raw) == sid  # stable


def test_safe_id_keeps_clean_ids_and_separates_collisions():
    assert safe_id("O-w6CSLiRsA") == "O-w6CSLiRsA"
    assert safe_id("a b") != safe_id("a_b") and safe_id("a b") != safe_id("a;b")
    # an id shaped like shuffle_clips' "<id>__p<k>" could collide with another video's extra shuffle
    assert safe_id("abc__p1") != "abc__p1" and not safe_id("abc__p1").endswith("__p1")
