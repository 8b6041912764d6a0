"""Stream raw text, JSONL and chat data into one clean, deduplicated training corpus.

    python dataset_cleaner.py --input raw/ extra.jsonl.gz --output data/clean.txt --workers 2

Inputs: files, directories and globs, each optionally gzipped. A text file holds one document per
line (--txt_docs blank|eot|file: separated by blank lines, by <|endoftext|>, or one per file); a
.jsonl, .ndjson or .json file one record per line, or a JSON array of records (read incrementally).
A record is {"messages": [{"role", "content"}]}, {"conversations": [{"from", "value"}]},
{"instruction", "input", "output"}, a text field (--text_field; default "text", then "content") or
a bare JSON string. A conversation becomes one document in tokenizer_bpe.render_chat's format;
messages of other roles (tool, function) are skipped and counted.

Each document is cleaned, filtered and deduplicated by the rules of dataset_cleaner_rules.py. Output: txt,
"doc1<|endoftext|>doc2<|endoftext|>" with no newline added (so the tokenizer decodes back exactly
these bytes), or jsonl, {"text": doc} per line; .gz allowed. A stats table ends the run and is saved
as JSON (--stats_file, default OUTPUT.stats.json). The output is the same bytes for any --workers,
memory stays flat apart from the dedup index and the largest document (--txt_docs file: a whole
file), and a failed run leaves any previous output untouched.
Undecodable bytes and malformed JSON lines are counted and shown (--strict: fail on them); missing,
empty or binary inputs are one-line errors.

Notebook API: clean_text(text, options) -> str | None; render_chat(messages); iter_documents(paths,
options) yields cleaned documents; clean_files(inputs, output, options) -> stats dict.
"""
from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import os
import sys
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

import tokenizer_bpe
from dataset_cleaner_inputs import FileReader, LineBlock, ReplacedBytes, Unit, WorkItem, block_units, expand_inputs
from common import ArgParser, UserError, atomic_path, atomic_write_json, cli_main
from dataset_cleaner_rules import (CleanOptions, Deduper, clean_content, clean_document, clean_text, exact_hash,
                           filters_apply, minhash_band_keys, neutralize_special_tokens, quality_reason)
from tokenizer import EOT_TOKEN as EOT

# the notebook API; clean_text comes from dataset_cleaner_rules
__all__ = ["EOT", "CleanOptions", "CleanStats", "Document", "clean_files", "clean_text", "expand_inputs",
           "iter_documents", "main", "record_to_document", "render_chat"]

ROLE_ALIASES = {"system": "system", "user": "user", "human": "user", "prompter": "user", "assistant": "assistant",
                "gpt": "assistant", "bot": "assistant", "model": "assistant", "chatgpt": "assistant"}
BLOCK_BYTES = 1 << 20  # input bytes per work item sent to a worker


# ---------------------------------------------------------------------------- records -> documents

class Document(NamedTuple):
    """What one record or text becomes."""
    text: str | None  # the cleaned document; None when dropped
    drop_reason: str | None  # why it was dropped (a quality rule, "empty", "malformed_json", ...)
    kind: str  # text | chat | instruction | unknown
    skipped_messages: int = 0  # messages of other roles (tool, function) left out


def render_chat(messages: Sequence[Any], add_generation_prompt: bool = False) -> str:
    """tokenizer_bpe.render_chat, the one chat format of this repo, on neutralised content. Messages
    are {"role", "content"} dicts or (role, content) pairs; an unknown role is a ValueError."""
    pairs = ((m["role"], m["content"]) if isinstance(m, dict) else m for m in messages)
    return tokenizer_bpe.render_chat([{"role": role, "content": neutralize_special_tokens(content)}
                                      for role, content in pairs], add_generation_prompt=add_generation_prompt)


def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI-style parts: [{"type": "text", "text": ...}]
        texts = [p.get("text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "\n".join(texts) if texts else None
    return None


def _chat_turns(messages: list, options: CleanOptions) -> tuple[list[tuple[str, str]], int]:
    """Cleaned (role, content) turns of a chat record, and the number of messages skipped."""
    turns, skipped = [], 0
    for m in messages:
        m = m if isinstance(m, dict) else {}
        role = ROLE_ALIASES.get(str(m.get("role", m.get("from", ""))).strip().lower())
        content = _content_text(m.get("content", m.get("value")))
        if role is None or content is None:
            skipped += 1
        else:
            turns.append((role, clean_content(content, options)))
    return turns, skipped


def _instruction_turns(record: dict, options: CleanOptions) -> list[tuple[str, str]] | None:
    """The user turn `instruction + "\\n\\n" + input` (just the instruction when the input is empty) and the
    assistant turn `output`, cleaned; None when a field is not a string."""
    inp = record.get("input", record.get("context")) or ""
    out = record.get("output", record.get("response"))
    if not isinstance(inp, str) or not isinstance(out, str):
        return None
    instruction, inp = clean_content(record["instruction"], options), clean_content(inp, options)
    return [("user", instruction + "\n\n" + inp if inp else instruction), ("assistant", clean_content(out, options))]


def _text_document(text: str, options: CleanOptions) -> Document:
    cleaned, reason = clean_document(text, options, "text")
    return Document(cleaned, reason, "text")


def record_to_document(record: Any, options: CleanOptions | None = None) -> Document:
    """One parsed JSON record -> its Document."""
    options = options or CleanOptions()
    if isinstance(record, str):
        return _text_document(record, options)
    if not isinstance(record, dict):
        return Document(None, "unknown_record", "unknown")
    if options.text_field and isinstance(record.get(options.text_field), str):
        return _text_document(record[options.text_field], options)
    messages, skipped = record.get("messages", record.get("conversations")), 0
    if isinstance(messages, list):
        kind = "chat"
        turns, skipped = _chat_turns(messages, options)
    elif isinstance(record.get("instruction"), str):
        kind = "instruction"
        turns = _instruction_turns(record, options)
        if turns is None:
            return Document(None, "unknown_record", kind)
    else:
        for name in ("text", "content") if not options.text_field else ():
            if isinstance(record.get(name), str):
                return _text_document(record[name], options)
        return Document(None, "missing_text_field" if options.text_field else "unknown_record", "unknown")
    turns = [(role, content) for role, content in turns if content.strip()]
    if all(role == "system" for role, _ in turns):
        return Document(None, "empty", kind, skipped)
    reason = quality_reason("\n".join(c for _, c in turns), options) if filters_apply(options, kind) else None
    if reason:
        return Document(None, reason, kind, skipped)
    # the document ends before the separator, which the txt writer adds back (jsonl has none)
    return Document(render_chat(turns).removesuffix(EOT), None, kind, skipped)


# ---------------------------------------------------------------------------- worker

@dataclass
class BlockResult:
    """A worker's answer for one work item: the kept documents, encoded as one blob, with their end
    offsets and fingerprints, and the counters. Only dedup is left to the parent."""
    path: str
    replaced: ReplacedBytes  # undecodable bytes
    docs_in: int = 0
    kinds: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)  # reason -> documents
    skipped_messages: int = 0
    malformed: int = 0  # malformed JSON lines and array elements
    malformed_lines: list[int] = field(default_factory=list)  # the first 5
    blob: bytes = b""
    ends: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # each document's end in blob
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # exact-dedup fingerprints
    band_keys: np.ndarray | None = None  # (documents, lsh_bands) MinHash LSH keys, with --near_dedup


def _unit_to_document(unit: Unit, options: CleanOptions) -> Document:
    if unit.kind == "text":
        return _text_document(unit.payload, options)
    if unit.kind == "bad":  # a broken JSON array element, found by the reader
        return Document(None, "malformed_json", "unknown")
    record = unit.payload
    if unit.kind == "json":
        try:
            record = json.loads(unit.payload)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            return Document(None, "malformed_json", "unknown")
    return record_to_document(record, options)


def _encode(doc: str, fmt: str) -> bytes:
    """The bytes written for a document: txt adds the separator, jsonl a JSON line, "docs" nothing."""
    if fmt == "jsonl":
        return (json.dumps({"text": doc}, ensure_ascii=False) + "\n").encode("utf-8")
    return (doc + EOT if fmt == "txt" else doc).encode("utf-8")


def _process(item: WorkItem, options: CleanOptions, fmt: str) -> BlockResult:
    """Worker: one work item (dataset_cleaner_inputs.py) -> its BlockResult."""
    if isinstance(item, LineBlock):
        result = BlockResult(item.path, ReplacedBytes())
        units = block_units(item, options, result.replaced)  # decodes lazily, counting into result.replaced
    else:
        result = BlockResult(item.path, item.replaced)
        units = item.units
    parts, hashes, keys = [], [], []
    for unit in units:
        doc = _unit_to_document(unit, options)
        result.docs_in += 1
        result.kinds[doc.kind] += 1
        result.skipped_messages += doc.skipped_messages
        if doc.drop_reason == "malformed_json":
            if options.strict:
                raise UserError(f"{item.path}:{unit.line}: not valid JSON; fix the line or drop --strict to skip "
                                f"such lines")
            result.malformed += 1
            if len(result.malformed_lines) < 5:
                result.malformed_lines.append(unit.line)
        if doc.text is None:
            result.dropped[doc.drop_reason] += 1
            continue
        parts.append(_encode(doc.text, fmt))
        hashes.append(exact_hash(doc.text) if options.dedup else 0)
        if options.near_dedup:
            keys.append(minhash_band_keys(doc.text, options))
    result.ends = np.cumsum([len(p) for p in parts], dtype=np.int64)
    result.blob = b"".join(parts)
    result.hashes = np.array(hashes, dtype=np.uint64)
    result.band_keys = np.stack(keys) if keys else None
    return result


# ---------------------------------------------------------------------------- pipeline

@dataclass
class CleanStats:
    """The counters of a run: the stats table and (with the output, format, workers and options) the JSON."""
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

    def add(self, result: BlockResult) -> None:
        """The counters of one worker result."""
        self.docs_in += result.docs_in
        self.kinds_in.update(result.kinds)
        self.dropped.update(result.dropped)
        self.skipped_messages += result.skipped_messages
        self.malformed_lines += result.malformed
        self.malformed_examples = (self.malformed_examples + [f"{result.path}:{n}" for n in result.malformed_lines])[:5]
        self.replaced_bytes += result.replaced.count
        self.replaced_examples = (self.replaced_examples + [f"{result.path}@{n}" for n in result.replaced.offsets])[:5]

    def add_duplicates(self, n_exact: int, n_near: int) -> None:
        self.duplicates_exact += n_exact
        self.duplicates_near += n_near
        for reason, n in (("duplicate", n_exact), ("near_duplicate", n_near)):
            if n:
                self.dropped[reason] += n

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


def _work_items(files: list[Path], options: CleanOptions, stats: CleanStats, progress_bar: Any,
                block_bytes: int) -> Iterator[WorkItem]:
    for path in files:
        stats.files.append(str(path))
        yield from FileReader(path, options, stats, progress_bar, block_bytes).items()


def _results(items: Iterator[WorkItem], options: CleanOptions, fmt: str, workers: int) -> Iterator[BlockResult]:
    """Worker results in input order. The parent only reads; the workers decode, parse, clean,
    fingerprint and encode. At most 2 * workers + 1 items are in flight, so memory stays bounded."""
    if workers <= 1:
        yield from (_process(item, options, fmt) for item in items)
        return
    with mp.get_context().Pool(workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.apply_async(_process, (item, options, fmt)))
            if len(pending) > 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _keep_only(blob: bytes, ends: np.ndarray, keep: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The documents of `blob` (ending at `ends`) where `keep` is True."""
    if keep.all():
        return blob, ends
    starts = ends - np.diff(ends, prepend=0)
    kept = b"".join(blob[s:e] for s, e in zip(starts[keep].tolist(), ends[keep].tolist()))
    return kept, np.cumsum((ends - starts)[keep])


def _pipeline(files: list[Path], options: CleanOptions, fmt: str, stats: CleanStats, workers: int,
              progress_bar: Any, block_bytes: int) -> Iterator[tuple[bytes, np.ndarray]]:
    """(encoded kept documents, their end offsets) per work item, deduplicated here in input order:
    the first copy is kept whatever --workers is."""
    dedup = Deduper(options)
    for result in _results(_work_items(files, options, stats, progress_bar, block_bytes), options, fmt, workers):
        stats.add(result)
        keep, n_exact, n_near = dedup.keep(result.hashes, result.band_keys)
        stats.add_duplicates(n_exact, n_near)
        stats.dedup_index_bytes = dedup.nbytes
        blob, ends = _keep_only(result.blob, result.ends, keep)
        stats.docs_out += len(ends)
        stats.bytes_out += len(blob)
        yield blob, ends


def iter_documents(paths: Iterable[str | os.PathLike], options: CleanOptions | None = None, workers: int = 1,
                   stats: CleanStats | None = None) -> Iterator[str]:
    """Cleaned, deduplicated documents (without the separator) from files, directories or globs."""
    options = options or CleanOptions()
    _validate(options, workers)
    for blob, ends in _pipeline(expand_inputs(paths), options, "docs", stats if stats is not None else CleanStats(),
                                workers, None, BLOCK_BYTES):
        start = 0
        for end in ends.tolist():
            yield blob[start:end].decode("utf-8")
            start = end


def _check_output(out: Path, stats_path: Path, inputs: Sequence[str | os.PathLike]) -> None:
    if out.is_dir():
        raise UserError(f"--output {out} is a directory; give a file path such as {out / 'clean.txt'}")
    for given, flag in ((out, "--output"), (stats_path, "--stats_file")):
        if given.resolve() in {Path(p).resolve() for p in inputs}:
            raise UserError(f"{flag} {given} is also an input; write to a new file")
    if stats_path.resolve() == out.resolve():
        raise UserError(f"--stats_file {stats_path} is the --output file; pick another name")


def _check_something_kept(stats: CleanStats, inputs: Sequence[str | os.PathLike], out: Path) -> None:
    if stats.docs_in == stats.malformed_lines:
        bad = f" ({stats.malformed_lines:,} malformed JSON lines, first {stats.malformed_examples[0]})" \
            if stats.malformed_lines else ""
        raise UserError(f"no documents found in {', '.join(map(str, inputs))}{bad}; check the files and "
                        f"--txt_docs / --text_field")
    if stats.docs_out == 0:
        top = ", ".join(f"{k} {v:,}" for k, v in stats.dropped.most_common(3))
        raise UserError(f"all {stats.docs_in:,} documents were dropped ({top}); nothing written to {out}; "
                        f"relax the filters (for example --quality_filters off)")


def clean_files(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, options: CleanOptions | None = None,
                fmt: str | None = None, workers: int = 1, stats_file: str | os.PathLike | None = None,
                progress: bool = False, report: bool = False, block_bytes: int = BLOCK_BYTES) -> dict:
    """Clean `inputs` into `output` (atomically) and write the stats JSON; returns the stats dict.
    `progress`: tqdm by bytes on stderr; `report`: the stats table on stderr at the end."""
    options, out = options or CleanOptions(), Path(output)
    stats_path = Path(stats_file) if stats_file else Path(f"{out}.stats.json")
    workers = workers or os.cpu_count() or 1
    _validate(options, workers)
    fmt = fmt or ("jsonl" if out.name.lower().removesuffix(".gz").endswith(".jsonl") else "txt")
    if fmt not in ("txt", "jsonl"):
        raise UserError(f"--format {fmt}: use txt or jsonl")
    _check_output(out, stats_path, inputs)
    files = expand_inputs(inputs, exclude=[out, stats_path])  # a directory or glob input skips the output
    parent = next((p for p in out.resolve().parents if p.exists()), Path("/"))
    if not os.access(parent, os.W_OK):
        raise UserError(f"--output {out}: folder {parent} is not writable; choose another --output")

    from tqdm import tqdm
    stats, t0 = CleanStats(), time.perf_counter()
    progress_bar = tqdm(total=sum(f.stat().st_size for f in files), unit="B", unit_scale=True, unit_divisor=1024,
                        desc="cleaning", file=sys.stderr, disable=not progress, mininterval=0.5)
    with progress_bar, atomic_path(out) as tmp:
        with (gzip.open if out.name.endswith(".gz") else open)(tmp, "wb") as f:
            for blob, _ in _pipeline(files, options, fmt, stats, workers, progress_bar, block_bytes):
                try:
                    f.write(blob)
                except OSError as e:
                    raise UserError(f"cannot write --output {out}: {e.strerror or e}; free space or choose another "
                                    f"--output") from None
        _check_something_kept(stats, inputs, out)
    stats.elapsed_s = time.perf_counter() - t0
    result = {**stats.to_dict(), "output": str(out), "format": fmt, "workers": workers, "options": asdict(options)}
    atomic_write_json(stats_path, result)
    if report:
        print(f"dataset_cleaner: {out} ({fmt}, {workers} worker{'s' * (workers > 1)})\n{stats.table()}\n"
              f"  stats saved to {stats_path}", file=sys.stderr)
    return result


# ---------------------------------------------------------------------------- CLI

def main(argv: Sequence[str] | None = None) -> int:
    p = ArgParser(description=__doc__.split("\n\n")[0],
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
    options = CleanOptions(nfc=not a.no_nfc, control_chars=not a.no_control_chars, html=not a.no_html,
                           whitespace=not a.no_whitespace, scrub_pii=a.scrub_pii, quality_filters=a.quality_filters,
                           min_chars=a.min_chars, max_chars=a.max_chars, min_words=a.min_words,
                           max_non_alpha=a.max_non_alpha, dedup=not a.no_dedup, near_dedup=a.near_dedup,
                           minhash_perms=a.minhash_perms, lsh_bands=a.lsh_bands, text_field=a.text_field,
                           txt_docs=a.txt_docs, strict=a.strict)
    clean_files(a.input, a.output, options, fmt=a.format, workers=a.workers, stats_file=a.stats_file,
                progress=not a.no_progress, report=True)
    return 0


if __name__ == "__main__":
    cli_main(main)
