"""What dataset_cleaner.py does to one document: normalise it, neutralise special tokens, judge its
quality and fingerprint it for deduplication. Pure functions of the text (plus HashIndex, a lean set
of fingerprints); no files, no processes. Every step is a CleanOptions field and a cleaner flag.

The trust boundary (clean_content, after every other step): each "<|" in content becomes "< |", so
no special token (<|endoftext|>, <|user|>, any <|word|>) survives in content and a scraped page
cannot inject a turn.
"""
from __future__ import annotations

import functools
import hashlib
import html
import re
import string
import unicodedata
import zlib
from dataclasses import dataclass

import numpy as np


@dataclass
class CleanOptions:
    """Every setting of the cleaner, per-document steps and the reading of files alike."""
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


# ---------------------------------------------------------------------------- normalisation

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


def _nfc(text: str) -> str:
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


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


def _looks_like_html(text: str) -> bool:
    return "```" not in text and bool(_HTML_TAG_RE.search(text) or _HTML_ENTITY_RE.search(text))


def _normalize_whitespace(text: str) -> str:
    # the substring tests skip regex scans that would find nothing (3-10x faster)
    if not text.isascii():
        text = _USPACE_RE.sub(" ", text)
    if "  " in text or "\t" in text:
        text = _INNER_SPACES_RE.sub(" ", text)
    if " \n" in text or "\t\n" in text:
        text = _TRAILING_RE.sub("", text)
    if "\n\n\n" in text:
        text = _NEWLINES_RE.sub("\n\n", text)
    return text.strip()


def normalize_text(text: str, options: CleanOptions | None = None) -> str:
    """The cleaning steps in order (no filters, no neutralisation), each on by default except PII:
      nfc            NFC normalisation (--no_nfc)
      control_chars  control characters except \\n and \\t removed, \\r\\n -> \\n, zero-width characters
                     and bidi overrides removed (--no_control_chars)
      html           only where the text looks like HTML (a known tag or an entity) and has no ```
                     fence: script, style and comments dropped, block tags -> newlines, other tags
                     removed, then entities unescaped (--no_html)
      scrub_pii      emails -> <EMAIL>, URLs -> <URL>, phone numbers -> <PHONE> (--scrub_pii;
                     approximate: digit groups such as "100 200 3000" match too)
      whitespace     Unicode spaces -> " ", runs inside a line -> one space (indentation kept),
                     trailing spaces removed, at most one blank line in a row, ends stripped"""
    o = options or CleanOptions()
    if o.nfc:
        text = _nfc(text)
    if o.control_chars:
        text = _CONTROL_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    if o.html and _looks_like_html(text):
        text = strip_html(text)
        if o.nfc:  # entities can decode to combining characters
            text = _nfc(text)
    if o.scrub_pii:
        text = _PHONE_RE.sub("<PHONE>", _URL_RE.sub("<URL>", _EMAIL_RE.sub("<EMAIL>", text)))
    if o.whitespace:
        text = _normalize_whitespace(text)
    return text


def neutralize_special_tokens(text: str) -> str:
    """`<|` -> `< |`, so no `<|...|>` special token can appear in content."""
    return text.replace("<|", "< |")


def clean_content(text: str, options: CleanOptions | None = None) -> str:
    """normalize_text, then the mandatory last steps (after everything that could rebuild a `<|`):
    lone surrogates -> U+FFFD, special tokens neutralised. Never drops anything."""
    text = normalize_text(text, options)
    if not text.isascii() and _SURROGATE_RE.search(text):
        text = _SURROGATE_RE.sub("\ufffd", text)
    return neutralize_special_tokens(text)


# ---------------------------------------------------------------------------- quality filters

_LETTERS_RE = re.compile(r"[^\W\d_]+")
_ASCII_LETTERS = bytes(string.ascii_letters, "ascii")


def _count_letters(text: str) -> int:
    if text.isascii():  # bytes.translate deletes the letters at C speed
        return len(text) - len(text.encode("ascii").translate(None, _ASCII_LETTERS))
    return len(text) - len(_LETTERS_RE.sub("", text))


def _has_dup_lines(text: str, options: CleanOptions) -> bool:
    lines = [line for line in text.split("\n") if line.strip()] if "\n" in text else []
    if len(lines) < 2:
        return False
    seen: set[str] = set()
    dup_lines = dup_chars = 0
    for line in lines:
        if line in seen:
            dup_lines += 1
            dup_chars += len(line)
        seen.add(line)
    return dup_lines / len(lines) > options.max_dup_line_frac or dup_chars / len(text) > options.max_dup_line_char_frac


def _dup_ngram_char_frac(words: list[str], n: int, total_chars: int) -> float:
    """Share of word characters covered by word n-grams that occurred earlier in the document."""
    seen: set[tuple[str, ...]] = set()
    covered = bytearray(len(words))
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        if gram in seen:
            covered[i:i + n] = b"\x01" * n
        else:
            seen.add(gram)
    return sum(len(w) for w, c in zip(words, covered) if c) / total_chars


def _has_dup_ngrams(words: list[str], word_chars: int, options: CleanOptions) -> bool:
    if len(words) <= 5:
        return False
    # no repeated 5-gram means no repeated longer n-gram either: one C-speed test for most documents
    if len(set(zip(words, words[1:], words[2:], words[3:], words[4:]))) == len(words) - 4:
        return False
    return any(_dup_ngram_char_frac(words, n, word_chars) > options.max_dup_ngram_frac - 0.01 * (n - 5)
               for n in range(5, 11))


def quality_reason(text: str, options: CleanOptions | None = None) -> str | None:
    """The first of Gopher's quality rules (loosened where noted) a document breaks, or None:
      too_short, too_long  under --min_chars (20) or over --max_chars (500,000) characters
      too_few_words        under --min_words (5) words (Gopher: 50; one-line documents are common here)
      mean_word_length     outside [2, 10] characters (Gopher: [3, 10])
      non_alpha            over --max_non_alpha (0.4) of the non-space characters are not letters
                           (a per-character form of Gopher's "80% of words contain a letter")
      dup_lines            over 30% of the non-empty lines, or 20% of the characters, are repeated lines
      dup_ngrams           repeated word n-grams cover over 15% (n=5), 14%, ... 10% (n=10) of the
                           word characters (Gopher's thresholds)"""
    o = options or CleanOptions()
    if len(text) < o.min_chars:
        return "too_short"
    if len(text) > o.max_chars:
        return "too_long"
    words = text.split()
    if len(words) < o.min_words or not words:
        return "too_few_words"
    word_chars = sum(map(len, words))
    if not o.min_mean_word_length <= word_chars / len(words) <= o.max_mean_word_length:
        return "mean_word_length"
    if (word_chars - _count_letters(text)) / word_chars > o.max_non_alpha:
        return "non_alpha"
    if _has_dup_lines(text, o):
        return "dup_lines"
    if _has_dup_ngrams(words, word_chars, o):
        return "dup_ngrams"
    return None


def filters_apply(options: CleanOptions, kind: str) -> bool:
    """Whether the quality filters judge a document of this kind (text, chat or instruction). "auto"
    judges plain text only: in chat and instruction records short answers and numbers are normal."""
    return options.quality_filters == "on" or (options.quality_filters == "auto" and kind == "text")


def clean_document(text: str, options: CleanOptions | None = None, kind: str = "text") -> tuple[str | None, str | None]:
    """(cleaned text, None) or (None, drop reason) for one plain-text document."""
    o = options or CleanOptions()
    text = clean_content(text, o)
    if not text.strip():
        return None, "empty"
    reason = quality_reason(text, o) if filters_apply(o, kind) else None
    return (None, reason) if reason else (text, None)


def clean_text(text: str, options: CleanOptions | None = None, kind: str = "text") -> str | None:
    """Clean one document; None when it is dropped (empty, or a quality filter for `kind`)."""
    return clean_document(text, options, kind)[0]


# ---------------------------------------------------------------------------- fingerprints and dedup

def exact_hash(doc: str) -> int:
    """64-bit blake2b fingerprint of the document with whitespace runs collapsed (case kept)."""
    key = " ".join(doc.split()).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


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
    """LSH band keys (lsh_bands uint64) of the MinHash signature of the lowercased word 5-grams.
    With 128 permutations in 16 bands of 8 rows, a pair of documents shares a key with probability
    6% at Jaccard similarity 0.5, 62% at 0.7, 95% at 0.8 and ~100% at 0.9. The keys take 128 bytes
    per kept document: 12.8 GB per 100M documents."""
    o = options or CleanOptions()
    a, b, mult = _minhash_params(o.minhash_perms)
    words = text.lower().split() or [""]
    word_hashes = np.fromiter(map(zlib.crc32, map(str.encode, words)), np.uint64, len(words))  # no Python frames
    k = min(o.shingle_size, len(words))
    n = len(words) - k + 1
    shingles = word_hashes[:n] * mult[0]
    for j in range(1, k):
        shingles += word_hashes[j:j + n] * mult[j]
    shingles = np.unique((_mix64(shingles) >> np.uint64(32)).astype(np.uint32))
    signature = np.full(o.minhash_perms, np.iinfo(np.uint32).max, np.uint32)
    for start in range(0, len(shingles), 2048):  # bounds the (perms, chunk) temporary
        signature = np.minimum(signature, (a * shingles[start:start + 2048] + b).min(axis=1))
    rows = signature.astype(np.uint64).reshape(o.lsh_bands, -1)
    return _mix64((rows * mult[:rows.shape[1]]).sum(axis=1, dtype=np.uint64) + np.arange(o.lsh_bands, dtype=np.uint64))


class HashIndex:
    """A set of uint64 hashes in 8 bytes each: sorted numpy runs, merged like a binary counter
    (O(log n) runs), so a lookup is a few np.searchsorted calls. 0.8 GB per 100M hashes (1.6 GB for
    a moment while the largest runs merge), where a Python set of the same ints takes about 7 GB."""

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

    @property
    def nbytes(self) -> int:
        return self.exact.nbytes + self.near.nbytes

    def keep(self, hashes: np.ndarray, band_keys: np.ndarray | None) -> tuple[np.ndarray, int, int]:
        """(keep mask, exact duplicates, near duplicates) for one batch of documents."""
        n = len(hashes)
        keep = self.exact.first_new(hashes) if self.options.dedup and n else np.ones(n, bool)
        n_exact = int(n - keep.sum())
        survivors = np.flatnonzero(keep)
        if self.options.near_dedup and len(survivors):
            keep[survivors[~self._first_near(band_keys[survivors])]] = False
        return keep, n_exact, int(n - keep.sum()) - n_exact

    def _first_near(self, keys: np.ndarray) -> np.ndarray:
        """Mask of the rows sharing no band key with the index or with an earlier kept row; adds them."""
        ok = ~self.near.contains(keys.ravel()).reshape(keys.shape).any(axis=1)
        batch: set[int] = set()
        for j in np.flatnonzero(ok):
            row = keys[j].tolist()
            if batch.isdisjoint(row):
                batch.update(row)
            else:
                ok[j] = False
        self.near.add_new(keys[ok].ravel())
        return ok
