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
pre-tokenizer always splits there, so the ids equal those of the whole document. That holds for the
tokenizers this script trains, not for every reused one (a prefix space, a normalizer, a Metaspace
pre-tokenizer...: tokenizer_bpe.whitespace_cuts_exact): with those, a note says so and each document
is encoded whole, as its own text (slower on very long documents, each held in memory whole). Blocks
are encoded on all cores (tiktoken when it is exact, else HF `encode_batch`) while the next block is
read and a writer thread appends the previous one's ids to the .bin and the .gz. BPE training sees
--train_sample_bytes of text (default 100 MB) in 1 MB pieces evenly spread over the corpus; the HF
trainer's memory grows with the distinct words in its sample, about 1 KB each (1.5 GB peak for a
heavy-tailed 100 MB sample with 1.4M distinct words: lower the sample on a small machine).
Encoding itself holds a few blocks (~150-250 MB peak RSS measured), whatever the corpus size (and,
with a tokenizer whose documents are encoded whole, the longest document).

Every output goes to a temporary file beside it, renamed only when all succeeded, metadata last: a
failed or interrupted run leaves the previous outputs as they were and never a file set that looks
complete. The temporary files a killed run leaves are removed by the next run into the same folder:
only those of its own output names, older than its start, and only when no other run is live there.

The reading side is corpus_stream.py, the writing side token_writer.py.
"""
from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import re
import resource
import shutil
import sys
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from common import UserError, cli_main, sha256_file
from corpus_stream import (HARD_CARRY_CHARS, Block, DocumentReader, check_inputs, count_documents, expand_inputs,
                           read_text, sample_has_chat, training_sample)
from token_writer import Outputs, RunLock, Sink, Writer
from tokenizer import (CHAT_SPECIAL_TOKENS, EOT_TOKEN, REPLACEMENT_CHAR, CharTokenizer, load_tokenizer,
                       special_tokens_for)

FORMAT_VERSION = 1
# Texts per encoder call, measured on 2 cores: HF encode_batch_fast 8-9 MB/s on 4K-character texts
# but 6 on 64K (HF slows on long texts); tiktoken 44 MB/s on 512K, 38 on 64K (per-call overhead).
SEGMENT_CHARS = {"tiktoken": 1 << 19, "hf": 1 << 12, "char": 1 << 20}
M_MMAP_THRESHOLD = -3          # glibc's mallopt parameter
LARGE_BUFFER_BYTES = 1 << 20   # buffers of this size and more get their own mapping


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
        if importlib.util.find_spec("tiktoken") is None:
            raise UserError("--encoder tiktoken: tiktoken is not installed (pip install tiktoken, or make "
                            "install-extra); or use --encoder auto")
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
        text = json.dumps(tok.to_dict(), indent=2) + "\n" if kind == "char" else tok.to_json()
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


def keep_large_buffers_off_the_heap() -> bool:
    """Give every buffer of LARGE_BUFFER_BYTES or more (blocks of text, their ids) its own mapping,
    returned to the system when freed; True when applied (Linux with glibc).

    Why: glibc raises its mmap threshold to the size of the largest mapped buffer freed so far (up to
    32 MB). After one long document, the 4-16 MB blocks are carved from the heap and the per-thread
    arenas instead, where they fragment, and RSS grew with the input read (0.2 GB at the start, 1.1 GB
    after 12 GB). Setting the threshold turns that adjustment off (bench/bench_tokenize.py --memory)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES) == 1
    except (OSError, AttributeError):  # a C library without mallopt
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_large_buffers_off_the_heap()
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
    lock = RunLock(out_dir)  # held until the outputs are committed or discarded
    try:
        lock.remove_stale_temps(names.values(), started)
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
    finally:
        lock.release()
    summarize(args, names, sinks, stats, total_bytes, started, kind)
    return 0


@dataclass
class Stats:
    seconds: float
    appended_eot: int
    unsafe_cuts: int
    untokenized_chat_markers: int


def cuts_are_exact(tok) -> bool:
    """Whether cutting a long document just before whitespace keeps its ids with this BPE tokenizer
    (always with those trained here, and whenever tiktoken is used); if not, a note says why."""
    from tokenizer_bpe import whitespace_cuts_exact

    exact, why = whitespace_cuts_exact(json.loads(tok.tokenizer.to_str()))
    if not exact:
        print(f"note: {tok.path or 'the tokenizer'}: each document is encoded whole, never cut inside (slower "
              f"on very long documents, each held in memory whole): a cut could change its ids, as {why}",
              file=sys.stderr)
    return exact


def encode_corpus(files, tok, encoder, sinks: list[Sink], dtype: np.dtype, errors: str, val_docs: int,
                  total_docs: int, total_bytes: int) -> Stats:
    """Read, encode and write in a pipeline: while block k is encoded (all cores, no GIL), the main
    thread reads and cuts block k+1 and the writer thread compresses block k-1."""
    specials = added_tokens(tok)
    kind = "char" if isinstance(tok, CharTokenizer) else tok.encoder_name
    reader = DocumentReader(files, errors, specials, kind == "char", val_docs, total_docs, SEGMENT_CHARS[kind],
                            whole_documents=kind != "char" and not cuts_are_exact(tok))
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
