"""What train_sft.py and train_dpo.py share: options, method configs, data sources, the TRL run.

A method config (``configs/<name>.json``, or any JSON file given by path) names the trainer, the
TimeWarp data files it reads (``sources``), whether an external base set is needed (``external``:
none | optional | required), a default model and training settings. Options given on the command
line win over the config's ``training`` values, which win over the defaults here.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Optional

from timewarp.core.errors import UsageError
from timewarp.core.layout import Layout
from timewarp.core.stage import require_root
from timewarp.core.store import write_json
from timewarp.train import data as datalib

log = logging.getLogger("timewarp.train")

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
METHODS = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
STATE_FILE = "timewarp_train.json"

# defaults for every training setting a config or the command line may set
DEFAULTS = dict(learning_rate=5e-6, beta=0.1, num_train_epochs=1.0, max_steps=-1, per_device_train_batch_size=1,
                gradient_accumulation_steps=1, frames=8, lora=False, lora_r=16, lora_alpha=32, lora_dropout=0.05,
                max_length=None, bf16=False, gradient_checkpointing=False, warmup_steps=0, dtype=None, max_pixels=None,
                video_input=None)
# TimeWarp file name -> (export folder with the trainer's own format, pipeline folder)
SOURCE_DIRS = {"pref": ("trl_dpo", "pref_dir"), "sft": ("trl_sft", "sft_dir")}


def load_config(name_or_path: str) -> dict:
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise UsageError(f"--config {name_or_path}: no such method config (built in: {', '.join(METHODS)}, or a JSON file)")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UsageError(f"--config {path} is not JSON ({exc})")
    if not isinstance(cfg, dict) or cfg.get("trainer") not in ("dpo", "sft") or not isinstance(cfg.get("sources", []), list):
        raise UsageError(f"--config {path}: needs \"trainer\": \"dpo\"|\"sft\" and a \"sources\" list")
    bad = set(cfg.get("training", {})) - set(DEFAULTS)
    if bad:
        raise UsageError(f"--config {path}: unknown training settings {', '.join(sorted(bad))}")
    cfg["path"] = str(path)
    return cfg


def source_file(layout: Layout, name: str) -> Path:
    """The file a config source names: the trainer-format export if present, else the pipeline's own rows."""
    kind = name.split("_")[0]
    if kind not in SOURCE_DIRS:
        raise UsageError(f"config source {name!r}: expected a pref_* or sft_* file name")
    export_fmt, attr = SOURCE_DIRS[kind]
    for cand in (layout.export_dir(export_fmt) / f"{name}.jsonl", getattr(layout, attr) / f"{name}.jsonl"):
        if cand.is_file():
            return cand
    hint = "generate_pref_implicit.py" if name == "pref_implicit" else "./generate_data.sh"
    raise UsageError(f"{getattr(layout, attr) / (name + '.jsonl')} not found (nor exports/{export_fmt}/{name}.jsonl): "
                     f"run {hint} on {layout.root} first")


def build_parser(trainer: str, prog: str, doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root_dir", required=True, help="output root_dir of setup_dataset.sh + generate_data.sh")
    p.add_argument("--output_dir", required=True,
                   help="where the trained model, processor, trainer_state.json (loss of every step) and "
                        f"{STATE_FILE} (method, data, options) are written")
    default_cfg = "explicit" if trainer == "dpo" else "sft"
    p.add_argument("--config", default=default_cfg,
                   help=f"method config: {', '.join(METHODS)} (timewarp/train/configs) or a JSON file (default: {default_cfg})")
    p.add_argument("--model", default=None,
                   help="'tiny' (random Qwen2-VL built offline, for smoke runs), a local folder, or a hub name "
                        "(default: the config's model)")
    p.add_argument("--data", action="append", default=None,
                   help="train on this JSON/JSONL file instead of the config's sources (repeatable)")
    p.add_argument("--external", action="append", default=None,
                   help="external base set (JSONL; TRL vision rows or LLaVA-Hound-style rows with a frame folder "
                        "or video in 'video'); required by the combined and base_dpo configs (repeatable)")
    p.add_argument("--external_root", default=None,
                   help="folder the external set's relative frame folders / videos are in (default: the file's folder)")
    g = p.add_argument_group("training (default: the config's value, else the one in brackets)")
    g.add_argument("--max_steps", type=int, default=None, help="stop after this many optimizer steps [-1: epochs decide]")
    g.add_argument("--num_train_epochs", type=float, default=None, help="[1]")
    g.add_argument("--learning_rate", type=float, default=None, help="[5e-6]")
    g.add_argument("--per_device_train_batch_size", type=int, default=None, help="[1]")
    g.add_argument("--gradient_accumulation_steps", type=int, default=None, help="[1]")
    if trainer == "dpo":
        g.add_argument("--beta", type=float, default=None, help="DPO's beta [0.1]")
    g.add_argument("--frames", type=int, default=None,
                   help="frames sampled per video for rows that name a video rather than frames [8]")
    g.add_argument("--max_length", type=int, default=None, help="truncate sequences to this many tokens [no limit]")
    g.add_argument("--lora", action=argparse.BooleanOptionalAction, default=None, help="train LoRA adapters (peft) [off]")
    g.add_argument("--lora_r", type=int, default=None, help="[16]")
    g.add_argument("--lora_alpha", type=int, default=None, help="[32]")
    g.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="bfloat16 mixed precision (GPU) [off]")
    g.add_argument("--gradient_checkpointing", action=argparse.BooleanOptionalAction, default=None, help="[off]")
    g.add_argument("--max_pixels", type=int, default=None,
                   help="at most this many pixels per frame (Qwen2-VL: 28*28 per visual token, e.g. 200704 = 256 tokens) "
                        "[the processor's own]")
    g.add_argument("--video_input", action=argparse.BooleanOptionalAction, default=None,
                   help="feed each example's frames as one video (pixel_values_videos) instead of images "
                        "[on for Qwen2.5-VL, LLaVA-NeXT-Video, InternVL and tiny:<family>; off for Qwen2-VL]")
    g.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16", "auto"], help="weights dtype when loading [float32]")
    c = p.add_argument_group("common options")
    c.add_argument("--seed", type=int, default=42, help="seed of the data order, dropout and the tiny model's weights (default: 42)")
    c.add_argument("--limit", type=int, default=None, help="use at most this many examples per source (trial runs)")
    c.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def settings(cfg: dict, args: argparse.Namespace) -> dict:
    s = {**DEFAULTS, **cfg.get("training", {})}
    for k in DEFAULTS:
        v = getattr(args, k, None)
        if v is not None:
            s[k] = v
    if s["frames"] < 1:
        raise UsageError(f"--frames must be >= 1, got {s['frames']}")
    if s["max_steps"] in (0,) or s["max_steps"] < -1:
        raise UsageError(f"--max_steps must be >= 1 (or -1), got {s['max_steps']}")
    return s


def load_examples(trainer: str, cfg: dict, layout: Layout, args, frames: int) -> tuple[list, list]:
    build = datalib.pref_example if trainer == "dpo" else datalib.sft_example
    external = [Path(f) for f in (args.external or [])]
    if cfg.get("external") == "required" and not external and not args.data:
        raise UsageError(f"the {cfg.get('method', cfg['path'])} config needs an external base set: --external FILE "
                         f"(e.g. LLaVA-Hound's DPO JSONL, with --external_root its frame folders)")
    if external and cfg.get("external") == "none" and not args.data:
        raise UsageError(f"the {cfg.get('method')} config takes no external set; use --config combined or base_dpo")
    files = [Path(f) for f in args.data] if args.data else [source_file(layout, n) for n in cfg.get("sources", [])]
    examples, report = [], []
    for f in files + external:
        if not f.is_file():
            raise UsageError(f"{f} not found")
        bases = [f.parent, layout.root]
        if f in external and args.external_root:
            bases.insert(0, Path(args.external_root))
        src = datalib.FrameSource(bases, layout.frames_dir, frames, layout.root)
        got, skipped = datalib.read_examples(f, build, src, args.limit)
        log.info("%s: %d examples, %d rows skipped", f, len(got), skipped)
        report.append({"file": str(f), "examples": len(got), "skipped": skipped, "external": f in external})
        examples.extend(got)
    if not examples:
        raise UsageError(f"no usable training examples in {', '.join(str(f) for f in files + external) or '(no files)'}")
    return examples, report


def frame_times_collator(processor, max_length):
    """TRL's vision preference collator, handing each example's frame times to the processor for the prompts
    (which it repeats for chosen and rejected): Qwen2.5-VL's second_per_grid_ts."""
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    class FrameTimesCollator(DataCollatorForVisionPreference):
        def torch_call(self, examples):
            self.processor.frame_times = [e["frame_times"] for e in examples] * 2
            try:
                return super().torch_call(examples)
            finally:
                self.processor.frame_times = None

    return FrameTimesCollator(processor=processor, max_length=max_length)


def lora_config(s: dict):
    from peft import LoraConfig

    # the language model's attention and MLP projections; the vision tower stays frozen
    return LoraConfig(r=int(s["lora_r"]), lora_alpha=int(s["lora_alpha"]), lora_dropout=float(s["lora_dropout"]),
                      target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
                      task_type="CAUSAL_LM")


def run(trainer: str, args: argparse.Namespace, callbacks: Optional[list] = None) -> dict:
    """Train per ``args`` (a parsed build_parser namespace); returns a summary (also in <output_dir>/timewarp_train.json)."""
    t0 = time.monotonic()
    layout = Layout(require_root(args.root_dir, "--root_dir").resolve())
    cfg = load_config(args.config)
    if cfg["trainer"] != trainer:
        raise UsageError(f"--config {args.config} is a {cfg['trainer']} config; use train_{cfg['trainer']}.py")
    s = settings(cfg, args)
    model_name = args.model or cfg.get("model")
    if not model_name:
        raise UsageError("--model is required (the config names none)")
    from timewarp.train import models

    models.check_model_name(model_name)  # before any data is read
    examples, report = load_examples(trainer, cfg, layout, args, s["frames"])

    import torch
    from transformers import set_seed

    set_seed(args.seed)
    model, processor = models.load(model_name, seed=args.seed, dtype=s["dtype"], max_pixels=s["max_pixels"],
                                   video=s["video_input"])
    s["video_input"] = models.is_video(processor)
    dataset = datalib.to_dataset(examples)
    out = Path(args.output_dir)
    common = dict(output_dir=str(out), max_steps=int(s["max_steps"]), num_train_epochs=float(s["num_train_epochs"]),
                  learning_rate=float(s["learning_rate"]), per_device_train_batch_size=int(s["per_device_train_batch_size"]),
                  gradient_accumulation_steps=int(s["gradient_accumulation_steps"]), warmup_steps=s["warmup_steps"],
                  logging_steps=1, save_strategy="no", report_to=[], seed=args.seed, data_seed=args.seed,
                  bf16=bool(s["bf16"]), max_length=s["max_length"], dataloader_num_workers=0,
                  dataloader_pin_memory=torch.cuda.is_available())
    if s["gradient_checkpointing"]:
        common["gradient_checkpointing"] = True
    peft_config = lora_config(s) if s["lora"] else None
    collator = None
    if s["video_input"] and model.config.model_type == "qwen2_5_vl":  # its video RoPE needs the frames' times
        if trainer != "dpo" or any("frame_times" not in e for e in examples):
            raise UsageError(f"--model {model_name}: Qwen2.5-VL video input needs each frame's time: DPO on the "
                             f"trl_dpo export (python timewarp/export.py --format trl_dpo), whose rows carry frame_times; "
                             f"or --no-video_input to train a Qwen2.5-VL checkpoint on images")
        collator = frame_times_collator(processor, s["max_length"])
        common["remove_unused_columns"] = False  # keep frame_times for the collator
    if trainer == "dpo":
        from trl import DPOConfig, DPOTrainer

        targs = DPOConfig(beta=float(s["beta"]), **common)
        ref_model = None
        if peft_config is None:  # full fine-tuning: the frozen reference is a copy of the starting weights
            import copy

            ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        tr = DPOTrainer(model=model, ref_model=ref_model, args=targs, train_dataset=dataset, processing_class=processor,
                        peft_config=peft_config, callbacks=callbacks, data_collator=collator)
    else:
        from trl import SFTConfig, SFTTrainer

        targs = SFTConfig(completion_only_loss=True, **common)
        tr = SFTTrainer(model=model, args=targs, train_dataset=dataset, processing_class=processor,
                        peft_config=peft_config, callbacks=callbacks)
    result = tr.train()
    model = tr.model
    if peft_config is not None:  # a merged model: --output_dir loads by path like any checkpoint (predict.py --model)
        model = model.merge_and_unload()
    model.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    tr.save_state()  # trainer_state.json: log_history with every step's loss
    losses = [h["loss"] for h in tr.state.log_history if "loss" in h]
    summary = {"method": cfg.get("method"), "config": cfg["path"], "trainer": trainer, "model": model_name,
               "examples": len(examples), "data": report, "settings": s, "seed": args.seed,
               "steps": tr.state.global_step, "first_loss": losses[0] if losses else None,
               "last_loss": losses[-1] if losses else None, "train_loss": result.training_loss,
               "all_losses_finite": all(math.isfinite(x) for x in losses),
               "device": str(next(tr.model.parameters()).device), "torch": torch.__version__,
               "seconds": round(time.monotonic() - t0, 1)}
    write_json(out / STATE_FILE, summary)
    print(f"[train_{trainer}] {cfg.get('method')}: {tr.state.global_step} steps on {len(examples)} examples, "
          f"loss {summary['first_loss']} -> {summary['last_loss']}; model and trainer_state.json in {out}")
    return summary
