"""serve.py and serve_engine.py: the official openai client against a live server (chat, stream,
models, equality with generate_text), batching and queue order, every bad input (400 with an OpenAI
error, then a good request), API keys, a full queue (429), a disconnect that stops generation, the
CLI on an exported HuggingFace folder, and the chat page in headless Chromium.

Set SERVE_SCREENSHOT=docs/chat_page.png to write the page test's screenshot for the README.
"""
import http.client
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def dev_package(name: str):
    """A package of requirements-dev.txt: skips this module where it is missing, fails under CI=true."""
    if os.environ.get("CI") == "true":
        return __import__(name)
    return pytest.importorskip(name, reason=f"{name} is missing: pip install -r requirements-dev.txt")


openai = dev_package("openai")
dev_package("fastapi")
dev_package("uvicorn")

import serve  # noqa: E402
from serve_engine import Engine, Job, Sampling  # noqa: E402
from common import UserError  # noqa: E402
from export_hf import export_hf  # noqa: E402
from generate import generate_text, load_checkpoint  # noqa: E402
from char_data import memorising_model  # noqa: E402
from model import GPTConfig, TransformerLanguageModel  # noqa: E402
from tokenizer import CharTokenizer, special_tokens_for  # noqa: E402
from tokenizer_bpe import render_chat  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # 2 shared cores: one torch thread is far faster here

CHAT_DOCS = [
    "<|user|>hi\n<|assistant|>hello there\n<|endoftext|>",
    "<|user|>hi\n<|assistant|>hello there\n<|user|>how are you?\n<|assistant|>I am a tiny model, and I am fine.\n"
    "<|user|>What is the capital of France?\n<|assistant|>The capital of France is Paris.\n<|endoftext|>",
    "<|user|>bye\n<|assistant|>see you ✓ 😀\n<|endoftext|>",
    "<|user|>What is the capital of France?\n<|assistant|>The capital of France is Paris.\n<|endoftext|>",
]
PROMPTS = ["hi", "bye", "What is the capital of France?"]
GREEDY = dict(temperature=0, max_tokens=48)


def train_chat_model(tokenizer) -> TransformerLanguageModel:
    """A tiny model that memorises CHAT_DOCS (about a second on one core)."""
    return memorising_model(tokenizer, CHAT_DOCS, 192, 48, 1e-2, 60)


class GatedModel(TransformerLanguageModel):
    """Every forward pass first waits for `gate` to be open (a test holds the worker mid-request),
    then sleeps `delay` seconds (a test slows the reply down), then raises if `fail` is set (a test
    breaks the model)."""
    fail = False
    delay = 0.0

    def forward(self, *args, **kwargs):
        assert self.gate.wait(60), "the test never opened the gate"
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("the model broke")
        return super().forward(*args, **kwargs)


def endless_model(vocab_size: int) -> GatedModel:
    """Random weights whose greedy choice is never <|endoftext|> (id 0): it writes until max_tokens."""
    torch.manual_seed(0)
    model = GatedModel(GPTConfig(vocab_size=vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32))
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
        model.lm_head.weight[0] = 0.0  # logit 0 for <|endoftext|>; the best of the others is far above it
    model.gate = threading.Event()
    model.gate.set()
    return model.eval()


@pytest.fixture(scope="module")
def chat_checkpoint(tmp_path_factory) -> Path:
    """A trainer-style checkpoint folder (latest -> step folder) of the chat model."""
    root = tmp_path_factory.mktemp("chat_ckpt")
    tok = CharTokenizer.from_text("".join(CHAT_DOCS), special_tokens_for(chat=True))
    tok.save(root / "tok.json")
    train_chat_model(tok).save_pretrained(root / "step_00000060", tokenizer_file=root / "tok.json")
    (root / "latest").write_text("step_00000060\n")
    return root


@pytest.fixture(scope="module")
def reference(chat_checkpoint):
    """The same checkpoint loaded a second time: expected replies come from plain generate_text."""
    model, tok = load_checkpoint(chat_checkpoint, "cpu")

    def reply(messages: list[dict], max_tokens: int = 48, **sampling) -> str:
        prompt = render_chat(messages, add_generation_prompt=True)
        return generate_text(model, tok, prompt, max_new_tokens=max_tokens, chat=True,
                             **{"temperature": 0, **sampling})

    return SimpleNamespace(model=model, tokenizer=tok, reply=reply)


@pytest.fixture(scope="module")
def chat_server(chat_checkpoint):
    model, tok = load_checkpoint(chat_checkpoint, "cpu")
    engine = Engine(model, tok)
    app = serve.create_app(engine, serve.ModelInfo.of("tiny-chat", model, tok))
    with serve.serving(app) as url:
        yield SimpleNamespace(url=url, engine=engine, model=model, client=client_for(url))
    engine.stop()


@pytest.fixture(scope="module")
def plain_server():
    """A model without chat tokens that never stops early; room for 2 waiting requests."""
    tok = CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz .", special_tokens_for(chat=False))
    model = endless_model(tok.vocab_size)
    engine = Engine(model, tok, max_queue=2)
    app = serve.create_app(engine, serve.ModelInfo.of("endless", model, tok))
    with serve.serving(app) as url:
        yield SimpleNamespace(url=url, engine=engine, model=model, tokenizer=tok)
    engine.stop()


def client_for(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, timeout=120, max_retries=0)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def request(url: str, method: str, path: str, body: bytes | dict | None = None,
            headers: dict | None = None) -> tuple[int, dict]:
    """One plain HTTP request (bytes are sent as they are: malformed JSON too); (status, JSON body)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    status, raw = resp.status, resp.read()
    conn.close()
    return status, json.loads(raw)


def open_stream(url: str, path: str, body: dict) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    conn.request("POST", path, body=json.dumps({**body, "stream": True}), headers={"Content-Type": "application/json"})
    return conn, conn.getresponse()


def first_text_chunk(resp: http.client.HTTPResponse) -> dict:
    """Reads server-sent events until one carries text."""
    while True:
        line = resp.readline().decode()
        assert line, "the stream ended before any text"
        if line.startswith("data: {"):
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["text"]:
                return chunk


def wait_for(predicate, what: str, timeout: float = 60.0) -> None:
    """Polls predicate() (a cheap HTTP call) until it is true; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"


# ---------------------------------------------------------------------------- the openai client

def test_chat_completion_equals_generate_text(chat_server, reference):
    for prompt in PROMPTS:
        r = chat_server.client.chat.completions.create(model="tiny-chat", messages=user(prompt), **GREEDY)
        assert r.object == "chat.completion" and r.model == "tiny-chat" and len(r.choices) == 1
        assert r.choices[0].message.role == "assistant"
        assert r.choices[0].message.content == reference.reply(user(prompt)) != ""
        assert r.choices[0].finish_reason == "stop"
        rendered = render_chat(user(prompt), add_generation_prompt=True)
        assert r.usage.prompt_tokens == len(reference.tokenizer.encode(rendered))
        assert r.usage.completion_tokens == len(r.choices[0].message.content)  # a char tokenizer: one per char
    history = user("hi") + [{"role": "assistant", "content": "hello there"}] + user("how are you?")
    r = chat_server.client.chat.completions.create(model="tiny-chat", messages=history, **GREEDY)
    assert r.choices[0].message.content == reference.reply(history) == "I am a tiny model, and I am fine."


def test_stream_joins_to_the_same_text(chat_server):
    for prompt in PROMPTS:
        whole = chat_server.client.chat.completions.create(model="tiny-chat", messages=user(prompt), **GREEDY)
        chunks = list(chat_server.client.chat.completions.create(model="tiny-chat", messages=user(prompt),
                                                                 stream=True, **GREEDY))
        assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
        assert chunks[0].choices[0].delta.role == "assistant"
        pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
        assert len(pieces) > 1 and "".join(pieces) == whole.choices[0].message.content
        assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]


def test_stream_usage_and_done_marker(chat_server):
    conn, resp = open_stream(chat_server.url, "/v1/chat/completions",
                             {"messages": user("bye"), "stream_options": {"include_usage": True}, **GREEDY})
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    events = [line[6:] for line in resp.read().decode().split("\n\n") if line.startswith("data: ")]
    conn.close()
    assert events[-1] == "[DONE]"
    usage = json.loads(events[-2])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == len("see you ✓ 😀")


def test_max_tokens_and_stop_and_seed(chat_server, reference):
    client = chat_server.client
    r = client.chat.completions.create(model="tiny-chat", messages=user("What is the capital of France?"),
                                       temperature=0, max_tokens=7)
    assert r.choices[0].message.content == "The cap" and r.choices[0].finish_reason == "length"
    r = client.chat.completions.create(model="tiny-chat", messages=user("What is the capital of France?"),
                                       temperature=0, stop=["France"])
    assert r.choices[0].message.content == "The capital of " and r.choices[0].finish_reason == "stop"
    sampled = [client.chat.completions.create(model="tiny-chat", messages=user("hi"), temperature=1.5, top_p=0.9,
                                              seed=7, max_tokens=30).choices[0].message.content for _ in range(2)]
    assert sampled[0] == sampled[1] == reference.reply(user("hi"), max_tokens=30, temperature=1.5, top_p=0.9, seed=7)


def test_completions_endpoint_equals_generate_text(chat_server, reference):
    prompt = "<|user|>bye\n<|assistant|>"
    r = chat_server.client.completions.create(model="tiny-chat", prompt=prompt, temperature=0, max_tokens=20)
    expected = generate_text(reference.model, reference.tokenizer, prompt, max_new_tokens=20, temperature=0, chat=False)
    assert r.object == "text_completion" and r.choices[0].text == expected and expected.startswith("see you")
    chunks = list(chat_server.client.completions.create(model="tiny-chat", prompt=prompt, temperature=0,
                                                        max_tokens=20, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == expected


def test_models_and_health(chat_server):
    models = chat_server.client.models.list().data
    assert [m.id for m in models] == ["tiny-chat"]
    extra = models[0].model_extra
    assert extra["parameters"] == chat_server.model.num_parameters() and extra["context_length"] == 192
    assert extra["chat"] is True
    status, health = request(chat_server.url, "GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["model"] == "tiny-chat"


def test_concurrent_streams_all_correct(chat_server, reference):
    prompts = PROMPTS * 3

    def stream(prompt: str) -> str:
        chunks = chat_server.client.chat.completions.create(model="tiny-chat", messages=user(prompt), stream=True,
                                                            **GREEDY)
        return "".join(c.choices[0].delta.content or "" for c in chunks)

    with ThreadPoolExecutor(len(prompts)) as pool:
        replies = list(pool.map(stream, prompts))
    assert replies == [reference.reply(user(p)) for p in prompts]


def test_bpe_model_streams_whole_characters(tmp_path):
    """A BPE tokenizer splits ✓ and 😀 over several tokens: every streamed piece is whole text and
    the pieces join to the non-streamed reply, equal to generate_text."""
    from tokenizer_bpe import BPETokenizer

    tok = BPETokenizer().train(CHAT_DOCS * 3, vocab_size=300, special_tokens=special_tokens_for(chat=True),
                               show_progress=False)
    assert len(tok.encode("😀")) > 1
    model = train_chat_model(tok)
    engine = Engine(model, tok)
    app = serve.create_app(engine, serve.ModelInfo.of("bpe-chat", model, tok))
    expected = generate_text(model, tok, render_chat(user("bye"), add_generation_prompt=True), max_new_tokens=48,
                             temperature=0, chat=True)
    with serve.serving(app) as url:
        client = client_for(url)
        whole = client.chat.completions.create(model="bpe-chat", messages=user("bye"), **GREEDY)
        chunks = client.chat.completions.create(model="bpe-chat", messages=user("bye"), stream=True, **GREEDY)
        pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    engine.stop()
    assert whole.choices[0].message.content == "".join(pieces) == expected == "see you ✓ 😀"
    assert len(pieces) > 1  # a half character would have been a U+FFFD piece, and the join would differ
    assert whole.usage.completion_tokens == len(tok.encode(expected))


# ---------------------------------------------------------------------------- scheduling

def test_engine_batches_waiting_requests_in_queue_order(chat_checkpoint, reference):
    """While job A runs, B..G queue up: the cancelled G is dropped, B, C, D (alike) run as one batch,
    the seeded sampling job E runs alone, then F; every reply equals a lone generate_text call."""
    model, tok = load_checkpoint(chat_checkpoint, "cpu")
    engine = Engine(model, tok, max_batch=3)
    a_running, release = threading.Event(), threading.Event()
    texts, finished = {}, []

    def collector(name: str):
        def emit(kind: str, payload) -> None:
            if name == "A":
                a_running.set()
                assert release.wait(60)  # holds the worker inside A until the others wait
            if kind == "piece":
                texts[name] = texts.get(name, "") + payload
            elif kind == "done":
                finished.append(name)
        return emit

    greedy = Sampling(max_tokens=48, temperature=0.0, top_p=1.0, stop=(), seed=None)
    seeded = Sampling(max_tokens=30, temperature=1.5, top_p=0.9, stop=(), seed=3)
    prompts = dict(zip("ABCDEFG", ["hi", "bye", "What is the capital of France?", "hi", "bye", "hi", "bye"]))
    jobs = {n: Job(render_chat(user(p), add_generation_prompt=True), True, seeded if n == "E" else greedy,
                         emit=collector(n)) for n, p in prompts.items()}
    engine.submit(jobs["A"])
    assert a_running.wait(60)
    for name in "BCGDEF":
        engine.submit(jobs[name])
    jobs["G"].cancelled.set()
    release.set()
    assert engine.wait_idle(120)
    engine.stop()
    assert finished == list("ABCDEF")
    assert [r["batch"] for r in engine.recent] == [1, 0, 3, 3, 3, 1, 1]  # G is dropped before the next batch
    assert [r["status"] for r in engine.recent] == ["completed", "cancelled"] + ["completed"] * 5
    for name in "ABCDF":
        assert texts[name] == reference.reply(user(prompts[name]))
    assert texts["E"] == reference.reply(user("bye"), max_tokens=30, temperature=1.5, top_p=0.9, seed=3)


# ---------------------------------------------------------------------------- bad input

BAD_CHAT = [  # (body, param, words in the message)
    (b'{"messages": [', None, "not valid JSON"),
    (b"\xff\xfe", None, "not valid JSON"),
    (b"[1, 2]", None, "JSON object"),
    ({}, "messages", "required"),
    ({"messages": []}, "messages", "empty"),
    ({"messages": "hi"}, "messages", "must be a list"),
    ({"messages": {"role": "user", "content": "hi"}}, "messages", "must be a list"),
    ({"messages": ["hi"]}, "messages", "object"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages", "robot"),
    ({"messages": [{"content": "hi"}]}, "messages", "role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages", "string"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, "messages", "string"),
    ({"messages": [{"role": "user"}]}, "messages", "string"),
    ({"messages": [{"role": "user", "content": "hi " * 80}]}, "messages", "context of 192"),
    ({"messages": user("hi"), "max_tokens": "10"}, "max_tokens", "integer"),
    ({"messages": user("hi"), "max_tokens": 1.5}, "max_tokens", "integer"),
    ({"messages": user("hi"), "max_tokens": True}, "max_tokens", "integer"),
    ({"messages": user("hi"), "max_tokens": 0}, "max_tokens", "between 1 and"),
    ({"messages": user("hi"), "max_tokens": 10**9}, "max_tokens", "between 1 and"),
    ({"messages": user("hi"), "max_completion_tokens": -1}, "max_completion_tokens", "between 1 and"),
    ({"messages": user("hi"), "temperature": "hot"}, "temperature", "number"),
    ({"messages": user("hi"), "temperature": -0.1}, "temperature", "between 0"),
    ({"messages": user("hi"), "temperature": 2.5}, "temperature", "between 0"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', "temperature", "between 0"),
    ({"messages": user("hi"), "top_p": 0}, "top_p", "(0"),
    ({"messages": user("hi"), "top_p": 1.5}, "top_p", "(0"),
    ({"messages": user("hi"), "n": 2}, "n", "n must be 1"),
    ({"messages": user("hi"), "n": True}, "n", "n must be 1"),
    ({"messages": user("hi"), "stop": 5}, "stop", "string"),
    ({"messages": user("hi"), "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ({"messages": user("hi"), "seed": "x"}, "seed", "integer"),
    ({"messages": user("hi"), "stream": "yes"}, "stream", "true or false"),
    ({"messages": user("hi"), "stream_options": "usage"}, "stream_options", "include_usage"),
]
BAD_COMPLETION = [
    ({}, "prompt", "string"),
    ({"prompt": ["a", "b"]}, "prompt", "string"),
    ({"prompt": "hi " * 80}, "prompt", "context of 192"),
    ({"prompt": "hi", "temperature": None, "max_tokens": -5}, "max_tokens", "between 1 and"),
]


def assert_openai_error(status: int, body: dict, expected_status: int, param, words: str) -> None:
    assert status == expected_status, body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["param"] == param
    assert words in body["error"]["message"], body["error"]["message"]


def assert_serving(url: str) -> None:
    status, body = request(url, "POST", "/v1/chat/completions", {"messages": user("hi"), **GREEDY})
    assert status == 200 and body["choices"][0]["message"]["content"] == "hello there"


@pytest.mark.parametrize("body,param,words", BAD_CHAT, ids=[f"chat{i}" for i in range(len(BAD_CHAT))])
def test_bad_chat_request(chat_server, body, param, words):
    for stream in (False, True):  # a bad streamed request is refused before any stream starts
        if isinstance(body, dict):
            body = {**body, "stream": stream} if param != "stream" else body
        status, error = request(chat_server.url, "POST", "/v1/chat/completions", body)
        assert_openai_error(status, error, 400, param, words)
        assert error["error"]["type"] == "invalid_request_error"
    assert_serving(chat_server.url)


@pytest.mark.parametrize("body,param,words", BAD_COMPLETION, ids=[f"text{i}" for i in range(len(BAD_COMPLETION))])
def test_bad_completion_request(chat_server, body, param, words):
    status, error = request(chat_server.url, "POST", "/v1/completions", body)
    assert_openai_error(status, error, 400, param, words)
    assert_serving(chat_server.url)


def test_unknown_path_method_and_chat_on_a_plain_model(chat_server, plain_server):
    assert_openai_error(*request(chat_server.url, "GET", "/v1/nothing"), 404, None, "Not Found")
    assert_openai_error(*request(chat_server.url, "GET", "/v1/chat/completions"), 405, None, "Not Allowed")
    status, error = request(plain_server.url, "POST", "/v1/chat/completions", {"messages": user("hi")})
    assert_openai_error(status, error, 400, "messages", "without chat tokens")
    assert_serving(chat_server.url)


def test_openai_client_sees_bad_request(chat_server):
    with pytest.raises(openai.BadRequestError) as e:
        chat_server.client.chat.completions.create(model="tiny-chat", messages=user("hi"), temperature=9)
    assert e.value.status_code == 400 and e.value.param == "temperature"


# ---------------------------------------------------------------------------- keys, queue, disconnects

def test_api_key(chat_checkpoint):
    model, tok = load_checkpoint(chat_checkpoint, "cpu")
    engine = Engine(model, tok)
    app = serve.create_app(engine, serve.ModelInfo.of("tiny-chat", model, tok), api_key="s3cret")
    with serve.serving(app) as url:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions")):
                status, body = request(url, method, path, {"messages": user("hi")}, headers)
                assert_openai_error(status, body, 401, None, "API key")
        with pytest.raises(openai.AuthenticationError):
            client_for(url, "wrong").models.list()
        assert client_for(url, "s3cret").chat.completions.create(
            model="tiny-chat", messages=user("hi"), **GREEDY).choices[0].message.content == "hello there"
        assert request(url, "GET", "/health")[0] == 200
    engine.stop()


def test_disconnect_stops_generation(plain_server):
    engine = plain_server.engine
    conn, resp = open_stream(plain_server.url, "/v1/completions", {"prompt": "ab", "max_tokens": 4096,
                                                                   "temperature": 0})
    assert first_text_chunk(resp)["object"] == "text_completion"
    conn.close()
    assert engine.wait_idle(120)
    last = engine.recent[-1]
    assert last["status"] == "cancelled" and 0 < last["pieces"] < 4096
    status, body = request(plain_server.url, "POST", "/v1/completions", {"prompt": "ab", "max_tokens": 5,
                                                                         "temperature": 0})
    expected = generate_text(plain_server.model, plain_server.tokenizer, "ab", max_new_tokens=5, temperature=0)
    assert status == 200 and body["choices"][0]["text"] == expected and body["choices"][0]["finish_reason"] == "length"


def test_full_queue_answers_429(plain_server):
    """One request runs (held inside a forward pass), two wait (max_queue=2): the next gets 429; once
    the waiting clients leave, their room is free again."""
    url, engine, gate = plain_server.url, plain_server.engine, plain_server.model.gate

    def health() -> dict:
        return request(url, "GET", "/health")[1]

    body = {"prompt": "ab", "max_tokens": 50, "temperature": 0}
    gate.clear()
    try:
        running = open_stream(url, "/v1/completions", body)
        wait_for(lambda: health()["running"] == 1, "the first request to start")
        waiting = [open_stream(url, "/v1/completions", body) for _ in range(2)]
        wait_for(lambda: health()["queued"] == 2, "two queued requests")
        status, error = request(url, "POST", "/v1/completions", body)
        assert_openai_error(status, error, 429, None, "busy")
        assert error["error"]["type"] == "rate_limit_error"
        for conn, _ in waiting:
            conn.close()
        wait_for(lambda: health()["queued"] == 0, "the waiting clients to leave")
        late = open_stream(url, "/v1/completions", {**body, "max_tokens": 1})
        assert late[1].status == 200  # the room they held is free again while the first request still runs
    finally:
        gate.set()
    events = late[1].read().decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""] and len(json.loads(events[0][6:])["choices"][0]["text"]) == 1
    first = running[1].read().decode()
    assert first.endswith("data: [DONE]\n\n") and "length" in first  # the held request ran to its end
    for conn, _ in (running, late):
        conn.close()
    assert engine.wait_idle(120)
    assert [(r["status"], r["batch"]) for r in list(engine.recent)[-4:]] == \
        [("cancelled", 0), ("cancelled", 0), ("completed", 1), ("completed", 1)]


def test_a_failing_model_answers_500_and_the_server_goes_on(plain_server):
    body = {"prompt": "ab", "max_tokens": 5, "temperature": 0}
    plain_server.model.fail = True
    try:
        status, error = request(plain_server.url, "POST", "/v1/completions", body)
        conn, resp = open_stream(plain_server.url, "/v1/completions", body)
        events = resp.read().decode().split("\n\n")
        conn.close()
    finally:
        plain_server.model.fail = False
    assert_openai_error(status, error, 500, None, "generation failed: RuntimeError: the model broke")
    assert error["error"]["type"] == "server_error"
    assert json.loads(events[0][6:])["error"]["message"].endswith("the model broke") and events[1] == "data: [DONE]"
    status, body = request(plain_server.url, "POST", "/v1/completions", body)
    assert status == 200 and len(body["choices"][0]["text"]) == 5


# ---------------------------------------------------------------------------- the CLI

def test_cli_serves_an_exported_hf_folder_with_a_key(chat_checkpoint, reference, tmp_path):
    """serve.py on export_hf.py's folder, bound to 0.0.0.0 with SERVE_API_KEY; answers on loopback."""
    hf_dir = export_hf(reference.model, chat_checkpoint / "tok.json", tmp_path / "hf_chat")
    env = {**os.environ, "SERVE_API_KEY": "k3y", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("GPT_DEBUG", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), "--checkpoint_dir", str(hf_dir), "--host",
                             "0.0.0.0", "--port", "0", "--device", "cpu"], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    try:
        line = ""
        while "serving" not in line:
            line = lines.get(timeout=120)
        port = int(re.search(r"http://0\.0\.0\.0:(\d+)", line).group(1))
        assert "hf_chat" in line and "API key required" in line
        url = f"http://127.0.0.1:{port}"
        assert request(url, "GET", "/v1/models")[0] == 401
        r = client_for(url, "k3y").chat.completions.create(model="hf_chat", messages=user("bye"), **GREEDY)
        assert r.choices[0].message.content == reference.reply(user("bye")) == "see you ✓ 😀"
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == -signal.SIGTERM  # uvicorn re-raises the signal after its graceful shutdown


def test_cli_refuses_a_public_host_without_a_key(monkeypatch, tmp_path):
    monkeypatch.delenv("SERVE_API_KEY", raising=False)
    with pytest.raises(UserError, match=r"--host 0\.0\.0\.0 .*--api_key.*--insecure"):
        serve.main(["--checkpoint_dir", str(tmp_path), "--host", "0.0.0.0"])
    with pytest.raises(UserError, match="--max_queue 0 must be >= 1"):
        serve.main(["--checkpoint_dir", str(tmp_path), "--max_queue", "0"])
    for loopback in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert serve.is_loopback(loopback)
    assert not serve.is_loopback("0.0.0.0") and not serve.is_loopback("192.168.1.5")


def test_cli_without_fastapi_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['fastapi'] = None; sys.path.insert(0, sys.argv[1]); import serve; "
            "from common import cli_main; cli_main(serve.main, ['--checkpoint_dir', sys.argv[2]])")
    r = subprocess.run([sys.executable, "-c", code, str(ROOT), str(tmp_path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "error: serve.py needs fastapi: pip install -r requirements-extra.txt "
        "(or: pip install 'fastapi>=0.100' 'uvicorn>=0.23')"]


# ---------------------------------------------------------------------------- the page in a browser

def find_chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM_PATH"), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    """Headless system Chromium driven by Playwright (never a downloaded browser). Skips where none
    is installed, except under CI=true, where a missing browser fails."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright, missing = None, "the playwright package (pip install -r requirements-dev.txt)"
    path = find_chromium()
    if sync_playwright is not None:
        missing = None if path else "a Chromium browser (Debian: apt-get install chromium; or set CHROMIUM_PATH)"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the page test cannot run: install {missing}")
        pytest.skip(f"no browser for the page test: install {missing}")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def test_chat_page_in_a_browser(browser, chat_server, reference, tmp_path):
    page = browser.new_page(viewport={"width": 1000, "height": 620})
    page.goto(chat_server.url + "/")
    page.wait_for_function("document.getElementById('model-size').textContent !== ''")
    assert page.text_content("#model-name") == "tiny-chat"
    size = chat_server.model.num_parameters()
    assert page.text_content("#model-size").startswith(f"{size / 1e3:.1f}K parameters · context 192")
    page.fill("#temperature", "0")
    history: list[dict] = []
    for i, text in enumerate(["hi", "how are you?", "What is the capital of France?"]):
        with page.expect_request("**/v1/chat/completions") as sent:
            page.fill("#input", text)
            page.press("#input", "Enter")
        body = sent.value.post_data_json
        history += user(text)
        assert body["stream"] is True and body["temperature"] == 0 and body["messages"] == history
        done = page.locator('.msg.assistant[data-state="done"]').nth(i)
        done.wait_for(timeout=60_000)
        reply = done.text_content()
        assert reply == reference.reply(history, max_tokens=256)
        history.append({"role": "assistant", "content": reply})
    assert [m["content"] for m in history[1::2]] == ["hello there", "I am a tiny model, and I am fine.",
                                                     "The capital of France is Paris."]
    shot = page.screenshot(path=str(tmp_path / "chat_page.png"))
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("SERVE_SCREENSHOT"):
        Path(os.environ["SERVE_SCREENSHOT"]).write_bytes(shot)
    page.click("#reset")
    assert page.locator(".msg").count() == 0
    with page.expect_request("**/v1/chat/completions") as sent:
        page.fill("#input", "bye")
        page.click("#send")
    assert sent.value.post_data_json["messages"] == user("bye")  # the reset forgot the conversation
    page.locator('.msg.assistant[data-state="done"]').wait_for(timeout=60_000)
    assert page.text_content(".msg.assistant") == "see you ✓ 😀"
    page.close()


def test_page_streams_and_stop_cancels(browser, plain_server):
    """On a model without chat tokens the page completes text; partial text shows while the reply is
    still streaming, and Stop ends the request, which stops the generation on the server."""
    page = browser.new_page()
    page.goto(plain_server.url + "/")
    page.wait_for_function("document.getElementById('model-size').textContent.includes('no chat tokens')")
    page.fill("#temperature", "0")
    page.fill("#max_tokens", "4096")
    page.fill("#input", "ab")
    # 5 ms a token: the 4,096-token reply would stream for 20 s, so even a starved browser sees it mid-way
    # (unslowed, the tiny model writes it in about a second and a busy machine can miss the whole stream)
    plain_server.model.delay = 0.005
    try:
        page.click("#send")
        page.wait_for_function("""() => { const b = document.querySelector('.msg.assistant');
            return b && b.dataset.state === 'streaming' && b.textContent.length >= 5; }""", timeout=60_000)
        # the reply keeps growing under the button, so Playwright's wait for a still layout may never end
        # on a busy machine: click through the DOM
        page.evaluate("document.getElementById('stop').click()")
        page.locator('.msg.assistant[data-state="done"]').wait_for(timeout=60_000)
        assert page.text_content(".msg.assistant").endswith("(stopped)")
        assert plain_server.engine.wait_idle(120)
    finally:
        plain_server.model.delay = 0.0
    last = plain_server.engine.recent[-1]
    assert last["status"] == "cancelled" and last["pieces"] < 4096
    page.close()
