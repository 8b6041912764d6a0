"""Faster decoding of a few rows on the CPU, used by generate.py.

Why. Decoding one token of one sequence multiplies a single row by every weight matrix, so a step
is bound by reading the weights from memory. nn.Linear keeps its weight as (out, in); on the CPU,
MKL's one-row product reads an (in, out) matrix (HuggingFace GPT-2's Conv1D layout) 1.2x faster
for a block's matrices and 1.7x faster for the output head (fp32, 1-3 rows; measured in
bench/results/generate.md). From 4 rows on, MKL switches to a matrix-matrix kernel and the
layout stops mattering.

How. `decode_layout(model)` is a context manager: inside it, every nn.Linear of the model
multiplies inputs of at most SMALL_ROWS rows by a transposed, contiguous copy of its weight. Larger
inputs (prefill), calls outside torch.inference_mode (the caller's own code while generate.py's
generator is paused, say), other devices and other dtypes go through nn.Linear as usual; outside
the context the model is untouched. The copies cost memory: 0.8x the model's weights (438 MB for
gpt2_small at a 32k vocabulary, fp32). Each is made at its layer's first few-row call (0.3 s in
all for gpt2_small) and kept for later calls while the weight keeps its values, compared in full
at the start of every call (0.09 s for gpt2_small; PyTorch's version counter would be cheaper but
misses writes through .data); the copies are freed with the model. Set ENABLED = False to give
that memory back at the old speed.
"""
from __future__ import annotations

import contextlib
import functools
import weakref
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

ENABLED = True
SMALL_ROWS = 3
_copies: "weakref.WeakKeyDictionary[nn.Module, dict[str, torch.Tensor]]" = weakref.WeakKeyDictionary()


def _same_values(weight_t: torch.Tensor, weight: torch.Tensor, rows: int = 512) -> bool:
    """weight_t.t() == weight, compared in blocks of rows that stay in cache (a whole transposed
    compare is 3.5x slower). Exact, so writes through .data (which leave PyTorch's version counter
    alone) are seen too; a changed weight differs in its first block and costs next to nothing."""
    w = weight.detach()
    return weight_t.shape == w.shape[::-1] and all(
        torch.equal(weight_t[:, i:i + rows].t(), w[i:i + rows]) for i in range(0, w.size(0), rows))


def _drop_stale(cache: dict[str, torch.Tensor], linears: list[tuple[str, nn.Linear]]) -> None:
    for name, linear in linears:
        if name in cache and not _same_values(cache[name], linear.weight):
            del cache[name]


def _few_rows_linear(linear: nn.Linear, cache: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> torch.Tensor:
    rows = x.numel() // x.size(-1)
    if rows > SMALL_ROWS or x.dtype != linear.weight.dtype or not torch.is_inference_mode_enabled():
        return F.linear(x, linear.weight, linear.bias)
    if name not in cache:  # made at the first few-row call, so prefill-only (batch >= 4) runs never pay
        cache[name] = linear.weight.detach().t().contiguous()
    weight_t = cache[name]
    x2 = x.reshape(rows, x.size(-1))
    out = x2 @ weight_t if linear.bias is None else torch.addmm(linear.bias, x2, weight_t)
    return out.view(*x.shape[:-1], weight_t.size(1))


@contextlib.contextmanager
def decode_layout(model: nn.Module) -> Iterator[None]:
    """Within this context, model's nn.Linear layers multiply 1-3 rows by (in, out) weight copies
    (CPU, fp32 only; a no-op elsewhere). The results equal nn.Linear's up to float rounding."""
    first = next(model.parameters())
    if not ENABLED or first.device.type != "cpu" or first.dtype != torch.float32:
        yield
        return
    cache = _copies.setdefault(model, {})
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    _drop_stale(cache, linears)
    for name, linear in linears:
        linear.forward = functools.partial(_few_rows_linear, linear, cache, name)
    try:
        yield
    finally:
        for _, linear in linears:
            linear.__dict__.pop("forward", None)  # back to nn.Linear.forward
