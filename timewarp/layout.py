"""Every path of an output root_dir, in one place. Scripts never join path strings themselves."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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

    @property
    def cache_dir(self) -> Path:
        """On-disk cache of model replies, keyed by request hash."""
        return self.root / "cache"

    @property
    def tmp_dir(self) -> Path:
        """Scratch space on the same filesystem as the outputs (so os.replace is atomic)."""
        return self.root / "tmp"

    def rel(self, path: Path) -> str:
        """A path inside root, as written into records (relative, forward slashes)."""
        return Path(path).relative_to(self.root).as_posix()

    def normal_ids(self) -> list[str]:
        """Ids of all normal annotations, sorted."""
        return sorted(p.stem for p in self.normal_annotations_dir.glob("*.json"))

    def shuffled_ids(self) -> list[str]:
        return sorted(p.stem for p in self.shuffled_annotations_dir.glob("*.json"))
