"""Text generation: `generate` on token ids (nanoGPT-style), `generate_text` / `stream_text` / `stream_batch` on
strings, a chat REPL and the CLI. Each step samples one id per row, then feeds it back through a KV cache:
    python generate.py --checkpoint_dir checkpoints --prompt "What is the capital of France?"   # or --chat"""
from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
import torch.nn as nn

from common import ArgParser, UserError, cli_main, cuda_has_native_bf16, pick_device, resolve_checkpoint_dir
from cpu_decode import decode_layout
from import_hf import load_model
from model import KVCache, TransformerLanguageModel, unwrap_model
from tokenizer import CHAT_SPECIAL_TOKENS, EOT_TOKEN, REPLACEMENT_CHAR, load_tokenizer

# Every tokenizer of this repo lists <|endoftext|> as its first token, so its id is 0 whatever the
# vocabulary: the id-level code below can pad with it and stop on it without seeing a tokenizer.
EOT_ID = 0
SAMPLING_FLAGS = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "stop")  # CLI -> text


# ---------------------------------------------------------------------------- token ids

def window_keep(block_size: int) -> int:
    """Tokens a row keeps when its context would pass block_size (then it is prefilled again)."""
    return max(1, block_size * 3 // 4)


@dataclass(frozen=True)
class Sampling:
    """How many ids to sample, and how; checked when made, so bad settings fail before the model runs."""
    max_new_tokens: int
    temperature: float = 1.0         # 0 = greedy
    top_k: int | None = None         # 0/None = no top-k filter
    top_p: float = 1.0               # 1 = no nucleus filter
    repetition_penalty: float = 1.0  # 1 = off

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            raise UserError(f"max_new_tokens={self.max_new_tokens!r} must be an integer >= 0")
        if self.temperature < 0:
            raise UserError(f"temperature={self.temperature} must be >= 0 (0 = greedy)")
        if self.top_k is not None and self.top_k < 0:
            raise UserError(f"top_k={self.top_k} must be >= 1 (or 0/None for no top-k filter)")
        if not 0.0 < self.top_p <= 1.0:
            raise UserError(f"top_p={self.top_p} must be in (0, 1] (1 = no nucleus filter)")
        if self.repetition_penalty <= 0:
            raise UserError(f"repetition_penalty={self.repetition_penalty} must be > 0 (1 = off, 1.1-1.3 is typical)")


def sample_next(logits: torch.Tensor, generators: Sequence[torch.Generator], sampling: Sampling,
                seen: torch.Tensor | None = None) -> list[int]:
    """One token per row of `logits` (N, V), row i drawn from generators[i]; `seen` (N, V) marks each row's ids."""
    logits, penalty = logits.float(), sampling.repetition_penalty
    if penalty != 1.0 and seen is not None:  # CTRL: seen positive logits divided, negative multiplied
        penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
        logits = torch.where(seen, penalised, logits)
    if sampling.temperature == 0:
        return logits.argmax(dim=-1).tolist()
    logits = logits / sampling.temperature
    if sampling.top_k:  # ties at the k-th value are kept
        kth = torch.topk(logits, min(sampling.top_k, logits.size(-1)), dim=-1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)  # (N, V)
    if sampling.top_p < 1.0:  # nucleus: the smallest prefix of the sorted distribution whose mass reaches top_p
        sorted_p, order = probs.sort(dim=-1, descending=True)  # (N, V) each
        drop = (sorted_p.cumsum(dim=-1) - sorted_p) >= sampling.top_p  # mass before this token already enough
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
    return [int(torch.multinomial(probs[i], 1, generator=g)) for i, g in enumerate(generators)]


@dataclass
class Row:
    """One sequence of a batch."""
    index: int            # place in the batch
    ids: list[int]        # prompt, then the new ids
    rng: torch.Generator  # seeded seed + b: row b of a batch gives what its prompt alone gives with that seed
    start: int = 0      # the model sees ids[start:] (the sliding window)
    done: bool = False  # set after a stop id, or by the caller (a stop string)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """CUDA: bf16 where the GPU has it natively, else fp16. None: no autocast, the model's dtype."""
    if device.type != "cuda":  # a CPU decodes memory-bound: autocast would re-cast every weight at every step
        return None
    return torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16


def prefill(model: TransformerLanguageModel, rows: Sequence[Row], room: int) -> tuple[torch.Tensor, KVCache]:
    """Every row's window, left-padded with <|endoftext|>, into a new KV cache with `room` slots to spare."""
    windows = [r.ids[r.start:] for r in rows]
    W = max(map(len, windows))
    pads = [W - len(w) for w in windows]
    param = next(model.parameters())
    idx = torch.tensor([[EOT_ID] * p + w for p, w in zip(pads, windows)], device=param.device)  # (N, W)
    cache = KVCache(model.config, len(rows), device=param.device, dtype=autocast_dtype(param.device) or param.dtype,
                    max_len=min(model.config.block_size, W + room), pad_lens=pads if any(pads) else None)
    logits, _ = model(idx, kv_cache=cache, last_only=True)  # (N, 1, V)
    return logits[:, -1], cache  # the last logits (N, V); the cache masks the padding out


def generate_steps(model: nn.Module, prompts: Sequence[Sequence[int]], sampling: Sampling, stop_ids: set[int],
                   seed: int | None = None, *, use_cache: bool = True,
                   vocab_limit: int | None = None) -> Iterator[list[Row]]:
    """Yields, once per step, the rows that got a new id (ids[-1]); a row stops at a stop id or when row.done is set."""
    m = unwrap_model(model)
    cfg, device = m.config, next(m.parameters()).device
    amp = torch.autocast("cuda", dtype=autocast_dtype(device)) if device.type == "cuda" else contextlib.nullcontext()
    limit = min(cfg.vocab_size, vocab_limit or cfg.vocab_size)  # sample only ids the tokenizer (maybe smaller) has
    prompts = [[int(t) for t in p] or [EOT_ID] for p in prompts]  # an empty prompt starts from <|endoftext|>
    bad = next((t for p in prompts for t in p if not 0 <= t < cfg.vocab_size), None)
    if bad is not None:
        raise ValueError(f"token id {bad} is outside the model's vocabulary of {cfg.vocab_size}: "
                         f"the tokenizer does not match this model")
    if sampling.max_new_tokens == 0 or not prompts:
        return
    if seed is None:  # drawn from torch's global RNG, so torch.manual_seed before the call reproduces the run
        seed = int(torch.randint(0, 2**62, ()).item())
    rows = [Row(b, p, torch.Generator(device=device).manual_seed((seed + b) % 2**63)) for b, p in enumerate(prompts)]
    seen = None  # (N, limit) bool: the ids each row holds, for the repetition penalty
    if sampling.repetition_penalty != 1.0:
        seen = torch.zeros(len(rows), limit, dtype=torch.bool, device=device)
        for i, r in enumerate(rows):
            seen[i, r.ids] = True  # the prompt's ids once; each step then adds only the new ids
    cache, was_training = None, m.training
    try:  # eval mode; on the CPU, cpu_decode's (in, out) weight copies make 1-3 row steps 1.2-1.7x faster
        with decode_layout(m.eval()):
            for step in range(sampling.max_new_tokens):
                with torch.inference_mode(), amp:
                    if any(r.done for r in rows):  # finished rows leave the batch, with their cache and seen rows
                        keep = torch.tensor([i for i, r in enumerate(rows) if not r.done], device=device)
                        rows = [r for r in rows if not r.done]
                        if not rows:
                            return
                        cache.select_rows(keep)
                        seen = None if seen is None else seen[keep]
                    slid = [r for r in rows if len(r.ids) - r.start > cfg.block_size]
                    for r in slid:  # a window past block_size keeps its last window_keep ids
                        r.start = len(r.ids) - window_keep(cfg.block_size)
                    if cache is None or slid or cache.pos == cache.max_len:  # none yet, a window slid, or full
                        # use_cache=False leaves no room, so every step runs the whole window again
                        logits, cache = prefill(m, rows, room=sampling.max_new_tokens - step - 1 if use_cache else 0)
                    else:  # only each row's newest id goes through the model; the cache holds the rest
                        idx = torch.tensor([[r.ids[-1]] for r in rows], device=device)  # (N, 1)
                        logits = m(idx, kv_cache=cache, last_only=True)[0][:, -1]  # (N, V)
                    tokens = sample_next(logits[:, :limit], [r.rng for r in rows], sampling, seen)
                    if seen is not None:  # each row's new id (below limit: sampled there)
                        seen[torch.arange(len(rows), device=device), torch.tensor(tokens, device=device)] = True
                    for r, t in zip(rows, tokens):
                        r.ids.append(t)
                        r.done = t in stop_ids
                yield rows  # outside inference mode; the caller may set row.done here (a stop string)
    finally:
        m.train(was_training)


def generate(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float = 1.0, repetition_penalty: float = 1.0,
             eos_ids: Iterable[int] | int | None = None, seed: int | None = None, *,
             use_cache: bool = True) -> torch.Tensor:
    """Sample up to max_new_tokens ids after each row of idx (B, T) or (T,); returns prompt + new ids, as nanoGPT.
    eos_ids (None: <|endoftext|>; (): none) end a row, then padded with that id. use_cache=False: recompute all."""
    sampling = Sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
    prompts = idx.view(1, -1) if idx.dim() == 1 else idx  # (B, T)
    if prompts.dim() != 2:
        raise ValueError(f"idx must be (B, T) or (T,), got shape {tuple(idx.shape)}")
    eos = {EOT_ID} if eos_ids is None else {eos_ids} if isinstance(eos_ids, int) else set(map(int, eos_ids))
    new: list[list[int]] = [[] for _ in range(prompts.size(0))]
    for rows in generate_steps(model, prompts.tolist(), sampling, eos, seed, use_cache=use_cache):
        for r in rows:
            new[r.index].append(r.ids[-1])
    n = max(map(len, new), default=0)
    new = [r + r[-1:] * (n - len(r)) for r in new]  # a row that stopped early repeats its stop token
    out = torch.cat([prompts.cpu().long(), torch.tensor(new, dtype=torch.long).view(len(new), n)], dim=1)  # (B, T+n)
    return (out[0] if idx.dim() == 1 else out).to(idx.device)


# ---------------------------------------------------------------------------- text

@dataclass
class TextStream:
    """One row's new ids -> text pieces that join to exactly its `completion`, holding back what may still
    change: an incomplete UTF-8 character (decoded as a trailing U+FFFD) and a tail that could start a stop."""
    tokenizer: Any
    stops: Sequence[str]
    strip_newline: bool   # chat: a message ends with "\n" before the next <|role|>, not part of the reply
    completion: str = ""  # the text released so far, final once done
    done: bool = False    # a stop string was found, or finish() was called
    pending: str = ""     # decoded, not released yet
    ids: list[int] = field(default_factory=list)  # the ids since the last clean character boundary ...
    ids_text: str = ""                             # ... and their text, as far as moved to pending

    def push(self, token_id: int) -> str:
        """Add one generated id; return the text that became final (may be empty)."""
        self.ids.append(token_id)
        return "" if self.done else self._advance(final=False)

    def finish(self, at_stop_token: bool) -> str:
        """Close the row (a stop token, or out of steps); return the rest of the completion."""
        return "" if self.done else self._advance(final=True, at_stop_token=at_stop_token)

    def _advance(self, final: bool, at_stop_token: bool = False) -> str:
        full = self.tokenizer.decode(self.ids)
        stable = full if final else full.rstrip(REPLACEMENT_CHAR)  # an incomplete character waits
        if len(stable) > len(self.ids_text):
            self.pending, self.ids_text = self.pending + stable[len(self.ids_text):], stable
        if stable == full and len(self.ids) >= 16:  # a clean boundary: decode only the ids after it (O(1) per id)
            self.ids, self.ids_text = [], ""
        text = self.pending
        stop_at = [i for s in self.stops if (i := text.find(s)) != -1]
        newline = self.strip_newline and text.endswith("\n")  # chat: the "\n" before the next <|role|>
        self.done = bool(stop_at) or final
        if stop_at:  # cut before the first stop string; what follows it is never released
            cut = min(stop_at)
        elif final:
            cut = len(text) - int(newline and at_stop_token)
        else:  # hold back a trailing "\n" (chat) and the longest tail that could start a stop string
            stop_starts = [k for s in self.stops for k in range(1, len(s)) if text.endswith(s[:k])]
            cut = len(text) - max([int(newline)] + stop_starts)
        self.completion, self.pending = self.completion + text[:cut], text[cut:]
        return text[:cut]


def has_chat_tokens(tokenizer) -> bool:
    return tokenizer.token_to_id("<|assistant|>") is not None and tokenizer.token_to_id("<|user|>") is not None


def _chat_prompts(tokenizer, prompts: Sequence[str], chat: bool | None) -> tuple[bool, list[str]]:
    """Chat mode (None: when the tokenizer has chat tokens) and the prompts as fed to the model."""
    if not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompt must be a str or a list of str")
    if chat is None:
        chat = has_chat_tokens(tokenizer)
    elif chat and not has_chat_tokens(tokenizer):
        raise UserError("chat=True needs a tokenizer with <|user|> and <|assistant|> tokens "
                        "(train it on chat data); use chat=False for plain text")
    if not chat:
        return False, list(prompts)
    from tokenizer_bpe import render_chat

    return True, [p if any(t in p for t in CHAT_SPECIAL_TOKENS)  # a bare prompt becomes one user turn
                  else render_chat([{"role": "user", "content": p}], add_generation_prompt=True) for p in prompts]


def generate_text(model: nn.Module, tokenizer, prompt: str | Sequence[str], max_new_tokens: int = 100,
                  temperature: float = 0.8, top_k: int | None = None, top_p: float = 1.0,
                  repetition_penalty: float = 1.0, stop: str | Sequence[str] | None = None,
                  seed: int | None = None, chat: bool | None = None, return_prompt: bool = False,
                  stream: Callable[[str], None] | None = None,
                  device: str | torch.device | None = None) -> str | list[str]:
    """Complete `prompt` (a str, or a list run as one batch, row b with seed + b) to a stop token or `stop` string.
    chat=None: chat mode if the tokenizer has <|assistant|> (a bare prompt becomes a user turn); temperature=0: greedy;
    return_prompt: the prompt as fed to the model first; stream(piece): one prompt only; device: moves the model."""
    single = isinstance(prompt, str)
    prompts = [prompt] if single else list(prompt)
    if stream is not None and not single:
        raise ValueError("stream= works with a single prompt; use stream_batch for a batch "
                         "(row b of a batch with seed s equals a single call with seed s + b)")
    out = [""] * len(prompts)
    for b, piece in stream_batch(model, tokenizer, prompts, max_new_tokens, temperature, top_k, top_p,
                                 repetition_penalty, stop, seed, chat, device):
        out[b] += piece
        if stream is not None:
            stream(piece)
    if return_prompt:
        out = [p + o for p, o in zip(_chat_prompts(tokenizer, prompts, chat)[1], out)]
    return out[0] if single else out


def stream_text(model: nn.Module, tokenizer, prompt: str, max_new_tokens: int = 100, temperature: float = 0.8,
                top_k: int | None = None, top_p: float = 1.0, repetition_penalty: float = 1.0,
                stop: str | Sequence[str] | None = None, seed: int | None = None, chat: bool | None = None,
                device: str | torch.device | None = None) -> Iterator[str]:
    """generate_text as an iterator of text pieces; "".join(pieces) == generate_text(...)."""
    return (piece for _, piece in stream_batch(model, tokenizer, [prompt], max_new_tokens, temperature, top_k,
                                               top_p, repetition_penalty, stop, seed, chat, device))


def stream_batch(model: nn.Module, tokenizer, prompts: Sequence[str], max_new_tokens: int = 100,
                 temperature: float = 0.8, top_k: int | None = None, top_p: float = 1.0,
                 repetition_penalty: float = 1.0, stop: str | Sequence[str] | None = None, seed: int | None = None,
                 chat: bool | None = None, device: str | torch.device | None = None,
                 keep_going: Callable[[int], bool] | None = None) -> Iterator[tuple[int, str]]:
    """generate_text's (row, piece) pairs as they are produced; a row whose keep_going(row) turns False leaves
    the batch (serve.py: its client has gone). Arguments are checked here; the model runs as pairs are read."""
    sampling = Sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
    chat, prompts = _chat_prompts(tokenizer, prompts, chat)
    if device is not None:
        model.to(device)
    # a completion ends at <|endoftext|>; in chat mode at the next special token of any kind
    names = [EOT_TOKEN] + (CHAT_SPECIAL_TOKENS + tokenizer.special_tokens if chat else [])
    stop_ids = ({tokenizer.token_to_id(t) for t in names} | {tokenizer.eot_token_id}) - {None}
    stops = [s for s in ([stop] if isinstance(stop, str) else stop or []) if s]
    texts = [TextStream(tokenizer, stops, strip_newline=chat) for _ in prompts]

    def pieces() -> Iterator[tuple[int, str]]:
        for rows in generate_steps(model, tokenizer.encode_batch(prompts), sampling, stop_ids, seed,
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

    return pieces()


def load_checkpoint(checkpoint_dir: str | Path, device: str | torch.device | None = None):
    """(model, tokenizer) from D/latest or D with config.json; the model in eval mode on `device` (None: auto)."""
    folder = resolve_checkpoint_dir(checkpoint_dir)
    tok_path = folder / "tokenizer.json"
    if not tok_path.is_file():
        raise UserError(f"{tok_path} not found: a checkpoint folder must hold the tokenizer it was trained with "
                        f"(copy the tokenizer JSON there as tokenizer.json)")
    tokenizer = load_tokenizer(tok_path)
    dev = pick_device(None if device is None else str(device))
    model = load_model(folder)  # ours or HuggingFace GPT-2; bad JSON or mismatched weights: one-line UserError
    if tokenizer.vocab_size > model.config.vocab_size:
        raise UserError(f"{tok_path} has {tokenizer.vocab_size} tokens but the model in {folder} has vocab_size "
                        f"{model.config.vocab_size}: put the tokenizer this model was trained with in {tok_path}")
    return model.to(dev).eval(), tokenizer


# ---------------------------------------------------------------------------- CLI

def chat_repl(model: nn.Module, tokenizer, args: argparse.Namespace, stdin=None, stdout=None, stderr=None) -> int:
    """Read user lines from stdin, stream the replies to stdout; /reset forgets, /quit (or EOF) exits."""
    from tokenizer_bpe import render_chat

    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    if not has_chat_tokens(tokenizer):
        raise UserError("--chat needs a tokenizer with <|user|> and <|assistant|> tokens (a model trained on "
                        "chat data); for plain text use --prompt")
    block = unwrap_model(model).config.block_size
    budget = max(block // 4, block - args.max_new_tokens)  # prompt tokens that leave room for the reply
    history: list[dict] = []  # user, assistant, user, assistant, ...
    print("chat: type a message; /reset starts over, /quit (or Ctrl-D) exits", file=stderr)
    turn = 0  # reply n is sampled with seed + n
    while True:
        print("you> ", end="", file=stderr, flush=True)
        line = stdin.readline()
        if not line:  # EOF (Ctrl-D)
            print(file=stderr)
            return 0
        message = line.rstrip("\r\n")
        if message.strip() == "/quit":
            return 0
        if message.strip() == "/reset":
            history = []
            print("(conversation reset)", file=stderr)
        if message.strip() in ("", "/reset"):
            continue
        messages = history + [{"role": "user", "content": message}]
        prompt = render_chat(messages, add_generation_prompt=True)
        while len(messages) > 1 and len(tokenizer.encode(prompt)) > budget:
            messages = messages[2:]  # drop the oldest exchange: a user message and its reply
            prompt = render_chat(messages, add_generation_prompt=True)
        if len(messages) <= len(history):
            print(f"(dropped {len(history) + 1 - len(messages)} oldest messages to fit block_size {block})",
                  file=stderr)
        print("assistant> ", end="", file=stderr, flush=True)
        reply = generate_text(model, tokenizer, prompt, **{k: getattr(args, k) for k in SAMPLING_FLAGS},
                              seed=None if args.seed is None else args.seed + turn, chat=True,
                              stream=lambda piece: print(piece, end="", file=stdout, flush=True))
        print(file=stdout, flush=True)
        history = messages + [{"role": "assistant", "content": reply}]
        turn += 1


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgParser(description="Generate text from a checkpoint (only generated text goes to stdout).",
                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint_dir", required=True, help="trainer's checkpoint dir (uses D/latest) or a step folder")
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
    Sampling(args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.repetition_penalty)  # checks
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(errors="replace")  # a non-UTF-8 console never crashes on a character
    folder = resolve_checkpoint_dir(args.checkpoint_dir)
    model, tokenizer = load_checkpoint(folder, args.device)
    print(f"loaded {folder}: {model.num_parameters() / 1e6:.2f}M parameters, vocab {model.config.vocab_size}, "
          f"block_size {model.config.block_size}, on {next(model.parameters()).device}", file=sys.stderr)
    if args.chat:
        return chat_repl(model, tokenizer, args)
    n = args.num_samples
    kwargs = {k: getattr(args, k) for k in SAMPLING_FLAGS}
    kwargs["chat"] = None if args.prompt and not args.no_chat_template else False
    # one batch, sample i seeded seed + i; --stream runs the samples one by one instead, with the same seeds
    texts = [] if args.stream else generate_text(model, tokenizer, [args.prompt] * n, seed=args.seed, **kwargs)
    for i in range(n):
        if n > 1:
            print(f"--- sample {i + 1}/{n}", file=sys.stderr, flush=True)
        if args.stream:
            generate_text(model, tokenizer, args.prompt, seed=None if args.seed is None else args.seed + i,
                          stream=lambda piece: print(piece, end="", flush=True), **kwargs)
        print("" if args.stream else texts[i], flush=True)
    return 0


if __name__ == "__main__":
    cli_main(main)
