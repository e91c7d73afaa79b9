"""Is a model's rewording of a template text acceptable? (The model words; it never decides what is true.)

A template text (a question, an answer, a merged caption) is literal words plus *event slots*: the
caption of a clip, quoted ("..."), after a label ("(2) ..."), or inline. ``check_rewording`` reads
the reply left to right and accepts it only if

* its **form** survives: the same structure marks in the same order (every '?' - a question stays one
  question and an answer gains none -, the quotes and the labels "(k)" when the template has them);
  nothing after a final '?'; a template part with words keeps some words; a text that ended with
  '.', '!' or '?' still does (a reply cut off by a token limit does not);
* its **events** are exactly the template's sequence of event mentions: every word of the reply that
  belongs to an event of the video (a content word of its caption that is not shared by all events,
  not a direction word, not a word of the template's own literal text) is read as a mention of the
  events whose captions hold it; between two structure marks those mentions must split, in order,
  into one run per slot of the template there, each run holding only words of its own event, each
  sentence of that event with at least half its identifying words (its words found in no other
  event, or all its words when none are its own), and no word more often than the caption has it.
  So an event named twice, an event of another field of the same request or of the video, a
  sentence moved across quotes or labels, an event dropped or shortened by a sentence, and events
  in another order are all refused;
* it adds no direction word that would flip the meaning (``added_flip_word``) and no negation,
  and its direction words point the same ways (earlier / later) in the same order as the template's
  ('"A" happens later; "B" comes first' for '"A" comes first; "B" happens later' is refused).

Events are identified by ``event_key`` (captions equal up to case, punctuation and spacing
are one event). A slot's caption must be found in the template text; when not, nothing is accepted.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Optional, Sequence

# ---------------------------------------------------------------- the words (also used by timewarp.text.temporal's kinds)

STOP_WORDS = frozenset(
    "a an the and or of to in on at by for with from into onto as is are was were be been it its this that these "
    "those then there their his her they he she we you up down out over under while who which what video frame "
    "scene shown shows".split())

# Direction words. A question kind (``temporal.Kind``) names those that would flip what its question asks
# or its answer says; a rewording may not add one (``added_flip_word``; a word the template already
# holds, e.g. a caption saying "first", does not count).
EARLY = ("first", "firstly", "begin", "begins", "began", "beginning", "start", "starts", "started", "starting",
         "opening", "opens", "earliest", "earlier", "initially", "initial")
LATE = ("last", "lastly", "end", "ends", "ended", "ending", "final", "finally", "finale", "latest", "later")
BEFORE = ("before", "precede", "precedes", "preceded", "preceding", "prior", "previous", "previously", "earlier")
AFTER = ("after", "afterwards", "afterward", "follow", "follows", "followed", "following", "next", "later",
         "subsequent", "subsequently")
REVERSE = ("reverse", "reversed", "backwards", "backward", "opposite")


def sentence(caption: str) -> str:
    """A caption without surrounding spaces and final full stop (to quote it or end it otherwise)."""
    return caption.strip().rstrip(".").strip()


def event_key(caption: str) -> str:
    """What identifies an event: its caption's words, case-folded (captions equal up to case,
    punctuation and spacing, "... camera." / "... camera!", are one event: indistinguishable)."""
    return " ".join(re.findall(r"[^\W_]+", caption.casefold()))


def tokens(text: str) -> list[str]:
    """Lower-case word tokens, with a label such as "(2)" as one token."""
    return re.findall(r"\(\d+\)|[a-z0-9]+", text.lower())


def added_flip_word(text: str, template: str, words: Sequence[str]) -> Optional[str]:
    """None unless ``text`` holds one of ``words`` that ``template`` does not; else a short reason."""
    toks, have = set(tokens(text)), set(tokens(template))
    bad = sorted(w for w in words if w in toks and w not in have)
    return f"direction word added ({', '.join(bad)})" if bad else None


# ---------------------------------------------------------------- the checker

MIN_COVER = 0.5
# Words that say when, not what: never read as a mention of an event.
NEUTRAL = set(EARLY + LATE + BEFORE + AFTER + REVERSE) | set(
    "then next once now finally event events happen happens happened happening occur occurs comes come order "
    "someone somebody person people".split())

# Direction words by what they point to: the earlier (E) or the later (L) end of the video.
_E = set(EARLY + BEFORE + ("beforehand",))
_L = set(LATE + AFTER) - _E
_NEGATION = re.compile(r"\b(?:not|never|no|nor|neither|none|without|cannot)\b|n't\b|n\u2019t\b")
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"'})
_TOKEN = re.compile(r'\(\d+\)|"|\?|[^\W_]+')
_END = re.compile(r'[.!?]["\')\]]*\s*$')


def normalize(text: str) -> str:
    return " ".join(text.translate(_QUOTES).split())


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[^\W_]+", text.casefold()) if len(w) > 2 and w not in STOP_WORDS]


def _split_sentences(caption: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?;])\s+", sentence(caption)) if s.strip()]


def _locate(template: str, keep: Sequence[str]) -> Optional[list[tuple[int, int]]]:
    """(start, end) of each kept caption in ``template``, in order; None if one is not found."""
    low, pos, spans = template.casefold(), 0, []
    for cap in keep:
        s = normalize(sentence(cap)).casefold()
        m = re.compile(r"(?<![^\W_])" + re.escape(s) + r"(?![^\W_])").search(low, pos) if s else None
        if m is None:
            return None
        spans.append((m.start(), m.end()))
        pos = m.end()
    return spans


def _structure(text: str, kinds: set) -> tuple[list[str], list[list[str]]]:
    """The structure marks of ``text`` (of ``kinds``: 'label', 'quote', '?') and the words between them."""
    marks, parts = [], [[]]
    for tok in _TOKEN.findall(text.casefold()):
        kind = "label" if tok[0] == "(" else "quote" if tok == '"' else "?" if tok == "?" else None
        if kind is None:
            if not tok.startswith("("):
                parts[-1].append(tok)
        elif kind in kinds:
            marks.append(tok)
            parts.append([])
    return marks, parts


def _directions(text: str, skip: set) -> list[str]:
    """The direction words of ``text`` (not words of ``skip``) as E/L, repeats merged: "A comes first; B
    happens later" -> [E, L]."""
    seq: list[str] = []
    for w in re.findall(r"[^\W_]+", text.casefold()):
        c = None if w in skip else "E" if w in _E else "L" if w in _L else None
        if c and (not seq or seq[-1] != c):
            seq.append(c)
    return seq


def check_rewording(reply: str, template: str, keep: Sequence[str], video: Sequence[str] = (),
                    forbid: Sequence[str] = (), min_cover: float = MIN_COVER, directions: bool = True) -> Optional[str]:
    """None if ``reply`` is an acceptable rewording of ``template`` naming the events ``keep`` (captions, in
    the order the template names them) of a video whose captions are ``video``; else a short reason.
    ``directions``: the reply's direction words (first/before ... vs last/after ..., outside the captions'
    own words) must point the same ways in the same order as the template's (off for a merged caption,
    whose rewording adds "first, then, finally")."""
    reply, template = normalize(reply), normalize(template)
    spans = _locate(template, keep)
    if spans is None:
        return "template text does not hold its events"
    literal = template
    for a, b in reversed(spans):
        literal = literal[:a] + " \x00 " + literal[b:]
    kinds = {"?"} | ({"quote"} if '"' in literal else set()) | (
        {"label"} if re.search(r"\(\d+\)", literal) else set())
    t_marks, t_parts = _structure(literal, kinds)
    r_marks, r_parts = _structure(reply, kinds)
    if t_marks != r_marks:
        return _form_reason(t_marks, r_marks)
    for tp, rp in zip(t_parts, r_parts):
        if tp and not rp:
            return "text cut off (a part of the template is empty)"
    if t_marks and t_marks[-1] == "?" and not t_parts[-1] and r_parts[-1]:
        return "text after the question mark"
    if _END.search(template) and not _END.search(reply):
        return "text cut off (no closing punctuation)"

    # events of the video, by identity; words of the template's literal text and words every event has
    # are not read as mentions
    events = {}
    for cap in list(video) + list(keep):
        events.setdefault(event_key(cap), cap)
    owners: dict[str, set] = {}
    for key, cap in events.items():
        for w in set(_words(cap)):
            owners.setdefault(w, set()).add(key)
    neutral = NEUTRAL | set(_words(literal))
    if len(events) > 1:
        neutral |= {w for w, o in owners.items() if len(o) == len(events)}

    # the compartment (text between two structure marks) each slot stands in
    pieces = literal.split("\x00")
    slot_part = [len(_structure("".join(pieces[:k + 1]), kinds)[0]) for k in range(len(keep))]

    keys = [event_key(c) for c in keep]
    slots = []
    for k, cap in enumerate(keep):
        text = normalize(sentence(cap))
        counts = Counter(_words(text))
        needs = []
        for s in _split_sentences(text):
            ws = {w for w in _words(s) if w not in neutral}
            own = {w for w in ws if owners.get(w) == {keys[k]}}
            if own or ws:
                needs.append(own or ws)
        if not needs:
            return f"event {k + 1} has no words of its own to check"
        slots.append(dict(key=keys[k], counts=counts, needs=needs))

    for p, words in enumerate(r_parts):
        mine = [k for k in range(len(keep)) if slot_part[k] == p]
        toks = [(w, owners[w]) for w in words if w in owners and w not in neutral]
        problem = _segment(toks, [slots[k] for k in mine], min_cover)
        if problem:
            kind, j, detail = problem
            if kind == "foreign":
                other = [k for k in range(len(keep)) if keys[k] in detail[1]]
                if other:
                    return f"event {other[0] + 1} outside its place ({detail[0]})"
                return f"mentions another event ({detail[0]})"
            return f"event {mine[j] + 1} {kind}" if j is not None else kind
    if len(_NEGATION.findall(reply.casefold())) > len(_NEGATION.findall(template.casefold())):
        return "negation added"
    flipped = added_flip_word(reply, template, forbid)
    if flipped:
        return flipped
    if directions:
        want, got = _directions(template, set(owners)), _directions(reply, set(owners))
        if want != got:
            return f"direction words changed ({'-'.join(want) or 'none'} -> {'-'.join(got) or 'none'})"
    return None


def _segment(toks: list, slots: list, min_cover: float) -> Optional[tuple]:
    """None if ``toks`` (word, owner events) split in order into one run per slot, each run only words
    of its slot's event, covering each of its sentences, no word more often than the caption has it;
    else (problem, slot index or None, detail)."""
    keys = {s["key"] for s in slots}
    for w, o in toks:
        if not o & keys:
            return ("foreign", None, (w, o))
    m = len(toks)

    copies = Counter(s["key"] for s in slots)

    def ok(s, run):
        have = Counter(w for w, _ in run)
        if any(c > max(1, s["counts"][w]) for w, c in have.items()):
            return False
        # an event the text names twice needs all its words each time (half of them would let one
        # mention pass for two)
        cover = 1.0 if copies[s["key"]] > 1 else min_cover
        if not all(len(n & have.keys()) >= math.ceil(cover * len(n)) for n in s["needs"]):
            return False
        firsts = []   # its sentences in order: each starts after the previous one started
        for i, n in enumerate(s["needs"]):
            own = n.difference(*(o for j, o in enumerate(s["needs"]) if j != i))
            at = next((x for x, (w, _) in enumerate(run) if w in own), None)
            if at is not None:
                firsts.append(at)
        return firsts == sorted(firsts)

    ends = {0}          # where the runs of slots[:k] can end
    for k, slot in enumerate(slots):
        nxt = set()
        for p in sorted(ends):
            q = p
            while q < m and slot["key"] in toks[q][1]:
                q += 1
                if ok(slot, toks[p:q]):
                    nxt.add(q)
        if not nxt:
            rest = Counter(w for w, _ in toks[min(ends):])
            covered = all(len(n & rest.keys()) >= math.ceil(min_cover * len(n)) for n in slot["needs"])
            return ("out of order" if covered else "missing", k, None)
        ends = nxt
    if m in ends:
        return None
    w, o = toks[max(ends)]
    j = next((j for j, s in enumerate(slots) if s["key"] in o), 0)
    return (f"named again ({w})", j, None)


def _form_reason(t_marks: list, r_marks: list) -> str:
    for lab in [m for m in t_marks if m.startswith("(")]:
        if lab not in r_marks:
            return f"marker {lab} lost"
    t_labels, r_labels = [m for m in t_marks if m.startswith("(")], [m for m in r_marks if m.startswith("(")]
    if t_labels != r_labels:
        wrong = next((a for a, b in zip(t_labels, r_labels) if a != b), r_labels[-1] if r_labels else "")
        return f"marker {wrong} out of place"
    tq, rq = t_marks.count("?"), r_marks.count("?")
    if rq > tq:
        return "question mark added (not one question)" if tq else "question mark added (an answer became a question)"
    if rq < tq:
        return "question mark lost (text cut off or no longer a question)"
    if t_marks.count('"') != r_marks.count('"'):
        return f"quotes changed ({r_marks.count(chr(34))} quote marks, the template has {t_marks.count(chr(34))})"
    return "quotes, labels or question mark moved"
