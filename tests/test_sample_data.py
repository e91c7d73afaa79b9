"""The sample dataset's captions are true of its pixels: the colours a caption names are the colours
decoded from the video at that moment (before: "A pink cross ... on a pink-tinted background" over a
green cross), and its articles are right (before: "A orange circle")."""
from __future__ import annotations

import re

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from timewarp.sample_data import COLORS, ID_BAND, build, draw_frame
from timewarp.sources.timestamps import parse_timestamp

pytestmark = pytest.mark.video   # renders videos and runs stages on them (the slow tier)

NAMES = sorted(COLORS)
PALETTE = np.array([COLORS[n] for n in NAMES], np.float32)
FIRST = re.compile(r"^(An?) (\w+) (square|circle|vertical bar|cross) .* on (an?) (\w+) background\.$")
LATER = re.compile(r"^The (\w+) (square|circle|bar|cross) stops and the frame holds still \(part \d+\)\.$")


def drawn_colors(rgb: np.ndarray) -> tuple[str, str]:
    """(shape colour, background colour) of one decoded frame, by the nearest named colour of each pixel
    below the frame-number band: the most common is the background, the next the shape."""
    h = rgb.shape[0]
    below = rgb[int(h * ID_BAND) + 4:].reshape(-1, 3).astype(np.float32)
    nearest = ((below[:, None, :] - PALETTE[None]) ** 2).sum(-1).argmin(1)
    counts = np.bincount(nearest, minlength=len(NAMES))
    background, shape = np.argsort(counts)[::-1][:2]
    return NAMES[shape], NAMES[background]


def grammatical(article: str, word: str) -> bool:
    return article.lower() == ("an" if word[0] in "aeiou" else "a")


def decode(mp4: bytes, tmp_path) -> list[np.ndarray]:
    path = tmp_path / "v.mp4"
    path.write_bytes(mp4)
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> list[tuple[bytes, dict]]:
    shard = build(tmp_path_factory.mktemp("sample"), videos=4, seed=0)
    table = pq.read_table(shard).to_pylist()
    return [(row["mp4"], row["json"]) for row in table]


def test_every_caption_names_the_colours_drawn_at_its_time(sample, tmp_path):
    checked = 0
    for mp4, meta in sample:
        frames = decode(mp4, tmp_path)
        fps = meta["content_metadata"]["fps"]
        for scene in meta["content_metadata"]["scenes"]:
            for act in scene["activities"]:
                ts = act["timestamp"]
                mid = (parse_timestamp(ts["start_timestamp"]) + parse_timestamp(ts["end_timestamp"])) / 2
                shape, background = drawn_colors(frames[min(len(frames) - 1, int(mid * fps))])
                text = act["description"]
                first, later = FIRST.match(text), LATER.match(text)
                assert first or later, text
                if first:
                    a1, fg, _, a2, bg = first.groups()
                    assert (fg, bg) == (shape, background), (text, shape, background)
                    assert grammatical(a1, fg) and grammatical(a2, bg), text
                else:
                    assert later.group(1) == shape, (text, shape)
                assert shape in scene["title"] and background in scene["title"]
                checked += 1
    assert checked >= 12


def test_the_checks_catch_the_old_captions():
    """A pink scene drawn as before (shape in the inverse colour) is not "a pink cross on a pink
    background", and "A orange" is not grammatical."""
    frame = draw_frame(176, 144, 5, COLORS["pink"], "cross", 0.5)
    assert drawn_colors(frame) == ("green", "pink") != ("pink", "pink")
    frame = draw_frame(176, 144, 5, COLORS["pink"], "cross", 0.5, COLORS["green"])
    assert drawn_colors(frame) == ("green", "pink")
    assert not grammatical("A", "orange") and grammatical("An", "orange") and grammatical("a", "blue")
