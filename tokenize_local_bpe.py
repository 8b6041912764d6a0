"""Pre-tokenize a text corpus into a flat token file, as in the seed:

    python tokenize_local_bpe.py --input your_dataset.txt --vocab_size 32000 --compress

writes to the current directory (or --output_dir):
    tokens_bpe.bin             raw little-endian token ids, no header (uint16, or uint32 when the
                               vocabulary exceeds 65,536)
    tokens_bpe.bin.gz          gzip of the same bytes (--compress)
    bpe_tokenizer.json         the tokenizer (trained here, or a copy of --tokenizer)
    tokens_bpe_metadata.json   DESIGN.md "Token files": dtype, num_tokens, vocab_size, eot_token_id,
                               tokenizer_sha256, ... written last: its presence means "complete"
    tokens_bpe_val.bin (+ .gz, _metadata.json)   with --val_fraction
With --tokenizer_type char (the seed's phases 1-2) the default names are tokens_char.* and
char_tokenizer.json, so a character run never overwrites BPE files; --output_prefix renames the
token files. The closing summary prints the training command for the files written.

Documents. The input is cleaned text (dataset_cleaner.py) in which each document ends with
`<|endoftext|>`; it is encoded exactly as it is. A file that does not end with `<|endoftext|>`
gets one appended, so plain text without any is one document per file. Decoding the .bin gives
back the input byte for byte (files are read as bytes: `\\r\\n` is kept), plus those appended EOTs.
--val_fraction sends whole documents, evenly spread and chosen by position only (deterministic),
to a separate validation .bin.

Special tokens (trust boundary). Special-token strings in the input (`<|endoftext|>`, and
`<|user|>` `<|assistant|>` `<|system|>` when the tokenizer has them) become their ids: the
cleaner is what neutralises such strings in raw text, so this script trusts its input. The chat
tokens are registered automatically when the training sample contains `<|user|>`/`<|assistant|>`
(or with --special_tokens chat); if a reused tokenizer lacks them but the text has them, the
summary warns.

Scale. Everything streams. Files are read in 4 MB blocks cut at document ends; inside a very long
document, just before a space/tab/newline that follows a non-whitespace character: GPT-2's
pre-tokenizer always splits there, so the ids equal those of the whole document. Blocks are encoded
on all cores (tiktoken when it is exact, else HF `encode_batch`) while the next block is read and a
writer thread appends the previous one's ids to the .bin and the .gz. BPE training sees
--train_sample_bytes of text (default 100 MB) in 1 MB pieces evenly spread over the corpus; the HF
trainer's memory grows with the distinct words in its sample, about 1 KB each (1.5 GB peak for a
heavy-tailed 100 MB sample with 1.4M distinct words: lower the sample on a small machine).
Encoding itself holds a few blocks (~150-250 MB peak RSS measured), whatever the corpus size. Every output goes to a temporary file beside it, renamed only
when all succeeded, metadata last: a failed or interrupted run leaves the previous outputs as they
were and never a file set that looks complete.
"""
from __future__ import annotations

import argparse
import codecs
import glob
import gzip
import hashlib
import json
import os
import queue
import re
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from common import UserError, atomic_write_json, cli_main, sha256_file
from tokenizer import (CHAT_SPECIAL_TOKENS, EOT_TOKEN, REPLACEMENT_CHAR, CharTokenizer, _special_pattern,
                       load_tokenizer, special_tokens_for)

FORMAT_VERSION = 1
BLOCK_BYTES = 4 << 20          # read size; a block is encoded as one batch
# Texts per encoder call, measured on 2 cores: HF encode_batch_fast 8-9 MB/s on 4K-character texts
# but 6 on 64K (HF slows on long texts); tiktoken 44 MB/s on 512K, 38 on 64K (per-call overhead).
SEGMENT_CHARS = {"tiktoken": 1 << 19, "hf": 1 << 12, "char": 1 << 20}
MAX_CARRY_CHARS = 4 << 20      # a document longer than this is encoded in safe pieces
HARD_CARRY_CHARS = 16 << 20    # no safe place to cut in this many characters: cut anyway (warned)
SAMPLE_PIECE_BYTES = 1 << 20   # BPE training sample: pieces of this size, evenly spread
GZIP_MAGIC = b"\x1f\x8b"

# A place where encoding text[:p] and text[p:] separately gives the ids of the whole: text[p] is
# a space, tab or newline and text[p-1] is not whitespace under any regex engine's definition.
# Then no GPT-2 pre-token crosses p (letters, digits and punctuation runs stop at whitespace; a
# whitespace run starts at p either way), and the pre-tokenizer has no look-behind.
_SAFE_CUT = re.compile(r"[^\s\u180e\u200b\u200c\u200d\u2060\ufeff](?=[ \t\r\n])")


# ---------------------------------------------------------------------------- arguments

class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + line (common.cli_main prints it)
        raise UserError(f"{message} (see python tokenize_local_bpe.py --help)")


def parse_size(text: str) -> int:
    """'256M', '1.5G', '500000' -> bytes (decimal units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)[bB]?\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 500M or 2G")
    return int(float(m.group(1)) * 1000 ** " kmgt".index(m.group(2).lower() or " "))


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(description="Tokenize a corpus into tokens_bpe.bin (+ .gz) and its metadata.")
    p.add_argument("--input", nargs="+", required=True, help="text files, globs or directories (*.txt inside)")
    p.add_argument("--vocab_size", type=int, default=32000, help="BPE vocabulary size to train (default 32000)")
    p.add_argument("--compress", action="store_true", help="also write a .bin.gz (streamed gzip of the same bytes)")
    p.add_argument("--compress_level", type=int, default=1, choices=range(1, 10), metavar="1-9",
                   help="gzip level (default 1: token ids barely compress better at 9, and 1 is 3x faster)")
    p.add_argument("--output_dir", default=".", help="where to write (default: the current directory)")
    p.add_argument("--output_prefix", default=None, help="token file names (default tokens_bpe, or tokens_char)")
    p.add_argument("--tokenizer", default=None, help="reuse this tokenizer file (BPE or char) instead of training")
    p.add_argument("--tokenizer_type", choices=["bpe", "char"], default=None, help="what to train (default bpe)")
    p.add_argument("--train_sample_bytes", type=parse_size, default=parse_size("100M"),
                   help="train BPE on this much text evenly sampled from the corpus (default 100M; 0 = all)")
    p.add_argument("--min_frequency", type=int, default=2, help="BPE: minimum pair count for a merge (default 2)")
    p.add_argument("--special_tokens", nargs="+", default=["auto"],
                   help="auto (chat tokens when the sample has <|user|>/<|assistant|>), chat, none, "
                        "and/or extra tokens such as '<|tool|>'")
    p.add_argument("--val_fraction", type=float, default=0.0,
                   help="share of documents written to a separate validation .bin (default 0)")
    p.add_argument("--dtype", choices=["auto", "uint16", "uint32"], default="auto", help="token id type")
    p.add_argument("--encoder", choices=["auto", "tiktoken", "hf"], default="auto",
                   help="BPE encoder: tiktoken when installed and exact (auto), or HF tokenizers")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="encoding threads (default: all cores)")
    p.add_argument("--errors", choices=["strict", "replace"], default="strict",
                   help="invalid UTF-8: stop with the byte offset (strict) or use U+FFFD (replace)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


@dataclass
class Specials:
    mode: str                       # auto | chat | none
    extra: list[str] = field(default_factory=list)

    def tokens(self, chat: bool) -> list[str]:
        return special_tokens_for(chat and self.mode != "none", self.extra)


def parse_specials(values: Sequence[str]) -> Specials:
    modes = [v for v in values if v in ("auto", "chat", "none")]
    tokens = [v for v in values if v not in ("auto", "chat", "none")]
    if len(set(modes)) > 1:
        raise UserError(f"--special_tokens: choose one of auto, chat, none (got {' '.join(modes)})")
    for t in tokens:
        if not t or any(c.isspace() for c in t):
            raise UserError(f"--special_tokens {t!r}: a special token must be non-empty without whitespace, "
                            f"e.g. '<|tool|>'")
    mode = modes[0] if modes else "auto"
    if any(t in CHAT_SPECIAL_TOKENS for t in tokens) and mode != "none":
        mode = "chat"
    return Specials(mode, [t for t in tokens if t != EOT_TOKEN and t not in CHAT_SPECIAL_TOKENS])


def expand_inputs(patterns: Sequence[str], outputs: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for pat in patterns:
        if any(ch in pat for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(pat, recursive=True) if Path(p).is_file())
            if not found:
                raise UserError(f"--input {pat}: the pattern matches no file")
        elif Path(pat).is_dir():
            found = sorted(p for p in Path(pat).rglob("*.txt") if p.is_file())
            if not found:
                raise UserError(f"--input {pat}: the directory holds no .txt file")
        elif Path(pat).is_file():
            found = [Path(pat)]
        else:
            raise UserError(f"--input {pat}: file not found (check the path)")
        files += [f for f in found if f not in files]
    out = {o.resolve() for o in outputs}
    for f in files:
        if f.resolve() in out:
            raise UserError(f"--input {f} is also an output of this run; use another --output_dir")
    return files


def check_inputs(files: Sequence[Path], errors: str) -> list[Path]:
    """Fail before any work on what can be seen cheaply: empty, gzip, binary or non-UTF-8 starts."""
    nonempty = [f for f in files if f.stat().st_size > 0]
    if not nonempty:
        raise UserError(f"--input: {'the file is' if len(files) == 1 else 'all files are'} empty "
                        f"({', '.join(map(str, files[:3]))}); nothing to tokenize")
    for f in nonempty:
        with open(f, "rb") as fh:
            head = fh.read(1 << 16)
        if head.startswith(GZIP_MAGIC):
            raise UserError(f"--input {f} is gzip-compressed; decompress it first (gunzip -k {f})")
        try:
            codecs.getincrementaldecoder("utf-8")(errors).decode(head, final=len(head) == f.stat().st_size)
        except UnicodeDecodeError as e:
            what = "a binary file (it holds NUL bytes)" if b"\0" in head else "not UTF-8 text"
            raise UserError(f"--input {f} is {what}: invalid UTF-8 at byte {e.start}; clean it with "
                            f"dataset_cleaner.py or pass --errors replace") from None
    for f in set(files) - set(nonempty):
        print(f"warning: {f} is empty; skipped", file=sys.stderr)
    return nonempty


# ---------------------------------------------------------------------------- reading

def read_text(path: Path, errors: str, block_bytes: int | None = None) -> Iterator[tuple[str, int]]:
    """(text, bytes consumed) per block, then ("...", 0) once at the end of the file. The decoder
    holds back a UTF-8 character cut by a block edge, so no character is ever split."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors)
    offset, block_bytes = 0, block_bytes or BLOCK_BYTES
    with open(path, "rb") as f:
        while True:
            raw = f.read(block_bytes)
            pending, n = len(decoder.getstate()[0]), len(raw)
            try:
                box = [decoder.decode(raw, final=not raw)]
            except UnicodeDecodeError as e:
                raise UserError(f"--input {path}: invalid UTF-8 at byte {offset - pending + e.start}; clean it "
                                f"with dataset_cleaner.py or pass --errors replace") from None
            offset, raw = offset + n, None
            yield box.pop(), n  # keep no reference to the text while the caller works on it
            if not n:
                return


def cut_pattern(specials: Sequence[str]) -> re.Pattern:
    """Matches whose end is a safe cut: a special token, or the whitespace rule above."""
    alternatives = [re.escape(t) for t in sorted(specials, key=len, reverse=True)]
    return re.compile("|".join(alternatives + [_SAFE_CUT.pattern]))


def safe_cut(text: str, lo: int, hi: int, cuts: re.Pattern, special_re: re.Pattern | None,
             anywhere: bool = False) -> int:
    """The last position p in (lo, hi] where text may be cut without changing its ids; -1 if none.
    Never inside a special token. `anywhere`: any position is fine (the char tokenizer)."""
    p = hi if anywhere else -1
    end, step = hi, 256
    while p < 0 and end > lo:
        start = max(lo, end - step)
        for m in cuts.finditer(text, start, min(len(text), end + 1)):
            if lo < m.end() <= hi:
                p = m.end()
        end, step = start, step * 2
    if p >= 0 and special_re is not None:  # step out of a special token that spans p
        for m in special_re.finditer(text, max(0, p - 256), min(len(text), p + 256)):
            if m.start() < p < m.end():
                p = m.start()
    return p if p > lo else -1


@dataclass
class Block:
    segments: list[tuple[int, str]]   # (split: 0 train / 1 val, text), in input order
    nbytes: int
    docs: tuple[int, int]             # documents completed in this block, per split


class DocumentReader:
    """Streams the files as blocks of text segments that may be encoded independently."""

    def __init__(self, files: Sequence[Path], errors: str, specials: Sequence[str], anywhere: bool,
                 val_docs: int = 0, total_docs: int = 0, segment_chars: int = 1 << 19) -> None:
        self.files, self.errors, self.anywhere, self.segment_chars = files, errors, anywhere, segment_chars
        self.special_re = _special_pattern(specials)
        self.cuts = cut_pattern(specials)
        self.val_docs, self.total_docs = val_docs, total_docs
        self.doc_index = 0
        self.appended_eot = 0
        self.unsafe_cuts = 0

    def split_of(self, i: int) -> int:
        # exactly val_docs documents, evenly spread, the last one always among them
        if not self.val_docs:
            return 0
        n, v = self.total_docs, self.val_docs
        return int((i + 1) * v // n > i * v // n)

    def __iter__(self) -> Iterator[Block]:
        for path in self.files:
            carry = ""
            for text, nbytes in read_text(path, self.errors):
                buf, text = carry + text, None
                if nbytes == 0:  # end of file: make sure the last document ends with EOT
                    if buf and not buf.endswith(EOT_TOKEN):
                        buf += EOT_TOKEN
                        self.appended_eot += 1
                    end = len(buf)
                else:
                    end = buf.rfind(EOT_TOKEN)
                    end = 0 if end < 0 else end + len(EOT_TOKEN)
                    if len(buf) - end > MAX_CARRY_CHARS:  # a long document: cut inside it
                        cut = safe_cut(buf, end, len(buf) - MAX_CARRY_CHARS // 4, self.cuts, self.special_re,
                                       self.anywhere)
                        if cut < 0 and len(buf) - end > HARD_CARRY_CHARS:
                            cut = safe_cut(buf, end, len(buf) - 1, self.cuts, self.special_re, True)
                            self.unsafe_cuts += 1
                        end = max(end, cut)
                block, carry = self._block(buf, end, nbytes), buf[end:]
                del buf  # hold only the segments while the block is being encoded
                yield block

    def _block(self, buf: str, end: int, nbytes: int) -> Block:
        """Segments of buf[:end], which ends at a document end or a safe cut."""
        runs: list[tuple[int, int, int]] = []  # (split, start, stop)
        docs = [0, 0]
        start = 0
        if self.val_docs:
            pos = 0
            while (e := buf.find(EOT_TOKEN, pos, end)) >= 0:
                pos = e + len(EOT_TOKEN)
                split = self.split_of(self.doc_index)
                docs[split] += 1
                self.doc_index += 1
                if split != self.split_of(self.doc_index) or pos == end:
                    runs.append((split, start, pos))
                    start = pos
            if start < end:
                runs.append((self.split_of(self.doc_index), start, end))
        else:
            docs[0] = buf.count(EOT_TOKEN, 0, end)
            self.doc_index += docs[0]
            runs = [(0, 0, end)] if end else []
        segments = []
        seg, eot = self.segment_chars, len(EOT_TOKEN)
        for split, a, b in runs:
            while b - a > seg:
                cut = buf.find(EOT_TOKEN, a + seg, min(b, a + 4 * seg))  # a document end, else a safe cut
                cut = cut + eot if cut >= 0 else safe_cut(buf, a + seg // 2, a + seg, self.cuts, self.special_re,
                                                          self.anywhere)
                if cut < 0 or cut >= b:
                    break
                segments.append((split, buf[a:cut]))
                a = cut
            segments.append((split, buf[a:b]))
        return Block(segments, nbytes, (docs[0], docs[1]))


def count_documents(files: Sequence[Path]) -> int:
    """Documents as the reader will see them: EOTs, plus one per file not ending with EOT."""
    eot = EOT_TOKEN.encode()
    total = 0
    for path in files:
        tail = b""
        with open(path, "rb") as f:
            while chunk := f.read(64 << 20):
                data = tail + chunk
                total += data.count(eot)
                tail = data[-(len(eot) - 1):]  # too short to hold a whole EOT: none counted twice
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - len(eot)))
            if f.read() != eot:
                total += 1
    return total


def training_sample(files: Sequence[Path], sample_bytes: int, errors: str) -> Iterator[str]:
    """The whole corpus when it is small, else `sample_bytes` in 1 MB pieces evenly spread over it,
    each trimmed to whole lines where it has any (to whole characters otherwise)."""
    sizes = [f.stat().st_size for f in files]
    total = sum(sizes)
    if not sample_bytes or total <= sample_bytes:
        for f in files:
            for text, _ in read_text(f, errors):
                yield text
        return
    n = max(1, sample_bytes // SAMPLE_PIECE_BYTES)
    piece = sample_bytes // n
    starts = [i * total // n for i in range(n)]
    file_start = 0
    for f, size in zip(files, sizes):
        with open(f, "rb") as fh:
            for s in (s - file_start for s in starts if file_start <= s < file_start + size):
                fh.seek(s)
                raw = fh.read(min(piece, size - s))
                at_end = s + len(raw) >= size
                if s > 0 and (nl := raw.find(b"\n")) >= 0:
                    raw = raw[nl + 1:]
                if not at_end and (nl := raw.rfind(b"\n")) >= 0:
                    raw = raw[:nl + 1]
                while raw and 0x80 <= raw[0] < 0xC0:  # starts inside a character: skip its tail bytes
                    raw = raw[1:]
                try:  # final=False holds back a character cut at the end
                    yield codecs.getincrementaldecoder("utf-8")(errors).decode(raw, final=at_end)
                except UnicodeDecodeError as e:
                    raise UserError(f"--input {f}: invalid UTF-8 near byte {s + e.start}; clean it with "
                                    f"dataset_cleaner.py or pass --errors replace") from None
        file_start += size


def sample_has_chat(files: Sequence[Path], sample_bytes: int, errors: str) -> bool:
    markers = ("<|user|>", "<|assistant|>")
    return any(any(m in text for m in markers) for text in training_sample(files, sample_bytes, errors))


# ---------------------------------------------------------------------------- tokenizers

def train_char(files: Sequence[Path], errors: str, specials: Specials, total_bytes: int) -> CharTokenizer:
    """Count characters over the whole corpus (streamed); special-token strings are not counted."""
    candidates = special_tokens_for(specials.mode != "none", specials.extra)
    pattern = re.compile("(" + "|".join(map(re.escape, sorted(candidates, key=len, reverse=True))) + ")")
    keep = max(map(len, candidates)) - 1
    counts: Counter[str] = Counter()
    seen: set[str] = set()
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="counting characters", file=sys.stderr,
              mininterval=1.0) as bar:
        for path in files:
            carry = ""
            for text, nbytes in read_text(path, errors):
                text = carry + text
                cut = len(text) if nbytes == 0 else max(0, len(text) - keep)
                for m in pattern.finditer(text, max(0, cut - keep - 1)):
                    if m.start() < cut < m.end():
                        cut = m.end()
                parts = pattern.split(text[:cut])
                counts.update("".join(parts[0::2]))
                seen.update(parts[1::2])
                carry = text[cut:]
                bar.update(nbytes)
    chat = specials.mode == "chat" or (specials.mode == "auto" and bool(seen & set(CHAT_SPECIAL_TOKENS[:2])))
    return CharTokenizer(counts.keys(), specials.tokens(chat))


def train_bpe(files: Sequence[Path], args: argparse.Namespace, specials: Specials, total_bytes: int):
    from tokenizer_bpe import BPETokenizer

    sample = min(total_bytes, args.train_sample_bytes or total_bytes)
    chat = specials.mode == "chat"
    if specials.mode == "auto":
        chat = sample_has_chat(files, args.train_sample_bytes, args.errors)
    tokens = specials.tokens(chat)
    how = "the whole corpus" if sample == total_bytes else f"a {sample / 1e6:,.0f} MB sample evenly spread over it"
    print(f"training BPE (vocab {args.vocab_size:,}, min_frequency {args.min_frequency}) on {how}; "
          f"special tokens: {' '.join(tokens)}", file=sys.stderr)
    t = time.time()
    bpe = BPETokenizer().train(training_sample(files, args.train_sample_bytes, args.errors), args.vocab_size,
                               tokens, args.min_frequency, show_progress=sys.stderr.isatty())
    print(f"trained in {time.time() - t:.1f}s: vocabulary {bpe.vocab_size:,}", file=sys.stderr)
    return bpe


def added_tokens(tok) -> list[str]:
    if isinstance(tok, CharTokenizer):
        return list(tok.special_tokens)
    return [t.content for t in tok.tokenizer.get_added_tokens_decoder().values()]


class CharArrayEncoder:
    """CharTokenizer.encode, vectorised: a code point -> id lookup table (4.4 MB)."""

    def __init__(self, tok: CharTokenizer) -> None:
        first = len(tok.special_tokens)
        self.lut = np.full(0x110000, tok.token_to_index[REPLACEMENT_CHAR], dtype=np.uint32)
        chars = tok.id_to_token[first:]
        self.lut[[ord(c) for c in chars]] = np.arange(first, first + len(chars), dtype=np.uint32)
        self.ids = tok.token_to_index
        self.special_re = re.compile("(" + "|".join(map(re.escape, sorted(tok.special_tokens, key=len,
                                                                             reverse=True))) + ")")

    def _plain(self, text: str) -> np.ndarray:
        return self.lut[np.frombuffer(text.encode("utf-32-le"), dtype="<u4")]

    def encode_np(self, text: str) -> np.ndarray:
        parts = self.special_re.split(text)
        out = [self._plain(p) if i % 2 == 0 else np.array([self.ids[p]], dtype=np.uint32)
               for i, p in enumerate(parts) if p]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.uint32)

    def encode_batch_numpy(self, texts: list[str]) -> list[np.ndarray]:
        return [self.encode_np(t) for t in texts]


# ---------------------------------------------------------------------------- writing

class Sink:
    """One token file (+ its .gz), written through temporary paths; counts and hashes the bytes."""

    def __init__(self, bin_tmp: Path, gz_tmp: Path | None, gz_name: str, level: int) -> None:
        self.bin = open(bin_tmp, "wb")
        self.gz_raw = open(gz_tmp, "wb") if gz_tmp else None
        self.gz = gzip.GzipFile(filename=gz_name, mode="wb", fileobj=self.gz_raw, compresslevel=level,
                                mtime=0) if self.gz_raw else None
        self.sha = hashlib.sha256()
        self.num_tokens = 0
        self.num_documents = 0

    def write(self, ids: np.ndarray) -> None:
        data = ids.tobytes()
        self.bin.write(data)
        if self.gz:
            self.gz.write(data)
        self.sha.update(data)
        self.num_tokens += len(ids)

    def close(self, sync: bool = True, quiet: bool = False) -> None:
        try:
            if self.gz:
                self.gz.close()
            for f in (self.bin, self.gz_raw):
                if f and not f.closed:
                    f.flush()
                    if sync:
                        os.fsync(f.fileno())
                    f.close()
        except Exception:
            if not quiet:  # quiet: cleaning up after the real error
                raise


class Writer(threading.Thread):
    """Writes (split, ids) batches in the background: zlib, sha256 and file writes release the GIL,
    so compression overlaps with encoding."""

    def __init__(self, sinks: list[Sink]) -> None:
        super().__init__(daemon=True)
        self.sinks, self.queue, self.error = sinks, queue.Queue(maxsize=4), None

    def run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    for split, ids in item:
                        self.sinks[split].write(ids)
                except BaseException as e:  # noqa: BLE001 - handed to the main thread
                    self.error = e

    def put(self, item) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(item)

    def finish(self) -> None:
        self.queue.put(None)
        self.join()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self.error = self.error or RuntimeError("stopped")
        while self.is_alive():  # the queue may be full: keep offering the end marker
            try:
                self.queue.put(None, timeout=0.1)
            except queue.Full:
                pass


class Outputs:
    """Temporary files beside their targets; `commit` renames them all, metadata last."""

    def __init__(self) -> None:
        self.tmp: dict[Path, Path] = {}

    def temp(self, final: Path) -> Path:
        fd, name = tempfile.mkstemp(prefix=f".tmp-{final.name}.", dir=final.parent)
        os.close(fd)
        mask = os.umask(0)  # mkstemp makes 0600 files; give the results the usual permissions
        os.umask(mask)
        os.chmod(name, 0o666 & ~mask)
        self.tmp[final] = Path(name)
        return Path(name)

    def discard(self) -> None:
        for t in self.tmp.values():
            t.unlink(missing_ok=True)

    def commit(self, metadata: list[tuple[Path, dict]], stale: Sequence[Path]) -> None:
        for path, _ in metadata:  # the old "complete" marker goes first: a crash now looks incomplete
            path.unlink(missing_ok=True)
        for final, tmp in self.tmp.items():
            os.replace(tmp, final)
        self.tmp.clear()
        for path in stale:
            if path.exists():
                path.unlink()
                print(f"removed stale {path} (not produced by this run)", file=sys.stderr)
        for path, meta in metadata:
            atomic_write_json(path, meta)


# ---------------------------------------------------------------------------- main

def output_names(out_dir: Path, prefix: str | None, kind: str) -> dict[str, Path]:
    default = "tokens_char" if kind == "char" else "tokens_bpe"
    p = prefix or default
    names = {key: out_dir / f"{p}{suffix}" for key, suffix in (
        ("bin", ".bin"), ("gz", ".bin.gz"), ("meta", "_metadata.json"),
        ("val_bin", "_val.bin"), ("val_gz", "_val.bin.gz"), ("val_meta", "_val_metadata.json"))}
    names["tokenizer"] = out_dir / (f"{kind}_tokenizer.json" if p == default else f"{p}_tokenizer.json")
    return names


def validate_args(args: argparse.Namespace) -> Specials:
    for flag, ok, fix in (("vocab_size", args.vocab_size >= 1, "must be positive (the seed uses 32000)"),
                          ("val_fraction", 0.0 <= args.val_fraction <= 0.5, "use a value from 0 to 0.5 (e.g. 0.01)"),
                          ("workers", args.workers >= 1, "use at least 1"),
                          ("min_frequency", args.min_frequency >= 0, "must be 0 or more")):
        if not ok:
            raise UserError(f"--{flag} {getattr(args, flag)}: {fix}")
    if args.output_prefix is not None and (not args.output_prefix or Path(args.output_prefix).name != args.output_prefix):
        raise UserError(f"--output_prefix {args.output_prefix!r}: give a file name prefix; put the folder in --output_dir")
    specials = parse_specials(args.special_tokens)
    if args.encoder == "tiktoken":
        if args.tokenizer_type == "char":
            raise UserError("--encoder tiktoken applies to BPE tokenizers; drop it for --tokenizer_type char")
        try:
            import tiktoken  # noqa: F401
        except ImportError:
            raise UserError("--encoder tiktoken: tiktoken is not installed (pip install tiktoken, or make "
                            "install-extra); or use --encoder auto") from None
    if args.tokenizer is None and args.tokenizer_type != "char":
        if args.dtype == "uint16" and args.vocab_size > 65536:
            raise UserError(f"--dtype uint16 cannot hold --vocab_size {args.vocab_size} (ids up to "
                            f"{args.vocab_size - 1} > 65535); use --dtype uint32 or auto")
        if args.vocab_size < 256 + len(specials.tokens(True)):
            raise UserError(f"--vocab_size {args.vocab_size} is too small for byte-level BPE: use at least "
                            f"{256 + len(specials.tokens(True))} (256 bytes + special tokens)")
    return specials


def load_existing(args: argparse.Namespace, specials: Specials):
    try:
        tok = load_tokenizer(args.tokenizer)
    except UserError as e:
        raise UserError(f"--tokenizer: {e}") from None
    kind = "char" if isinstance(tok, CharTokenizer) else "bpe"
    if args.tokenizer_type and args.tokenizer_type != kind:
        raise UserError(f"--tokenizer {args.tokenizer} is a {kind} tokenizer but --tokenizer_type is "
                        f"{args.tokenizer_type}; drop --tokenizer_type")
    if tok.token_to_id(EOT_TOKEN) is None:
        raise UserError(f"--tokenizer {args.tokenizer} has no {EOT_TOKEN} token, which ends every document; "
                        f"train one with this script")
    missing = [t for t in ([] if specials.mode != "chat" else CHAT_SPECIAL_TOKENS) + specials.extra
               if tok.token_to_id(t) is None]
    if missing:
        raise UserError(f"--special_tokens: --tokenizer {args.tokenizer} lacks {' '.join(missing)}; "
                        f"retrain without --tokenizer to add them")
    if args.dtype == "uint16" and tok.vocab_size > 65536:
        raise UserError(f"--dtype uint16 cannot hold the {tok.vocab_size:,} ids of --tokenizer {args.tokenizer}; "
                        f"use --dtype uint32 or auto")
    return tok, kind


def write_tokenizer(args, tok, kind: str, names: dict[str, Path], outputs: "Outputs") -> str:
    """The tokenizer file beside the tokens (trained here, or a byte-for-byte copy); its sha256."""
    if args.tokenizer and names["tokenizer"].exists() and os.path.samefile(args.tokenizer, names["tokenizer"]):
        return sha256_file(names["tokenizer"])
    tmp = outputs.temp(names["tokenizer"])
    if args.tokenizer:
        shutil.copyfile(args.tokenizer, tmp)
    else:
        text = json.dumps(tok.to_dict(), indent=2) + "\n" if kind == "char" else tok.tokenizer.to_str(pretty=True)
        tmp.write_text(text, encoding="utf-8")
    return sha256_file(tmp)


def metadata(args, names: dict[str, Path], split: str, sink: Sink, tok, tok_sha: str, dtype: np.dtype, files,
             encoder: str, total_bytes: int, val: bool) -> dict:
    v = "val_" if split == "val" else ""
    settings = {k: getattr(args, k) for k in ("vocab_size", "tokenizer", "tokenizer_type", "train_sample_bytes",
                                              "min_frequency", "special_tokens", "val_fraction", "dtype", "workers",
                                              "compress", "compress_level", "errors")}
    return {"format_version": FORMAT_VERSION, "dtype": dtype.name, "num_tokens": sink.num_tokens,
            "vocab_size": tok.vocab_size, "eot_token_id": tok.token_to_id(EOT_TOKEN),
            "tokenizer_file": names["tokenizer"].name, "tokenizer_sha256": tok_sha,
            "tokenizer_type": "char" if isinstance(tok, CharTokenizer) else "bpe",
            "special_tokens": added_tokens(tok), "source_files": [str(f) for f in files], "source_bytes": total_bytes,
            "num_documents": sink.num_documents, "split": split, "bin_file": names[v + "bin"].name,
            "bin_sha256": sink.sha.hexdigest(), "gz_file": names[v + "gz"].name if args.compress else None,
            "val_metadata_file": names["val_meta"].name if val and not v else None,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "settings": {**settings, "encoder": encoder}}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.time()
    specials = validate_args(args)
    if args.workers != os.cpu_count():  # HF's thread pool (read when it first starts)
        os.environ["RAYON_NUM_THREADS"] = os.environ["RAYON_RS_NUM_CPUS"] = str(args.workers)
    tok, kind = load_existing(args, specials) if args.tokenizer else (None, args.tokenizer_type or "bpe")
    out_dir = Path(args.output_dir)
    names = output_names(out_dir, args.output_prefix, kind)
    files = check_inputs(expand_inputs(args.input, list(names.values())), args.errors)
    total_bytes = sum(f.stat().st_size for f in files)
    print(f"input: {len(files)} file(s), {total_bytes / 1e6:,.1f} MB", file=sys.stderr)
    val, total_docs, val_docs = args.val_fraction > 0, 0, 0
    if val:
        total_docs = count_documents(files)
        if total_docs < 2:
            raise UserError(f"--val_fraction {args.val_fraction}: the input is a single document (no "
                            f"{EOT_TOKEN} inside), so it cannot be split at document boundaries; separate "
                            f"documents with {EOT_TOKEN} (dataset_cleaner.py does) or pass several files")
        val_docs = min(total_docs - 1, max(1, round(total_docs * args.val_fraction)))

    created_dir = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--output_dir {out_dir}: cannot create it ({e.strerror or e}); pass another --output_dir") \
            from None
    outputs, sinks = Outputs(), []
    try:
        if tok is None:
            tok = train_char(files, args.errors, specials, total_bytes) if kind == "char" \
                else train_bpe(files, args, specials, total_bytes)
        if args.dtype == "uint16" and tok.vocab_size > 65536:
            raise UserError(f"--dtype uint16 cannot hold this {kind} vocabulary of {tok.vocab_size:,}; "
                            f"use --dtype uint32 or auto")
        dtype = np.dtype("<u2" if args.dtype == "uint16" or (args.dtype == "auto" and tok.vocab_size <= 65536)
                         else "<u4")
        tok_sha = write_tokenizer(args, tok, kind, names, outputs)
        if kind == "char":
            encoder, encoder_name = CharArrayEncoder(tok), "char"
            print("encoder: char lookup table", file=sys.stderr)
        else:
            tok.tokenizer.no_truncation()
            tok.tokenizer.no_padding()
            tok.num_threads = args.workers
            print(tok.set_encoder(args.encoder), file=sys.stderr)
            encoder, encoder_name = tok, tok.encoder_name
        for v in ["", "val_"] if val else [""]:
            sinks.append(Sink(outputs.temp(names[v + "bin"]), outputs.temp(names[v + "gz"]) if args.compress else None,
                              names[v + "bin"].name, args.compress_level))
        stats = encode_corpus(files, tok, encoder, sinks, dtype, args.errors, val_docs, total_docs, total_bytes)
        for sink in sinks:
            sink.close()
        metas = [(names[v + "meta"], metadata(args, names, split, sink, tok, tok_sha, dtype, files, encoder_name,
                                              total_bytes, val))
                 for v, split, sink in reversed(list(zip(["", "val_"], ["train", "val"], sinks)))]  # train last
        stale = ([] if args.compress else [names["gz"], names["val_gz"]]) + \
            ([] if val else [names["val_bin"], names["val_gz"], names["val_meta"]])
        outputs.commit(metas, stale)
    except BaseException as e:
        for sink in sinks:
            sink.close(sync=False, quiet=True)
        outputs.discard()
        if created_dir and not any(out_dir.iterdir()):
            out_dir.rmdir()
        if isinstance(e, OSError) and not (e.filename and Path(e.filename) in files):
            raise UserError(f"--output_dir {out_dir}: cannot write {names['bin'].name} and the files beside it "
                            f"({e.strerror or e}); free disk space or choose another --output_dir") from None
        raise
    summarize(args, names, sinks, stats, total_bytes, started, kind)
    return 0


@dataclass
class Stats:
    seconds: float
    appended_eot: int
    unsafe_cuts: int
    untokenized_chat_markers: int


def encode_corpus(files, tok, encoder, sinks: list[Sink], dtype: np.dtype, errors: str, val_docs: int,
                  total_docs: int, total_bytes: int) -> Stats:
    """Read, encode and write in a pipeline: while block k is encoded (all cores, no GIL), the main
    thread reads and cuts block k+1 and the writer thread compresses block k-1."""
    specials = added_tokens(tok)
    kind = "char" if isinstance(tok, CharTokenizer) else tok.encoder_name
    reader = DocumentReader(files, errors, specials, kind == "char", val_docs, total_docs, SEGMENT_CHARS[kind])
    watch = [m for m in CHAT_SPECIAL_TOKENS[:2] if m not in specials]
    markers = 0
    writer = Writer(sinks)
    writer.start()
    t = time.time()

    def finish(block: Block, future, bar) -> None:
        per_split: list[list[np.ndarray]] = [[], []]
        for (split, _), ids in zip(block.segments, future.result()):
            per_split[split].append(ids)
        item = []
        for split, arrays in enumerate(per_split[:len(sinks)]):
            if arrays:
                ids = np.concatenate(arrays)
                if dtype.itemsize == 2 and ids.size and int(ids.max()) > 0xFFFF:  # never a silent overflow
                    raise UserError(f"token id {int(ids.max())} does not fit uint16; use --dtype uint32")
                item.append((split, ids.astype(dtype, copy=False)))
            sinks[split].num_documents += block.docs[split]
        writer.put(item)
        bar.update(block.nbytes)

    try:
        with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenizing", file=sys.stderr,
                  mininterval=1.0) as bar, ThreadPoolExecutor(1) as stage:
            pending: deque = deque()
            for block in reader:
                texts = [text for _, text in block.segments]
                if watch:
                    markers += sum(text.count(m) for text in texts for m in watch)
                pending.append((block, stage.submit(encoder.encode_batch_numpy, texts)))
                if len(pending) > 1:
                    finish(*pending.popleft(), bar)
            while pending:
                finish(*pending.popleft(), bar)
        writer.finish()
    except BaseException:
        writer.stop()
        raise
    return Stats(time.time() - t, reader.appended_eot, reader.unsafe_cuts, markers)


def summarize(args, names: dict[str, Path], sinks: list[Sink], stats: Stats, total_bytes: int, started: float,
              kind: str) -> None:
    rate = total_bytes / 1e6 / max(stats.seconds, 1e-9)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [f"done in {time.time() - started:.1f}s: {total_bytes / 1e6:,.1f} MB of text encoded at {rate:,.1f} MB/s, "
             f"peak RSS {peak:,.0f} MB"]
    written = []
    for v, split, sink in zip(["", "val_"], ["train", "val"], sinks):
        lines.append(f"  {split + ':':6s} {sink.num_tokens:,} tokens, {sink.num_documents:,} documents -> "
                     f"{names[v + 'bin']}")
        written += [names[v + "bin"]] + ([names[v + "gz"]] if args.compress else []) + [names[v + "meta"]]
    lines.append("  files: " + ", ".join(map(str, written + [names["tokenizer"]])))
    if stats.appended_eot:
        lines.append(f"  {stats.appended_eot} file(s) did not end with {EOT_TOKEN}: one was appended to each")
    if stats.unsafe_cuts:
        lines.append(f"  warning: {stats.unsafe_cuts} place(s) with {HARD_CARRY_CHARS:,} characters and no "
                     f"whitespace were cut arbitrarily; the ids next to each cut may differ from a whole encode")
    if stats.untokenized_chat_markers:
        lines.append(f"  warning: the text holds {stats.untokenized_chat_markers:,} <|user|>/<|assistant|> "
                     f"markers but the tokenizer has no such tokens: they were encoded as plain text; retrain "
                     f"with --special_tokens chat")
    val_flag = f" --val_bin_file {names['val_bin']}" if len(sinks) > 1 else ""
    lines.append(f"next: python train_colab_mmap.py --bin_file {names['bin']} --tokenizer_file {names['tokenizer']} "
                 f"--metadata_file {names['meta']}{val_flag} --model_size {'tiny' if kind == 'char' else 'gpt2_small'}")
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    cli_main(main)
