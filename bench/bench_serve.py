"""serve.py under load: N concurrent streaming clients (the official openai client), the model
served in turn (--max_batch 1) against waiting requests batched through generate_text's
left-padded batches (--max_batch N), in the same run.

    flock /tmp/cpu.lock python bench/bench_serve.py            # about a minute on 2 cores
    flock /tmp/cpu.lock python bench/bench_serve.py --quick    # 8 clients, 1 round

Setup: a `tiny` model (random weights, vocabulary 32,000 so the head costs what a real one does)
and a character tokenizer with chat tokens; the head rows of the special tokens are zeroed so that
greedy never stops early: every reply is exactly --max_tokens tokens. Each mode is its own
`python serve.py` process (the real CLI on a saved checkpoint folder); the clients run here, start
together (a barrier), each with its own chat message (different lengths: left padding is used),
greedy, streaming. Latency = request sent to [DONE]; first token = request sent to the first
content chunk; tokens/s = all completion tokens / (first request sent to last [DONE]). Every reply
is compared with a lone `generate_text` call on the same weights. Rounds alternate the two modes;
the table gives each mode's median over the rounds.
"""
import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import cli_main  # noqa: E402
from generate import generate_text, load_checkpoint  # noqa: E402
from model import TransformerLanguageModel, get_config  # noqa: E402
from tokenizer import CharTokenizer, special_tokens_for  # noqa: E402
from tokenizer_bpe import render_chat  # noqa: E402

WORDS = "the model answers every question about cats dogs rivers and mountains with care".split()


def make_checkpoint(folder: Path, model_size: str, vocab_size: int) -> Path:
    """A random `model_size` model that never emits a special token under greedy, saved with its tokenizer."""
    tok = CharTokenizer.from_text(" ".join(WORDS) + "?.,0123456789", special_tokens_for(chat=True))
    tok.save(folder / "tok.json")
    torch.manual_seed(0)
    model = TransformerLanguageModel(get_config(model_size, vocab_size))
    with torch.no_grad():
        model.lm_head.weight.mul_(30)  # peaked logits: greedy has no near-ties between batch layouts
        for token in special_tokens_for(chat=True):
            model.lm_head.weight[tok.token_to_id(token)] = 0.0
    model.save_pretrained(folder / "model", tokenizer_file=folder / "tok.json")
    return folder / "model"


def messages_for(n: int) -> list[list[dict]]:
    """n chat messages of different lengths (2 to 17 words)."""
    return [[{"role": "user", "content": f"question {i}: " + " ".join(WORDS[(i + j) % len(WORDS)]
                                                                      for j in range(2 + i % 16)) + "?"}]
            for i in range(n)]


class Server:
    """`python serve.py` in a subprocess; the URL it prints."""

    def __init__(self, checkpoint: Path, max_batch: int) -> None:
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), "--checkpoint_dir", str(checkpoint),
                                      "--port", "0", "--device", "cpu", "--max_batch", str(max_batch),
                                      "--log_level", "warning"], stderr=subprocess.PIPE, text=True)
        for line in self.proc.stderr:
            if match := re.search(r"serving .* on (http://\S+)", line):
                self.url = match.group(1)
                break
        else:
            raise RuntimeError(f"serve.py exited with {self.proc.wait()} before serving")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # drain its log

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def one_client(url: str, messages: list[dict], max_tokens: int, barrier: threading.Barrier) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=600, max_retries=0)
    barrier.wait()
    start = time.perf_counter()
    first, pieces, usage = None, [], None
    for chunk in client.chat.completions.create(model="bench", messages=messages, temperature=0, max_tokens=max_tokens,
                                                stream=True, stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            pieces.append(chunk.choices[0].delta.content)
    end = time.perf_counter()
    return {"start": start, "end": end, "first": (first or end) - start, "latency": end - start,
            "text": "".join(pieces), "tokens": usage.completion_tokens}


def load_round(url: str, conversations: list[list[dict]], max_tokens: int, expected: list[str]) -> dict:
    barrier = threading.Barrier(len(conversations))
    with ThreadPoolExecutor(len(conversations)) as pool:
        results = list(pool.map(lambda m: one_client(url, m, max_tokens, barrier), conversations))
    latencies = sorted(r["latency"] for r in results)
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    p95 = latencies[round(0.95 * (len(latencies) - 1))]  # nearest rank
    return {"p50": statistics.median(latencies), "p95": p95,
            "first_p50": statistics.median(r["first"] for r in results),
            "tok_s": sum(r["tokens"] for r in results) / wall, "wall": wall,
            "correct": sum(r["text"] == e and r["tokens"] == max_tokens for r, e in zip(results, expected))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="8 clients, 1 round")
    p.add_argument("--model_size", default="tiny")
    p.add_argument("--vocab_size", type=int, default=32000)
    p.add_argument("--clients", type=int, default=None, help="default 32 (quick: 8)")
    p.add_argument("--max_tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=None, help="rounds per mode, alternating; default 3 (quick: 1)")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    started = time.perf_counter()
    clients = args.clients or (8 if args.quick else 32)
    rounds = args.rounds or (1 if args.quick else 3)
    conversations = messages_for(clients)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = make_checkpoint(Path(tmp), args.model_size, args.vocab_size)
        model, tok = load_checkpoint(checkpoint, "cpu")
        t0 = time.perf_counter()
        expected = [generate_text(model, tok, render_chat(m, add_generation_prompt=True),
                                  max_new_tokens=args.max_tokens, temperature=0, chat=True) for m in conversations]
        print(f"{clients} lone generate_text calls: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        params = model.num_parameters()
        del model
        modes = {"in turn (--max_batch 1)": 1, f"batched (--max_batch {clients})": clients}
        servers = {name: Server(checkpoint, max_batch) for name, max_batch in modes.items()}
        runs: dict[str, list[dict]] = {name: [] for name in modes}
        try:
            for r in range(rounds):
                for name, server in servers.items():
                    row = load_round(server.url, conversations, args.max_tokens, expected)
                    runs[name].append(row)
                    print(f"round {r + 1} {name}: p50 {row['p50']:.2f}s p95 {row['p95']:.2f}s first token p50 "
                          f"{row['first_p50']:.2f}s {row['tok_s']:.0f} tok/s correct {row['correct']}/{clients}",
                          file=sys.stderr, flush=True)
        finally:
            for server in servers.values():
                server.close()
    med = {name: {k: statistics.median(row[k] for row in rows) for k in ("p50", "p95", "first_p50", "tok_s")}
           for name, rows in runs.items()}
    turn, batched = (med[name] for name in modes)
    lines = ["| mode | clients | p50 latency | p95 latency | p50 first token | total tokens/s | correct replies |",
             "|---|---|---|---|---|---|---|"]
    for name, rows in runs.items():
        m = med[name]
        correct = f"{min(r['correct'] for r in rows)}/{clients} (worst round)"
        lines.append(f"| {name} | {clients} | {m['p50']:.2f} s | {m['p95']:.2f} s | {m['first_p50']:.2f} s | "
                     f"{m['tok_s']:.0f} | {correct} |")
    lines.append(f"| **batched / in turn** | | **{turn['p50'] / batched['p50']:.2f}x sooner** | "
                 f"**{turn['p95'] / batched['p95']:.2f}x sooner** | "
                 f"{turn['first_p50'] / batched['first_p50']:.2f}x sooner | "
                 f"**{batched['tok_s'] / turn['tok_s']:.2f}x** | |")
    table = "\n".join(lines)
    setup = (f"{args.model_size} model, {params / 1e6:.2f}M parameters (vocab {args.vocab_size}), {clients} streaming "
             f"clients, {args.max_tokens} new tokens each, greedy, median of {rounds} rounds per mode; "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(table)
    print(setup)
    print(f"bench_serve.py took {time.perf_counter() - started:.0f}s", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(table + "\n\n" + setup + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    cli_main(main)
