"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests, with scriptable faults.

    with FakeOpenAI() as server:              # or the ``fake_openai`` pytest fixture
        server.responder = lambda req: '{"text": "hi"}'
        server.push(Fault.rate_limited(0.2), Fault.server_error(500))   # the next two chat calls fail
        client = ChatClient(server.base_url, server.model, cache_dir)
        ...
        server.chat_calls, server.requests[-1].headers["Authorization"], server.max_in_flight

Serves ``GET /v1/models`` and ``POST /v1/chat/completions`` in OpenAI's JSON shape. Every request is
recorded. Each chat call first takes the next fault from the queue, if any; otherwise it answers with
``responder(request_json)`` after ``delay`` seconds.
"""
from __future__ import annotations

import collections
import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

import pytest


@dataclass(frozen=True)
class Fault:
    """What one chat call does instead of answering normally."""

    kind: str  # "status" | "hang" | "content" | "reject_response_format"
    status: int = 200
    body: str = ""
    headers: tuple = ()
    seconds: float = 0.0
    content: Optional[str] = None

    @staticmethod
    def rate_limited(retry_after: Optional[float] = None) -> "Fault":
        headers = (("Retry-After", f"{retry_after:g}"),) if retry_after is not None else ()
        return Fault("status", 429, _error_body("Rate limit reached", "rate_limit_exceeded"), headers)

    @staticmethod
    def server_error(status: int = 500) -> "Fault":
        return Fault("status", status, _error_body("The server had an error", "server_error"))

    @staticmethod
    def http_status(status: int, message: str = "error") -> "Fault":
        return Fault("status", status, _error_body(message, "invalid_request_error"))

    @staticmethod
    def hang(seconds: float = 5.0) -> "Fault":
        """Accept the request, say nothing for ``seconds`` (or until the server stops), then hang up."""
        return Fault("hang", seconds=seconds)

    @staticmethod
    def malformed(content: str = "Sure! Here is your answer: it is the red square.") -> "Fault":
        return Fault("content", content=content)

    @staticmethod
    def empty() -> "Fault":
        return Fault("content", content="")

    @staticmethod
    def null_content() -> "Fault":
        return Fault("content", content=None)

    @staticmethod
    def garbage_body() -> "Fault":
        """HTTP 200 whose body is not a chat completion at all (a confused proxy)."""
        return Fault("status", 200, "<html>gateway</html>")

    @staticmethod
    def reject_response_format() -> "Fault":
        """400 mentioning response_format if the request has one (else a normal answer)."""
        return Fault("reject_response_format")


def _error_body(message: str, typ: str) -> str:
    return json.dumps({"error": {"message": message, "type": typ, "param": None, "code": None}})


class Headers(dict):
    """Request headers by case-insensitive name (HTTP header names are; httpx sends them lower-case)."""

    def __init__(self, items=()):
        super().__init__((str(k).lower(), v) for k, v in items)

    def __getitem__(self, key):
        return super().__getitem__(str(key).lower())

    def __contains__(self, key):
        return super().__contains__(str(key).lower())

    def get(self, key, default=None):
        return super().get(str(key).lower(), default)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict
    body: Optional[dict]
    time: float = field(default_factory=time.monotonic)


def default_responder(request: dict) -> str:
    return json.dumps({"text": "ok"})


class FakeOpenAI:
    def __init__(self, models: tuple = ("fake-model",), responder: Callable[[dict], Optional[str]] = default_responder):
        self.models = list(models)
        self.model = self.models[0] if self.models else "fake-model"
        self.responder = responder
        self.delay = 0.0  # seconds every normal chat answer takes (to see concurrency)
        self.models_status: Optional[int] = None  # e.g. 404: /v1/models answers this status instead
        self.supports_response_format = True  # False: every request with response_format gets a 400
        self.requests: list[Recorded] = []
        self.faults: collections.deque[Fault] = collections.deque()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ control
    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def push(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    @property
    def chat_requests(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def chat_calls(self) -> int:
        return len(self.chat_requests)

    def start(self) -> "FakeOpenAI":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                fake._handle(self, "GET")

            def do_POST(self):
                fake._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes hanging handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ serving
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        if self._stop.is_set():  # stopped: a kept-alive connection is hung up on, as a dead server's would be
            h.close_connection = True
            return None
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self.requests.append(Recorded(method, h.path, Headers(h.headers.items()), body))
        path = h.path.split("?")[0].rstrip("/")
        try:
            if method == "GET" and path == "/v1/models":
                if self.models_status is not None:
                    return self._send(h, self.models_status, _error_body("not here", "not_found"))
                data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
                return self._send(h, 200, json.dumps({"object": "list", "data": data}))
            if method == "POST" and path == "/v1/chat/completions":
                return self._chat(h, body or {})
            self._send(h, 404, _error_body(f"no route {method} {h.path}", "not_found"))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): fine

    def _chat(self, h: BaseHTTPRequestHandler, req: dict) -> None:
        with self._lock:
            fault = self.faults.popleft() if self.faults else None
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if req.get("model") not in self.models:
                return self._send(h, 404, _error_body(f"The model `{req.get('model')}` does not exist", "not_found"))
            if fault is not None and fault.kind == "hang":
                self._stop.wait(fault.seconds)
                h.close_connection = True
                return None
            if fault is not None and fault.kind == "status":
                return self._send(h, fault.status, fault.body, fault.headers)
            wants_format = "response_format" in req
            if wants_format and (not self.supports_response_format
                                 or (fault is not None and fault.kind == "reject_response_format")):
                return self._send(h, 400, _error_body(
                    "Invalid parameter: 'response_format' of type 'json_object' is not supported with this model.",
                    "invalid_request_error"))
            if fault is not None and fault.kind == "content":
                content = fault.content
            else:
                if self.delay:
                    time.sleep(self.delay)
                content = self.responder(req)
            prompt = sum(len(str(m.get("content", "")).split()) for m in req.get("messages", []))
            completion = len((content or "").split())
            reply = {
                "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": 0,
                "model": req.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
            }
            return self._send(h, 200, json.dumps(reply))
        finally:
            with self._lock:
                self.in_flight -= 1

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, text: str, headers: tuple = ()) -> None:
        data = text.encode("utf-8")
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)


@pytest.fixture
def fake_openai():
    """A started FakeOpenAI serving model ``fake-model``; stopped after the test."""
    with FakeOpenAI() as server:
        yield server


# ---------------------------------------------------------------- a model that rewords, carefully or not

CARELESS = ("insert", "duplicate", "swap", "truncate", "leak", "reverse", "shorten", "flip")
CAREFUL = ("synonyms", "reorder", "someone", "in_the_video")

_FLIP = {"first": "last", "last": "first", "after": "before", "before": "after", "begins": "ends", "ends": "begins",
         "beginning": "end", "end": "beginning", "follows": "precedes", "precedes": "follows", "following": "preceding",
         "preceding": "following", "next": "previous", "earlier": "later", "later": "earlier", "earliest": "latest",
         "latest": "earliest", "finally": "initially", "afterwards": "beforehand", "afterward": "beforehand"}
_SYNONYMS = {"happens": "takes place", "shown": "seen", "event": "moment", "comes": "occurs", "video": "clip",
             "immediately": "directly", "directly": "immediately", "chops": "cuts", "carries": "brings",
             "stirs": "mixes", "closes": "shuts", "glass": "cup", "tunes": "adjusts", "ribbon": "bow",
             "slides": "glides", "bounces": "hops", "sweeps": "moves", "grows": "expands", "quickly": "fast",
             "large": "big", "small": "little", "picks": "lifts", "opens": "unlocks", "walks": "strolls"}


def _pieces(text: str) -> list[str]:
    """The event texts a field holds, as a model would see them: quoted parts, labelled parts, else the
    clauses after a leading phrase ("Right after that, <event>.")."""
    quoted = re.findall(r'"([^"]+)"', text)
    if quoted:
        return quoted
    labelled = [p.strip() for p in re.split(r"\(\d+\)", text)[1:]]
    if labelled:
        return labelled
    out = []
    for clause in re.split(r";\s*", text.rstrip(".!?")):
        out.append(clause.split(", ", 1)[-1] if ", " in clause else clause)
    return [p for p in out if p.strip()]


def _sentences(piece: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", piece.strip()) if s]


def _swap_words(text: str, table: dict, limit: int, rng: random.Random) -> str:
    words = [m for m in re.finditer(r"[A-Za-z]+", text) if m.group(0).lower() in table]
    rng.shuffle(words)
    for m in sorted(words[:limit], key=lambda m: -m.start()):
        w = m.group(0)
        new = table[w.lower()]
        new = new.capitalize() if w[0].isupper() else new
        text = text[:m.start()] + new + text[m.end():]
    return text


def careless_edit(mode: str, name: str, text: str, others: dict, rng: random.Random) -> Optional[str]:
    """``text`` (field ``name``; ``others``: the request's other fields) changed in meaning by ``mode``;
    None when the mode does not apply or changes nothing."""
    pieces = _pieces(text)
    other_pieces = [p for o in others.values() for p in _pieces(o)]
    sents = [s for p in pieces for s in _sentences(p)]
    out = None
    if mode == "insert":
        pool = [s for p in other_pieces for s in _sentences(p)] or sents
        s = rng.choice(pool).strip().rstrip(".") + "."
        s = s[0].upper() + s[1:]
        where = rng.choice(["start", "end", "quote"])
        if where == "quote" and '"' in text:
            i = text.index('"') + 1
            out = text[:i] + s + " " + text[i:]
        elif where == "end" and not text.endswith("?"):
            out = text + " " + s
        else:
            out = s + " " + text
    elif mode == "duplicate":
        if others and rng.random() < 0.5:
            out = text + " " + rng.choice(list(others.values()))
        elif pieces:
            p = rng.choice(pieces)
            out = text.replace(p, p.rstrip(".") + ". " + p, 1)
    elif mode == "swap":
        if len(pieces) >= 2:
            i, j = rng.sample(range(len(pieces)), 2)
            a, b = pieces[i], pieces[j]
            sa = _sentences(a)
            if len(sa) > 1:        # move a sentence of a into b
                moved = sa[-1]
                na, nb = " ".join(sa[:-1]), b.rstrip(".") + ". " + moved
            else:                  # exchange the two
                na, nb = b, a
            out = text.replace(a, "\x00", 1).replace(b, "\x01", 1).replace("\x00", na).replace("\x01", nb)
    elif mode == "truncate":
        cut = [m.start() for m in re.finditer(r" ", text)]
        cut = [c for c in cut if 0.3 * len(text) <= c <= 0.9 * len(text)]
        if cut:
            out = text[:rng.choice(cut)]
    elif mode == "leak":
        if name == "question" and "answer" in others:
            out = text + " " + others["answer"]
    elif mode == "reverse":
        if len(sents) >= 2 and name == "caption":
            out = " ".join(reversed(sents))
        elif len(pieces) >= 2:
            out = text
            for p, q in zip(pieces, reversed(pieces)):
                out = out.replace(p, "\x00" + q + "\x01", 1)
            out = out.replace("\x00", "").replace("\x01", "")
    elif mode == "shorten":
        if len(sents) >= 2:
            drop = rng.choice(sents)
            out = " ".join(" ".join(text.replace(drop, "", 1).split()).split())
    elif mode == "flip":
        found = [m for m in re.finditer(r"[A-Za-z]+", text) if m.group(0).lower() in _FLIP]
        pair = [m for m in found if m.group(0).lower() in ("first", "before", "earlier", "begins")][:1] + \
               [m for m in found if m.group(0).lower() in ("later", "after", "last", "afterwards", "ends")][:1]
        if len(pair) == 2 and rng.random() < 0.5:   # swap the two: '"A" happens later; "B" comes first.'
            (a, b) = sorted(pair, key=lambda m: m.start())
            out = text[:a.start()] + b.group(0).lower() + text[a.end():b.start()] + a.group(0).lower() + text[b.end():]
        else:
            out = _swap_words(text, _FLIP, 3, rng)
        said = lambda t: sorted(w for w in re.findall(r"[a-z]+", t.lower()) if w in _FLIP)  # noqa: E731
        if said(out) == said(text) and "?" in text:  # "before or after" -> "after or before" asks the same
            out = None
    return out if out and out != text else None


def careful_edit(mode: str, name: str, text: str, rng: random.Random) -> Optional[str]:
    """``text`` reworded by ``mode`` without changing what it says (None when the mode does not apply)."""
    out = None
    if mode == "synonyms":
        out = _swap_words(text, _SYNONYMS, 2, rng)
    elif mode == "reorder":
        m = re.match(r'^([A-Z][^,"()?;]{1,30}), (.+?)([.!?])$', text)
        if m and not m.group(2).startswith(("(", '"')) and ";" not in m.group(2) and not re.search(
                r"\b(then|next|finally|later|last|after|before)\b", m.group(2), re.I):  # one clause: moving it keeps the sense
            out = m.group(2)[0].upper() + m.group(2)[1:] + ", " + m.group(1)[0].lower() + m.group(1)[1:] + m.group(3)
    elif mode == "someone":
        out = re.sub(r"\bThe person\b", "Someone", re.sub(r"\bthe person\b", "someone", text))
    elif mode == "in_the_video":
        out = "In the video, " + (text[0].lower() + text[1:] if text[:1].isalpha() and not text.startswith("I ") else text)
    return out if out and out != text else None


class RewordingModel:
    """A responder for FakeOpenAI that rewords every field of a request, ``careful``ly (meaning kept) or
    ``careless``ly (every field's meaning changed by one of CARELESS). Deterministic for the request and
    its temperature. ``log`` holds (mode, field, template text, reply text) for every field answered."""

    def __init__(self, careless: bool, seed: int = 0):
        self.careless = careless
        self.seed = seed
        self.log: list[tuple[str, str, str, str]] = []
        self._lock = threading.Lock()

    def edit(self, name: str, text: str, fields: dict, rng: random.Random) -> tuple[str, str]:
        others = {k: v for k, v in fields.items() if k != name}
        if self.careless:
            modes = list(CARELESS)
            rng.shuffle(modes)
            for mode in modes:
                out = careless_edit(mode, name, text, others, rng)
                if out is not None:
                    return mode, out
            return "insert", text + " " + text
        modes = [m for m in CAREFUL if rng.random() < 0.6] or [rng.choice(CAREFUL)]
        out, used = text, []
        for mode in modes:
            new = careful_edit(mode, name, out, rng)
            if new is not None:
                out, used = new, used + [mode]
        return "+".join(used) or "unchanged", out

    def caption(self, events: list[str], rng: random.Random) -> str:
        words = ["First,", "Then,", "Next,", "After that,", "Later,"]
        parts = []
        for k, e in enumerate(events):
            lead = "Finally," if k == len(events) - 1 and k else words[min(k, len(words) - 1)]
            parts.append(f"{lead} {e[0].lower() + e[1:] if e.startswith(('The ', 'A ', 'An ')) else e}")
        return " ".join(parts)

    def __call__(self, req: dict) -> str:
        user = req["messages"][-1]["content"]
        rng = random.Random(f"{self.seed}:{req.get('temperature')}:{user}")
        obj = json.loads(user)
        if "events" in obj:
            joined = " ".join(obj["events"])
            fields = {"caption": joined if self.careless else self.caption(obj["events"], rng)}
        else:
            fields = obj
        out = {}
        for name, text in fields.items():
            mode, out[name] = self.edit(name, text, fields, rng)
            with self._lock:
                self.log.append((mode, name, text, out[name]))
        return json.dumps(out)
