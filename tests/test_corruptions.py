"""timewarp.media.corruptions on real decoded frames: each does what its name says, is seeded and pure."""
from __future__ import annotations

import numpy as np
import pytest

from test_frames import frame_id, normal
from timewarp.media import corruptions
from timewarp.media.corruptions import CORRUPTIONS, DEFAULT_CORRUPTIONS, NotApplicable, choose, corrupt
from timewarp.media.frames import extract_frames, sample_indices


@pytest.fixture(scope="module")
def clips(processed):
    """(frames, frame numbers) of two different videos: 8 uniform frames each."""
    out = []
    for vid in ("ntsc30", "pal25"):
        layout, ann = normal(processed, vid)
        idx = sample_indices(ann.frame_count, n=8)
        out.append((extract_frames(layout.root / ann.video, idx), idx))
    return out


def ids(frames) -> list[int]:
    return [frame_id(f) for f in frames]


def test_reorderings(clips):
    (frames, idx), _ = clips
    before = [f.copy() for f in frames]
    assert ids(frames) == idx

    rev = corrupt("reverse", frames, 1)
    assert ids(rev.frames) == idx[::-1] == rev.source_indices(idx)

    sh = corrupt("shuffle", frames, 7)
    got = ids(sh.frames)
    assert sorted(got) == idx and got != idx and got == [idx[i] for i in sh.params["order"]]
    assert ids(corrupt("shuffle", frames, 7).frames) == got                # seeded
    assert any(ids(corrupt("shuffle", frames, s).frames) != got for s in range(8, 12))

    dr = corrupt("drop", frames, 3)
    a, b = dr.params["start"], dr.params["end"]
    assert 1 <= b - a <= len(idx) - 2
    assert ids(dr.frames) == idx[:a] + idx[b:] == dr.source_indices(idx)  # one contiguous range gone

    fr = corrupt("freeze", frames, 5)
    got = ids(fr.frames)
    a, b = fr.params["start"], fr.params["end"]
    assert len(got) == len(idx) and b - a >= 2
    assert got[a:b] == [idx[fr.params["frame"]]] * (b - a)                 # one frame repeated
    assert got[:a] == idx[:a] and got[b:] == idx[b:]

    assert all(np.array_equal(x, y) for x, y in zip(frames, before))       # inputs untouched


def test_splice_takes_frames_of_the_other_video(clips):
    (frames, idx), (other, oidx) = clips
    sp = corrupt("splice", frames, 11, other=other)
    a, b = sp.params["start"], sp.params["end"]
    got = ids(sp.frames)
    assert got[:a] == idx[:a] and got[b:] == idx[b:]
    assert got[a:b] == oidx[a:b] == sp.source_indices(idx, oidx)[a:b]     # the other video's frame numbers
    assert all(sp.frames[k].shape == frames[0].shape for k in range(len(got)))  # resized to fit
    assert not np.array_equal(sp.frames[a], frames[a])
    with pytest.raises(NotApplicable):
        corrupt("splice", frames, 11)


@pytest.mark.parametrize("name", ["blur", "noise"])
def test_pixel_corruptions_change_pixels_keep_shape(clips, name):
    (frames, idx), _ = clips
    c = corrupt(name, frames, 13)
    assert c.pixels_changed and c.source_indices(idx) == idx
    for before, after in zip(frames, c.frames):
        assert after.shape == before.shape and after.dtype == np.uint8
        assert np.abs(after.astype(int) - before.astype(int)).mean() > 8   # heavy, not a tweak
    again = corrupt(name, frames, 13)
    assert all(np.array_equal(x, y) for x, y in zip(c.frames, again.frames))
    if name == "noise":
        other_seed = corrupt(name, frames, 14)
        assert not np.array_equal(other_seed.frames[0], c.frames[0])
    else:  # a heavy blur flattens the frame-number blocks
        assert np.std(c.frames[0][: frames[0].shape[0] // 3]) < 0.6 * np.std(frames[0][: frames[0].shape[0] // 3])


def test_short_sequences_and_unknown_names(clips):
    (frames, _), _ = clips
    for name in ("shuffle", "reverse", "freeze"):
        with pytest.raises(NotApplicable):
            corrupt(name, frames[:1], 0)
    with pytest.raises(NotApplicable):
        corrupt("drop", frames[:2], 0)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt("melt", frames, 0)
    assert set(CORRUPTIONS) == {"shuffle", "reverse", "drop", "freeze", "splice", "blur", "noise"}


def test_choose_is_keyed_by_name_so_a_new_corruption_moves_only_the_draws_it_wins():
    names = list(DEFAULT_CORRUPTIONS)
    for k in (1, 2, 3):
        before = {v: choose(names, k, 42, v) for v in (f"video{i}" for i in range(200))}
        assert all(len(c) == k and len(set(c)) == k for c in before.values())
        assert before == {v: choose(names[::-1], k, 42, v) for v in before}          # the list's order is no input
        after = {v: choose(names + ["tint"], k, 42, v) for v in before}
        moved = {v for v in before if after[v] != before[v]}
        assert moved == {v for v in before if "tint" in after[v]}                    # only where the newcomer wins
        assert 0 < len(moved) < 200 * (k + 2) / 8
        for v in moved:                                                              # ... and it takes the last place
            assert [n for n in after[v] if n != "tint"] == before[v][:k - 1]
    assert choose(names, 2, 42, "video0") != choose(names, 2, 43, "video0") or \
        choose(names, 2, 42, "video1") != choose(names, 2, 43, "video1")            # seeded
    assert choose(names, 0, 42, "v") == [] and sorted(choose(names, 99, 42, "v")) == sorted(names)


def test_a_corruption_is_one_record_and_the_default_draw_is_written_out():
    assert set(DEFAULT_CORRUPTIONS) == set(CORRUPTIONS) and len(DEFAULT_CORRUPTIONS) == 7
    assert [n for n, c in CORRUPTIONS.items() if c.needs_other] == ["splice"]
    for c in CORRUPTIONS.values():                                                   # the module docs list each
        assert f"  {c.name:<9}{c.what}" in corruptions.__doc__
