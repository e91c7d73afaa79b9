"""Stage 5: the merged caption of each normal video (its clip captions in real order).

The merged caption = the clip captions joined with spaces (the published method). With ``--llm``
(or ``--backend openai``) a model rewrites it into one fluent paragraph; the rewrite is kept only if
it still mentions every clip's content in the same order, else the plain join is kept and the
reason (with the model's reply) goes to rejects/merge_normal_captions.jsonl.
The caption is written into each annotation's ``merged_caption`` (atomically; unchanged files are
not rewritten) and into the view captions/normal.jsonl. Every run rebuilds the view; model replies
come from the on-disk cache, so a rerun costs nothing.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

from timewarp.errors import ItemError, UsageError
from timewarp.generation import (backend_from_args, layout_for, layout_names, llm_options, load_normal,
                                 load_shuffled, note_usage, require_normal_ids)
from timewarp.layout import Layout
from timewarp.llm import add_llm_args
from timewarp.parallel import pmap
from timewarp.schema import CaptionRecord, NormalAnnotation, ShuffledAnnotation
from timewarp.stage import StageRun, add_common_args, add_shuffled_dir_args, cli, layout_from_args
from timewarp.store import read_json, write_json, write_jsonl
from timewarp.textgen import Rewrite, TemplateBackend

STAGE = "merge_normal_captions"


def plain_join(captions: list[str]) -> str:
    return " ".join(" ".join(c.split()) for c in captions)


@dataclass(frozen=True)
class Job:
    root: str
    names: tuple
    which: str       # "normal" | "shuffled"


def load_item(job: Job, item_id: str) -> dict:
    layout = Layout(Path(job.root), *job.names)
    try:
        if job.which == "normal":
            ann = load_normal(layout, item_id)
            return {"ok": True, "id": item_id, "normal_id": item_id, "split": ann.split, "video": ann.video,
                    "order": list(range(len(ann.clips))), "captions": [c.caption for c in ann.clips],
                    "merged": ann.merged_caption}
        s = load_shuffled(layout, item_id)
        return {"ok": True, "id": item_id, "normal_id": s.normal_id, "split": s.split, "video": s.video,
                "order": list(s.permutation), "captions": [c.caption for c in s.clips], "merged": s.merged_caption}
    except ItemError as exc:
        return {"ok": False, "id": item_id, "reason": exc.reason, "detail": exc.detail}


def merge(which: str, stage_name: str, root_dir, *, workers: int = 1, limit: Optional[int] = None,
          overwrite: bool = False, backend=None, layout: Optional[Layout] = None, options: Optional[dict] = None) -> dict:
    layout = layout_for(root_dir, layout)
    backend = backend or TemplateBackend()
    normal_ids = require_normal_ids(layout)
    if which == "normal":
        ids, path_of, cls, out_file = normal_ids, layout.normal_annotation, NormalAnnotation, layout.captions_normal_file
    else:
        ids = layout.shuffled_ids() if layout.shuffled_annotations_dir.is_dir() else []
        if not ids:
            raise UsageError(f"no shuffled annotations in {layout.shuffled_annotations_dir}: run shuffle_clips.py "
                             f"first (or pass the --shuffled_dir_name/--annotation_dir_name it used)")
        path_of, cls, out_file = layout.shuffled_annotation, ShuffledAnnotation, layout.captions_shuffled_file
    if limit:
        ids = ids[:limit]
    stage = StageRun(stage_name, layout, dict(root_dir=layout.root, workers=workers, limit=limit, overwrite=overwrite,
                                              **(options or {"backend": backend.name})))
    if which == "shuffled":  # a normal video without its shuffled annotation is a reject here
        have = set(layout.shuffled_ids())
        for vid in (normal_ids[:limit] if limit else normal_ids):
            if vid not in have:
                stage.reject(vid, "missing shuffled annotation", str(layout.shuffled_annotation(vid)))
    items = []
    for _, res in stage.succeeded(ids, pmap(partial(load_item, Job(str(layout.root), layout_names(layout), which)), ids,
                                      workers, desc=stage_name)):
        items.append(res)
    joins = [plain_join(it["captions"]) for it in items]
    reworded = backend.reword([Rewrite(it["id"], {"caption": j}, keep={"caption": it["captions"]}, caption=True,
                                       captions=it["captions"],
                                       events=tuple(" ".join(c.split()) for c in it["captions"]))
                               for it, j in zip(items, joins)], desc=f"{stage_name} (model)", reject=stage.reject)
    rows = []
    for it, rw in zip(items, reworded):
        text, method = rw.fields["caption"], ("llm" if rw.wording == "llm" else "join")
        stage.counts[f"merged by {method}"] += 1
        if overwrite or it["merged"] != text:
            path = path_of(it["id"])
            raw = read_json(path)
            raw["merged_caption"] = text
            write_json(path, cls.from_dict(raw).to_dict())
            stage.counts["annotations updated"] += 1
        else:
            stage.counts["annotations unchanged"] += 1
        rows.append(CaptionRecord(it["id"], it["normal_id"], it["split"], it["video"], it["order"], text, method).to_dict())
    write_jsonl(out_file, rows)
    note_usage(stage, backend)
    return stage.finish(len(ids), len(rows), f"{len(rows)} merged captions in {out_file} and the annotations")


def run(root_dir, *, workers: int = 1, limit: Optional[int] = None, overwrite: bool = False, backend=None,
        layout: Optional[Layout] = None, options: Optional[dict] = None) -> dict:
    return merge("normal", STAGE, root_dir, workers=workers, limit=limit, overwrite=overwrite, backend=backend,
                 layout=layout, options=options)


def build_parser(prog: str = "merge_normal_captions.py", doc: str = __doc__) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root_dir", required=True, help="output root_dir of setup_dataset.sh")
    p.add_argument("--llm", action="store_true",
                   help="rewrite each merged caption into fluent text with the model (same as --backend openai); "
                        "a rewrite that loses or reorders a clip's content is replaced by the plain join")
    add_llm_args(p)
    add_shuffled_dir_args(p)
    add_common_args(p)
    return p


def main_for(run_fn, parser: argparse.ArgumentParser, argv: Optional[list]) -> int:
    def go(a):
        if a.llm:
            a.backend = "openai"
        layout = layout_from_args(a)
        backend = backend_from_args(a, layout)
        return run_fn(a.root_dir, workers=a.workers, limit=a.limit, overwrite=a.overwrite, backend=backend,
                      layout=layout, options=llm_options(a))
    return cli(go, parser, argv)


def main(argv: Optional[list] = None) -> int:
    return main_for(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
