"""How dataset_cleaner.py reads its inputs: which files they are, and the work items each becomes.

expand_inputs turns the --input arguments (files, directories, globs) into a list of files. FileReader
reads one file (gzipped or not, detected by its magic bytes; JSON array, JSONL or text) into work items
for the cleaner's workers, in file order:
  ("lines", path, data, first line, offset, jsonl, gz)  about block_bytes of raw whole lines (JSONL, and
      text with one document per line), split into units in the worker by block_units;
  ("units", path, [(kind, payload, line), ...], replaced bytes)  JSON array elements ("obj", or "bad" for
      a broken one) and multi-line text documents ("text"), which the parent splits because that needs
      the file read in order.
A unit is ("json" | "text" | "obj" | "bad", payload, line number). Undecodable bytes become U+FFFD and
are counted, with the byte offsets of the first few (--strict: a UserError naming the offset).
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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from common import UserError
from text_cleaning import CleanOptions
from tokenizer import EOT_TOKEN as EOT

if TYPE_CHECKING:
    from dataset_cleaner import CleanStats

INPUT_SUFFIXES = (".txt", ".text", ".md", ".jsonl", ".ndjson", ".json")


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

_replaced_count = [0]  # bytes replaced by the "cleaner_inputs.count" error handler in this process


def _count_and_replace(e: UnicodeError) -> tuple[str, int]:
    _replaced_count[0] += e.end - e.start
    return "\ufffd", e.end


codecs.register_error("cleaner_inputs.count", _count_and_replace)


def _decode_counting(b: bytes, path: str, offset: int, gz: bool, strict: bool, res: dict) -> str:
    """UTF-8 decode; undecodable bytes become U+FFFD and are counted in res (or fail with --strict)."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError as e:
        if strict:
            raise UserError(f"{path}: invalid UTF-8 at byte offset {offset + e.start}"
                            f"{' of the decompressed data' if gz else ''}; fix the file or drop --strict to "
                            f"replace undecodable bytes with U+FFFD") from None
        _replaced_count[0] = 0
        text = b.decode("utf-8", "cleaner_inputs.count")
        res["replaced"] += _replaced_count[0]
        if len(res["replaced_at"]) < 5:
            res["replaced_at"].append(offset + e.start)
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
    single-line) array never sits in memory whole. Yields ("obj", record, line); a broken element
    yields ("bad", None, line) and ends the scan."""

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

    def __iter__(self) -> Iterator[tuple[str, Any, int]]:
        self._peek()
        self._advance(self.pos + 1)  # the "[" the format check saw
        first = True
        while (c := self._peek()) != "]":
            if not first:
                if c != ",":
                    yield "bad", None, self.line
                    return
                self._advance(self.pos + 1)
                self._peek()
            first = False
            decoded = self._decode_value()
            if decoded is None:
                yield "bad", None, self.line
                return
            yield "obj", decoded[0], self.line
            self._advance(decoded[1])


class FileReader:
    """One input file -> work items (see above), in file order. Reading adds to stats.bytes_in and
    stats.bytes_in_on_disk and moves the progress bar (bytes on disk)."""

    def __init__(self, path: Path, options: CleanOptions, stats: CleanStats, pbar: Any, block_bytes: int) -> None:
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
                    yield from self._grouped(_JsonArrayScanner(self._pieces(raw, stream)))
                elif self.fmt == "jsonl" or self.o.txt_docs == "line":
                    yield from self._blocks(raw, stream)
                else:
                    yield from self._grouped(self._text_units(self._pieces(raw, stream)))
                self._tick(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(f"{self.path}: corrupt or truncated data ({e}); re-create or re-download it") from None

    def _grouped(self, units: Iterable[tuple]) -> Iterator[tuple]:
        """Units in ~block_bytes work items, each with the undecodable bytes met while reading it (they
        travel with the item, so the stats come out in input order whatever the number of workers)."""
        batch, size = [], 0
        for unit in units:
            batch.append(unit)
            size += len(unit[1]) if isinstance(unit[1], str) else 256
            if size >= self.block_bytes:
                yield "units", str(self.path), batch, self._take_replaced()
                batch, size = [], 0
        replaced = self._take_replaced()
        if batch or replaced[0]:
            yield "units", str(self.path), batch, replaced

    def _take_replaced(self) -> tuple[int, list[int]]:
        taken = self.res["replaced"], self.res["replaced_at"]
        self.res = {"replaced": 0, "replaced_at": []}
        return taken

    def _blocks(self, raw: Any, stream: Any) -> Iterator[tuple]:
        """About block_bytes of whole lines per item, left undecoded for the workers."""
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
                    yield "text", "".join(buf), start
                buf = []
            elif mode == "eot" and EOT in t:
                *docs, t = t.split(EOT)
                for d in docs:
                    doc, buf = "".join(buf) + d, []
                    if doc.strip():
                        yield "text", doc, start
                    start = n
                buf.append(t)
            else:
                if not buf:
                    start = n
                buf.append(t)
            n += t.endswith("\n")
        if buf and "".join(buf).strip():
            yield "text", "".join(buf), start


# ---------------------------------------------------------------------------- in the worker

def block_units(item: tuple, o: CleanOptions, res: dict) -> Iterator[tuple[str, str, int]]:
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

