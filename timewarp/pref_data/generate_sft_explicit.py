"""Stage 7: SFT "explicit" data: temporal question-answer pairs grounded in the real clip order.

For every TRAIN-split video (test-split videos are held out for the benchmarks), ``--qa_per_video``
questions of different kinds (first / last / right after X / right before X / which of two comes
first / order of three), drawn by an RNG seeded by ``--seed`` and the video id. Answers are computed
from the clip order (timewarp.temporal), never by a model; each record names the clips it rests on.
With ``--backend openai`` a model rewords question and answer (a text naming no event, such as
"What happens first in the video?" or "Nothing follows it: ...", is never sent); a rewording that
loses an event, changes the order, names another event of the video or adds a direction word that
flips the meaning ("first" -> "last", "after" -> "before") is not used (template text kept; reason
and reply in the rejects file).
Output: sft/sft_explicit.jsonl (schema: timewarp.schema.SFTRecord), rebuilt on every run.
"""
from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

from timewarp.errors import ItemError, UsageError
from timewarp.generation import (backend_from_args, layout_for, layout_names, llm_options, load_normal, note_usage,
                                 require_normal_ids)
from timewarp.layout import Layout
from timewarp.llm import add_llm_args
from timewarp.parallel import pmap
from timewarp.schema import SFTRecord
from timewarp.splits import item_seed
from timewarp.stage import StageRun, add_common_args, add_shuffled_dir_args, cli, layout_from_args, log
from timewarp.store import write_jsonl
from timewarp.temporal import (answer, answer_keep, answer_text, flip_words, grounding, pick_questions, question_keep,
                               question_text)
from timewarp.textgen import Rewrite, TemplateBackend

STAGE = "generate_sft_explicit"


@dataclass(frozen=True)
class Job:
    root: str
    names: tuple
    seed: int
    qa_per_video: int


def qa_for_video(job: Job, vid: str) -> dict:
    layout = Layout(Path(job.root), *job.names)
    try:
        ann = load_normal(layout, vid)
        if ann.split != "train":
            return {"ok": True, "id": vid, "held_out": True, "records": []}
        if len(ann.clips) < 2:
            raise ItemError("fewer than 2 clips", f"{len(ann.clips)} clip(s)")
        captions = [c.caption for c in ann.clips]
        rng = random.Random(item_seed(job.seed, f"sft:{vid}"))
        real = list(range(len(captions)))
        records = []
        for k, q in enumerate(pick_questions(captions, job.qa_per_video, rng)):
            ans = answer(q.kind, q.events, real)
            records.append(dict(
                rec=SFTRecord(qid=f"{vid}/sft/{k}", id=vid, split=ann.split, video=ann.video, kind=q.kind,
                              events=list(q.events), answer_clips=list(ans), clips=grounding(q.kind, q.events, ans),
                              question=question_text(q.kind, q.events, captions, q.phrasing),
                              answer=answer_text(q.kind, q.events, ans, captions, q.phrasing), wording="template",
                              phrasing=q.phrasing).to_dict(),
                keep_q=[captions[e] for e in question_keep(q.kind, q.events)],
                keep_a=[captions[c] for c in answer_keep(q.kind, q.events, ans)], captions=captions))
        if not records:
            raise ItemError("no question possible", f"{len(captions)} clips")
        return {"ok": True, "id": vid, "held_out": False, "records": records}
    except ItemError as exc:
        return {"ok": False, "id": vid, "reason": exc.reason, "detail": exc.detail}


def rewrite_item(it: dict) -> Rewrite:
    """What the model may reword in one QA pair, and what the rewording must keep (``textgen.validate_field``)."""
    kind = it["rec"]["kind"]
    return Rewrite(it["rec"]["qid"], {"question": it["rec"]["question"], "answer": it["rec"]["answer"]},
                   keep={"question": it["keep_q"], "answer": it["keep_a"]}, captions=it["captions"],
                   labels={"question": ["(1)", "(2)", "(3)"]} if kind == "order_three" else {},
                   forbid={"question": flip_words(kind, "question"), "answer": flip_words(kind, "answer")})


def run(root_dir, *, seed: int = 42, workers: int = 1, limit: Optional[int] = None, overwrite: bool = False,
        qa_per_video: int = 3, backend=None, layout: Optional[Layout] = None, options: Optional[dict] = None) -> dict:
    layout = layout_for(root_dir, layout)
    backend = backend or TemplateBackend()
    if qa_per_video < 1:
        raise UsageError(f"--qa_per_video must be >= 1, got {qa_per_video}")
    ids = require_normal_ids(layout)
    if limit:
        ids = ids[:limit]
    stage = StageRun(STAGE, layout, dict(root_dir=layout.root, seed=seed, workers=workers, limit=limit,
                                         overwrite=overwrite, qa_per_video=qa_per_video,
                                         **(options or {"backend": backend.name})))
    job = Job(str(layout.root), layout_names(layout), seed, qa_per_video)
    items, videos = [], 0
    for vid, res in stage.succeeded(ids, pmap(partial(qa_for_video, job), ids, workers, desc=STAGE)):
        if res["held_out"]:
            stage.counts["test-split videos held out"] += 1
        else:
            videos += 1
            if len(res["records"]) < qa_per_video:
                stage.counts["videos with fewer questions than asked"] += 1
            items.extend(res["records"])
    reworded = backend.reword([rewrite_item(it) for it in items], desc=f"{STAGE} (model)", reject=stage.reject)
    rows = []
    for it, rw in zip(items, reworded):
        rec = dict(it["rec"])
        rec.update(question=rw.fields["question"], answer=rw.fields["answer"], wording=rw.wording)
        stage.counts[f"kind {rec['kind']}"] += 1
        rows.append(rec)
    write_jsonl(layout.sft_explicit_file, rows)
    note_usage(stage, backend)
    if not rows:
        log.warning("no SFT question written: no usable train-split video in %s", layout.normal_annotations_dir)
    return stage.finish(len(ids), videos, f"{len(rows)} QA pairs from {videos} train videos in {layout.sft_explicit_file}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="generate_sft_explicit.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root_dir", required=True, help="output root_dir of setup_dataset.sh")
    p.add_argument("--qa_per_video", type=int, default=3, help="questions per train-split video (default: 3)")
    add_llm_args(p)
    add_shuffled_dir_args(p)
    add_common_args(p)
    return p


def main(argv: Optional[list] = None) -> int:
    def go(a):
        layout = layout_from_args(a)
        backend = backend_from_args(a, layout)
        return run(a.root_dir, seed=a.seed, workers=a.workers, limit=a.limit, overwrite=a.overwrite,
                   qa_per_video=a.qa_per_video, backend=backend, layout=layout, options=llm_options(a))
    return cli(go, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
