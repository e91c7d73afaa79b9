"""Training and inference examples from TimeWarp's files, as TRL's vision formats want them.

DPO example (TRL's vision preference format, what ``export.py --format trl_dpo`` writes)::

    {"images": [frame paths], "prompt": [{"role": "user", "content": [{"type": "image"} x N,
     {"type": "text", "text": q}]}], "chosen": [{"role": "assistant", "content": [{"type": "text", ...}]}],
     "rejected": [...], "id": ...}

SFT example (TRL prompt-completion, loss on the completion only)::

    {"images": [...], "prompt": [user message as above], "completion": [assistant message], "id": ...}

Rows are read from any of:
* the TRL export itself (``images`` relative to the file's folder, to ``--root_dir``, or absolute; a
  row with ``videos`` instead, the mp4 form, gets frames sampled from its video like the rows below);
* TimeWarp's own rows (``pref/*.jsonl``: video, question|prompt, chosen, rejected; ``sft/*.jsonl``:
  video, question, answer): ``frames_per_video`` frames are sampled uniformly with timewarp.media.frames and
  cached as JPEGs under ``<root>/frames/<video path without .mp4>/`` (the frame cache);
* an external set with a ``video`` field naming a frame folder (LLaVA-Hound's DPO set: id, video,
  prompt, chosen, rejected) or a video file, resolved against ``--external_root``.

A row that cannot be used (missing field, missing frames, image blocks not matching images) is skipped
with one log line naming the file, the line and what is wrong.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import cv2

from timewarp.media import frames as framelib
from timewarp.core.errors import ItemError, UsageError
from timewarp.text.trl_messages import assistant_message, user_message
from timewarp.core.store import parse_json_rows

log = logging.getLogger("timewarp.train")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_FRAMES = 8


@dataclass
class FrameSource:
    """Where relative paths resolve (in order) and where frames sampled from videos are cached."""

    bases: Sequence[Path]
    cache_dir: Path
    frames_per_video: int = DEFAULT_FRAMES
    root: Optional[Path] = None   # videos inside it are cached by their path under it (normal/ and shuffled/ differ)

    def resolve(self, path: str) -> Path:
        p = Path(path)
        if p.is_absolute():
            return p
        for base in self.bases:
            if (Path(base) / p).exists():
                return Path(base) / p
        raise ItemError("file missing", f"{path} (looked in {', '.join(str(b) for b in self.bases)})")

    def frames_of_video(self, video: str) -> list[Path]:
        """Frame files of a frame folder (N of them, uniformly) or of a video file (sampled, cached)."""
        path = self.resolve(video)
        n = self.frames_per_video
        if path.is_dir():
            files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ItemError("no frames", f"frame folder {path} holds no .jpg/.png")
            return [files[i] for i in framelib.sample_indices(len(files), n=n)]
        count = video_frame_count(path)
        idx = framelib.sample_indices(count, n=n)
        if not idx:
            raise ItemError("video has no frames", str(path))
        out = self.cache_dir / self._cache_key(path)
        framelib.cached_frames(path, idx, out)
        return [out / framelib.frame_name(i) for i in idx]


    def _cache_key(self, path: Path) -> Path:
        full = path.resolve()
        if self.root is not None:
            try:
                return full.relative_to(Path(self.root).resolve()).with_suffix("")
            except ValueError:
                pass
        return Path("external") / f"{path.stem}-{hashlib.sha1(str(full).encode()).hexdigest()[:10]}"


def video_frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ItemError("video does not open", str(path))
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


def _as_messages(value, role: str, n_images: int = 0) -> list:
    if isinstance(value, str):
        if not value.strip():
            raise ItemError("empty text", role)
        return user_message(n_images, value) if role == "user" else assistant_message(value)
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        return [{"role": m["role"], "content": ([{"type": "text", "text": m["content"]}]
                                                if isinstance(m.get("content"), str) else m.get("content"))}
                for m in value]
    raise ItemError("bad message", f"{role} is neither text nor a list of messages")


def _count_image_blocks(messages: list) -> int:
    return sum(1 for m in messages for c in (m.get("content") or []) if isinstance(c, dict) and c.get("type") == "image")


def _text_blocks_only(messages: list) -> list:
    """Message content as [{"type", "text"}] dicts, the same keys in every block (one Arrow struct)."""
    return [{"role": m["role"], "content": [{"type": c.get("type"), "text": c.get("text")} for c in m["content"]]}
            for m in messages]


def _plain_text(value) -> Optional[str]:
    """A question as text: a string, or the text blocks of the (first) user message of a message list."""
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, list):
        for m in value:
            if isinstance(m, dict) and m.get("role") == "user":
                c = m.get("content")
                text = c if isinstance(c, str) else "".join(b.get("text") or "" for b in c or [] if isinstance(b, dict))
                return text if text.strip() else None
    return None


def _images_and_prompt(row: dict, src: FrameSource, question_keys: Sequence[str]) -> tuple[list, list]:
    if "images" in row:
        images = row["images"]
        if not isinstance(images, list) or not images:
            raise ItemError("bad images", "images must be a non-empty list of paths")
        paths = [src.resolve(str(p)) for p in images]
        prompt_value = next((row[k] for k in question_keys if k in row), None)
        if prompt_value is None:
            raise ItemError("record lacks a field", "prompt")
        prompt = _as_messages(prompt_value, "user", len(paths))
    elif row.get("video") or row.get("videos"):
        # a video file or frame folder: TimeWarp's rows, LLaVA-Hound's, or TRL rows with "videos" (mp4 form)
        question = next((_plain_text(row[k]) for k in question_keys if _plain_text(row.get(k))), None)
        if question is None:
            raise ItemError("record lacks a field", "/".join(question_keys))
        video = row.get("video") or row.get("videos")
        video = video[0] if isinstance(video, list) else video
        paths = src.frames_of_video(str(video))
        prompt = user_message(len(paths), question)
    else:
        raise ItemError("record lacks a field", "images, video or videos")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise ItemError("frame missing", str(missing[0]))
    if _count_image_blocks(prompt) != len(paths):
        raise ItemError("image blocks do not match images",
                        f"{_count_image_blocks(prompt)} image blocks in the prompt, {len(paths)} images")
    return [str(p) for p in paths], prompt


def pref_example(row: dict, src: FrameSource) -> dict:
    """A DPO example from a TRL vision row, a TimeWarp pref row or an external (LLaVA-Hound) row."""
    for k in ("chosen", "rejected"):
        if k not in row:
            raise ItemError("record lacks a field", k)
    images, prompt = _images_and_prompt(row, src, ("prompt", "question"))
    ex = {"id": str(row.get("id") or row.get("pid") or ""), "images": images, "prompt": _text_blocks_only(prompt),
          "chosen": _text_blocks_only(_as_messages(row["chosen"], "assistant")),
          "rejected": _text_blocks_only(_as_messages(row["rejected"], "assistant"))}
    times = row.get("frame_times")  # the TRL export's: each frame's time in the video (a video model's clock)
    if isinstance(times, list) and len(times) == len(images) and all(isinstance(t, (int, float)) for t in times):
        ex["frame_times"] = [float(t) for t in times]
    return ex


def sft_example(row: dict, src: FrameSource) -> dict:
    """An SFT example (prompt-completion) from a TRL vision row or a TimeWarp sft row (video, question, answer)."""
    if "messages" in row and "images" in row:
        msgs = _as_messages(row["messages"], "user")
        if len(msgs) < 2 or msgs[-1]["role"] != "assistant":
            raise ItemError("bad messages", "the last message must be the assistant's answer")
        row = {**row, "prompt": msgs[:-1], "completion": msgs[-1:]}
    answer = row.get("completion", row.get("answer"))
    if answer is None:
        raise ItemError("record lacks a field", "answer")
    images, prompt = _images_and_prompt(row, src, ("prompt", "question"))
    return {"id": str(row.get("id") or row.get("qid") or ""), "images": images, "prompt": _text_blocks_only(prompt),
            "completion": _text_blocks_only(_as_messages(answer, "assistant"))}


def read_examples(path: Path, build, src: FrameSource, limit: Optional[int] = None) -> tuple[list, int]:
    """Examples built from the JSON/JSONL rows of ``path``; (examples, rows skipped, each logged once)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc})")
    try:
        rows = parse_json_rows(text)
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON/JSONL ({exc})")
    out, skipped = [], 0
    for n, row in enumerate(rows, 1):
        if limit is not None and len(out) >= limit:
            break
        try:
            if not isinstance(row, dict):
                raise ItemError("not an object", type(row).__name__)
            out.append(build(row, src))
        except ItemError as exc:
            skipped += 1
            log.warning("%s: row %d skipped: %s%s", path, n, exc.reason, f" ({exc.detail})" if exc.detail else "")
    return out, skipped


def to_dataset(examples: list):
    """A datasets.Dataset whose ``images`` column decodes the frame files to PIL images when read."""
    import datasets

    ds = datasets.Dataset.from_list(examples)
    return ds.cast_column("images", datasets.Sequence(datasets.Image()))
