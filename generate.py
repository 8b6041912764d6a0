"""Text generation: `generate` on token ids, `generate_text` / `stream_text` on strings, a CLI and
a chat REPL.

    python generate.py --checkpoint_dir checkpoints --prompt "What is the capital of France?"
    python generate.py --checkpoint_dir checkpoints --chat

`prefill` runs the prompts through the model into a KV cache; then each step `sample_next` draws one
token per `Row` and `decode_one` feeds them back. Prompts of different lengths are left-padded,
finished rows leave the batch, and a full window slides (`window_keep`), so generation never stops
for length. `TextStream` turns a row's ids into text pieces, cut at stop tokens and `stop` strings.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import torch
import torch.nn as nn

from common import ArgParser, UserError, cli_main, cuda_has_native_bf16, pick_device, resolve_checkpoint_dir
from cpu_decode import decode_layout
from import_hf import load_model
from model import KVCache, TransformerLanguageModel, unwrap_model
from tokenizer import CHAT_SPECIAL_TOKENS, EOT_TOKEN, REPLACEMENT_CHAR

# Every tokenizer of this repo lists <|endoftext|> as its first token, so its id is 0 whatever the
# vocabulary: the id-level code below can pad with it and stop on it without seeing a tokenizer.
EOT_ID = 0


# ---------------------------------------------------------------------------- token ids

def window_keep(block_size: int) -> int:
    """Tokens a row keeps when its context would pass block_size (then it is prefilled again)."""
    return max(1, block_size * 3 // 4)


class Sampling(NamedTuple):
    """sample_next's settings, in its argument order."""
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def check(self, max_new_tokens: int) -> None:
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise UserError(f"max_new_tokens={max_new_tokens!r} must be an integer >= 0")
        if self.temperature < 0:
            raise UserError(f"temperature={self.temperature} must be >= 0 (0 = greedy)")
        if self.top_k is not None and self.top_k < 0:
            raise UserError(f"top_k={self.top_k} must be >= 1 (or 0/None for no top-k filter)")
        if not 0.0 < self.top_p <= 1.0:
            raise UserError(f"top_p={self.top_p} must be in (0, 1] (1 = no nucleus filter)")
        if self.repetition_penalty <= 0:
            raise UserError(f"repetition_penalty={self.repetition_penalty} must be > 0 "
                            f"(1 = off, 1.1-1.3 is typical)")


def sample_next(logits: torch.Tensor, generators: Sequence[torch.Generator], temperature: float = 1.0,
                top_k: int | None = None, top_p: float = 1.0, repetition_penalty: float = 1.0,
                seen: torch.Tensor | None = None) -> list[int]:
    """One token per row of `logits` (N, V). Order: repetition penalty (CTRL: positive logits of
    `seen` tokens divided, negative multiplied), temperature (0 = argmax), top-k (ties at the k-th
    value kept), top-p (the smallest prefix of the sorted distribution whose mass reaches top_p).
    Row i draws from generators[i] only."""
    logits = logits.float()
    if repetition_penalty != 1.0 and seen is not None:
        penalised = torch.where(logits > 0, logits / repetition_penalty, logits * repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if temperature == 0:
        return logits.argmax(dim=-1).tolist()
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = (sorted_p.cumsum(dim=-1) - sorted_p) >= top_p  # mass before this token already enough
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
    return [int(torch.multinomial(probs[i], 1, generator=g)) for i, g in enumerate(generators)]


@dataclass
class Row:
    """One sequence of a batch. Row b samples from its own generator seeded seed + b, so a batch
    row gives exactly what the same prompt alone gives with that seed."""
    index: int                        # place in the batch
    ids: list[int]                    # prompt, then the new ids
    rng: torch.Generator
    start: int = 0                    # the model sees ids[start:] (the sliding window)
    seen: torch.Tensor | None = None  # (V,) bool: ids already in the row (repetition penalty only)
    done: bool = False                # set after a stop id, or by the caller (a stop string)

    def slide(self, block_size: int) -> bool:
        """When the window has grown past block_size, keep its last window_keep ids; True if moved."""
        if len(self.ids) - self.start <= block_size:
            return False
        self.start = len(self.ids) - window_keep(block_size)
        return True


def _autocast(device: torch.device) -> tuple[contextlib.AbstractContextManager, torch.dtype | None]:
    # CUDA: bf16 where the GPU has it natively, else fp16. A CPU runs in the model's dtype (fp32):
    # decoding is memory-bound there and autocast would re-cast every weight at every step.
    if device.type == "cuda":
        dtype = torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16
        return torch.autocast("cuda", dtype=dtype), dtype
    return contextlib.nullcontext(), None


@contextlib.contextmanager
def _decoding(model: nn.Module) -> Iterator[None]:
    """Eval mode (the previous mode restored afterwards) and cpu_decode's weight layout: on the CPU,
    1-3 rows are multiplied by (in, out) copies of the weights, 1.2-1.7x faster."""
    was_training = model.training
    try:
        with decode_layout(model.eval()):
            yield
    finally:
        model.train(was_training)


def prefill(model: TransformerLanguageModel, rows: Sequence[Row], room: int, cache_dtype: torch.dtype,
            use_cache: bool = True) -> tuple[torch.Tensor, KVCache | None]:
    """Every row's window through the model, left-padded with <|endoftext|> to the longest, into a
    new KV cache with `room` slots to spare; returns the last position's logits (N, V) and the
    cache. use_cache=False keeps no cache (a ragged batch still uses one for its padding mask)."""
    windows = [r.ids[r.start:] for r in rows]
    W = max(map(len, windows))
    pads = [W - len(w) for w in windows]
    idx = torch.tensor([[EOT_ID] * p + w for p, w in zip(pads, windows)],
                       device=next(model.parameters()).device)  # (N, W)
    if not use_cache and not any(pads):
        return model(idx, last_only=True)[0][:, -1], None
    max_len = min(model.config.block_size, W + (room if use_cache else 0))
    cache = KVCache(model.config, len(rows), device=idx.device, dtype=cache_dtype, max_len=max_len,
                    pad_lens=pads if any(pads) else None)
    logits, _ = model(idx, kv_cache=cache, last_only=True)
    return logits[:, -1], cache if use_cache else None


def decode_one(model: TransformerLanguageModel, rows: Sequence[Row], cache: KVCache) -> torch.Tensor:
    """Each row's newest id through the KV cache; returns the next logits (N, V)."""
    idx = torch.tensor([[r.ids[-1]] for r in rows], device=cache.kv.device)  # (N, 1)
    logits, _ = model(idx, kv_cache=cache, last_only=True)
    return logits[:, -1]


def generate_steps(model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int, sampling: Sampling,
                   stop_ids: set[int], seed: int | None = None, *, use_cache: bool = True,
                   vocab_limit: int | None = None) -> Iterator[list[Row]]:
    """Yields, once per step, the rows that got a new id (their ids[-1]). A row stops after an id
    in stop_ids, or when the caller sets row.done between steps. vocab_limit: sample only ids below
    it (a tokenizer smaller than the model's vocabulary). seed=None draws one from torch's global
    RNG, so torch.manual_seed before the call reproduces the run."""
    m = unwrap_model(model)
    cfg, device = m.config, next(m.parameters()).device
    amp, amp_dtype = _autocast(device)
    cache_dtype = amp_dtype or next(m.parameters()).dtype
    limit = min(cfg.vocab_size, vocab_limit or cfg.vocab_size)
    prompts = [[int(t) for t in p] or [EOT_ID] for p in prompts]  # an empty prompt starts from <|endoftext|>
    bad = next((t for p in prompts for t in p if not 0 <= t < cfg.vocab_size), None)
    if bad is not None:
        raise ValueError(f"token id {bad} is outside the model's vocabulary of {cfg.vocab_size}: "
                         f"the tokenizer does not match this model")
    if max_new_tokens == 0 or not prompts:
        return
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())
    rows = [Row(b, p, torch.Generator(device=device).manual_seed((seed + b) % 2**63))
            for b, p in enumerate(prompts)]
    if sampling.repetition_penalty != 1.0:
        with torch.inference_mode():
            for r in rows:
                r.seen = torch.zeros(limit, dtype=torch.bool, device=device)
                r.seen[torch.tensor([t for t in r.ids if t < limit], dtype=torch.long, device=device)] = True
    with _decoding(m):
        active, cache = [], None
        for step in range(max_new_tokens):
            still = [r for r in rows if not r.done]
            if not still:
                return
            with torch.inference_mode():
                if cache is not None and len(still) < len(active):  # finished rows leave the batch
                    cache.select_rows(torch.tensor([i for i, r in enumerate(active) if not r.done], device=device))
                active = still
                moved = [r.slide(cfg.block_size) for r in active]  # a list, not any(): every row slides
                with amp:
                    if cache is None or any(moved) or cache.pos + 1 > cache.max_len:  # none, slid or full
                        logits, cache = prefill(m, active, max_new_tokens - step - 1, cache_dtype, use_cache)
                    else:
                        logits = decode_one(m, active, cache)
                seen = torch.stack([r.seen for r in active]) if active[0].seen is not None else None  # (N, V)
                tokens = sample_next(logits[:, :limit], [r.rng for r in active], *sampling, seen=seen)
                for r, t in zip(active, tokens):
                    r.ids.append(t)
                    r.done = t in stop_ids
                    if r.seen is not None:
                        r.seen[t] = True
            yield active  # the caller may set row.done here (a stop string)


def generate(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float = 1.0, repetition_penalty: float = 1.0,
             eos_ids: Iterable[int] | int | None = None, seed: int | None = None, *,
             use_cache: bool = True) -> torch.Tensor:
    """Sample up to max_new_tokens after each row of idx (B, T) (or (T,)); returns the prompt ids
    followed by the new ones, as nanoGPT does. eos_ids: ids that end a row (kept in the output;
    the row is then padded with that id); None = (<|endoftext|> = 0,); () never stops early.
    The result has T + n columns, n = the steps taken (< max_new_tokens only when every row
    stopped). use_cache=False recomputes the whole window every step (a baseline)."""
    sampling = Sampling(temperature, top_k, top_p, repetition_penalty)
    sampling.check(max_new_tokens)
    prompts = idx.view(1, -1) if idx.dim() == 1 else idx
    if prompts.dim() != 2:
        raise ValueError(f"idx must be (B, T) or (T,), got shape {tuple(idx.shape)}")
    eos = {EOT_ID} if eos_ids is None else {eos_ids} if isinstance(eos_ids, int) else set(map(int, eos_ids))
    new: list[list[int]] = [[] for _ in range(prompts.size(0))]
    for rows in generate_steps(model, prompts.tolist(), max_new_tokens, sampling, eos, seed, use_cache=use_cache):
        for r in rows:
            new[r.index].append(r.ids[-1])
    n = max(map(len, new), default=0)
    new = [r + r[-1:] * (n - len(r)) for r in new]  # a row that stopped early repeats its stop token
    out = torch.cat([prompts.to("cpu", torch.long), torch.tensor(new, dtype=torch.long).view(len(new), n)], dim=1)
    out = out.to(idx.device)
    return out[0] if idx.dim() == 1 else out


# ---------------------------------------------------------------------------- text

class TextStream:
    """One row's new ids -> text pieces that join to exactly its final `completion`. It holds back
    an incomplete UTF-8 character (decoded as a trailing U+FFFD), any tail that could start a stop
    string, and in chat mode a trailing newline (see `finish`)."""

    def __init__(self, tokenizer, stops: Sequence[str], strip_newline: bool) -> None:
        self.tokenizer, self.stops, self.strip_newline = tokenizer, [s for s in stops if s], strip_newline
        self.text = ""  # decoded so far (complete characters only until finish)
        self.emitted = 0  # text[:emitted] has been released
        self.end: int | None = None  # the completion is text[:end], once known
        self._ids: list[int] = []  # the ids since the last clean character boundary, and their text
        self._ids_text = ""

    @property
    def done(self) -> bool:
        return self.end is not None

    @property
    def completion(self) -> str:
        return self.text[:self.emitted if self.end is None else self.end]

    def _decode(self, final: bool) -> None:
        full = self.tokenizer.decode(self._ids)
        stable = full if final else full.rstrip(REPLACEMENT_CHAR)
        if len(stable) > len(self._ids_text):
            self.text += stable[len(self._ids_text):]
            self._ids_text = stable
        if stable == full and len(self._ids) >= 16:  # a clean boundary: restart the buffer
            self._ids, self._ids_text = [], ""

    def _release(self, upto: int) -> str:
        piece = self.text[self.emitted:upto]
        self.emitted = max(self.emitted, upto)
        return piece

    def _find_stop(self) -> int | None:
        return min((i for s in self.stops if (i := self.text.find(s, self.emitted)) != -1), default=None)

    def push(self, token_id: int) -> str:
        """Add one generated id; return the text that became final (may be empty)."""
        if self.done:
            return ""
        self._ids.append(token_id)
        self._decode(final=False)
        if (stop_at := self._find_stop()) is not None:
            self.end = stop_at
            return self._release(stop_at)
        hold = int(self.strip_newline and self.text.endswith("\n"))
        for s in self.stops:  # the longest tail that could start a stop string
            for k in range(min(len(s) - 1, len(self.text) - self.emitted), hold, -1):
                if self.text.endswith(s[:k]):
                    hold = k
                    break
        return self._release(len(self.text) - hold)

    def finish(self, at_stop_token: bool) -> str:
        """Close the row (a stop token, or out of steps); return the rest of the completion."""
        if self.done:
            return ""
        self._decode(final=True)
        end = self._find_stop()
        if end is None:  # the chat format ends each message with "\n" before the next <|role|>:
            at_separator = at_stop_token and self.strip_newline and self.text.endswith("\n")
            end = len(self.text) - at_separator  # that separator is not part of the reply
        self.end = end
        return self._release(end)


def has_chat_tokens(tokenizer) -> bool:
    return tokenizer.token_to_id("<|assistant|>") is not None and tokenizer.token_to_id("<|user|>") is not None


def _stop_token_ids(tokenizer, chat: bool) -> set[int]:
    names = [EOT_TOKEN]
    if chat:  # a reply ends at the next special token of any kind
        names += CHAT_SPECIAL_TOKENS + list(getattr(tokenizer, "special_tokens", None) or [])
    ids = {tokenizer.token_to_id(t) for t in names} | {getattr(tokenizer, "eot_token_id", None)}
    return ids - {None}


def _render_prompt(prompt: str, chat: bool) -> str:
    if chat and not any(t in prompt for t in CHAT_SPECIAL_TOKENS):  # a bare prompt: one user turn
        from tokenizer_bpe import render_chat

        return render_chat([{"role": "user", "content": prompt}], add_generation_prompt=True)
    return prompt


def _start_text(model: nn.Module, tokenizer, prompts: list[str], max_new_tokens: int, sampling: Sampling,
                stop: str | Sequence[str] | None, seed: int | None, chat: bool | None,
                device: str | torch.device | None, keep_going: Callable[[int], bool] | None = None,
                ) -> tuple[list[str], list[TextStream], Iterator[tuple[int, str]]]:
    """Checks the arguments; returns the prompts as fed to the model, one TextStream per prompt
    (their completions are final once the pieces are consumed) and the (row, piece) pairs, which
    run the model."""
    sampling.check(max_new_tokens)
    if not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompt must be a str or a list of str")
    if device is not None:
        model.to(device)
    if chat is None:
        chat = has_chat_tokens(tokenizer)
    elif chat and not has_chat_tokens(tokenizer):
        raise UserError("chat=True needs a tokenizer with <|user|> and <|assistant|> tokens "
                        "(train it on chat data); use chat=False for plain text")
    rendered = [_render_prompt(p, chat) for p in prompts]
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    texts = [TextStream(tokenizer, stops, strip_newline=chat) for _ in prompts]
    pieces = _text_pieces(model, tokenizer, rendered, texts, _stop_token_ids(tokenizer, chat), max_new_tokens,
                          sampling, seed, keep_going)
    return rendered, texts, pieces


def _text_pieces(model: nn.Module, tokenizer, prompts: list[str], texts: list[TextStream], stop_ids: set[int],
                 max_new_tokens: int, sampling: Sampling, seed: int | None,
                 keep_going: Callable[[int], bool] | None) -> Iterator[tuple[int, str]]:
    encode_batch = getattr(tokenizer, "encode_batch", None)
    ids = encode_batch(prompts) if encode_batch else [tokenizer.encode(p) for p in prompts]
    for rows in generate_steps(model, ids, max_new_tokens, sampling, stop_ids, seed,
                               vocab_limit=tokenizer.vocab_size):
        for row in rows:
            text, token = texts[row.index], row.ids[-1]
            piece = text.finish(at_stop_token=True) if token in stop_ids else text.push(token)
            # a stop string ends the row too, and so does a caller that no longer wants it
            row.done = text.done or (keep_going is not None and not keep_going(row.index))
            if piece:
                yield row.index, piece
    for i, text in enumerate(texts):  # the rows still open ran out of steps
        if piece := text.finish(at_stop_token=False):
            yield i, piece


def generate_text(model: nn.Module, tokenizer, prompt: str | Sequence[str], max_new_tokens: int = 100,
                  temperature: float = 0.8, top_k: int | None = None, top_p: float = 1.0,
                  repetition_penalty: float = 1.0, stop: str | Sequence[str] | None = None,
                  seed: int | None = None, chat: bool | None = None, return_prompt: bool = False,
                  stream: Callable[[str], None] | None = None,
                  device: str | torch.device | None = None) -> str | list[str]:
    """Complete `prompt` (a str, or a list of str run as one left-padded batch; row b uses seed + b).

    Returns the completion: the new tokens decoded up to, not including, the first stop token
    (<|endoftext|>; in chat mode any special token) or `stop` string (return_prompt=True: the prompt
    as fed to the model, chat wrapping included, then the completion). temperature=0 is greedy.
    chat=None: chat mode when the tokenizer has <|assistant|>; a bare prompt is then wrapped as
    `<|user|>{prompt}\\n<|assistant|>` and only the reply comes back. stream: called with each text
    piece as it is produced (single prompt only; stream_batch streams a batch). device: moves the
    model there first."""
    single = isinstance(prompt, str)
    prompts = [prompt] if single else list(prompt)
    if stream is not None and not single:
        raise ValueError("stream= works with a single prompt; use stream_batch for a batch "
                         "(row b of a batch with seed s equals a single call with seed s + b)")
    rendered, texts, pieces = _start_text(model, tokenizer, prompts, max_new_tokens,
                                          Sampling(temperature, top_k, top_p, repetition_penalty),
                                          stop, seed, chat, device)
    for _, piece in pieces:
        if stream is not None:
            stream(piece)
    out = [(p if return_prompt else "") + t.completion for p, t in zip(rendered, texts)]
    return out[0] if single else out


def stream_text(model: nn.Module, tokenizer, prompt: str, max_new_tokens: int = 100, temperature: float = 0.8,
                top_k: int | None = None, top_p: float = 1.0, repetition_penalty: float = 1.0,
                stop: str | Sequence[str] | None = None, seed: int | None = None, chat: bool | None = None,
                device: str | torch.device | None = None) -> Iterator[str]:
    """generate_text as an iterator of text pieces; "".join(pieces) == generate_text(...). Arguments
    are checked here, at the call; the model runs as the iterator is consumed."""
    pieces = stream_batch(model, tokenizer, [prompt], max_new_tokens, temperature, top_k, top_p,
                          repetition_penalty, stop, seed, chat, device)
    return (piece for _, piece in pieces)


def stream_batch(model: nn.Module, tokenizer, prompts: Sequence[str], max_new_tokens: int = 100,
                 temperature: float = 0.8, top_k: int | None = None, top_p: float = 1.0,
                 repetition_penalty: float = 1.0, stop: str | Sequence[str] | None = None, seed: int | None = None,
                 chat: bool | None = None, device: str | torch.device | None = None,
                 keep_going: Callable[[int], bool] | None = None) -> Iterator[tuple[int, str]]:
    """generate_text on a list of prompts as (row, piece) pairs, as they are produced: row b's
    pieces join to generate_text(prompts, ...)[b]. A row for which keep_going(row) turns False
    leaves the batch at the next step (serve.py: its client has gone)."""
    return _start_text(model, tokenizer, list(prompts), max_new_tokens,
                       Sampling(temperature, top_k, top_p, repetition_penalty), stop, seed, chat, device,
                       keep_going)[2]


def load_checkpoint(checkpoint_dir: str | Path, device: str | torch.device | None = None):
    """(model, tokenizer) from a checkpoint folder: D/latest when it exists, else D with config.json.
    The model is in eval mode on `device` (default: cuda > mps > cpu)."""
    from tokenizer import load_tokenizer

    folder = resolve_checkpoint_dir(checkpoint_dir)
    tok_path = folder / "tokenizer.json"
    if not tok_path.is_file():
        raise UserError(f"{tok_path} not found: a checkpoint folder must hold the tokenizer it was trained with "
                        f"(copy the tokenizer JSON there as tokenizer.json)")
    tokenizer = load_tokenizer(tok_path)
    dev = pick_device(None if device is None else str(device))
    model = load_model(folder)  # ours or HuggingFace GPT-2; bad JSON or mismatched weights: one-line UserError
    if tokenizer.vocab_size > model.config.vocab_size:
        raise UserError(f"{tok_path} has {tokenizer.vocab_size} tokens but the model in {folder} has "
                        f"vocab_size {model.config.vocab_size}: the tokenizer is not the one this model was "
                        f"trained with; put the training tokenizer in {tok_path}")
    return model.to(dev).eval(), tokenizer


# ---------------------------------------------------------------------------- CLI

def _fit_history(tokenizer, messages: list[dict], budget: int) -> tuple[list[dict], str]:
    """Drop the oldest turns (a user message and the reply after it) until the rendered prompt
    has at most `budget` tokens; the newest user message always stays."""
    from tokenizer_bpe import render_chat

    while True:
        text = render_chat(messages, add_generation_prompt=True)
        if len(messages) <= 1 or len(tokenizer.encode(text)) <= budget:
            return messages, text
        drop = 2 if messages[1]["role"] == "assistant" else 1
        messages = messages[drop:]


def chat_repl(model: nn.Module, tokenizer, args: argparse.Namespace, stdin=None, stdout=None, stderr=None) -> int:
    """Read user lines from stdin, stream the replies to stdout; /reset forgets, /quit (or EOF) exits."""
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    if not has_chat_tokens(tokenizer):
        raise UserError("--chat needs a tokenizer with <|user|> and <|assistant|> tokens (a model trained on "
                        "chat data); for plain text use --prompt")
    block = unwrap_model(model).config.block_size
    budget = max(block // 4, block - args.max_new_tokens)
    history: list[dict] = []
    print("chat: type a message; /reset starts over, /quit (or Ctrl-D) exits", file=stderr)
    turn = 0
    while True:
        print("you> ", end="", file=stderr, flush=True)
        line = stdin.readline()
        if not line:
            print(file=stderr)
            return 0
        message = line.rstrip("\r\n")
        if message.strip() == "/quit":
            return 0
        if message.strip() == "/reset":
            history = []
            print("(conversation reset)", file=stderr)
            continue
        if not message.strip():
            continue
        kept, prompt = _fit_history(tokenizer, history + [{"role": "user", "content": message}], budget)
        if len(kept) < len(history) + 1:
            print(f"(dropped {len(history) + 1 - len(kept)} oldest messages to fit block_size {block})",
                  file=stderr)
        print("assistant> ", end="", file=stderr, flush=True)
        reply = generate_text(model, tokenizer, prompt, max_new_tokens=args.max_new_tokens,
                              temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                              repetition_penalty=args.repetition_penalty, stop=args.stop,
                              seed=None if args.seed is None else args.seed + turn, chat=True,
                              stream=lambda piece: print(piece, end="", file=stdout, flush=True))
        print(file=stdout, flush=True)
        history = kept + [{"role": "assistant", "content": reply}]
        turn += 1


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgParser(description="Generate text from a checkpoint (only generated text goes to stdout).",
                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint_dir", required=True,
                   help="trainer's checkpoint dir (uses D/latest) or one checkpoint folder")
    p.add_argument("--prompt", default="", help="text to complete; empty = unconditional samples")
    p.add_argument("--num_samples", type=int, default=1)
    p.add_argument("--max_new_tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top_k", type=int, default=None)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--repetition_penalty", type=float, default=1.0)
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable); cut before it")
    p.add_argument("--seed", type=int, default=None, help="sample i uses seed + i")
    p.add_argument("--stream", action="store_true", help="print text as it is generated")
    p.add_argument("--chat", action="store_true", help="interactive chat on stdin (/reset, /quit)")
    p.add_argument("--no_chat_template", action="store_true", help="never wrap the prompt as a user turn")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    if args.num_samples < 1:
        raise UserError(f"--num_samples {args.num_samples} must be >= 1")
    Sampling(args.temperature, args.top_k, args.top_p, args.repetition_penalty).check(args.max_new_tokens)
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(errors="replace")  # a non-UTF-8 console never crashes on a character
    folder = resolve_checkpoint_dir(args.checkpoint_dir)
    model, tokenizer = load_checkpoint(folder, args.device)
    cfg = model.config
    print(f"loaded {folder}: {model.num_parameters() / 1e6:.2f}M parameters, vocab {cfg.vocab_size}, "
          f"block_size {cfg.block_size}, on {next(model.parameters()).device}", file=sys.stderr)
    if args.chat:
        return chat_repl(model, tokenizer, args)
    chat = None if args.prompt and not args.no_chat_template else False
    kwargs = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                  top_p=args.top_p, repetition_penalty=args.repetition_penalty, stop=args.stop, chat=chat)
    n = args.num_samples
    if args.stream:  # stream= takes one prompt: one call per sample, sample i with seed + i as in a batch
        for i in range(n):
            if n > 1:
                print(f"--- sample {i + 1}/{n}", file=sys.stderr, flush=True)
            generate_text(model, tokenizer, args.prompt, seed=None if args.seed is None else args.seed + i,
                          stream=lambda piece: print(piece, end="", flush=True), **kwargs)
            print(flush=True)
        return 0
    for i, text in enumerate(generate_text(model, tokenizer, [args.prompt] * n, seed=args.seed, **kwargs)):
        if n > 1:
            print(f"--- sample {i + 1}/{n}", file=sys.stderr, flush=True)
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    cli_main(main)
