"""Faster decoding of a few rows on the CPU, used by generate.py.

A decoding step multiplies one row per sequence by every weight matrix, so it is bound by reading
the weights. nn.Linear keeps its weight as (out, in); on the CPU, MKL's product of 1-3 rows reads an
(in, out) matrix (HuggingFace GPT-2's Conv1D layout) faster: 1.2x over a block's matrices, 1.7x for
the output head (fp32; bench/results/generate.md). From 4 rows on MKL switches to a matrix-matrix
kernel and the layout stops mattering.

Inside `decode_layout(model)`, every nn.Linear multiplies inputs of at most SMALL_ROWS rows by a
transposed, contiguous copy of its weight; prefill, calls outside torch.inference_mode, other
devices and dtypes go through nn.Linear as usual. The copies take 0.8x the weights' memory (438 MB
for gpt2_small at a 32k vocabulary), are made at each layer's first few-row call and freed with the
model; ENABLED = False gives that memory back at the old speed.
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
    """weight_t.t() == weight, exactly, in blocks of rows that stay in cache (3.5x faster than one
    transposed compare). PyTorch's version counter would be cheaper but misses writes through .data."""
    w = weight.detach()
    return weight_t.shape == w.shape[::-1] and all(
        torch.equal(weight_t[:, i:i + rows].t(), w[i:i + rows]) for i in range(0, w.size(0), rows))


def _few_rows_linear(linear: nn.Linear, cache: dict[str, torch.Tensor], name: str,
                     x: torch.Tensor) -> torch.Tensor:
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
    for name, linear in linears:  # the copy of a changed weight goes (exact compare: 0.09 s for gpt2_small)
        if name in cache and not _same_values(cache[name], linear.weight):
            del cache[name]
    for name, linear in linears:
        linear.forward = functools.partial(_few_rows_linear, linear, cache, name)
    try:
        yield
    finally:
        for _, linear in linears:
            linear.__dict__.pop("forward", None)  # back to nn.Linear.forward
