"""The files of train_colab_mmap.py: token data in (checked against its metadata and tokenizer, read
by memmap or from RAM, cut into windows, masked for --loss_on assistant, prefetched by a thread) and
checkpoints and metrics out (atomic step folders, verification and fallback, pruning, metrics.jsonl
and the loss-curve PNG).
"""
from __future__ import annotations

import json
import os
import queue
import random
import shutil
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from common import (UserError, atomic_dir, atomic_path, atomic_write_json, atomic_write_text, first_line, read_json,
                    sha256_file)
from model import load_weights_file, unwrap_model

IGNORE_INDEX = -100
DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
# Kinds in the assistant mask's lookup table: which special token was seen last.
NOT_SPECIAL, ASSISTANT, OTHER_SPECIAL = 0, 1, 2
CKPT_FILES = ("pytorch_model.bin", "training_state.pt", "config.json", "tokenizer.json")


# ---------------------------------------------------------------------------- token files

@dataclass
class TokenFile:
    path: Path
    dtype: np.dtype
    num_tokens: int
    num_bytes: int | None = None  # UTF-8 bytes of the text the tokens decode to (metadata), for bits per byte


def metadata_beside(bin_path: Path) -> Path | None:
    """X_metadata.json beside X.bin, when it exists."""
    sibling = bin_path.with_name(bin_path.name[:-4] + "_metadata.json") if bin_path.name.endswith(".bin") else None
    return sibling if sibling is not None and sibling.is_file() else None


def check_token_files(bin_file: str, metadata_file: str | None, tokenizer_file: str, tok_vocab: int) -> TokenFile:
    """Validate the .bin against its metadata and the tokenizer (dtype, num_tokens, vocab_size,
    tokenizer_sha256). Paths named inside the metadata are never opened."""
    path = Path(bin_file)
    if not path.is_file():
        raise UserError(f"--bin_file {path} not found (pass the .bin written by tokenize_local_bpe.py; "
                        f"gunzip the .bin.gz first)")
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"--bin_file {path} is empty (0 bytes): regenerate it with tokenize_local_bpe.py from a "
                        f"non-empty corpus")
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
    if not isinstance(meta, dict):
        raise UserError(f"--metadata_file {metadata_file} holds a {type(meta).__name__}, not a JSON object")
    missing = [k for k in ("dtype", "num_tokens", "vocab_size", "tokenizer_sha256") if k not in meta]
    if missing:
        raise UserError(f"--metadata_file {metadata_file} lacks {missing}; regenerate it with tokenize_local_bpe.py")
    if meta["dtype"] not in DTYPES:
        raise UserError(f"--metadata_file {metadata_file}: dtype {meta['dtype']!r} is not one of {sorted(DTYPES)}")
    dtype = np.dtype(DTYPES[meta["dtype"]])
    num_tokens, vocab = meta["num_tokens"], meta["vocab_size"]
    if not isinstance(num_tokens, int) or num_tokens < 0 or not isinstance(vocab, int) or vocab <= 0:
        raise UserError(f"--metadata_file {metadata_file}: num_tokens={num_tokens!r} and vocab_size={vocab!r} "
                        f"must be non-negative integers")
    if size != num_tokens * dtype.itemsize:
        raise UserError(f"--bin_file {path} has {size:,} bytes but {metadata_file} says {num_tokens:,} {dtype.name} "
                        f"tokens ({num_tokens * dtype.itemsize:,} bytes): the .bin is truncated or from another "
                        f"run; decompress it again or pass the matching metadata")
    if vocab > np.iinfo(dtype).max + 1:
        raise UserError(f"--metadata_file {metadata_file}: vocab_size {vocab} does not fit dtype {dtype.name}")
    digest = sha256_file(tokenizer_file)
    if digest != meta["tokenizer_sha256"]:
        raise UserError(f"--tokenizer_file {tokenizer_file} (sha256 {digest[:12]}...) is not the tokenizer "
                        f"{path.name} was made with (metadata tokenizer_sha256 {str(meta['tokenizer_sha256'])[:12]}"
                        f"...); pass the tokenizer file written together with the .bin")
    if vocab != tok_vocab:
        raise UserError(f"--metadata_file {metadata_file} says vocab_size {vocab} but --tokenizer_file "
                        f"{tokenizer_file} has {tok_vocab} tokens; pass the matching pair")
    return TokenFile(path, dtype, num_tokens, _num_bytes(meta))


def _num_bytes(meta: dict) -> int | None:
    n = meta.get("num_bytes")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def check_val_file(val_bin_file: str, dtype: np.dtype) -> TokenFile:
    path = Path(val_bin_file)
    if not path.is_file():
        raise UserError(f"--val_bin_file {path} not found")
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise UserError(f"--val_bin_file {path} has {size} bytes, not a whole number of {dtype.name} tokens "
                        f"(it must use the training file's dtype)")
    meta_path = metadata_beside(path)
    meta = read_json(meta_path, "validation metadata") if meta_path else {}
    num_tokens = size // dtype.itemsize
    same_file = isinstance(meta, dict) and meta.get("num_tokens") == num_tokens  # bytes only from its own metadata
    return TokenFile(path, dtype, num_tokens, _num_bytes(meta) if same_file else None)


@dataclass
class Split:
    """Tokens [start, end) of a token file: the training part, or the validation part."""
    file: TokenFile
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


def plan_splits(tf: TokenFile, val_bin_file: str | None, val_fraction: float, block_size: int,
                batch_size: int) -> tuple[Split, Split | None]:
    """The training split and the validation split: a separate file, or the held-out tail (at
    least one window), or None. Refuses data too short to train."""
    T, B = block_size, batch_size
    if val_bin_file:
        vtf = check_val_file(val_bin_file, tf.dtype)
        train, val = Split(tf, 0, tf.num_tokens), Split(vtf, 0, vtf.num_tokens)
        if vtf.num_tokens < T + 1:
            raise UserError(f"--val_bin_file {val_bin_file} has {vtf.num_tokens} tokens, fewer than block_size+1 = "
                            f"{T + 1}")
    elif val_fraction > 0:
        n_val = max(int(tf.num_tokens * val_fraction), T + 1)
        n_train = max(0, tf.num_tokens - n_val)
        train, val = Split(tf, 0, n_train), Split(tf, n_train, tf.num_tokens)
    else:
        train, val = Split(tf, 0, tf.num_tokens), None
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
    """UTF-8 bytes of the text a split decodes to: the metadata's num_bytes for a whole file, else
    counted once by decoding it in chunks cut after an <|endoftext|> (id 0), so that no character
    is split between two chunks."""
    if split.start == 0 and split.end == split.file.num_tokens and split.file.num_bytes:
        return split.file.num_bytes
    mm = np.memmap(split.file.path, dtype=split.file.dtype, mode="r")
    total, pos = 0, split.start
    while pos < split.end:
        ids = np.asarray(mm[pos:min(pos + chunk, split.end)])
        if pos + len(ids) < split.end:
            eots = np.flatnonzero(ids == 0)
            ids = ids[:eots[-1] + 1] if eots.size else ids
        total += len(tokenizer.decode(ids.tolist()).encode("utf-8"))
        pos += len(ids)
    return total


def available_ram_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def choose_data_mode(mode: str, nbytes: int, copies: int = 1) -> str:
    """auto: preload when `copies` RAM copies (one per local rank) use under half the free RAM."""
    if mode != "auto":
        return mode
    free = available_ram_bytes()
    return "preload" if free is not None and nbytes * copies < free // 2 else "mmap"


# ---------------------------------------------------------------------------- sources

class TokenSource:
    """The tokens of a split. mmap: a fresh np.memmap per read, so pages of the mapping never pile
    up in resident memory over an epoch. preload: the split is read into RAM once."""

    def __init__(self, split: Split, preload: bool) -> None:
        self.file, self.start, self.end = split.file, split.start, split.end
        self.ram = np.fromfile(self.file.path, dtype=self.file.dtype, count=len(split),
                               offset=self.start * self.file.dtype.itemsize) if preload and len(split) else None

    def __len__(self) -> int:
        return self.end - self.start

    def _view(self) -> np.ndarray:
        if self.ram is not None:
            return self.ram
        return np.memmap(self.file.path, dtype=self.file.dtype, mode="r",
                         offset=self.start * self.file.dtype.itemsize, shape=(len(self),))

    def rows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """(len(starts), length) int64 array of tokens at the given offsets."""
        view = self._view()
        return view[starts[:, None] + np.arange(length)].astype(np.int64)

    def read_file(self, begin: int, end: int) -> np.ndarray:
        """Absolute positions of the whole file (assistant-mask lookback may cross the split)."""
        mm = np.memmap(self.file.path, dtype=self.file.dtype, mode="r")
        return np.asarray(mm[begin:end])


# ---------------------------------------------------------------------------- assistant mask

class AssistantMask:
    """--loss_on assistant: a target is kept when the last special token before it is
    <|assistant|>; that covers the reply and the special token that ends it, never the
    <|assistant|> token itself, nor user/system turns or text outside any chat."""

    def __init__(self, vocab_size: int, assistant_id: int, special_ids: list[int]) -> None:
        self.lut = np.zeros(vocab_size, dtype=np.uint8)
        for i in special_ids:
            if i is not None and 0 <= i < vocab_size:
                self.lut[i] = OTHER_SPECIAL
        self.lut[assistant_id] = ASSISTANT

    def kinds(self, tokens: np.ndarray) -> np.ndarray:
        return self.lut[np.clip(tokens, 0, len(self.lut) - 1)]

    def state_before(self, source: TokenSource, file_pos: int) -> int:
        """Kind of the last special token at a file position < file_pos (NOT_SPECIAL if none).
        Scans backwards in doubling chunks: a chat turn is short, so this reads little."""
        end, chunk = file_pos, 256
        while end > 0:
            begin = max(0, end - chunk)
            k = self.kinds(source.read_file(begin, end))
            nz = np.flatnonzero(k)
            if nz.size:
                return int(k[nz[-1]])
            end, chunk = begin, chunk * 2
        return NOT_SPECIAL

    def targets(self, rows: np.ndarray, prev: np.ndarray) -> np.ndarray:
        """rows: (B, T+1) windows; prev: (B,) state before each window's first token.
        Returns (B, T) bool: target rows[:, j+1] is an assistant token."""
        k = self.kinds(rows[:, :-1])
        T = k.shape[1]
        idx = np.where(k > 0, np.arange(T), -1)
        last = np.maximum.accumulate(idx, axis=1)  # last special position <= j, or -1
        state = np.where(last >= 0, np.take_along_axis(k, np.maximum(last, 0), axis=1), prev[:, None])
        return state == ASSISTANT


def assistant_mask_for(tok: Any, tokenizer_file: str) -> "AssistantMask":
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
    valid: np.ndarray           # (rows,) targets kept per row
    epoch: int
    offset: int                 # windows of the epoch consumed after this step


def make_batch(source: TokenSource, starts: np.ndarray, block_size: int, vocab_size: int,
               mask: AssistantMask | None) -> tuple[np.ndarray, np.ndarray]:
    rows = source.rows(starts, block_size + 1)
    if rows.size and int(rows.max()) >= vocab_size:
        r, c = np.unravel_index(int(rows.argmax()), rows.shape)
        raise UserError(f"{source.file.path} holds token id {int(rows.max())} at position "
                        f"{source.start + int(starts[r]) + int(c)}, outside the vocabulary of {vocab_size}: "
                        f"the .bin and the tokenizer do not match")
    x, y = rows[:, :-1], rows[:, 1:].copy()
    if mask is not None:
        prev = np.array([mask.state_before(source, source.start + int(s)) for s in starts], dtype=np.uint8)
        y[~mask.targets(rows, prev)] = IGNORE_INDEX
    return x, y


def num_windows(num_tokens: int, block_size: int) -> int:
    return max(0, (num_tokens - 1) // block_size)


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


class BatchStream:
    """This rank's rows of successive optimizer steps from (epoch, offset), prepared by a
    background thread one or two steps ahead (numpy slicing releases the GIL)."""

    def __init__(self, source: TokenSource, block_size: int, vocab_size: int, global_batch: int,
                 rank: int, world: int, seed: int, epoch: int, offset: int,
                 mask: AssistantMask | None, pin: bool, depth: int = 2) -> None:
        self.args = (source, block_size, vocab_size, global_batch, rank, world, seed, mask, pin)
        self.n = num_windows(len(source), block_size)
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(epoch, offset), daemon=True)
        self.thread.start()

    def _run(self, epoch: int, offset: int) -> None:
        source, T, V, B, rank, world, seed, mask, pin = self.args
        per_rank = B // world
        perm = epoch_permutation(self.n, seed, epoch)
        try:
            while not self.stop.is_set():
                if offset + B > self.n:
                    epoch, offset = epoch + 1, 0
                    perm = epoch_permutation(self.n, seed, epoch)
                ids = perm[offset + rank * per_rank: offset + (rank + 1) * per_rank]
                x, y = make_batch(source, ids * T, T, V, mask)
                xt, yt = torch.from_numpy(x), torch.from_numpy(y)
                if pin:
                    xt, yt = xt.pin_memory(), yt.pin_memory()
                item: Any = Batch(xt, yt, (y != IGNORE_INDEX).sum(axis=1), epoch, offset + B)
                offset += B
                self._put(item)
        except BaseException as e:  # handed to the main thread, which re-raises it
            self._put(e)

    def _put(self, item: Any) -> None:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self) -> Batch:
        item = self.q.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def eval_windows(n_windows: int, count: int) -> np.ndarray:
    """A fixed, evenly spread set of validation windows, so every evaluation sees the same data."""
    count = min(count, n_windows)
    return np.unique(np.linspace(0, n_windows - 1, num=count).round().astype(np.int64))


# ---------------------------------------------------------------------------- training state

@dataclass
class Ranks:
    """This process's place among the torchrun ranks; rank 0 alone prints and writes files."""
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""
    step: int = 0
    epoch: int = 0
    offset: int = 0               # windows of `epoch` already consumed
    tokens_seen: int = 0
    micro_batch_size: int = 1
    lr_scale: float = 1.0         # halved by each NaN rollback
    best_val_loss: float | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    val_bpb: float | None = None
    nan_skipped: int = 0
    rollbacks: int = 0
    wall_time_s: float = 0.0
    eval_windows: int = 0         # validation windows per evaluation, fixed by the first run so that
                                  # every evaluation (and `best`) compares the same set
    decay_start: int = 0          # WSD: the step its final decay began (0: not yet) and its length
    decay_steps: int = 0


def capture_rng(device: torch.device) -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.empty(0, dtype=torch.uint8),
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]}


def restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"].numel():
        torch.cuda.set_rng_state(state["cuda"], device)
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))


def save_checkpoint(ckdir: Path, model: torch.nn.Module, optimizers: list, scaler: Any, progress: Progress,
                    ranks: Ranks, device: torch.device, summary: dict, tokenizer_file: str, keep_last: int,
                    pointers: tuple[str, ...] = ("latest",)) -> None:
    """Every rank calls this (their RNG states are gathered); rank 0 writes step_N and points each
    of `pointers` (latest, best, decay_start) at it. `summary` goes into trainer_state.json."""
    rngs = [None] * ranks.world_size
    if ranks.world_size > 1:
        torch.distributed.all_gather_object(rngs, capture_rng(device))
    else:
        rngs = [capture_rng(device)]
    if ranks.is_main:
        state = {"format_version": 1, "progress": asdict(progress), "optimizer": optimizers[0].state_dict(),
                 "muon": optimizers[1].state_dict() if len(optimizers) > 1 else {},
                 "scaler": scaler.state_dict() if scaler is not None else {}, "rng": rngs,
                 "world_size": ranks.world_size}
        name = f"step_{progress.step:08d}"
        try:
            write_checkpoint(ckdir, name, model, tokenizer_file, state, summary)
        except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
            raise UserError(f"cannot write checkpoint {name} to --checkpoint_dir {ckdir}: {first_line(e, 160)}; "
                            f"free disk space or pass another --checkpoint_dir (the earlier checkpoints there are "
                            f"intact)") from None
        for pointer in pointers:
            atomic_write_text(ckdir / pointer, name + "\n")
        prune_checkpoints(ckdir, keep_last)
    if ranks.world_size > 1:
        torch.distributed.barrier()


def saved_optimizer(checkpoint: "Checkpoint") -> str:
    """The optimizer a checkpoint was trained with (checkpoints from before Muon: adamw)."""
    return "muon" if checkpoint.training_state.get("muon") else "adamw"


def restore_checkpoint(checkpoint: "Checkpoint", model: torch.nn.Module, optimizers: list, scaler: Any,
                       progress: Progress, ranks: Ranks, device: torch.device, seed: int) -> None:
    """Weights, optimizer states (the learning rates of this run kept), scaler, progress (in place)
    and this rank's RNG states."""
    state = checkpoint.training_state
    model.load_state_dict(checkpoint.weights)
    for opt, saved in zip(optimizers, (state["optimizer"], state.get("muon"))):
        rates = [(g["peak_lr"], g["min_lr"]) for g in opt.param_groups]
        opt.load_state_dict(saved)  # also loads the saved param-group settings: keep this run's rates
        for g, (peak, low) in zip(opt.param_groups, rates):
            g["peak_lr"], g["min_lr"] = peak, low
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    for f in fields(Progress):
        setattr(progress, f.name, state["progress"].get(f.name, f.default))
    rngs = state.get("rng", [])
    if len(rngs) == ranks.world_size:
        restore_rng(rngs[ranks.rank], device)
    else:  # another world size: fresh but reproducible streams
        torch.manual_seed(seed + 7919 * progress.step + ranks.rank)


# ---------------------------------------------------------------------------- checkpoints

def list_checkpoints(ckdir: Path) -> list[Path]:
    """step_* folders, most recently written first (trainer_state.json is written last)."""
    def written(p: Path) -> float:
        f = p / "trainer_state.json"
        return f.stat().st_mtime if f.exists() else p.stat().st_mtime
    dirs = [p for p in ckdir.glob("step_*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(dirs, key=lambda p: (written(p), int(p.name[5:])), reverse=True)


@dataclass
class Checkpoint:
    """One verified step folder, loaded."""
    folder: Path
    weights: dict            # the model's state_dict
    training_state: dict     # optimizer(s), scaler, RNG states, progress (training_state.pt)
    trainer_state: dict      # trainer_state.json: the human-readable summary, file sizes and sha256


def read_checkpoint(folder: Path) -> Checkpoint:
    """Load a step folder after checking every file's size and sha256. Raises ValueError naming
    what is wrong."""
    try:
        meta = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"trainer_state.json unreadable ({type(e).__name__})") from None
    for name, want in meta.get("files", {}).items():
        f = folder / name
        if not f.is_file() or f.stat().st_size != want["size"]:
            raise ValueError(f"{name} is missing or truncated")
        if sha256_file(f) != want["sha256"]:
            raise ValueError(f"{name} is corrupt (sha256 mismatch)")
    current = "pytorch_model.bin"
    try:
        weights = load_weights_file(folder)
        current = "training_state.pt"
        state = torch.load(folder / current, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable state, a code-carrying pickle included
        reason = first_line(e, 160)
        if "Weights only load failed" in str(e) or "weights_only" in str(e):
            reason = "it holds objects other than tensors (refused: loading it could run code)"
        raise ValueError(f"cannot load {current}: {reason}") from None
    return Checkpoint(folder, weights, state, meta)


def find_checkpoint(ckdir: Path, say: Callable[[str], None]) -> Checkpoint | None:
    """The newest usable checkpoint in ckdir; unusable newer ones are skipped with a warning."""
    found = list_checkpoints(ckdir) if ckdir.is_dir() else []
    pointer = ckdir / "latest"
    if pointer.is_file():
        named = ckdir / pointer.read_text(encoding="utf-8").strip()
        found = [named] * named.is_dir() + [p for p in found if p != named]
    for i, folder in enumerate(found):
        try:
            return read_checkpoint(folder)
        except ValueError as e:
            nxt = f"falling back to {found[i + 1].name}" if i + 1 < len(found) else "no earlier checkpoint"
            say(f"warning: checkpoint {folder} is unusable: {e}; {nxt}")
    if found:
        raise UserError(f"no usable checkpoint in {ckdir} (all {len(found)} are damaged); "
                        f"pass --resume never to start over or --resume PATH")
    return None


def write_checkpoint(ckdir: Path, name: str, model: torch.nn.Module, tokenizer_file: str,
                     training_state: dict, trainer_state: dict) -> Path:
    """Build ckdir/.tmp-NAME-PID, then rename it to ckdir/NAME: never a half folder."""
    final = ckdir / name
    with atomic_dir(final, tmp=ckdir / f".tmp-{name}-{os.getpid()}") as tmp:
        # weights as CPU tensors (a GPU-trained checkpoint must load on a CPU: the seed's torch.load
        # has no map_location); tensors shared by tied embeddings stay shared
        unwrap_model(model).write_weights(tmp)
        shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
        torch.save(training_state, tmp / "training_state.pt")
        files = {}
        for f in CKPT_FILES:
            with open(tmp / f, "rb") as fh:
                os.fsync(fh.fileno())
            files[f] = {"size": (tmp / f).stat().st_size, "sha256": sha256_file(tmp / f)}
        atomic_write_json(tmp / "trainer_state.json", {**trainer_state, "files": files})
    return final


POINTERS = ("latest", "best", "decay_start")  # files naming a step folder; pruning never removes those


def prune_checkpoints(ckdir: Path, keep_last: int) -> None:
    if keep_last <= 0:
        return
    protected = {(ckdir / p).read_text().strip() for p in POINTERS if (ckdir / p).is_file()}
    for folder in list_checkpoints(ckdir)[keep_last:]:
        if folder.name not in protected:
            shutil.rmtree(folder, ignore_errors=True)


def recover_interrupted_saves(ckdir: Path) -> None:
    """A run killed mid-save leaves .tmp-* (incomplete: removed) or, when it was replacing a
    folder of the same step, .old-NAME-PID (the complete old folder: put back if NAME is gone)."""
    for leftover in ckdir.glob(".tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
    for old in ckdir.glob(".old-*"):
        name = ckdir / old.name[len(".old-"):].rsplit("-", 1)[0]
        if name.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, name)


# ---------------------------------------------------------------------------- metrics

class MetricsLog:
    """metrics.jsonl (one JSON object per log, evaluation or event), extra sinks (wandb,
    tensorboard) and loss_curve.png. Only rank 0 makes one."""

    def __init__(self, ckdir: Path, say: Callable[[str], None]) -> None:
        self.path, self.png, self.say = ckdir / "metrics.jsonl", ckdir / "loss_curve.png", say
        self.history: list[dict] = []
        self.sinks: list[Callable[[dict], Any]] = []
        self.warned_no_matplotlib = False

    def start_fresh(self) -> None:
        """A fresh run keeps an older run's metrics under another name."""
        if self.path.exists():
            os.replace(self.path, self.path.with_name(f"metrics-{int(time.time())}.jsonl"))

    def truncate_after(self, step: int) -> None:
        """On resume or rollback: forget records logged after `step` (events stay)."""
        if self.path.exists():
            keep = [json.loads(ln) for ln in self.path.read_text().splitlines() if ln.strip()]
            self.history = [r for r in keep if r.get("step", 0) <= step or "event" in r]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.history))

    def write(self, record: dict) -> None:
        self.history.append(record)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        for sink in self.sinks:
            sink(record)

    def plot(self) -> None:
        """Train and validation loss against tokens seen; validation bits per byte on a second axis."""
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            if not self.warned_no_matplotlib:
                self.say("note: matplotlib is not installed, so no loss_curve.png (pip install matplotlib)")
                self.warned_no_matplotlib = True
            return
        def points(key: str) -> list[tuple[int, float]]:
            return [(r["tokens"], r[key]) for r in self.history if r.get(key) is not None and "tokens" in r]
        fig, ax = plt.subplots(figsize=(7, 4))
        for key, label in (("loss", "train"), ("val_loss", "validation")):
            if points(key):
                ax.plot(*zip(*points(key)), label=label, marker="o" if key == "val_loss" else None)
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3)
        handles = ax.get_legend_handles_labels()
        if points("val_bpb"):
            bpb_ax = ax.twinx()
            bpb_ax.plot(*zip(*points("val_bpb")), color="tab:green", marker="s", label="validation bits/byte")
            bpb_ax.set_ylabel("bits per byte")
            extra = bpb_ax.get_legend_handles_labels()
            handles = (handles[0] + extra[0], handles[1] + extra[1])
        ax.legend(*handles)
        with atomic_path(self.png) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
