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
text), with the checks of timewarp.textgen (same events in order, each "(k)" before its own event,
no other event of the video, no direction word that flips the question).
Output: benchmark/normal.jsonl (schema: timewarp.schema.BenchmarkRecord), rebuilt on every run.
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
from timewarp.generation import (backend_from_args, layout_for, layout_names, llm_options, load_normal, load_shuffled,
                                 note_usage, require_normal_ids)
from timewarp.layout import Layout
from timewarp.llm import add_llm_args
from timewarp.parallel import pmap
from timewarp.schema import BenchmarkRecord
from timewarp.splits import item_seed
from timewarp.stage import StageRun, add_common_args, add_shuffled_dir_args, cli, layout_from_args, log
from timewarp.store import write_jsonl
from timewarp.temporal import (LETTERS, MIN_CLIPS_MCQ, KeyBalancer, answer, flip_words, option_text, pick_mcqs,
                               question_keep, question_text)
from timewarp.textgen import Rewrite, TemplateBackend

STAGE = "generate_normal_benchmark"


def format_prompt(question: str, options: list[str]) -> str:
    lines = [question] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)]
    return "\n".join(lines) + "\nAnswer with the option's letter."


@dataclass(frozen=True)
class Job:
    root: str
    names: tuple
    seed: int
    questions_per_video: int


def mcqs_for_video(job: Job, vid: str) -> dict:
    layout = Layout(Path(job.root), *job.names)
    try:
        ann = load_normal(layout, vid)
        if ann.split != "test":
            return {"ok": True, "id": vid, "held_out": False, "mcqs": []}
        n = len(ann.clips)
        s = load_shuffled(layout, vid, n)
        if n < MIN_CLIPS_MCQ:
            raise ItemError("too few clips for 4 options", f"{n} clip(s); at least {MIN_CLIPS_MCQ} needed")
        captions = [c.caption for c in ann.clips]
        rng = random.Random(item_seed(job.seed, f"benchmark:{vid}"))
        mcqs = pick_mcqs(captions, s.permutation, job.questions_per_video, rng)
        if not mcqs:
            raise ItemError("too few distinct events for 4 options", f"{n} clips, captions repeat")
        return {"ok": True, "id": vid, "held_out": True, "video": ann.video, "captions": captions, "mcqs": mcqs}
    except ItemError as exc:
        return {"ok": False, "id": vid, "reason": exc.reason, "detail": exc.detail}


def run(root_dir, *, seed: int = 42, workers: int = 1, limit: Optional[int] = None, overwrite: bool = False,
        questions_per_video: int = 3, backend=None, layout: Optional[Layout] = None, options: Optional[dict] = None) -> dict:
    layout = layout_for(root_dir, layout)
    backend = backend or TemplateBackend()
    if questions_per_video < 1:
        raise UsageError(f"--questions_per_video must be >= 1, got {questions_per_video}")
    ids = require_normal_ids(layout)
    if limit:
        ids = ids[:limit]
    stage = StageRun(STAGE, layout, dict(root_dir=layout.root, seed=seed, workers=workers, limit=limit,
                                         overwrite=overwrite, questions_per_video=questions_per_video,
                                         **(options or {"backend": backend.name})))
    job = Job(str(layout.root), layout_names(layout), seed, questions_per_video)
    balancer = KeyBalancer()
    items, videos = [], 0
    for vid, res in stage.succeeded(ids, pmap(partial(mcqs_for_video, job), ids, workers, desc=STAGE)):
        if not res["held_out"]:
            stage.counts["train-split videos skipped"] += 1
            continue
        videos += 1
        if len(res["mcqs"]) < questions_per_video:
            stage.counts["videos with fewer questions than asked"] += 1
        caps = res["captions"]
        n = len(caps)
        for k, m in enumerate(res["mcqs"]):  # placed in sorted (id, k) order: independent of --workers
            q = m.question
            placed = balancer.place(m)
            key = placed.index(tuple(answer(q.kind, q.events, range(n))))
            text = question_text(q.kind, q.events, caps, q.phrasing)
            opts = [option_text(q.kind, q.events, o, caps) for o in placed]
            rec = BenchmarkRecord(qid=f"{vid}/mcq/{k}", id=vid, video_id=vid, split="test", video=res["video"],
                                  kind=q.kind, events=list(q.events), question=text, options=opts,
                                  option_clips=[list(o) for o in placed], answer=LETTERS[key], answer_index=key,
                                  order=list(range(n)), prompt="")
            items.append(dict(rec=rec, keep=[caps[e] for e in question_keep(q.kind, q.events)], captions=caps))
    reworded = backend.reword([Rewrite(it["rec"].qid, {"question": it["rec"].question}, keep={"question": it["keep"]},
                                       captions=it["captions"], forbid={"question": flip_words(it["rec"].kind, "question")},
                                       labels={"question": ["(1)", "(2)", "(3)"]} if it["rec"].kind == "order_three" else {})
                               for it in items], desc=f"{STAGE} (model)", reject=stage.reject)
    rows = []
    for it, rw in zip(items, reworded):
        rec = it["rec"]
        rec.question, rec.wording = rw.fields["question"], rw.wording
        rec.prompt = format_prompt(rec.question, rec.options)
        stage.counts[f"kind {rec.kind}"] += 1
        stage.counts[f"key {rec.answer}"] += 1
        rows.append(rec.to_dict())
    write_jsonl(layout.benchmark_normal_file, rows)
    stage.extra["key_positions"] = {L: sum(1 for r in rows if r["answer"] == L) for L in LETTERS}
    note_usage(stage, backend)
    if not rows:
        log.warning("no benchmark question written: no usable test-split video (preprocess.py --test_fraction "
                    "sets how many videos are held out)")
    return stage.finish(len(ids), videos, f"{len(rows)} questions from {videos} test videos in {layout.benchmark_normal_file}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="generate_normal_benchmark.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root_dir", required=True, help="output root_dir of setup_dataset.sh")
    p.add_argument("--questions_per_video", type=int, default=3,
                   help="multiple-choice questions per test-split video (default: 3)")
    add_llm_args(p)
    add_shuffled_dir_args(p)
    add_common_args(p)
    return p


def main(argv: Optional[list] = None) -> int:
    def go(a):
        layout = layout_from_args(a)
        backend = backend_from_args(a, layout)
        return run(a.root_dir, seed=a.seed, workers=a.workers, limit=a.limit, overwrite=a.overwrite,
                   questions_per_video=a.questions_per_video, backend=backend, layout=layout, options=llm_options(a))
    return cli(go, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
