"""What the training loop calls: the optimizers (AdamW, or Muon for the matrices inside the blocks), the learning-rate
schedules, forward and backward over micro-batches, evaluation, the bf16 probe, and the failure handling (out-of-memory
halving, NaN rollback, signals)."""
from __future__ import annotations

import contextlib
import gc
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from common import UserError
from model import IGNORE_INDEX, GPTConfig, TransformerLanguageModel
from train_data import Batch, TokenSource, make_batch
from train_state import MetricsLog, Progress, Ranks, capture_rng, find_checkpoint, restore_checkpoint, restore_rng

# Dense bf16/fp16 tensor-core peak, for MFU.
PEAK_TFLOPS = [("H100 PCIe", 756), ("H100", 989), ("H200", 989), ("A100", 312), ("V100", 125), ("T4", 65)]


def peak_flops(device: torch.device) -> float | None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    return next((tf * 1e12 for key, tf in PEAK_TFLOPS if key in name), None)


# ---------------------------------------------------------------------------- optimizers and schedules

def build_optimizers(model: TransformerLanguageModel, optimizer: str, lr: float, min_lr: float, muon_lr: float,
                     weight_decay: float, device_type: str) -> list[torch.optim.Optimizer]:
    """[AdamW] for all, or [AdamW, Muon] with Muon for the 2-D matrices inside the blocks (qkv, projections, MLP)."""
    muon_params = [p for p in model.transformer.h.parameters() if p.dim() == 2] if optimizer == "muon" else []
    in_muon = {id(p) for p in muon_params}
    rest = [p for p in model.parameters() if id(p) not in in_muon]
    # weight decay on matrices only, never on biases or LayerNorms; each group keeps its schedule's ends
    groups = [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}]
    adamw = torch.optim.AdamW([{**g, "peak_lr": lr, "min_lr": min_lr} for g in groups], lr=lr, betas=(0.9, 0.95),
                              **({"fused": True} if device_type == "cuda" else {}))
    if optimizer != "muon":
        return [adamw]
    # "match_rms_adamw" scales each matrix's update to AdamW's typical size (0.2 * sqrt(max(fan_in, fan_out))),
    # so one Muon rate works across widths; its min_lr is the same fraction of its peak as AdamW's
    return [adamw, torch.optim.Muon([{"params": muon_params, "peak_lr": muon_lr, "min_lr": muon_lr * min_lr / lr}],
                                    lr=muon_lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")]


def lr_at(step: int, total: int, warmup: int, lr: float, min_lr: float, schedule: str = "cosine",
          decay_start: int = 0, decay_steps: int = 0) -> float:
    """The learning rate at 0-based `step`: linear warmup, then cosine to min_lr at `total`, or WSD."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
    # WSD (warmup-stable-decay): lr until `decay_start`, then linear to min_lr over `decay_steps` (0: not begun)
    if not decay_steps or step < decay_start:
        return lr
    return lr + (min_lr - lr) * min(1.0, (step - decay_start) / max(1, decay_steps))


# ---------------------------------------------------------------------------- forward and backward

def loss_sum(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_valid: int, loss_chunk: int) -> torch.Tensor:
    """Sum (not mean) of a micro-batch's token losses: micro-batches of any size add up to the batch's loss."""
    if loss_chunk > 0:
        _, mean = model(x, y, loss_chunk_size=loss_chunk)
        return mean * n_valid
    logits, _ = model(x)  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def forward_backward(model: nn.Module, batch: Batch, micro_batch_size: int, loss_chunk: int,
                     amp: contextlib.AbstractContextManager, scaler: torch.amp.GradScaler, ranks: Ranks,
                     masked: bool) -> tuple[torch.Tensor, int]:
    """Gradients of the batch's mean token loss over micro-batches; returns this rank's loss sum, all ranks' targets."""
    device = next(model.parameters()).device
    x, y = batch.x.to(device, non_blocking=True), batch.y.to(device, non_blocking=True)  # (rows, T) each
    n_total = int((batch.y != IGNORE_INDEX).sum())
    if ranks.world_size > 1 and masked:  # --loss_on assistant: each rank's count differs, so add them up
        n_total = int(all_reduce(torch.tensor(n_total, dtype=torch.float64, device=device)).item())
    else:  # every rank has the same count: no all-reduce (and no device sync) on the hot path
        n_total *= ranks.world_size
    scale = ranks.world_size / max(n_total, 1)  # DDP averages over ranks: this turns it into sum / n_total
    loss = torch.zeros((), device=device)
    for s in range(0, x.size(0), micro_batch_size):
        last = s + micro_batch_size >= x.size(0)
        # DDP all-reduces gradients at every backward; only the last micro-batch needs it
        with model.no_sync() if ranks.world_size > 1 and not last else contextlib.nullcontext():
            with amp:
                rows = slice(s, s + micro_batch_size)
                micro_loss = loss_sum(model, x[rows], y[rows], int((batch.y[rows] != IGNORE_INDEX).sum()), loss_chunk)
            scaler.scale(micro_loss * scale).backward()  # scaled up only for fp16, against underflow
        loss += micro_loss.detach().float()
    return loss, n_total


def all_reduce(t: torch.Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.Tensor:
    dist.all_reduce(t, op=op)
    return t


@torch.no_grad()
def evaluate(model: nn.Module, source: TokenSource, window_ids: np.ndarray, micro_batch_size: int,
             mask, loss_chunk: int, amp: contextlib.AbstractContextManager, ranks: Ranks) -> float | None:
    """Mean token loss over the given validation windows (each rank takes every world_size-th)."""
    device = next(model.parameters()).device
    T, V = model.config.block_size, model.config.vocab_size
    model.eval()
    ids = window_ids[ranks.rank::ranks.world_size]
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (loss sum, target count)
    for s in range(0, len(ids), micro_batch_size):
        x, y = make_batch(source, ids[s:s + micro_batch_size] * T, T, V, mask)
        n = int((y != IGNORE_INDEX).sum())
        with amp:
            ls = loss_sum(model, torch.from_numpy(x).to(device), torch.from_numpy(y).to(device), n, loss_chunk)
        total += torch.stack([ls.double(), torch.tensor(float(n), dtype=torch.float64, device=device)])
    if ranks.world_size > 1:
        all_reduce(total)
    model.train()
    loss_total, count = total.tolist()
    return loss_total / count if count else None


def probe_bf16_speedup(config: GPTConfig, rows: int) -> float:
    """fp32 time / bf16 autocast time of this model's matrix multiplies (forward and backward) on this CPU."""
    # CPU flags do not predict it (bf16 is 2x faster with AMX and on some AMD EPYCs, 1.5x slower on Xeons
    # without AMX), so it is measured at the model's shapes: the block matrices, the head up to 2,048 columns
    C, V = config.n_embd, min(config.padded_vocab_size, 2048)
    shapes = [(C, 3 * C), (C, C), (C, 4 * C), (4 * C, C), (C, V)]
    # about 2 GFLOP per pass whatever the width, but at least 64 rows so that it is a real GEMM
    rows = max(64, min(rows, int(2e9 / (6 * sum(i * o for i, o in shapes)))))
    gen = torch.Generator().manual_seed(0)
    tensors = [(torch.randn(rows, i, generator=gen, requires_grad=True),
                (torch.randn(o, i, generator=gen) * 0.02).requires_grad_()) for i, o in shapes]

    def seconds(bf16: bool) -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for x, w in tensors:
                F.linear(x, w).sum().backward()
        return time.perf_counter() - t0

    # alternate the two, best of three after a warm-up each: another busy process slows both alike
    times = [(seconds(False), seconds(True)) for _ in range(4)][1:]
    return min(t for t, _ in times) / min(t for _, t in times)


# ---------------------------------------------------------------------------- failures

def is_oom(e: BaseException) -> bool:
    msg = str(e).lower()
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and (
        "out of memory" in msg or "can't allocate memory" in msg))


def free_memory(optimizers: list[torch.optim.Optimizer], device: torch.device) -> None:
    """After a failed forward/backward: drop partial gradients and cached blocks."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def halved_micro_batch(micro: int, per_rank: int, block_size: int, dtype: str, ranks: Ranks, say) -> int:
    """The micro-batch to retry a step with after an out-of-memory error, or a UserError with the fix."""
    if ranks.world_size > 1 or micro == 1:
        fix = f"pass --micro_batch_size {micro // 2}" if micro > 1 else "use a smaller --model_size or --block_size"
        world = f", world size {ranks.world_size}" if ranks.world_size > 1 else ""
        raise UserError(f"out of memory at micro-batch {micro} x block_size {block_size} ({dtype}{world}): "
                        f"{fix}{', or --dtype bf16/fp16' if dtype == 'fp32' else ''}")
    say(f"out of memory at micro-batch {micro}: retrying the step with micro-batch {micro // 2} "
        f"(accumulating {math.ceil(per_rank / (micro // 2))} per step)")
    return micro // 2


def probe_micro_batch(model: nn.Module, batch: Batch, micro: int, optimizers: list[torch.optim.Optimizer],
                      loss_chunk: int, amp: contextlib.AbstractContextManager, say) -> int:
    """DDP only: the largest micro-batch (halving from `micro`) whose forward/backward fits on every rank."""
    # found before step 1 because an out-of-memory inside a synchronised backward would hang the other ranks
    device = next(model.parameters()).device
    # AdamW allocates its two moments at the first step, after this probe: on a fresh start, hold that
    # much memory while probing so that the step that follows fits too
    fresh = not any(opt.state for opt in optimizers)
    moments = [torch.empty_like(p) for p in model.parameters() if p.requires_grad for _ in range(2)] if fresh else []
    while True:
        fits, rng = 1.0, capture_rng(device)  # dropout draws in the probe must not shift training's
        try:
            with model.no_sync(), amp:
                x, y = batch.x[:micro].to(device), batch.y[:micro].to(device)
                loss_sum(model, x, y, int((batch.y[:micro] != IGNORE_INDEX).sum()), loss_chunk).backward()
        except Exception as e:  # noqa: BLE001 - only an out-of-memory is an answer here
            if not is_oom(e):
                raise
            fits = 0.0
        free_memory(optimizers, device)
        restore_rng(rng, device)
        if all_reduce(torch.tensor([fits], device=device), dist.ReduceOp.MIN).item() == 1.0:
            moments.clear()  # freed for the real ones (the CUDA allocator keeps the blocks)
            return micro
        if micro == 1:
            raise UserError(f"out of memory at micro-batch 1 x block_size {batch.x.size(1)} on some rank: "
                            f"use a smaller --model_size or --block_size")
        micro //= 2
        say(f"out of memory at micro-batch {micro * 2} on some rank: using micro-batch {micro}")


class StopSignals:
    """SIGINT/SIGTERM set `signum`: the loop finishes its step, saves and exits. A second one stops at once."""

    def __init__(self, say) -> None:
        self.signum, self.say, self.previous = 0, say, {}

    def handle(self, signum: int, frame) -> None:
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum
        self.say(f"{signal.Signals(signum).name}: finishing this step, saving, then exiting "
                 f"(send it again to stop without saving)")

    def __enter__(self) -> StopSignals:
        with contextlib.suppress(ValueError):  # signals can only be caught on the main thread
            self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def roll_back(ckdir: Path, model, optimizers, scaler, progress: Progress, ranks: Ranks, device: torch.device,
              max_rollbacks: int, seed: int, lr: float, bad_streak: int, metrics: MetricsLog | None, say) -> None:
    """After --nan_patience non-finite steps in a row: back to the newest checkpoint with the learning rate halved."""
    # at most --max_rollbacks times; then stop with advice
    found = find_checkpoint(ckdir, say) if progress.rollbacks < max_rollbacks else None
    if found is None:
        raise UserError(f"the loss was NaN/inf for {bad_streak} steps in a row at step {progress.step} after "
                        f"{progress.rollbacks} rollbacks: lower --lr (now {lr * progress.lr_scale:.2e}), lower "
                        f"--grad_clip, use --dtype bf16 or fp32 instead of fp16, or check the data")
    kept = (progress.lr_scale * 0.5, progress.nan_skipped, progress.rollbacks + 1)
    restore_checkpoint(found, model, optimizers, scaler, progress, ranks, device, seed)
    progress.lr_scale, progress.nan_skipped, progress.rollbacks = kept
    if metrics:
        metrics.truncate_after(progress.step)
        metrics.write({"event": "rollback", "step": progress.step, "to": found.folder.name,
                       "lr_scale": progress.lr_scale})
    say(f"rolled back to {found.folder.name} with the learning rate scaled by {progress.lr_scale:g}")


# ---------------------------------------------------------------------------- the loop's bookkeeping

def planned_end(total_steps: int, step: int, session_steps: int, session_start: float,
                max_minutes: float | None) -> int:
    """The step the run will end at: total_steps, or earlier when --max_minutes will stop it first."""
    # from this session's measured seconds per step, once a few steps have run
    if max_minutes is None or session_steps < 3:
        return total_steps
    elapsed = time.time() - session_start
    steps_left = (0.97 * 60 * max_minutes - elapsed) / (elapsed / session_steps)  # 3% kept for the last save
    return max(step + 1, min(total_steps, step + int(steps_left)))


def step_record(progress: Progress, n_windows: int, loss: float, grad_norm: float, tokens_per_sec: float,
                mfu: float | None, lr: float, elapsed: float, device: torch.device) -> dict:
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated(device)
    else:  # peak resident memory: ru_maxrss counts bytes on macOS, KiB elsewhere
        import resource  # not on Windows
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"step": progress.step, "epoch": round(progress.epoch + progress.offset / n_windows, 4),
            "tokens": progress.tokens_seen, "loss": loss, "lr": lr, "grad_norm": grad_norm,
            "tokens_per_sec": round(tokens_per_sec, 1), "mfu": None if mfu is None else round(mfu, 4),
            "memory_gb": round(memory / 1e9, 3), "micro_batch_size": progress.micro_batch_size,
            "elapsed_s": round(elapsed, 2)}
