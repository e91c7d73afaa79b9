"""lmms-eval hooks of the TimeWarp tasks, scored by timewarp/benchmark/scoring.py (as evaluate.py is).

Set ``TIMEWARP_ROOT`` to the output root_dir (the folder holding benchmark/ and the videos):
the benchmark files are ``$TIMEWARP_ROOT/benchmark/{normal,shuffled}.jsonl`` and each row's ``video``
is relative to that root. ``NORMAL_DATA_FILE`` / ``SHUFFLED_DATA_FILE`` are strings computed from it
when the yaml asks for them (lmms-eval YAML has no environment variables; ``!function`` imports any
attribute of this module, so the yaml gets the path as a plain string). ``timewarp`` is imported as an
installed package: this folder works from any place (``--include_path``), not only inside a checkout.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

try:  # the installed package (lmms-eval imports this file from wherever the task folder is)
    from timewarp.benchmark import scoring
except ImportError as exc:  # pragma: no cover - message only
    raise ImportError(f"the TimeWarp lmms-eval task needs the timewarp package ({exc}): pip install -e <TimeWarp checkout> "
                      f"in lmms-eval's environment") from exc

ENV = "TIMEWARP_ROOT"
LETTERS = scoring.LETTERS
log = logging.getLogger("timewarp.lmms_eval")


def timewarp_root() -> Path:
    root = os.environ.get(ENV)
    if not root:
        raise RuntimeError(f"set {ENV} to the TimeWarp output root_dir (the folder with benchmark/ and the videos)")
    return Path(root).expanduser().resolve()


def _data_file(name: str) -> str:
    path = timewarp_root() / "benchmark" / f"{name}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run ./generate_data.sh {timewarp_root()} (or check {ENV})")
    return str(path)


def __getattr__(name: str):
    # module attributes computed on access, so importing this file never needs TIMEWARP_ROOT
    if name == "NORMAL_DATA_FILE":
        return _data_file("normal")
    if name == "SHUFFLED_DATA_FILE":
        return _data_file("shuffled")
    raise AttributeError(name)


def timewarp_doc_to_visual(doc):
    path = timewarp_root() / doc["video"]
    if not path.is_file():
        raise FileNotFoundError(f"video {path} not found (row {doc.get('qid')}; is {ENV} the right root_dir?)")
    return [str(path)]


def timewarp_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kw = lmms_eval_specific_kwargs or {}
    pre = kw.get("pre_prompt", "")
    post = kw.get("post_prompt", "\nAnswer with the option's letter from the given choices directly.")
    options = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(scoring.record_options(doc)))
    return f"{pre}{doc['question']}\n{options}{post}"


def _item(doc, results):
    pred = results[0] if isinstance(results, (list, tuple)) and results else results
    return scoring.item_result(doc, pred)


def timewarp_process_results_normal(doc, results):
    return {"timewarp_accuracy": _item(doc, results)}


def timewarp_process_results_shuffled(doc, results):
    item = _item(doc, results)
    return {"timewarp_accuracy": item, "timewarp_key_changed_accuracy": item, "timewarp_story_order_rate": item}


def _pct(x):
    return 0.0 if x is None else 100.0 * x


def timewarp_aggregate_accuracy(items):
    summary = scoring.aggregate(list(items))
    for line in scoring.format_summary(summary).splitlines():
        log.info(line)
    return _pct(summary["accuracy"])


def timewarp_aggregate_key_changed_accuracy(items):
    return _pct(scoring.aggregate(list(items), shuffled=True)["key_changed"]["accuracy"])


def timewarp_aggregate_story_order_rate(items):
    """Share of key-changed questions on which the model picked the natural-order (wrong) answer."""
    return _pct(scoring.aggregate(list(items), shuffled=True)["key_changed"]["story_order_rate"])
