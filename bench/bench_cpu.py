"""Whole-process wall time of train_colab_mmap.py against nanoGPT's train.py on the CPU: the same
char-level text, model, batch, steps, optimizer (AdamW, warmup + cosine), evaluation and final
checkpoint; speed = nanoGPT's wall time / ours (above 1: we are faster).

    git clone https://github.com/karpathy/nanoGPT ~/nanoGPT      # any checkout; nothing to install
    python bench/bench_cpu.py --text corpus.txt.gz --nanogpt_dir ~/nanoGPT            # ~30 min on 2 cores
    python bench/bench_cpu.py --text corpus.txt.gz --nanogpt_dir ~/nanoGPT --quick    # ~3 min

The bench takes /tmp/cpu.lock (--lock) around each run itself: do not wrap it in flock. Without
--nanogpt_dir the nanoGPT rows are skipped (our rows still run). Runs are interleaved round by
round (--repeat) so that load from other processes hits every contender alike; min and median.

Both sides get the first --text_bytes of --text: nanoGPT in its own format (train.bin/val.bin, a
90/10 split, meta.pkl with vocab_size, as its data/shakespeare_char/prepare.py writes), ours through
tokenize_local_bpe.py --tokenizer_type char with --val_fraction 0.1. Same work, with what differs:
- dims, batch, dropout 0, biases; nanoGPT --device=cpu --compile=False --dtype=float32 (on a CPU
  nanoGPT never autocasts: its --dtype only matters on CUDA); ours --compile off and --dtype as listed;
- nanoGPT runs iterations 0..max_iters, so max_iters = steps - 1 gives the same number of updates;
- lr 1e-3 -> 1e-4, warmup steps/20, weight decay 0.1; nanoGPT's char recipe has beta2 0.99, ours
  0.95 (same cost);
- evaluation: nanoGPT evaluates at iteration 0 and at the end, eval_iters batches on each split,
  so 4 x eval_iters forward batches in all; ours evaluates at the end with --eval_batches =
  4 x eval_iters, and again at every epoch end (counted in the `evals` column);
- a checkpoint at the end on both sides (nanoGPT always_save_checkpoint), logging every 10 steps;
- model: nanoGPT ties wte/lm_head and keeps the vocabulary as is (char vocab of the text); ours
  unties the head (default) and pads the vocabulary to a multiple of 64.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import json
import os
import pickle
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import UserError, atomic_write_text, cli_main  # noqa: E402

DIAGNOSIS_HEADING = "## Where the time goes"  # hand-written section of --out, kept on rewrite


@dataclass(frozen=True)
class Shape:
    name: str
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    batch_size: int
    steps: int
    eval_iters: int          # nanoGPT's per split; ours gets 4x in one evaluation
    our_dtypes: tuple[str, ...]


SHAPES = {
    "2L/128": Shape("2L/128", 2, 4, 128, 64, 12, 2000, 10, ("fp32",)),
    "4L/256": Shape("4L/256", 4, 4, 256, 256, 16, 300, 5, ("fp32", "bf16", "auto")),
}


@dataclass
class Run:
    wall_s: float
    cpu_s: float
    others: float            # cores busy with other processes during the run (noise)
    tok_s: float | None      # steady-state tokens/s from the program's own log
    dtype: str               # ours: "X (why)" from the device line
    evals: int


# ---------------------------------------------------------------------------- data

def read_text(path: Path, nbytes: int) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read(nbytes)
    except OSError as e:
        raise UserError(f"--text {path}: cannot read it ({e}); pass a UTF-8 .txt or .txt.gz file") from None
    text = raw.decode("utf-8", errors="ignore")  # a character cut at the end is dropped
    if len(text) < 100_000:
        raise UserError(f"--text {path} gave {len(text):,} characters; pass at least 100 kB of text")
    return text


def write_nanogpt_data(text: str, folder: Path) -> int:
    """train.bin / val.bin (uint16, 90/10) and meta.pkl, as nanoGPT's shakespeare_char/prepare.py."""
    folder.mkdir(parents=True)
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    n = int(len(ids) * 0.9)
    ids[:n].tofile(folder / "train.bin")
    ids[n:].tofile(folder / "val.bin")
    with open(folder / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)
    return len(chars)


def write_our_data(text: str, folder: Path) -> list[str]:
    folder.mkdir(parents=True)
    (folder / "text.txt").write_text(text, encoding="utf-8")
    subprocess.run([sys.executable, str(ROOT / "tokenize_local_bpe.py"), "--input", str(folder / "text.txt"),
                    "--tokenizer_type", "char", "--output_dir", str(folder)], check=True, capture_output=True)
    return ["--bin_file", str(folder / "tokens_char.bin"), "--tokenizer_file", str(folder / "char_tokenizer.json"),
            "--metadata_file", str(folder / "tokens_char_metadata.json")]


# ---------------------------------------------------------------------------- commands

def nanogpt_cmd(s: Shape, steps: int, data: Path, out: Path) -> list[str]:
    flags = dict(dataset=data, out_dir=out, device="cpu", compile=False, dtype="float32", n_layer=s.n_layer,
                 n_head=s.n_head, n_embd=s.n_embd, block_size=s.block_size, batch_size=s.batch_size,
                 gradient_accumulation_steps=1, max_iters=steps - 1, lr_decay_iters=steps - 1,
                 eval_interval=max(1, steps - 1), eval_iters=s.eval_iters, log_interval=10,
                 always_save_checkpoint=True, dropout=0.0, bias=True, learning_rate=1e-3, min_lr=1e-4,
                 warmup_iters=max(1, steps // 20), beta2=0.99, weight_decay=0.1)
    return [sys.executable, "train.py"] + [f"--{k}={v}" for k, v in flags.items()]


def ours_cmd(s: Shape, steps: int, dtype: str, data_args: list[str], ckdir: Path) -> list[str]:
    flags = dict(n_layer=s.n_layer, n_head=s.n_head, n_embd=s.n_embd, block_size=s.block_size,
                 batch_size=s.batch_size, max_steps=steps, epochs=1000, dtype=dtype, compile="off", device="cpu",
                 dropout=0.0, eval_every_steps=0, eval_batches=4 * s.eval_iters, val_fraction=0.1,
                 log_every_steps=10, save_every_steps=0, save_every_minutes=0, resume="never",
                 checkpoint_dir=ckdir, optimizer="adamw", schedule="cosine", lr=1e-3, min_lr=1e-4, warmup_steps=max(1, steps // 20), weight_decay=0.1)
    return [sys.executable, str(ROOT / "train_colab_mmap.py")] + data_args + [
        x for k, v in flags.items() for x in (f"--{k}", str(v))]


def busy_cpu_s() -> float:
    """CPU seconds all processes of the machine have used (/proc/stat); nan where unreadable."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return float("nan")
    return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def run_locked(cmd: list[str], cwd: Path, lock: str, env: dict) -> tuple[float, float, float, str]:
    """(wall s, CPU s of the child, cores other processes kept busy meanwhile, stdout + stderr)."""
    with open(lock, "a") if lock else open(os.devnull) as lk:
        if lock:
            fcntl.flock(lk, fcntl.LOCK_EX)
        r0, b0 = resource.getrusage(resource.RUSAGE_CHILDREN), busy_cpu_s()
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        r1, b1 = resource.getrusage(resource.RUSAGE_CHILDREN), busy_cpu_s()
    out = p.stdout + p.stderr
    if p.returncode:
        raise RuntimeError(f"exit {p.returncode}: {' '.join(map(str, cmd))}\n{out[-3000:]}")
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return wall, cpu, max(0.0, (b1 - b0 - cpu) / wall), out


def run_nanogpt(nano_dir: Path, s: Shape, steps: int, data: Path, out: Path, lock: str, env: dict) -> Run:
    wall, cpu, others, log = run_locked(nanogpt_cmd(s, steps, data, out), nano_dir, lock, env)
    if not (out / "ckpt.pt").is_file() or f"step {steps - 1}:" not in log:
        raise RuntimeError(f"nanoGPT did not reach step {steps - 1} with a checkpoint:\n{log[-2000:]}")
    ms = [float(m.group(2)) for m in re.finditer(r"iter (\d+): loss [\d.]+, time ([\d.]+)ms", log)
          if int(m.group(1)) >= 20]
    tok_s = s.batch_size * s.block_size / (statistics.median(ms) / 1e3) if ms else None
    return Run(wall, cpu, others, tok_s, "fp32", 2 * 2 * s.eval_iters)


def run_ours(s: Shape, steps: int, dtype: str, data_args: list[str], ckdir: Path, lock: str, env: dict) -> Run:
    wall, cpu, others, log = run_locked(ours_cmd(s, steps, dtype, data_args, ckdir), ROOT, lock, env)
    if f"done: step {steps}/{steps}" not in log:
        raise RuntimeError(f"train_colab_mmap.py did not reach step {steps}:\n{log[-2000:]}")
    m = re.search(r"dtype (\S+) \(([^)]*)\)", log)
    recs = [json.loads(ln) for ln in (ckdir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    tps = [r["tokens_per_sec"] for r in recs if r.get("tokens_per_sec") and r["step"] >= 20]
    n_evals = len(re.findall(r"^step \d+: train loss", log, flags=re.M))
    return Run(wall, cpu, others, statistics.median(tps) if tps else None,
               f"{m.group(1)} ({m.group(2)})" if m else "?", n_evals * 4 * s.eval_iters)


# ---------------------------------------------------------------------------- report

def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` reports (bench_learning.py uses it too)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    return (f"CPU: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, {torch.get_num_threads()} threads "
            f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); capability "
            f"{torch.backends.cpu.get_cpu_capability()}")


def table(results: dict, shapes: list[Shape], steps_of: dict) -> list[str]:
    lines = ["| shape | program | dtype | steps | wall min (s) | wall median (s) | CPU s (median) | steady tok/s "
             "| eval batches | other load (cores) | nanoGPT / ours (min) | (median) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in shapes:
        nano = results.get((s.name, "nanoGPT", "fp32"))
        for (shape, prog, dtype), runs in results.items():
            if shape != s.name:
                continue
            walls = [r.wall_s for r in runs]
            ratio = ("1" if prog == "nanoGPT" else
                     f"**{min(r.wall_s for r in nano) / min(walls):.3f}** | "
                     f"{statistics.median(r.wall_s for r in nano) / statistics.median(walls):.3f}") if nano else "n/a | n/a"
            if prog == "nanoGPT":
                ratio = "- | -"
            tok = [r.tok_s for r in runs if r.tok_s]
            lines.append(f"| {s.name} (block {s.block_size}, batch {s.batch_size}) | {prog} | {runs[-1].dtype} | "
                         f"{steps_of[s.name]} | {min(walls):.1f} | {statistics.median(walls):.1f} | "
                         f"{statistics.median(r.cpu_s for r in runs):.1f} | "
                         f"{f'{statistics.median(tok):,.0f}' if tok else '?'} | {runs[-1].evals} | "
                         f"{statistics.median(r.others for r in runs):.2f} | {ratio} |")
    return lines


def write_report(out: Path, lines: list[str]) -> None:
    """Rewrite the measured part of `out`, keeping a hand-written DIAGNOSIS_HEADING section."""
    kept = ""
    if out.is_file():
        old = out.read_text(encoding="utf-8")
        if DIAGNOSIS_HEADING in old:
            kept = "\n" + old[old.index(DIAGNOSIS_HEADING):]
    atomic_write_text(out, "\n".join(lines) + "\n" + kept)


# ---------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", required=True, help="a UTF-8 text file (.txt or .txt.gz); its first --text_bytes are used")
    ap.add_argument("--text_bytes", type=int, default=1_000_000)
    ap.add_argument("--nanogpt_dir", default=None, help="a nanoGPT checkout (git clone "
                    "https://github.com/karpathy/nanoGPT); without it the nanoGPT rows are skipped")
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    ap.add_argument("--steps_small", type=int, default=None, help="2L/128 steps (default 2000, --quick 200)")
    ap.add_argument("--steps_large", type=int, default=None, help="4L/256 steps (default 300, --quick 20)")
    ap.add_argument("--repeat", type=int, default=None, help="interleaved rounds (default 2, --quick 1)")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for both programs (default: unset)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--lock", default="/tmp/cpu.lock", help="flock file held around each run ('' : none)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cpu.md"))
    args = ap.parse_args(argv)
    shapes = [SHAPES[n] if n in SHAPES else None for n in args.shapes.split(",")]
    if None in shapes:
        raise UserError(f"--shapes {args.shapes}: choose among {', '.join(SHAPES)}")
    nano_dir = Path(args.nanogpt_dir).expanduser().resolve() if args.nanogpt_dir else None
    if nano_dir is not None and not (nano_dir / "train.py").is_file():
        raise UserError(f"--nanogpt_dir {nano_dir} has no train.py; pass a nanoGPT checkout "
                        f"(git clone https://github.com/karpathy/nanoGPT)")
    repeat = args.repeat or (1 if args.quick else 2)
    steps_of = {"2L/128": args.steps_small or (200 if args.quick else 2000),
                "4L/256": args.steps_large or (20 if args.quick else 300)}
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
    lines = ["# CPU training: train_colab_mmap.py vs nanoGPT's train.py", "", machine_line(),
             f"Date {time.strftime('%Y-%m-%d')}; `python bench/bench_cpu.py {' '.join(argv or sys.argv[1:])}`; "
             f"{repeat} interleaved round(s); each run is a whole process (start-up, training, final evaluation "
             f"and checkpoint), timed with perf_counter around subprocess.run under {args.lock or 'no lock'}.", ""]
    for ln in lines:
        print(ln, flush=True)
    if nano_dir is None:
        print("nanoGPT rows skipped: no --nanogpt_dir (git clone https://github.com/karpathy/nanoGPT, then "
              "pass --nanogpt_dir PATH)", flush=True)
    results: dict[tuple[str, str, str], list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_cpu_") as tmp:
        tmp = Path(tmp)
        text = read_text(Path(args.text), args.text_bytes)
        nano_vocab = write_nanogpt_data(text, tmp / "nano_data")
        data_args = write_our_data(text, tmp / "our_data")
        our_vocab = json.loads((tmp / "our_data" / "tokens_char_metadata.json").read_text())["vocab_size"]
        print(f"text: {len(text):,} characters; vocab nanoGPT {nano_vocab}, ours {our_vocab} "
              f"(padded to {(our_vocab + 63) // 64 * 64})", flush=True)
        for rnd in range(repeat):
            for s in shapes:
                steps = steps_of[s.name]
                if nano_dir is not None:
                    r = run_nanogpt(nano_dir, s, steps, tmp / "nano_data", tmp / f"nano_out_{rnd}_{s.n_layer}",
                                    args.lock, env)
                    results.setdefault((s.name, "nanoGPT", "fp32"), []).append(r)
                    print(f"round {rnd + 1} {s.name} nanoGPT fp32: {r.wall_s:.1f} s (other load {r.others:.2f} cores)", flush=True)
                for dtype in s.our_dtypes:
                    r = run_ours(s, steps, dtype, data_args, tmp / f"ck_{rnd}_{s.n_layer}_{dtype}", args.lock, env)
                    results.setdefault((s.name, "ours", dtype), []).append(r)
                    print(f"round {rnd + 1} {s.name} ours {r.dtype}: {r.wall_s:.1f} s (other load {r.others:.2f} cores)", flush=True)
    lines += [f"Text: first {args.text_bytes:,} bytes of `{Path(args.text).name}`, {len(text):,} characters; char "
              f"vocabulary nanoGPT {nano_vocab}, ours {our_vocab} (head padded to {(our_vocab + 63) // 64 * 64}).", ""]
    rows = table(results, shapes, steps_of)
    lines += rows + ["", "Speed = nanoGPT wall / our wall (above 1: we are faster). `steady tok/s`: median of each "
              "program's own log after step 20 (nanoGPT: single-step times every 10 steps; ours: "
              "metrics.jsonl, 10-step windows). `other load`: cores other "
              "processes kept busy during the run (/proc/stat; the machine is shared, so this is the noise). `eval batches`: forward batches spent evaluating."]
    print("\n".join(rows), flush=True)
    write_report(Path(args.out), lines)
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    cli_main(main)
