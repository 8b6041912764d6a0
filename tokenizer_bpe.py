"""Byte-level BPE tokenizer (the seed's phase 3): a thin wrapper over HuggingFace `tokenizers`
(training, decoding), a `tiktoken` encoder with identical ids (4-5x faster), and the chat template.

Byte-level: the 256 byte symbols are always in the vocabulary, so every UTF-8 string round-trips
exactly and there is no unknown token. `encode` turns special-token strings in its input into their
ids: the tokenizer trusts its input, and dataset_cleaner.py is what neutralises `<|...|>` strings in
raw scraped text.
"""
from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from common import UserError, atomic_write_text
from tokenizer import CHAT_ROLES, EOT_TOKEN, read_tokenizer_json, special_tokens_for, special_tokens_pattern

# GPT-2's pre-tokenizer regex, exactly as `tokenizers`' ByteLevel(use_regex=True) applies it.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# tiktoken's regex engine gives up (a Rust panic) on a whitespace run of about 1M characters;
# texts holding a run this long are encoded by HF instead. Python's \s is a superset of the
# Unicode White_Space the Rust regex uses, so this never misses such a run.
_WS_RUN_LIMIT = 500_000
_LONG_WS_RUN = re.compile(r"(?<!\s)\s{%d}" % _WS_RUN_LIMIT)
_SMALL_BATCH_CHARS = 1 << 16  # below this, a thread pool costs more than it gains

# The chat format (render_chat), as a Jinja template for HF exports (tokenizer_config.json).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% else %}<|endoftext|>{% endif %}"
)


def render_chat(messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
    """`<|{role}|>{content}\\n` per message, then `<|endoftext|>` (a training document) or
    `<|assistant|>` (a prompt for the model's next reply). Same output as CHAT_TEMPLATE."""
    parts = []
    for m in messages:
        role = m["role"]
        if role not in CHAT_ROLES:
            raise ValueError(f"chat role {role!r} is not one of {CHAT_ROLES}")
        parts.append(f"<|{role}|>{m['content']}\n")
    parts.append("<|assistant|>" if add_generation_prompt else EOT_TOKEN)
    return "".join(parts)


# ---------------------------------------------------------------------------- tiktoken conversion

def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters: printable
    Latin-1 bytes map to themselves, the other 68 to U+0100 upwards, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _merge_pairs(merges: list) -> list[tuple[str, str]]:
    # tokenizers >= 0.20 writes [a, b]; older files write "a b" (symbols never contain a space)
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in merges]


def whitespace_cuts_exact(data: dict) -> tuple[bool, str]:
    """(True, "exact") when, for this `tokenizers` JSON dict, encoding text[:p] and text[p:] apart gives
    the ids of text wherever text[p] is a space, tab or newline after a non-whitespace character (GPT-2's
    pre-tokenizer always splits there; tokenize_corpus cuts long documents there), else (False, reason).
    These are tiktoken_conversion's checks of what surrounds the model, so a tokenizer tiktoken can
    encode always passes; the model itself only ever sees one pre-token at a time."""
    pre = data.get("pre_tokenizer") or {}
    if data.get("normalizer") is not None:
        return False, f"it has a normalizer ({data['normalizer'].get('type')})"
    post = data.get("post_processor")
    if post is not None and post.get("type") != "ByteLevel":  # GPT-2's own: it trims offsets, never ids
        return False, f"it has a post-processor ({post.get('type')})"
    if data.get("truncation") is not None or data.get("padding") is not None:
        return False, "it has truncation or padding enabled"
    if pre.get("type") != "ByteLevel":
        return False, f"the pre-tokenizer is {pre.get('type')!r}, not ByteLevel"
    if pre.get("add_prefix_space") or not pre.get("use_regex", True):
        return False, (f"the ByteLevel pre-tokenizer has add_prefix_space={pre.get('add_prefix_space')}, "
                       f"use_regex={pre.get('use_regex', True)} (needs False, True)")
    for t in data.get("added_tokens") or []:
        flags = [k for k in ("lstrip", "rstrip", "single_word", "normalized") if t.get(k)]
        if flags:
            return False, f"added token {t.get('content')!r} sets {', '.join(flags)}"
    return True, "exact"


def tiktoken_conversion(data: dict) -> tuple[dict[bytes, int] | None, dict[str, int], str]:
    """From a `tokenizers` JSON dict, the tiktoken `mergeable_ranks` and `special_tokens` that give
    exactly HF's ids, or (None, {}, reason) when the conversion would differ. Needs no tiktoken.

    Exact when: a plain BPE model; a ByteLevel(add_prefix_space=False, use_regex=True) pre-tokenizer,
    no normalizer, no post-processor (whitespace_cuts_exact); all 256 byte symbols; every multi-byte
    token the result of exactly one merge, and merge results whose ids rise with merge order (then
    tiktoken's "lowest rank first" is HF's "earliest merge first"); added tokens without lstrip,
    rstrip, single_word or normalized."""
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        return None, {}, f"the model is {model.get('type')!r}, not BPE"
    for key, bad in (("dropout", lambda v: v not in (None, 0, 0.0)), ("byte_fallback", bool),
                     ("continuing_subword_prefix", bool), ("end_of_word_suffix", bool)):
        if bad(model.get(key)):
            return None, {}, f"the BPE model sets {key}={model.get(key)!r}"
    ok, reason = whitespace_cuts_exact(data)  # what surrounds the model: tiktoken only pre-tokenizes like GPT-2
    if not ok:
        return None, {}, reason
    specials: dict[str, int] = {}
    for t in data.get("added_tokens") or []:
        if not t.get("content"):
            return None, {}, "an added token is empty"
        specials[t["content"]] = int(t["id"])

    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    vocab: dict[str, int] = model.get("vocab") or {}
    for symbol, b in byte_of.items():
        if symbol not in vocab:
            return None, {}, f"byte 0x{b:02x} ({symbol!r}) is missing from the vocabulary (trained without " \
                             f"initial_alphabet=ByteLevel.alphabet())"
    ranks: dict[bytes, int] = {bytes([b]): vocab[s] for s, b in byte_of.items()}
    last = -1
    for a, b in _merge_pairs(model.get("merges") or []):
        merged = a + b
        if a not in vocab or b not in vocab or merged not in vocab:
            return None, {}, f"merge ({a!r}, {b!r}) refers to tokens missing from the vocabulary"
        if any(c not in byte_of for c in merged):
            return None, {}, f"merge result {merged!r} is not a byte-level string"
        if vocab[merged] <= last:
            return None, {}, f"merge results' ids do not rise with merge order (at {merged!r})"
        last = vocab[merged]
        ranks[bytes(byte_of[c] for c in merged)] = last
    produced = set(ranks.values())
    if len(produced) != len(ranks):
        return None, {}, "two tokens share an id"
    for s, i in vocab.items():
        if s in specials:
            if specials[s] != i:
                return None, {}, f"added token {s!r} has id {specials[s]} but {i} in the vocabulary"
        elif i not in produced:  # HF never emits a token no merge makes; tiktoken might
            return None, {}, f"vocabulary token {s!r} is not produced by any merge"
    for s, i in specials.items():
        if i in produced and vocab.get(s) != i:
            return None, {}, f"added token {s!r} reuses id {i} of another token"
    return ranks, specials, "exact"


def tiktoken_encoding(tokenizer: Tokenizer, name: str = "bpe") -> tuple["tiktoken.Encoding | None", str]:  # noqa: F821
    """(Encoding, "exact") when `tokenizer` converts to tiktoken with identical ids, else (None, reason)."""
    if getattr(tokenizer, "encode_special_tokens", False):
        return None, "encode_special_tokens is set (special tokens are encoded as text)"
    ranks, specials, reason = tiktoken_conversion(json.loads(tokenizer.to_str()))
    if ranks is None:
        return None, reason
    try:
        import tiktoken
    except ImportError:
        return None, "tiktoken is not installed (pip install tiktoken)"
    return tiktoken.Encoding(name, pat_str=GPT2_SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens=specials), reason


class _TiktokenEncoder:
    """tiktoken with HF's special-token semantics; ids equal HF's (see the module docstring)."""

    def __init__(self, encoding, hf: Tokenizer) -> None:
        self.encoding, self.hf = encoding, hf
        specials = encoding.special_tokens_set
        self.special_ids = {t: encoding.encode_single_token(t) for t in specials}
        self.allowed = frozenset(specials)
        # tiktoken matches special tokens leftmost-first in arbitrary order; that equals HF's
        # leftmost-longest unless one special token is a prefix of another
        self.native = not any(a != b and b.startswith(a) for a in specials for b in specials)
        self.split_re = special_tokens_pattern(specials) if specials and not self.native else None

    def _hf(self, text: str) -> np.ndarray:
        return np.asarray(self.hf.encode(text, add_special_tokens=False).ids, dtype=np.uint32)

    def _plain(self, text: str, allowed: frozenset) -> np.ndarray:
        return self.encoding.encode_to_numpy(text, allowed_special=allowed, disallowed_special=())

    def encode_np(self, text: str) -> np.ndarray:
        if len(text) >= _WS_RUN_LIMIT and _LONG_WS_RUN.search(text):
            return self._hf(text)
        try:
            if self.split_re is None:
                return self._plain(text, self.allowed)
            parts: list[np.ndarray] = []
            last = 0
            for m in self.split_re.finditer(text):
                parts += [self._plain(text[last:m.start()], frozenset()),
                          np.array([self.special_ids[m.group()]], dtype=np.uint32)]
                last = m.end()
            parts.append(self._plain(text[last:], frozenset()))
            return np.concatenate(parts)
        except UnicodeEncodeError:  # lone surrogates: tiktoken would rewrite them, HF refuses
            return self._hf(text)
        except BaseException as e:  # noqa: BLE001 - a Rust panic is a BaseException
            if type(e).__name__ != "PanicException":
                raise
            return self._hf(text)


def _is_file(p: object) -> bool:
    try:
        return isinstance(p, (str, os.PathLike)) and Path(p).is_file()
    except (OSError, ValueError):  # a long text or one holding NUL is not a path
        return False


def _read_training_text(paths: Sequence[str | os.PathLike], chunk_chars: int = 1 << 20) -> Iterator[str]:
    """Stream files as text in chunks cut after a newline, so no word is split in two."""
    for path in paths:
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            carry = ""
            while block := f.read(chunk_chars):
                block, carry = carry + block, ""
                cut = block.rfind("\n") + 1
                if 0 < cut < len(block):
                    block, carry = block[:cut], block[cut:]
                yield block
            if carry:
                yield carry


def _without_specials(texts: Iterable[str], specials: Sequence[str]) -> Iterator[str]:
    """`tokenizers` training does not split added tokens out of the text: without this, merges
    such as '<|' and 'endoftext' would waste vocabulary on strings that are always special."""
    pattern = special_tokens_pattern(specials)
    for text in texts:
        yield from (p for p in pattern.split(text) if p)


def portable_tokenizer_json(text: str) -> str:
    """The tokenizer.json text in a form every `tokenizers` from 0.14 on reads. Version 0.20 began
    writing BPE merges as [a, b] pairs, which older versions (those that transformers 4.40-4.44 pin)
    fail to parse; the "a b" strings written before are still read by every version, and are exact
    while no merged symbol holds a space (never, for byte-level BPE). Anything else stays verbatim."""
    data = json.loads(text)
    model = data.get("model")
    merges = model.get("merges") if isinstance(model, dict) else None
    if not merges or not all(isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) and " " not in x for x in m)
                             for m in merges):
        return text
    model["merges"] = [f"{a} {b}" for a, b in merges]
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


class BPETokenizer:
    """`tokenizer = BPETokenizer(); tokenizer.load('checkpoint/tokenizer.json')`, as in the seed."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self._tok: Tokenizer | None = None
        self.path: Path | None = None
        self.num_threads = os.cpu_count() or 1
        self._encoder_choice = "auto"
        self._reset_encoder()
        if path is not None:
            self.load(path)

    # -------------------------------------------------------------- training

    def train(self, files_or_iterator: Iterable[str] | Sequence[str | os.PathLike], vocab_size: int = 32000,
              special_tokens: Sequence[str] | None = None, min_frequency: int = 2,
              show_progress: bool = True, length: int | None = None) -> "BPETokenizer":
        """Train on a list of file paths or an iterator of strings. `special_tokens` default to
        `<|endoftext|>` alone (id 0); pass special_tokens_for(chat=True) for the chat roles.
        Special-token strings in the training text are left out of the merge statistics."""
        specials = list(special_tokens) if special_tokens is not None else special_tokens_for(chat=False)
        if not specials or specials[0] != EOT_TOKEN:
            raise UserError(f"special tokens must start with {EOT_TOKEN} (id 0), got {specials[:3]}")
        minimum = 256 + len(specials)
        if vocab_size < minimum:
            raise UserError(f"--vocab_size {vocab_size} is too small for byte-level BPE: use at least {minimum} "
                            f"(256 bytes + {len(specials)} special tokens)")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        # initial_alphabet: all 256 byte symbols, or bytes never seen in training are dropped on encode
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=show_progress)
        items = files_or_iterator
        if isinstance(items, (list, tuple)) and items and all(_is_file(p) for p in items):
            items, length = _read_training_text(items), None
        tok.train_from_iterator(_without_specials(items, specials), trainer, length=length)
        self._tok, self.path = tok, None
        self._reset_encoder()
        return self

    # -------------------------------------------------------------- files

    def load(self, path: str | os.PathLike) -> "BPETokenizer":
        """Load a `tokenizers` JSON file (ours, or one written by the library elsewhere)."""
        data = read_tokenizer_json(path)
        if "model" not in data:
            raise UserError(f"{path} is not a `tokenizers` JSON file (no \"model\" key); "
                            f"for a char tokenizer use tokenizer.load_tokenizer")
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:
            raise UserError(f"cannot load tokenizer {path}: {e}; regenerate it with tokenize_local_bpe.py") from None
        self.path = Path(path)
        self._reset_encoder()
        return self

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "BPETokenizer":
        return cls().load(path)

    def to_json(self) -> str:
        """The tokenizer.json text (merges in the notation every `tokenizers` version reads)."""
        return portable_tokenizer_json(self.tokenizer.to_str(pretty=True))

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.to_json())
        self.path = Path(path)

    # -------------------------------------------------------------- encoder choice

    def _reset_encoder(self) -> None:
        self._fast: _TiktokenEncoder | None = None
        self._decided = False
        self.encoder_info = ""

    def set_encoder(self, choice: str = "auto") -> str:
        """'auto' (tiktoken when installed and exact, else HF), 'tiktoken' (UserError when it cannot
        be used) or 'hf'. Returns one line saying which encoder and why."""
        if choice not in ("auto", "tiktoken", "hf"):
            raise UserError(f"--encoder {choice!r} is not one of auto, tiktoken, hf")
        self._encoder_choice = choice
        self._reset_encoder()
        self._fast_encoder()
        if choice == "tiktoken" and self._fast is None:
            raise UserError(f"--encoder tiktoken cannot be used: {self.encoder_info}; use --encoder hf or auto")
        return self.encoder_info

    def _fast_encoder(self) -> _TiktokenEncoder | None:
        if not self._decided:
            self._decided = True
            if self._encoder_choice == "hf":
                self.encoder_info = "encoder: HF tokenizers (--encoder hf)"
            else:
                encoding, reason = tiktoken_encoding(self.tokenizer)
                if encoding is None:
                    self.encoder_info = f"encoder: HF tokenizers (tiktoken not used: {reason})"
                else:
                    self._fast = _TiktokenEncoder(encoding, self.tokenizer)
                    self.encoder_info = "encoder: tiktoken (conversion checked exact: same ids as HF)"
        return self._fast

    @property
    def encoder_name(self) -> str:
        return "tiktoken" if self._fast_encoder() is not None else "hf"

    # -------------------------------------------------------------- interface

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tok is None:
            raise RuntimeError("BPETokenizer is empty: call .load(path) or .train(...) first")
        return self._tok

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def eot_token_id(self) -> int | None:
        return self.tokenizer.token_to_id(EOT_TOKEN)

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    @property
    def special_tokens(self) -> list[str]:
        return [t.content for t in self.tokenizer.get_added_tokens_decoder().values() if t.special]

    def encode(self, text: str) -> list[int]:
        """Ids of `text`, special-token strings included (on both encoders: HF matches added tokens
        leftmost-longest, and so does the tiktoken path). tiktoken when exact, else HF."""
        fast = self._fast_encoder()
        if fast is not None:
            return fast.encode_np(text).tolist()
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encodes on all cores (`num_threads`); same ids as encoding one text at a time."""
        return [a.tolist() for a in self.encode_batch_numpy(texts)] if self._fast_encoder() is not None \
            else self._hf_batch(texts)

    def encode_batch_numpy(self, texts: list[str]) -> list[np.ndarray]:
        """Like encode_batch, as uint32 arrays (no Python ints on the fast path)."""
        fast = self._fast_encoder()
        if fast is None:
            return [np.asarray(ids, dtype=np.uint32) for ids in self._hf_batch(texts)]
        if len(texts) < 2 or self.num_threads < 2 or sum(map(len, texts)) < _SMALL_BATCH_CHARS:
            return [fast.encode_np(t) for t in texts]
        with ThreadPoolExecutor(self.num_threads) as pool:  # tiktoken releases the GIL while encoding
            return list(pool.map(fast.encode_np, texts))

    def _hf_batch(self, texts: list[str]) -> list[list[int]]:
        # encode_batch_fast (tokenizers >= 0.21) skips the offsets we never use
        batch = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        return [e.ids for e in batch(texts, add_special_tokens=False)]

    def token_byte_lengths(self) -> list[int] | None:
        """The UTF-8 bytes each id adds to decode(ids), for ids encoded from text; None unless the
        decoder is ByteLevel (ours), which joins the tokens' bytes: a token's symbols map back to
        bytes (its UTF-8 when it holds other characters, as some added tokens do)."""
        if not isinstance(self.tokenizer.decoder, decoders.ByteLevel):
            return None
        byte_of = {c: b for b, c in bytes_to_unicode().items()}

        def decoded_bytes(token: str) -> bytes:
            return bytes(byte_of[c] for c in token) if all(c in byte_of for c in token) else token.encode("utf-8")

        lengths = [0] * self.vocab_size
        for token, i in self.tokenizer.get_vocab(with_added_tokens=True).items():
            lengths[i] = len(decoded_bytes(token))
        for i, added in self.tokenizer.get_added_tokens_decoder().items():
            # text surrounds an added token with whole characters, so invalid bytes of its own (an
            # added '<|tööl|>' maps to 0xF6 0xF6) are what decoding replaces with U+FFFD
            lengths[i] = len(decoded_bytes(added.content).decode("utf-8", "replace").encode("utf-8"))
        return lengths

    def decode(self, ids: Iterable[int]) -> str:  # always HF: tiktoken only encodes
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)
