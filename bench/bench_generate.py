"""Greedy decoding speed on the CPU: our KV-cached `generate` against the same loop without the
cache (the whole window recomputed every step), against the same call with cpu_decode.py's (in, out)
weight copies switched off, and against HuggingFace `GPT2LMHeadModel.generate` on the same weights
(converted with export_hf.py's to_hf_state_dict).

    flock /tmp/cpu.lock python bench/bench_generate.py            # ~4 minutes on 2 cores
    flock /tmp/cpu.lock python bench/bench_generate.py --quick    # ~1 minute

Random weights, random prompts of one length (no padding), greedy, a fixed number of new tokens
(no early stop) for every contender; tokens/s = batch * new tokens / wall time of the whole call
(prefill included). The outputs are compared token for token.
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cpu_decode  # noqa: E402
from common import cli_main  # noqa: E402
from generate import generate  # noqa: E402
from model import TransformerLanguageModel, get_config  # noqa: E402


def to_hf(model: TransformerLanguageModel):
    """The same weights in a transformers GPT2LMHeadModel, through export_hf.py's mapping (HF's
    Conv1D stores c_attn/c_proj/c_fc transposed); None when transformers is missing."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
        from transformers.utils import logging as hf_logging
    except ImportError:
        return None
    from export_hf import hf_config, to_hf_state_dict

    hf_logging.set_verbosity_error()
    hf = GPT2LMHeadModel(GPT2Config.from_dict(hf_config(model.config, None, torch.float32)))
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"state dict mapping failed: missing {missing}, unexpected {unexpected}")
    hf.generation_config.eos_token_id = None  # never stop early, like eos_ids=()
    hf.generation_config.bos_token_id = None
    hf.generation_config.pad_token_id = 0
    return hf.eval()


def best_times(fns: dict, repeats: int, min_total_s: float) -> tuple[dict, dict]:
    """Best wall time of each function, calls interleaved round by round so that load from other
    processes hits every contender alike; stops after `repeats` rounds or once min_total_s is spent
    (always one round at least)."""
    best, outs, spent = {k: float("inf") for k in fns}, {}, 0.0
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            dt = time.perf_counter() - t0
            best[name], spent = min(best[name], dt), spent + dt
        if spent >= min_total_s:
            break
    return best, outs


def bench_one(size: str, vocab: int, batch: int, prompt_len: int, new_tokens: int, with_hf: bool,
              repeats: int, device: str = "cpu") -> dict:
    torch.manual_seed(0)
    model = TransformerLanguageModel(get_config(size, vocab)).eval().to(device)
    idx = torch.randint(0, vocab, (batch, prompt_len), generator=torch.Generator().manual_seed(1)).to(device)
    row: dict = {"size": size, "vocab": vocab, "batch": batch, "params": model.num_parameters(),
                 "tokens": batch * new_tokens}
    def without_copies(n: int = new_tokens) -> torch.Tensor:
        cpu_decode.ENABLED = False
        try:
            return generate(model, idx, n, temperature=0, eos_ids=())
        finally:
            cpu_decode.ENABLED = True

    fns = {"cache": lambda n=new_tokens: generate(model, idx, n, temperature=0, eos_ids=()),
           "nocopy": without_copies,
           "nocache": lambda n=new_tokens: generate(model, idx, n, temperature=0, eos_ids=(), use_cache=False)}
    hf = to_hf(model) if with_hf else None
    if hf is not None:
        hf = hf.to(device)
        mask = torch.ones_like(idx)
        # on CUDA, HF runs under the same bf16 autocast as generate.py does
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if idx.is_cuda else contextlib.nullcontext()

        def theirs(n: int = new_tokens) -> torch.Tensor:
            with torch.inference_mode(), amp:
                out = hf.generate(idx, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False)
            return out.cpu()  # waits for the GPU, like generate.py's per-step .tolist()

        fns["hf"] = theirs
    for fn in fns.values():
        fn(2)  # warm-up: allocator, kernels, HF's generation config
    # the no-cache loop is the slow baseline: repeated only while it has taken under 10 s
    times, outs = best_times({"nocache": fns.pop("nocache")}, repeats, min_total_s=10.0)
    t2, o2 = best_times(fns, repeats, min_total_s=20.0)
    times.update(t2)
    outs.update(o2)
    row.update({f"{k}_s": v for k, v in times.items()})
    outs = {k: v.cpu() for k, v in outs.items()}
    row["nocache_same"] = torch.equal(outs["cache"], outs["nocache"]) and torch.equal(outs["cache"], outs["nocopy"])
    row["copies_mb"] = sum(c.numel() * c.element_size() for c in cpu_decode._copies.get(model, {}).values()) / 1e6
    if "hf" in outs:
        out_hf, out_cache = outs["hf"], outs["cache"]
        row["hf_same"] = out_hf.shape == out_cache.shape and torch.equal(out_hf, out_cache)
        if not row["hf_same"]:  # random weights give near-ties; report where the greedy paths split
            diff = (out_hf[:, prompt_len:] != out_cache[:, prompt_len:]).any(0).nonzero()
            row["hf_split_at"] = int(diff[0]) if len(diff) else -1
    return row


def head_layout_table(vocab: int, n_embd: int = 768, rows_list: tuple[int, ...] = (1, 2, 3, 4, 8)) -> str:
    """Why generate.py decodes 1-3 rows through a transposed head: the output head's matmul at
    `rows` rows, nn.Linear's (out, in) weight against an (in, out) copy, best of 7 x 10 calls
    (the 98 MB head of gpt2_small never fits a cache, so every call reads it from memory)."""
    torch.manual_seed(0)
    w = torch.randn(vocab, n_embd)
    w_t = w.t().contiguous()

    def best_ms(fn) -> float:
        fn()
        best = float("inf")
        for _ in range(7):
            t0 = time.perf_counter()
            for _ in range(10):
                fn()
            best = min(best, (time.perf_counter() - t0) / 10)
        return best * 1e3

    lines = ["| rows | nn.Linear (out, in) ms | (in, out) copy ms | (out, in) / (in, out) |", "|---|---|---|---|"]
    with torch.inference_mode():
        for rows in rows_list:
            x = torch.randn(rows, n_embd)
            a, b = best_ms(lambda: torch.nn.functional.linear(x, w)), best_ms(lambda: x @ w_t)
            lines.append(f"| {rows} | {a:.2f} | {b:.2f} | {a / b:.2f}x |")
    return "\n".join(lines)


def fmt_rate(row: dict, key: str) -> str:
    return f"{row['tokens'] / row[key]:.1f}" if key in row else "n/a"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer tokens (about a minute)")
    p.add_argument("--sizes", nargs="+", default=["small", "gpt2_small"])
    p.add_argument("--vocab_size", type=int, default=32000)
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--prompt_len", type=int, default=None, help="default 32 (quick: 16)")
    p.add_argument("--new_tokens", type=int, default=None, help="default 64 (quick: 24)")
    p.add_argument("--repeats", type=int, default=None, help="rounds of the timed calls (best kept); default 5 (quick: 3)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (on CUDA both sides run under bf16 autocast)")
    p.add_argument("--no_hf", action="store_true")
    p.add_argument("--no_head_table", action="store_true", help="skip the head-layout micro-benchmark")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    prompt_len = args.prompt_len or (16 if args.quick else 32)
    new_tokens = args.new_tokens or (24 if args.quick else 64)
    args.repeats = args.repeats or (3 if args.quick else 5)
    rows = []
    for size in args.sizes:
        for batch in args.batch_sizes:
            t0 = time.perf_counter()
            row = bench_one(size, args.vocab_size, batch, prompt_len, new_tokens, not args.no_hf, args.repeats,
                            args.device)
            rows.append(row)
            print(f"{size} batch {batch}: {time.perf_counter() - t0:.1f}s {row}", file=sys.stderr, flush=True)

    head = ("| model | params | batch | cached tok/s | no cache tok/s | cache speedup | copies off tok/s "
            "| copies speedup (MB) | HF generate tok/s | ours / HF | same tokens (no cache, copies off, HF) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        speedup = f"{r['nocache_s'] / r['cache_s']:.2f}x" if "nocache_s" in r else "n/a"
        copies = f"{r['nocopy_s'] / r['cache_s']:.2f}x ({r['copies_mb']:.0f})"
        vs_hf = f"{r['hf_s'] / r['cache_s']:.2f}x" if "hf_s" in r else "n/a"
        same_hf = "n/a" if "hf_same" not in r else ("yes" if r["hf_same"] else f"no (split at token {r['hf_split_at']})")
        lines.append(f"| {r['size']} (vocab {r['vocab']}) | {r['params'] / 1e6:.1f}M | {r['batch']} "
                     f"| {fmt_rate(r, 'cache_s')} | {fmt_rate(r, 'nocache_s')} | {speedup} | {fmt_rate(r, 'nocopy_s')} "
                     f"| {copies} | {fmt_rate(r, 'hf_s')} | {vs_hf} | {'yes' if r.get('nocache_same') else 'no'}, {same_hf} |")
    table = "\n".join(lines)
    precision = "bf16 autocast on " + torch.cuda.get_device_name() if args.device.startswith("cuda") else "fp32"
    setup = (f"prompt {prompt_len} tokens, {new_tokens} new tokens, greedy, {precision}, "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    if not args.no_head_table:
        table += (f"\n\nOutput head matmul ({args.vocab_size} x 768, fp32) by weight layout and rows:\n\n"
                  + head_layout_table(args.vocab_size))
    print(table)
    print(setup)
    if args.out:
        Path(args.out).write_text(table + "\n\n" + setup + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    cli_main(main)
