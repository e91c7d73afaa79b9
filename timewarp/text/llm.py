"""The client for an OpenAI-compatible model server (OpenAI, vLLM, Ollama, ...).

The model only writes fluent wording; it never decides an answer. Every reply goes through a
caller-supplied ``validate(text)`` that raises ``ValueError`` when the reply is unusable.

What the client guarantees:

* **Cache**: replies that validated are stored on disk, one file per request hash (model + request,
  not the server address), so a rerun after a crash pays for nothing twice. A hit makes no network call.
* **Bounded retries**: HTTP, timeouts, retries with backoff and ``Retry-After`` are the official
  ``openai`` client's (``max_retries`` on 429, 5xx, timeouts and connection errors; any other 4xx
  fails at once). On top, a malformed reply (or a 200 that is not a chat completion) is re-asked, at
  most ``max_retries`` times, and counts as a retry.
* **Concurrency limit**: at most ``concurrency`` requests in flight per client, whoever calls.
* **Usage**: HTTP requests sent (every attempt, counted by an httpx event hook), cache hits,
  retries, failures, tokens and cost, thread-safe.
* The API key is sent only in the ``Authorization`` header: never logged, cached, counted or put
  into an exception; redirects are never followed (httpx would resend the request, key included,
  to whatever host a 3xx names), so a 3xx is an error naming its status.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence, TypeVar

from tqdm import tqdm

from timewarp.core.errors import UsageError
from timewarp.core.store import read_json, write_json

log = logging.getLogger("timewarp.text.llm")

T = TypeVar("T")

CACHE_VERSION = 1
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"


class LLMError(Exception):
    """A request that could not be turned into a valid reply.

    ``reason`` is short and stable (``"malformed reply"``, ``"server error 500"``, ``"timeout"``,
    ``"rate limited"``, ``"connection error"``, ``"bad response"``, ``"client error 400"``, ...) so
    callers can use it as a reject reason; ``detail`` says more; ``reply`` is the last raw reply text
    the model gave, if any.
    """

    def __init__(self, reason: str, detail: str = "", reply: Optional[str] = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.reply = reply

    def __reduce__(self):  # picklable across process pools
        return (LLMError, (self.reason, self.detail, self.reply))


# ---------------------------------------------------------------------- multimodal content
# A message's content is a string, or (for vision models) a tuple of parts. Parts are stored as
# hashable pairs: ("text", text) or ("image_url", url), url usually a data URL
# ("data:image/jpeg;base64,..."). They are sent in OpenAI's shape ({"type": "text", "text": ...} /
# {"type": "image_url", "image_url": {"url": ...}}), which vLLM, SGLang, Ollama and hosted APIs accept.
# In the cache key and the cache entry an image is its sha256 ("sha256:<hex>"), so entries stay small;
# text-only requests keep exactly the key they had before parts existed.

def text_part(text: str) -> tuple:
    """A text part of a multimodal message."""
    return ("text", str(text))


def image_part(data: bytes, mime: str = "image/jpeg") -> tuple:
    """An image part of a multimodal message, from encoded image bytes (sent as a base64 data URL)."""
    return ("image_url", f"data:{mime};base64,{base64.b64encode(bytes(data)).decode('ascii')}")


def _norm_part(part) -> tuple:
    if isinstance(part, dict):
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            return ("text", part["text"])
        if kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if isinstance(url, str) and url:
                return ("image_url", url)
        raise ValueError(f"unsupported message part {str(part)[:80]!r} (text or image_url parts only)")
    if isinstance(part, (tuple, list)) and len(part) == 2 and part[0] in ("text", "image_url") and isinstance(part[1], str):
        return (part[0], part[1])
    if isinstance(part, str):
        return ("text", part)
    raise ValueError(f"unsupported message part {str(part)[:80]!r}")


def _norm_content(content):
    """A string stays a string (as before); a list/tuple of parts becomes a tuple of (kind, value) pairs."""
    if isinstance(content, (tuple, list)):
        parts = tuple(_norm_part(p) for p in content)
        if not parts:
            raise ValueError("a message with parts needs at least one part")
        return parts
    return str(content)


def _api_content(content):
    if isinstance(content, str):
        return content
    return [{"type": "text", "text": v} if k == "text" else {"type": "image_url", "image_url": {"url": v}}
            for k, v in content]


def _key_content(content):
    if isinstance(content, str):
        return content
    return [{"type": "text", "text": v} if k == "text"
             else {"type": "image_url", "image_url": {"url": "sha256:" + hashlib.sha256(v.encode("utf-8")).hexdigest()}}
            for k, v in content]


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion request; hashable and the cache key (with the model name).

    A message's content is a string or a tuple of parts (``text_part``/``image_part``, or OpenAI-shaped
    dicts, normalised to hashable pairs).
    """

    messages: tuple  # ((role, content), ...); content: str | tuple of parts
    temperature: float = 0.0
    max_tokens: int = 512
    json_mode: bool = True  # ask for response_format={"type": "json_object"} (dropped if the server rejects it)

    def __post_init__(self):
        msgs = tuple((str(role), _norm_content(content)) for role, content in self.messages)
        if not msgs:
            raise ValueError("ChatRequest needs at least one message")
        object.__setattr__(self, "messages", msgs)
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "max_tokens", int(self.max_tokens))
        object.__setattr__(self, "json_mode", bool(self.json_mode))

    def to_dict(self) -> dict:
        return {"messages": [[r, _key_content(c)] for r, c in self.messages], "temperature": self.temperature,
                "max_tokens": self.max_tokens, "json_mode": self.json_mode}


class _Retryable(Exception):
    """A failed attempt worth repeating (internal)."""

    def __init__(self, reason: str, detail: str = "", reply: Optional[str] = None):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.reply = reply


def is_local_url(base_url: str) -> bool:
    host = (urllib.parse.urlparse(base_url).hostname or "").lower()
    return host in LOCAL_HOSTS


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _safe_dirname(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("._") or "model"


RETRY_TEMPERATURE = 0.7  # a malformed reply is asked again warmer: at temperature 0 it tends to come back as it was


class ChatClient:
    """Cached, retried, concurrency-limited chat completions against one OpenAI-compatible server."""

    def __init__(self, base_url: str, model: str, cache_dir: Path, api_key: Optional[str] = None,
                 concurrency: int = 4, max_retries: int = 4, timeout: float = 60.0, backoff: float = 1.0,
                 max_backoff: float = 30.0, price_in_per_mtok: float = 0.0, price_out_per_mtok: float = 0.0):
        parsed = urllib.parse.urlparse(base_url or "")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UsageError(f"--llm_base_url {base_url!r} is not an http(s) URL (e.g. http://localhost:8000/v1)")
        if not model:
            raise UsageError("--llm_model is empty")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.cache_dir = Path(cache_dir)
        self.local = is_local_url(self.base_url)
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        key = (key or "").strip()
        self._key_missing = not key and not self.local
        self.__key = key or "EMPTY"
        self.concurrency = max(1, int(concurrency))
        self.max_retries = max(0, int(max_retries))
        self.timeout = float(timeout)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.price_in = float(price_in_per_mtok)
        self.price_out = float(price_out_per_mtok)
        self._json_mode_ok = True
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._counts = {"calls": 0, "cache_hits": 0, "retries": 0, "failures": 0,
                        "prompt_tokens": 0, "completion_tokens": 0}
        self._attempts = threading.local()  # HTTP attempts of the current call in this thread
        import openai  # here, not at the top: importing it takes most of a stage's start-up, and only a
        # model run needs it (the template backend, --help and the video stages never do)

        # never follow a redirect (it would carry the Authorization header to another host); a local
        # server is not reached through a proxy from the environment (trust_env=False)
        http_client = openai.DefaultHttpxClient(follow_redirects=False, trust_env=not self.local,
                                                event_hooks={"request": [self._on_request]})
        self._openai = openai.OpenAI(base_url=self.base_url, api_key=self.__key, max_retries=self.max_retries,
                                     timeout=self.timeout, http_client=http_client)

    def _on_request(self, request) -> None:
        """httpx event hook: every HTTP attempt, the official client's retries included."""
        self._add(calls=1)
        self._attempts.n = getattr(self._attempts, "n", 0) + 1

    def __repr__(self) -> str:  # never shows the key
        return f"ChatClient(base_url={self.base_url!r}, model={self.model!r}, concurrency={self.concurrency})"

    # ------------------------------------------------------------------ usage
    def _add(self, **deltas) -> None:
        with self._lock:
            for k, v in deltas.items():
                self._counts[k] += v

    @property
    def usage(self) -> dict:
        with self._lock:
            c = dict(self._counts)
        c["cost_usd"] = round(c["prompt_tokens"] * self.price_in / 1e6 + c["completion_tokens"] * self.price_out / 1e6, 6)
        return c

    # ------------------------------------------------------------------ cache
    def request_hash(self, request: ChatRequest) -> str:
        blob = json.dumps({"v": CACHE_VERSION, "model": self.model, **request.to_dict()},
                          sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def cache_path(self, request: ChatRequest) -> Path:
        h = self.request_hash(request)
        return self.cache_dir / _safe_dirname(self.model) / h[:2] / f"{h}.json"

    def _cache_get(self, path: Path) -> Optional[str]:
        try:
            entry = read_json(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.debug("unreadable cache entry %s: %s", path, exc)
            return None
        reply = entry.get("reply") if isinstance(entry, dict) else None
        return reply if isinstance(reply, str) else None

    def _cache_put(self, path: Path, request: ChatRequest, reply: str, usage: dict) -> None:
        try:
            write_json(path, {"model": self.model, "request": request.to_dict(), "reply": reply, "usage": usage})
        except OSError as exc:  # a cache we cannot write costs money later, not correctness now
            log.warning("could not write cache entry %s: %s", path, exc)

    # ------------------------------------------------------------------ HTTP (the official client)
    def _redact(self, text: str) -> str:
        text = str(text)
        if self.__key and self.__key != "EMPTY":
            text = text.replace(self.__key, "***")
        return text

    def _call(self, fn, client=None):
        """``fn(client)`` through the official client; returns its result or (status, body text) of an
        HTTP error. Timeouts and connection errors (after the client's own retries) raise ``LLMError``."""
        import openai

        self._attempts.n = 0
        try:
            return fn(client or self._openai)
        except openai.APIStatusError as exc:
            return exc.status_code, exc.response.text
        except openai.APITimeoutError:
            raise LLMError("timeout", f"no answer within {self.timeout:g}s") from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise LLMError("connection error", self._redact(_one_line(f"{type(cause).__name__}: {cause}"))) from None
        finally:
            self._add(retries=max(0, getattr(self._attempts, "n", 0) - 1))

    def _payload(self, request: ChatRequest) -> dict:
        body = {"model": self.model, "messages": [{"role": r, "content": _api_content(c)} for r, c in request.messages],
                "temperature": request.temperature, "max_tokens": request.max_tokens}
        if request.json_mode and self._json_mode_ok:
            body["response_format"] = {"type": "json_object"}
        return body

    def _send(self, request: ChatRequest) -> tuple[str, dict]:
        """One chat completion (plus at most one resend without response_format). Returns (content, usage)."""
        import openai

        while True:
            payload = self._payload(request)
            with self._slots:
                try:
                    result = self._call(lambda c: c.chat.completions.create(**payload))
                except (ValueError, TypeError, openai.APIResponseValidationError) as exc:  # a 200 that is no JSON
                    raise _Retryable("bad response", f"not a chat completion: {self._redact(_one_line(exc, 200))}") from None
            if not isinstance(result, tuple):
                break
            status, text = result
            snippet = self._redact(_one_line(text, 200))
            if (status == 400 and "response_format" in payload
                    and re.search(r"response_format|response format|json_object", text, re.I)):
                if self._json_mode_ok:
                    log.info("model server rejects response_format; asking for JSON in the prompt only")
                self._json_mode_ok = False
                continue
            if status == 429:
                raise LLMError("rate limited", snippet)
            if status >= 500:
                raise LLMError(f"server error {status}", snippet)
            if 300 <= status < 400:
                raise LLMError(f"redirect {status} not followed", snippet)
            raise LLMError(f"client error {status}", snippet)
        try:
            content = result.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            raise _Retryable("bad response", f"not a chat completion: {self._redact(_one_line(result, 200))}") from None
        raw_usage = getattr(result, "usage", None)
        usage = {"prompt_tokens": int(getattr(raw_usage, "prompt_tokens", 0) or 0),
                 "completion_tokens": int(getattr(raw_usage, "completion_tokens", 0) or 0)}
        self._add(**usage)
        if not isinstance(content, str):
            content = "" if content is None else json.dumps(content)
        return content, usage

    def _delay(self, attempt: int) -> float:
        """Backoff before re-asking after a 200 that was not a chat completion (malformed replies: none)."""
        base = min(self.max_backoff, self.backoff * (2 ** attempt))
        return base * self._rng.uniform(0.5, 1.0)

    # ------------------------------------------------------------------ public
    def complete(self, request: ChatRequest, validate: Callable[[str], T]) -> T:
        """The validated reply to ``request``: from the cache, else from the server (retried)."""
        path = self.cache_path(request)
        cached = self._cache_get(path)
        if cached is not None:
            try:
                result = validate(cached)
            except ValueError as exc:  # the validator got stricter since: ask again
                log.debug("cached reply %s no longer validates (%s); asking again", path.name, exc)
            else:
                self._add(cache_hits=1)
                return result
        last: Optional[_Retryable] = None
        last_reply: Optional[str] = None
        asked = request
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._add(retries=1)
                if last is not None and last.reason != "malformed reply":
                    delay = self._delay(attempt - 1)
                    log.debug("retry %d/%d after %s; sleeping %.2fs", attempt, self.max_retries, last.reason, delay)
                    time.sleep(delay)
            try:
                text, usage = self._send(asked)
            except _Retryable as exc:
                last = exc
                continue
            except LLMError:
                self._add(failures=1)
                raise
            last_reply = text
            try:
                if not text.strip():
                    raise ValueError("empty reply")
                result = validate(text)
            except ValueError as exc:
                last = _Retryable("malformed reply", _one_line(str(exc)), reply=text)
                log.debug("malformed reply (%s): %r", exc, text[:200])
                asked = replace(request, temperature=max(request.temperature, RETRY_TEMPERATURE))
                continue
            self._cache_put(path, request, text, usage)  # cached under the original request
            return result
        self._add(failures=1)
        assert last is not None
        raise LLMError(last.reason, last.detail, reply=last.reply if last.reply is not None else last_reply)

    def map(self, items: Sequence[tuple[ChatRequest, Callable[[str], T]]], desc: str = "") -> list:
        """``complete`` over many requests, at most ``concurrency`` in flight; results in input order.

        A request that fails comes back as its ``LLMError``; this never raises for one item.
        """
        items = list(items)
        results: list = [None] * len(items)
        if not items:
            return results

        def one(i: int):
            request, validate = items[i]
            try:
                return self.complete(request, validate)
            except LLMError as exc:
                return exc
            except Exception as exc:  # noqa: BLE001 - a buggy validator must not stop the run
                self._add(failures=1)
                return LLMError("unexpected error", self._redact(_one_line(f"{type(exc).__name__}: {exc}")))

        with tqdm(total=len(items), desc=desc or "model requests", unit="req", leave=False, dynamic_ncols=True) as bar, \
                ThreadPoolExecutor(max_workers=min(self.concurrency, len(items)), thread_name_prefix="llm") as pool:
            futures = {pool.submit(one, i): i for i in range(len(items))}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update(1)
        return results

    def preflight(self) -> None:
        """Fail early, in one line, if the key is missing or the server or model is not there."""
        if self._key_missing:
            raise UsageError(f"no API key for {self.base_url}: set OPENAI_API_KEY "
                             "(or point --llm_base_url at a local server, which needs none)")
        where = f"model server at {self.base_url}"
        status, text = self._preflight_call(lambda c: c.models.with_raw_response.list(), where)
        if status == 200:
            ids = self._model_ids(text)
            if ids is None:  # an odd listing: let a real request decide
                return self._preflight_chat(where)
            if self.model in ids or f"{self.model}:latest" in ids:
                return None
            shown = ", ".join(sorted(ids)[:8]) + (", ..." if len(ids) > 8 else "")
            raise UsageError(f"model {self.model!r} is not served by {self.base_url} (it has: {shown or 'none'})")
        if status == 404:
            return self._preflight_chat(where)
        raise UsageError(self._status_message(status, text, where, "/models"))

    # ------------------------------------------------------------------ preflight helpers
    def _status_message(self, status: int, text: str, where: str, path: str) -> str:
        if status in (401, 403):
            return f"{where} rejected the API key (HTTP {status}); check OPENAI_API_KEY"
        return f"{where} answered HTTP {status} on {path}: {self._redact(_one_line(text, 160))}"

    def _preflight_call(self, fn, where: str) -> tuple[int, str]:
        """(status, body) of one raw request ``fn(client)``. A refused connection or a timeout fails at
        once (one line); a 429/5xx is asked again with the official client's retries."""
        timeout = min(self.timeout, 30.0)
        for retries in (0, self.max_retries - 1) if self.max_retries else (0,):
            try:
                result = self._call(fn, self._openai.with_options(max_retries=retries, timeout=timeout))
            except LLMError as exc:
                hint = "; is it running?" if exc.reason == "connection error" else ""
                raise UsageError(f"cannot reach {where} ({exc.reason}: {exc.detail}){hint}") from None
            if not isinstance(result, tuple):
                return 200, result.http_response.text
            if not (result[0] == 429 or result[0] >= 500):
                break
        return result

    @staticmethod
    def _model_ids(text: str) -> Optional[set]:
        try:
            data = json.loads(text)["data"]
            return {m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)}
        except (ValueError, KeyError, TypeError):
            return None

    def _preflight_chat(self, where: str) -> None:
        body = {"model": self.model, "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 1,
                "temperature": 0.0}
        status, text = self._preflight_call(lambda c: c.chat.completions.with_raw_response.create(**body), where)
        if status == 200:
            return None
        if status == 404 or (status == 400 and re.search(r"model", text, re.I)):
            raise UsageError(f"model {self.model!r} is not served by {self.base_url} "
                             f"(HTTP {status}: {self._redact(_one_line(text, 120))})")
        raise UsageError(self._status_message(status, text, where, "/chat/completions"))


# ---------------------------------------------------------------------- CLI glue
class _Backend(argparse.Action):
    """--backend, remembered as given (so a later --llm_base_url does not override it)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.backend_given = True


class _BaseUrl(argparse.Action):
    """--llm_base_url: naming a server means using it, unless --backend says otherwise."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        if not getattr(namespace, "backend_given", False):
            namespace.backend = "openai"


def add_llm_args(parser: argparse.ArgumentParser, unused: bool = False) -> None:
    """The text-backend options; ``unused``: a stage that calls no model accepts them (one TIMEWARP_ARGS
    serves every stage of generate_data.sh) and says so. ``--llm_base_url`` alone means ``--backend openai``."""
    g = parser.add_argument_group("text generation (accepted for TIMEWARP_ARGS; this stage calls no model)"
                                  if unused else "text generation")
    g.add_argument("--backend", choices=["template", "openai"], default="template", action=_Backend,
                   help="template: offline, deterministic wording; openai: any OpenAI-compatible server "
                        "(OpenAI, vLLM, Ollama) writes the wording (default: template, or openai when "
                        "--llm_base_url is given)")
    g.add_argument("--llm_base_url", default=os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL, action=_BaseUrl,
                   help="OpenAI-compatible API root, e.g. http://localhost:8000/v1 for vLLM or "
                        "http://localhost:11434/v1 for Ollama; giving it implies --backend openai (default: "
                        "$OPENAI_BASE_URL or %(default)s); the key comes from $OPENAI_API_KEY (not needed for localhost)")
    g.add_argument("--llm_model", default=DEFAULT_MODEL, help="model name on that server (default: %(default)s)")
    g.add_argument("--llm_concurrency", type=int, default=4, help="requests in flight at most (default: 4)")
    g.add_argument("--llm_max_retries", type=int, default=4,
                   help="retries per request on 429/5xx/timeouts/malformed replies (default: 4)")
    g.add_argument("--llm_timeout", type=float, default=60.0, help="seconds to wait for one reply (default: 60)")
    g.add_argument("--llm_price_in", type=float, default=0.0,
                   help="USD per million prompt tokens, for the cost in stats (default: 0)")
    g.add_argument("--llm_price_out", type=float, default=0.0,
                   help="USD per million completion tokens, for the cost in stats (default: 0)")


def client_from_args(args: argparse.Namespace, layout) -> Optional[ChatClient]:
    """None for the template backend; else a ChatClient caching under ``layout.cache_dir``, preflighted."""
    if getattr(args, "backend", "template") != "openai":
        return None
    client = ChatClient(args.llm_base_url, args.llm_model, layout.cache_dir,
                        concurrency=args.llm_concurrency, max_retries=args.llm_max_retries,
                        timeout=args.llm_timeout, price_in_per_mtok=args.llm_price_in,
                        price_out_per_mtok=args.llm_price_out)
    client.preflight()
    return client


# ---------------------------------------------------------------------- reply validation
_FENCE = re.compile(r"\A```[A-Za-z0-9_-]*[ \t]*\n(.*?)\n?```\Z", re.S)


def strip_fence(text: str) -> str:
    """``text`` stripped, without one enclosing Markdown code fence (```json ... ```) if it has one."""
    body = text.strip()
    m = _FENCE.match(body)
    return m.group(1).strip() if m else body


def parse_json_object(text: str, required: dict) -> dict:
    """The JSON object in ``text`` (optionally in one ```json fence) with ``required`` keys of those types.

    ``str`` values must be non-empty; ``int`` does not accept a bool; ``float`` accepts an int.
    Extra keys are allowed. Raises ``ValueError`` naming what is wrong.
    """
    if not isinstance(text, str):
        raise ValueError(f"reply is {type(text).__name__}, not text")
    body = strip_fence(text)
    if not body:
        raise ValueError("empty reply")
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"JSON is a {type(obj).__name__}, not an object")
    for key, typ in required.items():
        if key not in obj:
            raise ValueError(f"missing key {key!r}")
        value = obj[key]
        types = typ if isinstance(typ, tuple) else (typ,)
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok and float in types and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            want = " or ".join(t.__name__ for t in types)
            raise ValueError(f"key {key!r} is {type(value).__name__}, not {want}")
        if isinstance(value, str) and not value.strip():
            raise ValueError(f"key {key!r} is an empty string")
    return obj
