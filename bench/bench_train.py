"""Trainer throughput and loss memory on this machine.

1. tokens/s of train_colab_mmap.py (the whole trainer: prefetch thread, per-step sync, logging,
   tqdm) against a minimal PyTorch loop over the same model, batch and precision, measured in the
   same run, for `tiny` and `small` (vocab 4096); MFU is n/a on a CPU.
2. torch.compile against eager on this CPU (why --compile auto is off on CPUs).
3. peak memory of the loss at a 32k vocabulary for 8 x 1024 tokens: one logits tensor vs chunks
   recomputed in backward (model.chunked_cross_entropy), each in a fresh process (peak RSS).

    python bench/bench_train.py [--quick] [--out bench/results/train_raw.md]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train_colab_mmap as tcm  # noqa: E402
from common import sha256_file  # noqa: E402
from model import TransformerLanguageModel, get_config  # noqa: E402
from tokenizer import CharTokenizer  # noqa: E402
from train_step import build_optimizers  # noqa: E402

VOCAB = 4096


def make_data(folder: Path, n_tokens: int) -> list[str]:
    """A 4096-token char vocabulary (specials + U+FFFD + 4094 CJK characters) and random tokens."""
    tok = CharTokenizer(chars=[chr(0x4E00 + i) for i in range(VOCAB - 2)])
    assert tok.vocab_size == VOCAB
    tok.save(folder / "tok.json")
    np.random.default_rng(0).integers(0, VOCAB, n_tokens, dtype=np.uint16).tofile(folder / "data.bin")
    (folder / "data_metadata.json").write_text(json.dumps({
        "dtype": "uint16", "num_tokens": n_tokens, "vocab_size": VOCAB, "tokenizer_sha256": sha256_file(folder / "tok.json")}))
    return ["--bin_file", str(folder / "data.bin"), "--tokenizer_file", str(folder / "tok.json"),
            "--metadata_file", str(folder / "data_metadata.json")]


def trainer_tokens_per_s(data_args: list[str], size: str, batch: int, steps: int, skip: int, ck: Path) -> tuple[float, str]:
    """Steady-state tokens/s from the trainer's own metrics (steps skip..steps, wall clock)."""
    argv = data_args + ["--model_size", size, "--batch_size", str(batch), "--max_steps", str(steps),
                        "--log_every_steps", str(skip), "--eval_every_steps", "0", "--val_fraction", "0",
                        "--save_every_steps", "0", "--save_every_minutes", "0", "--compile", "off",
                        "--checkpoint_dir", str(ck), "--resume", "never", "--seed", "0",
                        "--optimizer", "adamw", "--schedule", "cosine"]  # the minimal loop's recipe
    with contextlib.redirect_stderr(open("/dev/null", "w")):
        assert tcm.main(argv) == 0
    recs = [json.loads(ln) for ln in (ck / "metrics.jsonl").read_text().splitlines()]
    recs = {r["step"]: r for r in recs if "loss" in r}
    a, b = recs[skip], recs[steps]
    dtype = json.loads((ck / f"step_{steps:08d}" / "trainer_state.json").read_text())["dtype"]
    return (b["tokens"] - a["tokens"]) / (b["elapsed_s"] - a["elapsed_s"]), dtype


def minimal_tokens_per_s(size: str, batch: int, steps: int, skip: int, dtype: str, data: np.ndarray,
                         use_compile: bool = False) -> tuple[float, float]:
    """nanoGPT's loop, nothing else: random windows, autocast, forward, backward, clip, AdamW.
    Returns (steady tokens/s, seconds of the first step)."""
    torch.manual_seed(0)
    cfg = get_config(size, VOCAB)
    model = TransformerLanguageModel(cfg)
    (opt,) = build_optimizers(model, "adamw", 1e-3, 1e-4, 0.0, 0.1, "cpu")
    fwd = torch.compile(model) if use_compile else model
    T = cfg.block_size
    rng = np.random.default_rng(0)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
    first, t_start = 0.0, time.perf_counter()
    t0 = t_start
    for step in range(steps):
        if step == skip:
            t0 = time.perf_counter()
        ix = rng.integers(0, len(data) - T - 1, batch)
        rows = torch.from_numpy(np.stack([data[i:i + T + 1] for i in ix]).astype(np.int64))
        with amp:
            _, loss = fwd(rows[:, :-1], rows[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        if step == 0:
            first = time.perf_counter() - t_start
    return (steps - skip) * batch * T / (time.perf_counter() - t0), first


LOSS_MEMORY = r"""
import resource, sys, time, torch, torch.nn.functional as F
sys.path.insert(0, {repo!r})
from model import chunked_cross_entropy
N, C, V, chunk = 8 * 1024, 768, 32000, {chunk}
torch.manual_seed(0)
h = torch.randn(N, C, requires_grad=True); w = (0.02 * torch.randn(V, C)).requires_grad_(); t = torch.randint(0, V, (N,))
(h.sum() + w.sum()).backward()  # gradients allocated and touched: part of the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
loss = chunked_cross_entropy(h, w, t, V, chunk) if chunk else F.cross_entropy((h @ w.t()).float(), t)
loss.backward()
dt = time.perf_counter() - t0
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, dt, loss.item())
"""


def loss_memory(chunk: int) -> tuple[float, float, float]:
    out = subprocess.run([sys.executable, "-c", LOSS_MEMORY.format(repo=str(REPO), chunk=chunk)],
                         capture_output=True, text=True, check=True)
    mb, secs, loss = map(float, out.stdout.split())
    return mb, secs, loss


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps, no compile comparison")
    ap.add_argument("--out", default=None, help="also write the tables (markdown) here")
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args(argv)
    lines: list[str] = []

    def emit(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    emit(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    runs = {"tiny": (16, 12 if args.quick else 40, 4), "small": (8, 6 if args.quick else 16, 2)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_args = make_data(tmp, 1 << 20)
        data = np.fromfile(tmp / "data.bin", dtype=np.uint16)
        emit("\n| model | batch x block | dtype | minimal loop tok/s | trainer tok/s | trainer / minimal | MFU |")
        emit("|---|---|---|---|---|---|---|")
        for size, (batch, steps, skip) in runs.items():
            trainer, minimal = [], []
            dtype = "fp32"
            for rep in range(2):  # interleaved, best of two: the machine is shared
                tps, dtype = trainer_tokens_per_s(data_args, size, batch, steps, skip, tmp / f"ck_{size}_{rep}")
                trainer.append(tps)
                minimal.append(minimal_tokens_per_s(size, batch, steps, skip, dtype, data)[0])
            T = get_config(size, VOCAB).block_size
            emit(f"| {size} | {batch} x {T} | {dtype} | {max(minimal):,.0f} | {max(trainer):,.0f} | "
                 f"{max(trainer) / max(minimal):.3f} | n/a (CPU) |")

        if not args.quick:
            emit("\n| model | dtype | eager tok/s | compiled tok/s | compiled / eager | first compiled step (s) |")
            emit("|---|---|---|---|---|---|")
            for size, (batch, steps, skip) in runs.items():
                dtype = tcm.choose_dtype("auto", torch.device("cpu"), get_config(size, VOCAB), batch * 256)[0]
                eager = minimal_tokens_per_s(size, batch, steps, skip, dtype, data)[0]
                try:
                    comp, first = minimal_tokens_per_s(size, batch, steps, skip, dtype, data, use_compile=True)
                    emit(f"| {size} | {dtype} | {eager:,.0f} | {comp:,.0f} | {comp / eager:.2f} | {first:.1f} |")
                except Exception as e:  # noqa: BLE001 - a CPU without a C++ toolchain
                    emit(f"| {size} | {dtype} | {eager:,.0f} | failed: {type(e).__name__} | - | - |")

    emit("\nLoss over 8 x 1024 tokens, vocab 32,000, n_embd 768, fp32, forward + backward "
         "(extra peak RSS over the inputs and their gradients):")
    emit("\n| loss | extra peak memory (MB) | time (s) | loss value |")
    emit("|---|---|---|---|")
    base = None
    for chunk in (0, 4096, 2048, 1024):
        mb, secs, loss = loss_memory(chunk)
        base = base or mb
        name = "one logits tensor (unchunked)" if chunk == 0 else f"chunks of {chunk} tokens"
        emit(f"| {name} | {mb:,.0f} ({mb / base:.2f}x) | {secs:.2f} | {loss:.6f} |")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
