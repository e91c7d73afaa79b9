"""DPO on TimeWarp's preference pairs with TRL (one method config per row of the paper's table).

  python timewarp/train/train_dpo.py --root_dir <out> --config explicit --model Qwen/Qwen2-VL-2B-Instruct --output_dir runs/explicit
  python timewarp/train/train_dpo.py --root_dir <out> --model tiny --max_steps 4 --output_dir /tmp/smoke   # CPU smoke
  python timewarp/train/train_dpo.py --root_dir <out> --model tiny:qwen2_vl --max_steps 3 --output_dir /tmp/video  # video input

Configs (timewarp/train/configs): explicit (pref/pref_explicit), implicit (pref/pref_implicit),
combined (explicit + implicit + --external base set), base_dpo (--external base set alone).
Reads exports/trl_dpo/<source>.jsonl (TRL's vision preference rows: frames as "images", image blocks
in the prompt) when present, else the pipeline's pref/<source>.jsonl, sampling --frames frames per video.
Writes the model, its processor, trainer_state.json (log_history: every step's loss) and
timewarp_train.json to --output_dir.
"""
from __future__ import annotations

import sys
from typing import Optional

from timewarp.core.stage import cli
from timewarp.train import recipe


def main(argv: Optional[list] = None) -> int:
    return cli(lambda a: recipe.run("dpo", a) and 0, recipe.build_parser("dpo", "train_dpo.py", __doc__), argv)


if __name__ == "__main__":
    sys.exit(main())
