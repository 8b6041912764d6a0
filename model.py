"""GPT-2, exactly: the model, its configs, a KV cache for fast decoding, and checkpoint I/O.

Weights map one to one onto HuggingFace `GPT2LMHeadModel` (see export_hf.py): learned position
embeddings, pre-LayerNorm blocks with bias, fused QKV, causal SDPA attention, tanh-GELU, 4x MLP,
final LayerNorm, a bias-free head, GPT-2 initialisation.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from common import UserError, atomic_dir, first_line, read_json, resolve_checkpoint_dir

WEIGHTS_NAME = "pytorch_model.bin"
CONFIG_NAME = "config.json"


@dataclass
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
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UserError(f"model config: {name}={value!r} must be a positive integer")
        if self.n_embd % self.n_head != 0:
            raise UserError(f"model config: n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                            f"pick n_embd a multiple of n_head (e.g. {self.n_head * 64})")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise UserError(f"model config: dropout={self.dropout} must be in [0, 1)")

    @property
    def padded_vocab_size(self) -> int:
        """Embedding/head rows, rounded up to a multiple of 64 for faster matmuls. Internal only:
        logits and exports have exactly vocab_size columns."""
        return (self.vocab_size + 63) // 64 * 64

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "GPTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"{source}: unknown model config keys {unknown}; expected only {sorted(known)}")
        try:
            return cls(**d)
        except UserError as e:
            raise UserError(f"{source}: {e}") from None
        except TypeError as e:
            raise UserError(f"{source}: {e}; expected the fields {sorted(known)}") from None


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


# ---------------------------------------------------------------------------- KV cache

class KVCache:
    """Keys and values of every layer for incremental decoding, preallocated to `max_len`.

    `pad_lens` (one int per row) supports a left-padded batch: row b's first pad_lens[b] slots
    are padding, never attended to, and its real tokens get positions 0, 1, 2, ..."""

    def __init__(self, config: GPTConfig, batch_size: int, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32, max_len: int | None = None,
                 pad_lens: torch.Tensor | list[int] | None = None) -> None:
        self.max_len = max_len or config.block_size
        head_dim = config.n_embd // config.n_head
        shape = (config.n_layer, 2, batch_size, config.n_head, self.max_len, head_dim)
        self.kv = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0  # slots filled so far
        self.pad_lens = None if pad_lens is None else torch.as_tensor(pad_lens, device=device, dtype=torch.long)

    def reset(self) -> None:
        self.pos = 0

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only these batch rows (finished sequences leave the batch)."""
        self.kv = self.kv.index_select(2, rows)
        if self.pad_lens is not None:
            self.pad_lens = self.pad_lens.index_select(0, rows)

    def position_ids(self, T: int, device: torch.device) -> torch.Tensor:
        pos = torch.arange(self.pos, self.pos + T, device=device)
        if self.pad_lens is None:
            return pos.unsqueeze(0)
        return (pos.unsqueeze(0) - self.pad_lens.unsqueeze(1)).clamp_min(0)

    def attn_mask(self, T: int, device: torch.device) -> torch.Tensor | None:
        """Boolean mask (True = attend) over the filled slots, or None when is_causal suffices."""
        S = self.pos + T
        if self.pad_lens is None and (self.pos == 0 or T == 1):
            return None
        q = torch.arange(self.pos, S, device=device).view(T, 1)
        k = torch.arange(S, device=device).view(1, S)
        mask = k <= q
        if self.pad_lens is not None:
            real = k.unsqueeze(0) >= self.pad_lens.view(-1, 1, 1)  # (B, 1, S)
            mask = (mask.unsqueeze(0) & real) | (k == q).unsqueeze(0)  # a pad query sees itself: no NaN rows
            mask = mask.unsqueeze(1)  # (B, 1, T, S)
        return mask


# ---------------------------------------------------------------------------- the model

def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
    """Explicit masked softmax(QK^T / sqrt(d)) V: the baseline SDPA is tested and benchmarked against."""
    att = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    if is_causal:
        T, S = q.size(-2), k.size(-2)
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
    if mask is not None:
        att = att.masked_fill(~mask, float("-inf"))
    return F.softmax(att, dim=-1) @ v


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.n_head, self.n_embd, self.layer_idx = config.n_head, config.n_embd, layer_idx
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout
        self.use_sdpa = True  # False: reference_attention (tests and benchmarks only)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        mask, is_causal = None, True
        if kv_cache is not None:
            start = kv_cache.pos
            layer_kv = kv_cache.kv[self.layer_idx]
            layer_kv[0, :, :, start:start + T] = k
            layer_kv[1, :, :, start:start + T] = v
            k, v = layer_kv[0, :, :, :start + T], layer_kv[1, :, :, :start + T]
            mask = kv_cache.attn_mask(T, x.device)
            is_causal = mask is None and T > 1
        dropout_p = self.dropout if self.training else 0.0
        if self.use_sdpa:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)
        else:
            y = F.dropout(reference_attention(q, k, v, mask, is_causal), dropout_p, self.training)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache)
        return x + self.mlp(self.ln_2(x))


def _strip_wrapper_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove `_orig_mod.` (torch.compile) and `module.` (DDP) from keys."""
    out = {}
    for key, value in state_dict.items():
        parts = [p for p in key.split(".") if p not in ("_orig_mod", "module")]
        out[".".join(parts)] = value
    return out


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain TransformerLanguageModel inside DDP and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


class TransformerLanguageModel(nn.Module):
    def __init__(self, config: GPTConfig | dict | None = None, **kwargs: Any) -> None:
        super().__init__()
        if config is None:
            config = GPTConfig(**kwargs)
        elif isinstance(config, dict):
            config = GPTConfig.from_dict({**config, **kwargs})
        self.config = config
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
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled down by the number of residual additions.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        with torch.no_grad():  # padding rows stay zero: they get no gradient and export drops them
            self.transformer.wte.weight[config.vocab_size:].zero_()
            self.lm_head.weight[config.vocab_size:].zero_()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ------------------------------------------------------------------ sizes and FLOPs

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Unique parameters (a tied head counts once). exclude_embeddings drops the token
        and position embedding tables (and a tied head with them)."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token: 6N + 12 L H Q T (PaLM appendix B), N = the parameters that take
        part in matrix multiplies: all but the position table and, when untied, the token table
        (a lookup; tied, it is the head and counts once)."""
        c = self.config
        T = seq_len or c.block_size
        N = self.num_parameters() - self.transformer.wpe.weight.numel()
        if not c.tie_embeddings:
            N -= self.transformer.wte.weight.numel()
        return 6 * N + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * T

    def estimate_mfu(self, tokens_per_second: float, peak_flops: float, seq_len: int | None = None) -> float:
        return tokens_per_second * self.flops_per_token(seq_len) / peak_flops

    # ------------------------------------------------------------------ forward

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                kv_cache: KVCache | None = None, last_only: bool = False,
                loss_chunk_size: int = 0) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Returns (logits, loss). logits: (B, T, vocab_size), or (B, 1, vocab_size) with last_only.
        loss ignores targets == -100. With loss_chunk_size > 0 and targets, the loss is computed
        over chunks of tokens whose logits are recomputed in backward, and logits come back None:
        a (B*T, 32k) logits tensor never lives in memory."""
        B, T = idx.size()
        if kv_cache is not None:
            if kv_cache.pos + T > kv_cache.max_len:
                raise ValueError(f"KV cache full: {kv_cache.pos} + {T} > {kv_cache.max_len}; slide the window")
            if kv_cache.pad_lens is None and kv_cache.pos + T > self.config.block_size:
                raise ValueError(f"position {kv_cache.pos + T - 1} exceeds block_size {self.config.block_size}")
            pos = kv_cache.position_ids(T, idx.device)
        else:
            if T > self.config.block_size:
                raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
            pos = torch.arange(T, device=idx.device).unsqueeze(0)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x, kv_cache)
        x = self.transformer.ln_f(x)
        if kv_cache is not None:
            kv_cache.pos += T
        V = self.config.vocab_size
        if targets is not None and loss_chunk_size > 0:
            return None, chunked_cross_entropy(x.view(B * T, -1), self.lm_head.weight, targets.reshape(-1),
                                               V, loss_chunk_size)
        if last_only:
            x = x[:, -1:, :]
        logits = self.lm_head(x)[..., :V]
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, V).float(), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self, weight_decay: float, learning_rate: float,
                             betas: tuple[float, float] = (0.9, 0.95),
                             device_type: str = "cpu") -> torch.optim.AdamW:
        """AdamW; weight decay only on >= 2-D tensors (matmuls, embeddings), never on biases and
        LayerNorms. Fused kernel on CUDA when this torch has it."""
        params = {n: p for n, p in self.named_parameters() if p.requires_grad}
        decay = [p for p in params.values() if p.dim() >= 2]
        no_decay = [p for p in params.values() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **({"fused": True} if fused else {}))

    # ------------------------------------------------------------------ weights I/O

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True, assign: bool = False):
        """Accepts dicts saved from torch.compile / DDP wrappers, tied dicts without lm_head.weight,
        and embeddings saved at exactly vocab_size rows (padded here)."""
        sd = _strip_wrapper_prefixes(state_dict)
        if self.config.tie_embeddings and "lm_head.weight" not in sd and "transformer.wte.weight" in sd:
            sd["lm_head.weight"] = sd["transformer.wte.weight"]
        V, Vp = self.config.vocab_size, self.config.padded_vocab_size
        for key in ("transformer.wte.weight", "lm_head.weight"):
            w = sd.get(key)
            if w is not None and w.dim() == 2 and w.size(0) == V and V != Vp:
                sd[key] = torch.cat([w, w.new_zeros(Vp - V, w.size(1))])
        return super().load_state_dict(sd, strict=strict, assign=assign)

    def write_weights(self, folder: str | os.PathLike) -> None:
        """config.json + pytorch_model.bin into an existing folder (the caller makes it atomic)."""
        folder = Path(folder)
        (folder / CONFIG_NAME).write_text(json.dumps(dataclasses.asdict(self.config), indent=2) + "\n")
        # CPU copies (a GPU-trained file must load on a CPU machine); tied tensors stay shared
        cpu: dict[int, torch.Tensor] = {}
        state = {k: cpu.setdefault(v.data_ptr(), v.detach().cpu()) for k, v in unwrap_model(self).state_dict().items()}
        torch.save(state, folder / WEIGHTS_NAME)

    def save_pretrained(self, save_dir: str | os.PathLike, tokenizer_file: str | os.PathLike | None = None) -> Path:
        """Write save_dir/{config.json, pytorch_model.bin[, tokenizer.json]} as a whole: built in a
        temporary sibling folder, then renamed, so a crash never leaves a half folder."""
        import shutil

        with atomic_dir(save_dir) as tmp:
            self.write_weights(tmp)
            if tokenizer_file is not None:
                shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
        save_dir = Path(save_dir)
        return save_dir

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> "TransformerLanguageModel":
        """Load our checkpoint folder (D/latest, or D holding config.json). A HuggingFace GPT-2
        folder (config.json with model_type 'gpt2') is converted through import_hf."""
        folder = resolve_checkpoint_dir(path)
        raw = read_json(folder / CONFIG_NAME, "model config",
                        fix="use an earlier checkpoint, or the config.json saved with these weights")
        if not isinstance(raw, dict):
            raise UserError(f"{folder / CONFIG_NAME} holds a {type(raw).__name__}, not a model config object; "
                            f"use the config.json saved with the weights")
        if raw.get("model_type") == "gpt2" or "n_positions" in raw:
            from import_hf import load_hf_gpt2  # lazy: only for HF folders

            return load_hf_gpt2(folder)
        config = GPTConfig.from_dict(raw, source=str(folder / CONFIG_NAME))
        model = cls(config)
        try:
            model.load_state_dict(load_weights_file(folder))
        except RuntimeError as e:
            detail = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln or "Missing" in ln
                           or "Unexpected" in ln), first_line(e))
            raise UserError(f"weights in {folder} do not match {folder / CONFIG_NAME} ({detail[:200]}); "
                            f"use the config.json saved with these weights") from None
        return model


def load_weights_file(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """pytorch_model.bin (weights_only: a pickle that would run code is refused) or model.safetensors."""
    folder = Path(folder)
    bin_path, st_path = folder / WEIGHTS_NAME, folder / "model.safetensors"
    if bin_path.is_file():
        try:
            return torch.load(bin_path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated zip, foreign pickle, ...
            raise UserError(f"cannot load {bin_path}: {type(e).__name__}: {first_line(e)} "
                            f"(the file is truncated, corrupt or not a plain state_dict; use an earlier checkpoint)") from None
    if st_path.is_file():
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise UserError(f"{st_path} needs the safetensors package: pip install safetensors") from None
        return load_file(str(st_path))
    raise UserError(f"no weights in {folder}: expected {WEIGHTS_NAME} or model.safetensors")


def chunked_cross_entropy(hidden: torch.Tensor, head_weight: torch.Tensor, targets: torch.Tensor,
                          vocab_size: int, chunk_size: int) -> torch.Tensor:
    """Mean cross-entropy (ignore_index -100) of hidden @ head_weight.T, chunk by chunk. Each
    chunk's logits are recomputed in backward (checkpoint), so peak memory holds one chunk."""
    def chunk_loss_sum(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logits = (h @ w.t())[:, :vocab_size].float()
        return F.cross_entropy(logits, t, ignore_index=-100, reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.size(0), chunk_size):
        h, t = hidden[start:start + chunk_size], targets[start:start + chunk_size]
        total = total + checkpoint(chunk_loss_sum, h, head_weight, t, use_reentrant=False)
    count = (targets != -100).sum().clamp_min(1)
    return total / count
