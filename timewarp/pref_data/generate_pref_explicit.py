"""Stage 8: preference (DPO) pairs from the SFT questions: same question, chosen vs rejected.

For every SFT question (train split only) and every shuffled version of its video:
  chosen   = the answer true to the real clip order (as in the SFT data),
  rejected = the answer the shuffled clip order gives (negative "shuffled_order").
Both are computed from the annotations and the permutation (timewarp.temporal), never by a model.
A pair whose rejected equals its chosen (the shuffle does not touch what the question asks) is
dropped with the reason "rejected equals chosen". Options:
  --mirrored        also the pair on the shuffled video: chosen = the shuffled-order answer,
                    rejected = the real-order answer (negative "mirrored")
  --hard_negatives  reversed,adjacent_swap: extra pairs whose rejected follows the reversed order or
                    the real order with one neighbouring pair of clips swapped (the swap is chosen,
                    seeded, among those that change the answer)
The shuffled annotations are read from <root>/<shuffled_dir_name>/<annotation_dir_name>/ and the
shuffled videos named in records from <root>/<shuffled_dir_name>/<video_dir_name>/.
Output: pref/pref_explicit.jsonl (schema: timewarp.schema.PrefRecord); trainers read
{video, question (prompt), chosen, rejected}.
"""
from __future__ import annotations

import argparse
import collections
import random
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

from timewarp.errors import ItemError, UsageError
from timewarp.generation import (backend_from_args, layout_for, layout_names, llm_options, load_normal, load_shuffled,
                                 note_usage, require_file, require_normal_ids, shuffled_ids_by_video)
from timewarp.layout import Layout
from timewarp.llm import add_llm_args
from timewarp.parallel import pmap
from timewarp.schema import PrefRecord, SFTRecord
from timewarp.splits import item_seed
from timewarp.stage import StageRun, add_common_args, add_shuffled_dir_args, cli, layout_from_args
from timewarp.store import read_jsonl, write_jsonl
from timewarp.temporal import adjacent_swaps, answer, answer_keep, answer_text, event_key, flip_words, reversed_order
from timewarp.textgen import Rewrite, TemplateBackend

STAGE = "generate_pref_explicit"
HARD_NEGATIVES = ("reversed", "adjacent_swap")


@dataclass(frozen=True)
class Job:
    root: str
    names: tuple
    seed: int
    mirrored: bool
    hard_negatives: tuple


def _text(kind, events, ans, captions, phrasing) -> str:
    return answer_text(kind, events, ans, captions, phrasing)


def _says(ans, captions) -> list:
    """What an answer says: its events by identity (captions equal up to case and punctuation are one event)."""
    return [event_key(captions[c]) for c in ans]


def pairs_for_video(job: Job, item: tuple) -> dict:
    vid, sft_rows, sids = item
    layout = Layout(Path(job.root), *job.names)
    try:
        ann = load_normal(layout, vid)
        if ann.split != "train":
            raise ItemError("not a train-split video", f"split {ann.split!r}: SFT data is stale, rerun generate_sft_explicit.py")
        n = len(ann.clips)
        shuffled = [load_shuffled(layout, sid, n) for sid in sids]
    except ItemError as exc:
        return {"ok": False, "id": vid, "reason": exc.reason, "detail": exc.detail}
    captions = [c.caption for c in ann.clips]
    real = list(range(n))
    pairs, rejects = [], []
    for row in sft_rows:
        q = SFTRecord.from_dict(row)
        ev = tuple(q.events)
        chosen = answer(q.kind, ev, real)
        if list(chosen) != q.answer_clips:
            rejects.append((q.qid, "SFT answer disagrees with the annotation",
                            f"{q.answer_clips} vs {list(chosen)}: rerun generate_sft_explicit.py"))
            continue
        # (negative, order of the rejected answer, chosen order, video, shuffled id)
        plans = []
        for s in shuffled:
            suffix = "" if s.id == vid else f"@{s.id}"
            plans.append(("shuffled_order", suffix, list(s.permutation), real, ann.video, s.id))
            if job.mirrored:
                plans.append(("mirrored", suffix, real, list(s.permutation), layout.rel(layout.shuffled_video(s.id)), s.id))
        if "reversed" in job.hard_negatives:
            plans.append(("reversed_order", "", reversed_order(n), real, ann.video, ""))
        if "adjacent_swap" in job.hard_negatives:
            swaps = [o for o in adjacent_swaps(n)
                     if _says(answer(q.kind, ev, o), captions) != _says(chosen, captions)]
            if swaps:
                rng = random.Random(item_seed(job.seed, f"pref:{q.qid}:adjacent_swap"))
                plans.append(("adjacent_swap", "", rng.choice(swaps), real, ann.video, ""))
            else:
                rejects.append((f"{q.qid}/adjacent_swap", "no adjacent swap changes the answer", ""))
        for negative, suffix, neg_order, pos_order, video, sid in plans:
            pid = f"{q.qid}/{negative}{suffix}"
            good, bad = answer(q.kind, ev, pos_order), answer(q.kind, ev, neg_order)
            good_text, bad_text = _text(q.kind, ev, good, captions, q.phrasing), _text(q.kind, ev, bad, captions, q.phrasing)
            if _says(good, captions) == _says(bad, captions):
                rejects.append((pid, "rejected equals chosen", f"{q.kind} question: both orders answer {list(good)}"))
                continue
            if negative == "shuffled_order" and q.wording == "template":
                good_text = q.answer  # the SFT answer itself
            rec = PrefRecord(pid=pid, qid=q.qid, id=vid, shuffled_id=sid, split=ann.split, video=video, kind=q.kind,
                             events=list(ev), question=q.question, chosen=good_text, rejected=bad_text,
                             chosen_clips=list(good), rejected_clips=list(bad), negative=negative,
                             negative_order=list(neg_order), wording="template")
            pairs.append(dict(rec=rec.to_dict(), keep_c=[captions[c] for c in answer_keep(q.kind, ev, good)],
                              keep_r=[captions[c] for c in answer_keep(q.kind, ev, bad)], captions=captions))
    return {"ok": True, "id": vid, "pairs": pairs, "rejects": rejects}


def rewrite_item(it: dict) -> Rewrite:
    """What the model may reword in one pair (both are answers), and what each must keep."""
    forbid = flip_words(it["rec"]["kind"], "answer")
    return Rewrite(it["rec"]["pid"], {"chosen": it["rec"]["chosen"], "rejected": it["rec"]["rejected"]},
                   keep={"chosen": it["keep_c"], "rejected": it["keep_r"]}, captions=it["captions"],
                   forbid={"chosen": forbid, "rejected": forbid})


def run(root_dir, *, seed: int = 42, workers: int = 1, limit: Optional[int] = None, overwrite: bool = False,
        mirrored: bool = False, hard_negatives: tuple = (), backend=None, layout: Optional[Layout] = None,
        options: Optional[dict] = None) -> dict:
    layout = layout_for(root_dir, layout)
    backend = backend or TemplateBackend()
    bad = [h for h in hard_negatives if h not in HARD_NEGATIVES]
    if bad:
        raise UsageError(f"--hard_negatives: unknown {', '.join(bad)} (choose from {', '.join(HARD_NEGATIVES)})")
    normal_ids = require_normal_ids(layout)
    if not layout.shuffled_annotations_dir.is_dir() or not any(layout.shuffled_annotations_dir.glob("*.json")):
        raise UsageError(f"no shuffled annotations in {layout.shuffled_annotations_dir}: run shuffle_clips.py first, "
                         f"or pass the --shuffled_dir_name/--annotation_dir_name it wrote")
    require_file(layout.sft_explicit_file, "run generate_sft_explicit.py first")
    try:
        sft = read_jsonl(layout.sft_explicit_file)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{layout.sft_explicit_file} does not parse ({exc}): rerun generate_sft_explicit.py")
    by_video = collections.defaultdict(list)
    for row in sft:
        by_video[row.get("id")].append(row)
    known = set(normal_ids)
    ids = sorted(v for v in by_video if v in known)
    stage = StageRun(STAGE, layout, dict(root_dir=layout.root, seed=seed, workers=workers, limit=limit,
                                         overwrite=overwrite, mirrored=mirrored, hard_negatives=list(hard_negatives),
                                         shuffled_dir_name=layout.shuffled_dir_name,
                                         annotation_dir_name=layout.shuffled_annotation_dir_name,
                                         video_dir_name=layout.shuffled_video_dir_name,
                                         **(options or {"backend": backend.name})))
    for v in sorted(set(by_video) - known, key=str):
        stage.reject(str(v), "SFT video has no normal annotation", "rerun generate_sft_explicit.py")
    if limit:
        ids = ids[:limit]
    job = Job(str(layout.root), layout_names(layout), seed, mirrored, tuple(hard_negatives))
    items, videos = [], 0
    sids = shuffled_ids_by_video(layout)  # one listing of the folder, not one glob per video
    for vid, res in stage.succeeded(ids, pmap(partial(pairs_for_video, job),
                                              [(v, by_video[v], sids.get(v, [v])) for v in ids],
                                              workers, desc=STAGE)):
        videos += 1
        for r in res["rejects"]:
            stage.reject(*r)
        items.extend(res["pairs"])
    reworded = backend.reword([rewrite_item(it) for it in items], desc=f"{STAGE} (model)", reject=stage.reject)
    rows = []
    for it, rw in zip(items, reworded):
        rec = dict(it["rec"])
        rec.update(chosen=rw.fields["chosen"], rejected=rw.fields["rejected"], wording=rw.wording)
        stage.counts[f"negative {rec['negative']}"] += 1
        rows.append(rec)
    write_jsonl(layout.pref_explicit_file, rows)
    note_usage(stage, backend)
    return stage.finish(len(ids), videos, f"{len(rows)} preference pairs from {len(sft)} SFT questions "
                                          f"in {layout.pref_explicit_file}")


def parse_hard_negatives(text: str) -> tuple:
    return tuple(x.strip() for x in (text or "").split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="generate_pref_explicit.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root_dir", required=True, help="output root_dir of setup_dataset.sh")
    add_shuffled_dir_args(p)
    p.add_argument("--mirrored", action="store_true",
                   help="also emit the pair on the shuffled video (chosen = shuffled-order answer, rejected = real-order answer)")
    p.add_argument("--hard_negatives", default="", metavar="LIST",
                   help="comma-separated extra negatives: reversed, adjacent_swap (default: none)")
    add_llm_args(p)
    add_common_args(p)
    return p


def main(argv: Optional[list] = None) -> int:
    def go(a):
        layout = layout_from_args(a)
        hard = parse_hard_negatives(a.hard_negatives)
        bad = [h for h in hard if h not in HARD_NEGATIVES]
        if bad:
            raise UsageError(f"--hard_negatives: unknown {', '.join(bad)} (choose from {', '.join(HARD_NEGATIVES)})")
        backend = backend_from_args(a, layout)
        return run(layout.root, seed=a.seed, workers=a.workers, limit=a.limit, overwrite=a.overwrite, mirrored=a.mirrored,
                   hard_negatives=hard, backend=backend, layout=layout, options=llm_options(a))
    return cli(go, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
