"""Test helpers shared by the trainer, fault and bad-input tests: random word documents, and a
character-level token file set (.bin + tokenizer + metadata, as tokenize_local_bpe.py writes them)
made from a given text."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from common import sha256_file
from tokenizer import CharTokenizer, special_tokens_for


WORDS = "the quick brown fox jumps over the lazy dog while a cat sleeps on the warm mat".split()


def word_documents(n_docs: int, seed: int) -> str:
    """n_docs documents of 12 random WORDS each, each ended by <|endoftext|> (the same text for a seed)."""
    rng = random.Random(seed)
    return "".join(" ".join(rng.choice(WORDS) for _ in range(12)) + ".<|endoftext|>" for _ in range(n_docs))


def write_char_dataset(folder: Path, text: str, name: str = "data") -> dict:
    """Write folder/{name}.bin, {name}_tok.json, {name}_metadata.json; return their paths, the ids
    and the tokenizer."""
    tok = CharTokenizer.from_text(text, special_tokens=special_tokens_for(chat=True))
    tok.save(folder / f"{name}_tok.json")
    ids = np.array(tok.encode(text), dtype=np.uint16)
    ids.tofile(folder / f"{name}.bin")
    meta = {"format_version": 1, "dtype": "uint16", "num_tokens": int(ids.size), "vocab_size": tok.vocab_size,
            "eot_token_id": 0, "tokenizer_sha256": sha256_file(folder / f"{name}_tok.json")}
    (folder / f"{name}_metadata.json").write_text(json.dumps(meta))
    return {"bin": folder / f"{name}.bin", "tok": folder / f"{name}_tok.json", "meta": folder / f"{name}_metadata.json",
            "ids": ids, "tokenizer": tok}


def memorising_model(tokenizer, docs: list[str], block_size: int, n_embd: int, lr: float, steps: int):
    """A 2-layer model trained on `docs` (whole documents, padded, loss on real tokens only) until it
    has memorised them: the tests of generate.py and serve.py use it as a model that answers."""
    import torch

    from model import IGNORE_INDEX, GPTConfig, TransformerLanguageModel

    torch.manual_seed(0)
    ids = [tokenizer.encode(d) for d in docs]
    T = max(map(len, ids)) - 1
    x = torch.zeros(len(ids), T, dtype=torch.long)
    y = torch.full((len(ids), T), IGNORE_INDEX, dtype=torch.long)
    for i, s in enumerate(ids):
        x[i, :len(s) - 1] = torch.tensor(s[:-1])
        y[i, :len(s) - 1] = torch.tensor(s[1:])
    model = TransformerLanguageModel(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=block_size, n_layer=2,
                                               n_head=4, n_embd=n_embd))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(steps):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
    return model.eval()
