"""Character-level tokenizer (the seed's phases 1-2) and `load_tokenizer`, which opens either kind.

Ids: the special tokens first (`<|endoftext|>` = 0, then `<|user|>` = 1, `<|assistant|>` = 2,
`<|system|>` = 3 when chat is used), then one id per character seen in the training text, in
sorted order.

Unseen characters: a character that never appeared in the training text is encoded as U+FFFD
(the Unicode replacement character, always in the vocabulary), like `errors="replace"` when
decoding bytes. Everything that was in the training text round-trips exactly.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from typing import Iterable, Iterator

from common import UserError, atomic_write_json, read_json

EOT_TOKEN = "<|endoftext|>"  # ends every document; id 0 in every tokenizer here
CHAT_ROLES = ("user", "assistant", "system")
CHAT_SPECIAL_TOKENS = [f"<|{role}|>" for role in CHAT_ROLES]  # ids 1, 2, 3
REPLACEMENT_CHAR = "\ufffd"  # U+FFFD: an unseen character (char tokenizer), an invalid byte (decoding)


def special_tokens_for(chat: bool, extra: Iterable[str] = ()) -> list[str]:
    """The special-token list in id order: EOT = 0, the chat roles 1-3 when `chat`, then `extra`."""
    tokens = [EOT_TOKEN] + (CHAT_SPECIAL_TOKENS if chat else [])
    return tokens + [t for t in extra if t not in tokens]


def special_tokens_pattern(specials: Iterable[str]) -> re.Pattern | None:
    """A regex matching any of `specials` (None when there are none)."""
    specials = sorted(specials, key=len, reverse=True)  # longest first: no prefix shadowing
    return re.compile("|".join(map(re.escape, specials))) if specials else None


class CharTokenizer:
    """One id per character. `encode` maps special-token strings to their ids; `decode` keeps them."""

    def __init__(self, chars: Iterable[str] = (), special_tokens: Iterable[str] | None = None) -> None:
        specials = list(special_tokens) if special_tokens is not None else [EOT_TOKEN]
        if not specials or specials[0] != EOT_TOKEN:
            raise UserError(f"char tokenizer: special tokens must start with {EOT_TOKEN} (id 0), got {specials[:3]}")
        chars = sorted(set(chars) | {REPLACEMENT_CHAR})
        self.special_tokens = specials
        self.id_to_token: list[str] = specials + chars
        self.token_to_index = {t: i for i, t in enumerate(self.id_to_token)}
        self._special_re = special_tokens_pattern(specials)

    # -------------------------------------------------------------- building

    @classmethod
    def from_text(cls, text: str, special_tokens: Iterable[str] | None = None) -> "CharTokenizer":
        return cls.train([text], special_tokens)

    @classmethod
    def train(cls, texts: Iterable[str], special_tokens: Iterable[str] | None = None) -> "CharTokenizer":
        """Build from an iterator of strings (streamed: only the character counts are kept).
        Special-token strings in the text are not split into characters."""
        specials = list(special_tokens) if special_tokens is not None else [EOT_TOKEN]
        pattern = special_tokens_pattern(specials)
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(pattern.sub("", text) if pattern else text)
        return cls(counts.keys(), specials)

    @classmethod
    def from_files(cls, paths: Iterable[str | os.PathLike], special_tokens: Iterable[str] | None = None,
                   chunk_chars: int = 1 << 20) -> "CharTokenizer":
        specials = list(special_tokens) if special_tokens is not None else [EOT_TOKEN]
        keep = max(map(len, specials)) - 1  # a special token split across two reads is seen whole
        pattern = special_tokens_pattern(specials)

        def chunks() -> Iterator[str]:
            for path in paths:
                with open(path, encoding="utf-8", errors="replace", newline="") as f:
                    carry = ""
                    while block := f.read(chunk_chars):
                        block = carry + block
                        cut = max(len(block) - keep, 0)
                        for m in pattern.finditer(block, max(cut - keep, 0)):
                            if m.start() < cut < m.end():
                                cut = m.start()  # never split a special token that straddles the cut
                        yield block[:cut]
                        carry = block[cut:]
                    yield carry
        return cls.train(chunks(), specials)

    # -------------------------------------------------------------- interface

    @property
    def vocab_size(self) -> int:
        return len(self.id_to_token)

    @property
    def eot_token_id(self) -> int:
        return 0

    def token_to_id(self, token: str) -> int | None:
        return self.token_to_index.get(token)

    def _encode_plain(self, text: str) -> list[int]:
        table, unk = self.token_to_index, self.token_to_index[REPLACEMENT_CHAR]
        return [table.get(ch, unk) for ch in text]

    def encode(self, text: str) -> list[int]:
        if self._special_re is None:
            return self._encode_plain(text)
        ids: list[int] = []
        last = 0
        for m in self._special_re.finditer(text):
            ids += self._encode_plain(text[last:m.start()])
            ids.append(self.token_to_index[m.group()])
            last = m.end()
        ids += self._encode_plain(text[last:])
        return ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def token_byte_lengths(self) -> list[int]:
        """The UTF-8 bytes of each id's text: decode(ids) is their concatenation."""
        return [len(t.encode("utf-8")) for t in self.id_to_token]

    def decode(self, ids: Iterable[int]) -> str:
        vocab, ids = self.id_to_token, [int(i) for i in ids]
        if ids and (min(ids) < 0 or max(ids) >= len(vocab)):
            bad = next(i for i in ids if not 0 <= i < len(vocab))
            raise ValueError(f"token id {bad} is outside this char vocabulary of {len(vocab)}")
        return "".join(vocab[i] for i in ids)

    # -------------------------------------------------------------- files

    def to_dict(self) -> dict:
        return {"type": "char", "version": 1, "special_tokens": self.special_tokens,
                "chars": self.id_to_token[len(self.special_tokens):], "unknown_char": REPLACEMENT_CHAR}

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CharTokenizer":
        data = read_tokenizer_json(path)
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = "char tokenizer") -> "CharTokenizer":
        if data.get("type") != "char" or not isinstance(data.get("chars"), list):
            raise UserError(f"{source} is not a char tokenizer file (expected \"type\": \"char\" and a \"chars\" list)")
        chars = data["chars"]
        if any(not isinstance(c, str) or len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise UserError(f"{source}: \"chars\" must be distinct single characters; regenerate the tokenizer")
        tok = cls(chars, data.get("special_tokens") or [EOT_TOKEN])
        if tok.id_to_token[len(tok.special_tokens):] != chars:
            raise UserError(f"{source}: \"chars\" must be sorted and include U+FFFD; regenerate the tokenizer")
        return tok


def read_tokenizer_json(path: str | os.PathLike) -> dict:
    """The JSON object of a tokenizer file of either kind, or a UserError naming the file."""
    return read_json(path, "tokenizer file", "regenerate it with tokenize_local_bpe.py")


def load_tokenizer(path: str | os.PathLike):
    """Open a tokenizer file of either kind: a HuggingFace `tokenizers` JSON (top-level "model")
    gives a BPETokenizer, {"type": "char", ...} a CharTokenizer."""
    data = read_tokenizer_json(path)
    if "model" in data:
        from tokenizer_bpe import BPETokenizer

        return BPETokenizer().load(path)
    if data.get("type") == "char":
        return CharTokenizer.from_dict(data, str(path))
    raise UserError(f"{path} is neither a `tokenizers` JSON (no \"model\" key) nor a char tokenizer "
                    f"(no \"type\": \"char\"); pass the file tokenize_local_bpe.py wrote")
