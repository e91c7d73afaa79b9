"""Run inside ms-swift's own environment: its dataset loader and template inputs on an export.

  <venv>/bin/python ms_swift_reader.py <jobs.json>      jobs: {name: [jsonl file, ROOT_IMAGE_DIR|null]}

swift.dataset.load_dataset (its JSONL loader and auto preprocessor: messages, rejected_response, media), then
swift.template.TemplateInputs.from_dict, which splits each row into the chosen and rejected inputs a DPO
template encodes; each side's videos are resolved as its templates do (vision_utils._check_path, which joins
$ROOT_IMAGE_DIR). Prints {job: [{"chosen": {"messages", "videos"}, "rejected": {...}}]}.
Not run: the Qwen2-VL template's frame reader (qwen_vl_utils.fetch_video needs torchvision, whose PyPI wheels
do not load beside the CPU torch wheel).
"""
import json
import os
import sys


def resolve(video, check_path):
    if isinstance(video, list):
        return [check_path(f) for f in video]
    return check_path(video)


def read(path: str, root_image_dir) -> list:
    if root_image_dir:
        os.environ["ROOT_IMAGE_DIR"] = root_image_dir
    else:
        os.environ.pop("ROOT_IMAGE_DIR", None)
    from swift.dataset import load_dataset
    from swift.template import TemplateInputs
    from swift.template.vision_utils import _check_path

    train, _ = load_dataset([path], split_dataset_ratio=0.0, load_from_cache_file=False)
    out = []
    for row in train:
        inputs = TemplateInputs.from_dict(dict(row))
        sides = {}
        for side in ("chosen", "rejected"):
            std = getattr(inputs, side)
            sides[side] = {"messages": std.messages, "videos": [resolve(v, _check_path) for v in std.videos],
                           "images": std.images}
        out.append(sides)
    return out


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    print(json.dumps({job: read(*args) for job, args in jobs.items()}, default=str))
