"""TimeWarp-Implicit: self-generated preference pairs from a vision model (train split only).

For every train video, ``--frames`` frames (default 8, uniform; or ``--fps``) are decoded in one
pass and cached as JPEGs under ``frames/<id>/``. A vision model on any OpenAI-compatible endpoint
(vLLM/SGLang serving Qwen2.5-VL or VideoLLaMA3, or a hosted model; frames are sent as base64
``image_url`` parts) then writes:

* chosen: a detailed, temporally focused description of the real frames, in order;
* rejected (``--rejected_mode``):
  - ``corrupt``: the same prompt on corrupted frames (``--corruptions``, of ``timewarp.media.corruptions``;
    ``--corruptions_per_video`` of them per video, seeded per video and corruption name, so adding a
    corruption changes only the videos that draw it), or
  - ``hallucinate``: one of several hallucination-inviting prompts on the real frames, or
  - ``both``.

A pair whose two responses are near-identical is dropped (reason ``near-identical responses``):
the distance is the word-level Levenshtein distance between the two texts (lowercased, punctuation
removed, split into words) divided by the longer one's word count; pairs below ``--min_distance``
(default 0.15: fewer than 15 word edits per 100 words) teach nothing.

Model calls go through ``timewarp.text.llm.ChatClient``: cached on disk by request hash (a rerun makes
no call), retried on 429/5xx/timeouts/malformed replies, concurrency-limited, tokens in the stats.
Replies must be a JSON object ``{"description": "..."}``. The model never decides what is true
here either: which response is chosen follows from which frames (or prompt) it was given.

Output: ``pref/pref_implicit.jsonl`` (``schema.ImplicitPrefRecord``), ``rejects/`` and ``stats/``.
Without a vision endpoint (``--llm_base_url ...`` or ``$OPENAI_BASE_URL``) it exits 2 with one line.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import re
import sys
from dataclasses import dataclass
from functools import partial
from typing import Optional, Sequence

from timewarp.text.annotations import load_normal, require_normal_ids
from timewarp.media.corruptions import CORRUPTIONS, DEFAULT_CORRUPTIONS, Corrupted, NotApplicable, choose, corrupt
from timewarp.core.errors import ItemError, UsageError
from timewarp.media.frames import DEFAULT_QUALITY, cached_frames, decode_jpeg, encode_jpeg, resize_max_side, sample_indices
from timewarp.core.layout import Layout
from timewarp.text.llm import (ChatRequest, LLMError, add_llm_args, client_from_args, image_part, parse_json_object,
                          strip_fence, text_part)
from timewarp.core.parallel import LOCAL, Executor, chunked, pmap
from timewarp.core.schema import ImplicitPrefRecord, NormalAnnotation
from timewarp.core.splits import item_seed
from timewarp.core.stage import StageConfig, StageRun, add_common_args, cli, executor_from_args, option, require_root
from timewarp.core.store import write_jsonl

log = logging.getLogger("timewarp.implicit")

STAGE = "generate_pref_implicit"
DEFAULT_MIN_DISTANCE = 0.15
MIN_WORDS = 8            # a description shorter than this is a malformed reply (asked again)
BATCH_VIDEOS = 32        # videos whose images are in memory at once

NEEDS_ENDPOINT = ("needs a vision model endpoint: pass --llm_base_url URL --llm_model MODEL "
                  "(any OpenAI-compatible server that accepts image_url parts, e.g. vLLM serving "
                  "Qwen/Qwen2.5-VL-7B-Instruct at http://localhost:8000/v1); generate_data.sh never runs this stage")

# ---------------------------------------------------------------------- prompts
SYSTEM_PROMPT = (
    "You are a meticulous video describer. You are shown frames sampled from one video, in the order "
    "they are given. Describe only what the frames show. Reply with a JSON object of the form "
    '{"description": "<your description>"} and nothing else.'
)

DESCRIBE_PROMPT = (
    "Describe this video in detail and in temporal order. Say what happens first, what happens next "
    "and what happens last; how the setting, the objects and any people change from beginning to end; "
    "and where the scene cuts to something new. Name every distinct event in the order it occurs, and "
    "do not describe anything the frames do not show."
)

# Prompts that invite invented content; asked on the real frames, their answers are the rejected side.
HALLUCINATION_PROMPTS = {
    "dialogue": ("Describe this video in detail and in temporal order, including exactly what the people "
                 "say to each other and the music that plays in the background."),
    "twist": ("Describe this video in detail and in temporal order. Make sure to describe the surprising "
              "twist in the middle of the video and how it changes what happens at the end."),
    "ten_events": ("This video contains at least ten distinct events. List every one of them in the order "
                   "they happen, with what causes each one."),
    "newcomer": ("Describe in detail the moment a second person enters the scene and what they do, then "
                 "describe the rest of the video in temporal order."),
    "before_after": ("Describe what happens just before the first frame, then the video itself in temporal "
                     "order, then what happens right after the last frame."),
    "backstory": ("Tell the story of this video in order, including the names of the people in it, what they "
                  "are thinking, and the backstory that explains why they are there."),
}


def frame_labels(n: int) -> list[str]:
    return [f"Frame {k + 1} of {n}:" for k in range(n)]


def build_request(prompt: str, images: Sequence[bytes], max_tokens: int):
    """The chat request: system prompt; user = intro, interleaved frame labels and JPEG frames, prompt."""
    parts = [text_part(f"These are {len(images)} frames sampled from a video, in order.")]
    for label, img in zip(frame_labels(len(images)), images):
        parts += [text_part(label), image_part(img, "image/jpeg")]
    parts.append(text_part(prompt))
    return ChatRequest(messages=(("system", SYSTEM_PROMPT), ("user", tuple(parts))), max_tokens=max_tokens)


def validate_description(text: str) -> str:
    """The description in a reply: the requested ``{"description": ...}`` object, or the reply itself
    when it is plain text (a description needs no JSON: a model that answers in prose still counts);
    a reply that starts a JSON value must be the object asked for."""
    try:
        desc = parse_json_object(text, {"description": str})["description"]
    except ValueError:
        body = strip_fence(text)
        if not body or body[0] in '{["':
            raise
        desc = body
    desc = " ".join(desc.split())
    if len(desc.split()) < MIN_WORDS:
        raise ValueError(f"description has {len(desc.split())} words, fewer than {MIN_WORDS}")
    return desc


# ---------------------------------------------------------------------- near-identical check
_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two sequences (insert, delete, substitute: cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def text_distance(a: str, b: str) -> float:
    """Word-level edit distance of two texts over the longer one's word count (0 = same words, 1 = nothing shared)."""
    wa, wb = words(a), words(b)
    longest = max(len(wa), len(wb))
    return 0.0 if longest == 0 else edit_distance(wa, wb) / longest


# ---------------------------------------------------------------------- the config
def parse_corruptions(text: str) -> list[str]:
    names = [n.strip() for n in re.split(r"[,\s]+", text) if n.strip()]
    if names == ["all"]:
        return list(CORRUPTIONS)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown corruption(s) {', '.join(unknown)}; known: {', '.join(CORRUPTIONS)}")
    return list(dict.fromkeys(names))


@dataclass(frozen=True, kw_only=True)
class Config(StageConfig):
    frames: int = option(8, "frames per video, uniform over it")
    fps: Optional[float] = option(None, "instead of --frames: this many frames per second of video, at most --max_frames",
                                  type=float)
    max_frames: int = option(32, "cap on frames per video with --fps")
    image_max_side: int = option(448, "scale frames down to this longer side before sending (0 = as decoded)")
    jpeg_quality: int = option(DEFAULT_QUALITY, "JPEG quality")
    rejected_mode: str = option("corrupt", "rejected = same prompt on corrupted frames, a hallucination-inviting "
                                           "prompt on the real frames, or one pair of each kind",
                                choices=["corrupt", "hallucinate", "both"])
    corruptions: tuple = option(DEFAULT_CORRUPTIONS, f"comma-separated corruptions to draw from, of "
                                                      f"{', '.join(CORRUPTIONS)} (all = every one)",
                                type=parse_corruptions)
    corruptions_per_video: int = option(1, "distinct corruptions per video, each one pair")
    hallucinations_per_video: int = option(1, f"hallucination-inviting prompts per video (of {len(HALLUCINATION_PROMPTS)})")
    min_distance: float = option(DEFAULT_MIN_DISTANCE, "drop pairs whose responses differ by less than this "
                                                       "normalised word edit distance")
    max_tokens: int = option(768, "max tokens per description")

    def __post_init__(self):
        unknown = [c for c in self.corruptions if c not in CORRUPTIONS]
        if unknown:
            raise UsageError(f"unknown --corruptions {', '.join(unknown)} (known: {', '.join(CORRUPTIONS)})")
        if self.rejected_mode not in ("corrupt", "hallucinate", "both"):
            raise UsageError(f"--rejected_mode must be corrupt, hallucinate or both, got {self.rejected_mode!r}")
        if self.rejected_mode in ("corrupt", "both") and (not self.corruptions or self.corruptions_per_video < 1):
            raise UsageError("--rejected_mode corrupt needs at least one of --corruptions and "
                             "--corruptions_per_video >= 1")
        if self.rejected_mode in ("hallucinate", "both") and self.hallucinations_per_video < 1:
            raise UsageError("--hallucinations_per_video must be >= 1")
        if self.fps is None and (not self.frames or self.frames < 2):
            raise UsageError(f"--frames must be >= 2, got {self.frames}")
        if self.fps is not None and self.fps <= 0:
            raise UsageError(f"--fps must be > 0, got {self.fps}")


def frame_indices_for(frame_count: int, video_fps: float, cfg: Config) -> list[int]:
    if cfg.fps:
        return sample_indices(frame_count, fps=cfg.fps, video_fps=video_fps, max_frames=cfg.max_frames)
    return sample_indices(frame_count, n=cfg.frames)


def sample_video(cfg: Config, ann: NormalAnnotation) -> list[int]:
    """Decode (or find cached) the sampled frames of one normal video; their frame indices."""
    indices = frame_indices_for(ann.frame_count, float(ann.fps), cfg)
    if len(indices) < 2:
        raise ItemError("too few frames", f"{len(indices)} frame(s) sampled")
    cached_frames(cfg.layout.root / ann.video, indices, cfg.layout.frame_dir(ann.id), cfg.jpeg_quality,
                  refresh=cfg.overwrite)
    return indices


# ---------------------------------------------------------------------- per-video plan
@dataclass
class VideoFrames:
    ann: NormalAnnotation
    indices: list[int]
    arrays: list            # model-space frames (resized to --image_max_side)
    images: list            # JPEG bytes of those, as sent


@dataclass
class PairPlan:
    pid: str
    vid: str
    mode: str               # corrupt | hallucinate
    rejected_prompt: str
    corruption: dict
    rejected_frames: list[int]
    images: list            # JPEG bytes for the rejected request


def load_video_frames(layout: Layout, ann: NormalAnnotation, indices: list[int], quality: int,
                      max_side: Optional[int]) -> VideoFrames:
    raw = [layout.frame_file(ann.id, i).read_bytes() for i in indices]
    arrays, images = [], []
    for data in raw:
        img = decode_jpeg(data)
        small = resize_max_side(img, max_side)
        arrays.append(small)
        images.append(data if small is img else encode_jpeg(small, quality))
    return VideoFrames(ann, indices, arrays, images)


def corrupted_images(c: Corrupted, own: VideoFrames, other: Optional[VideoFrames], quality: int) -> list[bytes]:
    """JPEG bytes of a corrupted sequence: input frames reuse their bytes, new pixels are encoded."""
    out = []
    for frame, (s, i) in zip(c.frames, c.sources):
        src = own if s == 0 else other
        if src is not None and frame is src.arrays[i]:
            out.append(src.images[i])
        else:
            out.append(encode_jpeg(frame, quality))
    return out


def plan_pairs(vf: VideoFrames, pool: dict, pool_ids: list[str], cfg: Config, stage: StageRun) -> list[PairPlan]:
    """The rejected side of each pair of one video: which corruptions / prompts (seeded per video), and their images."""
    seed, mode, quality = cfg.seed, cfg.rejected_mode, cfg.jpeg_quality
    vid = vf.ann.id
    plans: list[PairPlan] = []
    if mode in ("corrupt", "both"):
        for name in choose(cfg.corruptions, cfg.corruptions_per_video, seed, f"{vid}/implicit"):
            pid = f"{vid}/implicit/{name}"
            cseed = item_seed(seed, f"{vid}/corrupt/{name}")
            other = None
            params_extra: dict = {}
            if CORRUPTIONS[name].needs_other:
                candidates = [o for o in pool_ids if o != vid]
                if not candidates:
                    stage.reject(pid, "no other video to splice", "the train split has one usable video")
                    continue
                other = pool[random.Random(cseed).choice(candidates)]
            try:
                c = corrupt(name, vf.arrays, cseed, other=other.arrays if other else ())
            except NotApplicable as exc:
                stage.reject(pid, "corruption not applicable", str(exc))
                continue
            if other is not None:
                spliced = [i for s, i in c.sources if s == 1]
                params_extra = {"other_id": other.ann.id, "other_video": other.ann.video,
                                "other_frames": [other.indices[i] for i in spliced]}
            rejected_frames = c.source_indices(vf.indices, other.indices if other else ())
            plans.append(PairPlan(pid, vid, "corrupt", DESCRIBE_PROMPT,
                                  {"name": c.name, "params": {**c.params, **params_extra, "seed": cseed}},
                                  rejected_frames, corrupted_images(c, vf, other, quality)))
    if mode in ("hallucinate", "both"):
        # drawn like the corruptions (a prompt added changes only the videos that draw it), independently
        for key in choose(sorted(HALLUCINATION_PROMPTS), cfg.hallucinations_per_video, seed, f"{vid}/hallucinate"):
            plans.append(PairPlan(f"{vid}/implicit/hallucinate-{key}", vid, "hallucinate", HALLUCINATION_PROMPTS[key],
                                  {"name": "hallucinate", "params": {"prompt_id": key}}, list(vf.indices),
                                  list(vf.images)))
    return plans


# ---------------------------------------------------------------------- the stage
def _load_annotation(layout: Layout, vid: str) -> NormalAnnotation:
    ann = load_normal(layout, vid)
    if not isinstance(ann.frame_count, int) or ann.frame_count <= 0:
        raise ItemError("annotation does not parse", f"{layout.normal_annotation(vid)}: frame_count {ann.frame_count!r}")
    return ann


def run(cfg: Config, client, executor: Executor = LOCAL) -> dict:
    """Write pref/pref_implicit.jsonl. ``client`` is a ``timewarp.text.llm.ChatClient`` on a vision endpoint."""
    if client is None:
        raise UsageError(NEEDS_ENDPOINT)
    layout = cfg.layout
    require_root(layout.root, "--root_dir")
    ids = require_normal_ids(layout)
    stage = StageRun(STAGE, layout, {**cfg.options(), "llm_base_url": client.base_url, "llm_model": client.model})

    anns: dict[str, NormalAnnotation] = {}
    for vid in ids:
        try:
            ann = _load_annotation(layout, vid)
        except ItemError as exc:
            stage.reject(vid, exc.reason, exc.detail)
            continue
        if ann.split != "train":
            stage.counts["test split (held out)"] += 1
            continue
        anns[vid] = ann
    train_ids = sorted(anns)[:cfg.limit] if cfg.limit else sorted(anns)
    if not train_ids:
        raise UsageError(f"no train-split videos in {layout.normal_annotations_dir} (the implicit pairs are "
                         f"training data; test videos are held out for the benchmarks)")

    # 1. frames: one decode pass per video, cached as JPEGs (process pool)
    results = pmap(partial(sample_video, cfg), [anns[v] for v in train_ids], executor, desc=f"{STAGE}: frames")
    indices: dict[str, list[int]] = dict(stage.succeeded(train_ids, results))
    ok_ids = sorted(indices)
    stage.counts["videos with frames"] = len(ok_ids)

    # 2. model requests, a batch of videos at a time (bounded memory); splice partners from the whole pool
    records: list[dict] = []
    checked_server = False
    for batch in chunked(ok_ids, BATCH_VIDEOS):
        pool = _LazyPool(lambda v: load_video_frames(layout, anns[v], indices[v], cfg.jpeg_quality,
                                                     cfg.image_max_side or None))
        plans: list[PairPlan] = []
        chosen_req = {}
        for vid in batch:
            vf = pool[vid]
            chosen_req[vid] = build_request(DESCRIBE_PROMPT, vf.images, cfg.max_tokens)
            plans += plan_pairs(vf, pool, ok_ids, cfg, stage)
        requests = [chosen_req[v] for v in batch] + [build_request(p.rejected_prompt, p.images, cfg.max_tokens)
                                                     for p in plans]
        replies = client.map([(r, validate_description) for r in requests], desc=f"{STAGE}: model")
        if not checked_server:
            checked_server = True
            errors = [r for r in replies if isinstance(r, LLMError)]
            if errors and len(errors) == len(replies) and all(e.reason.startswith("client error") for e in errors):
                raise UsageError(f"the model server refused every request ({errors[0].reason}: {errors[0].detail}); "
                                 f"does {client.model} accept images? Serve a vision model (e.g. Qwen2.5-VL)")
        chosen = dict(zip(batch, replies[:len(batch)]))
        for vid, rep in chosen.items():
            if isinstance(rep, LLMError):
                stage.reject(vid, f"model reply failed ({rep.reason})", f"chosen: {rep.detail}")
        for plan, rep in zip(plans, replies[len(batch):]):
            c = chosen[plan.vid]
            if isinstance(c, LLMError):
                stage.reject(plan.pid, "no chosen response", c.reason)
                continue
            if isinstance(rep, LLMError):
                stage.reject(plan.pid, f"model reply failed ({rep.reason})", f"rejected: {rep.detail}")
                continue
            dist = round(text_distance(c, rep), 4)
            if dist < cfg.min_distance:
                stage.reject(plan.pid, "near-identical responses", f"distance {dist:.4f} < {cfg.min_distance:g}")
                continue
            ann = anns[plan.vid]
            rec = ImplicitPrefRecord(
                pid=plan.pid, id=plan.vid, split=ann.split, video=ann.video, prompt=DESCRIBE_PROMPT, chosen=c,
                rejected=rep, rejected_mode=plan.mode, rejected_prompt=plan.rejected_prompt,
                corruption=plan.corruption, frames=list(indices[plan.vid]), rejected_frames=plan.rejected_frames,
                distance=dist, model=client.model)
            records.append(rec.to_dict())
            stage.counts[f"pairs: {plan.corruption['name']}"] += 1
        pool.clear()

    records.sort(key=lambda r: r["pid"])
    write_jsonl(layout.pref_implicit_file, records)
    stage.extra["llm_usage"] = client.usage
    stage.extra["output"] = layout.rel(layout.pref_implicit_file)
    return stage.finish(len(train_ids), len({r["id"] for r in records}),
                        f"{len(records)} implicit pairs from {len({r['id'] for r in records})} of {len(train_ids)} "
                        f"train videos in {layout.pref_implicit_file}")


class _LazyPool(dict):
    """A mapping id -> VideoFrames that loads on first access (splice partners outside the batch)."""

    def __init__(self, load):
        super().__init__()
        self._load = load

    def __missing__(self, key):
        value = self._load(key)
        self[key] = value
        return value


# ---------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="generate_pref_implicit.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root_dir", required=True, help="output root_dir of preprocess.py")
    Config.add_arguments(p, "frames and pairs")
    add_llm_args(p)
    # this stage needs an endpoint named on purpose: no silent default to a hosted API; an endpoint alone
    # (--llm_base_url or $OPENAI_BASE_URL) means the openai backend, the only one this stage has
    p.set_defaults(llm_base_url=os.environ.get("OPENAI_BASE_URL") or None, backend=None)
    for action in p._actions:  # add_llm_args' help speaks for the text stages (default template): say what holds here
        if action.dest == "backend":
            action.help = "openai, implied by an endpoint (this stage has no template backend; template is refused)"
    add_common_args(p, overwrite_help="decode the sampled frames again (default: reuse the frames/ cache)")
    return p


def run_from_args(args: argparse.Namespace):
    if args.backend == "template" or not args.llm_base_url:
        raise UsageError(NEEDS_ENDPOINT)
    cfg = Config.from_args(args)
    client = client_from_args(argparse.Namespace(**{**vars(args), "backend": "openai"}), cfg.layout)
    return run(cfg, client, executor_from_args(args))


def main(argv: Optional[list] = None) -> int:
    return cli(run_from_args, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
