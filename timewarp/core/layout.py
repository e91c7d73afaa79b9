"""Every path of an output root_dir, in one place. Scripts never join path strings themselves."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from timewarp.core.errors import UsageError

# shuffle_clips names the k-th permutation of video <id> "<id>" (k = 0) or "<id>__p<k>" (k >= 1)
SHUFFLE_SUFFIX = re.compile(r"__p(\d+)$")


def shuffled_id(normal_id: str, k: int) -> str:
    return normal_id if k == 0 else f"{normal_id}__p{k}"


def split_shuffled_id(sid: str) -> tuple[str, int]:
    """(normal id, permutation index) of a shuffled id."""
    m = SHUFFLE_SUFFIX.search(sid)
    return (sid[:m.start()], int(m.group(1))) if m else (sid, 0)


@dataclass(frozen=True)
class Layout:
    root: Path
    shuffled_dir_name: str = "shuffled"
    shuffled_annotation_dir_name: str = "shuffled_annotations"
    shuffled_video_dir_name: str = "shuffled_videos"

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        for name in (self.shuffled_dir_name, self.shuffled_annotation_dir_name, self.shuffled_video_dir_name):
            if not name or "/" in name or "\\" in name or name in (".", ".."):
                raise ValueError(f"directory name {name!r} must be a single path component")

    # normal
    @property
    def normal_dir(self) -> Path:
        return self.root / "normal"

    @property
    def normal_annotations_dir(self) -> Path:
        return self.normal_dir / "annotations"

    @property
    def normal_videos_dir(self) -> Path:
        return self.normal_dir / "videos"

    @property
    def normal_clips_dir(self) -> Path:
        return self.normal_dir / "clips"

    def normal_annotation(self, vid: str) -> Path:
        return self.normal_annotations_dir / f"{vid}.json"

    def normal_video(self, vid: str) -> Path:
        return self.normal_videos_dir / f"{vid}.mp4"

    def clip_dir(self, vid: str) -> Path:
        return self.normal_clips_dir / vid

    def clip_video(self, vid: str, index: int) -> Path:
        return self.clip_dir(vid) / f"{index}.mp4"

    # shuffled
    @property
    def shuffled_dir(self) -> Path:
        return self.root / self.shuffled_dir_name

    @property
    def shuffled_annotations_dir(self) -> Path:
        return self.shuffled_dir / self.shuffled_annotation_dir_name

    @property
    def shuffled_videos_dir(self) -> Path:
        return self.shuffled_dir / self.shuffled_video_dir_name

    def shuffled_annotation(self, sid: str) -> Path:
        return self.shuffled_annotations_dir / f"{sid}.json"

    def shuffled_video(self, sid: str) -> Path:
        return self.shuffled_videos_dir / f"{sid}.mp4"

    # generated data
    @property
    def captions_dir(self) -> Path:
        return self.root / "captions"

    @property
    def sft_dir(self) -> Path:
        return self.root / "sft"

    @property
    def pref_dir(self) -> Path:
        return self.root / "pref"

    @property
    def benchmark_dir(self) -> Path:
        return self.root / "benchmark"

    # generated data files (one JSONL per stage output; ``id`` in every row links to the annotation)
    @property
    def captions_normal_file(self) -> Path:
        return self.captions_dir / "normal.jsonl"

    @property
    def captions_shuffled_file(self) -> Path:
        return self.captions_dir / "shuffled.jsonl"

    @property
    def sft_explicit_file(self) -> Path:
        return self.sft_dir / "sft_explicit.jsonl"

    @property
    def pref_explicit_file(self) -> Path:
        return self.pref_dir / "pref_explicit.jsonl"

    @property
    def benchmark_normal_file(self) -> Path:
        return self.benchmark_dir / "normal.jsonl"

    @property
    def benchmark_shuffled_file(self) -> Path:
        return self.benchmark_dir / "shuffled.jsonl"

    @property
    def pref_implicit_file(self) -> Path:
        """Self-generated (TimeWarp-Implicit) preference pairs."""
        return self.pref_dir / "pref_implicit.jsonl"

    @property
    def pref_combined_file(self) -> Path:
        """Explicit + implicit + external preference pairs, mixed by combine_pref.py."""
        return self.pref_dir / "pref_combined.jsonl"

    # sampled frames (a cache: safe to delete; frames/<id>/<frame index, 5+ digits>.jpg)
    @property
    def frames_dir(self) -> Path:
        return self.root / "frames"

    def frame_dir(self, vid: str) -> Path:
        return self.frames_dir / vid

    def frame_file(self, vid: str, index: int) -> Path:
        return self.frame_dir(vid) / f"{int(index):05d}.jpg"

    # trainer exports and the report (timewarp/export.py, timewarp/report.py)
    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    def export_dir(self, fmt: str) -> Path:
        """exports/<format>/: the files one trainer reads (e.g. exports/trl_dpo/pref_explicit.jsonl)."""
        return self.exports_dir / fmt

    @property
    def export_frames_dir(self) -> Path:
        """Frames sampled for exports: exports/frames/<sampling>/<video path without .mp4>/<frame:05d>.jpg.

        Separate from ``frames_dir`` (a cache keyed by video id) so that each folder holds exactly the
        frames of one video and one sampling: trainers that read a whole frame folder get no strays.
        """
        return self.exports_dir / "frames"

    def export_frame_dir(self, sampling: str, video_rel: str) -> Path:
        rel = Path(video_rel)
        if rel.is_absolute() or ".." in rel.parts:  # from an annotation: must not lead outside root
            raise ValueError(f"video path {video_rel!r} is not inside the output folder")
        return self.export_frames_dir / sampling / rel.with_suffix("")

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def report_file(self) -> Path:
        return self.report_dir / "index.html"

    # bookkeeping
    @property
    def rejects_dir(self) -> Path:
        return self.root / "rejects"

    def rejects_file(self, stage: str) -> Path:
        return self.rejects_dir / f"{stage}.jsonl"

    @property
    def stats_dir(self) -> Path:
        return self.root / "stats"

    def stats_file(self, stage: str) -> Path:
        return self.stats_dir / f"{stage}.json"

    @property
    def quarantine_dir(self) -> Path:
        """Where filter_corrupted moves what fails, so nothing is ever deleted."""
        return self.root / "quarantine"

    def quarantine_path(self, stage: str, path: Path) -> Path:
        """Where ``stage`` moves ``path`` (a path inside root): the same relative path under quarantine/<stage>/."""
        return self.quarantine_dir / stage / self.rel(path)

    def state_file(self, stage: str) -> Path:
        """A stage's small resume record (e.g. which files filter_corrupted already verified)."""
        return self.state_dir / f"{stage}.json"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def cache_dir(self) -> Path:
        """On-disk caches, each safe to delete: model replies (by request hash), a remote source's bytes
        (``sources/hub``), preprocess's reference decodes (``reference``)."""
        return self.root / "cache"

    def reference_file(self, vid: str) -> Path:
        """Preprocess's reference decode of one video's source (thumbnails, frame times, decoder errors) for
        the content pass: a cache, removed once the item is verified; without it the check decodes the source."""
        return self.cache_dir / "reference" / f"{vid}.npz"

    @property
    def tmp_dir(self) -> Path:
        """Scratch space on the same filesystem as the outputs (so os.replace is atomic)."""
        return self.root / "tmp"

    def output_dirs(self) -> list[Path]:
        """The top-level folders the stages write (what a dataset scan of the same root must skip)."""
        return [self.normal_dir, self.shuffled_dir, self.captions_dir, self.sft_dir, self.pref_dir,
                self.benchmark_dir, self.rejects_dir, self.stats_dir, self.quarantine_dir, self.cache_dir,
                self.tmp_dir, self.state_dir, self.frames_dir, self.exports_dir, self.report_dir]

    def check_inside(self, *paths: Path) -> None:
        """Refuse (UsageError, one line naming the link) when a path leads through a symbolic link
        out of root: a stage that moves or removes files must never touch one outside its output folder.

        Call it on what a stage is about to move, remove or replace (files or the folders holding them);
        links that stay inside root are fine.
        """
        root = os.path.realpath(self.root)
        for path in paths:
            real = os.path.realpath(path)
            if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
                link = self._first_link(Path(path))
                what = "is a symbolic link to" if link.is_symlink() else "leads to"
                raise UsageError(f"{link} {what} {os.path.realpath(link)}, outside the output folder "
                                 f"{self.root}: refusing to move or remove files through it (replace the link "
                                 f"with a real folder or file, or use another output folder)")

    def _first_link(self, path: Path) -> Path:
        """The first component of ``path`` below root that is a symbolic link (``path`` itself if none)."""
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:
            return path
        here = self.root
        for part in parts:
            here = here / part
            if here.is_symlink():
                return here
        return path

    def rel(self, path: Path) -> str:
        """A path inside root, as written into records (relative, forward slashes)."""
        return Path(path).relative_to(self.root).as_posix()

    @staticmethod
    def item_ids(folder: Path, suffix: str) -> list[str]:
        """Sorted stems of the files ``*<suffix>`` in ``folder`` ([] if it does not exist).

        Names starting with '.' are skipped: ids never start with one, unfinished atomic writes (``.tmp-*``) do.
        """
        folder = Path(folder)
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob(f"*{suffix}") if p.is_file() and not p.name.startswith("."))

    def normal_ids(self) -> list[str]:
        """Ids of all normal annotations, sorted."""
        return self.item_ids(self.normal_annotations_dir, ".json")

    def shuffled_ids(self) -> list[str]:
        return self.item_ids(self.shuffled_annotations_dir, ".json")
