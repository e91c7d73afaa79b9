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


def person_root(root: Path, videos: int = 24, seed: int = 11) -> Path:
    from timewarp.layout import Layout
    from timewarp.preprocess.shuffle_clips import draw_permutations, shuffled_annotation
    from timewarp.schema import Clip, NormalAnnotation
    from timewarp.store import write_json

    rng = random.Random(seed)
    layout = Layout(root)
    for v in range(videos):
        n = 3 + v % 5
        caps = person_captions(rng, n, twin=v % 4 == 3)
        clips, t = [], 0
        for k, cap in enumerate(caps):
            clips.append(Clip(k, t / 30, (t + 30) / 30, t, t + 30, cap))
            t += 40
        vid = f"person{v:03d}"
        ann = NormalAnnotation(vid, vid, "data/x.parquet", v, f"{vid}.json", "test" if v % 3 == 0 else "train",
                               f"normal/videos/{vid}.mp4", 30.0, "30", t, t / 30, 64, 48, t / 30, "t", "c", clips)
        write_json(layout.normal_annotation(vid), ann.to_dict())
        perm = draw_permutations(n, 1, seed, vid)[0]
        write_json(layout.shuffled_annotation(vid), shuffled_annotation(ann, perm, 0, seed, layout).to_dict())
    return root
