"""Stage 6: the merged caption of each shuffled video (its clip captions in shuffled order).

Same as merge_normal_captions.py, over the shuffled annotations: the caption goes into each shuffled
annotation's ``merged_caption`` and into captions/shuffled.jsonl. A normal video without a shuffled
annotation is a reject ("missing shuffled annotation"). ``--llm`` rewrites must keep the clips'
content in the *shuffled* order.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from timewarp.layout import Layout
from timewarp.pref_data.merge_normal_captions import build_parser as _build_parser, main_for, merge

STAGE = "merge_shuffled_captions"


def run(root_dir, *, workers: int = 1, limit: Optional[int] = None, overwrite: bool = False, backend=None,
        layout: Optional[Layout] = None, options: Optional[dict] = None) -> dict:
    return merge("shuffled", STAGE, root_dir, workers=workers, limit=limit, overwrite=overwrite, backend=backend,
                 layout=layout, options=options)


def build_parser() -> argparse.ArgumentParser:
    return _build_parser("merge_shuffled_captions.py", __doc__)


def main(argv: Optional[list] = None) -> int:
    return main_for(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
