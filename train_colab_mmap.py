"""Train GPT-2 on a pre-tokenized .bin: memmap or RAM data, AMP, torch.compile, atomic checkpoints,
exact resume, and DDP through torchrun. The seed's command works as written:

    python train_colab_mmap.py --bin_file tokens_bpe.bin --tokenizer_file bpe_tokenizer.json \\
        --metadata_file tokens_bpe_metadata.json --model_size gpt2_small --batch_size 64 \\
        --epochs 10 --use_gpu --checkpoint_dir checkpoints

Running the same command again resumes from checkpoints/latest. `torchrun --nproc_per_node N
train_colab_mmap.py ...` trains on N devices; --batch_size stays the global batch.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from common import (ArgParser, UserError, cli_main, cuda_has_native_bf16, pick_device, read_json,
                    resolve_checkpoint_dir, sha256_file)
from import_hf import load_model
from model import MODEL_CONFIGS, GPTConfig, TransformerLanguageModel, get_config
from tokenizer import load_tokenizer
from train_io import (TokenSource, assistant_mask_for, check_token_files, choose_data_mode, find_checkpoint,
                      list_checkpoints, num_windows, plan_splits, read_checkpoint, recover_interrupted_saves)
from trainer import Dist, Plan, Progress, Trainer


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--bin_file", required=True, help="token .bin (uint16/uint32, no header)")
    a("--tokenizer_file", required=True, help="the tokenizer JSON the .bin was made with")
    a("--metadata_file", default=None, help="X_metadata.json (default: the one beside the .bin)")
    a("--model_size", default="tiny", choices=list(MODEL_CONFIGS))
    a("--batch_size", type=int, default=32, help="GLOBAL sequences per optimizer step (all ranks x accumulation)")
    a("--epochs", type=int, default=1)
    a("--use_gpu", action="store_true", help="require a GPU (CUDA, else MPS)")
    a("--checkpoint_dir", default="checkpoints")
    a("--block_size", type=int, default=None, help="context length (default: the model size's)")
    a("--n_layer", type=int, default=None)
    a("--n_head", type=int, default=None)
    a("--n_embd", type=int, default=None)
    a("--dropout", type=float, default=0.0)
    a("--tie_embeddings", action="store_true")
    a("--init_from", default=None, help="weights only: our checkpoint dir or a HuggingFace GPT-2 folder")
    a("--data_mode", default="auto", choices=["auto", "mmap", "preload"])
    a("--val_bin_file", default=None)
    a("--val_fraction", type=float, default=0.01, help="held-out tail when no --val_bin_file (0: no validation)")
    a("--loss_on", default="all", choices=["all", "assistant"])
    a("--max_steps", type=int, default=None)
    a("--max_tokens", type=int, default=None)
    a("--max_minutes", type=float, default=None, help="save and stop after this many minutes")
    a("--lr", type=float, default=None, help="peak learning rate (default: 1e-3 up to n_embd 256, else 6e-4)")
    a("--min_lr", type=float, default=None, help="end of the cosine decay (default lr/10)")
    a("--warmup_steps", type=int, default=None, help="default: 5%% of planned steps, at most 2000")
    a("--weight_decay", type=float, default=0.1)
    a("--grad_clip", type=float, default=1.0, help="0: no clipping")
    a("--grad_accum_steps", type=int, default=None)
    a("--micro_batch_size", type=int, default=None, help="per-rank rows per forward (default: all; halved on OOM)")
    a("--loss_chunk_size", type=int, default=-1, help="tokens per loss chunk; -1: 2048 when vocab >= 8192, else 0 (off)")
    a("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    a("--compile", default="auto", choices=["auto", "on", "off"], help="auto: on for CUDA")
    a("--device", default="auto", help="auto|cpu|cuda|mps")
    a("--seed", type=int, default=1337)
    a("--eval_every_steps", type=int, default=500)
    a("--eval_batches", type=int, default=20, help="micro-batches per evaluation (set by the first run; a resume keeps it)")
    a("--log_every_steps", type=int, default=10)
    a("--save_every_steps", type=int, default=1000, help="0: off")
    a("--save_every_minutes", type=float, default=30.0, help="0: off")
    a("--keep_last", type=int, default=3, help="step folders kept (best is never pruned; 0: keep all)")
    a("--resume", default="auto", help="auto (from checkpoint_dir/latest) | never | PATH")
    a("--nan_patience", type=int, default=5, help="NaN/inf steps in a row before rolling back")
    a("--max_rollbacks", type=int, default=2)
    a("--wandb", action="store_true")
    a("--tensorboard", action="store_true")
    a("--debug", action="store_true")
    return p


# ---------------------------------------------------------------------------- devices and precision

def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16 (bf16 dot-product instructions); never assumed."""
    if torch.backends.cpu.get_cpu_capability().startswith("AMX"):
        return True
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        return False
    return bool({"amx_bf16", "avx512_bf16"} & set(flags.split()))


def choose_device(args: argparse.Namespace, d: Dist) -> torch.device:
    if args.use_gpu:
        if torch.cuda.is_available():
            dev = torch.device("cuda")
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            dev = torch.device("mps")
        else:
            raise UserError(f"--use_gpu: torch {torch.__version__} sees no GPU (CUDA unavailable); in Colab choose "
                            f"Runtime > Change runtime type > GPU, or drop --use_gpu to train on the CPU")
        if args.device not in ("auto", dev.type):
            raise UserError(f"--use_gpu conflicts with --device {args.device}; pass one of them")
    else:
        dev = pick_device(args.device)
    if dev.type == "cuda" and d.world > 1:
        dev = torch.device("cuda", d.local_rank)
    return dev


def choose_dtype(requested: str, device: torch.device, n_embd: int) -> tuple[str, str]:
    cuda_bf16 = cuda_has_native_bf16(device)
    if requested == "bf16" and device.type == "cuda" and not cuda_bf16:
        raise UserError(f"--dtype bf16: {torch.cuda.get_device_name(device)} has no bf16 support; use --dtype fp16")
    if requested != "auto":
        return requested, "asked for"
    if device.type == "cuda":
        return ("bf16", "GPU supports bf16") if cuda_bf16 else ("fp16", "GPU lacks bf16; fp16 with a GradScaler")
    if device.type == "cpu" and cpu_has_native_bf16() and n_embd >= 256:
        return "bf16", "CPU has native bf16 units and n_embd >= 256"
    return "fp32", f"{device.type}: " + ("model too narrow to gain from bf16" if device.type == "cpu" and
                                         cpu_has_native_bf16() else "no native bf16 units")


# ---------------------------------------------------------------------------- setup and validation

def check_args(a: argparse.Namespace, d: Dist) -> None:
    """Numbers that make no sense, caught before anything is read or allocated."""
    rules = [("--batch_size", a.batch_size, a.batch_size >= 1), ("--epochs", a.epochs, a.epochs >= 1),
             ("--max_steps", a.max_steps, a.max_steps is None or a.max_steps >= 1),
             ("--max_tokens", a.max_tokens, a.max_tokens is None or a.max_tokens >= 1),
             ("--max_minutes", a.max_minutes, a.max_minutes is None or a.max_minutes > 0),
             ("--lr", a.lr, a.lr is None or a.lr > 0),
             ("--min_lr", a.min_lr, a.min_lr is None or (0 <= a.min_lr and (a.lr is None or a.min_lr <= a.lr))),
             ("--warmup_steps", a.warmup_steps, a.warmup_steps is None or a.warmup_steps >= 0),
             ("--val_fraction", a.val_fraction, 0 <= a.val_fraction <= 0.5),
             ("--dropout", a.dropout, 0 <= a.dropout < 1), ("--eval_batches", a.eval_batches, a.eval_batches >= 1),
             ("--log_every_steps", a.log_every_steps, a.log_every_steps >= 1),
             ("--eval_every_steps", a.eval_every_steps, a.eval_every_steps >= 0),
             ("--save_every_steps", a.save_every_steps, a.save_every_steps >= 0),
             ("--save_every_minutes", a.save_every_minutes, a.save_every_minutes >= 0),
             ("--keep_last", a.keep_last, a.keep_last >= 0), ("--nan_patience", a.nan_patience, a.nan_patience >= 1),
             ("--max_rollbacks", a.max_rollbacks, a.max_rollbacks >= 0),
             ("--grad_accum_steps", a.grad_accum_steps, a.grad_accum_steps is None or a.grad_accum_steps >= 1),
             ("--micro_batch_size", a.micro_batch_size, a.micro_batch_size is None or a.micro_batch_size >= 1),
             ("--loss_chunk_size", a.loss_chunk_size, a.loss_chunk_size >= -1)]
    for flag, value, ok in rules:
        if not ok:
            raise UserError(f"{flag} {value} is out of range; see --help")
    if a.batch_size % d.world:
        raise UserError(f"--batch_size {a.batch_size} is not divisible by the {d.world} ranks; use a multiple of {d.world}")
    per_rank = a.batch_size // d.world
    if a.grad_accum_steps and per_rank % a.grad_accum_steps:
        raise UserError(f"--grad_accum_steps {a.grad_accum_steps} does not divide the per-rank batch {per_rank} "
                        f"(--batch_size {a.batch_size} over {d.world} ranks)")
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


def model_config(args: argparse.Namespace, vocab: int, found) -> GPTConfig | None:
    """The config of the checkpoint being resumed, or of the flags; None for --init_from, whose
    weights are read only after the data has been checked (its block size: init_block_size)."""
    if found is not None:
        saved = found[3].get("args", {})
        for k in ("model_size", "block_size", "n_layer", "n_head", "n_embd", "tie_embeddings", "init_from"):
            if k in saved and saved[k] != getattr(args, k):
                raise UserError(f"{found[0]} was trained with --{k} {saved[k]}, this run asks for {getattr(args, k)}: "
                                f"pass the same model flags, another --checkpoint_dir, or --resume never")
        cfg = GPTConfig.from_dict(json.loads((found[0] / "config.json").read_text()), str(found[0] / "config.json"))
        if cfg.vocab_size != vocab:
            raise UserError(f"{found[0]} has vocab_size {cfg.vocab_size} but --tokenizer_file has {vocab} tokens")
        if sha256_file(found[0] / "tokenizer.json") != sha256_file(args.tokenizer_file):
            raise UserError(f"--tokenizer_file {args.tokenizer_file} differs from the tokenizer {found[0]} was "
                            f"trained with; pass that tokenizer, another --checkpoint_dir, or --resume never")
        return dataclasses.replace(cfg, dropout=args.dropout)
    if args.init_from:
        return None
    return get_config(args.model_size, vocab, block_size=args.block_size, n_layer=args.n_layer, n_head=args.n_head,
                      n_embd=args.n_embd, dropout=args.dropout, tie_embeddings=args.tie_embeddings or None)


def init_block_size(args: argparse.Namespace, vocab: int) -> int:
    """--init_from's context length, from its config.json alone (ours: block_size; HF: n_positions)."""
    raw = read_json(resolve_checkpoint_dir(args.init_from) / "config.json", "--init_from config")
    if raw.get("vocab_size", vocab) != vocab:
        raise UserError(f"--init_from {args.init_from} has vocab_size {raw['vocab_size']} but --tokenizer_file has "
                        f"{vocab} tokens; fine-tune with the tokenizer it was trained with")
    return args.block_size or int(raw.get("block_size") or raw.get("n_positions") or 1024)


def init_from_weights(args: argparse.Namespace, vocab: int, say) -> tuple[GPTConfig, dict]:
    """--init_from (our checkpoint or a HuggingFace GPT-2 folder): config and weights, the
    position table cropped to --block_size."""
    src = load_model(args.init_from)
    c = src.config
    if c.vocab_size != vocab:
        raise UserError(f"--init_from {args.init_from} has vocab_size {c.vocab_size} but --tokenizer_file has "
                        f"{vocab} tokens; fine-tune with the tokenizer it was trained with")
    T = args.block_size or c.block_size
    if T > c.block_size:
        raise UserError(f"--block_size {T} exceeds --init_from's block_size {c.block_size}")
    sd = src.state_dict()
    sd["transformer.wpe.weight"] = sd["transformer.wpe.weight"][:T].clone()
    say(f"init_from {args.init_from}: n_layer {c.n_layer}, n_head {c.n_head}, n_embd {c.n_embd} "
        f"(--model_size is ignored)")
    return dataclasses.replace(c, block_size=T, dropout=args.dropout), sd


def init_distributed() -> Dist:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    return Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ["WORLD_SIZE"]))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    d = init_distributed()

    def say(msg: str) -> None:
        if d.main:
            print(msg, file=sys.stderr, flush=True)

    check_args(args, d)
    device = choose_device(args, d)
    if d.world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        return run(args, d, device, say)
    finally:
        if d.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def run(args: argparse.Namespace, d: Dist, device: torch.device, say) -> int:
    tok = load_tokenizer(args.tokenizer_file)
    V = tok.vocab_size
    tf = check_token_files(args.bin_file, args.metadata_file, args.tokenizer_file, V)
    ckdir = Path(args.checkpoint_dir)
    if ckdir.exists() and not ckdir.is_dir():
        raise UserError(f"--checkpoint_dir {ckdir} is a file; pass a folder")
    if d.main and ckdir.is_dir():
        recover_interrupted_saves(ckdir)
    if d.world > 1:
        dist.barrier()
    found = None
    if args.resume == "auto":
        found = find_checkpoint(ckdir, say)
    elif args.resume != "never":
        folder = resolve_checkpoint_dir(args.resume)
        try:
            found = (folder, *read_checkpoint(folder))
        except ValueError as e:
            raise UserError(f"--resume {args.resume}: {folder} is unusable: {e}") from None
    elif ckdir.is_dir() and list_checkpoints(ckdir):
        say(f"warning: --resume never: {ckdir} already holds checkpoints; same-named step folders will be replaced")
    config = model_config(args, V, found)
    T, B = (config.block_size if config else init_block_size(args, V)), args.batch_size

    # data: validated before any model exists
    n_train, val_range = plan_splits(tf, args.val_bin_file, args.val_fraction, T, B)
    mask = assistant_mask_for(tok, args.tokenizer_file) if args.loss_on == "assistant" else None
    mode = choose_data_mode(args.data_mode, n_train * tf.dtype.itemsize, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))

    init_sd = None
    if config is None:
        config, init_sd = init_from_weights(args, V, say)
    spe = num_windows(n_train, T) // B
    total = args.epochs * spe
    if args.max_steps:
        total = min(total, args.max_steps)
    if args.max_tokens:
        total = min(total, math.ceil(args.max_tokens / (B * T)))
    lr = args.lr or (1e-3 if config.n_embd <= 256 else 6e-4)  # nanoGPT's char model / GPT-2 small
    if args.min_lr is not None and args.min_lr > lr:
        raise UserError(f"--min_lr {args.min_lr:g} is above the learning rate {lr:g} (the default for n_embd "
                        f"{config.n_embd}), so the schedule would raise it; pass --min_lr {lr / 10:g} or --lr {args.min_lr:g}")
    dtype, why = choose_dtype(args.dtype, device, config.n_embd)
    plan = Plan(total_steps=total, warmup=args.warmup_steps if args.warmup_steps is not None else min(2000, total // 20),
                lr=lr, min_lr=args.min_lr if args.min_lr is not None else lr / 10, per_rank=B // d.world,
                loss_chunk=args.loss_chunk_size if args.loss_chunk_size >= 0 else (2048 if V >= 8192 else 0),
                dtype=dtype, compile=args.compile == "on" or (args.compile == "auto" and device.type == "cuda"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # the model
    train_src = TokenSource(tf, 0, n_train, preload=mode == "preload")
    val_src = TokenSource(val_range[0], val_range[1], val_range[2], preload=mode == "preload") if val_range else None
    torch.manual_seed(args.seed)
    model = TransformerLanguageModel(config)
    if init_sd is not None:
        model.load_state_dict(init_sd)
    model.to(device).train()
    if d.rank > 0:
        torch.manual_seed(args.seed + d.rank)  # dropout differs per rank
    if d.main:
        ckdir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(args, d, device, model, plan, train_src, val_src, mask, ckdir, Progress())
    trainer.p.micro_batch_size = trainer.requested_micro_batch()
    if found is not None:
        trainer.restart_from(found[0], found[1], found[2])
    elif d.main and trainer.metrics_file.exists():
        os.replace(trainer.metrics_file, ckdir / f"metrics-{int(time.time())}.jsonl")
    if d.main:
        if args.wandb:
            import wandb
            wandb.init(project="gpt2-from-scratch", config=vars(args), dir=str(ckdir))
            trainer.sinks.append(lambda r: wandb.log({k: v for k, v in r.items() if isinstance(v, (int, float))},
                                                     step=r["step"]))
        if args.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            tb = SummaryWriter(str(ckdir / "tensorboard"))
            trainer.sinks.append(lambda r: [tb.add_scalar(k, v, r["step"]) for k, v in r.items()
                                            if isinstance(v, (int, float)) and k != "step"])
    p = trainer.p
    name = f"{torch.cuda.get_device_name(device)}, " if device.type == "cuda" else ""
    say(f"device {device} ({name}{d.world} rank{'s' * (d.world > 1)}), dtype {dtype} ({why}), "
        f"compile {'on' if plan.compile else 'off'}")
    say(f"model: {model.num_parameters():,} parameters (n_layer {config.n_layer}, n_head {config.n_head}, n_embd "
        f"{config.n_embd}, block_size {T}, vocab {V}{', tied' if config.tie_embeddings else ''})")
    say(f"data: {tf.path.name} {tf.num_tokens:,} {tf.dtype.name} tokens ({mode}); train {n_train:,}, validation "
        f"{(val_range[2] - val_range[1]) if val_range else 0:,}; {num_windows(n_train, T):,} windows, {spe:,} steps/epoch"
        f"; loss on {args.loss_on} tokens{f', loss chunks of {plan.loss_chunk}' if plan.loss_chunk else ''}")
    say(f"batch {B} = {d.world} rank(s) x {plan.per_rank} (micro-batch {p.micro_batch_size}); lr {lr:g} -> "
        f"{plan.min_lr:g}, warmup {plan.warmup}; {total:,} steps planned")
    say(f"checkpoints: {ckdir} " + (f"(resumed from {found[0].name}: step {p.step}, epoch {p.epoch})"
                                   if found is not None else "(fresh start)"))
    return trainer.fit()


if __name__ == "__main__":
    cli_main(main)
