"""Temporal questions and their answers, computed from an ordered list of clips (never from a model).

Everything here works on clip *indices in real order*. An ``order`` is the list of real-order clip
indices as a video shows them: ``list(range(n))`` for the normal video, the shuffled annotation's
``permutation`` for the shuffled video, ``reversed`` for a reversed-order negative, and so on.
A question is its ``kind`` plus the clips it names (``events``); its answer under an order is a tuple
of clip indices (``answer``), so the same question can be answered for the real order (SFT, chosen,
normal benchmark key) and for the shuffled order (rejected, shuffled benchmark key) by one function.

A question kind is one ``Kind`` record in ``KINDS`` (its events, answer rule, templates, the words a
rewording may not add, what the text names, its MCQ options); the list below is made from them.
``SFT_KINDS`` / ``MCQ_KINDS``, what the SFT and benchmark stages ask, are written out: a new kind
joins them only when named there, so adding one leaves every existing output byte-identical.

Wording comes from several phrasings per kind, chosen by a seeded RNG; answers are right by
construction. MCQ options are only events of the same video (or orderings of the question's own
events), so every option is a plausible answer for some order of that video.
"""
from __future__ import annotations

import itertools
import random
import re
import string
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from timewarp.text.wording import AFTER, BEFORE, EARLY, LATE, REVERSE, event_key, sentence

LETTERS = "ABCD"
N_OPTIONS = 4


# ---------------------------------------------------------------- text pieces

def _inline(caption: str) -> str:
    """A caption to go after a comma: lower-case a leading article only (names keep their capital)."""
    s = sentence(caption)
    m = re.match(r"^(A|An|The)\b", s)
    return s[0].lower() + s[1:] if m else s


def _q(caption: str) -> str:
    return f'"{sentence(caption)}"'


def _labelled(events: Sequence[int], captions: Sequence[str]) -> str:
    return " ".join(f"({k + 1}) {sentence(captions[e])}." for k, e in enumerate(events))


# ---------------------------------------------------------------- kinds

# The fields a template may use. Question: {x} the named event (quoted), {a} {b} the first two named
# events (quoted), {items} the named events labelled "(1) ... (2) ...". Answer: {c} / {A} / {a_inline}
# the (first) answer event inline / quoted / inline, {c0} {c1} ... each answer event inline, {B} /
# {b_inline} the first named event that is not the answer (quoted / inline).
_OPTION_RULES = ("video", "named", "orders")


@dataclass(frozen=True)
class Kind:
    """One question kind. Every field is required (a kind without a guard against rewordings that flip
    it, or without a rule for its options, does not load); the checks below run when it is made."""

    name: str
    size: int                                  # clips the question names (0: "what happens first?")
    may_name: Callable[[int, int], bool]       # (clip, clips in the video): may the question name it
    never_in_order: bool                       # the named clips are never listed in real order (labels
                                               # (1) (2) (3) would give the answer away)
    answer: Callable[[Sequence[int], list, dict], tuple]  # (events, order, position of each clip) -> answer
    questions: tuple[str, ...]                 # question templates (the phrasing picks one)
    answers: tuple[str, ...]                   # free-text answer templates; (): asked as an MCQ only
    none_answer: Optional[str]                 # the answer text when the answer is empty; None: never empty
    flip_question: tuple[str, ...]             # direction words a rewording of the question may not add
    flip_answer: tuple[str, ...]               # ... of an answer (() exactly when there are no answers)
    question_names_events: bool                # the question text names its events (a rewording keeps them)
    answer_names_rest: bool                    # the answer text names the answer, then the other events
    options: Optional[str]                     # MCQ options: "video" other events of the video, "named"
                                               # the question's own events, "orders" orderings of them;
                                               # None: not asked as an MCQ
    mcq_min_clips: Optional[int]               # fewest clips for 4 distinct plausible options (with options)

    def __post_init__(self):
        def fields_of(templates):
            return {f for t in templates for _, f, _, _ in string.Formatter().parse(t) if f is not None}

        problems = []
        q_fields = ({"x", "a", "items"} if self.size >= 1 else set()) | ({"b"} if self.size >= 2 else set())
        a_fields = {"c", "A", "a_inline"} | {f"c{i}" for i in range(max(1, self.size))} | (
            {"B", "b_inline"} if self.size >= 2 else set())
        if not self.questions:
            problems.append("no question template")
        if fields_of(self.questions) - q_fields:
            problems.append(f"question fields {sorted(fields_of(self.questions) - q_fields)} (a question of "
                            f"{self.size} events may use {sorted(q_fields) or 'none'})")
        if fields_of(self.answers) - a_fields:
            problems.append(f"answer fields {sorted(fields_of(self.answers) - a_fields)}")
        if self.question_names_events != all(fields_of([t]) for t in self.questions):
            problems.append("question_names_events disagrees with the question templates")
        if not self.flip_question:
            problems.append("no flip_question words (nothing would stop a rewording that flips the question)")
        if bool(self.answers) != bool(self.flip_answer):
            problems.append("flip_answer must be given exactly when there are answer templates")
        if self.options not in (None,) + _OPTION_RULES:
            problems.append(f"options {self.options!r} (one of {', '.join(_OPTION_RULES)}, or None)")
        if (self.options is None) != (self.mcq_min_clips is None):
            problems.append("options and mcq_min_clips go together")
        if problems:
            raise ValueError(f"question kind {self.name!r}: " + "; ".join(problems))

    def labels(self, events: Sequence[int]) -> list[str]:
        """The labels "(1)" ... its question text puts before the named events (when it lists them)."""
        return [f"({k + 1})" for k in range(len(events))] if "{items}" in "".join(self.questions) else []


def _anywhere(clip: int, n: int) -> bool:
    return True


def _first(events, order, pos):
    return (order[0],)


def _last(events, order, pos):
    return (order[-1],)


def _right_after(events, order, pos):
    i = pos[events[0]]
    return (order[i + 1],) if i + 1 < len(order) else ()


def _right_before(events, order, pos):
    i = pos[events[0]]
    return (order[i - 1],) if i > 0 else ()


def _earliest(events, order, pos):
    return (min(events, key=pos.__getitem__),)


def _latest(events, order, pos):
    return (max(events, key=pos.__getitem__),)


def _in_order(events, order, pos):
    return tuple(sorted(events, key=pos.__getitem__))


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("first", 0, _anywhere, False, _first,
         ("What happens first in the video?", "What is the first event shown in the video?",
          "How does the video begin?", "What do we see at the very beginning of the video?"),
         ("First, {c}.", "The video begins as {c}.", "At the very beginning, {c}."), None,
         LATE, LATE, False, False, "video", 4),
    Kind("last", 0, _anywhere, False, _last,
         ("What happens last in the video?", "What is the final event shown in the video?",
          "How does the video end?", "What do we see at the very end of the video?"),
         ("Last, {c}.", "The video ends as {c}.", "At the very end, {c}."), None,
         EARLY, EARLY, False, False, "video", 4),
    Kind("after", 1, lambda clip, n: clip < n - 1, False, _right_after,
         ("What happens right after this event: {x}?", "Which event immediately follows {x}?",
          "Once {x} is over, what comes next in the video?", "What is shown directly after {x}?"),
         ("Right after that, {c}.", "Next, {c}.", "The following event is this: {c}."),
         "Nothing follows it: that is the last event of the video.",
         BEFORE, BEFORE, True, False, "video", 5),
    Kind("before", 1, lambda clip, n: clip > 0, False, _right_before,
         ("What happens right before this event: {x}?", "Which event immediately precedes {x}?",
          "What comes just before {x} in the video?", "What is shown directly before {x}?"),
         ("Right before that, {c}.", "Just before it, {c}.", "The preceding event is this: {c}."),
         "Nothing precedes it: that is the first event of the video.",
         AFTER, AFTER, True, False, "video", 5),
    Kind("which_first", 2, _anywhere, False, _earliest,
         ("Which happens first in the video: {a} or {b}?", "Does {a} come before or after {b}?",
          "Of these two events, which one is shown earlier: {a} or {b}?",
          "In the video, which comes first, {a} or {b}?"),
         ("{A} comes first; {B} happens later.", "First {a_inline}; only afterwards {b_inline}."), None,
         LATE, BEFORE + ("last", "lastly", "latest"), True, True, None, None),
    Kind("earliest_of", 4, _anywhere, False, _earliest,
         ("Which of these events happens first in the video?", "Which of the following is shown earliest?",
          "Of the events below, which one comes first?"),
         (), None, LATE, (), False, False, "named", 5),
    Kind("latest_of", 4, _anywhere, False, _latest,
         ("Which of these events happens last in the video?", "Which of the following is shown latest?",
          "Of the events below, which one comes last?"),
         (), None, EARLY, (), False, False, "named", 5),
    Kind("order_three", 3, _anywhere, True, _in_order,
         ("In what order do these events happen in the video? {items}",
          "Put these events in the order the video shows them: {items}",
          "What is the temporal order of the following events? {items}"),
         ("First, {c0}; then, {c1}; finally, {c2}.", "The order is: first {c0}, next {c1}, and last {c2}."), None,
         REVERSE + EARLY + LATE + BEFORE, REVERSE + BEFORE + EARLY + LATE, True, False, "orders", 3),
)}

# What the SFT and the benchmark stages ask, written out: a kind added to KINDS joins only when named here.
SFT_KINDS = ("first", "last", "after", "before", "which_first", "order_three")
MCQ_KINDS = ("first", "last", "after", "before", "earliest_of", "latest_of", "order_three")
MIN_CLIPS_MCQ = min(KINDS[k].mcq_min_clips for k in MCQ_KINDS)  # fewest clips any benchmark question needs

__doc__ += "\nKinds (``KINDS``; a question of each, as its first template words it):\n\n" + "\n".join(
    f"  {k.name:<12}{k.questions[0]}" for k in KINDS.values()) + "\n"


def kind_of(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown question kind {name!r} (known: {', '.join(KINDS)})") from None


# ---------------------------------------------------------------- answers

def answer(kind: str, events: Sequence[int], order: Sequence[int]) -> tuple[int, ...]:
    """The answer of question (kind, events) for a video showing clips in ``order``."""
    order = list(order)
    return kind_of(kind).answer(events, order, {c: i for i, c in enumerate(order)})


def grounding(events: Sequence[int], ans: Sequence[int]) -> list[int]:
    """The clip indices an answer rests on (the named events and the answer), sorted."""
    return sorted(set(events) | set(ans))


# ---------------------------------------------------------------- wording

def question_text(kind: str, events: Sequence[int], captions: Sequence[str], phrasing: int) -> str:
    templates = kind_of(kind).questions
    quoted = [_q(captions[e]) for e in events]
    fields = dict(zip(("a", "b"), quoted), items=_labelled(events, captions)) if events else {}
    if quoted:
        fields["x"] = quoted[0]
    return templates[phrasing % len(templates)].format(**fields)


def answer_text(kind: str, events: Sequence[int], ans: Sequence[int], captions: Sequence[str], phrasing: int) -> str:
    """Free-text answer (SFT, preference pairs) for a computed answer."""
    k = kind_of(kind)
    if not ans:
        if k.none_answer is None:
            raise ValueError(f"a {kind} question always has an answer")
        return k.none_answer
    if not k.answers:
        raise ValueError(f"a {kind} question has no free-text answer (it is asked as an MCQ only)")
    fields = {"c": _inline(captions[ans[0]]), "A": _q(captions[ans[0]]), "a_inline": _inline(captions[ans[0]])}
    fields.update((f"c{i}", _inline(captions[c])) for i, c in enumerate(ans))
    rest = [e for e in events if e not in ans]
    if rest:
        fields.update(B=_q(captions[rest[0]]), b_inline=_inline(captions[rest[0]]))
    return k.answers[phrasing % len(k.answers)].format(**fields)


def option_text(kind: str, events: Sequence[int], option: Sequence[int], captions: Sequence[str]) -> str:
    """An MCQ option: an event's caption, or (options "orders") an ordering of the question's labels."""
    if kind_of(kind).options == "orders":
        label = {e: k + 1 for k, e in enumerate(events)}
        return ", then ".join(f"({label[c]})" for c in option)
    return sentence(captions[option[0]]) + "."


# ---------------------------------------------------------------- choosing questions

@dataclass(frozen=True)
class Question:
    kind: str
    events: tuple[int, ...]   # clips the question names, in the order it names them
    phrasing: int             # index of the question template (answers use it too)


@dataclass(frozen=True)
class MCQ:
    question: Question
    options: tuple[tuple[int, ...], ...]  # 4 options, unordered: [0] = real answer, then the shuffled
    real_answer: tuple[int, ...]          # answer if it differs, then distractors in seeded order
    shuffled_answer: tuple[int, ...]


def unique_clips(captions: Sequence[str]) -> list[int]:
    """Clips whose event (``event_key``) occurs once in the video (others would make a question ambiguous)."""
    counts: dict[str, int] = {}
    for c in captions:
        counts[event_key(c)] = counts.get(event_key(c), 0) + 1
    return [i for i, c in enumerate(captions) if counts[event_key(c)] == 1]


def _draw_events(kind: str, n: int, uniq: list[int], rng: random.Random) -> Optional[tuple[int, ...]]:
    k = kind_of(kind)
    if k.size == 0:
        return ()
    pool = [i for i in uniq if k.may_name(i, n)]
    if len(pool) < k.size:
        return None
    if k.size == 1:
        return (rng.choice(pool),)
    ev = rng.sample(pool, k.size)
    if k.never_in_order and ev == sorted(ev):
        rng.shuffle(ev)
    return tuple(ev)


def _kind_available(kind: str, n: int, uniq: list[int]) -> bool:
    return n >= 2 and len(uniq) >= kind_of(kind).size


def _require(kinds: Sequence[str], field: str, what: str) -> None:
    missing = [k for k in kinds if not getattr(kind_of(k), field)]
    if missing:
        raise ValueError(f"question kind(s) {', '.join(missing)} cannot be {what} (no {field})")


def pick_questions(captions: Sequence[str], count: int, rng: random.Random,
                   kinds: Sequence[str] = SFT_KINDS, max_tries: int = 30) -> list[Question]:
    """Up to ``count`` distinct questions, spreading over kinds (each kind once before any twice)."""
    _require(kinds, "answers", "asked with a free-text answer")
    n = len(captions)
    uniq = unique_clips(captions)
    avail = [k for k in kinds if _kind_available(k, n, uniq)]
    rng.shuffle(avail)
    chosen: list[Question] = []
    seen: set = set()
    while avail and len(chosen) < count:
        for kind in list(avail):
            if len(chosen) >= count:
                break
            for _ in range(max_tries):
                ev = _draw_events(kind, n, uniq, rng)
                key = (kind, frozenset(ev) if ev else ())
                if ev is not None and key not in seen:
                    seen.add(key)
                    chosen.append(Question(kind, ev, rng.randrange(len(kind_of(kind).questions))))
                    break
            else:
                avail.remove(kind)
    return chosen


def _mcq_options(q: Question, n: int, uniq: list[int], real: tuple, shuf: tuple,
                 rng: random.Random) -> Optional[tuple]:
    if not real or not shuf:
        return None
    rule = kind_of(q.kind).options
    if rule == "orders":
        pool = [p for p in itertools.permutations(q.events) if p not in (real, shuf)]
    elif rule == "named":
        pool = [(e,) for e in q.events if (e,) not in (real, shuf)]
    elif rule == "video":
        if real[0] not in uniq or shuf[0] not in uniq:
            return None
        pool = [(c,) for c in uniq if c not in q.events and (c,) not in (real, shuf)]
    else:
        raise ValueError(f"a {q.kind} question is not asked as an MCQ (its kind has no options rule)")
    heads = [real] if real == shuf else [real, shuf]
    need = N_OPTIONS - len(heads)
    if len(pool) < need:
        return None
    rng.shuffle(pool)
    return tuple(heads + pool[:need])


def pick_mcqs(captions: Sequence[str], permutation: Sequence[int], count: int, rng: random.Random,
              kinds: Sequence[str] = MCQ_KINDS, max_tries: int = 30) -> list[MCQ]:
    """Up to ``count`` MCQs whose options hold both the real-order and the shuffled-order answer."""
    n = len(captions)
    uniq = unique_clips(captions)
    real_order = list(range(n))
    _require(kinds, "options", "asked as an MCQ")
    avail = [k for k in kinds if n >= kind_of(k).mcq_min_clips and _kind_available(k, n, uniq)]
    rng.shuffle(avail)
    out: list[MCQ] = []
    seen: set = set()
    while avail and len(out) < count:
        for kind in list(avail):
            if len(out) >= count:
                break
            for _ in range(max_tries):
                ev = _draw_events(kind, n, uniq, rng)
                if ev is None:
                    continue
                key = (kind, frozenset(ev))
                if key in seen:
                    continue
                seen.add(key)
                q = Question(kind, ev, rng.randrange(len(kind_of(kind).questions)))
                real, shuf = answer(kind, ev, real_order), answer(kind, ev, permutation)
                opts = _mcq_options(q, n, uniq, real, shuf, rng)
                if opts is not None:
                    out.append(MCQ(q, opts, real, shuf))
                    break
            else:
                avail.remove(kind)
    return out


class KeyBalancer:
    """Places each MCQ's real and shuffled answers so both benchmarks' keys spread evenly over A-D.

    Called in a fixed order (sorted video id, question number), so placement does not depend on
    ``--workers``. Each placement keeps the spread (most-used minus least-used position) of both
    key counts as small as it can; ties rotate. Greedy, so a spread of 2 can occur (when the real
    and shuffled answers coincide and the two counts lack a common least-used position), never more
    in practice.
    """

    def __init__(self):
        self.normal = [0] * N_OPTIONS
        self.shuffled = [0] * N_OPTIONS
        self.turn = 0

    @staticmethod
    def _spread(counts: list[int], pos: int) -> int:
        c = counts[:]
        c[pos] += 1
        return max(c) - min(c)

    def place(self, mcq: MCQ) -> list[tuple[int, ...]]:
        rot = [(self.turn + k) % N_OPTIONS for k in range(N_OPTIONS)]
        self.turn += 1
        same = mcq.real_answer == mcq.shuffled_answer
        pairs = [(a, a) for a in rot] if same else [(a, b) for a in rot for b in rot if a != b]

        def cost(ab):
            sn, ss = self._spread(self.normal, ab[0]), self._spread(self.shuffled, ab[1])
            return (max(sn, ss), sn + ss, self.normal[ab[0]] + self.shuffled[ab[1]], rot.index(ab[0]), rot.index(ab[1]))

        pr, ps = min(pairs, key=cost)
        slots: list[Optional[tuple]] = [None] * N_OPTIONS
        slots[pr], slots[ps] = mcq.real_answer, mcq.shuffled_answer
        self.normal[pr] += 1
        self.shuffled[ps] += 1
        rest = iter(o for o in mcq.options if o not in (mcq.real_answer, mcq.shuffled_answer))
        return [s if s is not None else next(rest) for s in slots]


# ---------------------------------------------------------------- orders for hard negatives

def reversed_order(n: int) -> list[int]:
    return list(range(n))[::-1]


def adjacent_swaps(n: int) -> list[list[int]]:
    """Every order that swaps one pair of neighbouring clips of the real order."""
    out = []
    for i in range(n - 1):
        o = list(range(n))
        o[i], o[i + 1] = o[i + 1], o[i]
        out.append(o)
    return out


# ---------------------------------------------------------------- what a rewording must keep (the checker: timewarp/text/wording.py)

def flip_words(kind: str, role: str) -> tuple[str, ...]:
    """Direction words a rewording of a ``kind`` question or answer (``role``) may not add."""
    k = kind_of(kind)
    if role not in ("question", "answer"):
        raise ValueError(f"role {role!r}: question or answer")
    return k.flip_question if role == "question" else k.flip_answer


def question_keep(kind: str, events: Sequence[int]) -> list[int]:
    """The clips a question's text names, in the order it names them (a rewording must keep them)."""
    return list(events) if kind_of(kind).question_names_events else []


def question_labels(kind: str, events: Sequence[int]) -> dict:
    """The ``Rewrite.labels`` of a question: its labels "(1)" ... when its text lists the events so."""
    labels = kind_of(kind).labels(events)
    return {"question": labels} if labels else {}


def answer_keep(kind: str, events: Sequence[int], ans: Sequence[int]) -> list[int]:
    """The clips an answer's text names, in order (which_first: winner, then loser; none: nothing)."""
    if kind_of(kind).answer_names_rest and ans:
        return [ans[0]] + [e for e in events if e != ans[0]]
    return list(ans)
