"""Score a model's answers on a TimeWarp benchmark (normal or shuffled).

  python timewarp/benchmark/evaluate.py --benchmark <out>/benchmark/shuffled.jsonl --predictions preds.jsonl

--benchmark    benchmark/normal.jsonl or benchmark/shuffled.jsonl (or the MVBench-style export
               exports/mvbench/*.json, which keeps the same fields)
--predictions  JSONL, one line per question: {"qid": "<qid>", "prediction": "<model output>"}
               (the output may also be under "response", "output", "text", "pred" or "answer").
               Free-form outputs are read as the model's option: a letter ("B", "(B)", "B."), a
               number 1-4 ("Option 2"), or the option's text; anything else counts as no answer
               (wrong). Questions without a prediction count as wrong too.

Prints accuracy overall, per question kind, and for the shuffled benchmark separately on the
questions whose key changed (where the natural order gives the wrong answer), next to the chance
level (25%) and a text-only "story order" baseline that always answers as if the video were in its
natural order (the normal benchmark's key): a model near that baseline on key-changed questions
follows its priors, not the frames. --json writes the numbers (and --items the per-question results).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from timewarp.benchmark.scoring import format_summary, load_records, prediction_text, score
from timewarp.core.errors import UsageError
from timewarp.core.stage import cli
from timewarp.core.store import write_json, write_jsonl


def load_predictions(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--predictions {path} not found")
    preds = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict) or "qid" not in row:
                    raise UsageError(f"--predictions {path}: line {n} needs a qid and a prediction, "
                                     f'e.g. {{"qid": "vid/mcq/0", "prediction": "B"}}')
                preds[row["qid"]] = prediction_text(row)
    except ValueError as exc:
        raise UsageError(f"--predictions {path} is not JSONL ({exc})")
    return preds


def run(benchmark, predictions, json_out=None, items_out=None, quiet: bool = False) -> dict:
    records = load_records(benchmark)
    preds = load_predictions(predictions)
    summary, items = score(records, preds)
    known = {r["qid"] for r in records}
    summary["unknown_predictions"] = sum(1 for q in preds if q not in known)
    summary["benchmark"] = str(benchmark)
    if json_out:
        write_json(Path(json_out), summary)
    if items_out:
        write_jsonl(Path(items_out), items)
    if not quiet:
        print(format_summary(summary, title=f"{Path(benchmark).name}: {len(records)} questions"))
        if summary["unknown_predictions"]:
            print(f"note: {summary['unknown_predictions']} predictions name qids not in this benchmark (ignored)")
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evaluate.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmark", required=True, help="benchmark JSONL (or MVBench-style JSON export)")
    p.add_argument("--predictions", required=True, help='JSONL of {"qid": ..., "prediction": ...}')
    p.add_argument("--json", default=None, help="also write the summary as JSON here")
    p.add_argument("--items", default=None, help="also write per-question results (JSONL) here")
    p.add_argument("--log_level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def main(argv: Optional[list] = None) -> int:
    return cli(lambda a: run(a.benchmark, a.predictions, a.json, a.items) and 0, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
