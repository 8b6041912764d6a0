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
Messages with other roles (tool, function) are skipped and counted. A conversation is one document,
rendered by tokenizer_bpe.render_chat (DESIGN.md's one chat template) after its content is cleaned
and neutralised. An instruction record is the user turn `instruction + "\\n\\n" + input` (just
`instruction` when the input is empty) and the assistant turn `output`.
Each document is cleaned, checked by the quality filters (--quality_filters auto|on|off) and
deduplicated (exact; MinHash with --near_dedup) as text_cleaning.py documents. Dedup runs in the
parent, in input order, after filtering, so the first copy is kept whatever --workers is.

Output (--format txt|jsonl, default from the --output extension; a .gz output is gzipped):
  txt    each document followed by <|endoftext|> and nothing else: "doc1<|endoftext|>doc2<|endoftext|>".
         No newline is added after the separator, so a tokenizer that encodes this text as it is
         decodes back to these bytes exactly.
  jsonl  {"text": document} per line, without the separator.

Bad input: undecodable bytes become U+FFFD and are counted (--strict: fail naming file and byte
offset); malformed JSON lines are skipped, counted and their first line numbers shown (--strict:
fail); missing, empty or binary inputs, or an output that is also an input, are one-line errors.
Work split: the parent reads 1 MB blocks of whole lines (cleaner_inputs.py; JSON arrays and multi-line
text documents are split into records by the parent); --workers processes decode, parse, clean, hash
and encode them; the parent deduplicates in input order and writes, so the output is byte-identical
for any --workers. At most 2 * workers + 1 blocks are in flight: memory is constant apart from the dedup
index (and the largest document: --txt_docs file holds a whole file). tqdm shows bytes read; the
stats table ends the run and is saved as JSON (--stats_file, default OUTPUT.stats.json). The output
and the stats appear atomically: a failed run leaves any previous output untouched.

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
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

import tokenizer_bpe
from cleaner_inputs import FileReader, block_units, expand_inputs
from common import ArgParser, UserError, atomic_path, atomic_write_json, cli_main
from text_cleaning import (CleanOptions, Deduper, clean_content, clean_document, clean_text, exact_hash,
                           filters_apply, minhash_band_keys, neutralize_special_tokens, quality_reason)
from tokenizer import EOT_TOKEN as EOT

__all__ = ["EOT", "CleanOptions", "CleanStats", "clean_files", "clean_text", "expand_inputs", "iter_documents",
           "main", "record_to_document", "render_chat"]  # the notebook API; clean_text comes from text_cleaning

ROLE_ALIASES = {"system": "system", "user": "user", "human": "user", "prompter": "user", "assistant": "assistant",
                "gpt": "assistant", "bot": "assistant", "model": "assistant", "chatgpt": "assistant"}
BLOCK_BYTES = 1 << 20  # input bytes per work item sent to a worker


# ---------------------------------------------------------------------------- records -> documents

def render_chat(messages: Sequence[Any], add_generation_prompt: bool = False) -> str:
    """tokenizer_bpe.render_chat (DESIGN.md's chat format) on neutralised content. Messages are
    {"role", "content"} dicts or (role, content) pairs; an unknown role is a ValueError."""
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


def _chat_turns(messages: list, o: CleanOptions) -> tuple[list[tuple[str, str]], int]:
    """Cleaned (role, content) turns of a chat record, and the number of messages skipped."""
    turns, skipped = [], 0
    for m in messages:
        m = m if isinstance(m, dict) else {}
        role = ROLE_ALIASES.get(str(m.get("role", m.get("from", ""))).strip().lower())
        content = _content_text(m.get("content", m.get("value")))
        if role is None or content is None:
            skipped += 1
        else:
            turns.append((role, clean_content(content, o)))
    return turns, skipped


def _instruction_turns(obj: dict, o: CleanOptions) -> list[tuple[str, str]] | None:
    """Cleaned user and assistant turns of an instruction record; None when a field is not a string."""
    inp = obj.get("input", obj.get("context")) or ""
    out = obj.get("output", obj.get("response"))
    if not isinstance(inp, str) or not isinstance(out, str):
        return None
    instruction, inp = clean_content(obj["instruction"], o), clean_content(inp, o)
    return [("user", instruction + "\n\n" + inp if inp else instruction), ("assistant", clean_content(out, o))]


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
    messages, skipped = obj.get("messages", obj.get("conversations")), 0
    if isinstance(messages, list):
        kind = "chat"
        turns, skipped = _chat_turns(messages, o)
    elif isinstance(obj.get("instruction"), str):
        kind = "instruction"
        turns = _instruction_turns(obj, o)
        if turns is None:
            return None, "unknown_record", kind, 0
    else:
        for name in ("text", "content") if not o.text_field else ():
            if isinstance(obj.get(name), str):
                return (*clean_document(obj[name], o, "text"), "text", 0)
        return None, ("missing_text_field" if o.text_field else "unknown_record"), "unknown", 0
    turns = [(role, content) for role, content in turns if content.strip()]
    if all(role == "system" for role, _ in turns):
        return None, "empty", kind, skipped
    reason = quality_reason("\n".join(c for _, c in turns), o) if filters_apply(o, kind) else None
    if reason:
        return None, reason, kind, skipped
    # the document ends before the separator, which the txt writer adds back (jsonl has none)
    return render_chat(turns).removesuffix(EOT), None, kind, skipped


# ---------------------------------------------------------------------------- worker

def _unit_to_doc(unit_kind: str, payload: Any, o: CleanOptions) -> tuple[str | None, str | None, str, int]:
    """A text line or document, a JSON line, or a JSON array element ("obj" or "bad") -> as record_to_document."""
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
    """The bytes written for a document: txt adds the separator, jsonl a JSON line, "docs" nothing."""
    if fmt == "jsonl":
        return (json.dumps({"text": doc}, ensure_ascii=False) + "\n").encode("utf-8")
    return (doc + EOT if fmt == "txt" else doc).encode("utf-8")


def _process(job: tuple[CleanOptions, str, tuple]) -> dict:
    """Worker: one work item (cleaner_inputs.py) -> the encoded kept documents as one blob, their end
    offsets, hashes, band keys and counters. Only dedup is left to the parent."""
    o, fmt, item = job
    path = item[1]
    res: dict[str, Any] = {"path": path, "docs_in": 0, "kinds": Counter(), "dropped": Counter(), "skipped": 0,
                           "malformed": 0, "malformed_lines": [], "replaced": 0, "replaced_at": []}
    if item[0] == "units":
        res["replaced"], res["replaced_at"] = item[3]
    units = block_units(item, o, res) if item[0] == "lines" else item[2]
    parts, hashes, keys = [], [], []
    for unit_kind, payload, line in units:
        doc, reason, kind, skipped = _unit_to_doc(unit_kind, payload, o)
        res["docs_in"] += 1
        res["kinds"][kind] += 1
        res["skipped"] += skipped
        if reason == "malformed_json":
            if o.strict:
                raise UserError(f"{path}:{line}: not valid JSON; fix the line or drop --strict to skip such lines")
            res["malformed"] += 1
            if len(res["malformed_lines"]) < 5:
                res["malformed_lines"].append(line)
        if doc is None:
            res["dropped"][reason] += 1
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

    def add(self, res: dict) -> None:
        """Counters of one worker result."""
        self.docs_in += res["docs_in"]
        self.kinds_in.update(res["kinds"])
        self.dropped.update(res["dropped"])
        self.skipped_messages += res["skipped"]
        self.malformed_lines += res["malformed"]
        self.malformed_examples = (self.malformed_examples + [f"{res['path']}:{n}" for n in res["malformed_lines"]])[:5]
        self.replaced_bytes += res["replaced"]
        self.replaced_examples = (self.replaced_examples + [f"{res['path']}@{n}" for n in res["replaced_at"]])[:5]

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


def _work_items(files: list[Path], o: CleanOptions, stats: CleanStats, pbar: Any, block_bytes: int) -> Iterator[tuple]:
    for path in files:
        stats.files.append(str(path))
        yield from FileReader(path, o, stats, pbar, block_bytes).items()


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


def _keep_only(blob: bytes, ends: np.ndarray, keep: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The documents of `blob` (ending at `ends`) where `keep` is True."""
    if keep.all():
        return blob, ends
    starts = ends - np.diff(ends, prepend=0)
    kept = b"".join(blob[s:e] for s, e in zip(starts[keep].tolist(), ends[keep].tolist()))
    return kept, np.cumsum((ends - starts)[keep])


def _pipeline(files: list[Path], o: CleanOptions, fmt: str, stats: CleanStats, workers: int, pbar: Any,
              block_bytes: int) -> Iterator[tuple[bytes, np.ndarray]]:
    """(encoded kept documents, their end offsets) per work item, deduplicated in input order."""
    dedup = Deduper(o)
    for res in _results(_work_items(files, o, stats, pbar, block_bytes), o, fmt, workers):
        stats.add(res)
        keep, n_exact, n_near = dedup.keep(res["hashes"], res["keys"])
        stats.add_duplicates(n_exact, n_near)
        stats.dedup_index_bytes = dedup.nbytes
        blob, ends = _keep_only(res["blob"], res["ends"], keep)
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
    o, out = options or CleanOptions(), Path(output)
    stats_path = Path(stats_file) if stats_file else Path(f"{out}.stats.json")
    workers = workers or os.cpu_count() or 1
    _validate(o, workers)
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
        _check_something_kept(stats, inputs, out)
    stats.elapsed_s = time.perf_counter() - t0
    result = {**stats.to_dict(), "output": str(out), "format": fmt, "workers": workers, "options": asdict(o)}
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
