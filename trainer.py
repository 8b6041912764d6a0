"""The training loop of train_colab_mmap.py: one optimizer step (micro-batches, AMP, out-of-memory
halving, NaN skip and rollback), evaluation, metrics and loss curve, checkpoint save and restart,
and SIGINT/SIGTERM handling. train_colab_mmap.py parses the flags, checks the inputs, builds the
model and the Plan, then calls Trainer.fit().
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from common import UserError, atomic_write_text, first_line
from model import TransformerLanguageModel
from train_io import (AssistantMask, BatchStream, TokenSource, capture_rng, eval_windows, find_checkpoint, make_batch,
                      num_windows, prune_checkpoints, restore_rng, write_checkpoint)

PEAK_TFLOPS = [("H100 PCIe", 756), ("H100", 989), ("H200", 989), ("A100", 312), ("V100", 125), ("T4", 65)]  # dense bf16/fp16


@dataclass
class Dist:
    """This process's place among the torchrun ranks; rank 0 alone prints and writes files."""
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tf * 1e12 for key, tf in PEAK_TFLOPS if key in name), None)


def is_oom(e: BaseException) -> bool:
    msg = str(e).lower()
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and (
        "out of memory" in msg or "can't allocate memory" in msg))


def lr_at(step: int, total: int, warmup: int, lr: float, min_lr: float) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to min_lr at `total` (step is 0-based)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


# ---------------------------------------------------------------------------- the trainer

@dataclass
class Progress:
    """Everything about where training stands; saved in every checkpoint."""
    step: int = 0
    epoch: int = 0
    offset: int = 0               # windows of `epoch` already consumed
    tokens_seen: int = 0
    micro_batch_size: int = 1
    lr_scale: float = 1.0
    best_val_loss: float | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    nan_skipped: int = 0
    rollbacks: int = 0
    wall_time_s: float = 0.0
    eval_windows: int = 0         # validation windows per evaluation, fixed by the first run so that
                                  # every evaluation (and `best`) compares the same set


@dataclass
class Plan:
    total_steps: int
    warmup: int
    lr: float
    min_lr: float
    per_rank: int
    loss_chunk: int
    dtype: str
    compile: bool


class Trainer:
    def __init__(self, args: argparse.Namespace, d: Dist, device: torch.device, model: TransformerLanguageModel,
                 plan: Plan, train_src: TokenSource, val_src: TokenSource | None, mask: AssistantMask | None,
                 ckdir: Path, progress: Progress) -> None:
        self.args, self.d, self.device, self.raw, self.plan = args, d, device, model, plan
        self.train_src, self.val_src, self.mask, self.ckdir, self.p = train_src, val_src, mask, ckdir, progress
        self.T, self.V = model.config.block_size, model.config.vocab_size
        self.n_windows = num_windows(len(train_src), self.T)
        self.opt = model.configure_optimizers(args.weight_decay, plan.lr, device_type=device.type)
        self.scaler = torch.amp.GradScaler(device.type) if plan.dtype == "fp16" else None
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(plan.dtype)
        self.autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else contextlib.nullcontext
        self.peak = peak_flops(device)
        self.flops_tok = model.flops_per_token(self.T)
        self.compiled_ok = not plan.compile
        self._wrap(plan.compile)
        # test hooks: simulated out-of-memory above a micro-batch size, NaN losses at given steps
        self.fake_oom_above = int(os.environ.get("GPT_TRAIN_FAKE_OOM_ABOVE", "0"))
        self.fake_nan_steps = {int(s) for s in os.environ.get("GPT_TRAIN_FAKE_NAN_STEPS", "").split(",") if s}
        self.stop_signal = 0
        self.bad_streak = 0
        self.saved_step = -1
        self.history: list[dict] = []
        self.metrics_file = ckdir / "metrics.jsonl"
        self.sinks: list[Any] = []
        self.pbar = None

    # ------------------------------------------------------------------ setup

    def _wrap(self, use_compile: bool) -> None:
        m = torch.compile(self.raw) if use_compile else self.raw
        if self.d.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            m = torch.nn.parallel.DistributedDataParallel(m, device_ids=ids)
        self.fwd = m

    def say(self, msg: str) -> None:
        if self.d.main:
            (self.pbar.write if self.pbar is not None else print)(msg, file=sys.stderr)

    def load_state(self, sd: dict, ts: dict) -> None:
        """Weights, optimizer (state moved to the device tensor by tensor), scaler and RNG."""
        self.raw.load_state_dict(sd)
        self.opt.load_state_dict(ts["optimizer"])
        if self.scaler is not None and ts.get("scaler"):
            self.scaler.load_state_dict(ts["scaler"])
        for f in dataclasses.fields(Progress):  # in place: the training loop holds self.p
            setattr(self.p, f.name, ts["progress"].get(f.name, f.default))
        rngs = ts.get("rng", [])
        if len(rngs) == self.d.world:
            restore_rng(rngs[self.d.rank], self.device)
        else:
            torch.manual_seed(self.args.seed + 7919 * self.p.step + self.d.rank)
        if self.args.micro_batch_size is None and self.args.grad_accum_steps is None:
            self.p.micro_batch_size = min(self.p.micro_batch_size, self.plan.per_rank)
        else:
            self.p.micro_batch_size = self.requested_micro_batch()

    def requested_micro_batch(self) -> int:
        a = self.args
        if a.micro_batch_size:
            return min(a.micro_batch_size, self.plan.per_rank)
        return self.plan.per_rank // (a.grad_accum_steps or 1)

    # ------------------------------------------------------------------ one optimizer step

    def _loss_sum(self, model, x: torch.Tensor, y: torch.Tensor, n_valid: int) -> torch.Tensor:
        """Sum of the token losses of one micro-batch (so micro-batches of any size add up exactly)."""
        if self.plan.loss_chunk > 0:
            _, mean = model(x, y, loss_chunk_size=self.plan.loss_chunk)
            return mean * n_valid
        logits, _ = model(x)
        return F.cross_entropy(logits.reshape(-1, self.V).float(), y.reshape(-1), ignore_index=-100, reduction="sum")

    def _forward_backward(self, b) -> tuple[torch.Tensor, int]:
        x = b.x.to(self.device, non_blocking=True)
        y = b.y.to(self.device, non_blocking=True)
        n_total = int(b.valid.sum())
        if self.d.world > 1:
            if self.mask is not None:
                t = torch.tensor([n_total], dtype=torch.float64, device=self.device)
                dist.all_reduce(t)
                n_total = int(t.item())
            else:
                n_total *= self.d.world
        scale = self.d.world / max(n_total, 1)  # DDP averages over ranks: this makes it sum / n_total
        loss_acc = torch.zeros((), device=self.device)
        starts = list(range(0, x.size(0), self.p.micro_batch_size))
        for i, s in enumerate(starts):
            e = min(x.size(0), s + self.p.micro_batch_size)
            if self.fake_oom_above and e - s > self.fake_oom_above:
                raise torch.OutOfMemoryError(f"simulated out of memory at micro-batch {e - s}")
            last = i == len(starts) - 1
            with (self.fwd.no_sync() if self.d.world > 1 and not last else contextlib.nullcontext()):
                with self.autocast():
                    ls = self._loss_sum(self.fwd, x[s:e], y[s:e], int(b.valid[s:e].sum()))
                if i == 0 and self.p.step + 1 in self.fake_nan_steps:
                    self.fake_nan_steps.discard(self.p.step + 1)
                    ls = ls * float("nan")
                scaled = ls * scale
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            loss_acc += ls.detach().float()
        return loss_acc, n_total

    def _free(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _shrink(self) -> None:
        m = self.p.micro_batch_size
        if self.d.world > 1 or m == 1:
            raise UserError(f"out of memory at micro-batch {m} x block_size {self.T} ({self.plan.dtype}"
                            f"{', world size ' + str(self.d.world) if self.d.world > 1 else ''}): "
                            f"{'pass --micro_batch_size ' + str(max(1, m // 2)) if m > 1 else 'use a smaller --model_size or --block_size'}"
                            f"{'' if self.plan.dtype != 'fp32' else ', or --dtype bf16/fp16'}") from None
        self.p.micro_batch_size = max(1, m // 2)
        self.say(f"out of memory at micro-batch {m}: retrying the step with micro-batch {self.p.micro_batch_size} "
                 f"(accumulating {math.ceil(self.plan.per_rank / self.p.micro_batch_size)} per step)")

    def train_step(self, b) -> tuple[float, float, list[float]]:
        """Forward/backward over the micro-batches, then one optimizer step. Returns the global
        loss, the gradient norm, and the flags every rank agreed on [signal, save, stop]."""
        rng = capture_rng(self.device)
        while True:
            try:
                loss_acc, n_total = self._forward_backward(b)
                break
            except Exception as e:  # noqa: BLE001 - sorted below; only a string is kept, so the
                if not (is_oom(e) or not self.compiled_ok):  # failed step's tensors can be freed
                    raise
                compile_failure = "" if is_oom(e) else f"{type(e).__name__}: {first_line(e)}"
            self._free()
            restore_rng(rng, self.device)
            if compile_failure:
                self.say(f"warning: torch.compile failed ({compile_failure}); continuing in eager mode")
                self.compiled_ok = True
                self._wrap(False)
            else:
                self._shrink()
        self.compiled_ok = True
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)
        clip = self.args.grad_clip if self.args.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.raw.parameters(), clip)
        now = time.time()
        flags = torch.tensor([float(self.stop_signal > 0), float(self.d.main and self._save_due(now)),
                              float(self.d.main and self._time_up(now))], device=self.device)
        red = torch.cat([loss_acc.view(1), flags])
        if self.d.world > 1:
            dist.all_reduce(red)
        vals = torch.cat([red.float(), norm.detach().float().view(1).to(red.device)]).tolist()  # the one sync
        loss, grad_norm = vals[0] / max(n_total, 1), vals[-1]
        if math.isfinite(loss) and (self.scaler is not None or math.isfinite(grad_norm)):
            lr = lr_at(self.p.step, self.plan.total_steps, self.plan.warmup, self.plan.lr, self.plan.min_lr)
            for g in self.opt.param_groups:
                g["lr"] = lr * self.p.lr_scale
            if self.scaler is not None:
                self.scaler.step(self.opt)
            else:
                self.opt.step()
        if self.scaler is not None:
            self.scaler.update()  # lowers the scale after an overflow; valid without step() after unscale_()
        self.opt.zero_grad(set_to_none=True)
        return loss, grad_norm, vals[1:4]

    def probe_micro_batch(self, b) -> None:
        """DDP only: find a micro-batch that fits on every rank before step 1 (an OOM inside a
        synchronised backward would hang the other ranks, so it is not retried mid-run)."""
        # AdamW allocates its two moments at the first step, after this probe: on a fresh start,
        # hold that much memory while probing so the step that follows fits too
        moments = [] if self.opt.state else [torch.empty_like(q) for q in self.raw.parameters() if q.requires_grad
                                             for _ in range(2)]
        while True:
            m, ok = self.p.micro_batch_size, 1.0
            rng = capture_rng(self.device)
            try:
                if self.fake_oom_above and m > self.fake_oom_above:
                    raise torch.OutOfMemoryError(f"simulated out of memory at micro-batch {m}")
                with self.fwd.no_sync(), self.autocast():
                    x, y = b.x[:m].to(self.device), b.y[:m].to(self.device)
                    self._loss_sum(self.fwd, x, y, int(b.valid[:m].sum())).backward()
            except Exception as e:  # noqa: BLE001
                if not is_oom(e):
                    raise
                ok = 0.0
            self._free()
            restore_rng(rng, self.device)
            t = torch.tensor([ok], device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
            if t.item() == 1.0:
                moments.clear()  # freed for the real ones (the CUDA allocator keeps the blocks)
                return
            if m == 1:
                raise UserError(f"out of memory at micro-batch 1 x block_size {self.T} on some rank: "
                                f"use a smaller --model_size or --block_size")
            self.p.micro_batch_size = max(1, m // 2)
            self.say(f"out of memory at micro-batch {m} on some rank: using micro-batch {self.p.micro_batch_size}")

    def _save_due(self, now: float) -> bool:
        return self.args.save_every_minutes > 0 and now - self.last_save_time >= 60 * self.args.save_every_minutes

    def _time_up(self, now: float) -> bool:
        return self.args.max_minutes is not None and now - self.start_time >= 60 * self.args.max_minutes

    # ------------------------------------------------------------------ evaluation, logging, saving

    @torch.no_grad()
    def evaluate(self) -> float | None:
        if self.val_src is None:
            return None
        self.raw.eval()
        ids = self.eval_ids[self.d.rank::self.d.world]
        tot = torch.zeros(2, dtype=torch.float64, device=self.device)
        for s in range(0, len(ids), self.p.micro_batch_size):
            x, y = make_batch(self.val_src, ids[s:s + self.p.micro_batch_size] * self.T, self.T, self.V, self.mask)
            n = int((y != -100).sum())
            with self.autocast():
                ls = self._loss_sum(self.raw, torch.from_numpy(x).to(self.device), torch.from_numpy(y).to(self.device), n)
            tot += torch.stack([ls.double(), torch.tensor(float(n), dtype=torch.float64, device=self.device)])
        if self.d.world > 1:
            dist.all_reduce(tot)
        self.raw.train()
        total, count = tot.tolist()
        return total / count if count else None

    def log(self, rec: dict) -> None:
        if not self.d.main:
            return
        self.history.append(rec)
        with open(self.metrics_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        for sink in self.sinks:
            sink(rec)

    def plot(self) -> None:
        if not self.d.main:
            return
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            if not getattr(self, "_plot_warned", False):
                self.say("note: matplotlib is not installed, so no loss_curve.png (pip install matplotlib)")
                self._plot_warned = True
            return
        tr = [(r["tokens"], r["loss"]) for r in self.history if "loss" in r and r["loss"] is not None]
        va = [(r["tokens"], r["val_loss"]) for r in self.history if r.get("val_loss") is not None]
        fig, ax = plt.subplots(figsize=(7, 4))
        for pts, label in ((tr, "train"), (va, "validation")):
            if pts:
                ax.plot(*zip(*pts), label=label, marker="o" if label == "validation" else None)
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("loss")
        ax.legend()
        ax.grid(alpha=0.3)
        tmp = self.ckdir / ".tmp-loss_curve.png"
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        os.replace(tmp, self.ckdir / "loss_curve.png")

    def save(self, best: bool) -> None:
        """Every rank calls this (RNG states are gathered); rank 0 writes."""
        rng = capture_rng(self.device)
        rngs = [None] * self.d.world
        if self.d.world > 1:
            dist.all_gather_object(rngs, rng)
        else:
            rngs = [rng]
        p = self.p
        p.wall_time_s = self.wall_before + time.time() - self.start_time
        if self.d.main:
            ts = {"format_version": 1, "progress": dataclasses.asdict(p), "optimizer": self.opt.state_dict(),
                  "scaler": self.scaler.state_dict() if self.scaler is not None else {}, "rng": rngs,
                  "world_size": self.d.world}
            meta = {"step": p.step, "epoch": p.epoch, "tokens_seen": p.tokens_seen, "train_loss": p.train_loss,
                    "val_loss": p.val_loss, "best_val_loss": p.best_val_loss, "wall_time_s": round(p.wall_time_s, 1),
                    "micro_batch_size": p.micro_batch_size, "dtype": self.plan.dtype, "world_size": self.d.world,
                    "torch_version": torch.__version__, "args": vars(self.args)}
            name = f"step_{p.step:08d}"
            try:
                write_checkpoint(self.ckdir, name, self.raw, self.args.tokenizer_file, ts, meta)
            except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
                raise UserError(f"cannot write checkpoint {name} to --checkpoint_dir {self.ckdir}: "
                                f"{first_line(e, 160)}; free disk "
                                f"space or pass another --checkpoint_dir (the earlier checkpoints there are intact)") from None
            atomic_write_text(self.ckdir / "latest", name + "\n")
            if best:
                atomic_write_text(self.ckdir / "best", name + "\n")
            prune_checkpoints(self.ckdir, self.args.keep_last)
        if self.d.world > 1:
            dist.barrier()
        self.saved_step, self.last_save_time = p.step, time.time()

    def restart_from(self, folder: Path, sd: dict, ts: dict) -> None:
        """Load a checkpoint into this trainer and drop metrics logged after its step."""
        self.load_state(sd, ts)
        if self.d.main and self.metrics_file.exists():
            keep = [json.loads(ln) for ln in self.metrics_file.read_text().splitlines() if ln.strip()]
            keep = [r for r in keep if r.get("step", 0) <= self.p.step or "event" in r]
            atomic_write_text(self.metrics_file, "".join(json.dumps(r) + "\n" for r in keep))
            self.history = keep
        self.saved_step = self.p.step

    def _on_bad_step(self, loss: float, stream_holder: list) -> bool:
        """Count a skipped update; after --nan_patience in a row, roll back (True) or stop."""
        self.p.nan_skipped += 1
        self.bad_streak += 1
        self.say(f"warning: non-finite loss/gradients at step {self.p.step} (loss {loss}); update skipped "
                 f"({self.bad_streak} in a row, {self.p.nan_skipped} in all)")
        if self.bad_streak < self.args.nan_patience:
            return False
        lr_now = self.plan.lr * self.p.lr_scale
        fix = (f"lower --lr (now {lr_now:.2e}), lower --grad_clip, use --dtype bf16 or fp32 instead of fp16, "
               f"or check the data")
        found = find_checkpoint(self.ckdir, self.say) if self.p.rollbacks < self.args.max_rollbacks else None
        if found is None:
            raise UserError(f"the loss was NaN/inf for {self.bad_streak} steps in a row at step {self.p.step} "
                            f"after {self.p.rollbacks} rollbacks: {fix}")
        keep = (self.p.lr_scale * 0.5, self.p.nan_skipped, self.p.rollbacks + 1)
        self.restart_from(found[0], found[1], found[2])
        self.p.lr_scale, self.p.nan_skipped, self.p.rollbacks = keep
        self.bad_streak = 0
        self.log({"event": "rollback", "step": self.p.step, "to": found[0].name, "lr_scale": self.p.lr_scale})
        self.say(f"rolled back to {found[0].name} with the learning rate scaled by {self.p.lr_scale:g}")
        stream_holder[0].close()
        stream_holder[0] = self._stream()
        return True

    def _stream(self) -> BatchStream:
        return BatchStream(self.train_src, self.T, self.V, self.args.batch_size, self.d.rank, self.d.world,
                           self.args.seed, self.p.epoch, self.p.offset, self.mask, self.device.type == "cuda")

    # ------------------------------------------------------------------ the loop

    def _install_signals(self) -> dict:
        def handler(signum, frame):
            if self.stop_signal:
                raise KeyboardInterrupt
            self.stop_signal = signum
            self.say(f"{signal.Signals(signum).name}: finishing this step, saving, then exiting "
                     f"(send it again to stop without saving)")
        return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def fit(self) -> int:
        a, p, plan = self.args, self.p, self.plan
        B = a.batch_size
        self.start_time = self.last_save_time = self.last_log_time = time.time()
        self.wall_before = p.wall_time_s
        if self.val_src is not None:
            p.eval_windows = p.eval_windows or a.eval_batches * p.micro_batch_size
            self.eval_ids = eval_windows(num_windows(len(self.val_src), self.T), p.eval_windows)
        if p.step >= plan.total_steps:
            self.say(f"already trained to step {p.step} of {plan.total_steps}: nothing to do "
                     f"(raise --epochs, --max_steps or --max_tokens to continue)")
            return 0
        old_handlers = self._install_signals() if threading.current_thread() is threading.main_thread() else {}
        stream = [self._stream()]
        if self.d.main:
            from tqdm import tqdm
            self.pbar = tqdm(total=plan.total_steps, initial=p.step, unit="step", file=sys.stderr,
                             mininterval=1.0, dynamic_ncols=True)
        log_tokens, exit_code = 0, 0
        try:
            if self.d.world > 1:
                self.probe_micro_batch(stream[0].next())
                stream[0].close()
                stream[0] = self._stream()
            while p.step < plan.total_steps:
                b = stream[0].next()
                loss, gnorm, (sig, save_due, time_up) = self.train_step(b)
                p.step += 1
                p.tokens_seen += B * self.T
                log_tokens += B * self.T
                p.epoch, p.offset = b.epoch, b.offset
                if self.pbar is not None:
                    self.pbar.update(1)
                bad = not math.isfinite(loss) or (self.scaler is None and not math.isfinite(gnorm))
                if bad and self._on_bad_step(loss, stream):
                    continue  # rolled back: p now holds the checkpoint's position
                if not bad:
                    self.bad_streak, p.train_loss = 0, loss
                epoch_end = p.offset + B > self.n_windows
                if epoch_end:
                    p.epoch, p.offset = p.epoch + 1, 0
                last = p.step >= plan.total_steps or sig or time_up
                if not bad and (p.step % a.log_every_steps == 0 or last or p.step == 1):
                    self._log_step(loss, gnorm, log_tokens)
                    log_tokens = 0
                paused = time.time()  # evaluation and saving are left out of tokens/s
                improved = False
                if (a.eval_every_steps > 0 and p.step % a.eval_every_steps == 0) or epoch_end or last:
                    improved = self._eval_and_log()
                if improved or epoch_end or last or save_due or (
                        a.save_every_steps > 0 and p.step % a.save_every_steps == 0):
                    self.save(best=improved)
                self.last_log_time += time.time() - paused
                if sig or time_up:
                    signum = self.stop_signal or int(signal.SIGTERM)  # 0 here: the signal reached another rank
                    exit_code = 128 + signum if sig else 0
                    why = signal.Signals(signum).name if sig else f"--max_minutes {a.max_minutes}"
                    self.say(f"stopped by {why} at step {p.step}; saved {self.ckdir / f'step_{p.step:08d}'}; "
                             f"run the same command again to resume")
                    break
            if p.step != self.saved_step:
                self.save(best=False)
        except torch.OutOfMemoryError:
            raise UserError(f"out of memory (micro-batch {p.micro_batch_size}, --batch_size {B}): "
                            f"pass --micro_batch_size {max(1, p.micro_batch_size // 2)}") from None
        finally:
            stream[0].close()
            if self.pbar is not None:
                self.pbar.close()
                self.pbar = None
            for s, h in old_handlers.items():
                signal.signal(s, h)
        self.summary()
        return exit_code

    def _log_step(self, loss: float, gnorm: float, tokens: int) -> None:
        p, now = self.p, time.time()
        tps = tokens / max(now - self.last_log_time, 1e-9)
        mfu = tps / self.d.world * self.flops_tok / self.peak if self.peak else None
        mem = (torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else _peak_rss_bytes()) / 1e9
        self.log({"step": p.step, "epoch": round(p.epoch + p.offset / self.n_windows, 4), "tokens": p.tokens_seen,
                  "loss": loss, "lr": self.opt.param_groups[0]["lr"], "grad_norm": gnorm, "tokens_per_sec": round(tps, 1),
                  "mfu": None if mfu is None else round(mfu, 4), "memory_gb": round(mem, 3),
                  "micro_batch_size": p.micro_batch_size, "elapsed_s": round(now - self.start_time, 2)})
        if self.pbar is not None:
            self.pbar.set_postfix_str(f"loss {loss:.4f} | {tps:,.0f} tok/s | MFU "
                                      f"{'n/a' if mfu is None else f'{100 * mfu:.1f}%'}", refresh=False)
        self.last_log_time = now

    def _eval_and_log(self) -> bool:
        """Evaluate; True when the validation loss is the best so far."""
        p, val = self.p, self.evaluate()
        if val is None:
            return False
        improved = p.best_val_loss is None or val < p.best_val_loss
        p.val_loss, p.best_val_loss = val, (val if improved else p.best_val_loss)
        self.log({"step": p.step, "tokens": p.tokens_seen, "val_loss": val, "train_loss": p.train_loss})
        self.say(f"step {p.step}: train loss {_fmt(p.train_loss)}, val loss {val:.4f}{' (best)' if improved else ''}")
        self.plot()
        return improved

    def summary(self) -> None:
        p = self.p
        secs = time.time() - self.start_time
        best = self.ckdir / "best"
        best_name = best.read_text().strip() if best.is_file() else None
        self.say(f"done: step {p.step}/{self.plan.total_steps}, {p.epoch + p.offset / self.n_windows:.2f} epochs, "
                 f"{p.tokens_seen:,} tokens seen; "
                 f"this session {secs / 60:.1f} min; train loss {_fmt(p.train_loss)}, "
                 f"best val loss {_fmt(p.best_val_loss)}{f' ({best_name})' if best_name else ''}; "
                 f"{p.nan_skipped} non-finite steps skipped, {p.rollbacks} rollbacks; micro-batch {p.micro_batch_size}")
        self.say(f"checkpoint: {self.ckdir}/latest -> step_{p.step:08d}; load it with "
                 f"TransformerLanguageModel.from_pretrained('{self.ckdir}')")


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _peak_rss_bytes() -> int:
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024
