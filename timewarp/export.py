"""Export the generated data in the formats trainers and evaluators load unchanged.

  python timewarp/export.py --root_dir <out> --format <name>[,<name>...|all] [--frames N | --fps R] [--video_root DIR]

Each format is written the way its consumer's own loader reads it (tests/test_export_consumers.py runs
or re-states that loader). Formats (files under <out>/exports/<format>/, one per source file):
{FORMAT_LIST}

{VIDEO_ROOTS}
--frames N samples N frames uniformly per video (--fps R: R frames per second, at most --max_frames),
decoded in one sequential pass (timewarp.media.frames), written to exports/frames/<n8|fps1>/<video path>/
as 00001.jpg, 00002.jpg, ... in time order (MVBench opens exactly these names; the other readers sort
the folder), with the source frame indices in <folder>.frames.json beside it (never inside: readers
take every file in the folder). Rows whose video (or frames) are missing are rejected
(rejects/export.jsonl), and every exported answer is the source record's answer, unchanged.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import textwrap
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Optional

from timewarp.media import frames as framelib
from timewarp.core.errors import ItemError, UsageError
from timewarp.core.layout import Layout
from timewarp.core.parallel import LOCAL, Executor, pmap
from timewarp.core.stage import (StageConfig, StageRun, add_common_args, add_shuffled_dir_args, cli, executor_from_args,
                            log, option, require_root)
from timewarp.core.store import atomic_path, read_json, read_jsonl, write_json, write_jsonl
from timewarp.text.temporal import LETTERS
from timewarp.text.trl_messages import assistant_message, user_message

STAGE = "export"
DEFAULT_FRAMES = 8          # the method trains on 8 frames per video
FOLDER_FPS = 3.0            # VideoLLaMA3 (mm_utils.py load_video_from_ids) and MVBench (read_frame) read a frame folder as 3 fps


@dataclass(frozen=True)
class Sampling:
    n: Optional[int] = None
    fps: Optional[float] = None
    max_frames: Optional[int] = None

    @property
    def name(self) -> str:
        if self.n:
            return f"n{self.n}"
        rate = f"{self.fps:g}".replace(".", "p")
        return f"fps{rate}" + (f"_max{self.max_frames}" if self.max_frames else "")


# ---------------------------------------------------------------- sources

def pref_sources(layout: Layout) -> list[Path]:
    names = ("pref_explicit_file", "pref_implicit_file", "pref_combined_file")
    return [p for p in (getattr(layout, n, None) for n in names) if p is not None and p.is_file()]


def sft_sources(layout: Layout) -> list[Path]:
    return [p for p in (layout.sft_explicit_file,) if p.is_file()]


def benchmark_sources(layout: Layout) -> list[Path]:
    return [p for p in (layout.benchmark_normal_file, layout.benchmark_shuffled_file) if p.is_file()]


REQUIRED = {
    "pref": ("video", "question", "chosen", "rejected"),
    "sft": ("video", "question", "answer"),
    "benchmark": ("qid", "video", "question", "options", "answer_index"),
}


def normalize(row: dict) -> dict:
    """Implicit / combined preference rows call the question ``prompt``."""
    if "question" not in row and isinstance(row.get("prompt"), str):
        row = {**row, "question": row["prompt"]}
    return row


def row_id(row: dict) -> str:
    return str(row.get("pid") or row.get("qid") or row.get("id") or "?")


# ---------------------------------------------------------------- media (video file or frames)

@dataclass
class Media:
    video: str                  # path as written (absolute, or relative to --video_root)
    frame_dir: Optional[str]    # the frame folder as written, when sampling
    frames: list                # frame files as written, when sampling (in time order)
    times: list                 # each frame's time in the video, seconds


class Paths:
    def __init__(self, video_root: Optional[Path]):
        self.video_root = Path(video_root).resolve() if video_root else None

    def __call__(self, path: Path) -> str:
        path = Path(path).resolve()
        if self.video_root is None:
            return path.as_posix()
        return Path(os.path.relpath(path, self.video_root)).as_posix()


def video_facts(layout: Layout) -> dict:
    """video path (relative to root) -> (frame_count, fps), from the normal and shuffled annotations."""
    facts = {}
    for d in (layout.normal_annotations_dir, layout.shuffled_annotations_dir):
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.json")):
            try:
                a = read_json(p)
                facts[a["video"]] = (int(a["frame_count"]), float(a["fps"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return facts


def export_frame_name(position: int) -> str:
    """The k-th sampled frame (0-based) is ``{k+1:05d}.jpg``: MVBench's read_frame opens exactly 00001.jpg ...
    0000N.jpg, and the readers that sort the folder (LLaVA-Hound, VideoLLaMA3) get time order."""
    return f"{int(position) + 1:05d}.jpg"


def frame_manifest(folder: Path) -> Path:
    """Beside the frame folder, never in it: the consumers read every file of the folder as a frame."""
    return folder.with_name(folder.name + ".frames.json")


@dataclass(frozen=True)
class FrameFolder:
    """One video's sampled frames as written: the video, the folder, its files in time order, each frame's time (s)."""

    video: str
    dir: Path
    files: list
    times: list


def sample_video(cfg: "Config", sampling: Sampling, item: tuple) -> FrameFolder:
    """Frames of one video into its export folder (skipped when the manifest says it holds exactly them)."""
    rel, facts = item
    if facts is None:
        raise ItemError("video has no annotation", rel)
    frame_count, fps = facts
    idx = framelib.sample_indices(frame_count, n=sampling.n, fps=sampling.fps, video_fps=fps,
                                  max_frames=sampling.max_frames)
    if not idx:
        raise ItemError("video has no frames", rel)
    try:
        out = cfg.layout.export_frame_dir(sampling.name, rel)
    except ValueError as exc:
        raise ItemError("video path outside the output folder", str(exc))
    want = [out / export_frame_name(k) for k in range(len(idx))]
    try:
        stamp = {"video": rel, **framelib.video_stamp(cfg.layout.root / rel), "indices": idx, "fps": fps}
        try:
            manifest = read_json(frame_manifest(out))
        except (OSError, ValueError):
            manifest = None
        have = sorted(out.iterdir()) if out.is_dir() else []
        if cfg.overwrite or manifest != stamp or have != want:
            frame_manifest(out).unlink(missing_ok=True)  # no manifest = not complete, even if a run dies here
            for extra in have:
                if extra not in want:
                    extra.unlink()
            for path, frame in zip(want, framelib.extract_frames(cfg.layout.root / rel, idx)):
                with atomic_path(path) as tmp:
                    tmp.write_bytes(framelib.encode_jpeg(frame))
            write_json(frame_manifest(out), stamp)
    except OSError as exc:
        raise ItemError("frames not written", f"{rel}: {exc}") from None
    return FrameFolder(rel, out, want, [round(i / fps, 6) for i in idx])


# ---------------------------------------------------------------- record builders (row, media) -> dict

def trl_dpo(row: dict, m: Media) -> dict:
    """TRL's vision preference form (trl/trainer/dpo_trainer.py DataCollatorForVisionPreference): one image
    block per frame."""
    return {"id": row_id(row), "video": m.video, "frame_times": m.times, "images": m.frames,
            "prompt": user_message(len(m.frames), row["question"]),
            "chosen": assistant_message(row["chosen"]), "rejected": assistant_message(row["rejected"])}


def _one_video(m: Media) -> list:
    """The "videos" list of LLaMA-Factory and ms-swift: one video, the mp4 or its frames as one list (both read
    a list of frame files as one video, so a model with a video path gets a video, not N unrelated images)."""
    return [m.frames] if m.frames else [m.video]


def llamafactory_pref(row: dict, m: Media) -> dict:
    return {"conversations": [{"from": "human", "value": "<video>" + row["question"]}],
            "chosen": {"from": "gpt", "value": row["chosen"]},
            "rejected": {"from": "gpt", "value": row["rejected"]}, "videos": _one_video(m)}


def llamafactory_sft(row: dict, m: Media) -> dict:
    return {"conversations": [{"from": "human", "value": "<video>" + row["question"]},
                              {"from": "gpt", "value": row["answer"]}], "videos": _one_video(m)}


def llava_hound_dpo(row: dict, m: Media) -> dict:
    return {"id": row_id(row), "video": m.frame_dir or m.video, "prompt": row["question"], "answer": row["chosen"],
            "chosen": row["chosen"], "rejected": row["rejected"], "chosen_score": 5.0, "rejected_score": 1.0}


def ms_swift(row: dict, m: Media) -> dict:
    return {"messages": [{"role": "user", "content": "<video>" + row["question"]},
                         {"role": "assistant", "content": row["chosen"]}],
            "rejected_response": row["rejected"], "videos": _one_video(m)}


def _conversation(row: dict, token: str = "<video>") -> list:
    return [{"from": "human", "value": f"{token}\n" + row["question"]}, {"from": "gpt", "value": row["answer"]}]


def llava_next_video_sft(row: dict, m: Media) -> dict:
    """LLaVA-NeXT llava/train/train.py: "video" is decoded by process_video_with_decord, the prompt knows only
    DEFAULT_IMAGE_TOKEN "<image>" (preprocess_multimodal)."""
    return {"id": row_id(row), "video": m.video, "conversations": _conversation(row, "<image>")}


def llava_hound_sft(row: dict, m: Media) -> dict:
    """LLaVA-Hound llava/train/train.py: "video" joined to --video_folder, "<video>" token; its video processor
    (languagebind/video/processing_video.py, backend 'frames') reads a frame folder."""
    return {"id": row_id(row), "video": m.frame_dir, "conversations": _conversation(row, "<video>")}


def videollama3_sft(row: dict, m: Media) -> dict:
    return {"video": [m.frame_dir or m.video], "conversations": _conversation(row)}


def mvbench(row: dict, m: Media) -> dict:
    opts = list(row["options"])
    key = int(row["answer_index"])
    return {"video": m.frame_dir or m.video, "question": row["question"], "candidates": opts, "answer": opts[key],
            "qid": row["qid"], "video_id": row.get("video_id", row.get("id", "")), "kind": row.get("kind", ""),
            "answer_letter": LETTERS[key], "key_changed": bool(row.get("key_changed", False)),
            "normal_answer": row.get("normal_answer", "")}


@dataclass(frozen=True)
class Part:
    source: str                         # pref | sft | benchmark
    build: Callable[[dict, Media], dict]
    suffix: str                         # .jsonl (one record a line) or .json (one array)
    prefix: str = ""


# Media rules: the frames a format gets for the sampling asked (None asked or returned = the mp4).
def any_media(asked: Optional[Sampling]) -> Optional[Sampling]:
    return asked


def frames_always(asked: Optional[Sampling]) -> Optional[Sampling]:
    return asked or Sampling(n=DEFAULT_FRAMES)


def mp4_always(asked: Optional[Sampling]) -> Optional[Sampling]:
    return None


def folder_at_3fps(asked: Optional[Sampling]) -> Optional[Sampling]:
    return Sampling(fps=FOLDER_FPS) if asked is not None else None


def llamafactory_index(written: list) -> tuple[str, dict]:
    """dataset_info.json: one entry ``timewarp_<source>`` per file written."""
    return "dataset_info.json", dict(sorted((f"{part.prefix}{src.stem}", llamafactory_entry(out.name, part.source))
                                            for part, src, out in written))


@dataclass(frozen=True)
class Format:
    """One export format, whole: adding a format is adding one record to FORMATS (the docstring, --help,
    --format all, the media rules and the index files follow from the records)."""

    name: str
    parts: tuple                        # (Part, ...): what it reads, how a record is built, where it goes
    about: str                          # consumer and record shape (the docstring's list)
    media: Callable[[Optional[Sampling]], Optional[Sampling]] = any_media
    why: str = ""                       # why the media rule differs from the sampling asked (logged when it does)
    video_root: str = ""                # how its consumer is told --video_root DIR
    needs: str = ""                     # a setting its consumer needs even with absolute paths
    index: Optional[Callable[[list], tuple[str, dict]]] = None   # [(part, source, output)] -> (file name, content)


FORMATS: dict[str, Format] = {f.name: f for f in [
    Format("trl_dpo", (Part("pref", trl_dpo, ".jsonl"),),
           'TRL DPOTrainer, conversational vision form: {"id", "video", "frame_times", "images": [frame paths], '
           '"prompt": [{"role": "user", "content": [{"type": "image"} x frames, {"type": "text", "text": '
           'question}]}], "chosen": [{"role": "assistant", "content": [{"type": "text", ...}]}], "rejected": [...]}.',
           frames_always, "TRL has no video input: the video goes in as frames (default 8)",
           "TRL: load the rows with the working directory DIR (or join DIR to \"images\" yourself)"),
    Format("llamafactory", (Part("pref", llamafactory_pref, ".json", "timewarp_"),
                            Part("sft", llamafactory_sft, ".json", "timewarp_")),
           'LLaMA-Factory sharegpt ranking records {"conversations": [{"from": "human", "value": "<video>..."}], '
           '"chosen": {"from": "gpt", ...}, "rejected": {...}, "videos": [mp4]}, the SFT records, and '
           "dataset_info.json (entries timewarp_<source>; set dataset_dir to this folder). With frames: "
           '"videos": [[frame, ...]], the frames as one video (one "<video>").',
           video_root="LLaMA-Factory media_dir: DIR", index=llamafactory_index),
    Format("llava_hound_dpo", (Part("pref", llava_hound_dpo, ".jsonl"),),
           "LLaVA-Hound-DPO JSONL {id, video, prompt, answer, chosen, rejected, chosen_score, rejected_score}; "
           "video = a folder of sampled frames; chosen is right by construction: scores 5.0 / 1.0 on the 1-5 scale.",
           frames_always, "LLaVA-Hound reads frame folders (default 8 frames)",
           "LLaVA-Hound --video_folder DIR",
           "--video_folder even with absolute paths (any folder, e.g. /): its dataset retries random rows "
           "in an endless loop without it"),
    Format("ms_swift", (Part("pref", ms_swift, ".jsonl"),),
           'ms-swift DPO/RLHF JSONL {"messages": [user "<video>...", assistant chosen], "rejected_response": ..., '
           '"videos": [mp4]} (with frames: "videos": [[frame, ...]], one video).',
           video_root="ms-swift ROOT_IMAGE_DIR=DIR (environment)"),
    Format("llava_next_video_sft", (Part("sft", llava_next_video_sft, ".json"),),
           'LLaVA-NeXT(-Video) SFT JSON array {"id", "video": mp4, "conversations": [{"from": "human", "value": '
           '"<image>\\n..."}, {"from": "gpt", ...}]}: LLaVA-NeXT knows only <image> and decodes the mp4 itself.',
           mp4_always, "LLaVA-NeXT decodes the mp4 itself and reads a frame folder only for its own data",
           "LLaVA-NeXT --video_folder DIR",
           "--video_folder even with absolute paths (any folder, e.g. /): its train.py joins it to \"video\" and "
           "fails without it"),
    Format("llava_hound_sft", (Part("sft", llava_hound_sft, ".json"),),
           'Video-LLaVA / LLaVA-Hound SFT JSON array {"id", "video": frame folder, "conversations": [{"from": '
           '"human", "value": "<video>\\n..."}, ...]}.',
           frames_always, "LLaVA-Hound reads frame folders (default 8 frames)",
           "LLaVA-Hound --video_folder DIR",
           "--video_folder even with absolute paths (any folder, e.g. /): its dataset retries random rows "
           "in an endless loop without it"),
    Format("videollama3_sft", (Part("sft", videollama3_sft, ".jsonl"),),
           'VideoLLaMA3 SFT JSONL {"video": [path], "conversations": [...]}: the mp4 by default; with '
           "--frames/--fps a folder sampled at exactly 3 fps, the rate VideoLLaMA3 assumes for a frame folder "
           "(so its timestamps are the frames' real times).",
           folder_at_3fps, "VideoLLaMA3 reads a frame folder as 3 fps; another rate would give it wrong times",
           "VideoLLaMA3 --data_folder DIR",
           "--data_folder even with absolute paths (any folder, e.g. /): its dataset retries random rows "
           "in an endless loop without it"),
    Format("mvbench", (Part("benchmark", mvbench, ".json"),),
           'the benchmarks MVBench-style: a JSON array per benchmark of {"video", "question", "candidates", '
           '"answer" (the correct candidate\'s text)} plus qid, kind, answer_letter, key_changed, normal_answer '
           "(what evaluate.py needs); the mp4 by default, with --frames/--fps a folder sampled at exactly 3 fps.",
           folder_at_3fps, "MVBench's frame reader (Ask-Anything read_frame) and VideoLLaMA3's MVBench evaluator "
           "read a frame folder as 3 fps",
           "MVBench the data_list prefix DIR"),
]}
SOURCES = {"pref": pref_sources, "sft": sft_sources, "benchmark": benchmark_sources}
SOURCE_FILES = {"pref": "pref/*.jsonl", "sft": "sft/*.jsonl", "benchmark": "benchmark/*.jsonl"}
RENAMED = {"llava_sft": "llava_next_video_sft (LLaVA-NeXT-Video: <image> + mp4) or llava_hound_sft "
                        "(Video-LLaVA / LLaVA-Hound: <video> + frame folder)"}


def llamafactory_entry(file_name: str, source: str) -> dict:
    media = {"videos": "videos"}
    if source == "pref":
        return {"file_name": file_name, "formatting": "sharegpt", "ranking": True,
                "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", **media}}
    return {"file_name": file_name, "formatting": "sharegpt", "columns": {"messages": "conversations", **media}}


def format_list() -> str:
    """The docstring's list of formats, from the records."""
    lines = []
    for f in FORMATS.values():
        sources = ", ".join(dict.fromkeys(SOURCE_FILES[p.source] for p in f.parts))
        text = f"{f.about} Source: {sources}." + (f" Needs {f.needs}." if f.needs else "")
        lines.append(textwrap.fill(text, width=110, initial_indent=f"  {f.name:<16} ", subsequent_indent=" " * 19))
    return "\n".join(lines)


def video_roots() -> str:
    return textwrap.fill("Video paths: absolute by default; with --video_root DIR, relative to DIR, and the consumer "
                         "must be told DIR: " + "; ".join(dict.fromkeys(f.video_root for f in FORMATS.values() if f.video_root))
                         + ".", width=104)


if __doc__:  # (None under python -OO)
    __doc__ = __doc__.replace("{FORMAT_LIST}", format_list()).replace("{VIDEO_ROOTS}", video_roots())


# ---------------------------------------------------------------- run

def parse_formats(text: str) -> list[str]:
    names = [f.strip() for f in (text or "").split(",") if f.strip()]
    if names == ["all"]:
        return list(FORMATS)
    for old in names:
        if old in RENAMED:
            raise UsageError(f"--format {old} is now {RENAMED[old]}")
    bad = [f for f in names if f not in FORMATS]
    if bad or not names:
        raise UsageError(f"--format: unknown {', '.join(bad) or '(none)'} (choose from {', '.join(FORMATS)}, or all)")
    return names


def sampling_for(fmt: str, sampling: Optional[Sampling]) -> Optional[Sampling]:
    """The frames format ``fmt`` gets for the asked sampling (None = the mp4)."""
    return FORMATS[fmt].media(sampling)


VIDEO_ROOT_HELP = ("write video/frame paths relative to this folder (none: absolute paths); then tell the consumer "
                   "the same folder: " + "; ".join(dict.fromkeys(f.video_root for f in FORMATS.values() if f.video_root)))


@dataclass(frozen=True, kw_only=True)
class Config(StageConfig):
    format: str = option(help=f"one or more of {', '.join(FORMATS)} (comma-separated), or all")
    frames: Optional[int] = option(None, "sample N frames per video (uniform) and export frames", type=int)
    fps: Optional[float] = option(None, "sample R frames per second and export frames (not with --frames)", type=float)
    max_frames: Optional[int] = option(None, "with --fps: at most this many frames per video", type=int)
    video_root: Optional[str] = option(None, VIDEO_ROOT_HELP)

    def options(self) -> dict:
        """What stats/export.json records: no seed (nothing here is random; --seed is not offered, and a seed
        recorded here would show in publish.py's card as one the data was made with)."""
        return {k: v for k, v in super().options().items() if k != "seed"}

    def __post_init__(self):
        self.sampling()  # checks --frames / --fps / --max_frames

    def sampling(self) -> Optional[Sampling]:
        """The frames asked for (None = the mp4), checked."""
        if self.frames is not None and self.fps is not None:
            raise UsageError("give --frames N or --fps R, not both")
        if self.frames is not None and self.frames < 1:
            raise UsageError(f"--frames must be >= 1, got {self.frames}")
        if self.fps is not None and not self.fps > 0:
            raise UsageError(f"--fps must be > 0, got {self.fps}")
        if self.max_frames is not None and self.fps is None:
            raise UsageError("--max_frames caps --fps sampling: give --fps R with it")
        if self.frames:
            return Sampling(n=self.frames)
        return Sampling(fps=self.fps, max_frames=self.max_frames) if self.fps else None


def frame_folders(cfg: Config, sampling: Optional[Sampling], formats: list, plan: list, rows_of: dict,
                  stage: StageRun, executor: Executor) -> dict:
    """(sampling, video) -> FrameFolder for every video a sampled format names, each written once; a video
    whose frames fail is a reject (``frames <sampling>:<video>``) and has no entry."""
    facts = None
    media_of: dict[tuple, FrameFolder] = {}
    for samp in sorted({s for s in (sampling_for(f, sampling) for f in formats) if s is not None}, key=lambda s: s.name):
        videos = sorted({r.get("video") for fmt, part, src in plan if sampling_for(fmt, sampling) == samp
                         for r in rows_of[src] if isinstance(r.get("video"), str)})
        facts = video_facts(cfg.layout) if facts is None else facts
        items = [(rel, facts.get(rel)) for rel in videos if (cfg.layout.root / rel).is_file()]  # else: rows say "video missing"
        results = pmap(partial(sample_video, cfg, samp), items, executor, desc=f"{STAGE} frames {samp.name}")
        for _, folder in stage.succeeded([f"frames {samp.name}:{rel}" for rel, _ in items], results,
                                         [rel for rel, _ in items]):
            media_of[(samp, folder.video)] = folder
        stage.counts[f"frame folders {samp.name}"] += sum(1 for k in media_of if k[0] == samp)
    return media_of


def run(cfg: Config, executor: Executor = LOCAL) -> dict:
    layout = cfg.layout
    root = require_root(layout.root, "--root_dir")
    layout.check_inside(layout.export_frames_dir)  # stale frames in it are removed
    formats = parse_formats(cfg.format)
    sampling = cfg.sampling()
    if cfg.video_root is not None and not Path(cfg.video_root).is_dir():
        raise UsageError(f"--video_root {cfg.video_root} is not a directory")
    paths = Paths(cfg.video_root)
    for fmt in formats:
        if sampling is not None and sampling_for(fmt, sampling) != sampling:
            got = sampling_for(fmt, sampling)
            log.info("%s: %s instead of frames %s (%s)", fmt, "the mp4" if got is None else f"frames {got.name}",
                     sampling.name, FORMATS[fmt].why or "its consumer's rule")
    stage = StageRun(STAGE, layout, cfg.options())
    # what each format reads
    plan = []
    for fmt in formats:
        for part in FORMATS[fmt].parts:
            for src in SOURCES[part.source](layout):
                plan.append((fmt, part, src))
    if not plan:
        raise UsageError(f"nothing to export for {', '.join(formats)} in {root}: run ./generate_data.sh {root} first "
                         f"(no sft/, pref/ or benchmark/ files)")
    rows_of: dict[Path, list] = {}
    for _, part, src in plan:
        if src not in rows_of:
            try:
                rows = read_jsonl(src)
            except (OSError, ValueError) as exc:
                raise UsageError(f"{src} does not parse ({exc}): rerun the stage that writes it")
            rows_of[src] = rows[:cfg.limit] if cfg.limit else rows
    media_of = frame_folders(cfg, sampling, formats, plan, rows_of, stage, executor)
    written = []
    index_parts = collections.defaultdict(list)
    total_in = total_out = 0
    for fmt, part, src in plan:
        samp = sampling_for(fmt, sampling)
        out_rows = []
        for row in rows_of[src]:
            row = normalize(row)
            total_in += 1
            rid = f"{fmt}:{src.stem}:{row_id(row)}"
            missing = [k for k in REQUIRED[part.source] if k not in row]
            if missing:
                stage.reject(rid, "record lacks a field", f"{', '.join(missing)} missing in {src.name}")
                continue
            vpath = Path(row["video"]) if Path(row["video"]).is_absolute() else root / row["video"]
            if not vpath.is_file():
                stage.reject(rid, "video missing", str(vpath), str(src))
                continue
            if samp is None:
                media = Media(paths(vpath), None, [], [])
            else:
                fr = media_of.get((samp, row["video"]))
                if fr is None:
                    stage.reject(rid, "no frames", f"{row['video']} (see the frames {samp.name} reject)", str(src))
                    continue
                media = Media(paths(vpath), paths(fr.dir), [paths(f) for f in fr.files], fr.times)
            out_rows.append(part.build(row, media))
        out = layout.export_dir(fmt) / f"{part.prefix}{src.stem}{part.suffix}"
        if part.suffix == ".json":
            write_json(out, out_rows)
        else:
            write_jsonl(out, out_rows)
        total_out += len(out_rows)
        stage.counts[f"{fmt} records"] += len(out_rows)
        written.append(out)
        index_parts[fmt].append((part, src, out))
    for fmt, parts in index_parts.items():
        if FORMATS[fmt].index is not None:
            name, content = FORMATS[fmt].index(parts)
            write_json(layout.export_dir(fmt) / name, content)
            written.append(layout.export_dir(fmt) / name)
    stage.extra["files"] = [layout.rel(p) for p in written]
    return stage.finish(total_in, total_out, f"{total_out} records in {len(written)} files under {layout.exports_dir}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="export.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root_dir", required=True, help="output root_dir of setup_dataset.sh + generate_data.sh")
    Config.add_arguments(p)
    add_shuffled_dir_args(p)
    add_common_args(p, seed=False, overwrite_help="decode every frame folder again (default: keep a folder whose "
                                                   "manifest says it holds these frames of this very video)")
    return p


def main(argv: Optional[list] = None) -> int:
    return cli(lambda a: run(Config.from_args(a), executor_from_args(a)) and 0, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
