"""Supervised fine-tuning on TimeWarp's temporal question-answer pairs with TRL (loss on the answer).

  python timewarp/train/train_sft.py --root_dir <out> --model Qwen/Qwen2-VL-2B-Instruct --output_dir runs/sft
  python timewarp/train/train_sft.py --root_dir <out> --model tiny --max_steps 4 --output_dir /tmp/smoke   # CPU smoke

Config sft (timewarp/train/configs/sft.json): sft/sft_explicit.jsonl (video, question, answer), with
--frames frames sampled per video and fed as images; --data FILE trains on TRL vision rows instead
({"images", "messages"} or {"images", "prompt", "completion"}).
Writes the model, its processor, trainer_state.json (log_history: every step's loss) and
timewarp_train.json to --output_dir.
"""
from __future__ import annotations

import sys
from typing import Optional

from timewarp.core.stage import cli
from timewarp.train import recipe


def main(argv: Optional[list] = None) -> int:
    return cli(lambda a: recipe.run("sft", a) and 0, recipe.build_parser("sft", "train_sft.py", __doc__), argv)


if __name__ == "__main__":
    sys.exit(main())
