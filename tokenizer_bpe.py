"""Byte-level BPE tokenizer (the seed's phase 3): a thin wrapper over HuggingFace `tokenizers`,
and the chat template.

Byte-level means every UTF-8 string round-trips exactly and there is no unknown token: the 256
byte symbols are always in the vocabulary (`initial_alphabet=ByteLevel.alphabet()`; without it,
bytes never seen in training are silently dropped on encode).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from common import UserError, atomic_write_text
from tokenizer import CHAT_ROLES, EOT_TOKEN, _read_tokenizer_json, special_tokens_for

# The chat format of DESIGN.md, as a Jinja template for HF exports (tokenizer_config.json).
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


class BPETokenizer:
    """`tokenizer = BPETokenizer(); tokenizer.load('checkpoint/tokenizer.json')`, as in the seed."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self._tok: Tokenizer | None = None
        self.path: Path | None = None
        if path is not None:
            self.load(path)

    # -------------------------------------------------------------- training

    def train(self, files_or_iterator: Iterable[str] | Sequence[str | os.PathLike], vocab_size: int = 32000,
              special_tokens: Sequence[str] | None = None, min_frequency: int = 2,
              show_progress: bool = True, length: int | None = None) -> "BPETokenizer":
        """Train on a list of file paths or an iterator of strings. `special_tokens` default to
        `<|endoftext|>` alone (id 0); pass special_tokens_for(chat=True) for the chat roles."""
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
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=show_progress)
        items = files_or_iterator
        if isinstance(items, (list, tuple)) and items and all(isinstance(p, (str, os.PathLike)) for p in items) \
                and all(Path(p).is_file() for p in items):
            tok.train([str(p) for p in items], trainer)
        else:
            tok.train_from_iterator(iter(items), trainer, length=length)
        self._tok, self.path = tok, None
        return self

    # -------------------------------------------------------------- files

    def load(self, path: str | os.PathLike) -> "BPETokenizer":
        """Load a `tokenizers` JSON file (ours, or one written by the library elsewhere)."""
        data = _read_tokenizer_json(path)
        if "model" not in data:
            raise UserError(f"{path} is not a `tokenizers` JSON file (no \"model\" key); "
                            f"for a char tokenizer use tokenizer.load_tokenizer")
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:
            raise UserError(f"cannot load tokenizer {path}: {e}; regenerate it with tokenize_local_bpe.py") from None
        self.path = Path(path)
        return self

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "BPETokenizer":
        return cls().load(path)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.tokenizer.to_str(pretty=True))
        self.path = Path(path)

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
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encodes on all cores (the library's own thread pool)."""
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def iter_decode(self, ids: Iterable[int]) -> Iterator[str]:
        """Decode a stream of ids into text pieces that never split a UTF-8 character."""
        buffer: list[int] = []
        emitted = ""
        for i in ids:
            buffer.append(int(i))
            text = self.decode(buffer)
            if text.endswith("\ufffd"):
                continue  # an incomplete multi-byte character: wait for its next byte(s)
            yield text[len(emitted):]
            emitted = text
            if len(buffer) > 64:
                buffer, emitted = [], ""
