"""Train GPT-2 on a pre-tokenized .bin: memmap or RAM data, AMP, torch.compile, atomic checkpoints, exact resume
(the same command again resumes from --checkpoint_dir/latest); the seed's command works as written (README).
`torchrun --nproc_per_node N train_colab_mmap.py ...` trains on N devices; --batch_size stays the global batch."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from common import (ArgParser, UserError, cli_main, cuda_has_native_bf16, first_line, pick_device,
                    resolve_checkpoint_dir, sha256_file)
from import_hf import load_model
from model import MODEL_CONFIGS, GPTConfig, TransformerLanguageModel, get_config, read_config_json
from tokenizer import load_tokenizer
from train_data import (BatchStream, TokenSource, assistant_mask_for, check_token_files, choose_data_mode,
                        eval_windows, num_windows, plan_splits, split_bytes)
from train_state import (Checkpoint, MetricsLog, Progress, Ranks, capture_rng, find_checkpoint, list_checkpoints,
                         read_checkpoint, recover_interrupted_saves, restore_checkpoint, restore_rng, save_checkpoint)
from train_step import (StopSignals, all_reduce, build_optimizers, evaluate, forward_backward, free_memory,
                        halved_micro_batch, is_oom, lr_at, peak_flops, planned_end, probe_bf16_speedup,
                        probe_micro_batch, roll_back, step_record)


def number(kind: type, rule: str, ok) -> object:
    """An argparse type: a `kind` number for which ok(value) holds, else one error line naming `rule`."""
    def parse(text: str):
        value = kind(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text} is out of range (must be {rule})")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its "invalid int value" message
    return parse


COUNT, COUNT_OR_0 = number(int, ">= 1", lambda v: v >= 1), number(int, ">= 0", lambda v: v >= 0)
POSITIVE, NON_NEGATIVE = number(float, "> 0", lambda v: v > 0), number(float, ">= 0", lambda v: v >= 0)


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--bin_file", required=True, help="token .bin (uint16/uint32, no header)")
    a("--tokenizer_file", required=True, help="the tokenizer JSON the .bin was made with")
    a("--metadata_file", help="X_metadata.json (default: the one beside the .bin)")
    a("--model_size", default="tiny", choices=list(MODEL_CONFIGS))
    a("--batch_size", type=COUNT, default=32, help="GLOBAL sequences per optimizer step (all ranks x accumulation)")
    a("--epochs", type=COUNT, default=1)
    a("--use_gpu", action="store_true", help="require a GPU (CUDA, else MPS)")
    a("--checkpoint_dir", default="checkpoints")
    for flag in ("--block_size", "--n_layer", "--n_head", "--n_embd"):
        a(flag, type=int, help="default: the model size's")
    a("--dropout", type=number(float, "in [0, 1)", lambda v: 0 <= v < 1), default=0.0)
    a("--init_from", help="weights only: our checkpoint dir or a HuggingFace GPT-2 folder")
    a("--data_mode", default="auto", choices=["auto", "mmap", "preload"])
    a("--val_bin_file")
    a("--val_fraction", type=number(float, "in [0, 0.5]", lambda v: 0 <= v <= 0.5), default=0.01,
      help="held-out tail when no --val_bin_file (0: no validation)")
    a("--loss_on", default="all", choices=["all", "assistant"])
    for flag in ("--max_steps", "--max_tokens", "--grad_accum_steps"):
        a(flag, type=COUNT)
    a("--max_minutes", type=POSITIVE, help="save and stop after this many minutes")
    a("--optimizer", choices=["muon", "adamw"], help="muon: Muon for the block matrices, AdamW for the rest "
                                                     "(default: the checkpoint's, else muon)")
    a("--schedule", choices=["wsd", "cosine"], help="after warmup, wsd: constant then a linear decay; cosine: "
                                                    "to --min_lr (default: the checkpoint's, else wsd)")
    a("--lr", type=POSITIVE, help="peak AdamW learning rate (default: 1e-3 up to n_embd 256, else 6e-4; "
                                   "4x that for the AdamW groups of a Muon run)")
    a("--muon_lr", type=POSITIVE, help="peak Muon learning rate (default 0.006 up to n_embd 256, measured best at "
                                       "128 and 256; scaled by sqrt(256/n_embd) above: 0.0035 at 768)")
    a("--min_lr", type=NON_NEGATIVE, help="where the decay ends (default: lr/10; Muon's at the same fraction)")
    a("--decay_fraction", type=number(float, "in (0, 1]", lambda v: 0 < v <= 1), default=0.2,
      help="wsd: the share of the run spent decaying")
    a("--warmup_steps", type=COUNT_OR_0, help="default: 5%% of planned steps, at most 2000")
    a("--weight_decay", type=float, default=0.1)
    a("--grad_clip", type=float, default=1.0, help="0: no clipping")
    a("--micro_batch_size", type=COUNT, help="per-rank rows per forward (default: all; halved on OOM)")
    a("--loss_chunk_size", type=number(int, ">= -1", lambda v: v >= -1), default=-1,
      help="tokens per loss chunk; -1: 2048 when vocab >= 8192, else 0 (off)")
    a("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
      help="auto: bf16 on GPUs that have it, else fp16; on a CPU, bf16 if measured faster")
    a("--compile", default="auto", choices=["auto", "on", "off"], help="auto: on for CUDA")
    a("--device", default="auto", help="auto|cpu|cuda|mps")
    a("--seed", type=int, default=1337)
    a("--eval_every_steps", type=COUNT_OR_0, default=500, help="0: only at the end of an epoch and of the run")
    a("--eval_batches", type=COUNT, default=20, help="micro-batches per evaluation (fixed by the first run)")
    a("--log_every_steps", type=COUNT, default=10)
    a("--save_every_steps", type=COUNT_OR_0, default=1000, help="0: off")
    a("--save_every_minutes", type=NON_NEGATIVE, default=30.0, help="0: off")
    a("--keep_last", type=COUNT_OR_0, default=3, help="step folders kept besides best and decay_start (0: all)")
    a("--resume", default="auto", help="auto (from checkpoint_dir/latest) | never | PATH")
    a("--nan_patience", type=COUNT, default=5, help="NaN/inf steps in a row before rolling back")
    a("--max_rollbacks", type=COUNT_OR_0, default=2)
    for flag in ("--tie_embeddings", "--wandb", "--tensorboard", "--debug"):
        a(flag, action="store_true")
    return p


def check_args(a: argparse.Namespace, ranks: Ranks) -> None:
    """What the flags' types cannot check alone, caught before anything is read or allocated."""
    world = ranks.world_size
    if a.batch_size % world:
        raise UserError(f"--batch_size {a.batch_size} is not divisible by the {world} ranks; use a multiple of {world}")
    per_rank = a.batch_size // world
    if a.grad_accum_steps and per_rank % a.grad_accum_steps:
        raise UserError(f"--grad_accum_steps {a.grad_accum_steps} does not divide the per-rank batch {per_rank} "
                        f"(--batch_size {a.batch_size} over {world} ranks)")
    if a.micro_batch_size and (a.micro_batch_size > per_rank or (
            a.grad_accum_steps and a.micro_batch_size * a.grad_accum_steps != per_rank)):
        raise UserError(f"--micro_batch_size {a.micro_batch_size} must be at most the per-rank batch {per_rank}"
                        f"{' and equal it divided by --grad_accum_steps' if a.grad_accum_steps else ''}")
    for flag, module, pkg in (("wandb", "wandb", "wandb"), ("tensorboard", "torch.utils.tensorboard", "tensorboard")):
        if getattr(a, flag):
            try:
                __import__(module)
            except ImportError:
                raise UserError(f"--{flag} needs the {pkg} package: pip install {pkg} (or drop --{flag})") from None


def choose_device(args: argparse.Namespace, ranks: Ranks) -> torch.device:
    dev = pick_device("auto" if args.use_gpu else args.device)  # auto: CUDA, else MPS, else the CPU
    if args.use_gpu and dev.type == "cpu":
        raise UserError(f"--use_gpu: torch {torch.__version__} sees no GPU (CUDA unavailable); in Colab choose "
                        f"Runtime > Change runtime type > GPU, or drop --use_gpu to train on the CPU")
    if args.use_gpu and args.device not in ("auto", dev.type):
        raise UserError(f"--use_gpu conflicts with --device {args.device}; pass one of them")
    return torch.device("cuda", ranks.local_rank) if dev.type == "cuda" and ranks.world_size > 1 else dev


def choose_dtype(requested: str, device: torch.device, config: GPTConfig, rows: int) -> tuple[str, str]:
    """The training precision and why."""
    cuda_bf16 = cuda_has_native_bf16(device)
    if requested == "bf16" and device.type == "cuda" and not cuda_bf16:
        raise UserError(f"--dtype bf16: {torch.cuda.get_device_name(device)} has no bf16 support; use --dtype fp16")
    if requested != "auto":
        return requested, "asked for"
    if device.type == "cuda":
        return ("bf16", "GPU supports bf16") if cuda_bf16 else ("fp16", "GPU lacks bf16; fp16 with a GradScaler")
    if device.type != "cpu":
        return "fp32", f"{device.type}: no bf16 autocast there by default"
    # on a CPU bf16 pays only when its matrix multiplies run at least 1.1x faster: autocast also pays for casts
    speedup = probe_bf16_speedup(config, rows)
    return "bf16" if speedup >= 1.1 else "fp32", f"measured: bf16 matmuls run {speedup:.2f}x fp32 at these model shapes"


def find_resume(ckdir: Path, args: argparse.Namespace, ranks: Ranks, say) -> Checkpoint | None:
    """The checkpoint to resume from, if any, once a save cut off midway in --checkpoint_dir is tidied up."""
    if ckdir.exists() and not ckdir.is_dir():
        raise UserError(f"--checkpoint_dir {ckdir} is a file; pass a folder")
    if ranks.is_main and ckdir.is_dir():
        recover_interrupted_saves(ckdir)
    if ranks.world_size > 1:
        dist.barrier()
    if args.resume == "auto":
        return find_checkpoint(ckdir, say)
    if args.resume != "never":
        folder = resolve_checkpoint_dir(args.resume)
        try:
            return read_checkpoint(folder)
        except ValueError as e:
            raise UserError(f"--resume {args.resume}: {folder} is unusable: {e}") from None
    if ckdir.is_dir() and list_checkpoints(ckdir):
        say(f"warning: --resume never: {ckdir} already holds checkpoints; same-named step folders will be replaced")
    return None


def model_config(args: argparse.Namespace, vocab: int, resume: Checkpoint | None, say) -> tuple[GPTConfig, dict | None]:
    """The config of the checkpoint resumed, else of --init_from (with its weights), else of the flags."""
    if resume is not None:
        folder, saved = resume.folder, resume.trainer_state.get("args", {})
        for k in ("model_size", "block_size", "n_layer", "n_head", "n_embd", "tie_embeddings", "init_from"):
            if k in saved and saved[k] != getattr(args, k):
                raise UserError(f"{folder} was trained with --{k} {saved[k]}, this run asks for {getattr(args, k)}: "
                                f"pass the same model flags, another --checkpoint_dir, or --resume never")
        if sha256_file(folder / "tokenizer.json") != sha256_file(args.tokenizer_file):
            raise UserError(f"--tokenizer_file {args.tokenizer_file} differs from the tokenizer {folder} was "
                            f"trained with; pass that tokenizer, another --checkpoint_dir, or --resume never")
        cfg = GPTConfig.from_dict(read_config_json(folder), str(folder / "config.json"))
        return dataclasses.replace(cfg, dropout=args.dropout), None
    if not args.init_from:
        return get_config(args.model_size, vocab, block_size=args.block_size, n_layer=args.n_layer, n_head=args.n_head,
                          n_embd=args.n_embd, dropout=args.dropout, tie_embeddings=args.tie_embeddings or None), None
    src = load_model(args.init_from)  # our checkpoint or a HuggingFace GPT-2 folder
    c, T = src.config, args.block_size or src.config.block_size
    if c.vocab_size != vocab:
        raise UserError(f"--init_from {args.init_from} has vocab_size {c.vocab_size} but --tokenizer_file has "
                        f"{vocab} tokens; fine-tune with the tokenizer it was trained with")
    if T > c.block_size:
        raise UserError(f"--block_size {T} exceeds --init_from's block_size {c.block_size}")
    weights = src.state_dict()
    weights["transformer.wpe.weight"] = weights["transformer.wpe.weight"][:T].clone()  # positions cropped to T
    say(f"init_from {args.init_from}: n_layer {c.n_layer}, n_head {c.n_head}, n_embd {c.n_embd} (--model_size ignored)")
    return dataclasses.replace(c, block_size=T, dropout=args.dropout), weights


def learning_rates(n_embd: int, optimizer: str, lr: float | None, muon_lr: float | None) -> tuple[float, float]:
    """(peak lr of the AdamW groups, Muon's): the flags, else defaults measured by bench/bench_learning.py."""
    adamw_only = 1e-3 if n_embd <= 256 else 6e-4  # nanoGPT's char model / GPT-2 small
    # beside Muon, the embeddings, head and biases learned best at 4x that (better than 2x and 1x at 4L/128);
    # Muon's own best rate held from width 128 to 256, and wider models get it scaled down as 1/sqrt(width)
    lr = lr or (4 * adamw_only if optimizer == "muon" else adamw_only)
    return lr, muon_lr or 0.006 * min(1.0, math.sqrt(256 / n_embd))


def choose_optimizer(requested: str | None, resume: Checkpoint | None, say) -> str:
    """The checkpoint's optimizer on a resume (asking for another is an error); else muon, if torch has it."""
    saved = resume and ("muon" if resume.training_state.get("muon") else "adamw")  # older checkpoints: adamw
    if saved and requested not in (None, saved):
        raise UserError(f"{resume.folder} was trained with --optimizer {saved}, this run asks for --optimizer "
                        f"{requested}: pass --optimizer {saved}, another --checkpoint_dir, or --resume never")
    name = saved or requested or "muon"
    if name == "muon" and not hasattr(torch.optim, "Muon"):
        if saved or requested:
            raise UserError(f"--optimizer muon needs torch.optim.Muon (torch >= 2.9; this is {torch.__version__}): "
                            f"upgrade torch or pass --optimizer adamw")
        say(f"note: torch {torch.__version__} has no torch.optim.Muon: training with AdamW")
        return "adamw"
    return name


def wrap_model(model: TransformerLanguageModel, use_compile: bool, ranks: Ranks, device: torch.device):
    """What the training step calls: the model, compiled and/or inside DDP."""
    wrapped = torch.compile(model) if use_compile else model
    if ranks.world_size > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            wrapped, device_ids=[device.index] if device.type == "cuda" else None)
    return wrapped


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ranks = Ranks(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world) if world > 1 else Ranks()
    check_args(args, ranks)
    device = choose_device(args, ranks)
    if ranks.world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        return train(args, ranks, device)
    finally:
        if ranks.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def train(args: argparse.Namespace, ranks: Ranks, device: torch.device) -> int:
    def say(msg: str) -> None:
        if ranks.is_main:
            tqdm.write(msg, file=sys.stderr)  # above the progress bar, once there is one

    # ------------------------------------------------------------------ data and model config, checked first
    tokenizer = load_tokenizer(args.tokenizer_file)
    V = tokenizer.vocab_size
    token_file = check_token_files(args.bin_file, args.metadata_file, args.tokenizer_file, V)
    ckdir = Path(args.checkpoint_dir)
    resume = find_resume(ckdir, args, ranks, say)
    config, init_weights = model_config(args, V, resume, say)
    T, B, per_rank = config.block_size, args.batch_size, args.batch_size // ranks.world_size
    train_split, val_split = plan_splits(token_file, args.val_bin_file, args.val_fraction, T, B)
    mask = assistant_mask_for(tokenizer, args.tokenizer_file) if args.loss_on == "assistant" else None
    data_mode = choose_data_mode(args.data_mode, len(train_split) * token_file.dtype.itemsize,
                                 int(os.environ.get("LOCAL_WORLD_SIZE", "1")))  # a copy per local rank

    # ------------------------------------------------------------------ how long, how fast, how precise
    n_windows = num_windows(len(train_split), T)
    total_steps = min(args.epochs * (n_windows // B), args.max_steps or math.inf,
                      -(-args.max_tokens // (B * T)) if args.max_tokens else math.inf)
    optimizer_name = choose_optimizer(args.optimizer, resume, say)
    lr, muon_lr = learning_rates(config.n_embd, optimizer_name, args.lr, args.muon_lr)
    if args.min_lr is not None and args.min_lr > lr:
        source = "--lr" if args.lr else f"the {optimizer_name} default for n_embd {config.n_embd}"
        raise UserError(f"--min_lr {args.min_lr:g} is above the learning rate {lr:g} ({source}), so the schedule "
                        f"would raise it; pass --min_lr {lr / 10:g} or --lr {args.min_lr:g}")
    min_lr = lr / 10 if args.min_lr is None else args.min_lr
    warmup = min(2000, total_steps // 20) if args.warmup_steps is None else args.warmup_steps
    schedule = args.schedule or (resume.trainer_state.get("schedule", "cosine") if resume else "wsd")
    micro_batch = args.micro_batch_size or per_rank // (args.grad_accum_steps or 1)
    loss_chunk = args.loss_chunk_size if args.loss_chunk_size >= 0 else (2048 if V >= 8192 else 0)
    dtype, dtype_why = choose_dtype(args.dtype, device, config, micro_batch * T)
    amp = contextlib.nullcontext() if dtype == "fp32" else torch.autocast(  # (older torch has no MPS autocast)
        device.type, torch.bfloat16 if dtype == "bf16" else torch.float16)
    use_compile = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    # ------------------------------------------------------------------ model, optimizers, state
    train_source = TokenSource(train_split, data_mode == "preload")
    val_source = TokenSource(val_split, data_mode == "preload") if val_split else None
    torch.manual_seed(args.seed)
    model = TransformerLanguageModel(config)
    if init_weights is not None:
        model.load_state_dict(init_weights)
    model.to(device).train()
    if ranks.rank > 0:
        torch.manual_seed(args.seed + ranks.rank)  # dropout differs per rank
    optimizers = build_optimizers(model, optimizer_name, lr, min_lr, muon_lr, args.weight_decay, device.type)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == "fp16")  # fp16 only; disabled, its calls do nothing
    progress = Progress(micro_batch_size=micro_batch)
    if resume is not None:
        restore_checkpoint(resume, model, optimizers, scaler, progress, ranks, device, args.seed)
        if not (args.micro_batch_size or args.grad_accum_steps):  # the size that fitted last time
            micro_batch = min(progress.micro_batch_size, per_rank)
        progress.micro_batch_size = micro_batch
    metrics = None  # rank 0 alone writes files
    if ranks.is_main:
        ckdir.mkdir(parents=True, exist_ok=True)
        metrics = MetricsLog(ckdir, say, progress.step if resume else None, vars(args), args.wandb, args.tensorboard)
    if val_source is not None:  # fixed by the first run: every evaluation (and `best`) sees the same windows
        progress.eval_windows = progress.eval_windows or args.eval_batches * progress.micro_batch_size
        eval_ids = eval_windows(num_windows(len(val_source), T), progress.eval_windows)
        # bits per byte = nats per token / ln 2 x tokens per byte: a measure that does not depend on the tokenizer
        nats_to_bpb = len(val_split) / split_bytes(val_split, tokenizer) / math.log(2) if ranks.is_main else None
    fwd = wrap_model(model, use_compile, ranks, device)
    compile_verified = not use_compile  # set once a compiled step has run (a failure falls back to eager)
    peak, flops_per_token = peak_flops(device), model.flops_per_token(T)
    summary = {"optimizer": optimizer_name, "schedule": schedule, "dtype": dtype, "world_size": ranks.world_size,
               "torch_version": torch.__version__, "args": vars(args)}

    gpu = f"{torch.cuda.get_device_name(device)}, " if device.type == "cuda" else ""
    say(f"device {device} ({gpu}{ranks.world_size} rank{'s' * (ranks.world_size > 1)}), dtype {dtype} ({dtype_why}), "
        f"compile {'on' if use_compile else 'off'}; {model.num_parameters():,} parameters, {config}")
    say(f"data: {token_file.path.name} ({data_mode}), train {len(train_split):,} tokens, validation "
        f"{len(val_split) if val_split else 0:,}; {n_windows // B:,} steps/epoch; loss on {args.loss_on} tokens"
        f"{f' in chunks of {loss_chunk}' if loss_chunk else ''}")
    muon = f", Muon lr {muon_lr:g}" if optimizer_name == "muon" else ""
    say(f"{optimizer_name}, {schedule} schedule: lr {lr:g}{muon} -> x{min_lr / lr:g}, warmup {warmup}; batch {B} = "
        f"{ranks.world_size} rank(s) x {per_rank} (micro-batch {progress.micro_batch_size}); {total_steps:,} steps")
    say(f"checkpoints: {ckdir} " + (f"(resumed from {resume.folder.name}: step {progress.step}, epoch {progress.epoch})"
                                   if resume else "(fresh start)"))  # bench/soak_train.py reads this line
    if progress.step >= total_steps:
        say(f"already trained to step {progress.step} of {total_steps}: raise --epochs, --max_steps or --max_tokens")
        return 0
    if schedule == "wsd" and progress.decay_steps and progress.step >= progress.decay_start + progress.decay_steps:
        say(f"note: this run's decay ended at step {progress.decay_start + progress.decay_steps}: the new steps run "
            f"at the decayed rate; to extend a WSD run, resume from the checkpoint named in {ckdir / 'decay_start'}")

    def open_batches() -> BatchStream:
        return BatchStream(train_source, T, V, B, ranks.rank, ranks.world_size, args.seed, progress.epoch,
                           progress.offset, mask, pin=device.type == "cuda")

    def save(*pointers: str) -> None:
        nonlocal last_save
        progress.wall_time_s = round(wall_before + time.time() - session_start, 1)
        save_checkpoint(ckdir, model, optimizers, scaler, progress, ranks, device, summary, args.tokenizer_file,
                        args.keep_last, ("latest", *pointers))
        last_save = time.time()

    def every(n: int) -> bool:  # n: a --*_every_steps flag, 0 when off
        return n > 0 and progress.step % n == 0

    # ------------------------------------------------------------------ the training loop
    session_start = last_save = last_log = time.time()
    wall_before, session_steps, log_tokens, bad_streak, exit_code = progress.wall_time_s, 0, 0, 0, 0
    batches = open_batches()
    bar = tqdm(total=total_steps, initial=progress.step, unit="step", file=sys.stderr, mininterval=1.0,
               dynamic_ncols=True, disable=not ranks.is_main)
    with StopSignals(say) as signals:
        try:
            if ranks.world_size > 1:  # find a micro-batch that fits on every rank before step 1
                progress.micro_batch_size = probe_micro_batch(fwd, batches.next(), progress.micro_batch_size,
                                                              optimizers, loss_chunk, amp, say)
                batches.close()
                batches = open_batches()
            while progress.step < total_steps:
                # WSD: the decay begins --decay_fraction before the end (with --max_minutes, the end the time
                # left allows, so that a run cut by time still ends decayed); its place is then fixed
                if schedule == "wsd" and not progress.decay_steps:
                    end = planned_end(total_steps, progress.step, session_steps, session_start, args.max_minutes)
                    if progress.step >= end - max(1, round(args.decay_fraction * end)):
                        if progress.step > 0:
                            save("decay_start")  # the state before the decay: extending the run starts here
                        progress.decay_start, progress.decay_steps = progress.step, end - progress.step
                batch = batches.next()

                # forward and backward; out of memory halves the micro-batch and redoes the step
                rng = capture_rng(device)
                while True:
                    try:
                        loss_sum, n_targets = forward_backward(fwd, batch, progress.micro_batch_size, loss_chunk, amp,
                                                               scaler, ranks, mask is not None)
                        break
                    except Exception as e:  # noqa: BLE001 - anything else is raised again just below
                        if not is_oom(e) and compile_verified:
                            raise
                        compile_error = None if is_oom(e) else f"{type(e).__name__}: {first_line(e)}"
                    free_memory(optimizers, device)  # out here, the failed step's tensors (held by `e`) are gone
                    restore_rng(rng, device)
                    if compile_error:
                        say(f"warning: torch.compile failed ({compile_error}); continuing in eager mode")
                        fwd, compile_verified = wrap_model(model, False, ranks, device), True
                    else:
                        progress.micro_batch_size = halved_micro_batch(progress.micro_batch_size, per_rank, T, dtype,
                                                                       ranks, say)
                compile_verified = True

                # the optimizer step, skipped when the loss or the gradients are not finite
                for opt in optimizers:
                    scaler.unscale_(opt)  # fp16: clip the true gradients, not the scaled ones
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip or math.inf)
                if ranks.world_size > 1:
                    dist.all_reduce(loss_sum)
                loss, grad_norm = torch.stack([loss_sum.float(), grad_norm.detach().float().to(device)]).tolist()
                loss /= max(n_targets, 1)
                # fp16 gradients overflow now and then: the scaler skips those steps and lowers its scale
                finite = math.isfinite(loss) and (scaler.is_enabled() or math.isfinite(grad_norm))
                for opt in optimizers:
                    for group in opt.param_groups:
                        group["lr"] = progress.lr_scale * lr_at(progress.step, total_steps, warmup, group["peak_lr"],
                                                                group["min_lr"], schedule, progress.decay_start,
                                                                progress.decay_steps)
                    if finite:
                        scaler.step(opt)  # opt.step(), unless fp16 gradients overflowed
                    opt.zero_grad(set_to_none=True)
                scaler.update()  # fp16: lowers the scale after an overflow; valid without step() after unscale_()
                progress.step, progress.tokens_seen = progress.step + 1, progress.tokens_seen + B * T
                progress.epoch, progress.offset = batch.epoch, batch.offset
                session_steps, log_tokens = session_steps + 1, log_tokens + B * T
                bar.update(1)

                # the step is done: bookkeeping, logging, evaluation, saving, stopping
                if not finite:
                    bad_streak, progress.nan_skipped = bad_streak + 1, progress.nan_skipped + 1
                    say(f"warning: non-finite loss/gradients at step {progress.step} (loss {loss}); update skipped "
                        f"({bad_streak} in a row, {progress.nan_skipped} in all)")
                    if bad_streak >= args.nan_patience:
                        roll_back(ckdir, model, optimizers, scaler, progress, ranks, device, args.max_rollbacks,
                                  args.seed, lr, bad_streak, metrics, say)
                        bad_streak = 0
                        batches.close()
                        batches = open_batches()
                        continue
                else:
                    bad_streak, progress.train_loss = 0, loss
                epoch_end = progress.offset + B > n_windows
                if epoch_end:
                    progress.epoch, progress.offset = progress.epoch + 1, 0
                now = time.time()
                flags = [signals.signum > 0,  # each minutes flag is 0 when off: then never due
                         ranks.is_main and now - session_start >= 60 * (args.max_minutes or math.inf),
                         ranks.is_main and now - last_save >= 60 * (args.save_every_minutes or math.inf)]
                if ranks.world_size > 1:  # a signal may reach one rank only; rank 0 keeps the time
                    flags = (all_reduce(torch.tensor(flags, dtype=torch.float32, device=device)) > 0).tolist()
                signalled, time_up, save_due = flags
                # with --max_minutes, the run also ends where its decay ends: where the time left was planned to
                last = signalled or time_up or progress.step >= total_steps or (
                    args.max_minutes is not None and progress.step == progress.decay_start + progress.decay_steps)
                if finite and (every(args.log_every_steps) or last or progress.step == 1):
                    tokens_per_sec = log_tokens / max(now - last_log, 1e-9)
                    mfu = tokens_per_sec / ranks.world_size * flops_per_token / peak if peak else None
                    if metrics:
                        metrics.write(step_record(progress, n_windows, loss, grad_norm, tokens_per_sec, mfu,
                                                  optimizers[0].param_groups[0]["lr"], now - session_start, device))
                    bar.set_postfix_str(f"loss {loss:.4f} | {tokens_per_sec:,.0f} tok/s | MFU "
                                        f"{'n/a' if mfu is None else f'{100 * mfu:.1f}%'}", refresh=False)
                    log_tokens, last_log = 0, now
                paused, improved, val = time.time(), False, None  # evaluation and saving are left out of tokens/s
                if val_source is not None and (every(args.eval_every_steps) or epoch_end or last):
                    val = evaluate(model, val_source, eval_ids, progress.micro_batch_size, mask, loss_chunk, amp, ranks)
                if val is not None:  # None: no target in the validation windows
                    improved = progress.best_val_loss is None or val < progress.best_val_loss
                    progress.val_loss, progress.val_bpb = val, val * nats_to_bpb if nats_to_bpb else None
                    progress.best_val_loss = val if improved else progress.best_val_loss
                    if metrics:
                        metrics.write({"step": progress.step, "tokens": progress.tokens_seen, "val_loss": val,
                                       "val_bpb": progress.val_bpb, "train_loss": progress.train_loss})
                        metrics.plot()
                    say(f"step {progress.step}: train loss {fmt(progress.train_loss)}, val loss {val:.4f}, "
                        f"val bpb {fmt(progress.val_bpb)}{' (best)' if improved else ''}")
                if improved or epoch_end or last or save_due or every(args.save_every_steps):
                    save(*(["best"] if improved else []))
                last_log += time.time() - paused
                if signalled or time_up:
                    signum = signals.signum or 15  # 0 here: the signal reached another rank (15: SIGTERM)
                    exit_code = 128 + signum if signalled else 0
                    why = signal.Signals(signum).name if signalled else f"--max_minutes {args.max_minutes}"
                    say(f"stopped by {why} at step {progress.step}; saved {ckdir / f'step_{progress.step:08d}'}; "
                        f"run the same command again to resume")
                if last:  # saved above: the run ends at a checkpoint
                    break
        except torch.OutOfMemoryError:
            raise UserError(f"out of memory (micro-batch {progress.micro_batch_size}, --batch_size {B}): "
                            f"pass --micro_batch_size {max(1, progress.micro_batch_size // 2)}") from None
        finally:
            batches.close()
            bar.close()
    best = ckdir / "best"
    say(f"done: step {progress.step}/{total_steps}, {progress.epoch + progress.offset / n_windows:.2f} epochs, "
        f"{progress.tokens_seen:,} tokens; train loss {fmt(progress.train_loss)}, best val loss "
        f"{fmt(progress.best_val_loss)}{f' ({best.read_text().strip()})' if best.is_file() else ''}, val bpb "
        f"{fmt(progress.val_bpb)}; {progress.nan_skipped} non-finite steps skipped, {progress.rollbacks} rollbacks; "
        f"load it with TransformerLanguageModel.from_pretrained('{ckdir}')")
    return exit_code


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


if __name__ == "__main__":
    cli_main(main)
