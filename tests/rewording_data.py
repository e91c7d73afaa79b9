"""Sample data for the rewording tests: annotation-only output roots (the generation stages never open a
video) whose captions are like FineVideo's: "The person ..." sentences, some events of two sentences,
captions sharing words, and a few captions equal up to case and punctuation ("... camera." / "... camera!")."""
from __future__ import annotations

import random
from pathlib import Path

ACTIONS = ["feeds the cat", "closes the window", "pours water into a glass", "tunes a guitar", "ties a red ribbon",
           "waves at the camera", "draws a circle", "opens the fridge", "picks up a large book", "walks to the door",
           "waters the plants", "folds a blue towel", "chops fresh onions", "stirs the soup", "lights a candle",
           "reads a letter", "puts on a jacket", "turns off the lamp", "writes on a whiteboard", "sweeps the floor"]
SECOND = ["The camera zooms in slowly.", "A dog watches from the sofa.", "Music plays in the background.",
          "Sunlight fills the kitchen.", "The room is quiet."]


def person_captions(rng: random.Random, n: int, twin: bool) -> list[str]:
    acts = rng.sample(ACTIONS, n)
    seconds = rng.sample(SECOND, len(SECOND))
    caps = []
    for k, a in enumerate(acts):
        cap = f"The person {a}."
        if rng.random() < 0.35 and seconds:
            cap += " " + seconds.pop()
        caps.append(cap)
    if twin and n >= 4:  # the same event again, written with other case and punctuation
        i = rng.randrange(n - 1)
        j = rng.randrange(i + 1, n)
        caps[j] = caps[i].rstrip(".").upper().replace("THE PERSON", "The person") + "!"
    return caps


def write_video(root: Path, vid: str, caps: list[str], split: str, seed: int, permutation=None) -> None:
    """One video's normal annotation (30-frame clips, 10-frame gaps) and its shuffled annotation (made by
    shuffle_clips' own functions; ``permutation`` or one drawn for ``seed``)."""
    from timewarp.core.layout import Layout
    from timewarp.preprocess.shuffle_clips import draw_permutations, shuffled_annotation
    from timewarp.core.schema import Clip, NormalAnnotation
    from timewarp.core.store import write_json

    layout = Layout(root)
    clips = [Clip(k, 40 * k / 30, (40 * k + 30) / 30, 40 * k, 40 * k + 30, cap) for k, cap in enumerate(caps)]
    t = 40 * len(caps)
    ann = NormalAnnotation(vid, vid, "data/x.parquet", 0, f"{vid}.json", split, f"normal/videos/{vid}.mp4", 30.0,
                           "30", t, t / 30, 64, 48, t / 30, "t", "c", clips)
    write_json(layout.normal_annotation(vid), ann.to_dict())
    perm = permutation if permutation is not None else draw_permutations(len(caps), 1, seed, vid)[0]
    write_json(layout.shuffled_annotation(vid), shuffled_annotation(ann, perm, 0, seed, layout).to_dict())


def person_root(root: Path, videos: int = 24, seed: int = 11) -> Path:
    rng = random.Random(seed)
    for v in range(videos):
        write_video(root, f"person{v:03d}", person_captions(rng, 3 + v % 5, twin=v % 4 == 3),
                    "test" if v % 3 == 0 else "train", seed)
    return root
