"""A tiny, randomly initialised Qwen2-VL that needs no download (``--model tiny``).

Same architecture and processor classes as Qwen/Qwen2-VL-2B-Instruct and Qwen2.5-VL (vision tower with
14-px patches merged 2x2, M-RoPE language model, ``<|image_pad|>`` placeholders expanded by the
processor), shrunk to ~0.2 M parameters so a few TRL steps run on a CPU in seconds:

* tokenizer: byte-level BPE over the 256 byte symbols with no merges (every text encodes, one token
  per byte) plus Qwen's special tokens, built with ``tokenizers``;
* image processor: ``Qwen2VLImageProcessor`` (the PIL backend) with its class defaults except the pixel
  budget: at most ``MAX_PIXELS`` per frame (<= 16 visual tokens), so a CPU step takes a second;
* chat template: Qwen2-VL's (image blocks become ``<|vision_start|><|image_pad|><|vision_end|>``);
* model: ``Qwen2VLForConditionalGeneration`` from a small ``Qwen2VLConfig``, weights from ``seed``.

It learns nothing useful; it exists so the training and inference code paths run for real in tests/CI.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

MAX_PIXELS = 28 * 28 * 16

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]

# Qwen2-VL / Qwen2.5-VL's chat template (as shipped with the instruct checkpoints).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            max_position_embeddings=8192,
            # head_dim 32 -> 16 rotary frequencies split over (time, height, width)
            rope_parameters={"rope_type": "default", "mrope_section": [4, 6, 6], "rope_theta": 10000.0})
VISION = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14, spatial_merge_size=2,
              temporal_patch_size=2)


def _processor_class():
    """Qwen2VLProcessor without its video processor.

    transformers' video processors need torchvision, and the torchvision wheels on PyPI are CUDA builds
    that do not load next to the CPU torch wheel. TimeWarp feeds frames as images, so the video half is
    never used: this subclass drops it (images and text behave exactly as in Qwen2VLProcessor).
    """
    from transformers import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class Qwen2VLImageProcessorOnly(Qwen2VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return Qwen2VLImageProcessorOnly


VISION_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
VISION_VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"


def frames_to_video(image_processor, frames: list):
    """One video's frames (time order, same size) as Qwen2-VL's video input, without torchvision:
    (pixel_values_videos rows, [t, h, w]). The image processor makes each frame's patches (a frame repeated
    over the temporal patch); consecutive frames are then paired into temporal patches in the order of
    Qwen2VLVideoProcessor.patchify (t, merged rows, merged cols, C, frame in pair, ph, pw); an odd count
    repeats the last frame, as that processor does."""
    import torch

    frames = list(frames) + list(frames[-1:]) * (len(frames) % 2)
    out = image_processor(images=frames, return_tensors="pt")
    pv, thw = out["pixel_values"], out["image_grid_thw"]
    if len({tuple(x) for x in thw.tolist()}) != 1:
        raise ValueError("a video's frames must all have the same size")
    n, (_, gh, gw) = len(frames), thw[0].tolist()
    tp, ps = image_processor.temporal_patch_size, image_processor.patch_size
    per_frame = pv.reshape(n, gh * gw, -1, tp, ps, ps)[:, :, :, 0]           # (n, S, C, ps, ps): one copy per frame
    pairs = per_frame.reshape(n // tp, tp, gh * gw, -1, ps, ps).permute(0, 2, 3, 1, 4, 5)  # (t, S, C, tp, ps, ps)
    return pairs.reshape((n // tp) * gh * gw, -1), torch.tensor([n // tp, gh, gw])


def seconds_per_patch(times, temporal_patch_size: int = 2) -> float:
    """Seconds per temporal patch of frames sampled at ``times`` (uniform spacing: their mean step)."""
    times = [float(t) for t in times or []]
    if len(times) < 2 or times[-1] <= times[0]:
        raise ValueError(f"frame times {times} give no spacing")
    return temporal_patch_size * (times[-1] - times[0]) / (len(times) - 1)


def _video_processor_class():
    """The image-only processor whose frames go in as one video per text (``--model tiny:qwen2_vl``).

    TRL's vision collators hand an example's frames over as ``images`` with one image block each; this
    processor turns each text's run of image blocks into one video block and the frames into
    ``pixel_values_videos`` / ``video_grid_thw``, so the model takes its video path (temporal patches of
    two frames, M-RoPE time positions) instead of N unrelated images."""
    import torch
    from transformers import BatchFeature

    base = _processor_class()

    class Qwen2VLFramesAsVideo(base):
        frames_as_video = True
        # Qwen2.5-VL's video RoPE counts time: set by FrameTimesCollator to each text's frame times (s) before a
        # call, it becomes second_per_grid_ts (seconds per temporal patch); None: Qwen2-VL, which has no times.
        frame_times = None

        def __call__(self, images=None, text=None, videos=None, **kwargs):
            if not images:
                return super().__call__(images=None, text=text, **kwargs)
            texts = [text] if isinstance(text, str) else list(text)
            per_text = images if isinstance(images[0], (list, tuple)) else [images]
            if len(per_text) != len(texts):
                raise ValueError(f"{len(per_text)} frame lists for {len(texts)} texts")
            merge = self.image_processor.merge_size ** 2
            pixels, grids, out_texts = [], [], []
            for t, frames in zip(texts, per_text):
                if t.count(VISION_IMAGE) != len(frames):
                    raise ValueError(f"{t.count(VISION_IMAGE)} image blocks for {len(frames)} frames")
                pv, grid = frames_to_video(self.image_processor, frames)
                t = t.replace(VISION_IMAGE * len(frames), VISION_VIDEO, 1)
                out_texts.append(t.replace("<|video_pad|>", "<|video_pad|>" * (int(grid.prod()) // merge)))
                pixels.append(pv)
                grids.append(grid)
            tok_keys = ("padding", "padding_side", "return_tensors", "add_special_tokens", "truncation", "max_length")
            data = dict(self.tokenizer(out_texts, **{k: v for k, v in kwargs.items() if k in tok_keys}))
            ids = data["input_ids"]
            mm = self.create_mm_token_type_ids(ids.tolist() if hasattr(ids, "tolist") else ids)  # 2 = video token
            data.update(mm_token_type_ids=torch.tensor(mm) if hasattr(ids, "tolist") else mm,
                        pixel_values_videos=torch.cat(pixels), video_grid_thw=torch.stack(grids))
            if self.frame_times is not None:
                data["second_per_grid_ts"] = torch.tensor([seconds_per_patch(t, self.image_processor.temporal_patch_size)
                                                           for t in self.frame_times])
            return BatchFeature(data=data, tensor_type=kwargs.get("return_tensors"))

    return Qwen2VLFramesAsVideo


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def build_processor(video: bool = False):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    cls = _video_processor_class() if video else _processor_class()
    return cls(image_processor=Qwen2VLImageProcessorPil(max_pixels=MAX_PIXELS), tokenizer=build_tokenizer(),
               chat_template=CHAT_TEMPLATE)


# Qwen2.5-VL's vision tower (window attention, gated MLP), as small: one full-attention block
VISION_2_5 = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, fullatt_block_indexes=[0], window_size=56,
                  tokens_per_second=4)


def build_model(tokenizer, seed: int = 0, family: str = "qwen2_vl"):
    import torch
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLConfig,
                              Qwen2VLForConditionalGeneration)

    config_cls, model_cls, vision = {"qwen2_vl": (Qwen2VLConfig, Qwen2VLForConditionalGeneration, VISION),
                                     "qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, VISION_2_5)}[family]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = config_cls(
        text_config=dict(TEXT, vocab_size=len(tokenizer), bos_token_id=ids["<|endoftext|>"],
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(vision),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model_cls(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return model


def build(seed: int = 0, save_dir: Optional[Path] = None, video: bool = False, family: str = "qwen2_vl"):
    """(model, processor) of the tiny Qwen2-VL (or Qwen2.5-VL, always on video); with ``save_dir`` also saved
    there (loadable by path); with ``video`` the frames go in as one video (pixel_values_videos), not images."""
    processor = build_processor(video or family == "qwen2_5_vl")
    model = build_model(processor.tokenizer, seed, family)
    if save_dir is not None:
        model.save_pretrained(save_dir)
        processor.save_pretrained(save_dir)
    return model, processor


# ---------------------------------------------------------------- tiny LLaVA-NeXT-Video and InternVL

FRAME_SIZE = 56         # frame side after the image processor: 4x4 patches of 14 px, 2x2 merged -> 4 tokens a frame
FRAMES_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
                   "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% elif c['type'] == 'text' %}"
                   "{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
                   "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TOKENS_PER_FRAME = (FRAME_SIZE // 14) ** 2 // 4


def image_block_text(chat_template) -> str:
    """What ``chat_template`` writes for one image block (the text between a user turn with and without one);
    "" when it cannot be told."""
    import jinja2

    if not isinstance(chat_template, str):
        return ""
    try:
        tpl = jinja2.Environment().from_string(chat_template)
        render = lambda blocks: tpl.render(messages=[{"role": "user", "content": blocks + [{"type": "text", "text": "Q"}]}],
                                           add_generation_prompt=False, bos_token="", eos_token="")
        with_image, without = render([{"type": "image"}]), render([])
    except Exception:  # noqa: BLE001 - a template this cannot render: the default placeholder
        return ""
    n = 0
    while n < len(without) and with_image[n] == without[n]:
        n += 1
    tail = len(without) - n
    return with_image[n:len(with_image) - tail] if tail else with_image[n:]


def _frames_processor_class(family: str):
    """Frames as one video without torchvision (the families' video processors need it): each text's run of
    ``<image>`` blocks (FRAMES_TEMPLATE) becomes the family's video text, the frames go through its image
    processor. llava_next_video: ``<video>`` x 4 a frame (the model pools 2x2), ``pixel_values_videos``
    (batch, frames, C, H, W); internvl: its video form, ``Frame{k}: <img><IMG_CONTEXT> x 4</img>`` lines with
    the frames as tiles in ``pixel_values``."""
    import torch
    from transformers import BatchFeature
    from transformers.processing_utils import ProcessorMixin

    class FramesAsVideo(ProcessorMixin):
        frames_as_video = True

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, tokens_per_frame=TOKENS_PER_FRAME,
                     **kwargs):
            super().__init__(image_processor, tokenizer, chat_template=chat_template)
            self.tokens_per_frame = int(tokens_per_frame)   # a checkpoint's own: models.frames_processor
            self.placeholder = image_block_text(chat_template) or "<image>"

        def video_text(self, n: int) -> str:
            if family == "llava_next_video":
                return "<video>" * (self.tokens_per_frame * n)
            return "\n".join(f"Frame{k + 1}: <img>" + "<IMG_CONTEXT>" * self.tokens_per_frame + "</img>" for k in range(n))

        def __call__(self, images=None, text=None, videos=None, **kwargs):
            tok_keys = ("padding", "padding_side", "return_tensors", "add_special_tokens", "truncation", "max_length")
            tok_kwargs = {k: v for k, v in kwargs.items() if k in tok_keys}
            texts = [text] if isinstance(text, str) else list(text)
            if not images:
                return BatchFeature(data=dict(self.tokenizer(texts, **tok_kwargs)), tensor_type=kwargs.get("return_tensors"))
            per_text = images if isinstance(images[0], (list, tuple)) else [images]
            if len(per_text) != len(texts) or len({len(f) for f in per_text}) != 1:
                raise ValueError("one list of frames per text, the same number of frames in each")
            pixels, out_texts = [], []
            for t, frames in zip(texts, per_text):
                if t.count(self.placeholder) != len(frames) or self.placeholder * len(frames) not in t:
                    raise ValueError(f"{t.count(self.placeholder)} image blocks for {len(frames)} frames")
                pixels.append(self.image_processor(images=list(frames), return_tensors="pt")["pixel_values"])
                out_texts.append(t.replace(self.placeholder * len(frames), self.video_text(len(frames)), 1))
            data = dict(self.tokenizer(out_texts, **tok_kwargs))
            if family == "llava_next_video":
                data["pixel_values_videos"] = torch.stack(pixels)
            else:
                data["pixel_values"] = torch.cat(pixels)
            return BatchFeature(data=data, tensor_type=kwargs.get("return_tensors"))

    FramesAsVideo.__name__ = FramesAsVideo.__qualname__ = {"llava_next_video": "LlavaNextVideoFramesAsVideo",
                                                           "internvl": "InternVLFramesAsVideo"}[family]
    return FramesAsVideo


def build_frames_model(family: str, seed: int = 0):
    """(model, processor) of a tiny randomly initialised LLaVA-NeXT-Video (CLIP tower, Llama language model; the
    LLaVA-Hound lineage in transformers) or InternVL (InternViT, Qwen2 language model; InternVideo2.5's base),
    ~50-60 k parameters, with the frames-as-video processor above."""
    import torch
    from transformers import (CLIPVisionConfig, InternVLConfig, InternVLForConditionalGeneration, LlamaConfig,
                              LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration)
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    tok = build_tokenizer()
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    eos = "<|im_end|>"
    if family == "llava_next_video":
        tok.add_special_tokens({"additional_special_tokens": ["<video>"]})
        images = CLIPImageProcessorPil(size={"shortest_edge": FRAME_SIZE}, crop_size={"height": FRAME_SIZE, "width": FRAME_SIZE})
        config = LlavaNextVideoConfig(
            vision_config=CLIPVisionConfig(**small, image_size=FRAME_SIZE, patch_size=14),
            text_config=LlamaConfig(**small, num_key_value_heads=1, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                                    eos_token_id=tok.convert_tokens_to_ids(eos)),
            video_token_id=tok.convert_tokens_to_ids("<video>"), vision_feature_layer=-1, spatial_pool_stride=2,
            image_grid_pinpoints=[[FRAME_SIZE, FRAME_SIZE]])
        model_cls = LlavaNextVideoForConditionalGeneration
    else:
        tok.add_special_tokens({"additional_special_tokens": ["<img>", "</img>", "<IMG_CONTEXT>"]})
        images = GotOcr2ImageProcessorPil(size={"height": FRAME_SIZE, "width": FRAME_SIZE}, crop_to_patches=False)
        config = InternVLConfig(
            vision_config=dict(small, image_size=[FRAME_SIZE, FRAME_SIZE], patch_size=[14, 14]),
            text_config=dict(small, model_type="qwen2", num_key_value_heads=1, vocab_size=len(tok),
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.convert_tokens_to_ids(eos)),
            image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), downsample_ratio=0.5, vision_feature_layer=-1)
        model_cls = InternVLForConditionalGeneration
    tok.chat_template = FRAMES_TEMPLATE
    processor = _frames_processor_class(family)(image_processor=images, tokenizer=tok, chat_template=FRAMES_TEMPLATE)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model_cls(config)
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids(eos)
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, processor
