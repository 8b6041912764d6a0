"""tokenize_local_bpe.py throughput and memory on a generated corpus (>= 200 MB; --quick ~30 MB).

    flock /tmp/cpu.lock python bench/bench_tokenize.py           # writes bench/results/tokenize.md
    flock /tmp/cpu.lock python bench/bench_tokenize.py --quick   # prints only

Steps, each its own process (peak RSS is that process's ru_maxrss); 3 and 4 interleaved, best of --repeat:
  1. train a 32k BPE with the CLI on a --train_sample_bytes sample (HF trainer);
  2. single-thread HF `encode` on the first 16 MB (one document at a time);
  3. the baseline: raw HF `encode_batch` on all cores, documents in batches of 8 MB, timing only
     the encode calls (no reading, no writing);
  4. our pipeline end to end (read, encode, write .bin and .bin.gz) with --encoder hf and with
     --encoder tiktoken, reusing the tokenizer of step 1; their .bin files must be identical;
  5. (full run) tiktoken on 1 GB: five links to the corpus, for peak RSS at scale;
  6. (full run) the BPE trainer's peak RSS on 100 MB of heavy-tailed text (the default sample).
MB/s are of input text (decimal MB); ratios are against step 3 of the same run.

The corpus is cleaner output ("doc<|endoftext|>doc<|endoftext|>..."): ~60% prose from a Zipfian
lexicon of 60k synthetic words plus common English words, numbers, contractions and ~3% non-ASCII
words (accents, Cyrillic, CJK, emoji); ~30% chat documents (<|user|>/<|assistant|> turns); ~10%
list- and code-like documents with indentation and \\r\\n line ends. It is cached in /tmp.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "tokenize.md"
EOT = "<|endoftext|>"


def make_corpus(path: Path, size_mb: float, seed: int = 0) -> None:
    rng = random.Random(seed)
    syll = ["ka", "lo", "mi", "ten", "ra", "shi", "on", "ve", "du", "par", "el", "sto", "ne", "li", "gar", "tu",
            "an", "ber", "co", "dis", "er", "fi", "gen", "ho", "in", "jo", "ment", "tion", "ly", "ing", "pre", "st"]
    common = ("the of and to a in is that it for was on are as with his they at be this from have or by one had "
              "not but what all were when we there can an your which their said if do will each about how up out "
              "them then she many some so these would other into has more her two like him see time could no make "
              "than first been its who now people my made over did down only way find use may water long little "
              "very after words called just where most know get through back much before go good new write our used "
              "me man too any day same right look think also around another came come work three word must because "
              "does part even place well such here take why things help put years different away again off went old "
              "number great tell men say small every found still between name should home big give air line set own "
              "under read last never us left end along while might next sound below saw something thought both few "
              "those always looked show large often together asked house don't world going want school important "
              "until form food keep children feet land side without boy once animals life enough took sometimes "
              "four head above kind began almost live page got earth need far hand high year mother light parts "
              "country father let night following picture being study second eyes soon times story boys since white "
              "days paper hard near sentence better best across during today others however sure means knew it's try "
              "told young miles sun ways thing whole hear example heard several change answer room sea against top "
              "turned learn point city play toward five using himself usually").split()
    exotic = ["café", "naïve", "über", "façade", "São", "Zürich", "москва", "привет", "東京", "日本語", "中文",
              "한국어", "αβγ", "שלום", "مرحبا", "🙂", "🚀", "👩‍💻", "e\u0301", "∑", "½", "№"]
    lexicon = common + ["".join(rng.choices(syll, k=rng.choice((1, 2, 2, 3, 3, 4)))) for _ in range(60000)]
    weights = [1.0 / (i + 10) for i in range(len(lexicon))]
    cum, total = [], 0.0
    for w in weights:
        total += w
        cum.append(total)

    def words(n: int) -> list[str]:
        out = rng.choices(lexicon, cum_weights=cum, k=n)
        for i in range(n):
            r = rng.random()
            if r < 0.03:
                out[i] = rng.choice(exotic)
            elif r < 0.05:
                out[i] = str(rng.choice((rng.randint(0, 100), rng.randint(1800, 2030), rng.randint(0, 10**6))))
        return out

    def sentence() -> str:
        w = words(rng.randint(4, 24))
        w[0] = w[0].capitalize()
        if rng.random() < 0.3:
            w[rng.randrange(len(w) - 1)] += rng.choice((",", ",", ";", ":"))
        return " ".join(w) + rng.choice(".....!?")

    def prose() -> str:
        return "\n\n".join(" ".join(sentence() for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 6)))

    def chat() -> str:
        turns = []
        for _ in range(rng.randint(1, 4)):
            turns.append(f"<|user|>{sentence()}\n")
            turns.append(f"<|assistant|>{' '.join(sentence() for _ in range(rng.randint(1, 5)))}\n")
        return "".join(turns)

    def listing() -> str:
        nl = rng.choice(("\n", "\r\n"))
        lines = []
        for i in range(rng.randint(3, 20)):
            indent = " " * (4 * rng.randint(0, 3))
            bullet = rng.choice(("-", "*", f"{i + 1}.", "def", "x ="))
            lines.append(f"{indent}{bullet} {' '.join(words(rng.randint(1, 8)))}")
        return nl.join(lines) + nl

    target, size = int(size_mb * 1e6), 0
    tmp = path.with_suffix(".partial")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        while size < target:
            docs = []
            for _ in range(200):
                r = rng.random()
                docs.append((prose() if r < 0.6 else chat() if r < 0.9 else listing()) + EOT)
            block = "".join(docs)
            f.write(block)
            size += len(block.encode("utf-8"))
    tmp.replace(path)


def make_heavy_tailed(path: Path, size_mb: float, seed: int = 0) -> None:
    """Worst case for the BPE trainer's memory: a Zipf draw over 3M random letter strings, so a
    100 MB sample holds ~1.4M distinct words (web text of that size has fewer)."""
    rng = random.Random(seed)
    lexicon = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 12))) for _ in range(3_000_000)]
    cum, total = [], 0.0
    for i in range(len(lexicon)):
        total += 1.0 / (i + 20)
        cum.append(total)
    tmp = path.with_suffix(".partial")
    with open(tmp, "w", encoding="utf-8") as f:
        size = 0
        while size < size_mb * 1e6:
            block = " ".join(rng.choices(lexicon, cum_weights=cum, k=50_000)) + "." + EOT
            f.write(block)
            size += len(block)
    tmp.replace(path)


# Each measurement runs in its own process and prints one JSON line: {"seconds": .., "rss_mb": ..}.
_SINGLE = r"""
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from tokenizers import Tokenizer
tok = Tokenizer.from_file({tok!r})
data = open({corpus!r}, "rb").read({nbytes}).decode("utf-8", "ignore")
docs = [d + {eot!r} for d in data.split({eot!r})[:-1]]
t = time.perf_counter()
n = sum(len(tok.encode(d, add_special_tokens=False).ids) for d in docs)
dt = time.perf_counter() - t
print(json.dumps({{"seconds": dt, "bytes": sum(len(d.encode()) for d in docs), "tokens": n,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

_BATCH = r"""
import json, resource, sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file({tok!r})
eot = {eot!r}
spent, n, carry = 0.0, 0, ""
with open({corpus!r}, "rb") as f:
    while raw := f.read(8 << 20):
        text = carry + raw.decode("utf-8", "ignore")
        docs = text.split(eot)
        carry = docs.pop()
        docs = [d + eot for d in docs]
        t = time.perf_counter()
        n += sum(len(e.ids) for e in tok.encode_batch(docs, add_special_tokens=False))
        spent += time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": spent, "tokens": n, "rss_mb": rss}}))
"""

_CLI = r"""
import json, resource, runpy, sys, time
sys.argv = {argv!r}
sys.path.insert(0, {repo!r})
t = time.perf_counter()
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as e:
    if e.code:
        raise
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": time.perf_counter() - t, "rss_mb": rss}}))
"""


def run_json(code: str, label: str) -> dict:
    print(f"[bench] {label} ...", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{label} failed:\n{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    result = json.loads(lines[-1])
    result["log"] = proc.stderr
    return result


def cli(args: list[str], label: str) -> dict:
    script = str(REPO / "tokenize_local_bpe.py")
    return run_json(_CLI.format(argv=[script] + args, repo=str(REPO), script=script), label)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="~30 MB corpus, prints only")
    p.add_argument("--size_mb", type=float, default=None, help="corpus size (default 200, quick 30)")
    p.add_argument("--sample", default=None, help="--train_sample_bytes for step 1 (default 40M, quick 10M)")
    p.add_argument("--single_mb", type=int, default=16, help="MB for the single-thread encode (default 16)")
    p.add_argument("--repeat", type=int, default=2, help="runs of each throughput measurement; the best counts")
    p.add_argument("--big_copies", type=int, default=None,
                   help="also run tiktoken on this many links to the corpus (default 5 = 1 GB; quick 0)")
    p.add_argument("--train_rss_mb", type=float, default=None,
                   help="also train on this many MB of heavy-tailed text, for the trainer's peak RSS "
                        "(default 100; quick 0)")
    args = p.parse_args(argv)
    size = args.size_mb or (30 if args.quick else 200)
    sample = args.sample or ("10M" if args.quick else "40M")
    corpus = Path(tempfile.gettempdir()) / f"bench_tokenize_corpus_{size:g}MB.txt"
    if not corpus.exists():
        print(f"[bench] generating {corpus} ...", file=sys.stderr, flush=True)
        t = time.time()
        make_corpus(corpus, size)
        print(f"[bench] generated in {time.time() - t:.0f}s", file=sys.stderr)
    nbytes = corpus.stat().st_size
    mb = nbytes / 1e6
    work = Path(tempfile.mkdtemp(prefix="bench_tokenize_"))
    started = time.time()

    train = cli(["--input", str(corpus), "--vocab_size", "32000", "--train_sample_bytes", sample,
                 "--output_dir", str(work / "train"), "--encoder", "tiktoken"], "train 32k BPE + tiktoken run")
    tok = str(work / "train" / "bpe_tokenizer.json")
    train_line = next(ln for ln in train["log"].splitlines() if ln.startswith("trained in"))
    single = run_json(_SINGLE.format(repo=str(REPO), tok=tok, corpus=str(corpus), nbytes=args.single_mb << 20,
                                     eot=EOT), "single-thread HF encode")
    # the machine is shared: run the three throughput measurements interleaved, keep each one's best
    batch, ours = None, {"hf": None, "tiktoken": None}
    for r in range(args.repeat):
        b = run_json(_BATCH.format(tok=tok, corpus=str(corpus), eot=EOT), f"raw HF encode_batch ({r + 1})")
        batch = b if batch is None or b["seconds"] < batch["seconds"] else batch
        for enc in ours:
            o = cli(["--input", str(corpus), "--tokenizer", tok, "--compress", "--output_dir", str(work / enc),
                     "--encoder", enc], f"pipeline --encoder {enc} ({r + 1})")
            ours[enc] = o if ours[enc] is None or o["seconds"] < ours[enc]["seconds"] else ours[enc]
    same = (work / "hf" / "tokens_bpe.bin").read_bytes() == (work / "tiktoken" / "tokens_bpe.bin").read_bytes()
    meta = json.loads((work / "tiktoken" / "tokens_bpe_metadata.json").read_text())
    bin_mb = (work / "tiktoken" / "tokens_bpe.bin").stat().st_size / 1e6
    gz_mb = (work / "tiktoken" / "tokens_bpe.bin.gz").stat().st_size / 1e6
    for enc in ours:
        shutil.rmtree(work / enc)

    base = mb / batch["seconds"]
    rows = [("single-thread HF `encode` (first %d MB)" % args.single_mb, single["bytes"] / 1e6 / single["seconds"],
             single["rss_mb"], "encode only"),
            ("raw HF `encode_batch` (baseline)", base, batch["rss_mb"], "encode only"),
            ("pipeline `--encoder hf`", mb / ours["hf"]["seconds"], ours["hf"]["rss_mb"], "end to end, .bin + .gz"),
            ("pipeline `--encoder tiktoken`", mb / ours["tiktoken"]["seconds"], ours["tiktoken"]["rss_mb"],
             "end to end, .bin + .gz")]
    copies = args.big_copies if args.big_copies is not None else (0 if args.quick else 5)
    if copies:
        links = []
        for i in range(copies):  # distinct names: the CLI reads each as its own file
            links.append(work / f"corpus_{i}.txt")
            links[-1].symlink_to(corpus)
        big = cli(["--input", *map(str, links), "--tokenizer", tok, "--compress", "--output_dir", str(work / "big"),
                   "--encoder", "tiktoken"], f"pipeline --encoder tiktoken on {copies} x {mb:.0f} MB")
        shutil.rmtree(work / "big")
        rows.append((f"pipeline `--encoder tiktoken`, {copies * mb / 1e3:.1f} GB ({copies} inputs)",
                     copies * mb / big["seconds"], big["rss_mb"], "end to end, .bin + .gz"))
    lines = ["| what | MB/s | vs encode_batch | peak RSS MB | 12 GB takes | measures |", "|---|---|---|---|---|---|"]
    for name, rate, rss, what in rows:
        lines.append(f"| {name} | {rate:.1f} | {rate / base:.2f}x | {rss:,.0f} | {12e3 / rate / 60:.0f} min | {what} |")
    cmd = "flock /tmp/cpu.lock python bench/bench_tokenize.py" + (" --quick" if args.quick else "")
    notes = [f"Corpus: {mb:,.0f} MB generated ({meta['num_documents']:,} documents), {meta['num_tokens']:,} tokens "
             f"(vocabulary {meta['vocab_size']:,}, {meta['dtype']}): .bin {bin_mb:,.0f} MB, .bin.gz {gz_mb:,.0f} MB "
             f"(gzip level 1).",
             f"BPE training on a {sample} sample of it (the CLI's step before encoding; that run also encoded the "
             f"corpus with tiktoken, without .gz): {train_line.removeprefix('trained in ').split(':')[0]}, peak RSS "
             f"{train['rss_mb']:,.0f} MB for the whole run.",
             f"`--encoder hf` and `--encoder tiktoken` wrote identical .bin files: {same}.",
             f"Best of {args.repeat} interleaved runs each (the 2 cores are shared with other work); pipeline "
             f"times are the whole command: start-up, tokenizer load and the tiktoken conversion check included."]
    heavy_mb = args.train_rss_mb if args.train_rss_mb is not None else (0 if args.quick else 100)
    if heavy_mb:
        heavy = Path(tempfile.gettempdir()) / f"bench_tokenize_heavy_{heavy_mb:g}MB.txt"
        if not heavy.exists():
            print(f"[bench] generating {heavy} ...", file=sys.stderr, flush=True)
            make_heavy_tailed(heavy, heavy_mb)
        text = heavy.read_text(encoding="utf-8")
        distinct = len(set(text.replace(EOT, " ").split()))
        del text
        rss = cli(["--input", str(heavy), "--vocab_size", "32000", "--train_sample_bytes", f"{heavy_mb:g}M",
                   "--output_dir", str(work / "heavy")], f"train 32k BPE on {heavy_mb:g} MB heavy-tailed text")
        line = next(ln for ln in rss["log"].splitlines() if ln.startswith("trained in"))
        notes.append(f"BPE trainer memory, worst case: {heavy_mb:g} MB of heavy-tailed text with {distinct:,} distinct "
                     f"words (Zipf over 3M random strings; the default --train_sample_bytes is 100M): trained in "
                     f"{line.removeprefix('trained in ').split(':')[0]}, peak RSS {rss['rss_mb']:,.0f} MB for the "
                     f"whole run (~{rss['rss_mb'] * 1024 / distinct:.1f} KB per distinct word).")
    notes.append(f"Bench wall time {time.time() - started:.0f}s.")
    shutil.rmtree(work)
    table = "\n".join(lines)
    print(table)
    print("\n".join(notes))
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            "# Tokenization throughput (tokenize_local_bpe.py)\n\n"
            f"Machine: 2-core AMD EPYC CPU, torch 2.13.0 ({platform.python_implementation()} "
            f"{platform.python_version()}); date 2026-11-27.\nCommand: `{cmd}`\n\n{table}\n\n"
            + "\n".join(f"- {n}" for n in notes) + "\n")
        print(f"wrote {RESULTS}", file=sys.stderr)
    if not same:
        print("ERROR: hf and tiktoken .bin differ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
