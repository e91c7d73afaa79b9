"""Wording backends (template / model) of the generation stages. The answer is never the model's to decide.

Stages build every text with the offline templates of ``timewarp.text.temporal`` first (question, answer,
options, merged caption: right by construction). A backend then only *rewords* those texts:

* ``TemplateBackend`` (default): returns them unchanged. Offline, deterministic, no key.
* ``OpenAIBackend``: asks an OpenAI-compatible model (through ``timewarp.text.llm.ChatClient``: cached on
  disk, retried on 429/5xx/timeouts, concurrency-limited, tokens counted) to rewrite them fluently,
  as one strict JSON object with the same keys. Only texts that name events are sent: a text with
  nothing to keep ("What happens first in the video?", "Nothing follows it: ...") stays template
  text. A reply is accepted only if it is that object and every field passes
  ``timewarp.text.wording.check_rewording``: read left to right it names exactly the template's events
  (each as often, in the same order, none of another field or of the video, each quote or label
  holding only its own event's sentences), keeps its form (the same '?', quotes and labels, nothing
  after a final '?', nothing cut off) and adds no direction word that flips the meaning; and the
  required literal markers stay. A merged caption must keep every event once, in order.
  Otherwise the client re-asks, and when it gives up the template text is kept and the failure comes
  back (reason + reply) for the stage's rejects file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional, Sequence

from timewarp.text.llm import parse_json_object
from timewarp.text.wording import check_rewording

SYSTEM_QA = (
    "You rewrite short texts about a video so they read fluently and naturally. You are given a JSON "
    "object of texts. Reply with one JSON object with exactly the same keys, each value the rewritten "
    "text. Rules: keep the meaning exactly; keep every event that a text mentions, described with its "
    "own key words, in the same order as the original; do not add events, details or opinions; do not "
    "change which event happens when; keep markers such as (1), (2), (3) unchanged, each before its own "
    "event; keep quotation marks around exactly the event they enclose; name each event only as often as the "
    "original does and never put one text's events into another text; a question stays one question that "
    "ends with its question mark, with nothing after it; an answer stays an answer; answer a question "
    "the same way the original answer does. Reply with JSON only."
)
SYSTEM_CAPTION = (
    "You turn a list of event descriptions of a video, given in the order they happen, into one fluent "
    "paragraph. Reply with one JSON object {\"caption\": <paragraph>}. Rules: mention every event, each "
    "with its own key words, in exactly the given order; use words such as first, then, next, after "
    "that, finally; add no events or details that are not given. Reply with JSON only."
)


@dataclass
class Rewrite:
    """Texts to reword together (one request), and what each must keep."""

    key: str                                    # item id, for rejects
    fields: dict                                # name -> template text
    keep: dict = field(default_factory=dict)    # name -> captions that must stay mentioned, in order
                                                # (a field with none is not sent: template text kept)
    markers: dict = field(default_factory=dict)  # name -> literal strings that must stay
    caption: bool = False                       # a merged-caption rewrite (other prompt)
    events: Sequence[str] = ()                  # caption rewrite: the event list, in order
    captions: Sequence[str] = ()                # every caption of the video: distinctive words are
                                                # computed against these; others may not be named
    labels: dict = field(default_factory=dict)  # name -> labels of keep[k] ("(1)", ...), in order (the
                                                # checker also reads them off the template text)
    forbid: dict = field(default_factory=dict)  # name -> direction words the rewording may not add

    def sent(self) -> list:
        """Names of the fields the model rewords: those with events to keep."""
        return [n for n in self.fields if self.keep.get(n)]


@dataclass
class Reworded:
    fields: dict
    wording: str                                # "template" | "llm"
    failure: Optional[tuple] = None             # (reason, detail) when the model's reply was not used


class TemplateBackend:
    """Offline, deterministic: the template texts as they are."""

    name = "template"

    def reword(self, items: Sequence[Rewrite], desc: str = "", reject=None) -> list[Reworded]:
        return [Reworded(dict(it.fields), "template") for it in items]

    @property
    def usage(self) -> dict:
        return {}


def validate_field(item: Rewrite, name: str, value: str) -> Optional[str]:
    """None if ``value`` is an acceptable rewording of field ``name`` of ``item``, else the reason."""
    original = item.fields[name]
    keep = item.keep.get(name, ())
    if len(value) > 3 * len(original) + 200:
        return f"reply too long ({len(value)} characters)"
    for m in item.markers.get(name, ()):
        if m not in value:
            return f"marker {m} lost"
    return check_rewording(value, original, keep, item.captions, item.forbid.get(name, ()), directions=not item.caption)


def make_validator(item: Rewrite):
    names = item.sent()

    def validate(text: str) -> dict:
        obj = parse_json_object(text, {k: str for k in names})
        out = {}
        for name in names:
            value = " ".join(obj[name].split())
            problem = validate_field(item, name, value)
            if problem:
                raise ValueError(f"{name}: {problem}")
            out[name] = value
        return out

    return validate


class OpenAIBackend:
    """Rewords through a ``timewarp.text.llm.ChatClient``; falls back to the template text per item."""

    name = "openai"

    def __init__(self, client):
        self.client = client

    def request(self, item: Rewrite):
        from timewarp.text.llm import ChatRequest

        if item.caption:
            user = json.dumps({"events": list(item.events)}, ensure_ascii=False)
            return ChatRequest(messages=(("system", SYSTEM_CAPTION), ("user", user)), max_tokens=1024)
        user = json.dumps({n: item.fields[n] for n in item.sent()}, ensure_ascii=False)
        return ChatRequest(messages=(("system", SYSTEM_QA), ("user", user)), max_tokens=768)

    def reword(self, items: Sequence[Rewrite], desc: str = "", reject=None) -> list[Reworded]:
        """The reworded texts, in order; an item whose reply is not used keeps its template text and,
        with ``reject`` (e.g. ``StageRun.reject``), is recorded as ``reject(key, reason, detail)``."""
        from timewarp.text.llm import LLMError

        asked = [it for it in items if it.sent()]  # nothing to keep: nothing to reword
        replies = iter(self.client.map([(self.request(it), make_validator(it)) for it in asked],
                                       desc=desc or "rewording"))
        out = []
        for it in items:
            if not it.sent():
                out.append(Reworded(dict(it.fields), "template"))
                continue
            rep = next(replies)
            if isinstance(rep, LLMError):
                detail = rep.detail + (f"; reply: {rep.reply}" if rep.reply is not None else "")
                out.append(Reworded(dict(it.fields), "template", (f"model reply not used ({rep.reason})", detail)))
                if reject is not None:
                    reject(it.key, *out[-1].failure)
            else:
                out.append(Reworded({**it.fields, **rep}, "llm"))
        return out

    @property
    def usage(self) -> dict:
        return self.client.usage


def backend_for(client) -> TemplateBackend | OpenAIBackend:
    return TemplateBackend() if client is None else OpenAIBackend(client)
