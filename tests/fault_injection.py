"""Faults for tests, applied by patching the model (the trainer itself has no test hooks).

    fake_oom(limit, after=0)   a training forward on more than `limit` rows raises an out-of-memory
                               error, once `after` such forwards have succeeded (after=1 with a
                               micro-batch of half the batch: the error comes mid-accumulation)
    fake_nan(calls)            the training forwards numbered in `calls` (1-based) return NaN logits
                               and loss, so the loss and every gradient of that step are NaN

Run as a script, it applies the faults the environment names and then runs the trainer, for tests
that need a fault inside another process (torchrun ranks, bench/gpu_check.sh):

    FAKE_OOM_ABOVE=2 FAKE_NAN_CALLS=7,8 python tests/fault_injection.py --bin_file ...
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model import TransformerLanguageModel  # noqa: E402

Patch = Callable[[object, str, object], None]  # monkeypatch.setattr, or setattr itself


def fake_oom(limit: int, after: int = 0, patch: Patch = setattr) -> None:
    forward, seen = TransformerLanguageModel.forward, [0]

    def failing_forward(self, idx, *args, **kwargs):
        if self.training and torch.is_grad_enabled() and idx.size(0) > limit:
            seen[0] += 1
            if seen[0] > after:
                raise torch.OutOfMemoryError(f"simulated out of memory at micro-batch {idx.size(0)}")
        return forward(self, idx, *args, **kwargs)

    patch(TransformerLanguageModel, "forward", failing_forward)


def fake_nan(calls: set[int], patch: Patch = setattr) -> None:
    forward, count = TransformerLanguageModel.forward, [0]

    def nan_forward(self, idx, *args, **kwargs):
        logits, loss = forward(self, idx, *args, **kwargs)
        if self.training and torch.is_grad_enabled():
            count[0] += 1
            if count[0] in calls:
                nan = float("nan")
                logits, loss = (None if logits is None else logits * nan), (None if loss is None else loss * nan)
        return logits, loss

    patch(TransformerLanguageModel, "forward", nan_forward)


if __name__ == "__main__":
    if os.environ.get("FAKE_OOM_ABOVE"):
        fake_oom(int(os.environ["FAKE_OOM_ABOVE"]), int(os.environ.get("FAKE_OOM_AFTER", "0")))
    if os.environ.get("FAKE_NAN_CALLS"):
        fake_nan({int(c) for c in os.environ["FAKE_NAN_CALLS"].split(",")})
    import train_colab_mmap
    from common import cli_main

    cli_main(train_colab_mmap.main)
