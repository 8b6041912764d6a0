"""Training soak: SIGKILL a CPU run every few minutes, resume it with the same command each time,
and check that it ends exactly where an uninterrupted run ends.

    python bench/soak_train.py                 # the 30-minute soak (issue 9)
    python bench/soak_train.py --quick         # about 3 minutes
    flock /tmp/cpu.lock python bench/soak_train.py --results bench/results/soak.md

Run A trains a `tiny` model for N steps without interruption. Run B trains the same N steps with a
checkpoint every --save_every_minutes; a supervisor SIGKILLs it at random moments (every few
minutes, some of them aimed at a checkpoint being written) and starts the same command again, which
resumes from checkpoint_dir/latest. A and B run at the same time, one torch thread each, so their
arithmetic is the same and the comparison can be exact: every per-step training loss, the final
loss and the final weights of B must equal A's bit for bit (max abs diff 0).

The scripts are copied to a snapshot folder first, so edits to the repo during a long soak cannot
change the code between restarts. N is calibrated so that B's wall time is about --minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORDS = ("the quick brown fox jumps over the lazy dog while a cat sleeps on the warm mat and birds "
         "sing in tall green trees near a quiet river under the bright morning sun").split()
MODEL = ["--model_size", "tiny", "--block_size", "128", "--batch_size", "16", "--device", "cpu", "--dtype", "fp32",
         "--compile", "off", "--epochs", "100000", "--seed", "1234", "--lr", "2e-3", "--log_every_steps", "1",
         "--eval_every_steps", "500", "--eval_batches", "4", "--save_every_steps", "0", "--keep_last", "3",
         "--data_mode", "preload"]


@dataclass
class Kill:
    at_s: float            # seconds since B started
    step: int              # last step B had logged
    latest: str            # what B/latest named at the kill
    during_save: bool      # a .tmp-* checkpoint folder existed at the kill


@dataclass
class RunB:
    starts: int = 0
    kills: list[Kill] = field(default_factory=list)
    resumed_from: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def env_one_thread() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def snapshot_code(dst: Path) -> str:
    """Copy the repo's top-level scripts; returns the git commit (plus '+dirty' when edited)."""
    dst.mkdir(parents=True)
    for f in REPO.glob("*.py"):
        shutil.copy2(f, dst / f.name)
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "*.py"], cwd=REPO, capture_output=True,
                               text=True).stdout.strip()
        return head + ("+uncommitted edits" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def make_data(work: Path, code: Path, mb: float, seed: int) -> list[str]:
    """A seeded word corpus -> tokenize_local_bpe.py (char tokenizer) -> .bin + metadata."""
    rng = random.Random(seed)
    corpus = work / "corpus.txt"
    with open(corpus, "w", encoding="utf-8") as f:
        size = 0
        while size < mb * 1e6:
            doc = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))) + ".<|endoftext|>"
            f.write(doc)
            size += len(doc)
    out = work / "data"
    subprocess.run([sys.executable, str(code / "tokenize_local_bpe.py"), "--input", str(corpus), "--tokenizer_type",
                    "char", "--output_dir", str(out), "--workers", "1"], check=True, env=env_one_thread(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return ["--bin_file", str(out / "tokens_char.bin"), "--tokenizer_file", str(out / "char_tokenizer.json"),
            "--metadata_file", str(out / "tokens_char_metadata.json")]


def trainer_cmd(code: Path, data: list[str], ckdir: Path, steps: int, save_minutes: float) -> list[str]:
    return [sys.executable, str(code / "train_colab_mmap.py"), *data, *MODEL, "--max_steps", str(steps),
            "--save_every_minutes", str(save_minutes), "--checkpoint_dir", str(ckdir)]


def step_losses(ckdir: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    path = ckdir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if "loss" in r and "step" in r:
                    out[r["step"]] = r["loss"]
    return out


def last_step(ckdir: Path) -> int:
    """The last step B logged (metrics.jsonl may end in a half-written line at a kill)."""
    try:
        lines = (ckdir / "metrics.jsonl").read_bytes().splitlines()
    except OSError:
        return 0
    for raw in reversed(lines):
        try:
            return int(json.loads(raw).get("step", 0))
        except ValueError:
            continue
    return 0


def calibrate(code: Path, data: list[str], work: Path, probe_steps: int = 60) -> float:
    """Seconds per step of this model at one thread (the run is discarded)."""
    ck = work / "probe"
    subprocess.run(trainer_cmd(code, data, ck, probe_steps, 0) + ["--resume", "never", "--eval_every_steps", "0"],
                   check=True, env=env_one_thread(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    recs = [json.loads(ln) for ln in (ck / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    recs = [r for r in recs if "loss" in r]
    first, last = recs[min(9, len(recs) - 2)], recs[-1]
    shutil.rmtree(ck)
    return (last["elapsed_s"] - first["elapsed_s"]) / (last["step"] - first["step"])


def run_b(cmd: list[str], ckdir: Path, kill_every: tuple[float, float], save_minutes: float, rng: random.Random,
          aim_at_save: float, log) -> RunB:
    """Start B, SIGKILL it at random moments, restart the same command until it finishes."""
    b, t0 = RunB(), time.time()
    while True:
        b.starts += 1
        err = open(ckdir.parent / f"b_stderr_{b.starts}.log", "w")
        proc = subprocess.Popen(cmd, env=env_one_thread(), stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
        deadline = time.time() + rng.uniform(*kill_every)
        aim = rng.random() < aim_at_save
        while proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        during_save = False
        if proc.poll() is None and aim:
            # wait (at most two save intervals) for a checkpoint folder being written, then kill
            give_up = time.time() + 120 * save_minutes
            while proc.poll() is None and time.time() < give_up:
                if any(ckdir.glob(".tmp-step_*")):
                    during_save = True
                    break
                time.sleep(0.005)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            err.close()
            latest = (ckdir / "latest").read_text().strip() if (ckdir / "latest").exists() else "-"
            k = Kill(round(time.time() - t0, 1), last_step(ckdir), latest, during_save)
            b.kills.append(k)
            log(f"  B: SIGKILL #{len(b.kills)} at {k.at_s:.0f} s, step {k.step}, latest {k.latest}"
                f"{' (during a checkpoint write)' if during_save else ''}")
            continue
        err.close()
        if proc.returncode != 0:
            raise SystemExit(f"run B exited with {proc.returncode}; see {err.name}")
        break
    for i in range(2, b.starts + 1):
        text = (ckdir.parent / f"b_stderr_{i}.log").read_text(errors="replace")
        mark = "resumed from "
        b.resumed_from.append(text.split(mark, 1)[1].split(":", 1)[0] if mark in text else
                              "fresh start" if "checkpoints:" in text else "killed before start-up ended")
    b.wall_s = time.time() - t0
    return b


def compare_weights(a: Path, b: Path) -> float:
    import torch

    def load(ck: Path) -> dict:
        name = (ck / "latest").read_text().strip()
        return torch.load(ck / name / "pytorch_model.bin", map_location="cpu", weights_only=True)
    sa, sb = load(a), load(b)
    if sa.keys() != sb.keys():
        return float("inf")
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa) if sa else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="target wall time of the killed run B")
    p.add_argument("--quick", action="store_true", help="about 3 minutes: saves every 6 s, kills every 15-40 s")
    p.add_argument("--seed", type=int, default=0, help="kill schedule and corpus seed")
    p.add_argument("--workdir", default=None, help="default: a fresh folder under /tmp (removed unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--results", default=None, help="also write the markdown result here")
    args = p.parse_args(argv)
    minutes = 3.0 if args.quick else args.minutes
    save_minutes = 0.1 if args.quick else 1.0
    kill_every = (15.0, 40.0) if args.quick else (120.0, 300.0)
    rng = random.Random(args.seed)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="soak-"))
    work.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t_all = time.time()
    commit = snapshot_code(work / "code")
    data = make_data(work, work / "code", mb=2.0, seed=args.seed)
    step_s = calibrate(work / "code", data, work)
    # B's wall = N steps + ~half a save interval of redone work and ~4 s of start-up per kill
    mean_kill = sum(kill_every) / 2
    overhead = (60 * save_minutes / 2 + 4) / mean_kill
    steps = max(100, int(minutes * 60 / step_s / (1 + overhead)))
    log(f"soak: {steps:,} steps of {step_s * 1000:.0f} ms, checkpoint every {save_minutes:g} min, SIGKILL every "
        f"{kill_every[0]:.0f}-{kill_every[1]:.0f} s; work folder {work}")

    ck_a, ck_b = work / "A", work / "B"
    cmd_a = trainer_cmd(work / "code", data, ck_a, steps, 0)
    cmd_b = trainer_cmd(work / "code", data, ck_b, steps, save_minutes)
    t_a, a_done = time.time(), []
    proc_a = subprocess.Popen(cmd_a, env=env_one_thread(), stdout=subprocess.DEVNULL,
                              stderr=open(work / "a_stderr.log", "w"))
    waiter = threading.Thread(target=lambda: a_done.append((proc_a.wait(), time.time())), daemon=True)
    waiter.start()
    try:
        b = run_b(cmd_b, ck_b, kill_every, save_minutes, rng, aim_at_save=0.4, log=log)
        waiter.join()
    finally:
        if proc_a.poll() is None:
            proc_a.kill()
    if a_done[0][0] != 0:
        raise SystemExit(f"run A exited with {a_done[0][0]}; see {work / 'a_stderr.log'}")
    wall_a = a_done[0][1] - t_a
    la, lb = step_losses(ck_a), step_losses(ck_b)
    missing = sorted(set(range(1, steps + 1)) - set(lb))
    common = sorted(set(la) & set(lb))
    diffs = [abs(la[s] - lb[s]) for s in common]
    max_diff = max(diffs) if diffs else float("inf")
    n_equal = sum(la[s] == lb[s] for s in common)
    w_diff = compare_weights(ck_a, ck_b)
    finals = [(ck / "latest").read_text().strip() for ck in (ck_a, ck_b)]
    ok = not missing and len(common) == steps and max_diff == 0.0 and w_diff == 0.0 and \
        finals == [f"step_{steps:08d}"] * 2
    import torch

    rows = [("steps (A and B)", f"{steps:,}"), ("model", "tiny (2 layers, 4 heads, 128 wide), block 128, batch 16, "
                                                       "char vocab, fp32, 1 torch thread each"),
            ("B: checkpoints", f"every {save_minutes:g} min (plus eval/epoch-end saves), keep_last 3"),
            ("B: SIGKILLs", f"{len(b.kills)} ({sum(k.during_save for k in b.kills)} during a checkpoint write)"),
            ("B: resumes", f"{len(b.resumed_from)} (from {', '.join(b.resumed_from) or '-'})"),
            ("B: kill times (s) / step", ", ".join(f"{k.at_s:.0f}/{k.step}" for k in b.kills) or "-"),
            ("final checkpoint A / B", " / ".join(finals)),
            ("final loss A / B", f"{la.get(steps, float('nan')):.6f} / {lb.get(steps, float('nan')):.6f}"),
            ("per-step losses compared", f"{len(common):,} ({n_equal:,} bitwise equal, {len(missing)} missing in B)"),
            ("max abs diff, per-step loss", f"{max_diff:.3g}"),
            ("max abs diff, final weights", f"{w_diff:.3g}"),
            ("wall time A / B", f"{wall_a / 60:.1f} / {b.wall_s / 60:.1f} min"),
            ("result", "PASS: identical" if ok else "FAIL: B differs from A")]
    table = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    cmd = "python bench/soak_train.py" + (" --quick" if args.quick else f" --minutes {args.minutes:g}") + \
          (f" --seed {args.seed}" if args.seed else "")
    md = (f"# Training soak: SIGKILL and resume vs. an uninterrupted run\n\n"
          f"Machine: 2-core AMD EPYC CPU, torch {torch.__version__}; date {time.strftime('%Y-%m-%d')}; "
          f"code {commit}.\nCommand: `flock /tmp/cpu.lock {cmd}` (total {(time.time() - t_all) / 60:.1f} min).\n\n"
          f"{table}\n")
    print(md)
    if args.results:
        Path(args.results).write_text(md, encoding="utf-8")
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    elif missing or not ok:
        log(f"work folder kept: {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
