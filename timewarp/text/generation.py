"""Generation stages: the base class and the one run/main of the six stages that write captions, SFT,
preference pairs and benchmarks.

(``stage.py``: the runner of every stage; ``textgen.py``: the wording backends these stages use.)

A generation stage is a subclass of ``Generation``: its ``name``, its ``Config`` (a ``StageConfig``
whose ``option(...)`` fields are its own command-line options), which items it reads (normal or
shuffled ids, or ``items()`` over an earlier stage's output), the split it is for, the output file,
and ``make(item_id)``: the item's ``Draft`` records (template text, plus what a model may reword),
or ``ItemError`` (a reject). ``run(cfg, backend)`` is the same for all: list the items, make each,
reword what may be reworded, write the output (rebuilt on every run), rejects and stats.

Making records takes milliseconds per video, so ``make`` runs in this process, in item order (it may
keep state across items, e.g. the benchmark's key balancer): no process pool, no ``--workers``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

from timewarp.text.annotations import load_normal, require_normal_ids
from timewarp.core.errors import ItemError, UsageError
from timewarp.core.layout import Layout
from timewarp.text.llm import add_llm_args, client_from_args
from timewarp.core.parallel import LOCAL, pmap
from timewarp.core.schema import NormalAnnotation
from timewarp.core.stage import (NO_SEED_HELP, StageConfig, StageRun, add_common_args, add_shuffled_dir_args, cli,
                            require_root)
from timewarp.core.store import write_jsonl
from timewarp.text.textgen import Reworded, Rewrite, TemplateBackend, backend_for

log = logging.getLogger("timewarp")

OVERWRITE_HELP = ("ask the model again instead of reusing its cached replies (the new replies replace them); "
                  "the output file is rebuilt on every run anyway")
NO_MODEL_OVERWRITE_HELP = "no effect: this stage calls no model and rebuilds its output on every run " \
                          "(accepted so one TIMEWARP_ARGS fits every stage)"


@dataclass
class Draft:
    """One output record as ``make`` builds it: the row with template wording, what a model may reword
    in it (``None``: nothing; ``Rewrite.fields`` are row keys unless ``finish`` maps them) and any
    stage-private ``context`` its ``finish`` needs."""

    row: dict
    rewrite: Optional[Rewrite] = None
    context: Any = None


class OtherSplit(Exception):
    """``Generation.normal``: the video is not of the stage's split (counted, not a reject)."""


class Generation:
    """One generation stage. Subclass it, set the class attributes, write ``make``; ``run``/``main``/
    ``build_parser`` are the same for every stage (export them from the stage module)."""

    name: ClassVar[str]                         # the stage name: stats/<name>.json, rejects/<name>.jsonl
    Config: ClassVar[type] = StageConfig        # its options: a StageConfig subclass with option(...) fields
    output: ClassVar[str]                       # the Layout attribute of the output file
    items_of: ClassVar[str] = "normal"          # "normal" | "shuffled": ids ``items()`` lists by default
    split: ClassVar[Optional[str]] = None       # ``normal()`` gives only videos of this split ...
    other_split: ClassVar[str] = ""             # ... and the others are counted under this label
    summary: ClassVar[str] = "{rows} records from {videos} videos in {out}"  # + counts, stage=self
    empty_warning: ClassVar[str] = ""           # logged when no record is written
    uses_model: ClassVar[bool] = True           # False: the model options are accepted and unused
    uses_seed: ClassVar[bool] = True            # False: --seed is accepted and has no effect
    row_stats: ClassVar[dict] = {}              # stats key -> function(rows): extra stats of the output
    per_video: ClassVar[str] = ""               # the Config field: records asked per video (a video with
                                                # fewer is counted; its Config checks it is >= 1)

    def __init__(self, cfg: StageConfig, backend=None):
        self.cfg = cfg
        self.layout: Layout = cfg.layout
        self.backend = backend or TemplateBackend()
        self.stage = StageRun(self.name, self.layout, {**cfg.options(), **shuffled_names(self.layout),
                                                       **backend_options(self.backend)})
        self.counts = self.stage.counts
        self.reject = self.stage.reject

    # ------------------------------------------------------------------ what a stage writes
    def items(self) -> list[str]:
        """The item ids, before ``--limit``: every normal or shuffled annotation (a UsageError if none)."""
        if self.items_of == "normal":
            return require_normal_ids(self.layout)
        ids = self.layout.shuffled_ids() if self.layout.shuffled_annotations_dir.is_dir() else []
        if not ids:
            raise UsageError(f"no shuffled annotations in {self.layout.shuffled_annotations_dir}: run "
                             f"shuffle_clips.py first (or pass the --shuffled_dir_name/--annotation_dir_name it used)")
        return ids

    def make(self, item_id: str) -> list[Draft]:
        """The item's records (template wording), or ``ItemError``; may ``self.reject`` parts of the
        item (one question, one pair) and add to ``self.counts``."""
        raise NotImplementedError

    def finish(self, draft: Draft, reworded: Optional[Reworded]) -> dict:
        """The output row of a draft once its texts are reworded (``None``: it had nothing to reword)."""
        if reworded is None:
            return draft.row
        return {**draft.row, **reworded.fields, "wording": reworded.wording}

    def output_file(self) -> Path:
        return getattr(self.layout, self.output)

    # ------------------------------------------------------------------ helpers for make
    def normal(self, vid: str) -> NormalAnnotation:
        """The video's normal annotation (``ItemError`` if unusable); ``OtherSplit`` if ``split`` is set
        and the video is of another split."""
        ann = load_normal(self.layout, vid)
        if self.split and ann.split != self.split:
            raise OtherSplit(ann.split)
        return ann

    # ------------------------------------------------------------------ the one run
    def _make(self, item_id: str):
        try:
            return self.make(item_id)
        except OtherSplit:
            return None

    def _run(self) -> dict:
        require_root(self.layout.root, "--root_dir")
        require_normal_ids(self.layout)
        ids = self.items()
        if self.cfg.limit:
            ids = ids[:self.cfg.limit]
        drafts: list[Draft] = []
        videos = 0
        for _, made in self.stage.succeeded(ids, pmap(self._make, ids, LOCAL, desc=self.name)):
            if made is None:
                self.counts[self.other_split] += 1
                continue
            videos += 1
            if self.per_video and len(made) < getattr(self.cfg, self.per_video):
                self.counts["videos with fewer questions than asked"] += 1
            drafts.extend(made)
        asked = [d.rewrite for d in drafts if d.rewrite is not None]
        if self.cfg.overwrite:
            forget_replies(self.backend, asked)
        reworded = iter(self.backend.reword(asked, desc=f"{self.name} (model)", reject=self.reject) if asked else ())
        rows = [self.finish(d, None if d.rewrite is None else next(reworded)) for d in drafts]
        out = self.output_file()
        write_jsonl(out, rows)
        for key, fn in self.row_stats.items():
            self.stage.extra[key] = fn(rows)
        if self.backend.usage:
            self.stage.extra["llm_usage"] = self.backend.usage
        if not rows and self.empty_warning:
            log.warning(self.empty_warning.format(stage=self))
        return self.stage.finish(len(ids), videos, self.summary.format(rows=len(rows), videos=videos, out=out,
                                                                       counts=self.counts, stage=self))

    # ------------------------------------------------------------------ entry points, the same for every stage
    @classmethod
    def run(cls, cfg: StageConfig, backend=None) -> dict:
        """Run the stage with ``cfg``; ``backend``: the wording backend (default: template)."""
        return cls(cfg, backend)._run()

    @classmethod
    def build_parser(cls) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(prog=f"{cls.name}.py", description=sys.modules[cls.__module__].__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--root_dir", required=True, help="output root_dir of setup_dataset.sh")
        cls.Config.add_arguments(p)
        add_llm_args(p, unused=not cls.uses_model)
        add_shuffled_dir_args(p)
        add_common_args(p, workers=False, seed_help=None if cls.uses_seed else NO_SEED_HELP,
                        overwrite_help=OVERWRITE_HELP if cls.uses_model else NO_MODEL_OVERWRITE_HELP)
        return p

    @classmethod
    def main(cls, argv: Optional[list] = None) -> int:
        return cli(cls._run_args, cls.build_parser(), argv)

    @classmethod
    def _run_args(cls, args: argparse.Namespace) -> dict:
        cfg = cls.Config.from_args(args)
        backend = backend_for(client_from_args(args, cfg.layout)) if cls.uses_model else None
        return cls.run(cfg, backend)


def shuffled_names(layout: Layout) -> dict:
    """The shuffled folder names the stage read (--shuffled_dir_name ...), for the stats."""
    return {"shuffled_dir_name": layout.shuffled_dir_name, "annotation_dir_name": layout.shuffled_annotation_dir_name,
            "video_dir_name": layout.shuffled_video_dir_name}


def backend_options(backend) -> dict:
    """What stats record of the wording backend: its name, and for a model its server and model."""
    client = getattr(backend, "client", None)
    if client is None:
        return {"backend": getattr(backend, "name", type(backend).__name__)}
    return {"backend": backend.name, "llm_base_url": client.base_url, "llm_model": client.model}


def forget_replies(backend, rewrites: list[Rewrite]) -> None:
    """--overwrite: drop the cached model replies of these rewordings, so the model is asked again."""
    client = getattr(backend, "client", None)
    if client is None:
        return
    for it in rewrites:
        if it.sent():
            client.cache_path(backend.request(it)).unlink(missing_ok=True)


# ---------------------------------------------------------------------- reading earlier outputs

def require_file(path: Path, hint: str) -> None:
    if not path.is_file():
        raise UsageError(f"{path} not found: {hint}")
