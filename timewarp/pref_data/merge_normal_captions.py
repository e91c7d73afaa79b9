"""Stage 5: the merged caption of each normal video (its clip captions in real order).

The merged caption = the clip captions joined with spaces (the published method). With ``--llm``
(or ``--backend openai``, or ``--llm_base_url`` alone) a model rewrites it into one fluent paragraph;
the rewrite is kept only if it still mentions every clip's content in the same order, else the plain
join is kept and the reason (with the model's reply) goes to rejects/merge_normal_captions.jsonl.
The caption is written into each annotation's ``merged_caption`` (atomically; unchanged files are
not rewritten unless ``--overwrite``) and into the view captions/normal.jsonl. Every run rebuilds the
view; model replies come from the on-disk cache, so a rerun costs nothing (``--overwrite`` asks again).
"""
from __future__ import annotations

import argparse
import sys
from typing import ClassVar

from timewarp.text.annotations import load_normal, load_shuffled, require_normal_ids
from timewarp.text.generation import Draft, Generation
from timewarp.core.schema import CaptionRecord, NormalAnnotation, ShuffledAnnotation
from timewarp.core.stage import StageConfig
from timewarp.core.store import read_json, write_json
from timewarp.text.textgen import Rewrite

Config = StageConfig  # no options of its own


def plain_join(captions: list[str]) -> str:
    return " ".join(" ".join(c.split()) for c in captions)


class MergeCaptions(Generation):
    """The merged caption of each video in ``order``: "normal" (real order) or "shuffled" (as it plays)."""

    order: ClassVar[str] = "normal"
    name = "merge_normal_captions"
    summary = "{rows} merged captions in {out} and the annotations"
    uses_seed = False

    @property
    def items_of(self) -> str:
        return self.order

    @property
    def output(self) -> str:
        return f"captions_{self.order}_file"

    def items(self) -> list[str]:
        ids = super().items()
        if self.order == "shuffled":  # a normal video without its shuffled annotation is a reject here
            have = set(ids)
            normal_ids = require_normal_ids(self.layout)
            for vid in normal_ids[:self.cfg.limit] if self.cfg.limit else normal_ids:
                if vid not in have:
                    self.reject(vid, "missing shuffled annotation", str(self.layout.shuffled_annotation(vid)))
        return ids

    def make(self, item_id: str) -> list[Draft]:
        if self.order == "normal":
            ann = load_normal(self.layout, item_id)
            normal_id, order = item_id, list(range(len(ann.clips)))
        else:
            ann = load_shuffled(self.layout, item_id)
            normal_id, order = ann.normal_id, list(ann.permutation)
        captions = [c.caption for c in ann.clips]
        row = CaptionRecord(item_id, normal_id, ann.split, ann.video, order, plain_join(captions), "join").to_dict()
        rewrite = Rewrite(item_id, {"caption": row["merged_caption"]}, keep={"caption": captions}, caption=True,
                          captions=captions, events=tuple(" ".join(c.split()) for c in captions))
        return [Draft(row, rewrite, context=ann.merged_caption)]

    def finish(self, draft: Draft, reworded) -> dict:
        """The row with the (reworded) caption, also written into the annotation if it changed."""
        text, method = reworded.fields["caption"], ("llm" if reworded.wording == "llm" else "join")
        self.counts[f"merged by {method}"] += 1
        if self.cfg.overwrite or draft.context != text:
            path, cls = ((self.layout.normal_annotation, NormalAnnotation) if self.order == "normal"
                         else (self.layout.shuffled_annotation, ShuffledAnnotation))
            raw = read_json(path(draft.row["id"]))
            raw["merged_caption"] = text
            write_json(path(draft.row["id"]), cls.from_dict(raw).to_dict())
            self.counts["annotations updated"] += 1
        else:
            self.counts["annotations unchanged"] += 1
        return {**draft.row, "merged_caption": text, "method": method}

    @classmethod
    def build_parser(cls) -> argparse.ArgumentParser:
        p = super().build_parser()
        p.add_argument("--llm", dest="backend", action="store_const", const="openai",
                       help="rewrite each merged caption into fluent text with the model (same as --backend openai); "
                            "a rewrite that loses or reorders a clip's content is replaced by the plain join")
        return p


run, main, build_parser = MergeCaptions.run, MergeCaptions.main, MergeCaptions.build_parser

if __name__ == "__main__":
    sys.exit(main())
