"""What the trainer keeps on disk: checkpoints (atomic step folders, verified by size and sha256 on load,
with fallback to an older one, pruning, and recovery from a save cut off midway) and metrics (metrics.jsonl,
optional wandb/tensorboard, and the loss-curve PNG)."""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import torch

from common import UserError, atomic_dir, atomic_path, atomic_write_json, atomic_write_text, first_line, sha256_file
from model import unwrap_model

CKPT_FILES = ("pytorch_model.bin", "training_state.pt", "config.json", "tokenizer.json")
POINTERS = ("latest", "best", "decay_start")  # files naming a step folder; pruning never removes those


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
    """Where training stands: saved in every checkpoint, and shown in its trainer_state.json."""
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
    eval_windows: int = 0         # validation windows per evaluation, fixed by the first run: `best` compares alike
    decay_start: int = 0          # WSD: the step its final decay began (0: not yet) and its length
    decay_steps: int = 0


# Only torch draws random numbers in training (dropout); the data order has its own seeded generator.
def capture_rng(device: torch.device) -> dict:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.empty(0, dtype=torch.uint8)
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"].numel():
        torch.cuda.set_rng_state(state["cuda"], device)


# ---------------------------------------------------------------------------- checkpoints

def save_checkpoint(ckdir: Path, model: torch.nn.Module, optimizers: list, scaler: Any, progress: Progress,
                    ranks: Ranks, device: torch.device, summary: dict, tokenizer_file: str, keep_last: int,
                    pointers: tuple[str, ...] = ("latest",)) -> None:
    """Every rank calls this (their RNG states are gathered); rank 0 writes step_N and points `pointers` at it."""
    rngs = [capture_rng(device)] * ranks.world_size
    if ranks.world_size > 1:
        torch.distributed.all_gather_object(rngs, capture_rng(device))
    if ranks.is_main:
        state = {"format_version": 1, "progress": asdict(progress), "optimizer": optimizers[0].state_dict(),
                 "muon": optimizers[1].state_dict() if len(optimizers) > 1 else {},
                 "scaler": scaler.state_dict(), "rng": rngs,  # {} unless fp16
                 "world_size": ranks.world_size}
        name = f"step_{progress.step:08d}"
        try:
            write_checkpoint(ckdir, name, model, tokenizer_file, state, {**summary, **asdict(progress)})
        except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
            raise UserError(f"cannot write checkpoint {name} to --checkpoint_dir {ckdir}: {first_line(e, 160)}; "
                            f"free disk space or pass another --checkpoint_dir (earlier ones are intact)") from None
        for pointer in pointers:
            atomic_write_text(ckdir / pointer, name + "\n")
        prune_checkpoints(ckdir, keep_last)
    if ranks.world_size > 1:
        torch.distributed.barrier()


def restore_checkpoint(checkpoint: Checkpoint, model: torch.nn.Module, optimizers: list, scaler: Any,
                       progress: Progress, ranks: Ranks, device: torch.device, seed: int) -> None:
    """Weights, optimizer states (this run's learning rates kept), scaler, progress (in place), this rank's RNG."""
    state = checkpoint.training_state
    model.load_state_dict(checkpoint.weights)
    for opt, saved in zip(optimizers, (state["optimizer"], state.get("muon"))):
        rates = [(g["peak_lr"], g["min_lr"]) for g in opt.param_groups]
        opt.load_state_dict(saved)  # also loads the saved param-group settings: keep this run's rates
        for g, (peak, low) in zip(opt.param_groups, rates):
            g["peak_lr"], g["min_lr"] = peak, low
    if state.get("scaler"):  # fp16 runs only
        scaler.load_state_dict(state["scaler"])
    for f in fields(Progress):
        setattr(progress, f.name, state["progress"].get(f.name, f.default))
    rngs = state.get("rng", [])
    if len(rngs) == ranks.world_size:
        restore_rng(rngs[ranks.rank], device)
    else:  # another world size: fresh but reproducible streams
        torch.manual_seed(seed + 7919 * progress.step + ranks.rank)


def list_checkpoints(ckdir: Path) -> list[Path]:
    """step_* folders, most recently written first (trainer_state.json is written last)."""
    def written(p: Path) -> float:
        return (p / "trainer_state.json" if (p / "trainer_state.json").exists() else p).stat().st_mtime
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
    """Load a step folder after checking every file's size and sha256; ValueError naming what is wrong."""
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
    loaded = []
    for name in ("pytorch_model.bin", "training_state.pt"):
        try:  # weights_only: a pickle that would run code is refused
            loaded.append(torch.load(folder / name, map_location="cpu", weights_only=True))
        except Exception as e:  # any unreadable file, a code-carrying pickle included
            reason = first_line(e, 160)
            if "Weights only load failed" in reason:
                reason = "it holds objects other than tensors (refused: loading it could run code)"
            raise ValueError(f"cannot load {name}: {reason}") from None
    return Checkpoint(folder, *loaded, meta)


def find_checkpoint(ckdir: Path, say: Callable[[str], None]) -> Checkpoint | None:
    """The newest usable checkpoint in ckdir (`latest` first); unusable ones are skipped with a warning."""
    found = list_checkpoints(ckdir) if ckdir.is_dir() else []
    latest = (ckdir / "latest").read_text(encoding="utf-8").strip() if (ckdir / "latest").is_file() else None
    found.sort(key=lambda p: p.name != latest)  # the folder `latest` names first; the rest keep their order
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
    """Build ckdir/.tmp-NAME-XXXXXXXX, then rename it to ckdir/NAME: never a half folder."""
    with atomic_dir(ckdir / name) as tmp:
        unwrap_model(model).write_weights(tmp)  # CPU tensors: the seed's torch.load (no map_location) reads them
        shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
        torch.save(training_state, tmp / "training_state.pt")
        for f in CKPT_FILES:  # on disk before the rename that publishes the folder
            with open(tmp / f, "rb") as fh:
                os.fsync(fh.fileno())
        files = {f: {"size": (tmp / f).stat().st_size, "sha256": sha256_file(tmp / f)} for f in CKPT_FILES}
        atomic_write_json(tmp / "trainer_state.json", {**trainer_state, "files": files})
    return ckdir / name


def prune_checkpoints(ckdir: Path, keep_last: int) -> None:
    protected = {(ckdir / p).read_text().strip() for p in POINTERS if (ckdir / p).is_file()}
    for folder in list_checkpoints(ckdir)[keep_last:] if keep_last > 0 else []:
        if folder.name not in protected:
            shutil.rmtree(folder, ignore_errors=True)


def recover_interrupted_saves(ckdir: Path) -> None:
    """Tidy what a run killed mid-save left in ckdir (see common.atomic_dir)."""
    for leftover in ckdir.glob(".tmp-*"):  # a folder (or file) not yet complete: removed
        shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
    for old in ckdir.glob(".old-*"):  # .old-NAME-PID: the complete folder that a save was replacing
        name = ckdir / old.name[len(".old-"):].rsplit("-", 1)[0]
        if name.exists():  # the new NAME is in place: the old copy is stale
            shutil.rmtree(old, ignore_errors=True)
        else:  # killed between the two renames: the old folder goes back
            os.replace(old, name)


# ---------------------------------------------------------------------------- metrics

class MetricsLog:
    """Rank 0's metrics.jsonl (a JSON object per log, evaluation or event), wandb/tensorboard, loss_curve.png."""

    def __init__(self, ckdir: Path, say: Callable[[str], None], resume_step: int | None, config: dict,
                 wandb: bool = False, tensorboard: bool = False) -> None:
        self.path, self.png, self.history, self.sinks = ckdir / "metrics.jsonl", ckdir / "loss_curve.png", [], []
        if resume_step is not None:
            self.truncate_after(resume_step)
        elif self.path.exists():  # a fresh run keeps an older run's metrics under another name
            os.replace(self.path, self.path.with_name(f"metrics-{int(time.time())}.jsonl"))
        try:
            from matplotlib.figure import Figure  # the object API: drawn straight to a file, no pyplot window
        except ImportError:
            Figure = None
            say("note: matplotlib is not installed, so no loss_curve.png (pip install matplotlib)")
        self.figure = Figure
        if wandb:
            import wandb as wb
            wb.init(project="gpt2-from-scratch", config=config, dir=str(ckdir))
            self.sinks.append(lambda step, numbers: wb.log(numbers, step=step))
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            tb = SummaryWriter(str(ckdir / "tensorboard"))
            self.sinks.append(lambda step, numbers: [tb.add_scalar(k, v, step) for k, v in numbers.items()])

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
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        for sink in self.sinks:
            sink(record["step"], numbers)

    def plot(self) -> None:
        """Train and validation loss against tokens seen; validation bits per byte on a second axis."""
        if self.figure is None:
            return
        fig = self.figure(figsize=(7, 4))
        ax = fig.subplots()
        bpb_ax = ax.twinx()
        for axis, key, label, style in ((ax, "loss", "train", {}), (ax, "val_loss", "validation", {"marker": "o"}),
                                        (bpb_ax, "val_bpb", "validation bits/byte", {"marker": "s", "color": "g"})):
            points = [(r["tokens"], r[key]) for r in self.history if r.get(key) is not None and "tokens" in r]
            if points:
                axis.plot(*zip(*points), label=label, **style)
        ax.set(xlabel="tokens seen", ylabel="loss (nats/token)")
        bpb_ax.set(ylabel="bits per byte")
        ax.grid(alpha=0.3)
        fig.legend(loc="upper right", bbox_to_anchor=(1, 1), bbox_transform=ax.transAxes)  # both axes' lines
        with atomic_path(self.png) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
