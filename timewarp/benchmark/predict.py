"""Run a video model on a TimeWarp benchmark and write the predictions evaluate.py scores.

  # any OpenAI-compatible vision endpoint (vLLM / SGLang serving Qwen2.5-VL, a hosted API):
  python timewarp/benchmark/predict.py --benchmark <out>/benchmark/shuffled.jsonl --output preds.jsonl \\
      --llm_base_url http://localhost:8000/v1 --llm_model Qwen/Qwen2.5-VL-7B-Instruct
  # a local transformers model (a train_*.py --output_dir, a hub name, or 'tiny'):
  python timewarp/benchmark/predict.py --benchmark <out>/benchmark/shuffled.jsonl --output preds.jsonl --model runs/explicit
  python timewarp/benchmark/evaluate.py --benchmark <out>/benchmark/shuffled.jsonl --predictions preds.jsonl

Each question's video gives --frames frames sampled uniformly (timewarp.media.frames; cached as JPEGs under
<root_dir>/frames/), sent in order as image parts before the question's prompt (question + lettered
options) and "Answer with the option's letter from the given choices directly." The endpoint is
called through timewarp.text.llm.ChatClient: replies cached under <root_dir>/cache (a rerun pays for
nothing twice), retries on 429/5xx/timeouts, at most --llm_concurrency requests in flight; the key
comes from $OPENAI_API_KEY (not needed for localhost). Greedy decoding (temperature 0) either way.

Output: one JSONL line per question, {"qid", "prediction"} (plus "error" when the model could not be
asked: such a question scores as wrong, and the exit status is 1).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from timewarp.benchmark.scoring import load_records
from timewarp.core.errors import ItemError, UsageError
from timewarp.text.trl_messages import user_message
from timewarp.core.layout import Layout
from timewarp.text.llm import ChatClient, ChatRequest, LLMError, image_part, text_part
from timewarp.core.stage import StageConfig, cli, option
from timewarp.core.store import write_jsonl
from timewarp.train.data import FrameSource

log = logging.getLogger("timewarp.predict")

POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."
DEFAULT_FRAMES = 8


def question_text(rec: dict) -> str:
    if isinstance(rec.get("prompt"), str) and rec["prompt"].strip():
        body = rec["prompt"]
    else:  # MVBench-style export: question + candidates
        opts = rec.get("options") or rec.get("candidates") or []
        body = rec["question"] + "".join(f"\n{'ABCD'[i]}. {o}" for i, o in enumerate(opts))
    return body + POST_PROMPT


def frame_source(root: Path, frames: int):
    return FrameSource([root], Layout(root).frames_dir, frames, root)


def _frames(src, rec: dict) -> list[Path]:
    video = rec.get("video")
    if not isinstance(video, str) or not video:
        raise ItemError("record lacks a field", "video")
    return src.frames_of_video(video)


def predict_api(records: list, src, base_url: str, model: str, cache_dir: Path, *, concurrency: int = 4,
                max_retries: int = 4, timeout: float = 120.0, max_new_tokens: int = 32) -> list[dict]:
    client = ChatClient(base_url, model, cache_dir, concurrency=concurrency, max_retries=max_retries, timeout=timeout)
    client.preflight()
    out: list = [None] * len(records)
    items, where = [], []
    for i, rec in enumerate(tqdm(records, desc="frames", unit="q", leave=False)):
        try:
            parts = [image_part(p.read_bytes()) for p in _frames(src, rec)] + [text_part(question_text(rec))]
        except (ItemError, OSError) as exc:
            out[i] = {"qid": rec["qid"], "prediction": "", "error": f"{getattr(exc, 'reason', 'frames')}: {exc}"}
            continue
        items.append((ChatRequest(messages=(("user", tuple(parts)),), temperature=0.0, max_tokens=max_new_tokens,
                                  json_mode=False), str.strip))
        where.append(i)
    for i, res in zip(where, client.map(items, desc="predict")):
        if isinstance(res, LLMError):
            out[i] = {"qid": records[i]["qid"], "prediction": "", "error": str(res)}
        else:
            out[i] = {"qid": records[i]["qid"], "prediction": res}
    log.info("model calls: %s", client.usage)
    return out


def predict_local(records: list, src, model_name: str, *, max_new_tokens: int = 32, seed: int = 0,
                  dtype: Optional[str] = None, max_pixels: Optional[int] = None) -> list[dict]:
    import torch
    from PIL import Image

    from timewarp.train import models

    model, processor = models.load(model_name, seed=seed, dtype=dtype, max_pixels=max_pixels)
    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()
    out = []
    for rec in tqdm(records, desc="predict", unit="q"):
        try:
            paths = _frames(src, rec)
        except ItemError as exc:
            out.append({"qid": rec["qid"], "prediction": "", "error": f"{exc.reason}: {exc.detail}"})
            continue
        images = [Image.open(p).convert("RGB") for p in paths]
        text = processor.apply_chat_template(user_message(len(images), question_text(rec)), add_generation_prompt=True,
                                             tokenize=False)
        inputs = processor(images=images, text=[text], return_tensors="pt").to(model.device)
        with torch.no_grad():
            gen = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        reply = processor.batch_decode(gen[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
        out.append({"qid": rec["qid"], "prediction": reply.strip()})
    return out


@dataclass(frozen=True, kw_only=True)
class Config(StageConfig):
    """predict.py's options; ``layout``: the output root the benchmark's video paths are relative to."""

    benchmark: Path = option(help="benchmark/normal.jsonl or benchmark/shuffled.jsonl", type=Path)
    output: Path = option(help='predictions JSONL to write ({"qid", "prediction"} per line)', type=Path)
    frames: int = option(DEFAULT_FRAMES, "frames per video")
    max_new_tokens: int = option(32, "longest answer")
    # a local model (transformers)
    model: Optional[str] = option(None, "local model: 'tiny', a folder (e.g. a train_*.py --output_dir) or a hub name")
    dtype: Optional[str] = option(None, "with --model: weights dtype", choices=["float32", "bfloat16", "float16", "auto"])
    max_pixels: Optional[int] = option(None, "with --model: at most this many pixels per frame (none: the processor's)",
                                       type=int)
    seed: int = option(0, "with --model tiny: seed of its weights")
    # an OpenAI-compatible server
    llm_base_url: Optional[str] = option(None, "OpenAI-compatible server: API root, e.g. http://localhost:8000/v1 "
                                               "(vLLM/SGLang)")
    llm_model: Optional[str] = option(None, "with --llm_base_url: model name on that server")
    llm_concurrency: int = option(4, "with --llm_base_url: requests in flight at most")
    llm_max_retries: int = option(4, "with --llm_base_url: retries per request")
    llm_timeout: float = option(120.0, "with --llm_base_url: seconds to wait for one reply")


def run(cfg: Config) -> dict:
    t0 = time.monotonic()
    records = load_records(cfg.benchmark)[:cfg.limit] if cfg.limit else load_records(cfg.benchmark)
    root = cfg.layout.root
    if not root.is_dir():
        raise UsageError(f"--root_dir {root} is not a directory")
    if cfg.frames < 1:
        raise UsageError(f"--frames must be >= 1, got {cfg.frames}")
    if (cfg.model is None) == (cfg.llm_base_url is None):
        raise UsageError("give --model (local transformers) or --llm_base_url with --llm_model (an OpenAI-compatible server)")
    src = frame_source(root.resolve(), cfg.frames)
    if cfg.model is not None:
        rows = predict_local(records, src, cfg.model, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, dtype=cfg.dtype,
                             max_pixels=cfg.max_pixels)
    else:
        if not cfg.llm_model:
            raise UsageError("--llm_model is required with --llm_base_url")
        rows = predict_api(records, src, cfg.llm_base_url, cfg.llm_model, cfg.layout.cache_dir,
                           concurrency=cfg.llm_concurrency, max_retries=cfg.llm_max_retries, timeout=cfg.llm_timeout,
                           max_new_tokens=cfg.max_new_tokens)
    write_jsonl(cfg.output, rows)
    failed = [r for r in rows if "error" in r]
    for r in failed[:5]:
        log.error("%s: no prediction: %s", r["qid"], r["error"])
    summary = {"questions": len(rows), "failed": len(failed), "output": str(cfg.output),
               "seconds": round(time.monotonic() - t0, 1)}
    print(f"[predict] {len(rows) - len(failed)} of {len(rows)} questions answered by {cfg.model or cfg.llm_model}"
          f"{f'; {len(failed)} failed (scored as wrong)' if failed else ''}; {summary['seconds']}s; {cfg.output}")
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="predict.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root_dir", default=None, help="output root the benchmark's video paths are relative to "
                                                    "(default: the folder above the benchmark's folder)")
    Config.add_arguments(p)
    p.add_argument("--limit", type=int, default=None, help="only the first N questions (trial runs)")
    p.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def main(argv: Optional[list] = None) -> int:
    def go(a):
        root = Path(a.root_dir) if a.root_dir else a.benchmark.resolve().parent.parent
        return 1 if run(Config.from_args(a, layout=Layout(root)))["failed"] else 0
    return cli(go, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
