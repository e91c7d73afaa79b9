"""Stage 6: the merged caption of each shuffled video (its clip captions in shuffled order).

Same as merge_normal_captions.py, over the shuffled annotations: the caption goes into each shuffled
annotation's ``merged_caption`` and into captions/shuffled.jsonl. A normal video without a shuffled
annotation is a reject ("missing shuffled annotation"). ``--llm`` rewrites must keep the clips'
content in the *shuffled* order.
"""
from __future__ import annotations

import sys

from timewarp.pref_data.merge_normal_captions import Config, MergeCaptions  # noqa: F401 (Config: this stage's)


class MergeShuffledCaptions(MergeCaptions):
    order = "shuffled"
    name = "merge_shuffled_captions"


run, main, build_parser = MergeShuffledCaptions.run, MergeShuffledCaptions.main, MergeShuffledCaptions.build_parser

if __name__ == "__main__":
    sys.exit(main())
