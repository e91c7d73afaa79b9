"""Stage 8: preference (DPO) pairs from the SFT questions: same question, chosen vs rejected.

For every SFT question (train split only) and every shuffled version of its video:
  chosen   = the answer true to the real clip order (as in the SFT data),
  rejected = the answer the shuffled clip order gives (negative "shuffled_order").
Both are computed from the annotations and the permutation (timewarp.text.temporal), never by a model.
A pair whose rejected equals its chosen (the shuffle does not touch what the question asks) is
dropped with the reason "rejected equals chosen". Options:
  --mirrored        also the pair on the shuffled video: chosen = the shuffled-order answer,
                    rejected = the real-order answer (negative "mirrored")
  --hard_negatives  reversed,adjacent_swap: extra pairs whose rejected follows the reversed order or
                    the real order with one neighbouring pair of clips swapped (the swap is chosen,
                    seeded, among those that change the answer)
The shuffled annotations are read from <root>/<shuffled_dir_name>/<annotation_dir_name>/ and the
shuffled videos named in records from <root>/<shuffled_dir_name>/<video_dir_name>/.
Output: pref/pref_explicit.jsonl (schema: timewarp.core.schema.PrefRecord); trainers read
{video, question (prompt), chosen, rejected}.
"""
from __future__ import annotations

import collections
import random
import sys
from dataclasses import dataclass

from timewarp.core.errors import ItemError, UsageError
from timewarp.text.annotations import load_shuffled, shuffled_ids_by_video
from timewarp.text.generation import Draft, Generation, require_file
from timewarp.core.schema import PrefRecord, SFTRecord
from timewarp.core.splits import item_seed
from timewarp.core.stage import StageConfig, option
from timewarp.core.store import read_jsonl
from timewarp.text.temporal import adjacent_swaps, answer, answer_keep, answer_text, flip_words, reversed_order
from timewarp.text.textgen import Rewrite
from timewarp.text.wording import event_key

HARD_NEGATIVES = ("reversed", "adjacent_swap")


def parse_hard_negatives(text: str) -> tuple:
    return tuple(x.strip() for x in (text or "").split(",") if x.strip())


@dataclass(frozen=True, kw_only=True)
class Config(StageConfig):
    mirrored: bool = option(False, "also emit the pair on the shuffled video (chosen = shuffled-order answer, "
                                   "rejected = real-order answer)")
    hard_negatives: tuple = option((), "comma-separated extra negatives: reversed, adjacent_swap",
                                   type=parse_hard_negatives, metavar="LIST")

    def __post_init__(self):
        bad = [h for h in self.hard_negatives if h not in HARD_NEGATIVES]
        if bad:
            raise UsageError(f"--hard_negatives: unknown {', '.join(bad)} (choose from {', '.join(HARD_NEGATIVES)})")


class PrefExplicit(Generation):
    name = "generate_pref_explicit"
    Config = Config
    output = "pref_explicit_file"
    summary = "{rows} preference pairs from {stage.sft_questions} SFT questions in {out}"

    def items(self) -> list[str]:
        """The videos of the SFT questions (train split), each with its SFT rows and shuffled ids."""
        layout = self.layout
        if not layout.shuffled_annotations_dir.is_dir() or not any(layout.shuffled_annotations_dir.glob("*.json")):
            raise UsageError(f"no shuffled annotations in {layout.shuffled_annotations_dir}: run shuffle_clips.py "
                             f"first, or pass the --shuffled_dir_name/--annotation_dir_name it wrote")
        require_file(layout.sft_explicit_file, "run generate_sft_explicit.py first")
        try:
            sft = read_jsonl(layout.sft_explicit_file)
        except (OSError, ValueError) as exc:
            raise UsageError(f"{layout.sft_explicit_file} does not parse ({exc}): rerun generate_sft_explicit.py")
        self.sft_questions = len(sft)
        self.sft_rows = collections.defaultdict(list)
        for row in sft:
            self.sft_rows[row.get("id")].append(row)
        known = set(layout.normal_ids())
        for v in sorted(set(self.sft_rows) - known, key=str):
            self.reject(str(v), "SFT video has no normal annotation", "rerun generate_sft_explicit.py")
        self.shuffled_ids = shuffled_ids_by_video(layout)  # one listing of the folder, not one glob per video
        return sorted(v for v in self.sft_rows if v in known)

    def make(self, vid: str) -> list[Draft]:
        layout, cfg = self.layout, self.cfg
        ann = self.normal(vid)
        if ann.split != "train":
            raise ItemError("not a train-split video", f"split {ann.split!r}: SFT data is stale, rerun generate_sft_explicit.py")
        n = len(ann.clips)
        shuffled = [load_shuffled(layout, sid, n) for sid in self.shuffled_ids.get(vid, [vid])]
        captions = [c.caption for c in ann.clips]
        real = list(range(n))
        drafts = []
        for row in self.sft_rows[vid]:
            q = SFTRecord.from_dict(row)
            ev = tuple(q.events)
            chosen = answer(q.kind, ev, real)
            if list(chosen) != q.answer_clips:
                self.reject(q.qid, "SFT answer disagrees with the annotation",
                            f"{q.answer_clips} vs {list(chosen)}: rerun generate_sft_explicit.py")
                continue
            # (negative, suffix of the pair id, order of the rejected answer, chosen order, video, shuffled id)
            plans = []
            for s in shuffled:
                suffix = "" if s.id == vid else f"@{s.id}"
                plans.append(("shuffled_order", suffix, list(s.permutation), real, ann.video, s.id))
                if cfg.mirrored:
                    plans.append(("mirrored", suffix, real, list(s.permutation),
                                  layout.rel(layout.shuffled_video(s.id)), s.id))
            if "reversed" in cfg.hard_negatives:
                plans.append(("reversed_order", "", reversed_order(n), real, ann.video, ""))
            if "adjacent_swap" in cfg.hard_negatives:
                swaps = [o for o in adjacent_swaps(n)
                         if _says(answer(q.kind, ev, o), captions) != _says(chosen, captions)]
                if swaps:
                    rng = random.Random(item_seed(cfg.seed, f"pref:{q.qid}:adjacent_swap"))
                    plans.append(("adjacent_swap", "", rng.choice(swaps), real, ann.video, ""))
                else:
                    self.reject(f"{q.qid}/adjacent_swap", "no adjacent swap changes the answer", "")
            for negative, suffix, neg_order, pos_order, video, sid in plans:
                pid = f"{q.qid}/{negative}{suffix}"
                good, bad = answer(q.kind, ev, pos_order), answer(q.kind, ev, neg_order)
                if _says(good, captions) == _says(bad, captions):
                    self.reject(pid, "rejected equals chosen", f"{q.kind} question: both orders answer {list(good)}")
                    continue
                good_text = answer_text(q.kind, ev, good, captions, q.phrasing)
                if negative == "shuffled_order" and q.wording == "template":
                    good_text = q.answer  # the SFT answer itself
                rec = PrefRecord(pid=pid, qid=q.qid, id=vid, shuffled_id=sid, split=ann.split, video=video,
                                 kind=q.kind, events=list(ev), question=q.question, chosen=good_text,
                                 rejected=answer_text(q.kind, ev, bad, captions, q.phrasing), chosen_clips=list(good),
                                 rejected_clips=list(bad), negative=negative, negative_order=list(neg_order),
                                 wording="template")
                row = rec.to_dict()
                drafts.append(Draft(row, rewrite_pair(row, captions)))
                self.counts[f"negative {negative}"] += 1
        return drafts


def _says(ans, captions) -> list:
    """What an answer says: its events by identity (captions equal up to case and punctuation are one event)."""
    return [event_key(captions[c]) for c in ans]


def rewrite_pair(row: dict, captions: list) -> Rewrite:
    """What the model may reword in one pair (a pref row; both texts are answers), and what each must keep."""
    kind, events, forbid = row["kind"], tuple(row["events"]), flip_words(row["kind"], "answer")
    return Rewrite(row["pid"], {"chosen": row["chosen"], "rejected": row["rejected"]},
                   keep={"chosen": [captions[c] for c in answer_keep(kind, events, row["chosen_clips"])],
                         "rejected": [captions[c] for c in answer_keep(kind, events, row["rejected_clips"])]},
                   captions=captions, forbid={"chosen": forbid, "rejected": forbid})


run, main, build_parser = PrefExplicit.run, PrefExplicit.main, PrefExplicit.build_parser

if __name__ == "__main__":
    sys.exit(main())
