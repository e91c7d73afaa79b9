"""Mix preference (DPO) pairs: explicit + implicit + external files, into pref/pref_combined.jsonl.

Sources, in priority order (an earlier source wins a duplicate):

1. ``pref/pref_explicit.jsonl`` (generate_pref_explicit.py), share ``--explicit_ratio``;
2. ``pref/pref_implicit.jsonl`` (generate_pref_implicit.py), share ``--implicit_ratio``;
3. every ``--external PATH[:RATIO]``, in the order given (e.g. LLaVA-Hound's 17k DPO jsonl); the
   source is named after the file (``--external llava_hound_dpo.jsonl:0.5`` -> ``llava_hound_dpo``).

A RATIO is the fraction (0..1, default 1) of that source's usable, deduplicated pairs to take. Rows
are read defensively: a JSON object per line (or one JSON array) with ``chosen``, ``rejected``, a
``prompt`` (or ``question``) and a ``video`` (or ``video_path``/``video_id``); a row without them, or
whose chosen equals its rejected, is a reject. Pairs are deduplicated by (video, prompt) (prompt
whitespace-normalised, case-folded): within a source the seeded shuffle decides which copy stays,
across sources the earlier source wins. Both pair stages write several pairs per prompt (one per
negative or corruption); ``--dedup_by pair`` keeps them all (only identical pairs are duplicates). Each source is shuffled with a seed before its share is
taken and the mix is shuffled again, so the output is a function of the inputs and ``--seed`` (not of
line order within a file). The composition (read, invalid, duplicates, taken, share per source) goes
to ``stats/combine_pref.json`` and the one-line summary.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

from timewarp.core.errors import UsageError
from timewarp.core.schema import CombinedPrefRecord
from timewarp.core.splits import rank_key
from timewarp.core.stage import StageConfig, StageRun, add_common_args, cli, option, require_root
from timewarp.core.store import write_jsonl

log = logging.getLogger("timewarp.combine")

STAGE = "combine_pref"
PROMPT_KEYS = ("prompt", "question")
VIDEO_KEYS = ("video", "video_path", "video_id")
ID_KEYS = ("pid", "id", "qid")


@dataclass
class Source:
    name: str
    path: Path
    ratio: float = 1.0
    required: bool = False           # an --external file must exist; the pipeline's own files may not
    stats: dict = field(default_factory=dict)


def parse_external(spec: str) -> tuple[Path, float]:
    """``PATH`` or ``PATH:RATIO`` (a path may itself contain ':'; only a numeric tail is a ratio)."""
    path, ratio = spec, 1.0
    if ":" in spec:
        head, tail = spec.rsplit(":", 1)
        try:
            ratio = float(tail)
        except ValueError:
            head = spec
        else:
            path = head
    if not path:
        raise UsageError(f"--external {spec!r} names no file")
    return Path(path), ratio


def _text(value) -> Optional[str]:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _first(row: dict, keys: Sequence[str]) -> Optional[str]:
    for k in keys:
        v = row.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "prompt":
            v = str(v)
        v = _text(v)
        if v is not None:
            return v
    return None


def iter_rows(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed value or a ValueError) for a JSONL file, or for a file holding one JSON array."""
    with open(path, encoding="utf-8") as fh:
        head = fh.read(4096)
        fh.seek(0)
        if head.lstrip().startswith("["):
            try:
                data = json.load(fh)
            except ValueError as exc:
                yield 1, ValueError(f"not JSON: {exc}")
                return
            for i, row in enumerate(data, 1):
                yield i, row
            return
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield i, json.loads(line)
            except ValueError as exc:
                yield i, ValueError(f"not JSON: {exc.__class__.__name__}")


def normalise(row, source: str) -> tuple[Optional[dict], str]:
    """The pair in common form, or (None, reject reason)."""
    if isinstance(row, ValueError):
        return None, "not JSON"
    if not isinstance(row, dict):
        return None, "not a JSON object"
    prompt = _first(row, PROMPT_KEYS)
    if prompt is None:
        return None, "no prompt"
    chosen, rejected = _text(row.get("chosen")), _text(row.get("rejected"))
    if chosen is None or rejected is None:
        return None, "no chosen or rejected"
    if " ".join(chosen.split()) == " ".join(rejected.split()):
        return None, "chosen equals rejected"
    video = _first(row, VIDEO_KEYS)
    if video is None:
        return None, "no video"
    return {"orig_id": _first(row, ID_KEYS), "video": video, "prompt": prompt, "chosen": chosen,
            "rejected": rejected}, ""


def dedup_key(pair: dict, by: str = "video_prompt") -> tuple:
    """(video, normalised prompt); with ``by="pair"`` also chosen and rejected (keeps several negatives per prompt)."""
    key = (pair["video"], " ".join(pair["prompt"].split()).casefold())
    if by == "pair":
        key += (" ".join(pair["chosen"].split()), " ".join(pair["rejected"].split()))
    return key


@dataclass(frozen=True, kw_only=True)
class Config(StageConfig):
    explicit_ratio: float = option(1.0, "fraction of pref/pref_explicit.jsonl's pairs to take")
    implicit_ratio: float = option(1.0, "fraction of pref/pref_implicit.jsonl's pairs to take")
    external: tuple = option((), "another preference file (jsonl or a JSON array; id/video/prompt/chosen/rejected, "
                                 "e.g. LLaVA-Hound's DPO set) and the fraction of it to take; repeatable",
                             action="append", metavar="PATH[:RATIO]")
    dedup_by: str = option("video_prompt", "video_prompt: one pair per (video, prompt); pair: only identical pairs "
                                           "are duplicates, so the several negatives the explicit and implicit "
                                           "stages write per prompt all stay", choices=["video_prompt", "pair"])
    output: Optional[str] = option(None, "write the pairs to this file instead of <root_dir>/pref/pref_combined.jsonl")

    def __post_init__(self):
        ratios = [("explicit", self.explicit_ratio), ("implicit", self.implicit_ratio)]
        ratios += [(str(path), ratio) for path, ratio in map(parse_external, self.external)]
        for name, ratio in ratios:
            if not (0.0 <= ratio <= 1.0) or math.isnan(ratio):
                raise UsageError(f"ratio of {name} must be between 0 and 1 (a fraction of its pairs), got {ratio:g}")
        if self.dedup_by not in ("video_prompt", "pair"):
            raise UsageError(f"--dedup_by must be video_prompt or pair, got {self.dedup_by!r}")


def run(cfg: Config) -> dict:
    layout = cfg.layout
    require_root(layout.root, "--root_dir")
    seed, limit, dedup_by = cfg.seed, cfg.limit, cfg.dedup_by
    sources = [Source("explicit", layout.pref_explicit_file, cfg.explicit_ratio),
               Source("implicit", layout.pref_implicit_file, cfg.implicit_ratio)]
    names = {"explicit", "implicit"}
    for spec in cfg.external:
        path, ratio = parse_external(spec)
        name = path.name.split(".")[0] or "external"
        base, k = name, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.add(name)
        sources.append(Source(name, path, ratio, required=True))
    for s in sources:
        if s.required and not s.path.is_file():
            raise UsageError(f"--external file {s.path} not found")
    present = [s for s in sources if s.path.is_file()]
    if not present:
        raise UsageError(f"nothing to combine: neither {layout.pref_explicit_file} nor {layout.pref_implicit_file} "
                         f"exists and no --external file was given (run generate_pref_explicit.py first)")
    output = Path(cfg.output) if cfg.output else layout.pref_combined_file
    stage = StageRun(STAGE, layout, {**cfg.options(), "output": str(output)})
    seen: set = set()
    taken_all: list[dict] = []
    composition: dict = {}
    total_read = 0
    for s in sources:
        info = {"path": str(s.path), "ratio": s.ratio, "read": 0, "invalid": 0, "duplicates_within": 0,
                "duplicates_of_earlier": 0, "available": 0, "taken": 0}
        composition[s.name] = info
        if not s.path.is_file():
            info["missing"] = True
            log.warning("%s: %s not found; taking no %s pairs", STAGE, s.path, s.name)
            continue
        pairs = []
        for line, row in iter_rows(s.path):
            info["read"] += 1
            pair, reason = normalise(row, s.name)
            if pair is None:
                info["invalid"] += 1
                stage.reject(f"{s.name}:{line}", reason, "", str(s.path))
                continue
            pair["line"] = line
            pairs.append(pair)
        total_read += info["read"]
        # seeded order independent of line order: by id (then content), line only as a last tie-break
        pairs.sort(key=lambda p: (rank_key(seed, f"{s.name}\x00{p['orig_id'] or ''}\x00{p['video']}\x00{p['prompt']}"
                                           f"\x00{p['chosen']}\x00{p['rejected']}"), p["line"]))
        mine: set = set()
        available = []
        for p in pairs:
            key = dedup_key(p, dedup_by)
            if key in mine:
                info["duplicates_within"] += 1
                continue
            mine.add(key)
            if key in seen:
                info["duplicates_of_earlier"] += 1
                continue
            available.append(p)
        info["available"] = len(available)
        take = int(round(s.ratio * len(available)))
        taken = available[:take]
        info["taken"] = len(taken)
        ids: set = set()
        for p in taken:
            seen.add(dedup_key(p, dedup_by))
            rid = f"{s.name}:{p['orig_id'] if p['orig_id'] is not None else 'line' + str(p['line'])}"
            if rid in ids:
                rid = f"{rid}#{p['line']}"
            ids.add(rid)
            taken_all.append(CombinedPrefRecord(id=rid, source=s.name, video=p["video"], prompt=p["prompt"],
                                                chosen=p["chosen"], rejected=p["rejected"]).to_dict())
    taken_all.sort(key=lambda r: (rank_key(seed, f"combined\x00{r['id']}"), r["id"]))
    if limit:
        taken_all = taken_all[:limit]
    final_counts = {s.name: 0 for s in sources}
    for r in taken_all:
        final_counts[r["source"]] += 1
    for name, info in composition.items():
        info["in_output"] = final_counts[name]
        info["share"] = round(final_counts[name] / len(taken_all), 4) if taken_all else 0.0
    write_jsonl(output, taken_all)
    stage.extra["composition"] = composition
    stage.extra["output"] = str(output)
    stage.counts["pairs written"] = len(taken_all)
    parts = ", ".join(f"{n} {c} ({100 * c / len(taken_all):.0f}%)" if taken_all else f"{n} 0"
                      for n, c in final_counts.items())
    return stage.finish(total_read, len(taken_all), f"{len(taken_all)} pairs in {output}: {parts}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="combine_pref.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root_dir", required=True, help="output root_dir holding pref/")
    Config.add_arguments(p)
    add_common_args(p, workers=False, overwrite=False)
    return p


def main(argv: Optional[list] = None) -> int:
    return cli(lambda a: run(Config.from_args(a)) and 0, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
