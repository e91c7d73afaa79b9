"""Load a vision-language model and its processor: ``tiny`` (built offline), a local folder or a hub name."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Optional

from timewarp.core.errors import UsageError

log = logging.getLogger("timewarp.train")

TINY = "tiny"
TINY_VIDEO = {"tiny:qwen2_vl", "tiny:qwen2_5_vl", "tiny:llava_next_video", "tiny:internvl"}   # tiny models trained on video input (pixel_values_videos)
TINY_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "llava_next_video", "internvl")


VIDEO_PROCESSOR = "Qwen2VLFramesAsVideo"   # tiny._video_processor_class: frames in as one video


def saved_as_video(name: str) -> bool:
    """A folder whose processor was saved by a video-input run (train on video, predict on video)."""
    try:
        return json.loads((Path(name) / "processor_config.json").read_text()).get("processor_class") == VIDEO_PROCESSOR
    except (OSError, ValueError, AttributeError):
        return False


FRAMES_FAMILIES = ("llava_next_video", "internvl")   # no image-only processor without torchvision: always video


def frames_processor(name: str, family: str, config):
    """LLaVA-NeXT-Video / InternVL processor from a checkpoint folder (or hub name) without torchvision: the tiny
    models' frames-as-video processor with the checkpoint's tokenizer, chat template, frame preprocessing (its
    video processor's settings when saved, else its image processor's; in processor_config.json or their own
    files) and visual tokens per frame."""
    from transformers import AutoTokenizer
    from transformers.utils import cached_file

    from timewarp.train import tiny

    def saved(file: str) -> dict:
        path = cached_file(name, file, _raise_exceptions_for_missing_entries=False)
        return json.loads(Path(path).read_text()) if path else {}

    # the video processor's settings before the image processor's; transformers 5 nests both in processor_config.json
    nested = saved("processor_config.json")
    settings = next((d for d in (nested.get("video_processor"), saved("video_preprocessor_config.json"),
                                 nested.get("image_processor"), saved("preprocessor_config.json")) if d), {})
    settings = {k: v for k, v in settings.items() if not k.endswith(("_type", "_class")) and k != "auto_map"}
    vision = config.vision_config
    side = vision.image_size[0] if isinstance(vision.image_size, (list, tuple)) else vision.image_size
    patch = vision.patch_size[0] if isinstance(vision.patch_size, (list, tuple)) else vision.patch_size
    if family == "llava_next_video":   # each frame as LLaVA-NeXT-Video's video processor does it: resize, crop, CLIP norm
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as cls

        per_frame = (side // patch // config.spatial_pool_stride) ** 2
    else:                              # InternVL's video frames: resized whole, no tiles
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil as cls

        settings["crop_to_patches"] = False
        per_frame = int((side // patch) ** 2 * config.downsample_ratio ** 2)
    tok = AutoTokenizer.from_pretrained(name)
    template = tok.chat_template or tiny.FRAMES_TEMPLATE
    return tiny._frames_processor_class(family)(image_processor=cls.from_dict(settings), tokenizer=tok,
                                                chat_template=template, tokens_per_frame=per_frame)


def load_processor(name: str, video: Optional[bool] = False):
    """The model's processor; for Qwen2-VL-family folders without torchvision, the image-only one (tiny.py);
    with ``video`` (or a folder saved by a video-input run), the one that feeds frames as one video; ``video``
    None: the family's default (video for Qwen2.5-VL, LLaVA-NeXT-Video and InternVL, images for Qwen2-VL).
    LLaVA-NeXT-Video and InternVL always get the frames-as-video processor (frames_processor)."""
    from transformers import AutoConfig, AutoProcessor

    from timewarp.train import tiny

    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--model {name}: no model config there ({str(exc).splitlines()[0]})")
    model_type = config.model_type
    if model_type in FRAMES_FAMILIES:
        return frames_processor(name, model_type, config)
    if video is None:
        video = model_type == "qwen2_5_vl"
    video = video or saved_as_video(name)
    proc = None
    if not video:
        try:
            proc = AutoProcessor.from_pretrained(name)
        except (ImportError, ValueError, AttributeError, TypeError, OSError) as exc:
            log.debug("AutoProcessor(%s) failed: %s", name, exc)
        if proc is not None and getattr(proc, "image_processor", None) is not None:
            return proc
    # no torchvision (CPU wheels): AutoProcessor cannot build the video half of Qwen2-VL's processor
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    if model_type not in ("qwen2_vl", "qwen2_5_vl"):
        raise UsageError(f"--model {name}: " + (f"video input is built for Qwen2-VL, Qwen2.5-VL, LLaVA-NeXT-Video and "
                                                 f"InternVL (model type {model_type})" if video
                         else f"could not load its processor (model type {model_type}); install torchvision matching "
                              f"torch, or use a Qwen2-VL / Qwen2.5-VL / LLaVA-NeXT-Video / InternVL model"))
    tok = AutoTokenizer.from_pretrained(name)
    cls = tiny._video_processor_class() if video else tiny._processor_class()
    return cls(image_processor=Qwen2VLImageProcessorPil.from_pretrained(name), tokenizer=tok,
               chat_template=tok.chat_template or tiny.CHAT_TEMPLATE)


def is_video(processor) -> bool:
    """Whether ``processor`` feeds each example's frames as one video."""
    return bool(getattr(processor, "frames_as_video", False))


def set_max_pixels(processor, max_pixels: Optional[int]) -> None:
    """Cap the pixels per frame of a Qwen2-VL-style image processor (fewer visual tokens, less memory)."""
    if not max_pixels:
        return
    ip = processor.image_processor
    size = getattr(ip, "size", None)
    if size is None or getattr(size, "longest_edge", None) is None and not (isinstance(size, dict) and "longest_edge" in size):
        raise UsageError(f"--max_pixels: the {type(ip).__name__} has no pixel budget to set")
    min_pixels = size["shortest_edge"] if isinstance(size, dict) else size.shortest_edge
    ip.size = {"shortest_edge": min(int(min_pixels), int(max_pixels)), "longest_edge": int(max_pixels)}


def looks_local(name: str) -> bool:
    """A ``--model`` that can only mean a folder: a path form (/, ./, ../, ~, more than one /, a backslash),
    a path whose parent folder is here (runs/explicitt when runs/ exists), or text that is no hub id (org/name
    of letters, digits, -, _, .)."""
    if "/" in name and Path(name).expanduser().parent.is_dir():
        return True
    if name.startswith(("/", "./", "../", "~", ".\\")) or name in (".", "..") or "\\" in name or name.count("/") > 1 \
            or name.endswith("/"):
        return True
    return re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) is None or ".." in name or name.startswith(("-", "."))


def check_model_name(name: str) -> None:
    """A missing local folder fails at once (the hub would be asked, with retries, for a name that is a path)."""
    if name != TINY and not name.startswith(TINY + ":") and looks_local(name) and not Path(name).expanduser().exists():
        raise UsageError(f"--model {name}: no such folder (a hub model is named org/name, e.g. Qwen/Qwen2-VL-2B-Instruct)")


def load(name: str, seed: int = 0, dtype: Optional[str] = None, max_pixels: Optional[int] = None,
         video: Optional[bool] = False):
    """(model, processor) for ``--model``: ``tiny``, ``tiny:<family>``, a folder written by save_pretrained, or a
    hub name (downloaded, then the same folder code); ``video``: the processor feeds each example's frames as one
    video; None: the family's default (load_processor)."""
    check_model_name(name)
    if name.startswith(TINY + ":") and name not in TINY_VIDEO:
        family = name.split(":", 1)[1]
        raise UsageError(f"--model {name}: " + (f"the tiny {family} is not built yet (video input: {', '.join(sorted(TINY_VIDEO))})"
                                                 if family in TINY_FAMILIES else
                                                 f"no tiny family {family} (choose from {', '.join(TINY_FAMILIES)})"))
    if name != TINY and not name.startswith(TINY + ":") and looks_local(name):
        name = str(Path(name).expanduser())
    if name == TINY or name in TINY_VIDEO:
        from timewarp.train import tiny

        family = name.split(":", 1)[1] if ":" in name else "qwen2_vl"
        if family in ("llava_next_video", "internvl"):
            model, processor = tiny.build_frames_model(family, seed=seed)
        else:
            model, processor = tiny.build(seed=seed, video=bool(video) or name in TINY_VIDEO, family=family)
        set_max_pixels(processor, max_pixels)
        return model, processor
    from transformers import AutoModelForImageTextToText

    kwargs = {}
    if dtype and dtype != "auto":
        import torch

        kwargs["dtype"] = getattr(torch, dtype)
    elif dtype == "auto":
        kwargs["dtype"] = "auto"
    try:
        model = AutoModelForImageTextToText.from_pretrained(name, **kwargs)
    except OSError as exc:
        where = "folder" if Path(name).exists() else "hub name (needs network) or folder"
        raise UsageError(f"--model {name}: not a loadable {where} ({str(exc).splitlines()[0]})")
    processor = load_processor(name, video)
    set_max_pixels(processor, max_pixels)
    return model, processor
