"""Stage 9: the normal benchmark: multiple-choice questions about event order on TEST-split videos.

Per test-split video, ``--questions_per_video`` questions with 4 options (A-D) of several kinds
(first / last / right after X / right before X / which of four events is earliest or latest / order
of three events). Options are only events of the same video (or orderings of the question's own
three events), never the event the question names, so none is implausible from the text alone.
Every question's options hold both the real-order answer (this benchmark's key) and the answer the
shuffled video gives (the shuffled benchmark's key, from permutation 0 = the shuffled video with the
same id); key positions are balanced over the whole benchmark, for both benchmarks at once.
Too few clips: a video with fewer than 3 clips cannot have 4 plausible options and is rejected
("too few clips for 4 options"); 3 clips allow only the order-of-three kind (one question), 4 add
first/last, 5 or more allow every kind. A test video without a shuffled annotation is rejected, so
both benchmarks cover the same videos. Keys are computed from the clip order, never by a model;
``--backend openai`` only rewords a question that names events (right after / right before X, order
of three; options and key untouched; a first / last / earliest / latest question stays template
text), with the checks of timewarp.text.textgen (same events in order, each "(k)" before its own event,
no other event of the video, no direction word that flips the question).
Output: benchmark/normal.jsonl (schema: timewarp.core.schema.BenchmarkRecord), rebuilt on every run.
"""
from __future__ import annotations

import random
import sys
from dataclasses import dataclass

from timewarp.text.annotations import load_shuffled
from timewarp.core.errors import ItemError, UsageError
from timewarp.text.generation import Draft, Generation
from timewarp.core.schema import BenchmarkRecord
from timewarp.core.splits import item_seed
from timewarp.core.stage import StageConfig, option
from timewarp.text.temporal import (LETTERS, MIN_CLIPS_MCQ, KeyBalancer, answer, flip_words, option_text, pick_mcqs,
                               question_keep, question_labels, question_text)
from timewarp.text.textgen import Rewrite


def format_prompt(question: str, options: list[str]) -> str:
    lines = [question] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)]
    return "\n".join(lines) + "\nAnswer with the option's letter."


def key_positions(rows: list[dict]) -> dict:
    """How many questions have their key at each letter (both benchmarks' stats)."""
    return {L: sum(1 for r in rows if r["answer"] == L) for L in LETTERS}


@dataclass(frozen=True, kw_only=True)
class Config(StageConfig):
    questions_per_video: int = option(3, "multiple-choice questions per test-split video")

    def __post_init__(self):
        if self.questions_per_video < 1:
            raise UsageError(f"--questions_per_video must be >= 1, got {self.questions_per_video}")


class NormalBenchmark(Generation):
    name = "generate_normal_benchmark"
    Config = Config
    output = "benchmark_normal_file"
    split, other_split = "test", "train-split videos skipped"
    per_video = "questions_per_video"
    summary = "{rows} questions from {videos} test videos in {out}"
    row_stats = {"key_positions": key_positions}
    empty_warning = ("no benchmark question written: no usable test-split video (preprocess.py --test_fraction "
                     "sets how many videos are held out)")

    def __init__(self, cfg, backend=None):
        super().__init__(cfg, backend)
        self.balancer = KeyBalancer()  # key positions balanced over the whole benchmark, in item order

    def make(self, vid: str) -> list[Draft]:
        ann = self.normal(vid)
        n = len(ann.clips)
        s = load_shuffled(self.layout, vid, n)
        if n < MIN_CLIPS_MCQ:
            raise ItemError("too few clips for 4 options", f"{n} clip(s); at least {MIN_CLIPS_MCQ} needed")
        caps = [c.caption for c in ann.clips]
        rng = random.Random(item_seed(self.cfg.seed, f"benchmark:{vid}"))
        mcqs = pick_mcqs(caps, s.permutation, self.cfg.questions_per_video, rng)
        if not mcqs:
            raise ItemError("too few distinct events for 4 options", f"{n} clips, captions repeat")
        drafts = []
        for k, m in enumerate(mcqs):
            q = m.question
            placed = self.balancer.place(m)
            key = placed.index(tuple(answer(q.kind, q.events, range(n))))
            rec = BenchmarkRecord(qid=f"{vid}/mcq/{k}", id=vid, video_id=vid, split="test", video=ann.video,
                                  kind=q.kind, events=list(q.events), question=question_text(q.kind, q.events, caps, q.phrasing),
                                  options=[option_text(q.kind, q.events, o, caps) for o in placed],
                                  option_clips=[list(o) for o in placed], answer=LETTERS[key], answer_index=key,
                                  order=list(range(n)), prompt="")
            rewrite = Rewrite(rec.qid, {"question": rec.question}, keep={"question": [caps[e] for e in question_keep(q.kind, q.events)]},
                              captions=caps, forbid={"question": flip_words(q.kind, "question")},
                              labels=question_labels(q.kind, q.events))
            drafts.append(Draft(rec.to_dict(), rewrite))
            self.counts[f"kind {q.kind}"] += 1
            self.counts[f"key {rec.answer}"] += 1
        return drafts

    def finish(self, draft: Draft, reworded) -> dict:
        row = super().finish(draft, reworded)
        row["prompt"] = format_prompt(row["question"], row["options"])
        return row


run, main, build_parser = NormalBenchmark.run, NormalBenchmark.main, NormalBenchmark.build_parser

if __name__ == "__main__":
    sys.exit(main())
