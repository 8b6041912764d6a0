"""Learning efficiency of the trainer's recipes: validation bits per byte against tokens and against
training time, on natural English, at two model sizes (4L/128 and `small`, 4L/256; block 256, fp32).

Contenders, each trained by train_colab_mmap.py on the same tokens in the same order (same --seed,
same --batch_size): the old default AdamW + cosine (the baseline), Muon + WSD, and each change alone
(Muon + cosine, AdamW + WSD) so that the gain is attributed. From one full-length run per contender:
tokens and training time to reach the baseline's final val bpb (read along the evaluation curve,
interpolated between evaluations), and val bpb at equal tokens (the end) and at the baseline's
training time. Training time is tokens / the optimizer's training tokens/s, measured in short runs of
each optimizer interleaved, best of three (the schedule does not change a step's work; evaluations
and saves, the same for every contender, are left out). On a shared machine the long runs' own step
times swing with other jobs' load; their ratio is printed as a check.

--tune first sweeps, at 4L/128 on a shorter budget, the baseline's AdamW --lr, then --muon_lr (a
decade around AdamW's rate: with adjust_lr_fn="match_rms_adamw" Muon's update has AdamW's RMS),
--decay_fraction and the WSD decay target (--min_lr lr/10 or ~0), and a Muon check at 4L/256; the
comparison then uses the winners. Finished runs are kept in --work and reused by a later call with
the same arguments.

    python bench/bench_learning.py --corpus prose_en.txt.gz --tune --lock /tmp/cpu.lock \\
        --out bench/results/learning.md --plot bench/results/learning_curves.png

--corpus takes a .txt or .txt.gz of plain English (grouped into ~20 KB documents at paragraph
boundaries so that --val_fraction can hold out whole documents spread over the text); without it
the repo's demo corpus (sample_data.py: chat about capitals, definitions and arithmetic, as plain
text) is used, which is not natural prose: the output says which.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VOCAB = 4096
DOC_CHARS = 20_000  # documents of about this many characters, cut at paragraph boundaries
SIZES = {"4L/128": ["--model_size", "small", "--n_embd", "128"], "4L/256": ["--model_size", "small"]}
CONTENDERS = [("AdamW + cosine (baseline)", "adamw", "cosine"), ("AdamW + WSD", "adamw", "wsd"),
              ("Muon + cosine", "muon", "cosine"), ("Muon + WSD", "muon", "wsd")]
BASELINE = CONTENDERS[0][0]


# ---------------------------------------------------------------------------- data

def corpus_text(corpus: Path | None) -> tuple[str, str]:
    """(text, description) of the --corpus file, or of the demo corpus rendered as plain text."""
    if corpus is not None:
        opener = gzip.open if corpus.suffix == ".gz" else open
        with opener(corpus, "rt", encoding="utf-8") as f:
            text = f.read()
        return text, f"{corpus.name} ({len(text.encode()):,} bytes of UTF-8 text)"
    from sample_data import build_corpus
    lines = []
    for line in build_corpus(seed=0, size_mb=20.0).lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the demo corpus holds a few deliberately broken lines
        lines.append(record_text(record) if isinstance(record, dict) else "")
    text = "\n\n".join(s for s in lines if s)
    return text, (f"the demo corpus (sample_data.py --seed 0 --size_mb 20, rendered as plain text; chat about "
                  f"capitals, definitions and arithmetic, not natural prose; {len(text.encode()):,} bytes)")


def record_text(record: dict) -> str:
    """The turns of one demo record (any of sample_data.py's three shapes), one per line."""
    if "messages" in record:
        return "\n".join(f"{m['role']}: {m['content']}" for m in record["messages"])
    if "conversations" in record:
        return "\n".join(f"{m['from']}: {m['value']}" for m in record["conversations"])
    return "\n".join(str(record.get(k, "")) for k in ("instruction", "input", "output") if record.get(k))


def as_documents(text: str) -> str:
    """Paragraphs grouped into ~DOC_CHARS documents separated by <|endoftext|>."""
    docs, current, size = [], [], 0
    for para in text.split("\n\n"):
        current.append(para)
        size += len(para) + 2
        if size >= DOC_CHARS:
            docs.append("\n\n".join(current))
            current, size = [], 0
    if current:
        docs.append("\n\n".join(current))
    return "<|endoftext|>".join(docs) + "<|endoftext|>"


def tokenize(corpus: Path | None, work: Path, lock: list[str]) -> tuple[Path, str]:
    """Tokenize once (cached in work/data_<hash>): BPE at vocab 4096, 1% of the documents held out."""
    text, description = corpus_text(corpus)
    docs = as_documents(text)
    digest = hashlib.sha256(docs.encode()).hexdigest()[:12]
    out = work / f"data_{digest}"
    if not (out / "tokens_bpe_val.bin").exists():
        out.mkdir(parents=True, exist_ok=True)
        (out / "corpus.txt").write_text(docs, encoding="utf-8")
        cmd = lock + [sys.executable, str(REPO / "tokenize_local_bpe.py"), "--input", str(out / "corpus.txt"),
                      "--vocab_size", str(VOCAB), "--output_dir", str(out), "--val_fraction", "0.01"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    meta = json.loads((out / "tokens_bpe_metadata.json").read_text())
    val_meta = json.loads((out / "tokens_bpe_val_metadata.json").read_text())
    return out, f"{description}; {meta['num_tokens']:,} train / {val_meta['num_tokens']:,} validation tokens"


# ---------------------------------------------------------------------------- runs

@dataclass
class Recipe:
    optimizer: str
    schedule: str
    lr: float = 1e-3
    muon_lr: float = 0.02
    decay_fraction: float = 0.3
    min_lr: float | None = None  # None: lr / 10

    def args(self) -> list[str]:
        a = ["--optimizer", self.optimizer, "--schedule", self.schedule, "--lr", f"{self.lr:g}"]
        if self.optimizer == "muon":
            a += ["--muon_lr", f"{self.muon_lr:g}"]
        if self.schedule == "wsd":
            a += ["--decay_fraction", f"{self.decay_fraction:g}"]
        return a + (["--min_lr", f"{self.min_lr:g}"] if self.min_lr is not None else [])

    def label(self) -> str:
        muon = f", muon_lr {self.muon_lr:g}" if self.optimizer == "muon" else ""
        wsd = f", decay {self.decay_fraction:g}" if self.schedule == "wsd" else ""
        floor = "lr/10" if self.min_lr is None else f"{self.min_lr:g}"
        return f"{self.optimizer} + {self.schedule}: lr {self.lr:g}{muon}{wsd}, min_lr {floor}"


@dataclass
class Curve:
    """One run's evaluations: tokens, val bpb and training seconds at each."""
    tokens: np.ndarray
    bpb: np.ndarray
    train_s: np.ndarray
    tokens_per_s: float  # over the whole run
    command: list[str] = field(default_factory=list)

    def reach(self, target: float) -> tuple[float, float] | None:
        """(tokens, training seconds) where the curve first gets down to `target`, interpolated."""
        below = np.nonzero(self.bpb <= target)[0]
        if not len(below):
            return None
        i = below[0]
        if i == 0:
            return float(self.tokens[0]), float(self.train_s[0])
        w = (self.bpb[i - 1] - target) / (self.bpb[i - 1] - self.bpb[i])
        return (float(self.tokens[i - 1] + w * (self.tokens[i] - self.tokens[i - 1])),
                float(self.train_s[i - 1] + w * (self.train_s[i] - self.train_s[i - 1])))

    def bpb_at_tokens(self, tokens: float) -> float:
        """val bpb after this many tokens (interpolated; the last value past the end)."""
        return float(np.interp(tokens, self.tokens, self.bpb))


@dataclass
class Bench:
    data: Path
    work: Path
    lock: list[str]
    steps: int
    batch_size: int
    eval_every: int
    eval_batches: int
    seed: int

    def command(self, size: str, recipe: Recipe, steps: int, ckdir: Path, eval_every: int | None = None,
                log_every: int | None = None) -> list[str]:
        eval_every = self.eval_every if eval_every is None else eval_every
        return [sys.executable, str(REPO / "train_colab_mmap.py"),
                "--bin_file", str(self.data / "tokens_bpe.bin"), "--tokenizer_file", str(self.data / "bpe_tokenizer.json"),
                "--val_bin_file", str(self.data / "tokens_bpe_val.bin"), *SIZES[size], "--block_size", "256",
                "--batch_size", str(self.batch_size), "--max_steps", str(steps), "--epochs", "100",
                *recipe.args(), "--dtype", "fp32", "--compile", "off", "--seed", str(self.seed),
                "--eval_every_steps", str(eval_every), "--eval_batches", str(self.eval_batches),
                "--log_every_steps", str(log_every or eval_every), "--save_every_steps", "0", "--save_every_minutes", "0",
                "--keep_last", "1", "--resume", "never", "--checkpoint_dir", str(ckdir)]

    def run(self, size: str, recipe: Recipe, steps: int | None = None) -> Curve:
        """Train (or reuse an identical finished run) and read its curve."""
        steps = steps or self.steps
        key = hashlib.sha256(json.dumps([size, recipe.args(), steps, self.batch_size, self.eval_every,
                                         self.eval_batches, self.seed, str(self.data)]).encode()).hexdigest()[:10]
        ckdir = self.work / "runs" / key
        cmd = self.command(size, recipe, steps, ckdir)
        done = ckdir / "bench_done.json"
        if not done.exists():
            print(f"[bench] {size} {recipe.label()}, {steps} steps ...", file=sys.stderr, flush=True)
            t0 = time.time()
            ckdir.parent.mkdir(parents=True, exist_ok=True)
            with open(self.work / "runs" / f"{key}.log", "w") as log:
                subprocess.run(self.lock + cmd, check=True, stdout=log, stderr=log, cwd=REPO)
            done.write_text(json.dumps({"size": size, "recipe": recipe.label(), "wall_s": time.time() - t0}))
        curve = read_curve(ckdir / "metrics.jsonl")
        curve.command = cmd
        print(f"[bench]   final val bpb {curve.bpb[-1]:.4f}, {curve.train_s[-1]:.0f} s training, "
              f"{curve.tokens_per_s:,.0f} tok/s", file=sys.stderr, flush=True)
        return curve

    def speed(self, size: str, reps: int = 3, steps: int = 30) -> dict[str, float]:
        """Steady training tokens/s of each optimizer at this size (the schedule does not change the
        work of a step): short runs, interleaved, best of `reps`. The machine is shared and contention
        only ever slows a run down, so the best is the machine's speed; the long runs' own timings
        are reported beside it."""
        best = {"adamw": 0.0, "muon": 0.0}
        for rep in range(reps):
            for optimizer in best:
                ckdir = self.work / "speed" / f"{size.replace('/', '_')}_{optimizer}_{rep}"
                cmd = self.command(size, Recipe(optimizer, "cosine"), steps, ckdir, eval_every=0, log_every=5)
                subprocess.run(self.lock + cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
                rows = [json.loads(line) for line in (ckdir / "metrics.jsonl").read_text().splitlines()]
                rates = [r["tokens_per_sec"] for r in rows if "loss" in r and r["step"] > 5]  # past the start-up
                best[optimizer] = max(best[optimizer], float(np.median(rates)))
        print(f"[bench] {size} tokens/s: {best}", file=sys.stderr, flush=True)
        return best


def read_curve(metrics: Path) -> Curve:
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = sorted((r for r in rows if "loss" in r), key=lambda r: r["step"])
    seconds, spent, tokens_before = {}, 0.0, 0
    for r in steps:  # each row's tokens_per_sec covers the steps since the previous row, pauses excluded
        spent += (r["tokens"] - tokens_before) / r["tokens_per_sec"]
        seconds[r["step"]], tokens_before = spent, r["tokens"]
    evals = sorted((r for r in rows if r.get("val_bpb") is not None), key=lambda r: r["step"])
    return Curve(tokens=np.array([r["tokens"] for r in evals], dtype=float),
                 bpb=np.array([r["val_bpb"] for r in evals]),
                 train_s=np.array([seconds[r["step"]] for r in evals]),
                 tokens_per_s=tokens_before / spent)


# ---------------------------------------------------------------------------- tuning

def tune(bench: Bench, steps: int, emit) -> tuple[Recipe, Recipe]:
    """Short sweeps at 4L/128; returns the best AdamW + cosine and Muon + WSD recipes."""
    emit(f"\n## Tuning (4L/128, {steps} steps = {steps * bench.batch_size * 256 / 1e6:.2f}M tokens; "
         f"the comparison runs {bench.steps})\n")
    emit("One setting changed at a time, the others at the best found so far; final val bpb of each run.\n")
    emit("| sweep | recipe | final val bpb |")
    emit("|---|---|---|")

    def sweep(name: str, recipes: list[Recipe], size: str = "4L/128") -> Recipe:
        scored = [(bench.run(size, r, steps).bpb[-1], r) for r in recipes]
        best = min(scored, key=lambda s: s[0])[1]
        for bpb, r in scored:
            emit(f"| {name} | {r.label()}{' **(best)**' if r is best else ''} | {bpb:.4f} |")
        return best

    adamw = sweep("AdamW lr (baseline)", [Recipe("adamw", "cosine", lr=lr) for lr in (1e-3, 2e-3, 4e-3)])
    lr = adamw.lr  # Muon runs start from the baseline's AdamW rate for their embeddings, head and biases
    muon = sweep("Muon lr", [Recipe("muon", "wsd", lr=lr, muon_lr=m) for m in (0.003, 0.006, 0.01, 0.02, 0.04)])
    m = muon.muon_lr
    muon = sweep("decay fraction", [Recipe("muon", "wsd", lr=lr, muon_lr=m, decay_fraction=d) for d in (0.2, 0.3, 0.5)])
    d = muon.decay_fraction
    muon = sweep("decay target", [muon, Recipe("muon", "wsd", lr=lr, muon_lr=m, decay_fraction=d, min_lr=1e-6)])
    muon = sweep("AdamW lr inside Muon runs", [Recipe("muon", "wsd", lr=x, muon_lr=m, decay_fraction=d, min_lr=muon.min_lr)
                                               for x in (lr / 2, lr, 2 * lr)])
    wide = sweep("Muon lr at 4L/256", [Recipe("muon", "wsd", lr=muon.lr, muon_lr=x, decay_fraction=muon.decay_fraction,
                                              min_lr=muon.min_lr) for x in (m / 2, m, 2 * m)], size="4L/256")
    if wide.muon_lr != m:
        emit(f"\nAt 4L/256 the best Muon lr was {wide.muon_lr:g} (4L/128: {m:g}).")
    return adamw, muon


# ---------------------------------------------------------------------------- comparison

def compare(bench: Bench, size: str, adamw: Recipe, muon: Recipe, emit) -> tuple[dict[str, Curve], dict[str, float]]:
    """The four contenders at one size: their curves and the optimizers' speeds; emits the table."""
    recipes = {}
    for name, optimizer, schedule in CONTENDERS:
        base = muon if optimizer == "muon" else adamw
        recipes[name] = Recipe(optimizer, schedule, lr=base.lr, muon_lr=muon.muon_lr,
                               decay_fraction=muon.decay_fraction, min_lr=muon.min_lr if schedule == "wsd" else adamw.min_lr)
    curves = {name: bench.run(size, r) for name, r in recipes.items()}
    speed = bench.speed(size)
    base = curves[BASELINE]
    target, base_tokens = float(base.bpb[-1]), float(base.tokens[-1])
    base_s = base_tokens / speed["adamw"]
    emit(f"\n### {size}: {bench.steps} steps x {bench.batch_size} x 256 = {base_tokens / 1e6:.2f}M tokens; the baseline "
         f"ends at val bpb {target:.4f}\n")
    emit(f"Training speed (interleaved 30-step runs, best of 3): AdamW {speed['adamw']:,.0f} tok/s, Muon "
         f"{speed['muon']:,.0f} tok/s (Muon's step costs {100 * (speed['adamw'] / speed['muon'] - 1):.0f}% more); the "
         f"baseline's run is {base_s:.0f} s of training at that speed.\n")
    emit("| recipe | settings | val bpb at equal tokens (end) | val bpb at equal training time | tokens to the "
         "baseline's final bpb | training time to it | same, timed in the run itself |")
    emit("|---|---|---|---|---|---|---|")
    for name, c in curves.items():
        rate = speed[recipes[name].optimizer]
        reached = c.reach(target)
        cells = ["not reached"] * 3
        if reached:
            seconds = reached[0] / rate
            cells = [f"{reached[0] / 1e6:.2f}M ({reached[0] / base_tokens:.2f}x)",
                     f"{seconds:.0f} s ({seconds / base_s:.2f}x)", f"{reached[1] / base.train_s[-1]:.2f}x"]
        emit(f"| {name} | {recipes[name].label()} | {c.bpb[-1]:.4f} | {c.bpb_at_tokens(base_s * rate):.4f} | "
             f"{' | '.join(cells)} |")
    return curves, speed


def plot(results: dict[str, tuple[dict[str, Curve], dict[str, float]]], optimizers: dict[str, str], path: Path) -> None:
    """val bpb against tokens (top) and against training time at the measured speeds (bottom)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, len(results), figsize=(6.5 * len(results), 9), squeeze=False)
    for col, (size, (curves, speed)) in enumerate(results.items()):
        target = curves[BASELINE].bpb[-1]
        for name, c in curves.items():
            axes[0][col].plot(c.tokens / 1e6, c.bpb, label=name)
            axes[1][col].plot(c.tokens / speed[optimizers[name]], c.bpb, label=name)
        for row, xlabel in enumerate(["tokens (millions)", "training seconds (at the measured tokens/s)"]):
            ax = axes[row][col]
            ax.axhline(target, color="gray", linestyle=":", linewidth=1, label="baseline's final bpb")
            ax.set_ylim(min(c.bpb.min() for c in curves.values()) - 0.03,
                        max(c.bpb[len(c.bpb) // 6] for c in curves.values()))  # from a sixth of the way in
            ax.set(xlabel=xlabel, ylabel="validation bits per byte", title=size)
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def machine() -> str:
    from bench_cpu import cpu_name  # bench/ is this script's folder, first on sys.path
    return f"{cpu_name()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=None, help="plain English .txt or .txt.gz (default: the demo corpus)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench_learning",
                    help="tokenized data and finished runs, reused by later calls")
    ap.add_argument("--lock", default=None, help="run each tokenizer and training process under `flock LOCK`")
    ap.add_argument("--steps", type=int, default=400, help="optimizer steps per comparison run")
    ap.add_argument("--tune", action="store_true", help="sweep the settings first and compare with the winners")
    ap.add_argument("--tune_steps", type=int, default=200)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--eval_every", type=int, default=20)
    ap.add_argument("--eval_batches", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=2e-3, help="the baseline's AdamW lr (without --tune; its tuned value)")
    ap.add_argument("--muon_adamw_lr", type=float, default=4e-3,
                    help="lr of the AdamW groups (embeddings, head, biases) in Muon runs (without --tune)")
    ap.add_argument("--muon_lr", type=float, default=0.006, help="Muon lr (without --tune)")
    ap.add_argument("--decay_fraction", type=float, default=0.2, help="WSD decay share (without --tune)")
    ap.add_argument("--min_lr", type=float, default=None, help="WSD decay target (without --tune; default lr/10)")
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--out", type=Path, default=None, help="also write the tables (markdown) here")
    ap.add_argument("--plot", type=Path, default=None, help="val bpb curves (PNG)")
    args = ap.parse_args(argv)
    lock = ["flock", args.lock] if args.lock else []
    lines: list[str] = []

    def emit(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    started = time.time()
    args.work.mkdir(parents=True, exist_ok=True)
    data, corpus = tokenize(args.corpus, args.work, lock)
    bench = Bench(data, args.work, lock, args.steps, args.batch_size, args.eval_every, args.eval_batches, args.seed)
    emit("# Learning efficiency (bench/bench_learning.py)\n")
    emit(f"Machine: {machine()}.  ")
    emit(f"Corpus: {corpus}; BPE vocabulary {VOCAB} (tokenize_local_bpe.py, --val_fraction 0.01).  ")
    emit(f"Every run: block 256, batch {args.batch_size}, --seed {args.seed} (same data order), --dtype fp32, "
         f"evaluation every {args.eval_every} steps on the same {args.eval_batches} x {args.batch_size} validation "
         f"windows, warmup 5% of the steps, weight decay 0.1, grad clip 1.0.")
    if args.tune:
        adamw, muon = tune(bench, args.tune_steps, emit)
    else:
        adamw = Recipe("adamw", "cosine", lr=args.lr)
        muon = Recipe("muon", "wsd", lr=args.muon_adamw_lr, muon_lr=args.muon_lr, decay_fraction=args.decay_fraction,
                      min_lr=args.min_lr)
    emit(f"\n## Comparison (one full-length run per contender, {args.steps} steps)\n")
    emit("Ratios are against the baseline's final val bpb, read along each run's evaluation curve (linear "
         "between evaluations). Training time is tokens / the optimizer's measured tokens/s: this machine "
         "is shared, so the long runs' own step times (evaluations and saves excluded) swing with other "
         "jobs' load; they are in the last column as a check.")
    results = {size: compare(bench, size, adamw, muon, emit) for size in args.sizes}
    emit("\nExact commands (paths shortened: $DATA is the tokenized corpus, $RUN the run folder):\n")
    for size, (curves, _) in results.items():
        for name, c in curves.items():
            cmd = " ".join(shlex.quote(a) for a in c.command[1:])
            cmd = cmd.replace(str(data), "$DATA").replace(str(REPO) + "/", "")
            cmd = cmd.replace(c.command[-1], "$RUN")
            emit(f"- {size}, {name}: `python {cmd}`")
    emit(f"\nBench: `python bench/bench_learning.py {' '.join(shlex.quote(a) for a in (argv or sys.argv[1:]))}` "
         f"({(time.time() - started) / 60:.0f} min in this call).")
    if args.plot and args.out and args.plot.parent.resolve() == args.out.parent.resolve():
        emit(f"\n![validation bits per byte against tokens and training time]({args.plot.name})")
    if args.plot:
        plot(results, {name: optimizer for name, optimizer, _ in CONTENDERS}, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
