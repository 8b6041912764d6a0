"""Faster decoding of a few rows on the CPU, for generate.py. A decoding step is bound by reading the weights, and MKL
reads an (in, out) matrix faster than nn.Linear's (out, in) for 1-3 rows: 1.2x a block, 1.7x the head (bench/results/
generate.md). The (in, out) copies cost 0.8x the weights' memory while the model lives; ENABLED = False saves it."""
from __future__ import annotations

import contextlib
import functools
import weakref
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

ENABLED = True
SMALL_ROWS = 3  # from 4 rows on MKL switches to a matrix-matrix kernel and the layout stops mattering
_copies: "weakref.WeakKeyDictionary[nn.Module, dict[str, torch.Tensor]]" = weakref.WeakKeyDictionary()


def _same_values(weight_t: torch.Tensor, weight: torch.Tensor, rows: int = 512) -> bool:
    """weight_t.t() == weight exactly, in blocks of rows that stay in cache (3.5x faster than one compare)."""
    w = weight.detach()  # (the version counter would be cheaper, but misses writes through .data)
    return weight_t.shape == w.shape[::-1] and all(
        torch.equal(weight_t[:, i:i + rows].t(), w[i:i + rows]) for i in range(0, w.size(0), rows))


def _few_rows_linear(linear: nn.Linear, cache: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> torch.Tensor:
    rows = x.numel() // x.size(-1)
    if rows > SMALL_ROWS or x.dtype != linear.weight.dtype or not torch.is_inference_mode_enabled():
        return F.linear(x, linear.weight, linear.bias)  # prefill, training code: nn.Linear as usual
    if name not in cache:  # made at the first few-row call, so prefill-only (batch >= 4) runs never pay
        cache[name] = linear.weight.detach().t().contiguous()  # (in, out)
    x2 = x.reshape(rows, x.size(-1))  # (rows, in)
    out = x2 @ cache[name] if linear.bias is None else torch.addmm(linear.bias, x2, cache[name])  # (rows, out)
    return out.view(*x.shape[:-1], out.size(-1))


@contextlib.contextmanager
def decode_layout(model: nn.Module) -> Iterator[None]:
    """Within this context, model's nn.Linear layers multiply 1-3 rows by (in, out) weight copies (CPU, fp32
    only; a no-op elsewhere). The results equal nn.Linear's up to float rounding."""
    first = next(model.parameters())
    on = ENABLED and first.device.type == "cpu" and first.dtype == torch.float32
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)] if on else []
    cache = _copies.setdefault(model, {}) if on else {}
    try:
        for name, linear in linears:  # a changed weight's copy goes (the exact compare: 0.09 s for gpt2_small)
            if name in cache and not _same_values(cache[name], linear.weight):
                del cache[name]
            linear.forward = functools.partial(_few_rows_linear, linear, cache, name)
        yield
    finally:
        for _, linear in linears:
            linear.__dict__.pop("forward", None)  # back to nn.Linear.forward
