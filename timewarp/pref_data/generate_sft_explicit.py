"""Stage 7: SFT "explicit" data: temporal question-answer pairs grounded in the real clip order.

For every TRAIN-split video (test-split videos are held out for the benchmarks), ``--qa_per_video``
questions of different kinds (first / last / right after X / right before X / which of two comes
first / order of three), drawn by an RNG seeded by ``--seed`` and the video id. Answers are computed
from the clip order (timewarp.text.temporal), never by a model; each record names the clips it rests on.
With ``--backend openai`` a model rewords question and answer (a text naming no event, such as
"What happens first in the video?" or "Nothing follows it: ...", is never sent); a rewording that
loses an event, changes the order, names another event of the video or adds a direction word that
flips the meaning ("first" -> "last", "after" -> "before") is not used (template text kept; reason
and reply in the rejects file).
Output: sft/sft_explicit.jsonl (schema: timewarp.core.schema.SFTRecord), rebuilt on every run.
"""
from __future__ import annotations

import random
import sys
from dataclasses import dataclass

from timewarp.core.errors import ItemError, UsageError
from timewarp.text.generation import Draft, Generation
from timewarp.core.schema import SFTRecord
from timewarp.core.splits import item_seed
from timewarp.core.stage import StageConfig, option
from timewarp.text.temporal import (answer, answer_keep, answer_text, flip_words, grounding, pick_questions,
                               question_keep, question_labels, question_text)
from timewarp.text.textgen import Rewrite


@dataclass(frozen=True, kw_only=True)
class Config(StageConfig):
    qa_per_video: int = option(3, "questions per train-split video")

    def __post_init__(self):
        if self.qa_per_video < 1:
            raise UsageError(f"--qa_per_video must be >= 1, got {self.qa_per_video}")


class SFTExplicit(Generation):
    name = "generate_sft_explicit"
    Config = Config
    output = "sft_explicit_file"
    split, other_split = "train", "test-split videos held out"
    per_video = "qa_per_video"
    summary = "{rows} QA pairs from {videos} train videos in {out}"
    empty_warning = "no SFT question written: no usable train-split video in {stage.layout.normal_annotations_dir}"

    def make(self, vid: str) -> list[Draft]:
        ann = self.normal(vid)
        if len(ann.clips) < 2:
            raise ItemError("fewer than 2 clips", f"{len(ann.clips)} clip(s)")
        captions = [c.caption for c in ann.clips]
        rng = random.Random(item_seed(self.cfg.seed, f"sft:{vid}"))
        real = list(range(len(captions)))
        drafts = []
        for k, q in enumerate(pick_questions(captions, self.cfg.qa_per_video, rng)):
            ans = answer(q.kind, q.events, real)
            rec = SFTRecord(qid=f"{vid}/sft/{k}", id=vid, split=ann.split, video=ann.video, kind=q.kind,
                            events=list(q.events), answer_clips=list(ans), clips=grounding(q.events, ans),
                            question=question_text(q.kind, q.events, captions, q.phrasing),
                            answer=answer_text(q.kind, q.events, ans, captions, q.phrasing), wording="template",
                            phrasing=q.phrasing)
            row = rec.to_dict()
            drafts.append(Draft(row, rewrite_qa(row, captions)))
            self.counts[f"kind {q.kind}"] += 1
        if not drafts:
            raise ItemError("no question possible", f"{len(captions)} clips")
        return drafts


def rewrite_qa(row: dict, captions: list) -> Rewrite:
    """What the model may reword in one QA pair (an SFT row), and what the rewording must keep
    (``textgen.validate_field``)."""
    kind, events, ans = row["kind"], tuple(row["events"]), row["answer_clips"]
    return Rewrite(row["qid"], {"question": row["question"], "answer": row["answer"]},
                   keep={"question": [captions[e] for e in question_keep(kind, events)],
                         "answer": [captions[c] for c in answer_keep(kind, events, ans)]},
                   captions=captions, labels=question_labels(kind, events),
                   forbid={"question": flip_words(kind, "question"), "answer": flip_words(kind, "answer")})


run, main, build_parser = SFTExplicit.run, SFTExplicit.main, SFTExplicit.build_parser

if __name__ == "__main__":
    sys.exit(main())
