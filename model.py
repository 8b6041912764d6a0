"""GPT-2 exactly as HuggingFace's GPT2LMHeadModel, weight for weight (learned positions, pre-LayerNorm blocks with
biases, fused QKV, tanh GELU, GPT-2 init); a KV cache for decoding; our config.json + pytorch_model.bin folders."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from common import UserError, atomic_dir, first_line, read_json, resolve_checkpoint_dir

IGNORE_INDEX = -100  # target value the loss skips (prompt tokens, padding); F.cross_entropy's default
WEIGHTS_NAME, CONFIG_NAME = "pytorch_model.bin", "config.json"


@dataclasses.dataclass
class GPTConfig:
    vocab_size: int = 32000
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if type(value := getattr(self, name)) is not int or value <= 0:  # type(), not isinstance: True is no size
                raise UserError(f"model config: {name}={value!r} must be a positive integer")
        if self.n_embd % self.n_head != 0:
            raise UserError(f"model config: n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                            f"pick n_embd a multiple of n_head (e.g. {self.n_head * 64})")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise UserError(f"model config: dropout={self.dropout} must be in [0, 1)")

    @property
    def padded_vocab_size(self) -> int:
        """Embedding/head rows, a multiple of 64 for faster matmuls; logits keep vocab_size columns."""
        return (self.vocab_size + 63) // 64 * 64

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> GPTConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(d) - known):
            raise UserError(f"{source}: unknown model config keys {unknown}; expected only {sorted(known)}")
        try:
            return cls(**d)
        except UserError as e:
            raise UserError(f"{source}: {e}") from None


# The seed's four sizes. vocab_size always comes from the tokenizer.
MODEL_CONFIGS: dict[str, dict[str, int]] = {
    "tiny": dict(n_layer=2, n_head=4, n_embd=128, block_size=256),
    "small": dict(n_layer=4, n_head=4, n_embd=256, block_size=256),
    "medium": dict(n_layer=6, n_head=6, n_embd=384, block_size=512),
    "gpt2_small": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),
}


def get_config(model_size: str, vocab_size: int, **overrides: Any) -> GPTConfig:
    """GPTConfig for one of MODEL_CONFIGS; `overrides` (None values ignored) win."""
    if model_size not in MODEL_CONFIGS:
        raise UserError(f"--model_size {model_size!r} is unknown; choose one of {', '.join(MODEL_CONFIGS)}")
    fields = dict(MODEL_CONFIGS[model_size], vocab_size=vocab_size)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return GPTConfig(**fields)


class KVCache:
    """Keys and values of every layer, preallocated to `max_len` slots, for incremental decoding."""

    def __init__(self, config: GPTConfig, batch_size: int, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32, max_len: int | None = None,
                 pad_lens: torch.Tensor | list[int] | None = None) -> None:
        self.max_len = max_len or config.block_size
        shape = (config.n_layer, 2, batch_size, config.n_head, self.max_len, config.n_embd // config.n_head)
        self.kv = torch.zeros(shape, device=device, dtype=dtype)  # (L, 2, B, nh, max_len, hs): keys, values
        self.pos = 0  # slots filled so far
        # left padding: row b's first pad_lens[b] slots are padding no query sees; its first real token is position 0
        self.pad_lens = None if pad_lens is None else torch.as_tensor(pad_lens, device=device, dtype=torch.long)

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only these batch rows (finished sequences leave the batch)."""
        self.kv = self.kv.index_select(2, rows)
        if self.pad_lens is not None:
            self.pad_lens = self.pad_lens.index_select(0, rows)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store one layer's new keys/values (B, nh, T, hs) at slots pos..pos+T; return all so far."""
        T, cache = k.size(2), self.kv[layer]  # (2, B, nh, max_len, hs)
        cache[0, :, :, self.pos:self.pos + T] = k
        cache[1, :, :, self.pos:self.pos + T] = v
        return cache[0, :, :, :self.pos + T], cache[1, :, :, :self.pos + T]  # (B, nh, S, hs), S = pos + T

    def attn_mask(self, T: int, device: torch.device) -> torch.Tensor | None:
        """True = attend, for T new queries over all S filled slots; None when is_causal says the same."""
        if self.pad_lens is None and (self.pos == 0 or T == 1):
            return None
        q = torch.arange(self.pos, self.pos + T, device=device).view(T, 1)  # query positions
        k = torch.arange(self.pos + T, device=device)  # (S,) key positions
        mask = k <= q  # (T, S) causal
        if self.pad_lens is not None:
            real = k >= self.pad_lens.view(-1, 1, 1)  # (B, 1, S)
            mask = ((mask & real) | (k == q)).unsqueeze(1)  # (B, 1, T, S); a pad query sees itself: no NaN rows
        return mask


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
                        dropout_p: float = 0.0, is_causal: bool = False) -> torch.Tensor:
    """softmax(q k^T / sqrt(hs)) v written out, with F.scaled_dot_product_attention's signature."""
    att = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, nh, T, S)
    if is_causal:  # the T queries are the last T of the S keys
        T, S = q.size(-2), k.size(-2)
        attn_mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
    if attn_mask is not None:
        att = att.masked_fill(~attn_mask, float("-inf"))
    att = F.softmax(att, dim=-1)
    return (F.dropout(att, dropout_p) if dropout_p > 0.0 else att) @ v  # (B, nh, T, hs)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.n_head, self.layer_idx, self.dropout = config.n_head, layer_idx, config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        # fused kernels; tests and benchmarks swap in reference_attention (same signature)
        self.attention = F.scaled_dot_product_attention

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, C) each
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if kv_cache is not None:
            k, v = kv_cache.append(self.layer_idx, k, v)  # (B, nh, S, hs): the cached keys too
        is_causal = mask is None and T > 1  # no mask: plain causal; a single new query sees every key
        dropout_p = self.dropout if self.training else 0.0
        y = self.attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))  # GPT-2's tanh GELU


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache, mask)
        return x + self.mlp(self.ln_2(x))


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain TransformerLanguageModel inside DDP and/or torch.compile wrappers."""
    while hasattr(model, "_orig_mod") or isinstance(model, nn.parallel.DistributedDataParallel):
        model = model._orig_mod if hasattr(model, "_orig_mod") else model.module
    return model


class TransformerLanguageModel(nn.Module):
    def __init__(self, config: GPTConfig | None = None, **kwargs: Any) -> None:
        """TransformerLanguageModel(config), or TransformerLanguageModel(**fields_of_config_json)."""
        super().__init__()
        self.config = config = config or GPTConfig.from_dict(kwargs)
        V = config.padded_vocab_size
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(V, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, V, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        for module in self.modules():  # GPT-2 init: N(0, 0.02) weights, zero biases
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for name, p in self.named_parameters():  # and residual projections scaled down by the residual additions
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        with torch.no_grad():  # padding rows stay zero: they get no gradient and export drops them
            self.transformer.wte.weight[config.vocab_size:].zero_()
            self.lm_head.weight[config.vocab_size:].zero_()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # a tied head counts once

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token: 6N + 12 L H Q T (PaLM appendix B), N = the parameters in matmuls."""
        c = self.config
        N = self.num_parameters() - self.transformer.wpe.weight.numel()  # the position table is a lookup
        if not c.tie_embeddings:  # an untied token table is a lookup too (a tied one is the head: a matmul)
            N -= self.transformer.wte.weight.numel()
        return 6 * N + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * (seq_len or c.block_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                kv_cache: KVCache | None = None, last_only: bool = False,
                loss_chunk_size: int = 0) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(logits, loss): logits (B, T, vocab_size), (B, 1, vocab_size) with last_only, None if the loss is chunked."""
        B, T = idx.size()
        start = 0 if kv_cache is None else kv_cache.pos
        if kv_cache is not None and start + T > kv_cache.max_len:
            raise ValueError(f"KV cache full: {start} + {T} > {kv_cache.max_len}; slide the window")
        if (kv_cache is None or kv_cache.pad_lens is None) and start + T > self.config.block_size:
            raise ValueError(f"position {start + T - 1} exceeds block_size {self.config.block_size}")
        pos = torch.arange(start, start + T, device=idx.device).unsqueeze(0)  # (1, T)
        if kv_cache is not None and kv_cache.pad_lens is not None:
            pos = (pos - kv_cache.pad_lens.unsqueeze(1)).clamp_min(0)  # (B, T): a row's real tokens count from 0
        mask = None if kv_cache is None else kv_cache.attn_mask(T, idx.device)  # one mask for every layer
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for block in self.transformer.h:
            x = block(x, kv_cache, mask)
        x = self.transformer.ln_f(x)
        if kv_cache is not None:
            kv_cache.pos += T
        V = self.config.vocab_size
        if targets is not None and loss_chunk_size > 0:  # a (B*T, V) logits tensor never lives in memory
            return None, chunked_cross_entropy(x.view(B * T, -1), self.lm_head.weight, targets.reshape(-1),
                                               V, loss_chunk_size)
        logits = self.lm_head(x[:, -1:] if last_only else x)[..., :V]  # (B, T or 1, V): padding columns dropped
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.reshape(-1, V).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX)

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True, assign: bool = False):
        """Also takes torch.compile/DDP dicts, tied dicts without lm_head.weight and unpadded embeddings."""
        sd = {".".join(p for p in k.split(".") if p not in ("_orig_mod", "module")): v for k, v in state_dict.items()}
        if self.config.tie_embeddings and "transformer.wte.weight" in sd:
            sd.setdefault("lm_head.weight", sd["transformer.wte.weight"])
        V = self.config.vocab_size
        for key in ("transformer.wte.weight", "lm_head.weight"):  # vocab_size rows (an HF import): add zero rows
            if key in sd and sd[key].dim() == 2 and sd[key].size(0) == V:
                sd[key] = F.pad(sd[key], (0, 0, 0, self.config.padded_vocab_size - V))  # (padded V, C)
        return super().load_state_dict(sd, strict=strict, assign=assign)

    def write_weights(self, folder: str | os.PathLike) -> None:
        """config.json + pytorch_model.bin into an existing folder (the caller makes it atomic)."""
        folder = Path(folder)
        (folder / CONFIG_NAME).write_text(json.dumps(dataclasses.asdict(self.config), indent=2) + "\n")
        # CPU copies (a GPU-trained file must load on a CPU machine); tied tensors stay shared
        cpu: dict[int, torch.Tensor] = {}
        torch.save({k: cpu.setdefault(v.data_ptr(), v.detach().cpu()) for k, v in self.state_dict().items()},
                   folder / WEIGHTS_NAME)

    def save_pretrained(self, save_dir: str | os.PathLike, tokenizer_file: str | os.PathLike | None = None) -> Path:
        """save_dir/{config.json, pytorch_model.bin[, tokenizer.json]}, all or nothing (atomic_dir)."""
        with atomic_dir(save_dir) as tmp:
            self.write_weights(tmp)
            if tokenizer_file is not None:
                shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
        return Path(save_dir)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> TransformerLanguageModel:
        """Our checkpoint folder (D/latest followed); HF folders are refused: import_hf.load_model opens both."""
        folder = resolve_checkpoint_dir(path)
        config_path, raw = folder / CONFIG_NAME, read_config_json(folder)
        if is_hf_config(raw):
            raise UserError(f"{folder} is a HuggingFace GPT-2 folder, not ours: load it with import_hf.load_model(path)"
                            f" or convert it once (python import_hf.py --hf_dir {folder} --out_dir NEW_DIR)")
        model = cls(GPTConfig.from_dict(raw, source=str(config_path)))
        try:
            model.load_state_dict(load_weights_file(folder))
        except RuntimeError as e:  # PyTorch's message lists every missing, unexpected or mis-shaped tensor
            raise UserError(f"weights in {folder} do not match {config_path} ({' '.join(str(e).split())[:250]}); "
                            f"use the config.json saved with these weights") from None
        return model


def read_config_json(folder: Path) -> dict[str, Any]:
    """folder/config.json (ours or HuggingFace's) as a dict; one-line UserError when it is not one."""
    return read_json(folder / CONFIG_NAME, "model config", "use an earlier checkpoint or the weights' config.json")


def is_hf_config(raw: dict[str, Any]) -> bool:
    return "model_type" in raw or "n_positions" in raw  # GPTConfig has neither key


def load_weights_file(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in folder/pytorch_model.bin; weights_only, so a pickle that would run code is refused."""
    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        raise UserError(f"no weights in {folder}: expected {WEIGHTS_NAME}; use an earlier checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, ...
        raise UserError(f"cannot load {path}: {type(e).__name__}: {first_line(e)} (the file is truncated, "
                        f"corrupt or not a plain state_dict; use an earlier checkpoint)") from None


def chunked_cross_entropy(hidden: torch.Tensor, head_weight: torch.Tensor, targets: torch.Tensor,
                          vocab_size: int, chunk_size: int) -> torch.Tensor:
    """Mean cross-entropy (skipping IGNORE_INDEX) of hidden @ head_weight.T, one chunk of rows at a time."""
    def chunk_loss_sum(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logits = (h @ w.t())[:, :vocab_size].float()  # (chunk, V)
        return F.cross_entropy(logits, t, ignore_index=IGNORE_INDEX, reduction="sum")

    # checkpoint: backward recomputes each chunk's logits, so peak memory holds one chunk's, not all of them
    total = sum(checkpoint(chunk_loss_sum, h, head_weight, t, use_reentrant=False)
                for h, t in zip(hidden.split(chunk_size), targets.split(chunk_size)))
    return total / (targets != IGNORE_INDEX).sum().clamp_min(1)
