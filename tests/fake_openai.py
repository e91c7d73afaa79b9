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
