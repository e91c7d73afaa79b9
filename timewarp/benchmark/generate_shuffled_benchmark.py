"""Stage 10: the shuffled benchmark: the normal benchmark's questions asked of the shuffled videos.

Same questions, same options in the same positions; the video is the shuffled video (permutation 0,
same id) and the key is computed from its permutation: the option that is the answer when the clips
play in shuffled order. ``key_changed`` says whether it differs from the normal benchmark's key
(it contradicts common sense exactly then: only a model that watches the frames gets it right).
A question whose shuffled annotation is missing or inconsistent is rejected. No model is involved and
nothing is random: the model options, --seed and --overwrite are accepted (one TIMEWARP_ARGS fits
every stage of generate_data.sh) and have no effect.
Output: benchmark/shuffled.jsonl (schema: timewarp.core.schema.BenchmarkRecord), rebuilt on every run.
"""
from __future__ import annotations

import collections
import sys

from timewarp.benchmark.generate_normal_benchmark import key_positions
from timewarp.core.errors import UsageError
from timewarp.text.annotations import load_shuffled
from timewarp.text.generation import Draft, Generation, require_file
from timewarp.core.schema import BenchmarkRecord
from timewarp.core.stage import StageConfig
from timewarp.core.store import read_jsonl
from timewarp.text.temporal import LETTERS, answer

Config = StageConfig  # no options of its own


class ShuffledBenchmark(Generation):
    name = "generate_shuffled_benchmark"
    output = "benchmark_shuffled_file"
    summary = "{rows} questions ({counts[key changed]} with a changed key) in {out}"
    uses_model = uses_seed = False
    row_stats = {"key_positions": key_positions}

    def items(self) -> list[str]:
        """The videos of the normal benchmark, each with its questions."""
        layout = self.layout
        require_file(layout.benchmark_normal_file, "run generate_normal_benchmark.py first")
        try:
            normal = [BenchmarkRecord.from_dict(r) for r in read_jsonl(layout.benchmark_normal_file)]
        except (OSError, ValueError, TypeError) as exc:
            raise UsageError(f"{layout.benchmark_normal_file} does not parse ({exc}): rerun generate_normal_benchmark.py")
        self.questions = collections.defaultdict(list)
        for r in normal:
            self.questions[r.id].append(r)
        return sorted(self.questions)

    def make(self, vid: str) -> list[Draft]:
        layout, questions = self.layout, self.questions[vid]
        s = load_shuffled(layout, vid, len(questions[0].order))
        drafts = []
        for r in questions:
            ans = list(answer(r.kind, r.events, s.permutation))
            if ans not in r.option_clips:
                self.reject(r.qid, "shuffled answer not among the options",
                            f"answer {ans}, options {r.option_clips}: rerun generate_normal_benchmark.py")
                continue
            key = r.option_clips.index(ans)
            out = BenchmarkRecord(qid=r.qid, id=vid, video_id=s.id, split=r.split, video=layout.rel(layout.shuffled_video(s.id)),
                                  kind=r.kind, events=r.events, question=r.question, options=r.options,
                                  option_clips=r.option_clips, answer=LETTERS[key], answer_index=key,
                                  order=list(s.permutation), prompt=r.prompt, key_changed=key != r.answer_index,
                                  normal_answer=r.answer, wording=r.wording)
            self.counts["key changed" if out.key_changed else "key unchanged"] += 1
            self.counts[f"key {out.answer}"] += 1
            drafts.append(Draft(out.to_dict()))
        return drafts


run, main, build_parser = ShuffledBenchmark.run, ShuffledBenchmark.main, ShuffledBenchmark.build_parser

if __name__ == "__main__":
    sys.exit(main())
