"""Pre-tokenize a text corpus into a flat token file, as in the seed:

    python tokenize_local_bpe.py --input your_dataset.txt --vocab_size 32000 --compress

The input is cleaned text (dataset_cleaner.py) in which each document ends with `<|endoftext|>`
(a file that does not end with one gets one appended); special-token strings in it become their
ids (the cleaner neutralises those of raw text). It trains a byte-level BPE (or, with --tokenizer_type char, the seed's character tokenizer),
or reuses --tokenizer, and writes to --output_dir:

    tokens_bpe.bin            the token ids: raw little-endian uint16 (uint32 when the vocabulary
                              exceeds 65,536), no header, documents one after the other, each
                              ending with <|endoftext|>, which is id 0 in every tokenizer here
    tokens_bpe.bin.gz         the same bytes gzipped (--compress)
    bpe_tokenizer.json        the tokenizer (trained here, or a copy of --tokenizer)
    tokens_bpe_metadata.json  what the .bin holds (below)
    tokens_bpe_val.*          the same three for whole documents held out by --val_fraction

A character run writes tokens_char.* and char_tokenizer.json; --output_prefix renames the token
files. Decoding a .bin gives back its documents byte for byte. Its metadata:

    dtype, num_tokens          num_tokens ids of that dtype: the .bin is num_tokens * itemsize bytes
    num_documents              how many documents (= <|endoftext|> ids) it holds
    num_bytes                  UTF-8 size of the text its ids decode to, for bits per byte = mean loss
                               in nats * num_tokens / (num_bytes * ln 2) (with a reused tokenizer whose
                               decoder is not byte-level: the size of the text encoded)
    vocab_size, eot_token_id   eot_token_id is 0
    tokenizer_file, tokenizer_sha256, tokenizer_type, special_tokens: the tokenizer the ids belong to
    split, bin_file, bin_sha256, gz_file, val_metadata_file: train or val, and the files beside it
    source_files, source_bytes, settings, format_version, created_at: how it was made

Every file is written under a temporary name and renamed once all are done, the metadata last: a
metadata file means its .bin is complete, and a failed run leaves the previous outputs as they were.

Reading is tokenize_corpus.py, writing tokenize_writer.py.
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

from common import ArgParser, UserError, cli_main, sha256_file
from tokenize_corpus import (HARD_CARRY_CHARS, Block, DocumentReader, check_inputs, count_documents, expand_inputs,
                           read_text, sample_has_chat, training_sample)
from tokenize_writer import OutputDirLock, OutputFiles, TokenFileWriter, WriterThread
from tokenizer import (CHAT_SPECIAL_TOKENS, EOT_TOKEN, REPLACEMENT_CHAR, CharTokenizer, load_tokenizer,
                       special_tokens_for)

FORMAT_VERSION = 1
# Texts per encoder call, measured on 2 cores: HF encode_batch_fast 8-9 MB/s on 4K-character texts
# but 6 on 64K (HF slows on long texts); tiktoken 44 MB/s on 512K, 38 on 64K (per-call overhead).
SEGMENT_CHARS = {"tiktoken": 1 << 19, "hf": 1 << 12, "char": 1 << 20}
M_MMAP_THRESHOLD = -3          # glibc's mallopt parameter
LARGE_BUFFER_BYTES = 1 << 20   # buffers of this size and more get their own mapping


# ---------------------------------------------------------------------------- arguments

def parse_size(text: str) -> int:
    """'256M', '1.5G', '500000' -> bytes (decimal units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)[bB]?\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 500M or 2G")
    return int(float(m.group(1)) * 1000 ** " kmgt".index(m.group(2).lower() or " "))


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Tokenize a corpus into tokens_bpe.bin (+ .gz) and its metadata.")
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
class SpecialTokenChoice:
    """--special_tokens, parsed. auto: the chat roles are registered when the training sample holds
    <|user|> or <|assistant|>; chat: always; none: never."""
    mode: str                       # auto | chat | none
    extra: list[str] = field(default_factory=list)

    def tokens(self, chat: bool) -> list[str]:
        """The special tokens to register, in id order; the chat roles when `chat` and allowed."""
        return special_tokens_for(chat and self.mode != "none", self.extra)


def parse_special_tokens(values: Sequence[str]) -> SpecialTokenChoice:
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
    return SpecialTokenChoice(mode, [t for t in tokens if t != EOT_TOKEN and t not in CHAT_SPECIAL_TOKENS])


# ---------------------------------------------------------------------------- tokenizers

def train_char(files: Sequence[Path], errors: str, specials: SpecialTokenChoice, total_bytes: int) -> CharTokenizer:
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


def train_bpe(files: Sequence[Path], args: argparse.Namespace, specials: SpecialTokenChoice, total_bytes: int):
    from tokenizer_bpe import BPETokenizer

    # The HF trainer's memory grows with the distinct words of its sample, ~1 KB each (1.4 GB peak for a
    # heavy-tailed 100 MB sample with 1.4M distinct words): a small machine wants a smaller sample.
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
        self.id_of_code_point = np.full(0x110000, tok.token_to_index[REPLACEMENT_CHAR], dtype=np.uint32)
        chars = tok.id_to_token[first:]
        self.id_of_code_point[[ord(c) for c in chars]] = np.arange(first, first + len(chars), dtype=np.uint32)
        self.token_to_index = tok.token_to_index
        # a capturing group: split() keeps the special tokens, at the odd positions
        self.special_re = re.compile("(" + "|".join(map(re.escape, sorted(tok.special_tokens, key=len,
                                                                             reverse=True))) + ")")

    def _plain(self, text: str) -> np.ndarray:
        return self.id_of_code_point[np.frombuffer(text.encode("utf-32-le"), dtype="<u4")]

    def encode_np(self, text: str) -> np.ndarray:
        parts = self.special_re.split(text)
        out = [self._plain(p) if i % 2 == 0 else np.array([self.token_to_index[p]], dtype=np.uint32)
               for i, p in enumerate(parts) if p]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.uint32)

    def encode_batch_numpy(self, texts: list[str]) -> list[np.ndarray]:
        return [self.encode_np(t) for t in texts]


# ---------------------------------------------------------------------------- main

SPLITS = ("train", "val")  # a split's index is its number in tokenize_corpus.Block


def output_names(out_dir: Path, prefix: str | None, kind: str) -> dict:
    """{"tokenizer": path, "train": {"bin", "gz", "meta": path}, "val": {...}}."""
    default = "tokens_char" if kind == "char" else "tokens_bpe"
    p = prefix or default
    names: dict = {split: {"bin": out_dir / f"{p}{infix}.bin", "gz": out_dir / f"{p}{infix}.bin.gz",
                           "meta": out_dir / f"{p}{infix}_metadata.json"}
                   for split, infix in zip(SPLITS, ("", "_val"))}
    names["tokenizer"] = out_dir / (f"{kind}_tokenizer.json" if p == default else f"{p}_tokenizer.json")
    return names


def all_paths(names: dict) -> list[Path]:
    return [names["tokenizer"]] + [path for split in SPLITS for path in names[split].values()]


def validate_args(args: argparse.Namespace) -> SpecialTokenChoice:
    for flag, ok, fix in (("vocab_size", args.vocab_size >= 1, "must be positive (the seed uses 32000)"),
                          ("val_fraction", 0.0 <= args.val_fraction <= 0.5, "use a value from 0 to 0.5 (e.g. 0.01)"),
                          ("workers", args.workers >= 1, "use at least 1"),
                          ("min_frequency", args.min_frequency >= 0, "must be 0 or more")):
        if not ok:
            raise UserError(f"--{flag} {getattr(args, flag)}: {fix}")
    if args.output_prefix is not None and (not args.output_prefix or Path(args.output_prefix).name != args.output_prefix):
        raise UserError(f"--output_prefix {args.output_prefix!r}: give a file name prefix; put the folder in --output_dir")
    specials = parse_special_tokens(args.special_tokens)
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


def load_existing(args: argparse.Namespace, specials: SpecialTokenChoice):
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


def write_tokenizer(args, tok, kind: str, names: dict, output_files: OutputFiles) -> str:
    """The tokenizer file beside the tokens (trained here, or a byte-for-byte copy); its sha256."""
    if args.tokenizer and names["tokenizer"].exists() and os.path.samefile(args.tokenizer, names["tokenizer"]):
        return sha256_file(names["tokenizer"])
    temp = output_files.temp(names["tokenizer"])
    if args.tokenizer:
        shutil.copyfile(args.tokenizer, temp)
    else:
        text = json.dumps(tok.to_dict(), indent=2) + "\n" if kind == "char" else tok.to_json()
        temp.write_text(text, encoding="utf-8")
    return sha256_file(temp)


def metadata(args, names: dict, split: str, token_file: TokenFileWriter, tok, tok_sha: str, dtype: np.dtype,
             files, encoder: str, total_bytes: int, has_val: bool) -> dict:
    """The fields the module docstring lists, for one split's .bin."""
    settings = {k: getattr(args, k) for k in ("vocab_size", "tokenizer", "tokenizer_type", "train_sample_bytes",
                                              "min_frequency", "special_tokens", "val_fraction", "dtype", "workers",
                                              "compress", "compress_level", "errors")}
    return {"format_version": FORMAT_VERSION, "dtype": dtype.name, "num_tokens": token_file.num_tokens,
            "num_bytes": token_file.num_bytes, "vocab_size": tok.vocab_size, "eot_token_id": tok.token_to_id(EOT_TOKEN),
            "tokenizer_file": names["tokenizer"].name, "tokenizer_sha256": tok_sha,
            "tokenizer_type": "char" if isinstance(tok, CharTokenizer) else "bpe",
            "special_tokens": added_tokens(tok), "source_files": [str(f) for f in files], "source_bytes": total_bytes,
            "num_documents": token_file.num_documents, "split": split, "bin_file": names[split]["bin"].name,
            "bin_sha256": token_file.sha256.hexdigest(),
            "gz_file": names[split]["gz"].name if args.compress else None,
            "val_metadata_file": names["val"]["meta"].name if has_val and split == "train" else None,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "settings": {**settings, "encoder": encoder}}


def keep_large_buffers_off_the_heap() -> bool:
    """Give every buffer of LARGE_BUFFER_BYTES or more (blocks of text, their ids) its own mapping,
    returned to the system when freed; True when applied (Linux with glibc)."""
    # glibc raises its mmap threshold to the size of the largest mapped buffer freed so far (up to
    # 32 MB). After one long document, the 4-16 MB blocks were carved from the heap and the per-thread
    # arenas instead, where they fragment: RSS grew with the input read (0.2 GB at the start, 1.1 GB
    # after 12 GB). A set threshold turns that adjustment off (bench/bench_tokenize.py --memory).
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES) == 1
    except (OSError, AttributeError):  # a C library without mallopt
        return False


def count_documents_for_split(files: Sequence[Path], val_fraction: float) -> tuple[int, int]:
    """(documents in the corpus, how many go to the validation file); (0, 0) without a split. Which
    ones is decided by position alone (tokenize_corpus.DocumentReader.split_of): evenly spread."""
    if not val_fraction:
        return 0, 0
    total_docs = count_documents(files)
    if total_docs < 2:
        raise UserError(f"--val_fraction {val_fraction}: the input is a single document (no {EOT_TOKEN} inside), "
                        f"so it cannot be split at document boundaries; separate documents with {EOT_TOKEN} "
                        f"(dataset_cleaner.py does) or pass several files")
    return total_docs, min(total_docs - 1, max(1, round(total_docs * val_fraction)))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.time()
    specials = validate_args(args)
    if args.workers != os.cpu_count():  # HF's thread pool (read when it first starts)
        os.environ["RAYON_NUM_THREADS"] = os.environ["RAYON_RS_NUM_CPUS"] = str(args.workers)
    tok, kind = load_existing(args, specials) if args.tokenizer else (None, args.tokenizer_type or "bpe")
    out_dir = Path(args.output_dir)
    names = output_names(out_dir, args.output_prefix, kind)
    files = check_inputs(expand_inputs(args.input, all_paths(names)), args.errors)
    total_bytes = sum(f.stat().st_size for f in files)
    print(f"input: {len(files)} file(s), {total_bytes / 1e6:,.1f} MB", file=sys.stderr)
    total_docs, val_docs = count_documents_for_split(files, args.val_fraction)
    splits = SPLITS if val_docs else SPLITS[:1]

    created_dir = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--output_dir {out_dir}: cannot create it ({e.strerror or e}); pass another --output_dir") \
            from None
    output_files, token_files = OutputFiles(), []
    lock = OutputDirLock(out_dir)  # held until the outputs are committed or discarded
    try:
        lock.remove_stale_temps(all_paths(names), started)
        if tok is None:
            tok = train_char(files, args.errors, specials, total_bytes) if kind == "char" \
                else train_bpe(files, args, specials, total_bytes)
        if args.dtype == "uint16" and tok.vocab_size > 65536:
            raise UserError(f"--dtype uint16 cannot hold this {kind} vocabulary of {tok.vocab_size:,}; "
                            f"use --dtype uint32 or auto")
        dtype = np.dtype("<u2" if args.dtype == "uint16" or (args.dtype == "auto" and tok.vocab_size <= 65536)
                         else "<u4")
        tok_sha = write_tokenizer(args, tok, kind, names, output_files)
        if kind == "char":
            encoder, encoder_name = CharArrayEncoder(tok), "char"
            print("encoder: char lookup table", file=sys.stderr)
        else:
            tok.tokenizer.no_truncation()
            tok.tokenizer.no_padding()
            tok.num_threads = args.workers
            print(tok.set_encoder(args.encoder), file=sys.stderr)
            encoder, encoder_name = tok, tok.encoder_name
        for split in splits:
            gz_temp = output_files.temp(names[split]["gz"]) if args.compress else None
            token_files.append(TokenFileWriter(output_files.temp(names[split]["bin"]), gz_temp,
                                               names[split]["bin"].name, args.compress_level))
        stats = encode_corpus(files, tok, encoder, token_files, dtype, args.errors, val_docs, total_docs, total_bytes)
        for token_file in token_files:
            token_file.close()
        metas = [(names[split]["meta"], metadata(args, names, split, token_file, tok, tok_sha, dtype, files,
                                                 encoder_name, total_bytes, len(splits) > 1))
                 for split, token_file in reversed(list(zip(splits, token_files)))]  # train's written last
        stale = ([] if args.compress else [names["train"]["gz"], names["val"]["gz"]]) + \
            ([] if val_docs else list(names["val"].values()))
        output_files.commit(metas, stale)
    except BaseException as e:
        for token_file in token_files:
            token_file.close(sync=False, quiet=True)
        output_files.discard()
        if created_dir and not any(out_dir.iterdir()):
            out_dir.rmdir()
        if isinstance(e, OSError) and not (e.filename and Path(e.filename) in files):
            raise UserError(f"--output_dir {out_dir}: cannot write {names['train']['bin'].name} and the files "
                            f"beside it ({e.strerror or e}); free disk space or choose another --output_dir") from None
        raise
    finally:
        lock.release()
    summarize(args, names, splits, token_files, stats, total_bytes, started, kind)
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


def encode_corpus(files, tok, encoder, token_files: list[TokenFileWriter], dtype: np.dtype, errors: str,
                  val_docs: int, total_docs: int, total_bytes: int) -> Stats:
    """Read, encode and write in a pipeline: while block k is encoded (all cores, no GIL), the main
    thread reads and cuts block k+1 and the writer thread compresses block k-1. Memory: a few blocks,
    whatever the corpus size (150 MB peak RSS over 2.2 GB: bench/bench_tokenize.py --memory), and
    with a tokenizer whose documents are encoded whole, the longest document."""
    specials = added_tokens(tok)
    kind = "char" if isinstance(tok, CharTokenizer) else tok.encoder_name
    reader = DocumentReader(files, errors, specials, kind == "char", val_docs, total_docs, SEGMENT_CHARS[kind],
                            whole_documents=kind != "char" and not cuts_are_exact(tok))
    # num_bytes: the bytes each id decodes to, summed (exact for char and byte-level BPE tokenizers);
    # for another decoder, the bytes of the text encoded
    lengths = tok.token_byte_lengths()
    byte_lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64)
    plain_chat_markers = [m for m in CHAT_SPECIAL_TOKENS[:2] if m not in specials]  # encoded as text: warned
    marker_count = 0
    writer = WriterThread(token_files)
    writer.start()
    t = time.time()

    def write_block(block: Block, encoded, bar) -> None:
        ids_of: list[list[np.ndarray]] = [[], []]  # per split
        for (split, text), ids in zip(block.segments, encoded.result()):
            ids_of[split].append(ids)
            if byte_lengths is None:
                token_files[split].num_bytes += len(text.encode("utf-8"))
        batch = []
        for split, arrays in enumerate(ids_of[:len(token_files)]):
            if arrays:
                ids = np.concatenate(arrays)
                if dtype.itemsize == 2 and ids.size and int(ids.max()) > 0xFFFF:  # never a silent overflow
                    raise UserError(f"token id {int(ids.max())} does not fit uint16; use --dtype uint32")
                if byte_lengths is not None:
                    token_files[split].num_bytes += int(byte_lengths[ids].sum())
                batch.append((split, ids.astype(dtype, copy=False)))
            token_files[split].num_documents += block.docs[split]
        writer.put(batch)
        bar.update(block.nbytes)

    try:
        with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenizing", file=sys.stderr,
                  mininterval=1.0) as bar, ThreadPoolExecutor(1) as encoding:
            pending: deque = deque()  # (block, its encoding): at most two
            for block in reader:
                texts = [text for _, text in block.segments]
                if plain_chat_markers:
                    marker_count += sum(text.count(m) for text in texts for m in plain_chat_markers)
                pending.append((block, encoding.submit(encoder.encode_batch_numpy, texts)))
                if len(pending) > 1:
                    write_block(*pending.popleft(), bar)
            while pending:
                write_block(*pending.popleft(), bar)
        writer.finish()
    except BaseException:
        writer.stop()
        raise
    return Stats(time.time() - t, reader.appended_eot, reader.unsafe_cuts, marker_count)


def summarize(args, names: dict, splits: Sequence[str], token_files: list[TokenFileWriter], stats: Stats,
              total_bytes: int, started: float, kind: str) -> None:
    rate = total_bytes / 1e6 / max(stats.seconds, 1e-9)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [f"done in {time.time() - started:.1f}s: {total_bytes / 1e6:,.1f} MB of text encoded at {rate:,.1f} MB/s, "
             f"peak RSS {peak:,.0f} MB"]
    written = []
    for split, token_file in zip(splits, token_files):
        lines.append(f"  {split + ':':6s} {token_file.num_tokens:,} tokens, {token_file.num_documents:,} documents -> "
                     f"{names[split]['bin']}")
        written += [names[split]["bin"]] + ([names[split]["gz"]] if args.compress else []) + [names[split]["meta"]]
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
    val_flag = f" --val_bin_file {names['val']['bin']}" if len(splits) > 1 else ""
    lines.append(f"next: python train_colab_mmap.py --bin_file {names['train']['bin']} --tokenizer_file "
                 f"{names['tokenizer']} --metadata_file {names['train']['meta']}{val_flag} --model_size "
                 f"{'tiny' if kind == 'char' else 'gpt2_small'}")
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    keep_large_buffers_off_the_heap()  # process-wide: made only when this script is the program
    cli_main(main)
