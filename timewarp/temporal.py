"""Temporal questions and their answers, computed from an ordered list of clips (never from a model).

Everything here works on clip *indices in real order*. An ``order`` is the list of real-order clip
indices as a video shows them: ``list(range(n))`` for the normal video, the shuffled annotation's
``permutation`` for the shuffled video, ``reversed`` for a reversed-order negative, and so on.
A question is its ``kind`` plus the clips it names (``events``); its answer under an order is a tuple
of clip indices (``answer``), so the same question can be answered for the real order (SFT, chosen,
normal benchmark key) and for the shuffled order (rejected, shuffled benchmark key) by one function.

Kinds:
  first / last          what happens first / last                       answer (c,)
  after / before        what happens right after / right before X       answer (c,) or () if none
  which_first           which of two events happens first               answer (c,)
  earliest_of/latest_of which of four events happens first / last (MCQ) answer (c,)
  order_three           the order of three events                       answer (a, b, c)

Wording comes from several phrasings per kind, chosen by a seeded RNG; answers are right by
construction. MCQ options are only events of the same video (or orderings of the question's own
events), so every option is a plausible answer for some order of that video.
"""
from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass
from typing import Optional, Sequence

LETTERS = "ABCD"
N_OPTIONS = 4

SFT_KINDS = ("first", "last", "after", "before", "which_first", "order_three")
MCQ_KINDS = ("first", "last", "after", "before", "earliest_of", "latest_of", "order_three")

# Fewest clips a video needs for each MCQ kind so that 4 distinct, plausible options exist.
MCQ_MIN_CLIPS = {"order_three": 3, "first": 4, "last": 4, "after": 5, "before": 5, "earliest_of": 5, "latest_of": 5}
MIN_CLIPS_MCQ = min(MCQ_MIN_CLIPS.values())


# ---------------------------------------------------------------- answers

def answer(kind: str, events: Sequence[int], order: Sequence[int]) -> tuple[int, ...]:
    """The answer of question (kind, events) for a video showing clips in ``order``."""
    order = list(order)
    pos = {c: i for i, c in enumerate(order)}
    if kind == "first":
        return (order[0],)
    if kind == "last":
        return (order[-1],)
    if kind == "after":
        i = pos[events[0]]
        return (order[i + 1],) if i + 1 < len(order) else ()
    if kind == "before":
        i = pos[events[0]]
        return (order[i - 1],) if i > 0 else ()
    if kind in ("which_first", "earliest_of"):
        return (min(events, key=pos.__getitem__),)
    if kind == "latest_of":
        return (max(events, key=pos.__getitem__),)
    if kind == "order_three":
        return tuple(sorted(events, key=pos.__getitem__))
    raise ValueError(f"unknown question kind {kind!r}")


def grounding(kind: str, events: Sequence[int], ans: Sequence[int]) -> list[int]:
    """The clip indices an answer rests on (the named events and the answer), sorted."""
    return sorted(set(events) | set(ans))


# ---------------------------------------------------------------- wording

def _sentence(caption: str) -> str:
    return caption.strip().rstrip(".").strip()


def _inline(caption: str) -> str:
    """A caption to go after a comma: lower-case a leading article only (names keep their capital)."""
    s = _sentence(caption)
    m = re.match(r"^(A|An|The)\b", s)
    return s[0].lower() + s[1:] if m else s


def _q(caption: str) -> str:
    return f'"{_sentence(caption)}"'


QUESTION_TEMPLATES = {
    "first": ["What happens first in the video?", "What is the first event shown in the video?",
              "How does the video begin?", "What do we see at the very beginning of the video?"],
    "last": ["What happens last in the video?", "What is the final event shown in the video?",
             "How does the video end?", "What do we see at the very end of the video?"],
    "after": ["What happens right after this event: {x}?", "Which event immediately follows {x}?",
              "Once {x} is over, what comes next in the video?", "What is shown directly after {x}?"],
    "before": ["What happens right before this event: {x}?", "Which event immediately precedes {x}?",
               "What comes just before {x} in the video?", "What is shown directly before {x}?"],
    "which_first": ["Which happens first in the video: {a} or {b}?", "Does {a} come before or after {b}?",
                    "Of these two events, which one is shown earlier: {a} or {b}?",
                    "In the video, which comes first, {a} or {b}?"],
    "earliest_of": ["Which of these events happens first in the video?", "Which of the following is shown earliest?",
                    "Of the events below, which one comes first?"],
    "latest_of": ["Which of these events happens last in the video?", "Which of the following is shown latest?",
                  "Of the events below, which one comes last?"],
    "order_three": ["In what order do these events happen in the video? {items}",
                    "Put these events in the order the video shows them: {items}",
                    "What is the temporal order of the following events? {items}"],
}

ANSWER_TEMPLATES = {
    "first": ["First, {c}.", "The video begins as {c}.", "At the very beginning, {c}."],
    "last": ["Last, {c}.", "The video ends as {c}.", "At the very end, {c}."],
    "after": ["Right after that, {c}.", "Next, {c}.", "The following event is this: {c}."],
    "before": ["Right before that, {c}.", "Just before it, {c}.", "The preceding event is this: {c}."],
    "which_first": ["{A} comes first; {B} happens later.", "First {a_inline}; only afterwards {b_inline}."],
    "order_three": ["First, {c0}; then, {c1}; finally, {c2}.", "The order is: first {c0}, next {c1}, and last {c2}."],
}
NONE_ANSWERS = {
    "after": "Nothing follows it: that is the last event of the video.",
    "before": "Nothing precedes it: that is the first event of the video.",
}


def _labelled(events: Sequence[int], captions: Sequence[str]) -> str:
    return " ".join(f"({k + 1}) {_sentence(captions[e])}." for k, e in enumerate(events))


def question_text(kind: str, events: Sequence[int], captions: Sequence[str], phrasing: int) -> str:
    templates = QUESTION_TEMPLATES[kind]
    t = templates[phrasing % len(templates)]
    if kind in ("after", "before"):
        return t.format(x=_q(captions[events[0]]))
    if kind == "which_first":
        return t.format(a=_q(captions[events[0]]), b=_q(captions[events[1]]))
    if kind == "order_three":
        return t.format(items=_labelled(events, captions))
    return t


def answer_text(kind: str, events: Sequence[int], ans: Sequence[int], captions: Sequence[str], phrasing: int) -> str:
    """Free-text answer (SFT, preference pairs) for a computed answer."""
    if not ans:
        return NONE_ANSWERS[kind]
    templates = ANSWER_TEMPLATES[kind]
    t = templates[phrasing % len(templates)]
    if kind == "which_first":
        winner = ans[0]
        loser = events[1] if events[0] == winner else events[0]
        return t.format(A=_q(captions[winner]), B=_q(captions[loser]), a_inline=_inline(captions[winner]),
                        b_inline=_inline(captions[loser]))
    if kind == "order_three":
        return t.format(c0=_inline(captions[ans[0]]), c1=_inline(captions[ans[1]]), c2=_inline(captions[ans[2]]))
    return t.format(c=_inline(captions[ans[0]]))


def option_text(kind: str, events: Sequence[int], option: Sequence[int], captions: Sequence[str]) -> str:
    """An MCQ option: an event's caption, or for order_three an ordering of the question's labels."""
    if kind == "order_three":
        label = {e: k + 1 for k, e in enumerate(events)}
        return ", then ".join(f"({label[c]})" for c in option)
    return _sentence(captions[option[0]]) + "."


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


def event_key(caption: str) -> str:
    """What identifies an event: its caption's words, case-folded (captions equal up to case,
    punctuation and spacing, "... camera." / "... camera!", are one event: indistinguishable)."""
    return " ".join(re.findall(r"[^\W_]+", caption.casefold()))


def unique_clips(captions: Sequence[str]) -> list[int]:
    """Clips whose event (``event_key``) occurs once in the video (others would make a question ambiguous)."""
    counts: dict[str, int] = {}
    for c in captions:
        counts[event_key(c)] = counts.get(event_key(c), 0) + 1
    return [i for i, c in enumerate(captions) if counts[event_key(c)] == 1]


def _draw_events(kind: str, n: int, uniq: list[int], rng: random.Random) -> Optional[tuple[int, ...]]:
    if kind in ("first", "last"):
        return ()
    if kind == "after":
        pool = [i for i in uniq if i < n - 1]
        return (rng.choice(pool),) if pool else None
    if kind == "before":
        pool = [i for i in uniq if i > 0]
        return (rng.choice(pool),) if pool else None
    size = {"which_first": 2, "order_three": 3, "earliest_of": 4, "latest_of": 4}[kind]
    if len(uniq) < size:
        return None
    ev = rng.sample(uniq, size)
    if kind == "order_three" and ev == sorted(ev):   # labels (1)(2)(3) never read off the answer by default
        rng.shuffle(ev)
    return tuple(ev)


def _kind_available(kind: str, n: int, uniq: list[int]) -> bool:
    need = {"first": 0, "last": 0, "after": 1, "before": 1, "which_first": 2, "order_three": 3,
            "earliest_of": 4, "latest_of": 4}[kind]
    return n >= 2 and len(uniq) >= need


def pick_questions(captions: Sequence[str], count: int, rng: random.Random,
                   kinds: Sequence[str] = SFT_KINDS, max_tries: int = 30) -> list[Question]:
    """Up to ``count`` distinct questions, spreading over kinds (each kind once before any twice)."""
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
                    chosen.append(Question(kind, ev, rng.randrange(len(QUESTION_TEMPLATES[kind]))))
                    break
            else:
                avail.remove(kind)
    return chosen


def _mcq_options(q: Question, n: int, uniq: list[int], real: tuple, shuf: tuple,
                 rng: random.Random) -> Optional[tuple]:
    if not real or not shuf:
        return None
    if q.kind == "order_three":
        pool = [p for p in itertools.permutations(q.events) if p not in (real, shuf)]
    elif q.kind in ("earliest_of", "latest_of"):
        pool = [(e,) for e in q.events if (e,) not in (real, shuf)]
    else:
        if real[0] not in uniq or shuf[0] not in uniq:
            return None
        pool = [(c,) for c in uniq if c not in q.events and (c,) not in (real, shuf)]
    heads = [real] if real == shuf else [real, shuf]
    need = N_OPTIONS - len(heads)
    if len(pool) < need:
        return None
    rng.shuffle(pool)
    return tuple(heads + pool[:need])


def pick_mcqs(captions: Sequence[str], permutation: Sequence[int], count: int, rng: random.Random,
              max_tries: int = 30) -> list[MCQ]:
    """Up to ``count`` MCQs whose options hold both the real-order and the shuffled-order answer."""
    n = len(captions)
    uniq = unique_clips(captions)
    real_order = list(range(n))
    avail = [k for k in MCQ_KINDS if n >= MCQ_MIN_CLIPS[k] and _kind_available(k, n, uniq)]
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
                q = Question(kind, ev, rng.randrange(len(QUESTION_TEMPLATES[kind])))
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


# ---------------------------------------------------------------- checking model wording (the checker: timewarp/wording.py)

_STOP = set("a an the and or of to in on at by for with from into onto as is are was were be been it its this that "
            "these those then there their his her they he she we you up down out over under while who which what "
            "video frame scene shown shows".split())


def _tokens(text: str) -> list[str]:
    """Lower-case word tokens, with a label such as "(2)" as one token."""
    return re.findall(r"\(\d+\)|[a-z0-9]+", text.lower())


# Words that would flip what a question of a kind asks or what its answer says. A rewording may not
# add one; a word the template text already holds (a caption may say "first") does not count.
_EARLY = ("first", "firstly", "begin", "begins", "began", "beginning", "start", "starts", "started", "starting",
          "opening", "opens", "earliest", "earlier", "initially", "initial")
_LATE = ("last", "lastly", "end", "ends", "ended", "ending", "final", "finally", "finale", "latest", "later")
_BEFORE = ("before", "precede", "precedes", "preceded", "preceding", "prior", "previous", "previously", "earlier")
_AFTER = ("after", "afterwards", "afterward", "follow", "follows", "followed", "following", "next", "later",
          "subsequent", "subsequently")
_REVERSE = ("reverse", "reversed", "backwards", "backward", "opposite")
FLIP_WORDS = {
    ("first", "question"): _LATE, ("first", "answer"): _LATE,
    ("last", "question"): _EARLY, ("last", "answer"): _EARLY,
    ("after", "question"): _BEFORE, ("after", "answer"): _BEFORE,
    ("before", "question"): _AFTER, ("before", "answer"): _AFTER,
    ("earliest_of", "question"): _LATE, ("latest_of", "question"): _EARLY,
    ("which_first", "question"): _LATE, ("which_first", "answer"): _BEFORE + ("last", "lastly", "latest"),
    ("order_three", "question"): _REVERSE + _EARLY + _LATE + _BEFORE,
    ("order_three", "answer"): _REVERSE + _BEFORE + _EARLY + _LATE,
}


def flip_words(kind: str, role: str) -> tuple[str, ...]:
    """Direction words a rewording of a ``kind`` question or answer (``role``) may not add."""
    return FLIP_WORDS.get((kind, role), ())


def added_flip_word(text: str, template: str, words: Sequence[str]) -> Optional[str]:
    """None unless ``text`` holds one of ``words`` that ``template`` does not; else a short reason."""
    toks, have = set(_tokens(text)), set(_tokens(template))
    bad = sorted(w for w in words if w in toks and w not in have)
    return f"direction word added ({', '.join(bad)})" if bad else None


def question_keep(kind: str, events: Sequence[int]) -> list[int]:
    """The clips a question's text names, in the order it names them (a rewording must keep them)."""
    return list(events) if kind in ("after", "before", "which_first", "order_three") else []


def answer_keep(kind: str, events: Sequence[int], ans: Sequence[int]) -> list[int]:
    """The clips an answer's text names, in order (which_first: winner, then loser; none: nothing)."""
    if kind == "which_first" and ans:
        return [ans[0]] + [e for e in events if e != ans[0]]
    return list(ans)
