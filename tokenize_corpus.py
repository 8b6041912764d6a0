"""The input side of tokenize_local_bpe.py: find and check the corpus files, stream them as blocks
of text that can be encoded independently, count their documents, and draw the evenly spread BPE
training sample."""
from __future__ import annotations

import codecs
import glob
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from common import UserError
from tokenizer import EOT_TOKEN, special_tokens_pattern

BLOCK_BYTES = 4 << 20          # read size; a block is encoded as one batch
MAX_CARRY_CHARS = 4 << 20      # a document longer than this is encoded in safe pieces
HARD_CARRY_CHARS = 16 << 20    # no safe place to cut in this many characters: cut anyway (warned)
SAMPLE_PIECE_BYTES = 1 << 20   # BPE training sample: pieces of this size, evenly spread
GZIP_MAGIC = b"\x1f\x8b"

# A place where encoding text[:p] and text[p:] separately gives the ids of the whole: text[p] is
# a space, tab or newline and text[p-1] is not whitespace under any regex engine's definition.
# Then no GPT-2 pre-token crosses p (letters, digits and punctuation runs stop at whitespace; a
# whitespace run starts at p either way), and the pre-tokenizer has no look-behind.
_SAFE_CUT = re.compile(r"[^\s\u180e\u200b\u200c\u200d\u2060\ufeff](?=[ \t\r\n])")


# ---------------------------------------------------------------------------- finding and checking

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
    """Streams the files as blocks of text segments that may be encoded independently: cut at document
    ends, and inside a long document at the places of _SAFE_CUT. Those are exact only for GPT-2-style
    tokenizers (tokenizer_bpe.whitespace_cuts_exact tells); for any other (a prefix space, a normalizer,
    a Metaspace pre-tokenizer...) run with whole_documents=True: each document is then one segment,
    never cut, so its ids are those of encoding it whole (and a very long one is held whole)."""

    def __init__(self, files: Sequence[Path], errors: str, specials: Sequence[str], anywhere: bool,
                 val_docs: int = 0, total_docs: int = 0, segment_chars: int = 1 << 19,
                 whole_documents: bool = False) -> None:
        """`anywhere`: any place is a safe cut (the char tokenizer). `whole_documents`: no place inside
        a document is: one segment per document, never cut."""
        self.files, self.errors, self.anywhere, self.segment_chars = files, errors, anywhere, segment_chars
        self.whole_documents = whole_documents
        self.special_re = special_tokens_pattern(specials)
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
        keep = len(EOT_TOKEN) - 1  # characters of an EOT that may start before a new read
        for path in self.files:
            carry, held, tail = "", [], ""
            for text, nbytes in read_text(path, self.errors):
                if self.whole_documents and nbytes and EOT_TOKEN not in tail + text:
                    # no document ends here: hold the text and join it once, when one does (a join per
                    # read would copy a long document over and over)
                    held.append(text)
                    tail, text = (tail + text)[-keep:], None
                    yield Block([], nbytes, (0, 0))
                    continue
                buf, text, held = "".join([carry, *held, text]), None, []
                if nbytes == 0:  # end of file: make sure the last document ends with EOT
                    if buf and not buf.endswith(EOT_TOKEN):
                        buf += EOT_TOKEN
                        self.appended_eot += 1
                    end = len(buf)
                else:
                    end = buf.rfind(EOT_TOKEN)
                    end = 0 if end < 0 else end + len(EOT_TOKEN)
                    if len(buf) - end > MAX_CARRY_CHARS and not self.whole_documents:  # cut inside it
                        cut = safe_cut(buf, end, len(buf) - MAX_CARRY_CHARS // 4, self.cuts, self.special_re,
                                       self.anywhere)
                        if cut < 0 and len(buf) - end > HARD_CARRY_CHARS:
                            cut = safe_cut(buf, end, len(buf) - 1, self.cuts, self.special_re, True)
                            self.unsafe_cuts += 1
                        end = max(end, cut)
                block, carry = self._block(buf, end, nbytes), buf[end:]
                tail = carry[-keep:]
                del buf  # hold only the segments while the block is being encoded
                yield block

    def _block(self, buf: str, end: int, nbytes: int) -> Block:
        """Segments of buf[:end], which ends at a document end or a safe cut; with whole_documents,
        one segment per document."""
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
            if self.whole_documents:
                while (cut := buf.find(EOT_TOKEN, a, b)) >= 0 and cut + eot < b:
                    segments.append((split, buf[a:cut + eot]))
                    a = cut + eot
            else:
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
