"""How dataset_cleaner.py reads its inputs: which files they are, and the work items each becomes.

expand_inputs turns --input (files, directories, globs) into a list of files. FileReader reads one
file (gzip found by its magic bytes; JSON array, JSONL or text) into work items, in file order: a
LineBlock of raw lines that a worker splits into Units itself, or a UnitBatch that the parent split
because splitting needs the file read in order. Undecodable bytes become U+FFFD and are counted.
"""
from __future__ import annotations

import codecs
import contextlib
import glob
import gzip
import json
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, NamedTuple

from common import UserError
from dataset_cleaner_rules import CleanOptions
from tokenizer import EOT_TOKEN as EOT

if TYPE_CHECKING:
    from dataset_cleaner import CleanStats

INPUT_SUFFIXES = (".txt", ".text", ".md", ".jsonl", ".ndjson", ".json")


# ---------------------------------------------------------------------------- work items

class Unit(NamedTuple):
    """One record or document on its way to the cleaner."""
    kind: str  # "json" (a JSONL line), "text" (a document), "obj" (a parsed JSON array element), "bad"
    payload: Any  # the line or document; the parsed element; None for a "bad" (broken) element
    line: int  # where it starts in its file, for messages


@dataclass
class ReplacedBytes:
    """Undecodable bytes that became U+FFFD: how many, and the byte offsets of the first few."""
    count: int = 0
    offsets: list[int] = field(default_factory=list)

    def add(self, count: int, offset: int) -> None:
        self.count += count
        if len(self.offsets) < 5:
            self.offsets.append(offset)


@dataclass
class LineBlock:
    """About block_bytes of whole lines (JSONL, or text with one document per line), still bytes:
    decoding and splitting happen in the worker (block_units)."""
    path: str
    data: bytes
    first_line: int
    offset: int  # byte offset of data in the (decompressed) file, for messages
    jsonl: bool  # JSON lines, else text lines
    gz: bool  # the file is gzipped (messages say "of the decompressed data")


@dataclass
class UnitBatch:
    """Units the parent split: JSON array elements, multi-line text documents."""
    path: str
    units: list[Unit]
    # met while reading these units: they travel with them, so the stats keep input order for any --workers
    replaced: ReplacedBytes


WorkItem = LineBlock | UnitBatch


# ---------------------------------------------------------------------------- finding the files

def _is_input_file(p: Path) -> bool:
    return not p.name.startswith(".") and not p.name.endswith(".stats.json") and p.stat().st_size > 0


def expand_inputs(paths: Iterable[str | os.PathLike], exclude: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Files, directories (recursive; known suffixes, optionally .gz; hidden files and *.stats.json
    skipped) and globs -> a sorted, de-duplicated list. Raises UserError for missing or empty input."""
    excluded = {Path(p).resolve() for p in exclude}

    def from_dir(d: Path, arg: str) -> list[Path]:
        found = [p for p in sorted(d.rglob("*")) if p.is_file() and p.resolve() not in excluded
                 and p.name.lower().removesuffix(".gz").endswith(INPUT_SUFFIXES) and _is_input_file(p)]
        if not found:
            raise UserError(f"--input {arg}: no non-empty {'/'.join(INPUT_SUFFIXES)} files (optionally .gz) in "
                            f"this directory")
        return found

    files: list[Path] = []
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
                elif _is_input_file(m):
                    files.append(m)
        else:
            raise UserError(f"--input {arg}: no such file or directory (check the path)")
    unique, seen = [], set(excluded)
    for f in files:
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    if not unique:
        raise UserError(f"--input {' '.join(map(str, paths))}: all matching files are empty")
    return unique


# ---------------------------------------------------------------------------- decoding

_replaced_count = [0]  # bytes replaced by the "dataset_cleaner_inputs.count" error handler in this process


def _count_and_replace(e: UnicodeError) -> tuple[str, int]:
    _replaced_count[0] += e.end - e.start
    return "\ufffd", e.end


codecs.register_error("dataset_cleaner_inputs.count", _count_and_replace)


def _decode_counting(b: bytes, path: str, offset: int, gz: bool, strict: bool, replaced: ReplacedBytes) -> str:
    """UTF-8 decode; undecodable bytes become U+FFFD and are counted in `replaced` (--strict: fail)."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError as e:
        if strict:
            raise UserError(f"{path}: invalid UTF-8 at byte offset {offset + e.start}"
                            f"{' of the decompressed data' if gz else ''}; fix the file or drop --strict to "
                            f"replace undecodable bytes with U+FFFD") from None
        _replaced_count[0] = 0
        text = b.decode("utf-8", "dataset_cleaner_inputs.count")
        replaced.add(_replaced_count[0], offset + e.start)
        return text


def _split_incomplete_utf8(b: bytes) -> tuple[bytes, bytes]:
    """Split a UTF-8 sequence cut off at the end of `b` into the carry-over for the next read."""
    for i in range(1, min(4, len(b)) + 1):
        c = b[-i]
        if c & 0xC0 != 0x80:  # the last lead (or ASCII) byte
            need = 2 if c >> 5 == 6 else 3 if c >> 4 == 14 else 4 if c >> 3 == 30 else 1
            return (b[:-i], b[-i:]) if need > i else (b, b"")
    return b, b""


# ---------------------------------------------------------------------------- reading files

_JSON_SPACE_RE = re.compile(r"[ \t\r\n]*")


class _JsonArrayScanner:
    """Incremental parse of `[record, record, ...]` from decoded text pieces, so a huge (even
    single-line) array never sits in memory whole. Yields Unit("obj", record, line); a broken
    element yields Unit("bad", None, line) and ends the scan."""

    def __init__(self, pieces: Iterator[str]) -> None:
        self.pieces, self.buf, self.pos, self.line, self.eof = pieces, "", 0, 1, False
        self.decoder = json.JSONDecoder()

    def _fill(self) -> bool:
        piece = next(self.pieces, None)
        if piece is None:
            self.eof = True
            return False
        self.buf, self.pos = self.buf[self.pos:] + piece, 0
        return True

    def _advance(self, to: int) -> None:
        self.line += self.buf.count("\n", self.pos, to)
        self.pos = to

    def _peek(self) -> str:
        """The next non-space character ("" at the end)."""
        while True:
            self._advance(_JSON_SPACE_RE.match(self.buf, self.pos).end())
            if self.pos < len(self.buf) or not self._fill():
                return self.buf[self.pos:self.pos + 1]

    def _decode_value(self) -> tuple[Any, int] | None:
        """The value at pos and its end, reading more text while it may be incomplete; None if broken."""
        while True:
            buf, pos = self.buf, self.pos
            try:
                obj, end = self.decoder.raw_decode(buf, pos)
                if end < len(buf) or self.eof:  # a value touching the end might continue (a number)
                    return obj, end
            except RecursionError:  # absurdly deep nesting
                return None
            except json.JSONDecodeError as e:
                if self.eof or not (e.pos >= len(buf) - 16 or e.msg.startswith("Unterminated")):
                    return None
            want = 2 * (len(buf) - pos) + 1  # read as much again: linear in the element's size
            while len(self.buf) - self.pos < want and self._fill():
                pass

    def __iter__(self) -> Iterator[Unit]:
        self._peek()
        self._advance(self.pos + 1)  # the "[" the format check saw
        first = True
        while (c := self._peek()) != "]":
            if not first:
                if c != ",":
                    yield Unit("bad", None, self.line)
                    return
                self._advance(self.pos + 1)
                self._peek()
            first = False
            decoded = self._decode_value()
            if decoded is None:
                yield Unit("bad", None, self.line)
                return
            yield Unit("obj", decoded[0], self.line)
            self._advance(decoded[1])


class FileReader:
    """One input file -> work items, in file order. Reading adds to stats.bytes_in and
    stats.bytes_in_on_disk and moves the progress bar (bytes on disk)."""

    def __init__(self, path: Path, options: CleanOptions, stats: CleanStats, progress_bar: Any,
                 block_bytes: int) -> None:
        self.path, self.options, self.stats, self.progress_bar = path, options, stats, progress_bar
        self.block_bytes = block_bytes
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
        self.on_disk = 0  # raw bytes read so far
        self.replaced = ReplacedBytes()  # in what this process decodes itself, since the last UnitBatch

    @contextlib.contextmanager
    def _open(self) -> Iterator[tuple[Any, Any]]:
        """(raw file, decompressed stream): the raw position drives the progress bar."""
        with open(self.path, "rb") as raw:
            if not self.gz:
                yield raw, raw
                return
            with gzip.GzipFile(fileobj=raw) as stream:
                yield raw, stream

    def _count_progress(self, raw: Any) -> None:
        pos = raw.tell()
        if self.progress_bar is not None:
            self.progress_bar.update(pos - self.on_disk)
        self.stats.bytes_in_on_disk += pos - self.on_disk
        self.on_disk = pos

    def items(self) -> Iterator[WorkItem]:
        try:
            with self._open() as (raw, stream):
                if self.fmt == "array":
                    yield from self._batches(_JsonArrayScanner(self._decoded_pieces(raw, stream)))
                elif self.fmt == "jsonl" or self.options.txt_docs == "line":
                    yield from self._line_blocks(raw, stream)
                else:
                    yield from self._batches(self._text_units(self._decoded_pieces(raw, stream)))
                self._count_progress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(f"{self.path}: corrupt or truncated data ({e}); re-create or re-download it") from None

    def _batches(self, units: Iterable[Unit]) -> Iterator[UnitBatch]:
        """Units in batches of about block_bytes."""
        batch, size = [], 0
        for unit in units:
            batch.append(unit)
            size += len(unit.payload) if isinstance(unit.payload, str) else 256  # a parsed element: a guess
            if size >= self.block_bytes:
                yield UnitBatch(str(self.path), batch, self._take_replaced())
                batch, size = [], 0
        replaced = self._take_replaced()
        if batch or replaced.count:
            yield UnitBatch(str(self.path), batch, replaced)

    def _take_replaced(self) -> ReplacedBytes:
        taken, self.replaced = self.replaced, ReplacedBytes()
        return taken

    def _line_blocks(self, raw: Any, stream: Any) -> Iterator[LineBlock]:
        """About block_bytes of whole lines per item, left undecoded for the workers."""
        line, offset = 1, 0
        while data := stream.read(self.block_bytes):
            if not data.endswith(b"\n"):
                data += stream.readline()
            if offset == 0 and data.startswith(codecs.BOM_UTF8):
                data, offset = data[3:], 3
            self._count_progress(raw)
            self.stats.bytes_in += len(data)
            yield LineBlock(str(self.path), data, line, offset, self.fmt == "jsonl", self.gz)
            line += data.count(b"\n")
            offset += len(data)

    def _decoded_pieces(self, raw: Any, stream: Any) -> Iterator[str]:
        """Decoded lines (a long line in ~1 MB pieces, never splitting a UTF-8 character)."""
        carry, offset = b"", 0
        while b := stream.readline(1 << 20):
            b, carry = (carry + b, b"") if b.endswith(b"\n") else _split_incomplete_utf8(carry + b)
            if offset == 0 and b.startswith(codecs.BOM_UTF8):
                b, offset = b[3:], 3
            if offset % (1 << 22) < len(b):  # every 4 MB or so
                self._count_progress(raw)
            self.stats.bytes_in += len(b)
            yield _decode_counting(b, str(self.path), offset, self.gz, self.options.strict, self.replaced)
            offset += len(b)
        if carry:
            yield _decode_counting(carry, str(self.path), offset, self.gz, self.options.strict, self.replaced)

    def _text_units(self, pieces: Iterator[str]) -> Iterator[Unit]:
        """Documents separated by blank lines, by <|endoftext|>, or one per file."""
        mode, buf, start, line = self.options.txt_docs, [], 1, 1  # buf: the pieces of the current document
        for piece in pieces:
            if mode == "blank" and not piece.strip():
                if buf:
                    yield Unit("text", "".join(buf), start)
                buf = []
            elif mode == "eot" and EOT in piece:
                *ends, piece = piece.split(EOT)  # ends: the tails of the documents the separators close
                for end in ends:
                    doc, buf = "".join(buf) + end, []
                    if doc.strip():
                        yield Unit("text", doc, start)
                    start = line
                buf.append(piece)
            else:
                if not buf:
                    start = line
                buf.append(piece)
            line += piece.endswith("\n")
        if buf and "".join(buf).strip():
            yield Unit("text", "".join(buf), start)


# ---------------------------------------------------------------------------- in the worker

def block_units(block: LineBlock, options: CleanOptions, replaced: ReplacedBytes) -> Iterator[Unit]:
    """A block of whole lines (raw bytes) -> a "json" or "text" unit per non-blank line."""
    try:
        lines = block.data.decode("utf-8").split("\n")
    except UnicodeDecodeError:  # decode line by line, to count and place each bad byte
        lines, pos = [], block.offset
        for b in block.data.split(b"\n"):
            lines.append(_decode_counting(b, block.path, pos, block.gz, options.strict, replaced))
            pos += len(b) + 1
    if lines and not lines[-1]:
        lines.pop()
    for i, text in enumerate(lines):
        if text.strip():
            yield Unit("json", text, block.first_line + i) if block.jsonl else \
                Unit("text", text.rstrip("\r"), block.first_line + i)

