"""Stage 10: the shuffled benchmark: the normal benchmark's questions asked of the shuffled videos.

Same questions, same options in the same positions; the video is the shuffled video (permutation 0,
same id) and the key is computed from its permutation: the option that is the answer when the clips
play in shuffled order. ``key_changed`` says whether it differs from the normal benchmark's key
(it contradicts common sense exactly then: only a model that watches the frames gets it right).
A question whose shuffled annotation is missing or inconsistent is rejected. No model is involved.
Output: benchmark/shuffled.jsonl (schema: timewarp.schema.BenchmarkRecord), rebuilt on every run.
"""
from __future__ import annotations

import argparse
import collections
import sys
from typing import Optional

from timewarp.errors import ItemError, UsageError
from timewarp.generation import layout_for, load_shuffled, require_file, require_normal_ids
from timewarp.layout import Layout
from timewarp.llm import add_llm_args
from timewarp.schema import BenchmarkRecord
from timewarp.stage import StageRun, add_common_args, add_shuffled_dir_args, cli, layout_from_args
from timewarp.store import read_jsonl, write_jsonl
from timewarp.temporal import LETTERS, answer

STAGE = "generate_shuffled_benchmark"


def run(root_dir, *, workers: int = 1, limit: Optional[int] = None, overwrite: bool = False,
        layout: Optional[Layout] = None) -> dict:
    layout = layout_for(root_dir, layout)
    require_normal_ids(layout)
    require_file(layout.benchmark_normal_file, "run generate_normal_benchmark.py first")
    try:
        normal = [BenchmarkRecord.from_dict(r) for r in read_jsonl(layout.benchmark_normal_file)]
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"{layout.benchmark_normal_file} does not parse ({exc}): rerun generate_normal_benchmark.py")
    by_video = collections.defaultdict(list)
    for r in normal:
        by_video[r.id].append(r)
    ids = sorted(by_video)
    if limit:
        ids = ids[:limit]
    stage = StageRun(STAGE, layout, dict(root_dir=layout.root, workers=workers, limit=limit, overwrite=overwrite))
    rows, videos = [], 0
    for vid in ids:  # a file read and a few list lookups per video: no process pool needed
        try:
            s = load_shuffled(layout, vid, len(by_video[vid][0].order))
        except ItemError as exc:
            stage.reject(vid, exc.reason, exc.detail)
            continue
        videos += 1
        for r in by_video[vid]:
            ans = list(answer(r.kind, r.events, s.permutation))
            if ans not in r.option_clips:
                stage.reject(r.qid, "shuffled answer not among the options",
                             f"answer {ans}, options {r.option_clips}: rerun generate_normal_benchmark.py")
                continue
            key = r.option_clips.index(ans)
            out = BenchmarkRecord(qid=r.qid, id=vid, video_id=s.id, split=r.split, video=layout.rel(layout.shuffled_video(s.id)), kind=r.kind,
                                  events=r.events, question=r.question, options=r.options, option_clips=r.option_clips,
                                  answer=LETTERS[key], answer_index=key, order=list(s.permutation), prompt=r.prompt,
                                  key_changed=key != r.answer_index, normal_answer=r.answer, wording=r.wording)
            stage.counts["key changed" if out.key_changed else "key unchanged"] += 1
            stage.counts[f"key {out.answer}"] += 1
            rows.append(out.to_dict())
    write_jsonl(layout.benchmark_shuffled_file, rows)
    stage.extra["key_positions"] = {L: sum(1 for r in rows if r["answer"] == L) for L in LETTERS}
    return stage.finish(len(ids), videos, f"{len(rows)} questions ({stage.counts['key changed']} with a changed key) "
                                          f"in {layout.benchmark_shuffled_file}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="generate_shuffled_benchmark.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root_dir", required=True, help="output root_dir of setup_dataset.sh")
    add_llm_args(p, unused=True)
    add_shuffled_dir_args(p)
    add_common_args(p)
    return p


def main(argv: Optional[list] = None) -> int:
    return cli(lambda a: run(a.root_dir, workers=a.workers, limit=a.limit, overwrite=a.overwrite,
                             layout=layout_from_args(a)), build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
