"""`make demo`: the seed's whole journey, clean -> tokenize -> train -> generate, in minutes on a CPU.

    python demo.py                      # what `make demo` runs: about 7-8 minutes on a 2-core AMD EPYC CPU
    python demo.py --minutes 3          # stop training sooner (rerun to continue it)
    python demo.py --quick              # tiny scale, seconds: the pipeline only, answers are noise

Each step is a subprocess, printed before it runs, run the way the README shows it:

  1 corpus    sample_data.py         data/demo_chat.jsonl (chat JSONL, messy on purpose), data/demo_heldout.jsonl
  2 clean     dataset_cleaner.py     clean/demo_chat.txt (documents separated by <|endoftext|>)
  3 tokenize  tokenize_local_bpe.py  tokens/tokens_bpe.bin (+ .gz), bpe_tokenizer.json, tokens_bpe_metadata.json
  4 train     train_colab_mmap.py    checkpoints/step_*/, latest, best, metrics.jsonl, loss_curve.png
  5-6 generate  generate.py          the seed's two prompts, one call each, greedy (--temperature 0)
  7 evaluate  the seed's snippet (TransformerLanguageModel + BPETokenizer + generate_text), in this
              process, on the held-out questions -> results.json, results.md

The report (the seed's results table answered by the trained model, held-out accuracy, loss, time,
the loss-curve path) goes to stdout and results.md; everything else goes to stderr.

Re-running reuses what is built. Each finished step leaves out_dir/.stamps/STEP.json: its command,
the digest of the step before it and the sha256 of each file it made. A step is skipped while that
stamp still matches; a step whose files come out different makes every later step run again. Training that stopped
early (Ctrl-C, --minutes running out, a closed laptop) resumes from checkpoints/latest through the
trainer's own `--resume auto`; changing the training settings starts it afresh.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from common import ArgParser, UserError, atomic_write_json, atomic_write_text, cli_main, read_json, sha256_file

REPO = Path(__file__).resolve().parent
SEED_RESULTS = "GPT-2 Small (134M), 10 epochs on 12 GB, ~50 h on an A100"


@dataclass(frozen=True)
class Scale:
    """Everything that differs between the real demo and --quick."""
    size_mb: float  # corpus size
    vocab_size: int  # BPE vocabulary asked for (the corpus may give fewer)
    model: tuple[str, ...]  # trainer flags that fix the model's shape
    batch_size: int
    epochs: int
    lr: float
    minutes: float  # default --minutes: the trainer's --max_minutes
    heldout_limit: int  # held-out questions asked (0: all)
    max_new_tokens: int


# 4 layers x 128 wide, vocabulary 3.6k: 1.76M parameters. 5 epochs of the 0.8M-token corpus are
# 985 steps of 16 x 256 tokens: about 7 minutes on a 2-core AMD EPYC CPU (bf16, which the trainer's
# --dtype auto probe measured 1.8x faster than fp32 there). Both seed prompts come out right after 3
# minutes already (they are in the corpus: that is recall); held-out accuracy 70-71% with the default
# Muon + WSD recipe (AdamW + cosine: 64-66%). Arithmetic stays weak at this size; capitals and
# definitions do not.
FULL = Scale(size_mb=6.0, vocab_size=4096, model=("--model_size", "small", "--n_embd", "128"),
             batch_size=16, epochs=5, lr=3e-3, minutes=9.0, heldout_limit=0,
             max_new_tokens=64)
QUICK = Scale(size_mb=0.1, vocab_size=512,
              model=("--model_size", "tiny", "--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--block_size", "64"),
              batch_size=8, epochs=1, lr=3e-3, minutes=2.0, heldout_limit=24, max_new_tokens=24)


@dataclass
class Step:
    name: str
    title: str
    argv: list[str]  # the command, "python" first
    outputs: list[Path]
    volatile: tuple[str, ...] = ()  # flags whose value may change without redoing the step
    capture: bool = False  # keep the command's stdout (generate.py prints only the generated text)
    stdout: str = ""
    seconds: float = 0.0
    skipped: bool = False
    note: str = ""
    digest: str = field(default="", repr=False)


# ---------------------------------------------------------------------------- helpers

def say(msg: str = "") -> None:
    print(msg, file=sys.stderr, flush=True)


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def show_path(p: Path) -> str:
    """Relative to the current directory when inside it, else absolute: short, and it still works."""
    p = Path(os.path.abspath(p))
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def show_cmd(argv: Sequence[str]) -> str:
    """The command as printed: absolute paths shortened (they stay absolute in the stamps, so a rerun
    from another directory still finds its steps up to date)."""
    return "$ " + " ".join(shlex.quote(show_path(a) if os.path.isabs(a) else a) for a in argv)


def script(name: str) -> str:
    return str(REPO / name)


def drop_flags(argv: Sequence[str], flags: Sequence[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in flags:
            skip = True
        else:
            out.append(a)
    return out


def stderr_fd() -> int | None:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def latest_state(ckdir: Path) -> dict | None:
    """trainer_state.json of checkpoints/latest, or None before the first checkpoint."""
    pointer = ckdir / "latest"
    if not pointer.is_file():
        return None
    path = ckdir / pointer.read_text(encoding="utf-8").strip() / "trainer_state.json"
    return read_json(path, "trainer state") if path.is_file() else None


# ---------------------------------------------------------------------------- stamps

class Stamps:
    """out_dir/.stamps/STEP.json: what made a step's outputs, so a rerun can tell that they are
    complete and current. `key` hashes the command (less its volatile flags) and the previous
    step's digest; `outputs` records each file's sha256 (the demo's files are a few MB)."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = out_dir / ".stamps"

    def key(self, step: Step, upstream: str) -> str:
        cmd = drop_flags(step.argv[1:], step.volatile)
        return hashlib.sha256(json.dumps([cmd, upstream]).encode()).hexdigest()[:16]

    def read(self, step: Step) -> dict | None:
        path = self.dir / f"{step.name}.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    @staticmethod
    def hashes(step: Step) -> dict[str, str] | None:
        if not all(p.is_file() for p in step.outputs):
            return None
        return {p.name: sha256_file(p) for p in step.outputs}

    def complete(self, step: Step, key: str) -> dict | None:
        stamp = self.read(step)
        if stamp and stamp.get("key") == key and stamp.get("complete") and stamp.get("outputs") == self.hashes(step):
            return stamp
        return None

    def write(self, step: Step, key: str, complete: bool, extra: dict | None = None) -> str:
        hashes = self.hashes(step) if complete else None
        digest = hashlib.sha256(json.dumps([key, hashes, extra]).encode()).hexdigest()[:16]
        atomic_write_json(self.dir / f"{step.name}.json", {
            "key": key, "complete": complete, "digest": digest, "command": show_cmd(step.argv)[2:],
            "outputs": hashes, "seconds": round(step.seconds, 1), **(extra or {})})
        return digest


# ---------------------------------------------------------------------------- the steps

@dataclass
class Paths:
    out: Path

    def __post_init__(self) -> None:
        o = self.out = Path(os.path.abspath(self.out))
        self.chat, self.heldout = o / "data" / "demo_chat.jsonl", o / "data" / "demo_heldout.jsonl"
        self.clean = o / "clean" / "demo_chat.txt"
        self.tokens = o / "tokens"
        self.bin, self.gz = self.tokens / "tokens_bpe.bin", self.tokens / "tokens_bpe.bin.gz"
        self.tokenizer, self.metadata = self.tokens / "bpe_tokenizer.json", self.tokens / "tokens_bpe_metadata.json"
        self.ckdir = o / "checkpoints"
        self.results_json, self.results_md = o / "results.json", o / "results.md"


def build_steps(paths: Paths, scale: Scale, minutes: float, seed: int) -> list[Step]:
    p, s = paths, scale
    py = "python"
    return [
        Step("corpus", "write the embedded conversational corpus and its held-out questions",
             [py, script("sample_data.py"), "--out", str(p.chat), "--heldout_out", str(p.heldout),
              "--seed", str(seed), "--size_mb", f"{s.size_mb:g}"], [p.chat, p.heldout]),
        Step("clean", "clean, normalise and deduplicate it; render each conversation as one document",
             [py, script("dataset_cleaner.py"), "--input", str(p.chat), "--output", str(p.clean)],
             [p.clean]),
        Step("tokenize", "train a byte-level BPE tokenizer here and pre-tokenize to a .bin (+ .gz for Drive)",
             [py, script("tokenize_local_bpe.py"), "--input", str(p.clean), "--vocab_size", str(s.vocab_size),
              "--compress", "--output_dir", str(p.tokens)], [p.bin, p.gz, p.tokenizer, p.metadata]),
        Step("train", f"train a small GPT-2 on the CPU ({s.epochs} epochs, at most {minutes:g} minutes; "
                      f"rerun to resume)",
             [py, script("train_colab_mmap.py"), "--bin_file", str(p.bin), "--tokenizer_file",
              str(p.tokenizer), "--metadata_file", str(p.metadata), *s.model,
              "--batch_size", str(s.batch_size), "--epochs", str(s.epochs), "--lr", f"{s.lr:g}",
              "--val_fraction", "0.02", "--eval_every_steps", "0",
              "--max_minutes", f"{minutes:g}", "--save_every_minutes", "1", "--resume", "auto",
              "--checkpoint_dir", str(p.ckdir)],
             [p.ckdir / "latest", p.ckdir / "metrics.jsonl"], volatile=("--max_minutes",)),
        *[Step(f"generate{i + 1}", f"answer the seed's prompt {prompt!r} greedily",
               [py, script("generate.py"), "--checkpoint_dir", str(p.ckdir), "--prompt", prompt,
                "--max_new_tokens", str(s.max_new_tokens), "--temperature", "0"], [], capture=True)
          for i, (prompt, _) in enumerate(seed_prompts())],
    ]


def seed_prompts() -> tuple[tuple[str, str], ...]:
    from sample_data import SEED_PROMPTS
    return SEED_PROMPTS


def training_done(paths: Paths, scale: Scale) -> tuple[bool, dict | None]:
    state = latest_state(paths.ckdir)
    return (state is not None and state.get("epoch", 0) >= scale.epochs), state


def run_command(step: Step) -> None:
    """Run the step's command; Ctrl-C lets the child finish (the trainer saves before it exits)."""
    argv = [sys.executable, *step.argv[1:]]
    say(show_cmd(step.argv))
    t0 = time.time()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE if step.capture else stderr_fd(), text=step.capture)
    interrupted = False
    while True:
        try:
            out, _ = proc.communicate()
            break
        except KeyboardInterrupt:
            interrupted = True
            say("\ninterrupt: waiting for the step to stop cleanly (the trainer saves a checkpoint first)")
    step.seconds = time.time() - t0
    if interrupted or proc.returncode in (130, -2):
        raise KeyboardInterrupt
    if proc.returncode != 0:
        raise UserError(f"step '{step.name}' failed (exit {proc.returncode}): {show_cmd(step.argv)[2:]}; "
                        f"fix the error printed above and run the demo again (finished steps are kept)")
    step.stdout = (out or "").strip() if step.capture else ""


def describe_outputs(step: Step, paths: Paths) -> None:
    if step.name == "train":
        state = latest_state(paths.ckdir)
        if state:
            val, bpb = state.get("val_loss"), state.get("val_bpb")
            say(f"  made {show_path(paths.ckdir)}/latest -> step_{state['step']:08d}: step {state['step']:,}, "
                f"epoch {state['epoch']:g}, train loss {state['train_loss']:.4f}, "
                f"val loss {'n/a' if val is None else f'{val:.4f}'}, val bpb {'n/a' if bpb is None else f'{bpb:.4f}'}")
        for extra in ("metrics.jsonl", "loss_curve.png"):
            f = paths.ckdir / extra
            if f.is_file():
                say(f"  made {show_path(f)} ({human_size(f.stat().st_size)})")
        return
    for f in step.outputs:
        say(f"  made {show_path(f)} ({human_size(f.stat().st_size)})")
    if step.name == "tokenize":
        meta = read_json(paths.metadata, "token metadata")
        say(f"  {meta['num_tokens']:,} tokens of a {meta['vocab_size']:,}-token vocabulary, "
            f"{meta['num_documents']:,} documents")


def run_steps(steps: list[Step], paths: Paths, scale: Scale, force: bool) -> None:
    stamps = Stamps(paths.out)
    upstream = ""
    n = len(steps) + 1
    for i, step in enumerate(steps, 1):
        key = stamps.key(step, upstream)
        say(f"\n[{i}/{n}] {step.name}: {step.title}")
        stamp = None if force else stamps.complete(step, key)
        if step.name == "train" and stamp is not None and not training_done(paths, scale)[0]:
            stamp = None
        if stamp is not None:
            step.skipped, step.seconds = True, stamp.get("seconds", 0.0)
            step.stdout = stamp.get("stdout", "")
            stamp_file = show_path(stamps.dir / f"{step.name}.json")
            say(f"  up to date, skipped ({stamp_file} matches): {show_cmd(step.argv)}")
            upstream = stamp["digest"]
            continue
        before = 0.0  # seconds spent on this training in earlier, interrupted runs
        if step.name == "train":
            old = stamps.read(step)
            if paths.ckdir.exists() and old is not None and (old.get("key") != key or force):
                why = "--force" if force else "the training settings or data changed"
                say(f"  {why}: removing the old {show_path(paths.ckdir)} to train afresh")
                shutil.rmtree(paths.ckdir)
            elif latest_state(paths.ckdir):
                say(f"  resuming from {show_path(paths.ckdir)}/latest")
                before = old.get("seconds", 0.0) if old is not None and old.get("key") == key else 0.0
            stamps.write(step, key, complete=False)  # the checkpoints now belong to this command
        try:
            run_command(step)
        finally:
            step.seconds += before
            if step.name == "train" and step.seconds:
                stamps.write(step, key, complete=False)
        if step.name == "train":
            done, state = training_done(paths, scale)
            if not done:
                at = f"step {state['step']:,}, epoch {state['epoch']:g}" if state else "no checkpoint yet"
                step.note = (f"training stopped at the {step.argv[step.argv.index('--max_minutes') + 1]}-minute "
                             f"limit ({at} of {scale.epochs} epochs); run the demo again to continue it")
                say(f"  {step.note}")
                if state is None:
                    raise UserError(f"training saved no checkpoint in {show_path(paths.ckdir)}: raise --minutes")
        if step.capture:
            say(f"  -> {step.stdout}")
        else:
            describe_outputs(step, paths)
        if step.name == "train" and step.note:
            upstream = "unfinished-" + str(latest_state(paths.ckdir)["step"])
            continue
        # a generate step keeps its answer, so a rerun can show it without loading the model
        upstream = stamps.write(step, key, complete=True, extra={"stdout": step.stdout} if step.capture else None)
    steps[-1].digest = upstream


# ---------------------------------------------------------------------------- evaluation

def load_seed_snippet(ckdir: Path):
    """The seed README's generation snippet, with the config read from the checkpoint."""
    import torch

    from common import resolve_checkpoint_dir
    from model import TransformerLanguageModel
    from tokenizer_bpe import BPETokenizer

    folder = resolve_checkpoint_dir(ckdir)
    model = TransformerLanguageModel(**json.loads((folder / "config.json").read_text()))
    model.load_state_dict(torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True))
    model.eval()
    tokenizer = BPETokenizer()
    tokenizer.load(folder / "tokenizer.json")
    return model, tokenizer, folder


def pick_heldout(items: list, limit: int) -> list:
    """All items, or `limit` of them spread evenly over the file (so every kind is asked)."""
    if not limit or limit >= len(items):
        return items
    return [items[round(i * (len(items) - 1) / max(1, limit - 1))] for i in range(limit)]


def evaluate(paths: Paths, scale: Scale, steps: list[Step], upstream: str, force: bool) -> dict:
    """The last step: the held-out questions through generate_text; cached in results.json."""
    n = len(steps) + 1
    say(f"\n[{n}/{n}] evaluate: the seed's snippet (TransformerLanguageModel, BPETokenizer, generate_text) "
        f"on the held-out questions")
    if not force and paths.results_json.is_file():
        old = read_json(paths.results_json, "demo results")
        if old.get("upstream") == upstream:
            say(f"  up to date, skipped ({show_path(paths.results_json)} matches the checkpoint)")
            return {**old, "reused": True}
    from generate import generate_text
    from demo_heldout import load_heldout, score_answer, summarize_scores

    t0 = time.time()
    model, tok, folder = load_seed_snippet(paths.ckdir)
    items = pick_heldout(load_heldout(paths.heldout), scale.heldout_limit)
    preds: list[str] = []
    from tqdm import tqdm
    for i in tqdm(range(0, len(items), 32), desc="held-out", unit="batch", file=sys.stderr):
        preds += generate_text(model, tok, [it.prompt for it in items[i:i + 32]],
                               max_new_tokens=scale.max_new_tokens, temperature=0)
    snippet = [generate_text(model, tok, prompt, max_new_tokens=scale.max_new_tokens, temperature=0)
               for prompt, _ in seed_prompts()]
    seed_steps = [s for s in steps if s.capture]
    agree = same_answers(snippet, [s.stdout for s in seed_steps])
    state = read_json(folder / "trainer_state.json", "trainer state")
    config = read_json(folder / "config.json", "model config")
    meta = read_json(paths.metadata, "token metadata")
    table = []
    for (prompt, answer), key, s in zip(seed_prompts(), seed_keys(), seed_steps):
        verdict = "exact" if s.stdout == answer else ("correct" if score_answer(key, s.stdout) else "wrong")
        table.append({"prompt": prompt, "seed": answer, "output": s.stdout, "verdict": verdict})
    examples: dict[str, dict] = {}  # the first right and the first wrong answer of each kind/split
    for it, pred in zip(items, preds):
        ok = score_answer(it.expected, pred)
        examples.setdefault(f"{it.kind}/{it.split}/{'right' if ok else 'wrong'}",
                            {"prompt": it.prompt, "expected": it.expected, "output": pred, "correct": ok})
    metrics = [json.loads(line) for line in (paths.ckdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    tps = [m["tokens_per_sec"] for m in metrics if m.get("tokens_per_sec")]
    results = {
        "upstream": upstream, "checkpoint": str(folder), "seed_table": table, "generate_py_agrees": agree,
        "heldout": summarize_scores(items, preds), "heldout_file": str(paths.heldout),
        "examples": [examples[k] for k in sorted(examples)],
        "train": {"step": state["step"], "epoch": state["epoch"], "tokens_seen": state["tokens_seen"],
                  "train_loss": state["train_loss"], "val_loss": state.get("val_loss"), "val_bpb": state.get("val_bpb"),
                  "wall_time_s": state["wall_time_s"], "dtype": state.get("dtype"),
                  "tokens_per_sec": round(sum(tps[-20:]) / len(tps[-20:])) if tps else None},
        "model": {**config, "parameters": model.num_parameters()},
        "data": {"tokens": meta["num_tokens"], "vocab_size": meta["vocab_size"], "documents": meta["num_documents"]},
        "loss_curve": str(paths.ckdir / "loss_curve.png") if (paths.ckdir / "loss_curve.png").is_file() else None,
        "eval_seconds": round(time.time() - t0, 1),
    }
    atomic_write_json(paths.results_json, results)
    results["reused"] = False
    say(f"  {len(items)} held-out questions answered in {results['eval_seconds']:.0f} s; "
        f"made {show_path(paths.results_json)}")
    return results


def same_answers(snippet: Sequence[str], generate_py: Sequence[str]) -> bool:
    """Whether the seed's snippet and generate.py gave the same text for every seed prompt. False on
    nothing to compare, or on lists of different lengths: a missing answer is no agreement."""
    return len(snippet) == len(generate_py) > 0 and all(a == b for a, b in zip(snippet, generate_py))


def seed_keys() -> list[str]:
    """What a correct answer to each seed prompt must contain (demo_heldout.score_answer keys)."""
    from sample_data import FEATURED, load_facts
    capitals, definitions = load_facts()
    return [next(c.capital for c in capitals if c.country == FEATURED["capital"].name),
            next(d.key for d in definitions if d.term == FEATURED["definition"].name)]


# ---------------------------------------------------------------------------- the report

def report(results: dict, steps: list[Step], run_seconds: float) -> str:
    r, t, m = results, results["train"], results["model"]
    params = m["parameters"]
    scale_note = (f"{params / 1e6:.2f}M parameters ({m['n_layer']} layers x {m['n_embd']}, "
                  f"vocab {m['vocab_size']:,}), {t['epoch']:g} epoch{'s' * (t['epoch'] != 1)}, "
                  f"{t['wall_time_s'] / 60:.1f} min of training on this machine")
    lines = ["## Results of `make demo`", "",
             f"Model: {scale_note}.", "",
             f"| Prompt | Seed's output ({SEED_RESULTS}) | This demo's output (greedy) | |",
             "|--------|--------|--------|---|"]
    for row in r["seed_table"]:
        lines.append(f"| \"{row['prompt']}\" | \"{row['seed']}\" | \"{_cell(row['output'])}\" | {row['verdict']} |")
    h = r["heldout"]
    lines += ["", f"Held-out questions (never in training; {show_path(r['heldout_file'])}): "
                  f"**{h['all']['correct']}/{h['all']['total']} = {100 * h['all']['accuracy']:.1f}%** correct", "",
              "| Kind / split | Correct | Accuracy |", "|---|---|---|"]
    for name, g in h.items():
        if name != "all":
            lines.append(f"| {name} | {g['correct']}/{g['total']} | {100 * g['accuracy']:.1f}% |")
    lines += ["", "Examples (the first right and wrong answer of each kind):", "",
              "| Held-out question | Output (greedy) | Expected | |", "|---|---|---|---|"]
    lines += [f"| {_cell(e['prompt'])} | {_cell(e['output'])} | {_cell(e['expected'])} | "
              f"{'right' if e['correct'] else 'wrong'} |" for e in r["examples"]]
    total = sum(s.seconds for s in steps) + r["eval_seconds"]
    val = f"{t['val_loss']:.4f}" if t["val_loss"] is not None else "n/a"
    bpb = f", {t['val_bpb']:.4f} bits per byte" if t.get("val_bpb") is not None else ""
    tps = f", {t['tokens_per_sec']:,} tokens/s" if t["tokens_per_sec"] else ""
    lines += ["", f"Final loss: train {t['train_loss']:.4f}, validation {val}{bpb} (step {t['step']:,}, "
                  f"{t['tokens_seen']:,} tokens seen, {t['dtype']}{tps}).",
              "Loss curve: " + (show_path(r["loss_curve"]) if r["loss_curve"] else
                                "not drawn (install matplotlib: pip install -r requirements-extra.txt)"),
              f"Checkpoint: {show_path(r['checkpoint'])} (generate.py and the seed's snippet "
              f"{'give the same answers' if r['generate_py_agrees'] else 'DISAGREE'}).",
              "", "| Step | Seconds | |", "|---|---|---|"]
    for s in steps:
        lines.append(f"| {s.name} | {s.seconds:.1f} | {'reused' if s.skipped else 'ran'} |")
    lines += [f"| evaluate | {r['eval_seconds']:.1f} | {'reused' if r.get('reused') else 'ran'} |", "",
              f"Time to build everything: {total / 60:.1f} min; this run: {run_seconds / 60:.1f} min."]
    for s in steps:
        if s.note:
            lines += ["", f"Note: {s.note}."]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------------------- main

def main(argv: Sequence[str] | None = None) -> int:
    p = ArgParser(description="The seed's journey end to end on an embedded corpus: "
                                            "clean -> tokenize -> train -> generate (`make demo`).")
    p.add_argument("--out_dir", default="demo_out", help="everything the demo makes goes here (default demo_out)")
    p.add_argument("--minutes", type=float, default=None,
                   help=f"training time limit per run (default {FULL.minutes:g}; --quick {QUICK.minutes:g}); "
                        f"rerun to continue training")
    p.add_argument("--quick", action="store_true", help="tiny scale, seconds: checks the pipeline, not the answers")
    p.add_argument("--seed", type=int, default=0, help="corpus seed")
    p.add_argument("--force", action="store_true", help="redo every step, even those that are up to date")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    scale = QUICK if args.quick else FULL
    minutes = scale.minutes if args.minutes is None else args.minutes
    if minutes <= 0:
        raise UserError(f"--minutes {minutes:g}: must be above 0; try --minutes {FULL.minutes:g}")
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out_dir {out} is a file; pass a folder")
    paths = Paths(out)
    t0 = time.time()
    steps = build_steps(paths, scale, minutes, args.seed)
    say(f"demo: everything goes to {show_path(out)}/ ({'quick, tiny scale' if args.quick else 'full scale'}); "
        f"rerun to reuse it and to resume training")
    try:
        run_steps(steps, paths, scale, args.force)
    except KeyboardInterrupt:
        say(f"\ninterrupted: what is finished is kept in {show_path(out)}/; run the same command again to "
            f"resume (training continues from {show_path(paths.ckdir)}/latest)")
        return 130
    results = evaluate(paths, scale, steps, steps[-1].digest, args.force)
    text = report(results, steps, time.time() - t0)
    atomic_write_text(paths.results_md, text)
    print("\n" + text, end="", flush=True)
    say(f"report saved to {show_path(paths.results_md)}")
    return 0


if __name__ == "__main__":
    cli_main(main)
