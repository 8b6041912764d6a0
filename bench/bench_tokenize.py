"""tokenize_local_bpe.py throughput and memory on a generated corpus (>= 200 MB; --quick ~30 MB).

    flock /tmp/cpu.lock python bench/bench_tokenize.py           # writes bench/results/tokenize.md
    flock /tmp/cpu.lock python bench/bench_tokenize.py --quick   # prints only
    flock /tmp/cpu.lock python bench/bench_tokenize.py --memory --memory_text TEXT   # RSS vs input read

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

--memory: RSS against input read over a 2.2 GB web-like corpus built from the sentences of TEXT
(real prose, .txt or .txt.gz; default: the generated corpus), for the pipeline before the fix of
its growing RSS (BASELINE_COMMIT, from git; also with the fix's allocator setting given through the
environment) and as it is now, in one run (~15 min on 2 cores).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "tokenize.md"
RESULTS_TITLE = "# Tokenization (tokenize_local_bpe.py)"
EOT = "<|endoftext|>"
BASELINE_COMMIT = "30aaa95"  # the pipeline whose RSS grew with the input read
PIPELINE_FILES = ("tokenize_local_bpe.py", "corpus_stream.py", "token_writer.py", "tokenizer.py", "tokenizer_bpe.py",  # names then
                  "common.py")
MARKS_GB = (0.2, 0.5, 1.0, 1.5, 2.0)


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


def make_growing_corpus(source: Path, path: Path, size_bytes: int, seed: int = 0) -> None:
    """Web-like documents built from the sentences of `source` (UTF-8 text, .gz allowed) with the
    traits a real corpus has and a repeated text lacks: lengths heavy-tailed (Pareto, up to 8 MB),
    a new word in one sentence of two (the vocabulary of distinct words keeps growing: ~0.5M in
    100 MB), 10% in other alphabets, 8% CJK without spaces, 12% code with URLs, 2% with emoji."""
    with (gzip.open(source, "rt", encoding="utf-8") if source.suffix == ".gz" else open(source, encoding="utf-8")) as f:
        text = f.read()
    sentences = [s.replace("\n", " ") for s in re.split(r"(?<=[.!?\"”])\s+", text.replace(EOT, " "))
                 if 20 <= len(s) <= 600]
    words = sorted(set(re.findall(r"[A-Za-z]{3,}", text)))
    rng = random.Random(seed)
    lower = "abcdefghijklmnopqrstuvwxyz"
    alphabets = [str.maketrans(lower, "абвгдежзийклмнопрстуфхцчшщ"), str.maketrans(lower, "αβγδεζηθικλμνξοπρστυφχψωάέ"),
                 str.maketrans(lower, "ابتثجحخدذرزسشصضطظعغفقكلمنه"), str.maketrans(lower, "अआइईउऊऋएऐओऔकखगघङचछजझञटठडढण")]

    def new_word() -> str:  # the head of one word and the tail of another: mostly never seen before
        a, b = rng.choice(words), rng.choice(words)
        return a[:rng.randint(2, len(a))] + b[rng.randint(1, len(b) - 1):]

    def prose(n: int) -> str:
        out, size = [], 0
        while size < n:
            sentence = rng.choice(sentences)
            if rng.random() < 0.5:
                w = sentence.split(" ")
                w[rng.randrange(len(w))] = new_word()
                sentence = " ".join(w)
            out.append(sentence + ("\n\n" if rng.random() < 0.2 else ""))
            size += len(sentence) + 1
        return " ".join(out)

    def cjk(n: int) -> str:
        out: list[str] = []
        while len(out) < n:
            out += [chr(rng.randint(0x4E00, 0x5A00)) for _ in range(rng.randint(5, 40))] + [rng.choice("，。、！？")]
        return "".join(out)

    def code(n: int) -> str:
        lines, size = [], 0
        while size < n:
            line = (f"{' ' * 4 * rng.randint(0, 4)}{new_word()}_{rng.randint(0, 999)} = {rng.choice(words)}("
                    f"{rng.randint(0, 10**6)}, '{new_word()}')  # {new_word()}")
            if rng.random() < 0.05:
                line = f"https://{new_word().lower()}.example.com/{new_word()}/{rng.getrandbits(64):x}?q={new_word()}"
            lines.append(line)
            size += len(line) + 1
        return "\n".join(lines) + "\n"

    written = 0
    tmp = path.with_suffix(".partial")
    with open(tmp, "w", encoding="utf-8", newline="") as out:
        while written < size_bytes:
            docs = []
            for _ in range(500):
                n, r = int(min(8e6, 300 * rng.paretovariate(1.1))), rng.random()
                doc = prose(n) if r < 0.7 else prose(n).translate(rng.choice(alphabets)) if r < 0.8 \
                    else cjk(n // 3) if r < 0.88 else code(n)
                docs.append(doc + ("🙂 👩‍💻 🚀 " * rng.randint(1, 50) if rng.random() < 0.02 else "") + EOT)
            block = "".join(docs)
            out.write(block)
            written += len(block.encode("utf-8"))
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


def run_sampled(cmd: list[str], cwd: Path, corpus: Path, label: str, env: dict | None = None,
                every: float = 0.2) -> tuple[list, float, float]:
    """Run `cmd`; every `every` s read its RSS and peak RSS (VmRSS, VmHWM) from /proc and how far it
    has read `corpus` (the offset of its open file). Returns [(bytes read, RSS MB, peak MB)], the
    seconds it took and the CPU seconds it used (user + system, all threads)."""
    print(f"[bench] {label} ...", file=sys.stderr, flush=True)
    target = os.path.realpath(corpus)
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        rows: list[tuple[int, float, float]] = []
        while not (waited := os.wait4(proc.pid, os.WNOHANG))[0]:
            try:
                status = open(f"/proc/{proc.pid}/status").read()
                offset = 0
                for fd in os.listdir(f"/proc/{proc.pid}/fd"):
                    if os.readlink(f"/proc/{proc.pid}/fd/{fd}") == target:
                        offset = max(offset, int(open(f"/proc/{proc.pid}/fdinfo/{fd}").read().split()[1]))
            except OSError:  # the file descriptor closed while we read
                continue
            kb = {ln.split(":")[0]: int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("Vm")}
            if offset:
                rows.append((offset, kb["VmRSS"] / 1024, kb["VmHWM"] / 1024))
            time.sleep(every)
        seconds = time.perf_counter() - t
        _, code, usage = waited
        proc.returncode = os.waitstatus_to_exitcode(code)
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"{label} failed:\n{err.read()[-3000:]}")
    return rows, seconds, usage.ru_utime + usage.ru_stime


def at_mark(rows: list, gb: float) -> tuple[float, float] | None:
    """(RSS, peak RSS) at the first sample with `gb` GB read, None if the run never read that far."""
    return next(((rss, peak) for read, rss, peak in rows if read >= gb * 1e9), None)


def baseline_checkout(dest: Path) -> bool:
    """The pipeline's files as of BASELINE_COMMIT, into `dest`; False when git cannot give them."""
    dest.mkdir(parents=True)
    for name in PIPELINE_FILES:
        proc = subprocess.run(["git", "show", f"{BASELINE_COMMIT}:{name}"], cwd=REPO, capture_output=True)
        if proc.returncode != 0:
            return False
        (dest / name).write_bytes(proc.stdout)
    return True


def memory_bench(args: argparse.Namespace) -> int:
    """Before vs after on the same corpus and tokenizer: RSS at MARKS_GB of input read."""
    source = Path(args.memory_text) if args.memory_text else None
    if source is None:  # the throughput corpus generator's text, as sentences to rebuild from
        source = Path(tempfile.gettempdir()) / "bench_tokenize_corpus_30MB.txt"
        if not source.exists():
            make_corpus(source, 30)
    key = hashlib.sha256(f"{source.resolve()}:{source.stat().st_size}".encode()).hexdigest()[:8]
    corpus = Path(tempfile.gettempdir()) / f"bench_tokenize_growing_{args.memory_gb:g}GB_{key}.txt"
    if not corpus.exists():
        print(f"[bench] generating {corpus} from {source} ...", file=sys.stderr, flush=True)
        make_growing_corpus(source, corpus, int(args.memory_gb * 1e9))
    work = Path(tempfile.mkdtemp(prefix="bench_tokenize_memory_"))
    started = time.time()
    head = work / "head.txt"  # the tokenizer is trained on the first 50 MB
    with open(corpus, "rb") as f:
        data = f.read(50_000_000)
    head.write_bytes(data[:data.rfind(EOT.encode()) + len(EOT)])
    cli(["--input", str(head), "--vocab_size", "32000", "--output_dir", str(work / "tok")], "train 32k BPE on 50 MB")
    tok = work / "tok" / "bpe_tokenizer.json"
    runs = {}
    baseline = work / "baseline"
    # the cause, shown: the old code with glibc's mmap threshold set through the environment, as the fix does
    fixed_threshold = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "1048576"}
    versions = ([("before", baseline, None), ("before, threshold set", baseline, fixed_threshold)]
                if baseline_checkout(baseline) else []) + [("after", REPO, None)]
    for i, (name, code, env) in enumerate(versions):
        out = work / f"out_{i}"
        cmd = [sys.executable, str(code / "tokenize_local_bpe.py"), "--input", str(corpus), "--tokenizer", str(tok),
               "--compress", "--output_dir", str(out)]
        rows, seconds, cpu = run_sampled(cmd, code, corpus, f"tokenize {corpus.stat().st_size / 1e9:.1f} GB ({name})",
                                         env)
        meta = json.loads((out / "tokens_bpe_metadata.json").read_text())
        runs[name] = {"rows": rows, "rate": corpus.stat().st_size / 1e6 / seconds, "cpu": cpu,
                      "sha": meta["bin_sha256"]}
        shutil.rmtree(out)
    shutil.rmtree(work)
    lines = ["| input read | " + " | ".join(f"{n}: RSS MB | {n}: peak RSS MB" for n in runs) + " |",
             "|---|" + "---|---|" * len(runs)]
    for gb in MARKS_GB:
        cells = [at_mark(r["rows"], gb) for r in runs.values()]
        if all(cells):
            lines.append(f"| {gb:g} GB | " + " | ".join(f"{rss:,.0f} | {peak:,.0f}" for rss, peak in cells) + " |")
    notes = []
    lo, hi = MARKS_GB[0], MARKS_GB[-1]
    for name, r in runs.items():
        a, b = at_mark(r["rows"], lo), at_mark(r["rows"], hi)
        growth = f"{b[1] - a[1]:+,.0f} MB" if a and b else "not measured (corpus too small)"
        notes.append(f"{name}: peak RSS grew {growth} between {lo:g} and {hi:g} GB read; {r['rate']:.1f} MB/s "
                     f"end to end (whole command), {r['cpu']:,.0f} CPU seconds.")
    notes.append("MB/s follow the load of the shared machine; CPU seconds (user + system, from wait4) much less.")
    same = len({r["sha"] for r in runs.values()}) == 1
    notes.append(f"The {len(runs)} .bin files are identical (sha256): {same}.")
    notes.append(f"Bench wall time {time.time() - started:.0f}s.")
    table, cmd = "\n".join(lines), "flock /tmp/cpu.lock python bench/bench_tokenize.py --memory --memory_text TEXT"
    print(table + "\n" + "\n".join(notes))
    if args.memory_gb >= MARKS_GB[-1]:  # a shorter run only prints
        write_section("## Memory over a long run", (
            f"Machine: 2-core AMD EPYC CPU ({platform.python_implementation()} {platform.python_version()}). "
            f"Command: `{cmd}`\n\n"
            f"Corpus: {corpus.stat().st_size / 1e9:.1f} GB of web-like documents built by make_growing_corpus from "
            f"the sentences of TEXT, {args.memory_label or source.name}; tokenizer: a 32k BPE trained on its first "
            f"50 MB; `--compress`, tiktoken encoder, all cores. RSS and peak RSS (VmRSS, VmHWM) sampled every "
            f"0.2 s against the offset read in the input file. before = commit {BASELINE_COMMIT}; before, threshold "
            f"set = the same code run with MALLOC_MMAP_THRESHOLD_=1048576 in its environment, the setting "
            f"tokenize_local_bpe.keep_large_buffers_off_the_heap makes; after = this version.\n\n"
            f"{table}\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"))
    return 0 if same else 1


def write_section(heading: str, body: str) -> None:
    """Replace (or add) one `## ` section of RESULTS, keeping the others."""
    old = RESULTS.read_text() if RESULTS.exists() else RESULTS_TITLE + "\n"
    parts = re.split(r"(?m)^(?=## )", old)
    sections = {p.splitlines()[0]: p.rstrip() + "\n\n" for p in parts[1:]}
    sections[heading] = f"{heading}\n\n{body.rstrip()}\n\n"
    order = ["## Throughput", "## Memory over a long run"]
    text = RESULTS_TITLE + "\n\n" + "".join(sections[h] for h in sorted(sections, key=lambda h: (
        order.index(h) if h in order else len(order), h)))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text.rstrip() + "\n")
    print(f"wrote {RESULTS}", file=sys.stderr)


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
    p.add_argument("--memory", action="store_true",
                   help="instead: RSS against input read, before (commit %s) and after the fix" % BASELINE_COMMIT)
    p.add_argument("--memory_gb", type=float, default=2.2, help="--memory corpus size in GB (default 2.2)")
    p.add_argument("--memory_text", default=None,
                   help="--memory: real text (.txt or .txt.gz) whose sentences make the corpus (default: generated)")
    p.add_argument("--memory_label", default=None, help="--memory: what --memory_text is, for the results file")
    args = p.parse_args(argv)
    if args.memory:
        return memory_bench(args)
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
        write_section("## Throughput", (
            f"Machine: 2-core AMD EPYC CPU, torch 2.13.0 ({platform.python_implementation()} "
            f"{platform.python_version()}); date 2026-11-27.\nCommand: `{cmd}`\n\n{table}\n\n"
            + "\n".join(f"- {n}" for n in notes) + "\n"))
    if not same:
        print("ERROR: hf and tiktoken .bin differ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
