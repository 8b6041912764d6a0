"""Forward+backward throughput of the model on this machine: eager vs torch.compile and SDPA vs
explicit attention, each ratio measured in the same run.

    python bench/bench_model.py            # tiny and small, block 256
    python bench/bench_model.py --quick    # tiny only, fewer steps
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model import TransformerLanguageModel, get_config, reference_attention  # noqa: E402


def set_attention(model: TransformerLanguageModel, sdpa: bool) -> None:
    """SDPA (the default) or the explicit softmax attention in every layer."""
    for block in model.transformer.h:
        block.attn.attention = torch.nn.functional.scaled_dot_product_attention if sdpa else reference_attention


def tokens_per_second(model, step_fn, batch: int, block: int, vocab: int, steps: int, warmup: int) -> float:
    x = torch.randint(0, vocab, (batch, block))
    y = torch.randint(0, vocab, (batch, block))
    for _ in range(warmup):
        step_fn(x, y)
    t0 = time.perf_counter()
    for _ in range(steps):
        step_fn(x, y)
    return batch * block * steps / (time.perf_counter() - t0)


def make_step(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(x, y):
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    p.add_argument("--vocab_size", type=int, default=4096)
    p.add_argument("--block_size", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.sizes, args.steps = ["tiny"], 4
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size} x "
          f"block {args.block_size}, vocab {args.vocab_size}, fwd+bwd+AdamW", file=sys.stderr)
    rows = []
    for size in args.sizes:
        torch.manual_seed(0)
        cfg = get_config(size, args.vocab_size, block_size=args.block_size)
        model = TransformerLanguageModel(cfg).train()
        run = lambda m: tokens_per_second(m, make_step(m), args.batch_size, args.block_size,  # noqa: E731
                                          args.vocab_size, args.steps, warmup=2)
        eager_sdpa = run(model)
        set_attention(model, False)
        eager_ref = run(model)
        set_attention(model, True)
        t0 = time.perf_counter()
        compiled = torch.compile(model)
        compiled_sdpa = run(compiled)  # includes the first compile in warmup
        compile_s = time.perf_counter() - t0
        rows.append((size, model.num_parameters(), eager_ref, eager_sdpa, compiled_sdpa, compile_s))
        print(f"{size}: done", file=sys.stderr)
    print("| model | params | explicit attn tok/s | SDPA tok/s | SDPA / explicit | compiled tok/s "
          "| compiled / eager | compile+warmup s |")
    print("|---|---|---|---|---|---|---|---|")
    for size, n, ref, sdpa, comp, cs in rows:
        print(f"| {size} | {n / 1e6:.2f}M | {ref:,.0f} | {sdpa:,.0f} | {sdpa / ref:.2f}x | {comp:,.0f} "
              f"| {comp / sdpa:.2f}x | {cs:.0f} |")


if __name__ == "__main__":
    main()
