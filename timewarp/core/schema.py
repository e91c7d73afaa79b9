"""Every record the pipeline writes, as dataclasses (one place to read the output schema).

``to_dict`` gives the JSON form (field order = declaration order, so output is byte-stable);
``from_dict`` reads it back and raises ``ValueError`` naming the first missing or bad field.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, get_type_hints

SCHEMA_VERSION = 1


class Record:
    """Mixin: JSON round-trip for a dataclass whose nested records are Record subclasses."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any):
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
        hints = get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ValueError(f"{cls.__name__}: missing field {f.name!r}")
                continue
            value = data[f.name]
            inner = _record_list_type(hints[f.name])
            if inner is not None:
                if not isinstance(value, list):
                    raise ValueError(f"{cls.__name__}: field {f.name!r} must be a list")
                value = [inner.from_dict(v) for v in value]
            kwargs[f.name] = value
        return cls(**kwargs)


def _record_list_type(hint):
    args = getattr(hint, "__args__", None)
    if getattr(hint, "__origin__", None) is list and args and isinstance(args[0], type) and issubclass(args[0], Record):
        return args[0]
    return None


# ---------------------------------------------------------------- input

@dataclass
class SourceRef(Record):
    """Where one FineVideo video lives: a parquet row, or an mp4 + json pair of files."""

    kind: str                     # "parquet" | "files"
    path: str                     # shard or mp4 path, absolute
    row: Optional[int] = None     # row index in the shard (parquet)
    json_path: Optional[str] = None  # metadata file (files)

    def label(self) -> str:
        return f"{self.path}#row{self.row}" if self.kind == "parquet" else self.path


@dataclass
class ClipSpan(Record):
    """A clip as the metadata states it, in seconds, before it meets the real video."""

    scene_index: int
    start: float
    end: float
    caption: str


@dataclass
class DroppedScene(Record):
    """An annotated scene that gives no clip; its frames are cut out of the normal video."""

    scene_index: int
    start: Optional[float]  # seconds on the source (hull of every time the scene states); None = unknown
    end: Optional[float]
    reason: str


@dataclass
class SourceVideo(Record):
    """A FineVideo video chosen for preprocessing: its reference and what the metadata says."""

    id: str                 # safe file-name id
    source_id: str          # original id (original_video_filename without .mp4)
    ref: SourceRef
    json_name: str
    title: str
    category: str
    spans: list[ClipSpan] = field(default_factory=list)
    dropped: list[DroppedScene] = field(default_factory=list)
    skipped: dict = field(default_factory=dict)      # reason -> count (scenes and activities)
    warnings: list = field(default_factory=list)     # kept items that were changed (e.g. a caption repaired)


# ---------------------------------------------------------------- preprocessing outputs

@dataclass
class Clip(Record):
    index: int              # position in real order, 0-based
    start: float            # seconds on the normal video = start_frame / fps
    end: float              # exclusive end, = end_frame / fps
    start_frame: int        # first frame (inclusive)
    end_frame: int          # exclusive
    caption: str
    meta_start: Optional[float] = None   # the metadata's times for this clip, seconds on the source
    meta_end: Optional[float] = None
    source_start_frame: Optional[int] = None  # the clip's frames in the source's decoded frames
    source_end_frame: Optional[int] = None


@dataclass
class NormalAnnotation(Record):
    id: str
    source_id: str
    source_file: str
    source_row: Optional[int]
    source_json: str
    split: str              # "train" | "test"
    video: str              # relative to root_dir
    fps: float
    fps_rational: str       # exact, e.g. "30000/1001"
    frame_count: int        # frames in the normal video (= end_frame of the last clip)
    duration: float
    width: int
    height: int
    source_duration: float  # decoded duration of the source video
    title: str
    category: str
    clips: list[Clip]
    merged_caption: str = ""
    schema_version: int = SCHEMA_VERSION
    # the normal video is the concatenation of these source frame ranges [a, b) (decoded frames of the
    # source at source_fps); a scene that gave no clip is cut out, un-annotated gaps are kept
    source_ranges: list[list[int]] = field(default_factory=list)
    skipped: dict = field(default_factory=dict)     # scenes / activities that gave no clip, by reason
    warnings: list[str] = field(default_factory=list)    # what was repaired in what was kept


@dataclass
class ShuffledClip(Record):
    index: int              # position in the shuffled video, 0-based
    source_index: int       # index of this clip in the real order
    start: float            # seconds on the shuffled timeline
    end: float
    start_frame: int        # frames on the shuffled timeline
    end_frame: int
    source_start: float     # seconds on the normal video
    source_end: float
    caption: str


@dataclass
class ShuffledAnnotation(Record):
    id: str                 # shuffled video id (= normal id, or <id>__p<k> for k >= 1)
    normal_id: str
    source_id: str
    permutation_index: int
    seed: int
    permutation: list[int]  # permutation[i] = real-order index of the clip shown at position i
    split: str
    video: str
    normal_video: str
    fps: float
    fps_rational: str
    frame_count: int
    duration: float
    width: int
    height: int
    title: str
    category: str
    clips: list[ShuffledClip]
    merged_caption: str = ""
    schema_version: int = SCHEMA_VERSION


# ---------------------------------------------------------------- bookkeeping

@dataclass
class Reject(Record):
    stage: str
    id: str
    reason: str             # short, stable, countable
    detail: str = ""        # free text: the file, the numbers, the error
    source: str = ""        # input file the item came from


# ---------------------------------------------------------------- generated data (captions, SFT, pref, benchmarks)

@dataclass
class CaptionRecord(Record):
    """One row of captions/normal.jsonl or captions/shuffled.jsonl (the merged caption is also in the annotation)."""

    id: str                 # annotation id (normal id, or shuffled id)
    normal_id: str
    split: str
    video: str              # relative to root_dir
    order: list[int]        # real-order clip indices in the order the video shows them
    merged_caption: str
    method: str             # "join" (captions joined with spaces) | "llm" (validated fluent rewrite)


@dataclass
class SFTRecord(Record):
    """One row of sft/sft_explicit.jsonl: a temporal QA pair grounded in the real clip order."""

    qid: str                # "<id>/sft/<k>"
    id: str                 # normal annotation id
    split: str              # always "train"
    video: str              # normal video, relative to root_dir
    kind: str               # first | last | after | before | which_first | order_three
    events: list[int]       # clip indices (real order) the question names, in the order it names them
    answer_clips: list[int]  # the answer as clip indices ([] = "nothing": X is the last/first event)
    clips: list[int]        # clip indices the answer rests on (events + answer), sorted
    question: str
    answer: str
    wording: str            # "template" | "llm"
    phrasing: int = 0       # template phrasing index (the preference pairs reuse it)


@dataclass
class PrefRecord(Record):
    """One row of pref/pref_explicit.jsonl: a DPO pair (same question, chosen vs rejected)."""

    pid: str                # "<qid>/<negative>[/<shuffled id>]"
    qid: str                # the SFT question it comes from
    id: str                 # normal annotation id
    shuffled_id: str        # shuffled annotation used ("" for hard negatives that need none)
    split: str
    video: str              # the video the question is asked about (normal; shuffled for "mirrored")
    kind: str
    events: list[int]
    question: str
    chosen: str
    rejected: str
    chosen_clips: list[int]     # answer under the order of `video`
    rejected_clips: list[int]   # answer under `negative_order`
    negative: str           # shuffled_order | reversed_order | adjacent_swap | mirrored
    negative_order: list[int]   # clip order (real indices) the rejected answer follows
    wording: str


@dataclass
class BenchmarkRecord(Record):
    """One row of benchmark/normal.jsonl or benchmark/shuffled.jsonl: a 4-option MCQ."""

    qid: str                # "<id>/mcq/<k>" (same in both benchmarks)
    id: str                 # normal annotation id
    video_id: str           # id of the video asked about (normal id, or shuffled id)
    split: str              # always "test"
    video: str              # relative to root_dir
    kind: str
    events: list[int]       # clip indices (real order) the question names
    question: str
    options: list[str]      # 4 options, A-D
    option_clips: list[list[int]]  # each option as clip indices (real order)
    answer: str             # "A".."D"
    answer_index: int
    order: list[int]        # clip order of `video` the key follows (identity, or the permutation)
    prompt: str             # question + lettered options, ready to ask a model
    key_changed: bool = False   # shuffled benchmark: key differs from the normal benchmark's
    normal_answer: str = ""     # shuffled benchmark: the normal benchmark's key
    wording: str = "template"


# ---------------------------------------------------------------- implicit preference pairs, combined mix

@dataclass
class ImplicitPrefRecord(Record):
    """One row of pref/pref_implicit.jsonl: a self-generated DPO pair (TimeWarp-Implicit).

    chosen = the model's description of the real frames (in order) under ``prompt``; rejected = its
    description of corrupted frames under the same prompt (mode "corrupt"), or its answer to a
    hallucination-inviting ``rejected_prompt`` on the real frames (mode "hallucinate").
    """

    pid: str                # "<id>/implicit/<corruption name>" (unique in the file)
    id: str                 # normal annotation id
    split: str              # always "train"
    video: str              # normal video, relative to root_dir
    prompt: str             # the training prompt (the detailed, temporally focused description prompt)
    chosen: str
    rejected: str
    rejected_mode: str      # "corrupt" | "hallucinate"
    rejected_prompt: str    # the prompt the rejected reply answered (= prompt in corrupt mode)
    corruption: dict        # {"name": ..., "params": {...}}; name "hallucinate" in hallucinate mode
    frames: list[int]       # frame indices of the normal video shown for chosen, in order
    rejected_frames: list[int]  # frame indices shown for rejected, in order (spliced positions: the other video's)
    distance: float         # normalised word edit distance between chosen and rejected
    model: str


@dataclass
class CombinedPrefRecord(Record):
    """One row of pref/pref_combined.jsonl (combine_pref.py): a preference pair from any source."""

    id: str                 # "<source>:<id of the pair in its source>"
    source: str             # "explicit" | "implicit" | an external file's name
    video: str              # as the source gives it (explicit/implicit: relative to root_dir)
    prompt: str
    chosen: str
    rejected: str
