"""An OpenAI-compatible server and a web chat page for our checkpoints.

    python serve.py --checkpoint_dir checkpoints           # then open http://127.0.0.1:8000
    python serve.py --checkpoint_dir hf_model --port 9000  # a folder export_hf.py wrote works too

Endpoints: POST /v1/chat/completions (messages rendered with our chat template), POST
/v1/completions (a plain prompt: models trained without chat tokens), GET /v1/models (with the
model's parameter count and context), GET /health, and GET / (serve_page.html: a chat page, plain
HTML + JS). Any OpenAI client works: `OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="x")`.

How requests share the model: serve_engine.py (one worker thread; a bounded FIFO; waiting
requests that sample alike run as one left-padded batch, every row streamed token by token, several
times sooner than in turn with 32 clients; a client that leaves drops out of its batch).

Errors are OpenAI-shaped, `{"error": {"message", "type", "param", "code"}}`: 400 for every bad
field (never FastAPI's 422), 401 for a missing or wrong key (--api_key or SERVE_API_KEY), 429 for a
full queue. Without a key the server only binds to loopback unless --insecure is given.

Usage: prompt_tokens counts the rendered prompt; completion_tokens the reply re-encoded (the ids
sampled are not exposed by generate.py's text functions; a trained model samples the tokenizer's own encoding
almost always). finish_reason is "length" when that count reaches max_tokens, else "stop".
"""
# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations (Request) at
# run time, and Request is imported inside create_app, where FastAPI could not resolve a string.
import argparse
import asyncio
import contextlib
import hmac
import ipaddress
import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Sequence

from common import ArgParser, UserError, cli_main, first_line, resolve_checkpoint_dir
from serve_engine import DEFAULT_MAX_BATCH, Engine, Job, QueueFull, Sampling

PAGE_FILE = Path(__file__).resolve().with_name("serve_page.html")
DEFAULT_MAX_TOKENS = 256
MAX_TOKENS_LIMIT = 4096
MAX_STOP_STRINGS = 4      # the OpenAI API's limit
CHAT_ROLES = ("system", "user", "assistant")
INSTALL_HINT = "pip install -r requirements-extra.txt (or: pip install 'fastapi>=0.100' 'uvicorn>=0.23')"


class RequestError(Exception):
    """A request the client must fix (or cannot make now): answered as an OpenAI error object."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 type: str = "invalid_request_error", code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.status, self.type, self.code = message, param, status, type, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ---------------------------------------------------------------------------- request validation

def parse_json_object(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(f"the request body is not valid JSON ({first_line(e, 120)}); send a JSON object") from None
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(body: dict, name: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{name} must be an integer, got {json.dumps(value)}", name)
    if not low <= value <= high:
        raise RequestError(f"{name}={value} is out of range: it must be between {low} and {high}", name)
    return value


def _number(body: dict, name: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not _is_number(value):
        raise RequestError(f"{name} must be a number, got {json.dumps(value)}", name)
    if not (low < value <= high if low_open else low <= value <= high):  # NaN (JSON allows it) fails too
        bounds = f"in ({low}, {high}]" if low_open else f"between {low} and {high}"
        raise RequestError(f"{name}={value} is out of range: it must be {bounds}", name)
    return float(value)


def parse_sampling(body: dict, default_max_tokens: int) -> Sampling:
    """The sampling fields of a completion request (OpenAI names and ranges); n must be 1."""
    tokens_field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _integer(body, tokens_field, default_max_tokens, 1, MAX_TOKENS_LIMIT)  # the newer name wins
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0, low_open=True)
    seed = _integer(body, "seed", None, -2**63, 2**63 - 1)
    n = body.get("n")
    if n is not None and (type(n) is not int or n != 1):
        raise RequestError(f"n={json.dumps(n)}: this server returns one choice per request; n must be 1", "n")
    stop = body.get("stop")
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > MAX_STOP_STRINGS:
        raise RequestError(f"stop must be a string or a list of at most {MAX_STOP_STRINGS} strings, "
                           f"got {json.dumps(stop)[:100]}", "stop")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise RequestError(f"stream must be true or false, got {json.dumps(body['stream'])}", "stream")
    options = body.get("stream_options")
    if options is not None and not (isinstance(options, dict)
                                    and isinstance(options.get("include_usage", False), bool)):
        raise RequestError('stream_options must be an object like {"include_usage": true}', "stream_options")
    return Sampling(max_tokens, temperature, top_p, tuple(stops), seed)


def parse_messages(body: dict) -> list[dict]:
    """messages: a non-empty list of {"role": system|user|assistant, "content": str}."""
    messages = body.get("messages")
    if messages is None:
        raise RequestError("messages is required: a list of {\"role\", \"content\"} objects", "messages")
    if not isinstance(messages, list):
        raise RequestError(f"messages must be a list, got {type(messages).__name__}", "messages")
    if not messages:
        raise RequestError("messages is empty: send at least one message", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise RequestError(f"messages[{i}] must be an object with role and content", "messages")
        if m.get("role") not in CHAT_ROLES:
            raise RequestError(f"messages[{i}].role {json.dumps(m.get('role'))} is not one of {', '.join(CHAT_ROLES)}",
                               "messages")
        if not isinstance(m.get("content"), str):
            raise RequestError(f"messages[{i}].content must be a string, got {json.dumps(m.get('content'))[:100]}",
                               "messages")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


# ---------------------------------------------------------------------------- the app

@dataclass
class ModelInfo:
    name: str
    parameters: int
    context_length: int
    chat: bool

    @classmethod
    def of(cls, name: str, model, tokenizer) -> "ModelInfo":
        from generate import has_chat_tokens

        return cls(name, model.num_parameters(), model.config.block_size, has_chat_tokens(tokenizer))


def _sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n"


class Reply:
    """The OpenAI objects of one reply: a whole completion, or its stream of chunks."""

    def __init__(self, kind: str, model: str, prompt_tokens: int) -> None:
        self.kind, self.model, self.prompt_tokens = kind, model, prompt_tokens  # kind: "chat" or "text"
        self.id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def _wrap(self, object_name: str, choices: list, **extra: Any) -> dict:
        return {"id": self.id, "object": object_name, "created": self.created, "model": self.model,
                "choices": choices, **extra}

    def usage(self, done: dict) -> dict:
        n = done["completion_tokens"]
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": n, "total_tokens": self.prompt_tokens + n}

    def whole(self, text: str, done: dict) -> dict:
        if self.kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "finish_reason": done["finish_reason"]}
            return self._wrap("chat.completion", [choice], usage=self.usage(done))
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": done["finish_reason"]}
        return self._wrap("text_completion", [choice], usage=self.usage(done))

    def chunk(self, text: str | None, finish: str | None = None, role: bool = False) -> dict:
        """A piece of text (None: the closing chunk with finish_reason); role=True: the chat's opening."""
        if self.kind == "chat":
            delta = {} if text is None else {"content": text}
            if role:
                delta = {"role": "assistant", **delta}
            return self._wrap("chat.completion.chunk", [{"index": 0, "delta": delta, "finish_reason": finish}])
        return self._wrap("text_completion", [{"index": 0, "text": text or "", "logprobs": None,
                                               "finish_reason": finish}])

    def usage_chunk(self, done: dict) -> dict:
        return self._wrap("chat.completion.chunk" if self.kind == "chat" else "text_completion", [],
                          usage=self.usage(done))


def create_app(engine: Engine, info: ModelInfo, api_key: str | None = None,
               default_max_tokens: int = DEFAULT_MAX_TOKENS):
    """The FastAPI app. Bodies are parsed by hand (not pydantic models) so that every bad field
    gets our 400 error object, never FastAPI's 422."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    app = FastAPI(title="gpt2-from-scratch", docs_url=None, redoc_url=None, openapi_url=None)
    created = int(time.time())

    def error_response(e: RequestError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    @app.exception_handler(RequestError)
    async def on_request_error(request: Request, e: RequestError):
        return error_response(e)

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, e: HTTPException):  # 404, 405: the same error shape
        return error_response(RequestError(str(e.detail), status=e.status_code))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, e: RequestValidationError):
        return error_response(RequestError(first_line(e)))

    @app.exception_handler(Exception)
    async def on_crash(request: Request, e: Exception):
        return error_response(RequestError(f"internal error: {type(e).__name__}: {first_line(e)}", status=500,
                                           type="server_error"))

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            what = "a wrong API key" if given else "no API key"
            raise RequestError(f"{what}: send the header Authorization: Bearer <the server's --api_key>",
                               status=401, code="invalid_api_key")

    def check_length(prompt: str, param: str) -> int:
        n = len(engine.tokenizer.encode(prompt))
        if n > info.context_length:
            raise RequestError(f"the prompt is {n} tokens, longer than this model's context of "
                               f"{info.context_length} tokens: shorten the {param}", param,
                               code="context_length_exceeded")
        return n

    def start(job: Job, request: Request) -> AsyncIterator[tuple[str, Any]]:
        """Queue the job now (a full queue raises 429 before any response starts); returns its events
        as they come. A client that goes away cancels the job."""
        events: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def emit(kind: str, payload: Any) -> None:  # called from the worker thread
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
                loop.call_soon_threadsafe(events.put_nowait, (kind, payload))

        async def watch_disconnect() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            job.cancelled.set()
            events.put_nowait(("gone", None))

        job.emit = emit
        try:
            engine.submit(job)
        except QueueFull:
            raise RequestError(f"the server is busy: {engine.max_queue} requests are already waiting; retry shortly",
                               status=429, type="rate_limit_error", code="queue_full") from None
        watcher = asyncio.create_task(watch_disconnect())

        async def drain() -> AsyncIterator[tuple[str, Any]]:
            try:
                while True:
                    kind, payload = await events.get()
                    if kind == "gone":
                        return
                    yield kind, payload
                    if kind != "piece":
                        return
            finally:
                job.cancelled.set()  # a no-op once done; stops the job if the client left mid-stream
                watcher.cancel()

        return drain()

    async def respond(job: Job, request: Request, reply: Reply, stream: bool, include_usage: bool):
        events = start(job, request)
        if not stream:
            pieces = []
            async for kind, payload in events:
                if kind == "piece":
                    pieces.append(payload)
                elif kind == "error":
                    raise RequestError(payload, status=500, type="server_error")
                else:
                    return reply.whole("".join(pieces), payload)
            return JSONResponse({})  # the client has gone: nobody reads this

        async def sse() -> AsyncIterator[str]:
            if reply.kind == "chat":
                yield _sse(reply.chunk("", role=True))
            async for kind, payload in events:
                if kind == "piece":
                    yield _sse(reply.chunk(payload))
                elif kind == "error":
                    yield _sse(RequestError(payload, status=500, type="server_error").body())
                else:
                    yield _sse(reply.chunk(None, payload["finish_reason"]))
                    if include_usage:
                        yield _sse(reply.usage_chunk(payload))
            yield _sse("[DONE]")

        return StreamingResponse(sse(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def read_request(request: Request) -> tuple[dict, Sampling, bool, bool]:
        """The body, its sampling fields, stream and stream_options.include_usage."""
        check_key(request)
        body = parse_json_object(await request.body())
        sampling = parse_sampling(body, default_max_tokens)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return body, sampling, bool(body.get("stream")), include_usage

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        from tokenizer_bpe import render_chat

        body, sampling, stream, include_usage = await read_request(request)
        messages = parse_messages(body)
        if not info.chat:
            raise RequestError("this model was trained without chat tokens (<|user|>, <|assistant|>): "
                               "use /v1/completions with a plain prompt", "messages")
        prompt = render_chat(messages, add_generation_prompt=True)
        reply = Reply("chat", info.name, check_length(prompt, "messages"))
        return await respond(Job(prompt, True, sampling), request, reply, stream, include_usage)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body, sampling, stream, include_usage = await read_request(request)
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise RequestError(f"prompt must be a string, got {json.dumps(prompt)[:100]}", "prompt")
        reply = Reply("text", info.name, check_length(prompt, "prompt"))
        return await respond(Job(prompt, False, sampling), request, reply, stream, include_usage)

    @app.get("/v1/models")
    async def models(request: Request):
        check_key(request)
        return {"object": "list", "data": [{"id": info.name, "object": "model", "created": created,
                                            "owned_by": "local", "parameters": info.parameters,
                                            "context_length": info.context_length, "chat": info.chat}]}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": info.name, **engine.status()}

    @app.get("/")
    async def page():
        return HTMLResponse(PAGE_FILE.read_text(encoding="utf-8"))

    return app


# ---------------------------------------------------------------------------- running it

def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; binding here (not in uvicorn) turns a busy port into one clear line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port "
                        f"(or --host)") from None


@contextlib.contextmanager
def serving(app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> Iterator[str]:
    """Serve `app` from a background thread (tests, benchmarks, notebooks); yields the base URL.
    The socket listens before the thread starts, so requests may be sent at once."""
    import uvicorn

    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="serve-http", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def require_server_packages() -> None:
    missing = [name for name in ("fastapi", "uvicorn") if not _importable(name)]
    if missing:
        raise UserError(f"serve.py needs {' and '.join(missing)}: {INSTALL_HINT}")


def _importable(name: str) -> bool:
    try:
        __import__(name)
        return True
    except ImportError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgParser(description="Serve a checkpoint with an OpenAI-compatible API and a chat page at /.",
                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint_dir", required=True, help="trainer's checkpoint dir (uses D/latest), one checkpoint "
                   "folder, or a HuggingFace GPT-2 folder from export_hf.py")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; anything but loopback needs "
                   "--api_key (or --insecure)")
    p.add_argument("--port", type=int, default=8000, help="0 = any free port")
    p.add_argument("--api_key", default=os.environ.get("SERVE_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $SERVE_API_KEY; none = no key)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without an API key")
    p.add_argument("--max_queue", type=int, default=64, help="requests that may wait; one more gets 429")
    p.add_argument("--max_batch", type=int, default=DEFAULT_MAX_BATCH,
                   help="waiting requests run together in one batch (1 = strictly one at a time)")
    p.add_argument("--max_tokens", type=int, default=DEFAULT_MAX_TOKENS, help="max_tokens of a request that sets none")
    p.add_argument("--model_name", default=None, help="the model id clients see (default: the folder's name)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--log_level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    for flag, value, low in (("--max_queue", args.max_queue, 1), ("--max_batch", args.max_batch, 1),
                             ("--max_tokens", args.max_tokens, 1), ("--port", args.port, 0)):
        if value < low:
            raise UserError(f"{flag} {value} must be >= {low}")
    if not 1 <= args.max_tokens <= MAX_TOKENS_LIMIT:
        raise UserError(f"--max_tokens {args.max_tokens} must be between 1 and {MAX_TOKENS_LIMIT}")
    if args.api_key == "":
        raise UserError("--api_key is empty (or SERVE_API_KEY is set to ''): give a key, or unset it for no key")
    if not args.api_key and not is_loopback(args.host) and not args.insecure:
        raise UserError(f"--host {args.host} would let anyone on the network use the model: set --api_key "
                        f"(or SERVE_API_KEY), or pass --insecure to serve without a key")
    require_server_packages()
    import uvicorn

    from generate import load_checkpoint

    folder = resolve_checkpoint_dir(args.checkpoint_dir)
    model, tokenizer = load_checkpoint(folder, args.device)
    name = args.model_name or Path(args.checkpoint_dir).resolve().name
    info = ModelInfo.of(name, model, tokenizer)
    sock = bind(args.host, args.port)
    engine = Engine(model, tokenizer, max_queue=args.max_queue, max_batch=args.max_batch)
    app = create_app(engine, info, args.api_key, args.max_tokens)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"loaded {folder}: {info.parameters / 1e6:.2f}M parameters, context {info.context_length}, "
          f"{'chat' if info.chat else 'plain text (no chat tokens)'}", file=sys.stderr)
    print(f"serving {name} on http://{host}:{sock.getsockname()[1]} (chat page at /, OpenAI API at /v1"
          f"{', API key required' if args.api_key else ''})", file=sys.stderr, flush=True)
    try:  # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal
        uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=5)).run(sockets=[sock])
    finally:
        engine.stop()
    return 0


if __name__ == "__main__":
    cli_main(main)
