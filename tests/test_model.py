"""The GPT-2 model: attention, causality, KV cache, sizes, checkpoints, learning."""
import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from common import UserError
from model import (IGNORE_INDEX, MODEL_CONFIGS, GPTConfig, KVCache, TransformerLanguageModel, chunked_cross_entropy,
                   get_config, reference_attention, unwrap_model)


def tiny_model(vocab=101, seed=0, **kw) -> TransformerLanguageModel:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=vocab, block_size=64, n_layer=2, n_head=4, n_embd=32)
    cfg.update(kw)
    return TransformerLanguageModel(GPTConfig(**cfg)).eval()


def test_sdpa_equals_reference_attention():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 33, 16) for _ in range(3))
    sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert (sdpa - reference_attention(q, k, v, is_causal=True)).abs().max().item() <= 1e-5
    # a boolean mask per row (as with left padding), 5 queries over 33 keys (as when decoding)
    mask = (torch.rand(2, 1, 5, 33) > 0.5) | (torch.arange(33) == 32)  # every query sees at least one key
    q5 = q[:, :, -5:]
    sdpa = F.scaled_dot_product_attention(q5, k, v, attn_mask=mask)
    assert (sdpa - reference_attention(q5, k, v, attn_mask=mask)).abs().max().item() <= 1e-5


def use_reference_attention(model: TransformerLanguageModel) -> list[tuple]:
    """Put reference_attention in every layer, through a spy that records (queries, keys, mask
    dims or None, is_causal) of each call: a test can check the switch really took effect."""
    calls = []

    def spy(q, k, v, **kwargs):
        mask = kwargs["attn_mask"]
        calls.append((q.size(2), k.size(2), None if mask is None else mask.dim(), kwargs["is_causal"]))
        return reference_attention(q, k, v, **kwargs)

    for block in model.transformer.h:
        block.attn.attention = spy
    return calls


def test_model_with_reference_attention_matches_sdpa():
    """Every mask the model builds, through SDPA and through the explicit reference: causal, a
    left-padded batch in the KV cache (per-row masks), and fewer queries than keys (decoding)."""
    model = tiny_model()
    idx = torch.randint(0, 101, (3, 50))

    def outputs() -> list[torch.Tensor]:
        padded, plain = KVCache(model.config, 3, pad_lens=[7, 0, 3]), KVCache(model.config, 3)
        return [model(idx)[0],
                model(idx[:, :30], kv_cache=padded)[0], model(idx[:, 30:40], kv_cache=padded)[0],
                model(idx[:, 40:41], kv_cache=padded)[0],
                model(idx[:, :20], kv_cache=plain)[0], model(idx[:, 20:30], kv_cache=plain)[0],
                model(idx[:, 30:31], kv_cache=plain)[0]]

    with torch.no_grad():
        fast = outputs()
        calls = use_reference_attention(model)
        slow = outputs()
    assert len(calls) == 7 * model.config.n_layer  # every layer of every forward ran the reference
    assert set(calls) == {(50, 50, None, True), (30, 30, 4, False), (10, 40, 4, False), (1, 41, 4, False),
                          (20, 20, None, True), (10, 30, 2, False), (1, 31, None, False)}
    for a, b in zip(fast, slow, strict=True):
        assert (a - b).abs().max().item() <= 1e-5


def test_causality():
    model = tiny_model()
    idx = torch.randint(0, 101, (1, 40))
    changed = idx.clone()
    changed[0, 21:] = (changed[0, 21:] + 7) % 101
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    assert torch.equal(a[:, :21], b[:, :21])
    assert (a[:, 21:] - b[:, 21:]).abs().max() > 1e-3  # and later positions do see the change


def test_logits_have_exact_vocab_columns_despite_padding():
    model = tiny_model(vocab=101)
    assert model.transformer.wte.weight.shape[0] == 128  # padded to a multiple of 64
    logits, _ = model(torch.randint(0, 101, (2, 5)))
    assert logits.shape == (2, 5, 101)


def test_kv_cache_matches_full_forward_over_64_steps():
    model = tiny_model(block_size=80)
    idx = torch.randint(0, 101, (2, 80))
    with torch.no_grad():
        full, _ = model(idx)
        cache = KVCache(model.config, batch_size=2)
        pieces = [model(idx[:, :16], kv_cache=cache)[0]]
        for t in range(16, 80):  # 64 single-token steps
            pieces.append(model(idx[:, t:t + 1], kv_cache=cache)[0])
    assert (torch.cat(pieces, 1) - full).abs().max().item() <= 1e-5
    assert cache.pos == 80


def test_kv_cache_chunked_prefill_and_last_only():
    model = tiny_model()
    idx = torch.randint(0, 101, (1, 30))
    with torch.no_grad():
        full, _ = model(idx)
        cache = KVCache(model.config, batch_size=1)
        model(idx[:, :11], kv_cache=cache)
        last, _ = model(idx[:, 11:], kv_cache=cache, last_only=True)
    assert last.shape == (1, 1, 101)
    assert (last[0, 0] - full[0, -1]).abs().max().item() <= 1e-5


def test_kv_cache_left_padded_batch_equals_single_rows():
    model = tiny_model()
    a, b = torch.randint(0, 101, (1, 9)), torch.randint(0, 101, (1, 20))
    batch = torch.cat([torch.cat([torch.zeros(1, 11, dtype=torch.long), a], 1), b])
    with torch.no_grad():
        cache = KVCache(model.config, batch_size=2, pad_lens=[11, 0])
        out, _ = model(batch, kv_cache=cache)
        next_tok = torch.tensor([[5], [6]])
        step, _ = model(next_tok, kv_cache=cache)
        ref_a, _ = model(torch.cat([a, next_tok[:1]], 1))
        ref_b, _ = model(torch.cat([b, next_tok[1:]], 1))
    assert (out[0, 11:] - ref_a[0, :-1]).abs().max() <= 1e-5
    assert (step[0, 0] - ref_a[0, -1]).abs().max() <= 1e-5
    assert (step[1, 0] - ref_b[0, -1]).abs().max() <= 1e-5


def test_kv_cache_refuses_to_overflow():
    model = tiny_model(block_size=16)
    cache = KVCache(model.config, batch_size=1)
    with torch.no_grad():
        model(torch.zeros(1, 16, dtype=torch.long), kv_cache=cache)
        with pytest.raises(ValueError, match="cache full"):
            model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)


@pytest.mark.parametrize("size,untied,tied", [
    ("tiny", 8_621_568, 4_525_568),
    ("small", 19_609_088, 11_417_088),
    ("medium", 35_420_160, 23_132_160),
    ("gpt2_small", 134_994_432, 110_418_432),
])
def test_parameter_counts_at_vocab_32000(size, untied, tied):
    with torch.device("meta"):
        assert TransformerLanguageModel(get_config(size, 32000)).num_parameters() == untied
        assert TransformerLanguageModel(get_config(size, 32000, tie_embeddings=True)).num_parameters() == tied


def test_model_configs_are_the_seeds():
    assert {k: (v["n_layer"], v["n_head"], v["n_embd"], v["block_size"]) for k, v in MODEL_CONFIGS.items()} == {
        "tiny": (2, 4, 128, 256), "small": (4, 4, 256, 256), "medium": (6, 6, 384, 512),
        "gpt2_small": (12, 12, 768, 1024)}


def test_flops_per_token_formula():
    """6N + 12 L H Q T with N the matmul parameters: the untied token table is a lookup (not counted),
    a tied one is the head (counted once); the position table never counts."""
    attention = 12 * 12 * 12 * 64 * 1024
    with torch.device("meta"):
        untied = TransformerLanguageModel(get_config("gpt2_small", 32000))
        tied = TransformerLanguageModel(get_config("gpt2_small", 32000, tie_embeddings=True))
    assert untied.flops_per_token() == 6 * (134_994_432 - 1024 * 768 - 32000 * 768) + attention
    assert tied.flops_per_token() == 6 * (110_418_432 - 1024 * 768) + attention
    assert untied.flops_per_token() == tied.flops_per_token()  # the same matrix multiplies


def test_bad_configs_are_clear_errors():
    with pytest.raises(UserError, match="n_embd=100 is not divisible by n_head=3"):
        GPTConfig(n_embd=100, n_head=3)
    with pytest.raises(UserError, match="unknown; choose one of tiny, small, medium, gpt2_small"):
        get_config("huge", 100)
    with pytest.raises(UserError, match="unknown model config keys"):
        GPTConfig.from_dict({"vocab_size": 5, "n_ctx": 3})


def test_constructors_from_config_json_kwargs_and_dataclass(tmp_path):
    model = tiny_model(tie_embeddings=True)
    model.save_pretrained(tmp_path / "ck")
    cfg = json.load(open(tmp_path / "ck" / "config.json"))
    assert cfg == dataclasses.asdict(model.config)
    assert TransformerLanguageModel(**cfg).config == model.config
    assert TransformerLanguageModel(GPTConfig(**cfg)).config == model.config


def test_save_from_pretrained_round_trip_and_latest_pointer(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "step_00000001")
    (tmp_path / "latest").write_text("step_00000001\n")
    loaded = TransformerLanguageModel.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, 101, (2, 17))
    with torch.no_grad():
        assert torch.equal(model(idx)[0], loaded(idx)[0])
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())


def test_seed_snippet_load_state_dict_from_torch_load(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "checkpoint")
    fresh = TransformerLanguageModel(**json.load(open(tmp_path / "checkpoint" / "config.json")))
    fresh.load_state_dict(torch.load(tmp_path / "checkpoint" / "pytorch_model.bin"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))


def test_wrapped_prefixes_are_stripped():
    model = tiny_model()
    sd = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    fresh = tiny_model(seed=1)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.lm_head.weight, model.lm_head.weight)
    compiled_like = torch.nn.Module()
    compiled_like._orig_mod = model
    assert unwrap_model(compiled_like) is model
    assert not any(k.startswith(("_orig_mod", "module")) for k in model.state_dict())


def test_tied_embeddings_share_storage_and_load_without_head_key():
    model = tiny_model(tie_embeddings=True)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    sd = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    fresh = tiny_model(seed=3, tie_embeddings=True)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.lm_head.weight, model.transformer.wte.weight)


def test_truncated_weights_are_a_clear_error(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "ck")
    weights = tmp_path / "ck" / "pytorch_model.bin"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(UserError, match="pytorch_model.bin.*truncated"):
        TransformerLanguageModel.from_pretrained(tmp_path / "ck")


def test_code_running_pickle_is_refused(tmp_path):
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path}/pwned",))

    model = tiny_model()
    model.save_pretrained(tmp_path / "ck")
    with open(tmp_path / "ck" / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(UserError):
        TransformerLanguageModel.from_pretrained(tmp_path / "ck")
    assert not (tmp_path / "pwned").exists()


def test_loss_ignores_ignore_index_and_chunked_loss_matches():
    assert IGNORE_INDEX == -100  # F.cross_entropy's default, as HF labels use it
    model = tiny_model()
    idx = torch.randint(0, 101, (2, 24))
    targets = torch.randint(0, 101, (2, 24))
    targets[0, :10] = IGNORE_INDEX
    logits, loss = model(idx, targets)
    keep = targets != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    assert abs(loss.item() - manual.item()) < 1e-6
    _, chunked = model(idx, targets, loss_chunk_size=7)
    assert abs(chunked.item() - loss.item()) < 1e-5
    # gradients agree too
    g_full = torch.autograd.grad(loss, model.lm_head.weight)[0]
    g_chunk = torch.autograd.grad(chunked, model.lm_head.weight)[0]
    assert (g_full - g_chunk).abs().max() < 1e-6


def test_chunked_cross_entropy_all_ignored_is_zero():
    h = torch.randn(4, 8, requires_grad=True)
    loss = chunked_cross_entropy(h, torch.randn(16, 8), torch.full((4,), IGNORE_INDEX), 10, 3)
    assert loss.item() == 0.0


def test_gpt2_init_scales_residual_projections():
    torch.manual_seed(0)
    m = TransformerLanguageModel(GPTConfig(vocab_size=64, block_size=32, n_layer=8, n_head=4, n_embd=256))
    std = m.transformer.h[0].attn.c_proj.weight.std().item()
    assert abs(std - 0.02 / 4) < 0.0005  # 0.02 / sqrt(2 * 8)
    assert abs(m.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 0.001
    assert m.transformer.h[0].attn.c_attn.bias.abs().max() == 0


@pytest.mark.slow
def test_tiny_model_overfits_one_text():
    torch.manual_seed(0)
    text = "The capital of France is Paris. Machine learning learns from data. " * 2
    chars = sorted(set(text))
    ids = torch.tensor([[chars.index(c) for c in text]])
    model = TransformerLanguageModel(get_config("tiny", len(chars), block_size=ids.size(1) - 1))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    x, y = ids[:, :-1], ids[:, 1:]
    for step in range(300):
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if loss.item() < 0.1:
            break
    assert loss.item() < 0.1, f"loss {loss.item():.3f} after {step + 1} steps"
