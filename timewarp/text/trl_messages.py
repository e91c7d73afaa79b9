"""TRL's conversational vision messages, built once for the exporter, the trainers, predict.py and the card.

TRL (trl/data_utils.py prepare_multimodal_messages) fills a prompt's ``{"type": "image"}`` blocks, in
order, from the example's ``images``; the vision collators (DataCollatorForVisionPreference and the SFT
one) then run the model's processor on them. A dataset without an ``images`` column takes TRL's text
path: the frames never reach the model, and nothing says so.
"""
from __future__ import annotations


def user_message(n_images: int, text: str) -> list:
    """The user turn: ``n_images`` image blocks (one per frame, in time order), then the text."""
    return [{"role": "user", "content": [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": text}]}]


def assistant_message(text: str) -> list:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


CARD_FRAMES = 8  # frames the mp4-form card recipe samples per video (the method trains on 8)


def card_recipe(frames_column: str | None, config: str = "pref_explicit") -> str:
    """The dataset card's TRL DPO code (a Python block's body). ``frames_column``: the column listing each
    record's frame files (a ``--frames`` release); None: the release has the MP4s, and the code samples
    ``CARD_FRAMES`` uniform frames of each (the middle frame of each of N equal spans) with OpenCV.

    Either way the dataset it makes has TRL's vision columns (``images``, and the question as the user
    turn: TRL puts one image block per image before it), so DPOTrainer's collator gives the model the frames.
    tests/test_export_consumers.py runs this code as written and checks the batch's pixels."""
    head = ("import os\n"
            "from datasets import Image, Sequence, load_dataset\n"
            "from huggingface_hub import snapshot_download\n")
    if frames_column is None:
        head += ("import cv2\n"
                 "from PIL import Image as PILImage\n")
    body = ("\n"
            'folder = snapshot_download("<user>/<repo>", repo_type="dataset")   # or the path of a local copy of this folder\n'
            f'pairs = load_dataset(folder, "{config}", split="train")\n')
    if frames_column is None:
        body += ("\n"
                 f"def frames(video, n={CARD_FRAMES}):   # TRL takes frames, not videos: n uniform frames, one decoding pass\n"
                 "    cap = cv2.VideoCapture(os.path.join(folder, video))\n"
                 "    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))\n"
                 "    want = sorted({min(count - 1, (2 * k + 1) * count // (2 * n)) for k in range(n)})\n"
                 "    out = []\n"
                 "    for i in range(want[-1] + 1):\n"
                 "        ok, frame = cap.read()\n"
                 "        if ok and i in want:\n"
                 "            out.append(PILImage.fromarray(frame[:, :, ::-1]))\n"
                 "    cap.release()\n"
                 "    return out\n")
        images = 'frames(r["video"])'
    else:
        images = f'[os.path.join(folder, f) for f in r["{frames_column}"]]'
    body += ("\n"
             "# TRL's vision preference columns: the frames as \"images\" (TRL puts one image block per frame\n"
             "# before the question), the answers as assistant turns. Without \"images\" TRL trains on text only.\n"
             f'pairs = pairs.map(lambda r: {{"images": {images},\n'
             '                              "prompt": [{"role": "user", "content": r["question"]}],\n'
             '                              "chosen": [{"role": "assistant", "content": r["chosen"]}],\n'
             '                              "rejected": [{"role": "assistant", "content": r["rejected"]}]},\n'
             "                  remove_columns=pairs.column_names)\n"
             'pairs = pairs.cast_column("images", Sequence(Image()))\n'
             "\n"
             "# from trl import DPOConfig, DPOTrainer\n"
             "# DPOTrainer(model=model, args=DPOConfig(output_dir=\"dpo\"), train_dataset=pairs, processing_class=processor).train()\n")
    return head + body
