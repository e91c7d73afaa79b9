"""Run inside LLaMA-Factory's own environment: its dataset loader and Qwen2-VL media plugin on an export.

  <venv>/bin/python llamafactory_reader.py <jobs.json>      jobs: {name: [dataset_dir, media_dir|null, out_dir, video_fps]}

For every entry of <dataset_dir>/dataset_info.json: llamafactory.data.loader._load_single_dataset (dataset_info
parsing, datasets' JSON loader, the sharegpt converter with _find_medias joining media_dir), then
mm_plugin's Qwen2VLPlugin: _validate_messages (placeholders = media) and _regularize_videos (a frame list or
an mp4 read as one video). Writes each video's frames as PNGs under <out_dir> and prints one JSON object:
{job: {entry: [{"prompt", "response", "videos", "frames": [png], "fps"}]}} (one process: the imports take ~30 s).
"""
import copy
import json
import os
import sys
import types

from transformers import Seq2SeqTrainingArguments  # (first: transformers notes torchaudio as absent)

# LLaMA-Factory's mm_plugin imports torchaudio at the top; PyPI's torchaudio wheels are CUDA builds that do not
# load beside the CPU torch wheel, and no audio is read here.
sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))

from llamafactory.data.loader import _load_single_dataset  # noqa: E402
from llamafactory.data.mm_plugin import get_mm_plugin  # noqa: E402
from llamafactory.data.parser import get_dataset_list  # noqa: E402
from llamafactory.hparams import DataArguments, ModelArguments  # noqa: E402


def read(dataset_dir: str, media_dir, out_dir: str, video_fps: float) -> dict:
    with open(os.path.join(dataset_dir, "dataset_info.json")) as f:
        names = sorted(json.load(f))
    data_args = DataArguments(dataset_dir=dataset_dir, media_dir=media_dir, dataset=",".join(names))
    model_args = ModelArguments(model_name_or_path="unused")
    training_args = Seq2SeqTrainingArguments(output_dir=os.path.join(out_dir, "trainer"), report_to=[])
    plugin = get_mm_plugin("qwen2_vl", image_token="<|image_pad|>", video_token="<|video_pad|>")
    result = {}
    for name in names:
        (attr,) = get_dataset_list([name], dataset_dir)
        rows = []
        for i, row in enumerate(_load_single_dataset(attr, model_args, data_args, training_args)):
            plugin._validate_messages(row["_prompt"], [], row["_videos"] or [], [])
            videos = copy.deepcopy(row["_videos"])  # (_regularize_videos pads a frame list in place)
            got = plugin._regularize_videos(videos, image_max_pixels=768 * 768, image_min_pixels=32 * 32,
                                            video_fps=video_fps, video_maxlen=128)
            (frames,) = got["videos"]
            files = []
            for k, im in enumerate(frames):
                path = os.path.join(out_dir, name, str(i), f"{k:03d}.png")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                im.save(path)
                files.append(path)
            rows.append({"prompt": row["_prompt"], "response": row["_response"], "videos": row["_videos"],
                         "frames": files, "fps": got["fps_per_video"][0]})
        result[name] = rows
    return result


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    print(json.dumps({job: read(*args) for job, args in jobs.items()}))
