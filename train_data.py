"""The training data: token files checked against their metadata and tokenizer, train/validation splits,
memmap or RAM reads, the --loss_on assistant mask, and batches of windows in a seeded order per epoch.
Window i of a split is its tokens [i*T, i*T + T + 1): inputs, and targets shifted by one."""
from __future__ import annotations

import contextlib
import functools
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import UserError, read_json, sha256_file
from model import IGNORE_INDEX

DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
NOT_SPECIAL, ASSISTANT, OTHER_SPECIAL = 0, 1, 2  # kinds of token in the assistant mask (of the last special one seen)


# ---------------------------------------------------------------------------- token files

@dataclass
class TokenFile:
    path: Path
    dtype: np.dtype
    num_tokens: int
    num_bytes: int | None = None  # UTF-8 bytes of the text the tokens decode to (metadata), for bits per byte


def metadata_beside(bin_path: Path) -> Path | None:
    sibling = bin_path.with_name(bin_path.name.removesuffix(".bin") + "_metadata.json")  # X.bin: X_metadata.json
    return sibling if bin_path.suffix == ".bin" and sibling.is_file() else None


def check_token_files(bin_file: str, metadata_file: str | None, tokenizer_file: str, tok_vocab: int) -> TokenFile:
    """The .bin checked against its metadata and the tokenizer (paths inside the metadata are never opened)."""
    path = Path(bin_file)
    size = path.stat().st_size if path.is_file() else 0
    if size == 0:
        raise UserError(f"--bin_file {path} {'is empty (0 bytes)' if path.is_file() else 'not found'}: pass the .bin "
                        f"written by tokenize_local_bpe.py from a non-empty corpus (gunzip a .bin.gz first)")
    metadata_file = metadata_file or metadata_beside(path)
    if metadata_file is None:
        dtype = np.dtype(np.uint16 if tok_vocab <= 65536 else np.uint32)
        if size % dtype.itemsize:
            raise UserError(f"--bin_file {path} has {size} bytes, not a whole number of {dtype.name} tokens; "
                            f"pass its --metadata_file")
        print(f"note: no --metadata_file; reading {path.name} as {dtype.name} (from the tokenizer's vocabulary "
              f"of {tok_vocab}) without checking it against the tokenizer", file=sys.stderr, flush=True)
        return TokenFile(path, dtype, size // dtype.itemsize)
    meta = read_json(metadata_file, "--metadata_file")
    missing = [k for k in ("dtype", "num_tokens", "vocab_size", "tokenizer_sha256") if k not in meta]
    if missing:
        raise UserError(f"--metadata_file {metadata_file} lacks {missing}; regenerate it with tokenize_local_bpe.py")
    num_tokens, vocab = meta["num_tokens"], meta["vocab_size"]
    if meta["dtype"] not in DTYPES or not (isinstance(num_tokens, int) and num_tokens >= 0 and isinstance(vocab, int)
                                           and 0 < vocab <= np.iinfo(DTYPES[meta["dtype"]]).max + 1):
        raise UserError(f"--metadata_file {metadata_file}: dtype {meta['dtype']!r}, num_tokens {num_tokens!r}, "
                        f"vocab_size {vocab!r} are not a dtype of {sorted(DTYPES)} and counts that fit it; "
                        f"regenerate it with tokenize_local_bpe.py")
    dtype = np.dtype(DTYPES[meta["dtype"]])
    if size != num_tokens * dtype.itemsize:
        raise UserError(f"--bin_file {path} has {size:,} bytes but {metadata_file} says {num_tokens:,} {dtype.name} "
                        f"tokens ({num_tokens * dtype.itemsize:,} bytes): the .bin is truncated or from another "
                        f"run; decompress it again or pass the matching metadata")
    if sha256_file(tokenizer_file) != meta["tokenizer_sha256"]:
        raise UserError(f"--tokenizer_file {tokenizer_file} is not the tokenizer {path.name} was made with (its sha256 "
                        f"differs from the metadata's); pass the tokenizer file written together with the .bin")
    if vocab != tok_vocab:
        raise UserError(f"--metadata_file {metadata_file} says vocab_size {vocab} but --tokenizer_file "
                        f"{tokenizer_file} has {tok_vocab} tokens; pass the matching pair")
    return TokenFile(path, dtype, num_tokens, meta.get("num_bytes"))


@dataclass
class Split:
    """Tokens [start, end) of a token file: the training part, or the validation part."""
    file: TokenFile
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


def plan_splits(tf: TokenFile, val_bin_file: str | None, val_fraction: float, T: int,
                B: int) -> tuple[Split, Split | None]:
    """Training split and validation split (a separate file, the held-out tail, or None); refuses too little data."""
    train, val = Split(tf, 0, tf.num_tokens), None
    if val_bin_file:
        path = Path(val_bin_file)
        n = path.stat().st_size / tf.dtype.itemsize if path.is_file() else 0
        if n != int(n) or n < T + 1:
            found = f"holds {n:g} tokens" if path.is_file() else "not found"
            raise UserError(f"--val_bin_file {path} {found}: it must hold a whole number, at least block_size+1 = "
                            f"{T + 1}, of {tf.dtype.name} tokens (the training file's dtype)")
        meta_path = metadata_beside(path)
        meta = read_json(meta_path, "validation metadata") if meta_path else {}
        own = meta.get("num_tokens") == n  # bytes only from its own metadata
        val = Split(TokenFile(path, tf.dtype, int(n), meta.get("num_bytes") if own else None), 0, int(n))
    elif val_fraction > 0:
        n_train = max(0, tf.num_tokens - max(int(tf.num_tokens * val_fraction), T + 1))  # at least one window held out
        train, val = Split(tf, 0, n_train), Split(tf, n_train, tf.num_tokens)
    held = f" after holding out {len(val):,} for validation" if val and val.file is tf else ""
    if len(train) < T + 1:
        raise UserError(f"--block_size {T} is longer than the training data ({len(train):,} tokens{held}): use "
                        f"--block_size {max(1, len(train) // 2)} or less, or more data")
    if num_windows(len(train), T) < B:
        raise UserError(f"--batch_size {B} needs {B} windows of {T} tokens per step but the training data has only "
                        f"{num_windows(len(train), T)} ({len(train):,} tokens{held}): lower --batch_size or "
                        f"--block_size")
    return train, val


def split_bytes(split: Split, tokenizer: Any, chunk: int = 1 << 20) -> int:
    """UTF-8 bytes of the text a split decodes to: the metadata's num_bytes for a whole file, else counted."""
    if split.start == 0 and split.end == split.file.num_tokens and isinstance(split.file.num_bytes, int):
        return split.file.num_bytes
    mm = np.memmap(split.file.path, dtype=split.file.dtype, mode="r")
    total, pos = 0, split.start
    while pos < split.end:  # decoded in chunks cut after an <|endoftext|> (id 0): no character is cut in two
        ids = np.asarray(mm[pos:min(pos + chunk, split.end)])
        if pos + len(ids) < split.end:
            eots = np.flatnonzero(ids == 0)
            ids = ids[:eots[-1] + 1] if eots.size else ids
        total += len(tokenizer.decode(ids.tolist()).encode("utf-8"))
        pos += len(ids)
    return total


def choose_data_mode(mode: str, nbytes: int, copies: int = 1) -> str:
    """auto: preload when `copies` RAM copies (one per local rank) use under half the available RAM."""
    if mode != "auto":
        return mode
    available = 0  # unknown (not Linux): mmap
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/meminfo") as f:
        # MemAvailable counts the page cache the kernel can reclaim, unlike the free pages
        available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    return "preload" if nbytes * copies < available // 2 else "mmap"


class TokenSource(Split):
    """A split's tokens: in RAM (preload), or a fresh np.memmap per read, so mapped pages never pile up in RSS."""

    def __init__(self, split: Split, preload: bool) -> None:
        super().__init__(split.file, split.start, split.end)
        self.ram = np.fromfile(self.file.path, dtype=self.file.dtype, count=len(split),
                               offset=self.start * self.file.dtype.itemsize) if preload and len(split) else None

    def rows(self, starts: np.ndarray, length: int) -> np.ndarray:
        view = self.ram if self.ram is not None else self.read_file(self.start, self.end)
        return view[starts[:, None] + np.arange(length)].astype(np.int64)  # (len(starts), length), split offsets

    def read_file(self, begin: int, end: int) -> np.ndarray:
        return np.memmap(self.file.path, dtype=self.file.dtype, mode="r")[begin:end]  # whole-file positions


# ---------------------------------------------------------------------------- assistant mask

class AssistantMask:
    """--loss_on assistant: a target is kept when the last special token before it is <|assistant|>: the reply
    and the special token that ends it, never <|assistant|> itself, user/system turns or plain text."""

    def __init__(self, vocab_size: int, assistant_id: int, special_ids: list[int]) -> None:
        self.lut = np.zeros(vocab_size, dtype=np.uint8)  # token id -> NOT_SPECIAL, ASSISTANT or OTHER_SPECIAL
        self.lut[[i for i in special_ids if i is not None and 0 <= i < vocab_size]] = OTHER_SPECIAL
        self.lut[assistant_id] = ASSISTANT

    def kinds(self, tokens: np.ndarray) -> np.ndarray:
        return self.lut[np.clip(tokens, 0, len(self.lut) - 1)]

    def state_before(self, source: TokenSource, file_pos: int) -> int:
        """Kind of the last special token before file_pos, read backwards in doubling chunks (turns are short)."""
        end, chunk = file_pos, 256
        while end > 0:  # the whole file, not just the split: a validation split may begin mid-reply
            begin = max(0, end - chunk)
            k = self.kinds(source.read_file(begin, end))
            nz = np.flatnonzero(k)
            if nz.size:
                return int(k[nz[-1]])
            end, chunk = begin, chunk * 2
        return NOT_SPECIAL

    def targets(self, source: TokenSource, starts: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(B, T) bool, True where target rows[:, j+1] is kept: the last special token up to x[j] is <|assistant|>."""
        before = [self.state_before(source, source.start + int(s)) for s in starts]  # (B,) kind before each window
        k = np.column_stack([np.array(before, dtype=np.uint8), self.kinds(rows[:, :-1])])  # (B, 1+T)
        last = np.maximum.accumulate(np.where(k > 0, np.arange(k.shape[1]), 0), axis=1)  # column of the last special
        return np.take_along_axis(k, last, axis=1)[:, 1:] == ASSISTANT


def assistant_mask_for(tok: Any, tokenizer_file: str) -> AssistantMask:
    aid = tok.token_to_id("<|assistant|>")
    if aid is None:
        raise UserError(f"--loss_on assistant: {tokenizer_file} has no <|assistant|> token (train the "
                        f"tokenizer on chat data or with --special_tokens)")
    return AssistantMask(tok.vocab_size, aid, [tok.token_to_id(t) for t in ("<|endoftext|>", "<|user|>", "<|system|>")])


# ---------------------------------------------------------------------------- batches

@dataclass
class Batch:
    x: torch.Tensor             # (rows, T) int64, pinned when feeding a GPU
    y: torch.Tensor             # (rows, T) int64, IGNORE_INDEX where masked
    epoch: int
    offset: int                 # windows of the epoch consumed after this step


def make_batch(source: TokenSource, starts: np.ndarray, block_size: int, vocab_size: int,
               mask: AssistantMask | None) -> tuple[np.ndarray, np.ndarray]:
    rows = source.rows(starts, block_size + 1)  # (B, T+1)
    if rows.size and int(rows.max()) >= vocab_size:
        r, c = np.unravel_index(int(rows.argmax()), rows.shape)
        raise UserError(f"{source.file.path} holds token id {int(rows.max())} at position "
                        f"{source.start + int(starts[r]) + int(c)}, outside the vocabulary of {vocab_size}: "
                        f"the .bin and the tokenizer do not match")
    x, y = rows[:, :-1], rows[:, 1:].copy()
    if mask is not None:
        y[~mask.targets(source, starts, rows)] = IGNORE_INDEX
    return x, y


def num_windows(num_tokens: int, block_size: int) -> int:
    return max(0, (num_tokens - 1) // block_size)


@functools.lru_cache(maxsize=2)  # computed once per epoch, not per batch (read-only: shared by its callers)
def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


class BatchStream:
    """This rank's rows of each next optimizer step from (epoch, offset), prepared ahead on a background thread."""

    def __init__(self, source: TokenSource, block_size: int, vocab_size: int, global_batch: int, rank: int,
                 world: int, seed: int, epoch: int, offset: int, mask: AssistantMask | None, pin: bool) -> None:
        self.source, self.T, self.V, self.mask, self.pin = source, block_size, vocab_size, mask, pin
        self.B, self.seed, self.epoch, self.offset = global_batch, seed, epoch, offset
        self.n = num_windows(len(source), block_size)  # windows per epoch
        per_rank = global_batch // world
        self.rows = slice(rank * per_rank, (rank + 1) * per_rank)  # ranks take turns within each step's windows
        self.pool = ThreadPoolExecutor(max_workers=1)  # one thread is enough: numpy slicing releases the GIL
        self.ahead = deque(self.pool.submit(self.load, *self.advance()) for _ in range(2))  # two steps ahead

    def advance(self) -> tuple[int, int]:
        if self.offset + self.B > self.n:  # too few windows left for a step: the next epoch begins
            self.epoch, self.offset = self.epoch + 1, 0
        self.offset += self.B
        return self.epoch, self.offset - self.B  # the (epoch, offset) of the next step

    def load(self, epoch: int, offset: int) -> Batch:
        ids = epoch_permutation(self.n, self.seed, epoch)[offset:offset + self.B][self.rows]
        x, y = make_batch(self.source, ids * self.T, self.T, self.V, self.mask)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        if self.pin:
            xt, yt = xt.pin_memory(), yt.pin_memory()
        return Batch(xt, yt, epoch, offset + self.B)

    def next(self) -> Batch:
        batch = self.ahead.popleft().result()  # raises here what the thread raised
        self.ahead.append(self.pool.submit(self.load, *self.advance()))
        return batch

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def eval_windows(n_windows: int, count: int) -> np.ndarray:
    """A fixed, evenly spread set of validation windows, so every evaluation sees the same data."""
    return np.unique(np.linspace(0, n_windows - 1, num=min(count, n_windows)).round().astype(np.int64))
