"""Text generation: `generate` on token ids, `generate_text` / `stream_text` on strings, a CLI and
a chat REPL.

    python generate.py --checkpoint_dir checkpoints --prompt "What is the capital of France?"
    python generate.py --checkpoint_dir checkpoints --chat

How it runs. The prompt goes through the model once (prefill) and fills the model's KV cache; each
new token is then one forward pass over one position per row. The model is unwrapped first
(torch.compile / DDP), put in eval mode (restored afterwards), and run under torch.inference_mode,
on its own device; on CUDA under bf16 autocast (fp16 where the GPU lacks bf16). On a CPU it runs in
the model's dtype (fp32): decoding is memory-bound there and autocast would re-cast every weight
at every step.

Sliding window. A row whose context would pass block_size keeps its last `window_keep(block_size)`
(3/4 of block_size) tokens, is prefilled again, and goes on; generation never stops for length.

Batches. Prompts of different lengths are left-padded (KVCache pad_lens); every row has its own
window and its own torch.Generator seeded `seed + row`, and finished rows leave the batch, so
`generate_text([p0, p1], seed=s)` equals `[generate_text(p0, seed=s), generate_text(p1, seed=s+1)]`.
With seed=None the base seed is drawn from torch's global RNG (torch.manual_seed reproduces it).

Text. `generate_text` returns the completion only: the new tokens decoded up to, not including, the
first stop token (<|endoftext|>; in chat mode any special token) or the first `stop` string.
Chat mode (chat=None: on when the tokenizer has <|assistant|>) wraps a bare prompt as
`<|user|>{prompt}\\n<|assistant|>` and returns only the reply. The chat format ends every message
with "\\n" before the next <|role|> token; that one separator newline is not part of the reply
(it is dropped when the reply ends at a special token). Streamed pieces never split a UTF-8
character and always join to exactly the returned text.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn as nn

from common import ArgParser, UserError, cli_main, cuda_has_native_bf16, pick_device, resolve_checkpoint_dir
from cpu_decode import decode_layout
from import_hf import load_model
from model import KVCache, unwrap_model

EOT_TOKEN = "<|endoftext|>"
EOT_ID = 0  # DESIGN.md: <|endoftext|> is id 0 in every tokenizer
CHAT_ROLE_TOKENS = ("<|user|>", "<|assistant|>", "<|system|>")
REPLACEMENT_CHAR = "\ufffd"


def window_keep(block_size: int) -> int:
    """Tokens a row keeps when its context would pass block_size (then it is prefilled again)."""
    return max(1, block_size * 3 // 4)


def _check_sampling(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float,
                    repetition_penalty: float) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise UserError(f"max_new_tokens={max_new_tokens!r} must be an integer >= 0")
    if temperature < 0:
        raise UserError(f"temperature={temperature} must be >= 0 (0 = greedy)")
    if top_k is not None and top_k < 0:
        raise UserError(f"top_k={top_k} must be >= 1 (or 0/None for no top-k filter)")
    if not 0.0 < top_p <= 1.0:
        raise UserError(f"top_p={top_p} must be in (0, 1] (1 = no nucleus filter)")
    if repetition_penalty <= 0:
        raise UserError(f"repetition_penalty={repetition_penalty} must be > 0 (1 = off, 1.1-1.3 is typical)")


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters())
    return p.device, p.dtype


def _autocast(device: torch.device) -> tuple[contextlib.AbstractContextManager, torch.dtype | None]:
    if device.type == "cuda":
        dtype = torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16
        return torch.autocast("cuda", dtype=dtype), dtype
    return contextlib.nullcontext(), None


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
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = (sorted_p.cumsum(dim=-1) - sorted_p) >= top_p  # mass before this token already enough
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
    return [int(torch.multinomial(probs[i], 1, generator=g)) for i, g in enumerate(generators)]


@contextlib.contextmanager
def _decoding(model: nn.Module) -> Iterator[None]:
    """Eval mode (the previous mode restored afterwards) and cpu_decode's weight layout: on the CPU,
    1-3 rows are multiplied by (in, out) copies of the weights, 1.2-1.7x faster."""
    was_training = model.training
    model.eval()
    try:
        with decode_layout(model):
            yield
    finally:
        model.train(was_training)


def _generate_steps(model: nn.Module, rows: Sequence[Sequence[int]], max_new_tokens: int,
                    temperature: float, top_k: int | None, top_p: float, repetition_penalty: float,
                    stop_ids: set[int], seed: int | None, finished: list[bool], use_cache: bool = True,
                    vocab_limit: int | None = None) -> Iterator[list[int | None]]:
    """Yields, once per step, the new token of every row (None for rows already finished). A row
    finishes on a token in stop_ids, or when the caller sets finished[row] = True between steps."""
    m = unwrap_model(model)
    cfg = m.config
    device, param_dtype = _model_device_dtype(m)
    amp, amp_dtype = _autocast(device)
    cache_dtype = amp_dtype or param_dtype
    block, keep = cfg.block_size, window_keep(cfg.block_size)
    V = cfg.vocab_size
    limit = min(V, vocab_limit or V)
    seqs = [[int(t) for t in r] or [EOT_ID] for r in rows]  # an empty prompt starts from <|endoftext|>
    for s in seqs:
        bad = [t for t in s if not 0 <= t < V]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the model's vocabulary of {V}: "
                             f"the tokenizer does not match this model")
    starts = [len(s) - keep if len(s) > block else 0 for s in seqs]  # each row's window
    B = len(seqs)
    if max_new_tokens == 0 or B == 0:
        return
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())
    gens = [torch.Generator(device=device).manual_seed((seed + b) % 2**63) for b in range(B)]
    state: dict = {"cache": None, "generated": 0}

    def prefill(active: list[int]) -> torch.Tensor:
        ctxs = [seqs[b][starts[b]:] for b in active]
        W = max(len(c) for c in ctxs)
        pads = [W - len(c) for c in ctxs]
        idx = torch.tensor([[EOT_ID] * p + c for p, c in zip(pads, ctxs)], device=device)
        state["cache"] = None
        with amp:
            if not use_cache and not any(pads):
                logits, _ = m(idx, last_only=True)
            else:
                future = max(0, max_new_tokens - state["generated"] - 1) if use_cache else 0
                cache = KVCache(cfg, len(active), device=device, dtype=cache_dtype, max_len=min(block, W + future),
                                pad_lens=pads if any(pads) else None)
                logits, _ = m(idx, kv_cache=cache, last_only=True)
                state["cache"] = cache if use_cache else None
        return logits[:, -1, :limit]

    def decode_one(active: list[int]) -> torch.Tensor:
        idx = torch.tensor([[seqs[b][-1]] for b in active], device=device)
        with amp:
            logits, _ = m(idx, kv_cache=state["cache"], last_only=True)
        return logits[:, -1, :limit]

    with _decoding(m):
        active = [b for b in range(B) if not finished[b]]
        with torch.inference_mode():
            seen = None
            if repetition_penalty != 1.0:
                seen = torch.zeros(B, limit, dtype=torch.bool, device=device)
                for b, s in enumerate(seqs):
                    seen[b, torch.tensor([t for t in s if t < limit], dtype=torch.long, device=device)] = True
            logits = prefill(active) if active else None
        for step in range(max_new_tokens):
            if not active:
                return
            with torch.inference_mode():
                tokens = sample_next(logits, [gens[b] for b in active], temperature, top_k, top_p,
                                     repetition_penalty, None if seen is None else seen[active])
                if seen is not None:
                    seen[active, tokens] = True
            out: list[int | None] = [None] * B
            for b, t in zip(active, tokens):
                seqs[b].append(t)
                out[b] = t
                if t in stop_ids:
                    finished[b] = True
            state["generated"] = step + 1
            yield out  # the caller may mark more rows finished here (stop strings)
            if step + 1 == max_new_tokens:
                return
            still = [b for b in active if not finished[b]]
            if not still:
                return
            with torch.inference_mode():
                cache = state["cache"]
                if len(still) < len(active) and cache is not None:  # finished rows leave the batch
                    rows_kept = torch.tensor([active.index(b) for b in still], device=device)
                    cache.select_rows(rows_kept)
                active = still
                overflow = [b for b in active if len(seqs[b]) - starts[b] > block]
                for b in overflow:
                    starts[b] = len(seqs[b]) - keep
                if cache is None or overflow or cache.pos + 1 > cache.max_len:
                    logits = prefill(active)
                else:
                    logits = decode_one(active)


def generate(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float = 1.0, repetition_penalty: float = 1.0,
             eos_ids: Iterable[int] | int | None = None, seed: int | None = None, *,
             use_cache: bool = True) -> torch.Tensor:
    """Sample up to max_new_tokens after each row of idx (B, T) (or (T,)); returns the prompt ids
    followed by the new ones, as nanoGPT does. eos_ids: ids that end a row (kept in the output;
    the row is then padded with that id); None = (<|endoftext|> = 0,); () never stops early.
    The result has T + n columns, n = the steps taken (< max_new_tokens only when every row
    stopped). use_cache=False recomputes the whole window every step (a baseline)."""
    _check_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
    squeeze = idx.dim() == 1
    rows = idx.view(1, -1) if squeeze else idx
    if rows.dim() != 2:
        raise ValueError(f"idx must be (B, T) or (T,), got shape {tuple(idx.shape)}")
    eos = {EOT_ID} if eos_ids is None else ({int(eos_ids)} if isinstance(eos_ids, int) else {int(e) for e in eos_ids})
    B = rows.size(0)
    finished = [False] * B
    new: list[list[int]] = [[] for _ in range(B)]
    for out in _generate_steps(model, rows.tolist(), max_new_tokens, temperature, top_k, top_p,
                               repetition_penalty, eos, seed, finished, use_cache=use_cache):
        for b, t in enumerate(out):
            if t is not None:
                new[b].append(t)
    n = max((len(r) for r in new), default=0)
    new = [r + r[-1:] * (n - len(r)) for r in new]  # a row that stopped early repeats its stop token
    result = torch.cat([rows.to("cpu", torch.long), torch.tensor(new, dtype=torch.long).view(B, n)], dim=1)
    result = result.to(idx.device)
    return result[0] if squeeze else result


# ---------------------------------------------------------------------------- text

class _TextAssembler:
    """One row's new token ids -> text. Holds back an incomplete UTF-8 character (a trailing
    U+FFFD from decoding), any tail that could start a stop string, and in chat mode a trailing
    newline, so that the pieces it releases join to exactly the final completion."""

    def __init__(self, tokenizer, stops: Sequence[str], strip_newline: bool) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.strip_newline = strip_newline
        self.ids: list[int] = []
        self.text = ""          # decoded so far (complete characters only until finish)
        self.emitted = 0        # text[:emitted] has been released
        self.end: int | None = None  # set once the completion is final
        self._pending: list[int] = []  # ids since the last clean character boundary
        self._pending_text = ""

    @property
    def done(self) -> bool:
        return self.end is not None

    @property
    def completion(self) -> str:
        return self.text[:self.end if self.end is not None else self.emitted]

    def _decode_pending(self, final: bool) -> None:
        full = self.tokenizer.decode(self._pending)
        stable = full if final else full.rstrip(REPLACEMENT_CHAR)
        if len(stable) > len(self._pending_text):
            self.text += stable[len(self._pending_text):]
            self._pending_text = stable
        if stable == full and len(self._pending) >= 16:  # a clean boundary: restart the buffer
            self._pending, self._pending_text = [], ""

    def _release(self, upto: int) -> str:
        piece = self.text[self.emitted:upto] if upto > self.emitted else ""
        self.emitted = max(self.emitted, upto)
        return piece

    def _find_stop(self) -> int | None:
        hits = [i for s in self.stops if (i := self.text.find(s, self.emitted)) != -1]
        return min(hits) if hits else None

    def push(self, token_id: int) -> str:
        """Add one generated id; return the text that became final (may be empty)."""
        if self.done:
            return ""
        self.ids.append(token_id)
        self._pending.append(token_id)
        self._decode_pending(final=False)
        stop_at = self._find_stop()
        if stop_at is not None:
            self.end = stop_at
            return self._release(stop_at)
        text, hold = self.text, 0
        for s in self.stops:  # longest tail that is a prefix of a stop string
            for k in range(min(len(s) - 1, len(text) - self.emitted), hold, -1):
                if text.endswith(s[:k]):
                    hold = k
                    break
        if self.strip_newline and text.endswith("\n"):
            hold = max(hold, 1)
        return self._release(len(text) - hold)

    def finish(self, at_stop_token: bool) -> str:
        """Close the row (a stop token, or out of steps); return the rest of the completion."""
        if self.done:
            return ""
        self._decode_pending(final=True)
        end = self._find_stop()
        if end is None:
            end = len(self.text)
            if at_stop_token and self.strip_newline and self.text.endswith("\n"):
                end -= 1  # the chat format's separator before the next <|role|>
        self.end = end
        return self._release(end)


def _stop_token_ids(tokenizer, chat: bool) -> set[int]:
    names = [EOT_TOKEN]
    if chat:
        names += list(CHAT_ROLE_TOKENS) + list(getattr(tokenizer, "special_tokens", []) or [])
    ids = {tokenizer.token_to_id(t) for t in names}
    eot = getattr(tokenizer, "eot_token_id", None)
    return {i for i in ids | {eot} if i is not None}


def has_chat_tokens(tokenizer) -> bool:
    return tokenizer.token_to_id("<|assistant|>") is not None and tokenizer.token_to_id("<|user|>") is not None


def _render_prompt(prompt: str, chat: bool) -> str:
    if chat and not any(t in prompt for t in CHAT_ROLE_TOKENS):  # a bare prompt: one user turn
        from tokenizer_bpe import render_chat

        return render_chat([{"role": "user", "content": prompt}], add_generation_prompt=True)
    return prompt


class _TextJob:
    """Prompts -> (rendered prompt, completion) for each row, with streamed pieces on the way."""

    def __init__(self, model: nn.Module, tokenizer, prompts: Sequence[str], max_new_tokens: int,
                 temperature: float, top_k: int | None, top_p: float, repetition_penalty: float,
                 stop: str | Sequence[str] | None, seed: int | None, chat: bool | None,
                 device: str | torch.device | None) -> None:
        _check_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
        if not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompt must be a str or a list of str")
        if device is not None:
            model.to(device)
        if chat is None:
            chat = has_chat_tokens(tokenizer)
        elif chat and not has_chat_tokens(tokenizer):
            raise UserError("chat=True needs a tokenizer with <|user|> and <|assistant|> tokens "
                            "(train it on chat data); use chat=False for plain text")
        self.model, self.tokenizer, self.chat = model, tokenizer, chat
        self.sampling = (temperature, top_k, top_p, repetition_penalty)
        self.max_new_tokens, self.seed = max_new_tokens, seed
        self.rendered = [_render_prompt(p, chat) for p in prompts]
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        self.stop_ids = _stop_token_ids(tokenizer, chat)
        self.rows = [_TextAssembler(tokenizer, stops, strip_newline=chat) for _ in prompts]

    def pieces(self) -> Iterator[tuple[int, str]]:
        """(row, text) pieces as they become final; afterwards `completions` holds the results."""
        encode_batch = getattr(self.tokenizer, "encode_batch", None)
        ids = encode_batch(self.rendered) if encode_batch else [self.tokenizer.encode(p) for p in self.rendered]
        finished = [False] * len(self.rows)
        steps = _generate_steps(self.model, ids, self.max_new_tokens, *self.sampling, stop_ids=self.stop_ids,
                                seed=self.seed, finished=finished, vocab_limit=self.tokenizer.vocab_size)
        for out in steps:
            for b, t in enumerate(out):
                if t is None:
                    continue
                row = self.rows[b]
                piece = row.finish(at_stop_token=True) if t in self.stop_ids else row.push(t)
                finished[b] = row.done
                if piece:
                    yield b, piece
        for b, row in enumerate(self.rows):
            piece = row.finish(at_stop_token=False)
            if piece:
                yield b, piece

    @property
    def completions(self) -> list[str]:
        return [row.completion for row in self.rows]


def generate_text(model: nn.Module, tokenizer, prompt: str | Sequence[str], max_new_tokens: int = 100,
                  temperature: float = 0.8, top_k: int | None = None, top_p: float = 1.0,
                  repetition_penalty: float = 1.0, stop: str | Sequence[str] | None = None,
                  seed: int | None = None, chat: bool | None = None, return_prompt: bool = False,
                  stream: Callable[[str], None] | None = None,
                  device: str | torch.device | None = None) -> str | list[str]:
    """Complete `prompt` (a str, or a list of str run as one left-padded batch; row b uses seed + b).

    Returns the completion: the new tokens decoded up to, not including, the first stop token or
    `stop` string (return_prompt=True: the prompt as fed to the model, chat wrapping included,
    followed by the completion). temperature=0 is greedy. chat=None: chat mode when the tokenizer
    has <|assistant|> (see the module docstring). stream: called with each text piece as it is
    produced (single prompt only). device: moves the model there first; default the model's own."""
    single = isinstance(prompt, str)
    prompts = [prompt] if single else list(prompt)
    if stream is not None and not single:
        raise ValueError("stream= works with a single prompt; call generate_text once per prompt "
                         "(row b of a batch with seed s equals a single call with seed s + b)")
    job = _TextJob(model, tokenizer, prompts, max_new_tokens, temperature, top_k, top_p, repetition_penalty,
                   stop, seed, chat, device)
    for _, piece in job.pieces():
        if stream is not None:
            stream(piece)
    texts = job.completions
    if return_prompt:
        texts = [p + t for p, t in zip(job.rendered, texts)]
    return texts[0] if single else texts


def stream_text(model: nn.Module, tokenizer, prompt: str, max_new_tokens: int = 100, temperature: float = 0.8,
                top_k: int | None = None, top_p: float = 1.0, repetition_penalty: float = 1.0,
                stop: str | Sequence[str] | None = None, seed: int | None = None, chat: bool | None = None,
                device: str | torch.device | None = None) -> Iterator[str]:
    """generate_text as an iterator of text pieces; "".join(pieces) == generate_text(...). Arguments
    are checked here, at the call; the model runs as the iterator is consumed."""
    job = _TextJob(model, tokenizer, [prompt], max_new_tokens, temperature, top_k, top_p, repetition_penalty,
                   stop, seed, chat, device)
    return (piece for _, piece in job.pieces())


# ---------------------------------------------------------------------------- checkpoints

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
            print(f"(dropped {len(history) + 1 - len(kept)} oldest messages to fit block_size {block})", file=stderr)
        print("assistant> ", end="", file=stderr, flush=True)

        def write(piece: str) -> None:
            stdout.write(piece)
            stdout.flush()

        reply = generate_text(model, tokenizer, prompt, max_new_tokens=args.max_new_tokens,
                              temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                              repetition_penalty=args.repetition_penalty, stop=args.stop,
                              seed=None if args.seed is None else args.seed + turn, chat=True, stream=write)
        stdout.write("\n")
        stdout.flush()
        history = kept + [{"role": "assistant", "content": reply}]
        turn += 1


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgParser(description="Generate text from a checkpoint (only generated text goes to stdout).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint_dir", required=True, help="trainer's checkpoint dir (uses D/latest) or one checkpoint folder")
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
    _check_sampling(args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.repetition_penalty)
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(errors="replace")  # a non-UTF-8 console never crashes on a character
    folder = resolve_checkpoint_dir(args.checkpoint_dir)
    model, tokenizer = load_checkpoint(folder, args.device)
    cfg = model.config
    print(f"loaded {folder}: {model.num_parameters() / 1e6:.2f}M parameters, vocab {cfg.vocab_size}, "
          f"block_size {cfg.block_size}, on {_model_device_dtype(model)[0]}", file=sys.stderr)
    if args.chat:
        return chat_repl(model, tokenizer, args)
    chat = None if args.prompt and not args.no_chat_template else False
    kwargs = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                  top_p=args.top_p, repetition_penalty=args.repetition_penalty, stop=args.stop, chat=chat)
    if args.stream:
        def write(piece: str) -> None:
            sys.stdout.write(piece)
            sys.stdout.flush()

        for i in range(args.num_samples):
            if args.num_samples > 1:
                print(f"--- sample {i + 1}/{args.num_samples}", file=sys.stderr, flush=True)
            generate_text(model, tokenizer, args.prompt, seed=None if args.seed is None else args.seed + i,
                          stream=write, **kwargs)
            sys.stdout.write("\n")
            sys.stdout.flush()
        return 0
    texts = generate_text(model, tokenizer, [args.prompt] * args.num_samples, seed=args.seed, **kwargs)
    for i, text in enumerate(texts):
        if args.num_samples > 1:
            print(f"--- sample {i + 1}/{args.num_samples}", file=sys.stderr, flush=True)
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    cli_main(main)
