"""Stream raw text, JSONL and chat data into one clean, deduplicated training corpus.

    python dataset_cleaner.py --input raw/ extra.jsonl.gz --output data/clean.txt --workers 2

Inputs (files, directories, globs; each may be gzipped, detected by its magic bytes):
  .txt (any other name too)  one document per line; --txt_docs blank|eot|file for documents separated
                             by blank lines, by <|endoftext|>, or one per file
  .jsonl / .ndjson           one record per line; a .json file starting with "[" is a JSON array of
                             records (parsed incrementally), any other .json is read as JSONL
Records: {"messages": [{"role", "content"}]}, {"conversations": [{"from", "value"}]} (from human/user,
gpt/assistant/bot/model, system), {"instruction", "input", "output"} (also "context"/"response"),
or a text field (--text_field NAME; by default "text", then "content"), or a bare JSON string.
Messages with other roles (tool, function) are skipped and counted.

Output (--format txt|jsonl, default from the --output extension; a .gz output is gzipped):
  txt    each document followed by <|endoftext|> and nothing else: "doc1<|endoftext|>doc2<|endoftext|>".
         No newline is added after the separator, so a tokenizer that encodes this text as it is
         decodes back to these bytes exactly.
  jsonl  {"text": document} per line, without the separator.
A conversation is one document, rendered as in DESIGN.md: `<|{role}|>{content}\\n` per message.
An instruction record is the user turn `instruction + "\\n\\n" + input` (just `instruction` when the
input is empty) and the assistant turn `output`. render_chat() here gives the same string as
tokenizer_bpe.render_chat.

Trust boundary: after every other step, each "<|" inside raw text or message content becomes "< |"
(a space inserted; ASCII, visible, unchanged by NFC/NFKC). So no special token such as
<|endoftext|>, <|user|> or any <|word|> survives in content and a scraped page cannot inject a turn.
Lone UTF-16 surrogates (possible through JSON "\\ud800" escapes) become U+FFFD.

Cleaning (each step on by default, switchable):
  NFC normalisation (--no_nfc); control characters except \\n and \\t, \\r\\n -> \\n, zero-width
  characters (U+200B-U+200D, U+2060, U+FEFF, U+00AD, U+180E) and bidi overrides (U+202A-E,
  U+2066-9) removed (--no_control_chars); HTML (--no_html), only where the text looks like HTML
  (a known tag or an entity) and has no ``` code fence: script/style/comments dropped, block tags
  become newlines, other tags removed, then entities unescaped; whitespace (--no_whitespace):
  Unicode spaces -> " ", runs of spaces/tabs inside a line -> one space (indentation kept), trailing
  spaces removed, at most one blank line in a row, document stripped.
  Optional --scrub_pii: emails -> <EMAIL>, URLs -> <URL>, phone numbers -> <PHONE> (regexes:
  approximate; long digit groups with separators, such as "100 200 3000", also match).
Quality filters (--quality_filters auto|on|off; auto = on for plain text, off for chat and
instruction records, where short answers and numbers are normal). A document is dropped when:
  too_short       fewer than --min_chars (20) characters     too_long   more than --max_chars (500,000)
  too_few_words   fewer than --min_words (5) words (Gopher: 50; lowered because one-line documents
                  are common here)
  mean_word_length outside [2, 10] characters (Gopher: [3, 10])
  non_alpha       more than --max_non_alpha (0.4) of its non-space characters are not letters
                  (a character version of Gopher's "80% of words contain a letter")
  dup_lines       more than 30% of its non-empty lines, or 20% of its characters, are repeated lines
  dup_ngrams      repeated word n-grams cover more than 15% (n=5), 14%, ... 10% (n=10) of its word
                  characters (Gopher's thresholds)
Deduplication (after filtering, on everything, in the parent process so the result does not depend
on --workers; the first copy is kept):
  exact   blake2b 8-byte hash of the cleaned document with whitespace runs collapsed (case kept).
          Hashes live in sorted numpy uint64 runs merged like a binary counter: 8 bytes per unique
          document, 0.8 GB per 100M documents (1.6 GB for a moment while the largest runs merge);
          a Python set of the same ints would take about 7 GB.
  near    (--near_dedup) MinHash LSH on lowercased word 5-gram shingles, 128 permutations, 16 bands
          of 8 rows: a pair is caught with probability 6% at Jaccard 0.5, 62% at 0.7, 95% at 0.8,
          ~100% at 0.9. 16 band keys of 8 bytes per kept document: 12.8 GB per 100M documents.
Bad input: undecodable bytes become U+FFFD and are counted (--strict: fail naming file and byte
offset); malformed JSON lines are skipped, counted and their first line numbers shown (--strict:
fail); missing, empty or binary inputs, or an output that is also an input, are one-line errors.
Work split: the parent reads 1 MB blocks of whole lines (JSON arrays and multi-line text documents
are split into records by the parent); --workers processes decode, parse, clean, hash and encode
them; the parent deduplicates in input order and writes, so the output is byte-identical for any
--workers. At most 2 * workers + 1 blocks are in flight: memory is constant apart from the dedup
index (and the largest document: --txt_docs file holds a whole file). tqdm shows bytes read; the
stats table ends the run and is saved as JSON (--stats_file, default OUTPUT.stats.json). The output
and the stats appear atomically: a failed run leaves any previous output untouched.

Notebook API: clean_text(text, options) -> str | None; render_chat(messages); iter_documents(paths,
options) yields cleaned documents; clean_files(inputs, output, options) -> stats dict.
"""
from __future__ import annotations

import argparse
import codecs
import contextlib
import functools
import glob
import gzip
import hashlib
import html
import json
import multiprocessing as mp
import os
import re
import string
import sys
import time
import unicodedata
import zlib
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from common import UserError, atomic_path, atomic_write_json, cli_main

EOT = "<|endoftext|>"
ROLES = ("system", "user", "assistant")
ROLE_ALIASES = {"system": "system", "user": "user", "human": "user", "prompter": "user", "assistant": "assistant",
                "gpt": "assistant", "bot": "assistant", "model": "assistant", "chatgpt": "assistant"}
INPUT_SUFFIXES = (".txt", ".text", ".md", ".jsonl", ".ndjson", ".json")
BLOCK_BYTES = 1 << 20  # input bytes per work item sent to a worker


@dataclass
class CleanOptions:
    nfc: bool = True
    control_chars: bool = True
    html: bool = True
    whitespace: bool = True
    scrub_pii: bool = False
    quality_filters: str = "auto"  # auto | on | off
    min_chars: int = 20
    max_chars: int = 500_000
    min_words: int = 5
    min_mean_word_length: float = 2.0
    max_mean_word_length: float = 10.0
    max_non_alpha: float = 0.4
    max_dup_line_frac: float = 0.30
    max_dup_line_char_frac: float = 0.20
    max_dup_ngram_frac: float = 0.15  # for 5-grams; 0.01 less per extra word, down to 0.10 for 10-grams
    dedup: bool = True
    near_dedup: bool = False
    shingle_size: int = 5
    minhash_perms: int = 128
    lsh_bands: int = 16
    text_field: str | None = None
    txt_docs: str = "line"  # line | blank | eot | file
    strict: bool = False


# ---------------------------------------------------------------------------- cleaning

_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u180e\u200b-\u200d\u2060\ufeff\u202a-\u202e\u2066-\u2069]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_HTML_TAG_RE = re.compile(
    r"</?(?:html|head|body|div|p|br|span|a|b|i|u|em|strong|li|ul|ol|h[1-6]|table|tbody|thead|tr|td|th|img|meta|"
    r"link|script|style|section|article|nav|header|footer|blockquote|pre|code|hr|font|center|iframe|form|input|"
    r"button|label|small|sup|sub)(?:\s[^<>]*)?/?>", re.I)
_HTML_ENTITY_RE = re.compile(r"&(?:[a-zA-Z][a-zA-Z0-9]{1,30}|#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6});")
_HTML_DROP_OPEN_RE = re.compile(r"<(script|style)\b|<!--", re.I)
_HTML_DROP_CLOSE = {"script": re.compile(r"</script\s*>", re.I), "style": re.compile(r"</style\s*>", re.I),
                    None: re.compile("-->")}
_HTML_BREAK_RE = re.compile(r"<br\s*/?>|</(?:p|div|li|h[1-6]|tr|table|blockquote|pre|section|article|ul|ol)\s*>", re.I)
_ANY_TAG_RE = re.compile(r"<[!/]?[a-zA-Z][^<>]*>")
_USPACE_RE = re.compile("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_INNER_SPACES_RE = re.compile(r"(?<=\S)[ \t]{2,}")
_TRAILING_RE = re.compile(r"(?<![ \t])[ \t]+(?=\n|$)")  # starts only at a run's first space: linear
_NEWLINES_RE = re.compile(r"\n{3,}")
_EMAIL_RE = re.compile(r"(?<![\w.%+-])[\w.%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}\b")
_URL_RE = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'`]+[^\s<>\"'`.,;:!?)\]}]")
_PHONE_RE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]?\d{3,4}(?!\w)")
_LETTERS_RE = re.compile(r"[^\W\d_]+")
_ASCII_LETTERS = bytes(string.ascii_letters, "ascii")


def neutralize_special_tokens(text: str) -> str:
    """`<|` -> `< |`, so no `<|...|>` special token can appear in content."""
    return text.replace("<|", "< |")


def _drop_scripts_and_comments(text: str) -> str:
    """Remove <script>/<style> elements and <!-- comments --> in one linear pass (an unclosed one runs
    to the end, as in a browser; a lazy `.*?` regex would be quadratic on many unclosed tags)."""
    pieces, pos = [], 0
    for m in _HTML_DROP_OPEN_RE.finditer(text):
        if m.start() < pos:
            continue
        pieces.append(text[pos:m.start()])
        close = _HTML_DROP_CLOSE[m.group(1) and m.group(1).lower()].search(text, m.end())
        pos = close.end() if close else len(text)
    return "".join(pieces) + text[pos:]


def strip_html(text: str) -> str:
    """Tags out (block tags become newlines), then entities unescaped, so `&lt;b&gt;` stays as text."""
    if _HTML_TAG_RE.search(text):
        text = _drop_scripts_and_comments(text)
        text = _HTML_BREAK_RE.sub("\n", text)
        text = _ANY_TAG_RE.sub("", text)
    return html.unescape(text)


def normalize_text(text: str, options: CleanOptions | None = None) -> str:
    """The cleaning steps (no filters, no neutralisation) in order: NFC, control and zero-width
    characters, HTML, PII, whitespace."""
    o = options or CleanOptions()
    if o.nfc and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if o.control_chars:
        text = _CONTROL_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    if o.html and "```" not in text and (_HTML_TAG_RE.search(text) or _HTML_ENTITY_RE.search(text)):
        text = strip_html(text)
        if o.nfc and not unicodedata.is_normalized("NFC", text):
            text = unicodedata.normalize("NFC", text)
    if o.scrub_pii:
        text = _PHONE_RE.sub("<PHONE>", _URL_RE.sub("<URL>", _EMAIL_RE.sub("<EMAIL>", text)))
    if o.whitespace:  # the substring tests skip regex scans that would find nothing (3-10x faster)
        if not text.isascii():
            text = _USPACE_RE.sub(" ", text)
        if "  " in text or "\t" in text:
            text = _INNER_SPACES_RE.sub(" ", text)
        if " \n" in text or "\t\n" in text:
            text = _TRAILING_RE.sub("", text)
        if "\n\n\n" in text:
            text = _NEWLINES_RE.sub("\n\n", text)
        text = text.strip()
    return text


def _finish(text: str, options: CleanOptions) -> str:
    """Mandatory last steps, after everything that could rebuild a `<|`."""
    text = normalize_text(text, options)
    if not text.isascii() and _SURROGATE_RE.search(text):
        text = _SURROGATE_RE.sub("\ufffd", text)
    return neutralize_special_tokens(text)


def _dup_ngram_char_frac(words: list[str], n: int, total_chars: int) -> float:
    seen: set[tuple[str, ...]] = set()
    covered = bytearray(len(words))
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        if gram in seen:
            covered[i:i + n] = b"\x01" * n
        else:
            seen.add(gram)
    return sum(len(w) for w, c in zip(words, covered) if c) / total_chars


def quality_reason(text: str, options: CleanOptions | None = None) -> str | None:
    """The Gopher-style rule a document breaks (see the module docstring), or None."""
    o = options or CleanOptions()
    n = len(text)
    if n < o.min_chars:
        return "too_short"
    if n > o.max_chars:
        return "too_long"
    words = text.split()
    if len(words) < o.min_words or not words:
        return "too_few_words"
    word_chars = sum(map(len, words))
    if not o.min_mean_word_length <= word_chars / len(words) <= o.max_mean_word_length:
        return "mean_word_length"
    if text.isascii():
        letters = n - len(text.encode("ascii").translate(None, _ASCII_LETTERS))
    else:
        letters = n - len(_LETTERS_RE.sub("", text))
    if (word_chars - letters) / word_chars > o.max_non_alpha:
        return "non_alpha"
    lines = [line for line in text.split("\n") if line.strip()] if "\n" in text else []
    if len(lines) > 1:
        seen: set[str] = set()
        dup_lines = dup_chars = 0
        for line in lines:
            if line in seen:
                dup_lines += 1
                dup_chars += len(line)
            seen.add(line)
        if dup_lines / len(lines) > o.max_dup_line_frac or dup_chars / n > o.max_dup_line_char_frac:
            return "dup_lines"
    if len(words) > 5:
        # no repeated 5-gram means no repeated longer n-gram either: one C-speed test for most documents
        if len(set(zip(words, words[1:], words[2:], words[3:], words[4:]))) < len(words) - 4:
            for k in range(5, 11):
                if _dup_ngram_char_frac(words, k, word_chars) > o.max_dup_ngram_frac - 0.01 * (k - 5):
                    return "dup_ngrams"
    return None


def _filters_on(options: CleanOptions, kind: str) -> bool:
    return options.quality_filters == "on" or (options.quality_filters == "auto" and kind == "text")


def clean_document(text: str, options: CleanOptions | None = None, kind: str = "text") -> tuple[str | None, str | None]:
    """(cleaned text, None) or (None, drop reason) for one plain-text document."""
    o = options or CleanOptions()
    text = _finish(text, o)
    if not text.strip():
        return None, "empty"
    reason = quality_reason(text, o) if _filters_on(o, kind) else None
    return (None, reason) if reason else (text, None)


def clean_text(text: str, options: CleanOptions | None = None, kind: str = "text") -> str | None:
    """Clean one document; None when it is dropped (empty, or a quality filter for `kind`)."""
    return clean_document(text, options, kind)[0]


def render_chat(messages: Sequence[Any], add_generation_prompt: bool = False, neutralize: bool = True) -> str:
    """DESIGN.md's chat format: `<|{role}|>{content}\\n` per message, then `<|endoftext|>` (a training
    document) or `<|assistant|>` (a prompt). Messages are {"role", "content"} dicts or (role, content)
    pairs; content is neutralised unless `neutralize=False`. Same string as tokenizer_bpe.render_chat."""
    return _render_turns(messages, neutralize) + ("<|assistant|>" if add_generation_prompt else EOT)


def _render_turns(messages: Sequence[Any], neutralize: bool = True) -> str:
    parts = []
    for m in messages:
        role, content = (m["role"], m["content"]) if isinstance(m, dict) else m
        if role not in ROLES:
            raise ValueError(f"chat role {role!r} is not one of {ROLES}")
        parts.append(f"<|{role}|>{neutralize_special_tokens(content) if neutralize else content}\n")
    return "".join(parts)


# ---------------------------------------------------------------------------- records

def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI-style parts: [{"type": "text", "text": ...}]
        texts = [p.get("text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "\n".join(texts) if texts else None
    return None


def record_to_document(obj: Any, options: CleanOptions | None = None) -> tuple[str | None, str | None, str, int]:
    """One parsed JSON record -> (document or None, drop reason, kind, skipped messages).
    kind is text, chat, instruction or unknown."""
    o = options or CleanOptions()
    if isinstance(obj, str):
        return (*clean_document(obj, o, "text"), "text", 0)
    if not isinstance(obj, dict):
        return None, "unknown_record", "unknown", 0
    if o.text_field and isinstance(obj.get(o.text_field), str):
        return (*clean_document(obj[o.text_field], o, "text"), "text", 0)
    msgs = obj.get("messages", obj.get("conversations"))
    if isinstance(msgs, list):
        kind, turns, skipped = "chat", [], 0
        for m in msgs:
            m = m if isinstance(m, dict) else {}
            role = ROLE_ALIASES.get(str(m.get("role", m.get("from", ""))).strip().lower())
            content = _content_text(m.get("content", m.get("value")))
            if role is None or content is None:
                skipped += 1
                continue
            turns.append((role, content))
    elif isinstance(obj.get("instruction"), str):
        kind, skipped = "instruction", 0
        inp = obj.get("input", obj.get("context")) or ""
        out = obj.get("output", obj.get("response"))
        if not isinstance(inp, str) or not isinstance(out, str):
            return None, "unknown_record", kind, 0
        instruction, inp = _finish(obj["instruction"], o), _finish(inp, o)
        turns = [("user", instruction + "\n\n" + inp if inp else instruction), ("assistant", out)]
    else:
        for name in ("text", "content") if not o.text_field else ():
            if isinstance(obj.get(name), str):
                return (*clean_document(obj[name], o, "text"), "text", 0)
        return None, ("missing_text_field" if o.text_field else "unknown_record"), "unknown", 0
    cleaned = [(r, c if kind == "instruction" and r == "user" else _finish(c, o)) for r, c in turns]
    cleaned = [(r, c) for r, c in cleaned if c.strip()]
    if not any(r != "system" for r, _ in cleaned):
        return None, "empty", kind, skipped
    if _filters_on(o, kind):
        reason = quality_reason("\n".join(c for _, c in cleaned), o)
        if reason:
            return None, reason, kind, skipped
    return _render_turns(cleaned, neutralize=False), None, kind, skipped


# ---------------------------------------------------------------------------- hashing and dedup

_M1, _M2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wraps mod 2**64)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


@functools.lru_cache(maxsize=4)
def _minhash_params(perms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b) of the permutations x -> a*x + b mod 2**32 (uint32: twice as fast as uint64 in numpy),
    and odd uint64 multipliers that combine values into one hash."""
    rng = np.random.default_rng(20261127)
    a, b = (rng.integers(0, 2**32, (perms, 1), dtype=np.uint32) for _ in range(2))
    return a | np.uint32(1), b, rng.integers(0, 2**64, 64, dtype=np.uint64, endpoint=False) | np.uint64(1)


def minhash_band_keys(text: str, options: CleanOptions | None = None) -> np.ndarray:
    """LSH band keys (lsh_bands uint64) of the MinHash signature of the lowercased word shingles."""
    o = options or CleanOptions()
    a, b, mult = _minhash_params(o.minhash_perms)
    words = text.lower().split() or [""]
    wh = np.fromiter(map(zlib.crc32, map(str.encode, words)), np.uint64, len(words))  # C-level loop, no frames
    k = min(o.shingle_size, len(words))
    n = len(words) - k + 1
    shingles = wh[:n] * mult[0]
    for j in range(1, k):
        shingles += wh[j:j + n] * mult[j]
    shingles = np.unique((_mix64(shingles) >> np.uint64(32)).astype(np.uint32))
    sig = np.full(o.minhash_perms, np.iinfo(np.uint32).max, np.uint32)
    for start in range(0, len(shingles), 2048):
        sig = np.minimum(sig, (a * shingles[start:start + 2048] + b).min(axis=1))
    rows = sig.astype(np.uint64).reshape(o.lsh_bands, -1)
    return _mix64((rows * mult[:rows.shape[1]]).sum(axis=1, dtype=np.uint64) + np.arange(o.lsh_bands, dtype=np.uint64))


def exact_hash(doc: str) -> int:
    key = " ".join(doc.split()).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


class HashIndex:
    """A set of uint64 hashes in 8 bytes each: sorted numpy runs, merged like a binary counter
    (O(log n) runs), so a lookup is a few np.searchsorted calls."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(r) for r in self.runs)

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self.runs)

    def contains(self, values: np.ndarray) -> np.ndarray:
        found = np.zeros(len(values), bool)
        for run in self.runs:
            pos = np.minimum(np.searchsorted(run, values), len(run) - 1)
            found |= run[pos] == values
        return found

    def add_new(self, values: np.ndarray) -> None:
        """Add values that are not in the index yet (duplicates among them are fine)."""
        values = np.unique(values)
        if not len(values):
            return
        self.runs.append(values)
        while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
            merged = np.concatenate([self.runs.pop(), self.runs.pop()])
            merged.sort()
            self.runs.append(merged)

    def first_new(self, values: np.ndarray) -> np.ndarray:
        """Mask of the values not in the index and not earlier in `values`; adds them."""
        uniq, first = np.unique(values, return_index=True)
        fresh = ~self.contains(uniq)
        mask = np.zeros(len(values), bool)
        mask[first[fresh]] = True
        self.add_new(uniq[fresh])
        return mask


class Deduper:
    """Exact and near dedup of batches, in order (the first copy wins)."""

    def __init__(self, options: CleanOptions) -> None:
        self.options, self.exact, self.near = options, HashIndex(), HashIndex()

    def keep(self, hashes: np.ndarray, band_keys: np.ndarray | None) -> tuple[np.ndarray, int, int]:
        """(keep mask, exact duplicates, near duplicates) for one batch of documents."""
        n = len(hashes)
        keep = self.exact.first_new(hashes) if self.options.dedup and n else np.ones(n, bool)
        n_exact = int(n - keep.sum())
        idx = np.flatnonzero(keep)
        if self.options.near_dedup and len(idx):
            keys = band_keys[idx]
            ok = ~self.near.contains(keys.ravel()).reshape(keys.shape).any(axis=1)
            batch: set[int] = set()
            for j in np.flatnonzero(ok):
                row = keys[j].tolist()
                if batch.isdisjoint(row):
                    batch.update(row)
                else:
                    ok[j] = False
            self.near.add_new(keys[ok].ravel())
            keep[idx[~ok]] = False
        return keep, n_exact, int(n - keep.sum()) - n_exact


# ---------------------------------------------------------------------------- worker

def _decode_counting(b: bytes, path: str, offset: int, gz: bool, strict: bool, res: dict) -> str:
    """UTF-8 decode; undecodable bytes become U+FFFD and are counted in res (or fail with --strict)."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError as e:
        if strict:
            raise UserError(f"{path}: invalid UTF-8 at byte offset {offset + e.start}"
                            f"{' of the decompressed data' if gz else ''}; fix the file or drop --strict to "
                            f"replace undecodable bytes with U+FFFD") from None
        _REPLACED[0] = 0
        text = b.decode("utf-8", "dataset_cleaner.count")
        res["replaced"] += _REPLACED[0]
        if len(res["replaced_at"]) < 5:
            res["replaced_at"].append(offset + e.start)
        return text


_REPLACED = [0]


def _count_and_replace(e: UnicodeError) -> tuple[str, int]:
    _REPLACED[0] += e.end - e.start
    return "\ufffd", e.end


codecs.register_error("dataset_cleaner.count", _count_and_replace)


def _block_units(item: tuple, o: CleanOptions, res: dict) -> Iterator[tuple[str, str, int]]:
    """A block of whole lines (raw bytes) -> ("json" | "text", line, line number) units."""
    _, path, data, first_line, offset, jsonl, gz = item
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        lines, pos = [], offset
        for b in data.split(b"\n"):
            lines.append(_decode_counting(b, path, pos, gz, o.strict, res))
            pos += len(b) + 1
    if lines and not lines[-1]:
        lines.pop()
    for i, t in enumerate(lines):
        if t.strip():
            yield ("json", t, first_line + i) if jsonl else ("text", t.rstrip("\r"), first_line + i)


def _unit_to_doc(unit_kind: str, payload: Any, o: CleanOptions) -> tuple[str | None, str | None, str, int]:
    if unit_kind == "text":
        return (*clean_document(payload, o, "text"), "text", 0)
    if unit_kind == "bad":  # a broken JSON array element, found by the reader
        return None, "malformed_json", "unknown", 0
    if unit_kind == "json":
        try:
            payload = json.loads(payload)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            return None, "malformed_json", "unknown", 0
    return record_to_document(payload, o)


def _encode(doc: str, fmt: str) -> bytes:
    if fmt == "jsonl":
        return (json.dumps({"text": doc}, ensure_ascii=False) + "\n").encode("utf-8")
    return (doc + EOT if fmt == "txt" else doc).encode("utf-8")


def _process(job: tuple[CleanOptions, str, tuple]) -> dict:
    """Worker: one work item -> the encoded kept documents as one blob, their end offsets, hashes,
    band keys and counters. Only dedup is left to the parent."""
    o, fmt, item = job
    path = item[1]
    res: dict[str, Any] = {"path": path, "docs_in": 0, "kinds": Counter(), "dropped": Counter(), "skipped": 0,
                           "malformed": 0, "malformed_lines": [], "replaced": 0, "replaced_at": []}
    if item[0] == "units":
        res["replaced"], res["replaced_at"] = item[3]
    units = _block_units(item, o, res) if item[0] == "lines" else item[2]
    parts, hashes, keys = [], [], []
    for unit_kind, payload, line in units:
        doc, reason, kind, skipped = _unit_to_doc(unit_kind, payload, o)
        res["docs_in"] += 1
        res["kinds"][kind] += 1
        res["skipped"] += skipped
        if doc is None:
            res["dropped"][reason] += 1
            if reason == "malformed_json":
                if o.strict:
                    raise UserError(f"{path}:{line}: not valid JSON; fix the line or drop --strict to skip such lines")
                res["malformed"] += 1
                if len(res["malformed_lines"]) < 5:
                    res["malformed_lines"].append(line)
            continue
        parts.append(_encode(doc, fmt))
        hashes.append(exact_hash(doc) if o.dedup else 0)
        if o.near_dedup:
            keys.append(minhash_band_keys(doc, o))
    res["ends"] = np.cumsum([len(p) for p in parts], dtype=np.int64)
    res["blob"] = b"".join(parts)
    res["hashes"] = np.array(hashes, dtype=np.uint64)
    res["keys"] = np.stack(keys) if keys else None
    return res


# ---------------------------------------------------------------------------- reading

def _split_incomplete_utf8(b: bytes) -> tuple[bytes, bytes]:
    """Split a UTF-8 sequence cut off at the end of `b` into the carry-over for the next read."""
    for i in range(1, min(4, len(b)) + 1):
        c = b[-i]
        if c & 0xC0 != 0x80:  # the last lead (or ASCII) byte
            need = 2 if c >> 5 == 6 else 3 if c >> 4 == 14 else 4 if c >> 3 == 30 else 1
            return (b[:-i], b[-i:]) if need > i else (b, b"")
    return b, b""


class _FileReader:
    """Turns one input file into work items: ("lines", ...) blocks of raw whole lines for JSONL and
    one-document-per-line text (decoded and parsed in the workers), or ("unit", kind, payload, line)
    for JSON arrays and multi-line text documents, which need the file read in order."""

    def __init__(self, path: Path, options: CleanOptions, stats: "CleanStats", pbar: Any, block_bytes: int) -> None:
        self.path, self.o, self.stats, self.pbar, self.block_bytes = path, options, stats, pbar, block_bytes
        with open(path, "rb") as f:
            self.gz = f.read(2) == b"\x1f\x8b"
        try:
            with self._open() as (_, stream):
                head = stream.read(1 << 16)
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(f"{path}: corrupt or truncated data ({e}); re-create or re-download it") from None
        if b"\x00" in head:
            raise UserError(f"{path} looks like a binary file (NUL byte at offset {head.index(0)}"
                            f"{' of the decompressed data' if self.gz else ''}); pass UTF-8 text, JSONL or JSON")
        name = path.name.lower().removesuffix(".gz")
        first = head.removeprefix(codecs.BOM_UTF8).lstrip()[:1]
        self.fmt = "array" if name.endswith(".json") and first == b"[" else \
            "jsonl" if name.endswith((".jsonl", ".ndjson", ".json")) else "txt"
        self.on_disk = 0
        self.res = {"replaced": 0, "replaced_at": []}  # bytes this process decodes itself

    @contextlib.contextmanager
    def _open(self) -> Iterator[tuple[Any, Any]]:
        """(raw file, decompressed stream): the raw position drives the progress bar."""
        with open(self.path, "rb") as raw:
            if not self.gz:
                yield raw, raw
                return
            with gzip.GzipFile(fileobj=raw) as stream:
                yield raw, stream

    def _tick(self, raw: Any) -> None:
        pos = raw.tell()
        if self.pbar is not None:
            self.pbar.update(pos - self.on_disk)
        self.stats.bytes_in_on_disk += pos - self.on_disk
        self.on_disk = pos

    def items(self) -> Iterator[tuple]:
        try:
            with self._open() as (raw, stream):
                if self.fmt == "array":
                    yield from self._array_units(self._pieces(raw, stream))
                elif self.fmt == "jsonl" or self.o.txt_docs == "line":
                    yield from self._blocks(raw, stream)
                else:
                    yield from self._text_units(self._pieces(raw, stream))
                self._tick(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(f"{self.path}: corrupt or truncated data ({e}); re-create or re-download it") from None

    def take_replaced(self) -> tuple[int, list[int]]:
        """Undecodable bytes this process met since the last call (they travel with the work item,
        so the stats come out in input order whatever the number of workers)."""
        taken = self.res["replaced"], self.res["replaced_at"]
        self.res = {"replaced": 0, "replaced_at": []}
        return taken

    def _blocks(self, raw: Any, stream: Any) -> Iterator[tuple]:
        line, offset = 1, 0
        while data := stream.read(self.block_bytes):
            if not data.endswith(b"\n"):
                data += stream.readline()
            if offset == 0 and data.startswith(codecs.BOM_UTF8):
                data, offset = data[3:], 3
            self._tick(raw)
            self.stats.bytes_in += len(data)
            yield "lines", str(self.path), data, line, offset, self.fmt == "jsonl", self.gz
            line += data.count(b"\n")
            offset += len(data)

    def _pieces(self, raw: Any, stream: Any) -> Iterator[str]:
        """Decoded lines (a long line in ~1 MB pieces, never splitting a UTF-8 character)."""
        carry, offset = b"", 0
        while b := stream.readline(1 << 20):
            b, carry = (carry + b, b"") if b.endswith(b"\n") else _split_incomplete_utf8(carry + b)
            if offset == 0 and b.startswith(codecs.BOM_UTF8):
                b, offset = b[3:], 3
            if offset % (1 << 22) < len(b):
                self._tick(raw)
            self.stats.bytes_in += len(b)
            yield _decode_counting(b, str(self.path), offset, self.gz, self.o.strict, self.res)
            offset += len(b)
        if carry:
            yield _decode_counting(carry, str(self.path), offset, self.gz, self.o.strict, self.res)

    def _text_units(self, pieces: Iterator[str]) -> Iterator[tuple]:
        """Documents separated by blank lines, by <|endoftext|>, or one per file."""
        mode, buf, start, n = self.o.txt_docs, [], 1, 1
        for t in pieces:
            if mode == "blank" and not t.strip():
                if buf:
                    yield "unit", "text", "".join(buf), start
                buf = []
            elif mode == "eot" and EOT in t:
                *docs, t = t.split(EOT)
                for d in docs:
                    doc, buf = "".join(buf) + d, []
                    if doc.strip():
                        yield "unit", "text", doc, start
                    start = n
                buf.append(t)
            else:
                if not buf:
                    start = n
                buf.append(t)
            n += t.endswith("\n")
        if buf and "".join(buf).strip():
            yield "unit", "text", "".join(buf), start

    def _array_units(self, pieces: Iterator[str]) -> Iterator[tuple]:
        """Incremental parse of `[record, record, ...]`; a broken element ends the file (counted)."""
        decoder = json.JSONDecoder()
        st = {"buf": "", "pos": 0, "line": 1, "eof": False}

        def fill() -> bool:
            piece = next(pieces, None)
            if piece is None:
                st["eof"] = True
                return False
            st["buf"], st["pos"] = st["buf"][st["pos"]:] + piece, 0
            return True

        def advance(to: int) -> None:
            st["line"] += st["buf"].count("\n", st["pos"], to)
            st["pos"] = to

        def peek() -> str:  # the next non-space character ("" at the end)
            while True:
                advance(_JSON_SPACE_RE.match(st["buf"], st["pos"]).end())
                if st["pos"] < len(st["buf"]) or not fill():
                    return st["buf"][st["pos"]:st["pos"] + 1]

        peek()
        advance(st["pos"] + 1)  # the "[" the format check saw
        first = True
        while (c := peek()) != "]":
            if not first:
                if c != ",":
                    yield "unit", "bad", None, st["line"]
                    return
                advance(st["pos"] + 1)
                peek()
            first = False
            while True:
                buf, pos = st["buf"], st["pos"]
                try:
                    obj, end = decoder.raw_decode(buf, pos)
                    if end < len(buf) or st["eof"]:  # a value touching the end might continue (a number)
                        break
                except RecursionError:
                    yield "unit", "bad", None, st["line"]
                    return
                except json.JSONDecodeError as e:
                    if st["eof"] or not (e.pos >= len(buf) - 16 or e.msg.startswith("Unterminated")):
                        yield "unit", "bad", None, st["line"]
                        return
                want = 2 * (len(buf) - pos) + 1  # read as much again: linear in the element's size
                while len(st["buf"]) - st["pos"] < want and fill():
                    pass
            yield "unit", "obj", obj, st["line"]
            advance(end)


_JSON_SPACE_RE = re.compile(r"[ \t\r\n]*")


# ---------------------------------------------------------------------------- pipeline

@dataclass
class CleanStats:
    files: list[str] = field(default_factory=list)
    docs_in: int = 0
    docs_out: int = 0
    bytes_in: int = 0  # uncompressed bytes read
    bytes_in_on_disk: int = 0
    bytes_out: int = 0
    kinds_in: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    duplicates_exact: int = 0
    duplicates_near: int = 0
    malformed_lines: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    replaced_bytes: int = 0
    replaced_examples: list[str] = field(default_factory=list)
    skipped_messages: int = 0
    dedup_index_bytes: int = 0
    elapsed_s: float = 0.0

    def add(self, res: dict) -> None:
        self.docs_in += res["docs_in"]
        self.kinds_in.update(res["kinds"])
        self.dropped.update(res["dropped"])
        self.skipped_messages += res["skipped"]
        self.malformed_lines += res["malformed"]
        self.malformed_examples = (self.malformed_examples + [f"{res['path']}:{n}" for n in res["malformed_lines"]])[:5]
        self.replaced_bytes += res["replaced"]
        self.replaced_examples = (self.replaced_examples + [f"{res['path']}@{n}" for n in res["replaced_at"]])[:5]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kinds_in"], d["dropped"] = dict(sorted(self.kinds_in.items())), dict(self.dropped.most_common())
        d["mb_per_s"] = round(self.bytes_in / 1e6 / max(self.elapsed_s, 1e-9), 3)
        return d

    def table(self) -> str:
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(self.kinds_in.items()))
        rows = [("files", f"{len(self.files):,}"), ("documents in", f"{self.docs_in:,} ({kinds})"),
                ("documents out", f"{self.docs_out:,}"),
                ("bytes in / out", f"{self.bytes_in:,} / {self.bytes_out:,}"),
                ("time", f"{self.elapsed_s:.1f} s ({self.to_dict()['mb_per_s']:.2f} MB/s)")]
        rows += [(f"dropped: {k}", f"{v:,}") for k, v in self.dropped.most_common()]
        for name, n, first in (("malformed JSON lines", self.malformed_lines, self.malformed_examples),
                               ("undecodable bytes replaced", self.replaced_bytes, self.replaced_examples)):
            if n:
                rows.append((name, f"{n:,} (first: {', '.join(first)})"))
        if self.skipped_messages:
            rows.append(("skipped messages (other roles)", f"{self.skipped_messages:,}"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def expand_inputs(paths: Iterable[str | os.PathLike], exclude: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Files, directories (recursive; known suffixes, optionally .gz; hidden files and *.stats.json
    skipped) and globs -> a sorted, de-duplicated list. Raises UserError for missing or empty input."""
    excluded = {Path(p).resolve() for p in exclude}
    files: list[Path] = []

    def from_dir(d: Path, arg: str) -> list[Path]:
        found = [p for p in sorted(d.rglob("*")) if p.is_file() and not p.name.startswith(".")
                 and p.name.lower().removesuffix(".gz").endswith(INPUT_SUFFIXES)
                 and not p.name.endswith(".stats.json") and p.resolve() not in excluded and p.stat().st_size]
        if not found:
            raise UserError(f"--input {arg}: no non-empty {'/'.join(INPUT_SUFFIXES)} files (optionally .gz) in "
                            f"this directory")
        return found

    for arg in map(str, paths):
        p = Path(arg)
        if p.is_dir():
            files += from_dir(p, arg)
        elif p.is_file():
            if p.stat().st_size == 0:
                raise UserError(f"--input {arg}: file is empty; pass a file with text in it")
            files.append(p)
        elif glob.has_magic(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                raise UserError(f"--input {arg}: no files match this pattern")
            for m in map(Path, matches):  # any suffix, but not hidden files, stats files or empty files
                if m.is_dir():
                    files += from_dir(m, m.as_posix())
                elif not m.name.startswith(".") and not m.name.endswith(".stats.json") and m.stat().st_size:
                    files.append(m)
        else:
            raise UserError(f"--input {arg}: no such file or directory (check the path)")
    unique, seen = [], set()
    for f in files:
        if f.resolve() not in seen and f.resolve() not in excluded:
            seen.add(f.resolve())
            unique.append(f)
    if not unique:
        raise UserError(f"--input {' '.join(map(str, paths))}: all matching files are empty")
    return unique


def _validate(options: CleanOptions, workers: int) -> None:
    if options.quality_filters not in ("auto", "on", "off"):
        raise UserError(f"--quality_filters {options.quality_filters}: use auto, on or off")
    if options.txt_docs not in ("line", "blank", "eot", "file"):
        raise UserError(f"--txt_docs {options.txt_docs}: use line, blank, eot or file")
    if options.near_dedup and (options.lsh_bands < 1 or options.minhash_perms % options.lsh_bands):
        raise UserError(f"--minhash_perms {options.minhash_perms} must be a multiple of --lsh_bands "
                        f"{options.lsh_bands}")
    if workers < 0:
        raise UserError(f"--workers {workers}: use 0 (all cores) or a positive number")


def _work_items(files: list[Path], o: CleanOptions, stats: CleanStats, pbar: Any, block_bytes: int) -> Iterator[tuple]:
    """Line blocks as they are; single units grouped into ("units", path, [...], replaced bytes)."""
    for path in files:
        stats.files.append(str(path))
        reader = _FileReader(path, o, stats, pbar, block_bytes)
        units: list[tuple] = []
        size = 0
        for item in reader.items():
            if item[0] == "lines":
                yield item
                continue
            units.append(item[1:])
            size += len(item[2]) if isinstance(item[2], str) else 256
            if size >= block_bytes:
                yield "units", str(path), units, reader.take_replaced()
                units, size = [], 0
        replaced = reader.take_replaced()
        if units or replaced[0]:
            yield "units", str(path), units, replaced


def _results(items: Iterator[tuple], o: CleanOptions, fmt: str, workers: int) -> Iterator[dict]:
    """Worker results in input order, with at most 2 * workers + 1 items in flight (bounded memory)."""
    if workers <= 1:
        yield from (_process((o, fmt, item)) for item in items)
        return
    with mp.get_context().Pool(workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.apply_async(_process, ((o, fmt, item),)))
            if len(pending) > 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _pipeline(files: list[Path], o: CleanOptions, fmt: str, stats: CleanStats, workers: int, pbar: Any,
              block_bytes: int) -> Iterator[tuple[bytes, np.ndarray]]:
    """(encoded kept documents, their end offsets) per work item, deduplicated in input order."""
    dedup = Deduper(o)
    for res in _results(_work_items(files, o, stats, pbar, block_bytes), o, fmt, workers):
        stats.add(res)
        keep, n_exact, n_near = dedup.keep(res["hashes"], res["keys"])
        stats.duplicates_exact += n_exact
        stats.duplicates_near += n_near
        for reason, n in (("duplicate", n_exact), ("near_duplicate", n_near)):
            if n:
                stats.dropped[reason] += n
        stats.dedup_index_bytes = dedup.exact.nbytes + dedup.near.nbytes
        blob, ends = res["blob"], res["ends"]
        if not keep.all():
            starts = ends - np.diff(ends, prepend=0)
            blob = b"".join(blob[s:e] for s, e in zip(starts[keep].tolist(), ends[keep].tolist()))
            ends = np.cumsum((ends - starts)[keep])
        stats.docs_out += len(ends)
        stats.bytes_out += len(blob)
        yield blob, ends


def iter_documents(paths: Iterable[str | os.PathLike], options: CleanOptions | None = None, workers: int = 1,
                   stats: CleanStats | None = None) -> Iterator[str]:
    """Cleaned, deduplicated documents (without the separator) from files, directories or globs."""
    o = options or CleanOptions()
    _validate(o, workers)
    for blob, ends in _pipeline(expand_inputs(paths), o, "docs", stats if stats is not None else CleanStats(),
                                workers, None, BLOCK_BYTES):
        start = 0
        for end in ends.tolist():
            yield blob[start:end].decode("utf-8")
            start = end


def clean_files(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, options: CleanOptions | None = None,
                fmt: str | None = None, workers: int = 1, stats_file: str | os.PathLike | None = None,
                progress: bool = False, report: bool = False, block_bytes: int = BLOCK_BYTES) -> dict:
    """Clean `inputs` into `output` (atomically) and write the stats JSON; returns the stats dict.
    `progress`: tqdm by bytes on stderr; `report`: the stats table on stderr at the end."""
    o, out = options or CleanOptions(), Path(output)
    stats_path = Path(stats_file) if stats_file else Path(f"{out}.stats.json")
    workers = workers or os.cpu_count() or 1
    _validate(o, workers)
    fmt = fmt or ("jsonl" if out.name.lower().removesuffix(".gz").endswith(".jsonl") else "txt")
    if fmt not in ("txt", "jsonl"):
        raise UserError(f"--format {fmt}: use txt or jsonl")
    if out.is_dir():
        raise UserError(f"--output {out} is a directory; give a file path such as {out / 'clean.txt'}")
    for given, flag in ((out, "--output"), (stats_path, "--stats_file")):
        if given.resolve() in {Path(p).resolve() for p in inputs}:
            raise UserError(f"{flag} {given} is also an input; write to a new file")
    if stats_path.resolve() == out.resolve():
        raise UserError(f"--stats_file {stats_path} is the --output file; pick another name")
    files = expand_inputs(inputs, exclude=[out, stats_path])  # a directory or glob input skips the output
    parent = next((p for p in out.resolve().parents if p.exists()), Path("/"))
    if not os.access(parent, os.W_OK):
        raise UserError(f"--output {out}: folder {parent} is not writable; choose another --output")

    from tqdm import tqdm
    stats, t0 = CleanStats(), time.perf_counter()
    pbar = tqdm(total=sum(f.stat().st_size for f in files), unit="B", unit_scale=True, unit_divisor=1024,
                desc="cleaning", file=sys.stderr, disable=not progress, mininterval=0.5)
    with pbar, atomic_path(out) as tmp:
        with (gzip.open if out.name.endswith(".gz") else open)(tmp, "wb") as f:
            for blob, _ in _pipeline(files, o, fmt, stats, workers, pbar, block_bytes):
                try:
                    f.write(blob)
                except OSError as e:
                    raise UserError(f"cannot write --output {out}: {e.strerror or e}; free space or choose another "
                                    f"--output") from None
        if stats.docs_in == stats.malformed_lines:
            bad = f" ({stats.malformed_lines:,} malformed JSON lines, first {stats.malformed_examples[0]})" \
                if stats.malformed_lines else ""
            raise UserError(f"no documents found in {', '.join(map(str, inputs))}{bad}; check the files and "
                            f"--txt_docs / --text_field")
        if stats.docs_out == 0:
            top = ", ".join(f"{k} {v:,}" for k, v in stats.dropped.most_common(3))
            raise UserError(f"all {stats.docs_in:,} documents were dropped ({top}); nothing written to {out}; "
                            f"relax the filters (for example --quality_filters off)")
    stats.elapsed_s = time.perf_counter() - t0
    result = {**stats.to_dict(), "output": str(out), "format": fmt, "workers": workers, "options": asdict(o)}
    atomic_write_json(stats_path, result)
    if report:
        print(f"dataset_cleaner: {out} ({fmt}, {workers} worker{'s' * (workers > 1)})\n{stats.table()}\n"
              f"  stats saved to {stats_path}", file=sys.stderr)
    return result


# ---------------------------------------------------------------------------- CLI

def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", nargs="+", required=True, help="files, directories or globs (.gz allowed)")
    p.add_argument("--output", required=True, help="cleaned corpus (.txt, .jsonl, optionally .gz)")
    p.add_argument("--format", choices=["txt", "jsonl"], help="default: from the --output extension")
    p.add_argument("--txt_docs", default="line", choices=["line", "blank", "eot", "file"],
                   help="documents in text files: one per line (default), blank-line separated, "
                        "<|endoftext|> separated, or one per file")
    p.add_argument("--text_field", help="JSON field holding the text (default: text, then content)")
    p.add_argument("--workers", type=int, default=0, help="processes (default 0: all cores)")
    p.add_argument("--no_nfc", action="store_true")
    p.add_argument("--no_control_chars", action="store_true", help="keep control and zero-width characters")
    p.add_argument("--no_html", action="store_true", help="keep HTML tags and entities")
    p.add_argument("--no_whitespace", action="store_true", help="keep whitespace as it is")
    p.add_argument("--scrub_pii", action="store_true", help="emails, URLs, phone numbers -> <EMAIL> <URL> <PHONE>")
    p.add_argument("--quality_filters", default="auto", choices=["auto", "on", "off"])
    p.add_argument("--min_chars", type=int, default=CleanOptions.min_chars)
    p.add_argument("--max_chars", type=int, default=CleanOptions.max_chars)
    p.add_argument("--min_words", type=int, default=CleanOptions.min_words)
    p.add_argument("--max_non_alpha", type=float, default=CleanOptions.max_non_alpha)
    p.add_argument("--no_dedup", action="store_true", help="keep exact duplicates")
    p.add_argument("--near_dedup", action="store_true", help="also drop near duplicates (MinHash LSH)")
    p.add_argument("--minhash_perms", type=int, default=CleanOptions.minhash_perms)
    p.add_argument("--lsh_bands", type=int, default=CleanOptions.lsh_bands)
    p.add_argument("--strict", action="store_true", help="fail on undecodable bytes or malformed JSON lines")
    p.add_argument("--stats_file", help="default: OUTPUT.stats.json")
    p.add_argument("--no_progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    a = p.parse_args(argv)
    o = CleanOptions(nfc=not a.no_nfc, control_chars=not a.no_control_chars, html=not a.no_html,
                     whitespace=not a.no_whitespace, scrub_pii=a.scrub_pii, quality_filters=a.quality_filters,
                     min_chars=a.min_chars, max_chars=a.max_chars, min_words=a.min_words,
                     max_non_alpha=a.max_non_alpha, dedup=not a.no_dedup, near_dedup=a.near_dedup,
                     minhash_perms=a.minhash_perms, lsh_bands=a.lsh_bands, text_field=a.text_field,
                     txt_docs=a.txt_docs, strict=a.strict)
    clean_files(a.input, a.output, o, fmt=a.format, workers=a.workers, stats_file=a.stats_file,
                progress=not a.no_progress, report=True)
    return 0


if __name__ == "__main__":
    cli_main(main)
