"""Benchmark scoring shared by ``evaluate.py`` and the lmms-eval task: which option a free-form model
output chose, and accuracy overall, per question kind, and on shuffled questions whose key changed.

``extract_choice(text, options)`` reads, in this order (the first rule that decides wins):
  1. the whole output is one option label (``B``, ``(b)``, ``B.``, ``2``, ``Option 2``) or exactly
     one option's text;
  2. an explicit answer phrase: "The answer is (B) because ...", "Answer: c", "I think c", "option 2";
  3. a label at the start followed by punctuation: "B. the red square", "(C) ...", "3) ...";
  4. exactly one distinct parenthesised label anywhere: "... so (D)";
  5. exactly one option's text appears in the output (case, punctuation and spacing ignored;
     an option contained in a longer matched option does not count);
  6. exactly one distinct capital A-D standing alone, not used as the article "A" ("It is B").
Numbers count as labels (1 = A) except in questions whose options cite events as "(1)", "(2)"
(order-of-three questions), where only letters and option text do. Anything else (gibberish, several different labels, no label) is no answer, scored as wrong.
Lower-case letters count only where they cannot be the article "a" (after an answer phrase, or as
the whole output), so "a red square appears" is not read as option A.

Records are the benchmark rows (``BenchmarkRecord`` JSON, or the MVBench-style export which keeps
the same fields); only qid, kind, options/candidates, answer, key_changed and normal_answer are used.
"""
from __future__ import annotations

import collections
import re
import string
from pathlib import Path
from typing import Iterable, Optional, Sequence

from timewarp.core.errors import UsageError
from timewarp.core.store import parse_json_rows
from timewarp.text.temporal import LETTERS

CHANCE = 1.0 / len(LETTERS)
PREDICTION_KEYS = ("prediction", "response", "output", "text", "pred", "answer")

_LABEL = r"\(?\[?([A-Da-d]|[1-4])\]?\)?"
_WHOLE = re.compile(r"^\s*(?:(?:the\s+)?(?:answer|option|choice)\s*(?:is|:)?\s*)?" + _LABEL + r"\s*[.:)!]?\s*$", re.I)
_PHRASE = re.compile(
    r"(?i:answer\s*(?:is|would\s+be|should\s+be|:|=)|correct\s+(?:option|choice|one)\s+is|\boption\s*:?|\bchoice\s*:?"
    r"|\bi\s+(?:think|choose|pick|select|would\s+(?:say|choose|pick))|\bi'd\s+(?:say|choose|pick)|\bselect|\bpick)"
    r"\s*(?i:option\s*|choice\s*|letter\s*)?\s*"
    # a capital letter or a number; a lower-case letter only when no word follows ("answer is a bit ...")
    r"(\(?\[?(?:[A-D1-4])\]?\)?(?![\w'-])|\(?\[?[a-d]\]?\)?(?![\w'-])(?!\s+[a-z]))")
_LEADING = re.compile(r"^\s*\**\s*(?:\(([A-Da-d1-4])\)|\[([A-Da-d1-4])\]|([A-D1-4])\s*[.:)\]])")
_PAREN = re.compile(r"\(([A-D])\)")
_BARE = re.compile(r"(?<![\w'])([A-D])(?![\w'])")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def _label_index(label: str) -> Optional[int]:
    label = label.strip("()[] ").upper()
    if label in LETTERS:
        return LETTERS.index(label)
    if label in ("1", "2", "3", "4"):
        return int(label) - 1
    return None


def _norm(text: str) -> str:
    return " ".join(text.lower().translate(_PUNCT).split())


def extract_choice(text, options: Sequence[str] = ()) -> Optional[int]:
    """The 0-based option a free-form output chose, or None when it names none (or several)."""
    if text is None:
        return None
    if isinstance(text, (list, tuple)):
        text = text[0] if text else ""
    text = str(text).replace("*", "").strip()
    if not text:
        return None
    # options that cite the question's events as (1), (2), (3): numbers are not option labels there
    numbers_ok = not any(re.search(r"\(\d\)", str(o)) for o in options)

    def label(g: str) -> Optional[int]:
        return _label_index(g) if numbers_ok or not g.strip("()[] ").isdigit() else None

    m = _WHOLE.match(text)
    if m:
        return label(m.group(1))
    opts = [_norm(str(o)) for o in options]
    if _norm(text) in opts and opts.count(_norm(text)) == 1:
        return opts.index(_norm(text))

    found = {label(g) for g in _PHRASE.findall(text)}
    found.discard(None)
    if len(found) == 1:
        return found.pop()
    if len(found) > 1:
        return None
    paren = set(_PAREN.findall(text))
    m = _LEADING.match(text)
    if m:
        lab = next(g for g in m.groups() if g)
        # "B. ..." is a label, unless other labels are given too: "(A) and (B)"
        if not paren - {lab.upper()} and label(lab) is not None:
            return label(lab)
    if len(paren) == 1:
        return _label_index(paren.pop())
    if len(paren) > 1:
        return None
    if options:
        norm = f" {_norm(text)} "
        hits = [i for i, o in enumerate(opts) if o and f" {o} " in norm]
        hits = [i for i in hits if not any(j != i and opts[i] in opts[j] and len(opts[j]) > len(opts[i]) for j in hits)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            return None
    bare = set()
    for m in _BARE.finditer(text):
        rest = text[m.end():]
        before = text[:m.start()]
        if (m.group(1) == "A" and re.match(r"^\s+[a-z]", rest)
                and not re.search(r"\b(?:is|be|was|option|choice|answer|say|pick|choose)\s*:?\s*$", before, re.I)):
            continue  # the article: "A red square ..." (but "it is A but maybe B" names A)
        bare.add(m.group(1))
    if len(bare) == 1:
        return _label_index(bare.pop())
    return None


# ---------------------------------------------------------------- records

def record_options(rec: dict) -> list[str]:
    opts = rec.get("options")
    if opts is None:
        opts = rec.get("candidates")
    return list(opts or [])


def record_key(rec: dict) -> int:
    """The 0-based index of the correct option (from answer_index, a letter answer, or the answer text)."""
    if isinstance(rec.get("answer_index"), int):
        return rec["answer_index"]
    ans = rec.get("answer")
    if isinstance(ans, str) and len(ans.strip()) == 1 and ans.strip().upper() in LETTERS:
        return LETTERS.index(ans.strip().upper())
    opts = record_options(rec)
    if ans in opts:
        return opts.index(ans)
    raise ValueError(f"record {rec.get('qid')!r}: cannot tell the correct option from answer {ans!r}")


def story_key(rec: dict) -> int:
    """The option a model following the natural (story) order would pick: the normal benchmark's key."""
    normal = rec.get("normal_answer")
    if isinstance(normal, str) and normal.strip().upper() in LETTERS and normal.strip():
        return LETTERS.index(normal.strip().upper())
    normal_text = rec.get("normal_answer_text")
    opts = record_options(rec)
    if normal_text in opts:
        return opts.index(normal_text)
    return record_key(rec)


def is_shuffled(records: Iterable[dict]) -> bool:
    return any(r.get("normal_answer") or r.get("normal_answer_text") or r.get("key_changed") for r in records)


def item_result(rec: dict, prediction) -> dict:
    """One scored item: the fields every aggregate needs (also what lmms-eval's process_results returns)."""
    opts = record_options(rec)
    choice = extract_choice(prediction, opts)
    key = record_key(rec)
    story = story_key(rec)
    return {
        "qid": rec.get("qid", ""),
        "kind": rec.get("kind", ""),
        "key_changed": bool(rec.get("key_changed", False)),
        "answered": choice is not None,
        "choice": LETTERS[choice] if choice is not None else "",
        "correct": choice == key,
        "story_order": choice is not None and choice == story,
        "story_correct": story == key,
    }


def _acc(items: list[dict], field: str = "correct") -> Optional[float]:
    return sum(1 for i in items if i[field]) / len(items) if items else None


def aggregate(items: list[dict], shuffled: Optional[bool] = None) -> dict:
    """Accuracy overall, per kind, and (shuffled benchmark) on key-changed / unchanged questions."""
    if shuffled is None:
        shuffled = any(i["key_changed"] for i in items)
    by_kind = collections.defaultdict(list)
    for i in items:
        by_kind[i["kind"]].append(i)
    out = {
        "n": len(items),
        "answered": sum(1 for i in items if i["answered"]),
        "accuracy": _acc(items),
        "chance": CHANCE,
        "story_order_baseline": _acc(items, "story_correct"),
        "by_kind": {k: {"n": len(v), "accuracy": _acc(v), "story_order_baseline": _acc(v, "story_correct")}
                    for k, v in sorted(by_kind.items())},
    }
    if shuffled:
        changed = [i for i in items if i["key_changed"]]
        same = [i for i in items if not i["key_changed"]]
        out["key_changed"] = {"n": len(changed), "accuracy": _acc(changed),
                              "story_order_baseline": _acc(changed, "story_correct"),
                              # how often the model picked the natural-order answer where it is wrong
                              "story_order_rate": _acc(changed, "story_order")}
        out["key_unchanged"] = {"n": len(same), "accuracy": _acc(same),
                                "story_order_baseline": _acc(same, "story_correct")}
    return out


def prediction_text(row: dict):
    for k in PREDICTION_KEYS:
        if k in row:
            return row[k]
    return None


def score(records: list[dict], predictions: dict) -> tuple[dict, list[dict]]:
    """Score ``records`` against ``predictions`` ({qid: output}); a missing prediction is no answer."""
    items = [item_result(r, predictions.get(r.get("qid"))) for r in records]
    summary = aggregate(items, shuffled=is_shuffled(records))
    summary["missing_predictions"] = sum(1 for r in records if r.get("qid") not in predictions)
    return summary, items


def format_summary(summary: dict, title: str = "") -> str:
    def pct(x):
        return "   n/a" if x is None else f"{100 * x:5.1f}%"

    lines = []
    if title:
        lines.append(title)
    lines.append(f"questions: {summary['n']}   answered (an option could be read): {summary['answered']}"
                 + (f"   missing predictions: {summary['missing_predictions']}" if summary.get("missing_predictions") else ""))
    lines.append(f"{'':24s} {'n':>5s} {'model':>7s} {'story':>7s}")
    lines.append(f"{'overall':24s} {summary['n']:5d} {pct(summary['accuracy']):>7s} {pct(summary['story_order_baseline']):>7s}")
    for name in ("key_changed", "key_unchanged"):
        if name in summary:
            s = summary[name]
            lines.append(f"{name.replace('_', ' '):24s} {s['n']:5d} {pct(s['accuracy']):>7s} {pct(s['story_order_baseline']):>7s}")
    for kind, s in summary["by_kind"].items():
        lines.append(f"{'kind ' + kind:24s} {s['n']:5d} {pct(s['accuracy']):>7s} {pct(s['story_order_baseline']):>7s}")
    lines.append(f"chance level: {pct(summary['chance']).strip()} (4 options)")
    lines.append("story = text-only 'story order' baseline: always answers as if the video were in its natural order")
    if "key_changed" in summary and summary["key_changed"]["story_order_rate"] is not None:
        lines.append(f"on key-changed questions the model picked the natural-order answer "
                     f"{pct(summary['key_changed']['story_order_rate']).strip()} of the time")
    return "\n".join(lines)


def load_records(path) -> list[dict]:
    """The rows of a benchmark file (--benchmark of evaluate.py and predict.py), checked: a UsageError names
    the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--benchmark {path} not found: generate it with generate_normal_benchmark.py / "
                         f"generate_shuffled_benchmark.py (benchmark/*.jsonl)")
    try:
        rows = parse_json_rows(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--benchmark {path} does not parse as JSON/JSONL ({exc})")
    if not rows:
        raise UsageError(f"--benchmark {path} holds no questions")
    for r in rows:
        if not isinstance(r, dict) or "qid" not in r:
            raise UsageError(f"--benchmark {path}: every row needs a qid (is this a TimeWarp benchmark file?)")
        try:
            record_key(r)
        except ValueError as exc:
            raise UsageError(f"--benchmark {path}: {exc}")
    qids = [r["qid"] for r in rows]
    if len(set(qids)) != len(qids):
        raise UsageError(f"--benchmark {path}: duplicate qids; score one benchmark file at a time")
    return rows
