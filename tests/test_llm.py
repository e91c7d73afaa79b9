"""timewarp.text.llm against a real loopback OpenAI-compatible server (tests/fake_openai.py)."""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from fake_openai import FakeOpenAI, Fault, fake_openai  # noqa: E402,F401 - fake_openai is a fixture
from test_install import ROOT, stage_modules  # noqa: E402

from timewarp.core.errors import UsageError  # noqa: E402
from timewarp.core.layout import Layout  # noqa: E402
from timewarp.text.llm import (ChatClient, ChatRequest, LLMError, add_llm_args, client_from_args,  # noqa: E402
                          parse_json_object)

SECRET = "sk-test-SECRET-0123456789abcdef"


def text_of(reply: str) -> str:
    return parse_json_object(reply, {"text": str})["text"]


def req(i: int = 0, **kw) -> ChatRequest:
    return ChatRequest((("system", "You write JSON."), ("user", f"Describe clip {i}.")), **kw)


@pytest.fixture
def make_client(fake_openai, tmp_path):
    def make(**kw) -> ChatClient:
        opts = dict(api_key=SECRET, backoff=0.01, max_backoff=0.05, timeout=5.0, max_retries=4)
        opts.update(kw)
        cache = opts.pop("cache_dir", tmp_path / "cache")
        return ChatClient(fake_openai.base_url, fake_openai.model, cache, **opts)
    return make


def echo_responder(request: dict) -> str:
    return json.dumps({"text": "echo " + request["messages"][-1]["content"]})


# ---------------------------------------------------------------------- happy path, cache
def test_success_counts_usage_and_sends_request(fake_openai, make_client):
    fake_openai.responder = echo_responder
    client = make_client(price_in_per_mtok=1e6, price_out_per_mtok=2e6)
    assert client.complete(req(1), text_of) == "echo Describe clip 1."
    u = client.usage
    assert (u["calls"], u["cache_hits"], u["retries"], u["failures"]) == (1, 0, 0, 0)
    assert u["prompt_tokens"] == 6 and u["completion_tokens"] == 5  # fake server: words
    assert u["cost_usd"] == pytest.approx(6 * 1 + 5 * 2)
    (sent,) = fake_openai.chat_requests
    assert sent.headers["Authorization"] == f"Bearer {SECRET}"
    assert sent.headers["User-Agent"].startswith("OpenAI/Python")  # sent by the official openai client
    assert sent.body["model"] == "fake-model"
    assert sent.body["response_format"] == {"type": "json_object"}
    assert sent.body["messages"][0] == {"role": "system", "content": "You write JSON."}
    assert sent.body["temperature"] == 0.0 and sent.body["max_tokens"] == 512
    assert "response_format" not in make_client()._payload(req(json_mode=False))


def test_rerun_with_new_client_makes_zero_calls_and_key_not_cached(fake_openai, make_client, tmp_path):
    fake_openai.responder = echo_responder
    first = make_client()
    answers = [first.complete(req(i), text_of) for i in range(3)]
    assert fake_openai.chat_calls == 3
    files = sorted((tmp_path / "cache").rglob("*.json"))
    assert len(files) == 3
    for f in files:
        assert f.parent.parent.name == "fake-model" and f.parent.name == f.stem[:2]
        text = f.read_text()
        assert SECRET not in text and "Bearer" not in text
        entry = json.loads(text)
        assert set(entry) >= {"request", "reply", "usage"}
    # a new client, even at another address (the key is base_url-independent), pays for nothing
    again = ChatClient("http://localhost:1/v1", "fake-model", tmp_path / "cache", api_key=SECRET)
    assert [again.complete(req(i), text_of) for i in range(3)] == answers
    assert fake_openai.chat_calls == 3
    assert again.usage["calls"] == 0 and again.usage["cache_hits"] == 3
    # another model or another request is another key
    assert make_client().cache_path(req(0)) != ChatClient(fake_openai.base_url, "other", tmp_path).cache_path(req(0))
    assert first.cache_path(req(0)) != first.cache_path(req(0, temperature=0.7))
    assert SECRET not in repr(first) and SECRET not in json.dumps(first.usage)


def test_cached_reply_that_no_longer_validates_is_asked_again(fake_openai, make_client):
    client = make_client()
    client.complete(req(), lambda t: t)
    fake_openai.responder = lambda r: json.dumps({"text": "ok", "n": 3})
    strict = lambda t: parse_json_object(t, {"text": str, "n": int})["n"]  # noqa: E731
    assert make_client().complete(req(), strict) == 3
    assert fake_openai.chat_calls == 2
    assert make_client().complete(req(), strict) == 3 and fake_openai.chat_calls == 2


# ---------------------------------------------------------------------- transient faults
def test_429_honours_retry_after_then_succeeds(fake_openai, make_client):
    fake_openai.push(Fault.rate_limited(retry_after=0.3))
    client = make_client()
    t0 = time.monotonic()
    assert client.complete(req(), text_of) == "ok"
    assert time.monotonic() - t0 >= 0.3
    a, b = fake_openai.chat_requests
    assert b.time - a.time >= 0.3
    assert client.usage["calls"] == 2 and client.usage["retries"] == 1 and client.usage["failures"] == 0


def test_500_then_success(fake_openai, make_client):
    fake_openai.push(Fault.server_error(500), Fault.server_error(503))
    client = make_client()
    assert client.complete(req(), text_of) == "ok"
    assert fake_openai.chat_calls == 3 and client.usage["retries"] == 2


def test_hang_past_timeout_then_success(fake_openai, make_client):
    fake_openai.push(Fault.hang(10))
    client = make_client(timeout=0.3)
    t0 = time.monotonic()
    assert client.complete(req(), text_of) == "ok"
    assert 0.3 <= time.monotonic() - t0 < 3
    assert fake_openai.chat_calls == 2


def test_garbage_body_is_retried(fake_openai, make_client):
    fake_openai.push(Fault.garbage_body())
    assert make_client().complete(req(), text_of) == "ok"
    assert fake_openai.chat_calls == 2


def test_persistent_5xx_gives_up_after_max_retries(fake_openai, make_client):
    fake_openai.push(*[Fault.server_error(502)] * 10)
    client = make_client(max_retries=2)
    with pytest.raises(LLMError) as ei:
        client.complete(req(), text_of)
    assert ei.value.reason == "server error 502" and ei.value.reply is None
    assert fake_openai.chat_calls == 3
    assert client.usage["failures"] == 1 and client.usage["retries"] == 2


def test_connection_refused_is_retried_then_fails(tmp_path):
    port = free_port()
    client = ChatClient(f"http://127.0.0.1:{port}/v1", "m", tmp_path, backoff=0.01, max_retries=2)
    with pytest.raises(LLMError) as ei:
        client.complete(req(), text_of)
    assert ei.value.reason == "connection error"
    assert client.usage["calls"] == 3


# ---------------------------------------------------------------------- malformed replies
def test_malformed_then_valid(fake_openai, make_client):
    fake_openai.push(Fault.malformed(), Fault.empty(), Fault.null_content())
    client = make_client()
    assert client.complete(req(), text_of) == "ok"
    assert fake_openai.chat_calls == 4 and client.usage["retries"] == 3
    # malformed replies were paid for but not cached: the cache holds the good one
    assert json.loads(client.cache_path(req()).read_text())["reply"] == '{"text": "ok"}'


def test_persistent_malformed_keeps_reply_and_caches_nothing(fake_openai, make_client, tmp_path):
    fake_openai.responder = lambda r: '{"text": ""}'
    client = make_client(max_retries=2)
    with pytest.raises(LLMError) as ei:
        client.complete(req(), text_of)
    err = ei.value
    assert err.reason == "malformed reply"
    assert err.reply == '{"text": ""}'
    assert "empty" in err.detail and "'text'" in err.detail
    assert fake_openai.chat_calls == 3
    assert client.usage["failures"] == 1
    assert not list((tmp_path / "cache").rglob("*.json"))


# ---------------------------------------------------------------------- non-retryable
def test_400_is_not_retried(fake_openai, make_client):
    fake_openai.push(Fault.http_status(400, "This model's maximum context length is 8192 tokens"))
    client = make_client()
    with pytest.raises(LLMError) as ei:
        client.complete(req(), text_of)
    assert ei.value.reason == "client error 400" and "context length" in ei.value.detail
    assert fake_openai.chat_calls == 1
    assert client.usage["retries"] == 0 and client.usage["failures"] == 1


def test_401_is_not_retried_and_key_not_in_error(fake_openai, make_client):
    fake_openai.push(Fault.http_status(401, f"Incorrect API key provided: {SECRET}"))
    with pytest.raises(LLMError) as ei:
        make_client().complete(req(), text_of)
    assert fake_openai.chat_calls == 1
    assert SECRET not in str(ei.value) and SECRET not in ei.value.detail


def test_response_format_rejected_falls_back_silently(fake_openai, make_client):
    fake_openai.supports_response_format = False
    client = make_client()
    assert client.complete(req(0), text_of) == "ok"
    first, second = fake_openai.chat_requests
    assert "response_format" in first.body and "response_format" not in second.body
    assert client.usage["retries"] == 0 and client.usage["failures"] == 0
    # remembered: the next request does not try again
    assert client.complete(req(1), text_of) == "ok"
    assert fake_openai.chat_calls == 3 and "response_format" not in fake_openai.chat_requests[-1].body


# ---------------------------------------------------------------------- map
def test_map_respects_concurrency_and_keeps_order(fake_openai, make_client):
    fake_openai.responder = echo_responder
    fake_openai.delay = 0.1
    client = make_client(concurrency=3)
    items = [(req(i), text_of) for i in range(12)]
    out = client.map(items, desc="test")
    assert out == [f"echo Describe clip {i}." for i in range(12)]
    assert fake_openai.max_in_flight == 3  # it ran in parallel, never more than 3 at once (no wall-clock check: flaky under load)
    assert client.usage["calls"] == 12


def test_map_returns_errors_in_place(fake_openai, make_client):
    def responder(request):
        content = request["messages"][-1]["content"]
        return "no json here" if content.endswith("1.") else json.dumps({"text": content})
    fake_openai.responder = responder

    def buggy(text):
        if "2." in text:
            raise KeyError("validator bug")
        return text_of(text)
    client = make_client(max_retries=1, concurrency=2)
    out = client.map([(req(i), buggy) for i in range(4)])
    assert out[0] == "Describe clip 0." and out[3] == "Describe clip 3."
    assert isinstance(out[1], LLMError) and out[1].reason == "malformed reply" and out[1].reply == "no json here"
    assert isinstance(out[2], LLMError) and out[2].reason == "unexpected error"
    assert client.usage["failures"] == 2
    assert client.map([]) == []


def test_concurrency_limit_holds_across_threads(fake_openai, make_client):
    fake_openai.delay = 0.05
    client = make_client(concurrency=2)
    threads = [threading.Thread(target=client.map, args=([(req(10 * t + i), text_of) for i in range(3)],))
               for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake_openai.max_in_flight <= 2 and fake_openai.chat_calls == 9


# ---------------------------------------------------------------------- preflight
def test_preflight_ok(fake_openai, make_client):
    make_client().preflight()
    assert fake_openai.requests[0].path == "/v1/models"
    assert fake_openai.requests[0].headers["Authorization"] == f"Bearer {SECRET}"


def test_preflight_unknown_model(fake_openai, tmp_path):
    client = ChatClient(fake_openai.base_url, "gpt-99", tmp_path, api_key=SECRET)
    with pytest.raises(UsageError) as ei:
        client.preflight()
    msg = str(ei.value)
    assert "gpt-99" in msg and "fake-model" in msg and "\n" not in msg


def test_preflight_models_404_falls_back_to_chat(fake_openai, tmp_path):
    fake_openai.models_status = 404
    ChatClient(fake_openai.base_url, "fake-model", tmp_path).preflight()
    assert fake_openai.chat_calls == 1
    with pytest.raises(UsageError) as ei:
        ChatClient(fake_openai.base_url, "nope", tmp_path).preflight()
    assert "nope" in str(ei.value) and "\n" not in str(ei.value)


def test_preflight_no_key_for_remote_url(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    client = ChatClient("https://api.example.invalid/v1", "gpt-4o-mini", tmp_path)
    with pytest.raises(UsageError) as ei:
        client.preflight()
    msg = str(ei.value)
    assert "OPENAI_API_KEY" in msg and "\n" not in msg


def test_local_url_needs_no_key(fake_openai, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    client = ChatClient(fake_openai.base_url.replace("127.0.0.1", "localhost"), "fake-model", tmp_path)
    client.preflight()
    assert client.complete(req(), text_of) == "ok"
    assert fake_openai.chat_requests[0].headers["Authorization"] == "Bearer EMPTY"


def test_preflight_unreachable_is_one_line(tmp_path):
    port = free_port()
    client = ChatClient(f"http://127.0.0.1:{port}/v1", "m", tmp_path, api_key=SECRET)
    t0 = time.monotonic()
    with pytest.raises(UsageError) as ei:
        client.preflight()
    msg = str(ei.value)
    assert f"127.0.0.1:{port}" in msg and "\n" not in msg and SECRET not in msg
    assert time.monotonic() - t0 < 2


def test_preflight_bad_key_is_one_line(fake_openai, tmp_path):
    fake_openai.models_status = 401
    with pytest.raises(UsageError) as ei:
        ChatClient(fake_openai.base_url, "fake-model", tmp_path, api_key=SECRET).preflight()
    assert "API key" in str(ei.value) and SECRET not in str(ei.value) and "\n" not in str(ei.value)


def test_bad_base_url_is_usage_error(tmp_path):
    with pytest.raises(UsageError):
        ChatClient("localhost:8000", "m", tmp_path)


# ---------------------------------------------------------------------- CLI glue
def test_args_and_client_from_args(fake_openai, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    parser = argparse.ArgumentParser()
    add_llm_args(parser)
    args = parser.parse_args([])
    assert args.backend == "template" and args.llm_model == "gpt-4o-mini"
    assert args.llm_base_url == "https://api.openai.com/v1"
    assert (args.llm_concurrency, args.llm_max_retries, args.llm_timeout) == (4, 4, 60.0)
    assert client_from_args(args, Layout(tmp_path)) is None
    args = parser.parse_args(["--backend", "openai", "--llm_base_url", fake_openai.base_url,
                              "--llm_model", "fake-model", "--llm_concurrency", "2", "--llm_price_in", "0.15"])
    client = client_from_args(args, Layout(tmp_path))
    assert client.concurrency == 2 and client.cache_dir == Layout(tmp_path).cache_dir and client.price_in == 0.15
    assert fake_openai.requests[-1].path == "/v1/models"


def test_llm_base_url_alone_implies_the_model_backend(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:8000/v1")  # the environment alone does not
    parser = argparse.ArgumentParser()
    add_llm_args(parser)
    assert parser.parse_args([]).backend == "template"
    assert parser.parse_args(["--llm_base_url", "http://localhost:1/v1"]).backend == "openai"
    # an explicit --backend wins, before or after the URL
    assert parser.parse_args(["--backend", "template", "--llm_base_url", "http://localhost:1/v1"]).backend == "template"
    assert parser.parse_args(["--llm_base_url", "http://localhost:1/v1", "--backend", "template"]).backend == "template"


# ---------------------------------------------------------------------- parse_json_object
def test_parse_json_object():
    spec = {"question": str, "n": int, "score": float, "options": list}
    good = {"question": "Which came first?", "n": 2, "score": 1, "options": ["a", "b"], "extra": None}
    assert parse_json_object(json.dumps(good), spec) == good
    assert parse_json_object("```json\n" + json.dumps(good) + "\n```", spec) == good
    assert parse_json_object("  ```\n" + json.dumps(good) + "```  ", spec) == good
    bad = {
        "": "empty reply",
        "Here you go: {}": "not valid JSON",
        "[1, 2]": "not an object",
        json.dumps({**good, "question": "  "}): "'question' is an empty string",
        json.dumps({k: v for k, v in good.items() if k != "n"}): "missing key 'n'",
        json.dumps({**good, "n": "2"}): "'n' is str, not int",
        json.dumps({**good, "n": True}): "'n' is bool, not int",
        json.dumps({**good, "options": "a"}): "'options' is str, not list",
    }
    for text, why in bad.items():
        with pytest.raises(ValueError, match=why.replace("[", r"\[")):
            parse_json_object(text, spec)


def test_chat_request_is_hashable_and_normalised():
    a = ChatRequest([["user", "hi"]], temperature=0)
    b = ChatRequest((("user", "hi"),), temperature=0.0)
    assert a == b and hash(a) == hash(b) and a.messages == (("user", "hi"),)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_redirect_is_not_followed_so_the_key_stays_home(tmp_path):
    """urllib would copy the Authorization header to any host a 3xx names."""
    with FakeOpenAI() as server, FakeOpenAI() as elsewhere:
        server.push(Fault("status", 302, "", (("Location", elsewhere.base_url + "/chat/completions"),)))
        client = ChatClient(server.base_url, server.model, tmp_path / "cache", api_key="sk-secret-123",
                            max_retries=0, backoff=0.01)
        with pytest.raises(LLMError) as err:
            client.complete(ChatRequest((("user", "hi"),)), str)
        assert "302" in err.value.reason + err.value.detail
        assert elsewhere.requests == []
        assert "sk-secret-123" not in str(err.value) + err.value.detail


def test_a_malformed_reply_is_asked_again_warmer_and_cached_under_the_original_request(tmp_path):
    from timewarp.text.llm import RETRY_TEMPERATURE

    with FakeOpenAI() as server:
        server.responder = lambda req: json.dumps({"answer": "ok"})
        server.push(Fault.malformed("not json"))
        client = ChatClient(server.base_url, server.model, tmp_path / "cache", max_retries=2, backoff=0.01)
        req = ChatRequest((("user", "hi"),))
        validate = lambda text: parse_json_object(text, {"answer": str})  # noqa: E731
        assert client.complete(req, validate) == {"answer": "ok"}
        temps = [r.body["temperature"] for r in server.chat_requests]
        assert temps == [0.0, RETRY_TEMPERATURE]
        again = ChatClient(server.base_url, server.model, tmp_path / "cache")
        assert again.complete(req, validate) == {"answer": "ok"} and server.chat_calls == 2


def test_stages_import_openai_only_when_a_client_is_made():
    """Importing openai is most of a stage's start-up: the stage modules, their --help and the template
    backend must not pay for it; making a ChatClient does (and then it works, as the tests above show)."""
    stages = sorted(stage_modules())
    assert len(stages) >= 16, stages
    code = (f"import importlib, sys\nfor m in {stages!r}: importlib.import_module(m)\n"
            "print('before', 'openai' in sys.modules)\n"
            "from timewarp.text.llm import ChatClient\nChatClient('http://127.0.0.1:9/v1', 'm', sys.argv[1])\n"
            "print('after', 'openai' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code, str(ROOT / "unused-cache")], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["before", "False", "after", "True"]
