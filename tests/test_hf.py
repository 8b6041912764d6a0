"""HuggingFace interop: export_hf.py / import_hf.py against transformers.GPT2LMHeadModel.

Tests that compare with transformers skip cleanly without it; the mapping, refusal and
round-trip tests need only torch, tokenizers and safetensors."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import UserError  # noqa: E402
from export_hf import export_hf  # noqa: E402
from import_hf import import_hf, load_model  # noqa: E402
from model import GPTConfig, TransformerLanguageModel  # noqa: E402
from tokenizer import CharTokenizer, special_tokens_for  # noqa: E402
from tokenizer_bpe import BPETokenizer, portable_tokenizer_json, render_chat  # noqa: E402

CORPUS = [
    "<|user|>What is the capital of France?\n<|assistant|>The capital of France is Paris.\n<|endoftext|>",
    "<|system|>Be brief.\n<|user|>Explain machine learning.\n<|assistant|>Computers learn from data.\n<|endoftext|>",
    "The quick brown fox jumps over the lazy dog. Le café était très bon; 東京は大きい。\n",
] * 30
MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And of Japan? 東京?"}]
TEXTS = ["hello world", "What is the capital of France?\n", "<|user|>hi<|assistant|>yo<|endoftext|>",
         "  spaces\tand\nnewlines  ", "unseen bytes: Ω ≈ 😀 ß", ""]


@pytest.fixture(scope="module")
def tok_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok = BPETokenizer().train(CORPUS, vocab_size=301, special_tokens=special_tokens_for(chat=True),
                               min_frequency=1, show_progress=False)
    tok.save(path)
    assert tok.vocab_size % 64 != 0  # the padded rows must be trimmed
    return path


def make_model(vocab_size: int, tie: bool = False, bias: bool = True, dropout: float = 0.0,
               seed: int = 0) -> TransformerLanguageModel:
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=vocab_size, block_size=48, n_layer=2, n_head=4, n_embd=64, dropout=dropout,
                    bias=bias, tie_embeddings=tie)
    model = TransformerLanguageModel(cfg).eval()
    with torch.no_grad():  # non-zero biases and LayerNorm affines, so a mapping slip shows in the logits
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def hf_model(folder: Path):
    transformers = pytest.importorskip("transformers")
    model, info = transformers.GPT2LMHeadModel.from_pretrained(str(folder), output_loading_info=True,
                                                               local_files_only=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


def chat_ids(result) -> list[int]:
    """apply_chat_template(tokenize=True) returns a list (4.x) or a BatchEncoding (5.x)."""
    return list(result["input_ids"] if hasattr(result, "keys") else result)


# ---------------------------------------------------------------------------- export vs transformers

@pytest.mark.parametrize("tie,bias", [(False, True), (True, True), (False, False)])
def test_exported_logits_match_transformers(tok_file, tmp_path, tie, bias):
    V = BPETokenizer(tok_file).vocab_size
    model = make_model(V, tie=tie, bias=bias)
    out = export_hf(model, tok_file, tmp_path / "hf")
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "generation_config.json",
                                               "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["vocab_size"] == V and cfg["n_positions"] == 48 and cfg["tie_word_embeddings"] is tie
    assert cfg["eos_token_id"] == cfg["bos_token_id"] == 0 and cfg["architectures"] == ["GPT2LMHeadModel"]
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("transformer.wte.weight").shape == (V, 64)  # padding trimmed
    assert ("lm_head.weight" in keys) is (not tie)
    assert not any(k.endswith((".attn.bias", ".attn.masked_bias")) for k in keys)

    hf = hf_model(out)
    assert hf.config.vocab_size == V
    torch.manual_seed(1)
    idx = torch.randint(0, V, (3, 48))
    with torch.no_grad():
        ours, _ = model(idx)
        theirs = hf(idx).logits
    assert theirs.shape == ours.shape == (3, 48, V)
    assert (ours - theirs).abs().max().item() <= 1e-4
    if tie:
        assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()


def test_tokenizer_and_chat_template_match(tok_file, tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = BPETokenizer(tok_file)
    out = export_hf(make_model(tok.vocab_size), tok_file, tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert hf_tok.eos_token == hf_tok.bos_token == "<|endoftext|>" and hf_tok.eos_token_id == 0
    assert hf_tok.model_max_length == 48
    for text in TEXTS:
        assert hf_tok.encode(text) == tok.encode(text), text
        assert hf_tok.decode(tok.encode(text)) == tok.decode(tok.encode(text))
    assert hf_tok.convert_tokens_to_ids(["<|user|>", "<|assistant|>", "<|system|>"]) == [1, 2, 3]
    for gen_prompt in (False, True):
        ours = tok.encode(render_chat(MESSAGES, add_generation_prompt=gen_prompt))
        theirs = chat_ids(hf_tok.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=gen_prompt))
        assert theirs == ours
        assert ours[-1] == (2 if gen_prompt else 0)


def test_greedy_generate_matches_transformers(tok_file, tmp_path):
    tok = BPETokenizer(tok_file)
    model = make_model(tok.vocab_size, seed=3)
    out = export_hf(model, tok_file, tmp_path / "hf")
    hf = hf_model(out)
    gen_cfg = json.loads((out / "generation_config.json").read_text())
    stop = {0, 1, 2, 3}  # a chat model's reply ends at EOT or the next role token
    assert set(gen_cfg["eos_token_id"]) == stop and gen_cfg["pad_token_id"] == 0

    prompt = tok.encode(render_chat(MESSAGES[:2], add_generation_prompt=True))
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(12):
            logits, _ = model(torch.tensor([ids]), last_only=True)
            ids.append(int(logits[0, -1].argmax()))
            if ids[-1] in stop:
                break
        x = torch.tensor([prompt])
        theirs = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=12, do_sample=False)[0].tolist()
    assert len(ids) > len(prompt) + 3  # a real continuation, not an immediate stop
    assert theirs == ids


# ---------------------------------------------------------------------------- import

@pytest.mark.parametrize("tie", [False, True])
def test_import_of_export_reproduces_state_dict(tok_file, tmp_path, tie):
    V = BPETokenizer(tok_file).vocab_size
    model = make_model(V, tie=tie, dropout=0.1)
    hf_dir = export_hf(model, tok_file, tmp_path / "hf")
    ckpt = import_hf(hf_dir, tmp_path / "ckpt")
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "pytorch_model.bin", "tokenizer.json"]
    assert (ckpt / "tokenizer.json").read_bytes() == (hf_dir / "tokenizer.json").read_bytes()
    exported, original = json.loads((hf_dir / "tokenizer.json").read_text()), json.loads(Path(tok_file).read_text())
    assert exported["model"]["merges"] == [m if isinstance(m, str) else " ".join(m)
                                           for m in original["model"]["merges"]]
    exported["model"]["merges"] = original["model"]["merges"]
    assert exported == original  # only the merges' notation changes (portable_tokenizer_json)
    back = TransformerLanguageModel.from_pretrained(ckpt)
    assert dataclasses.asdict(back.config) == dataclasses.asdict(model.config)
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        if key in ("transformer.wte.weight", "lm_head.weight"):
            assert torch.equal(a[key][:V], b[key][:V]), key
            assert not b[key][V:].any(), key  # padding rows come back as zeros
        else:
            assert torch.equal(a[key], b[key]), key
    if tie:
        assert back.lm_head.weight is back.transformer.wte.weight
    # load_model also reads the HF folder directly; from_pretrained is for our folders only and says so
    direct = load_model(hf_dir)
    (tmp_path / "latest").write_text("ckpt\n")  # and our folders, following D/latest as from_pretrained does
    via_latest = load_model(tmp_path)
    with pytest.raises(UserError) as e:
        TransformerLanguageModel.from_pretrained(hf_dir)
    assert "HuggingFace GPT-2 folder" in str(e.value) and "import_hf.load_model" in str(e.value)
    assert "\n" not in str(e.value)
    idx = torch.randint(0, V, (2, 16))
    with torch.no_grad():
        assert torch.equal(direct.eval()(idx)[0], back.eval()(idx)[0])
        assert torch.equal(via_latest.eval()(idx)[0], back(idx)[0])
        assert torch.allclose(model(idx)[0], back(idx)[0], atol=0, rtol=0)


def test_import_transformers_own_files(tmp_path, capsys):
    """Folders written by transformers itself: save_pretrained (tied, no lm_head.weight) and the
    original hub layout (GPT2Model key names, attn.bias buffers, pytorch_model.bin)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(5)
    cfg = transformers.GPT2Config(vocab_size=99, n_positions=24, n_embd=32, n_layer=2, n_head=2,
                                  activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    hf.save_pretrained(tmp_path / "saved")
    hub = tmp_path / "hub"
    hub.mkdir()
    sd = {k.removeprefix("transformer."): v.clone() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    for i in range(2):
        sd[f"h.{i}.attn.bias"] = torch.ones(1, 1, 24, 24, dtype=torch.uint8).tril()
        sd[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(sd, hub / "pytorch_model.bin")
    raw = json.loads((tmp_path / "saved" / "config.json").read_text())
    # transformers 4.x save_pretrained writes only non-default keys, so this one may already be absent
    raw.pop("tie_word_embeddings", None)  # old configs omit it: it defaults to true, as in transformers
    (hub / "config.json").write_text(json.dumps(raw))
    # torch.save(model.state_dict()) layout: lm_head.weight is a copy of wte, the config has no tie key
    copied = tmp_path / "copied"
    copied.mkdir()
    (copied / "config.json").write_text(json.dumps(raw))
    torch.save({k: v.clone() for k, v in hf.state_dict().items()}, copied / "pytorch_model.bin")
    # tie_word_embeddings true, written or absent, wins over a stray lm_head.weight (with a note)
    strays = []
    for name, config in (("stray_true", {**raw, "tie_word_embeddings": True}), ("stray_absent", raw)):
        strays.append(tmp_path / name)
        strays[-1].mkdir()
        (strays[-1] / "config.json").write_text(json.dumps(config))
        torch.save({**hf.state_dict(), "lm_head.weight": torch.randn(99, 32)}, strays[-1] / "pytorch_model.bin")
    idx = torch.randint(0, 99, (2, 24))
    with torch.no_grad():
        expected = hf(idx).logits
        for folder in (tmp_path / "saved", hub, copied, *strays):
            capsys.readouterr()
            ours = load_model(folder).eval()
            assert ours.config.tie_embeddings and ours.config.vocab_size == 99 and ours.config.block_size == 24
            assert (ours(idx)[0] - expected).abs().max().item() <= 1e-5
            noted = "lm_head.weight differs from wte.weight" in capsys.readouterr().err
            assert noted is (folder in strays), folder
        # transformers (4.x and 5.x) reads the copied-head folder as tied too; on the stray folders its
        # versions disagree (4.40, 4.46-4.57 and 5.x each differ), hence only our own note is checked there
        copied_hf = hf_model(copied)
        assert copied_hf.config.tie_word_embeddings
        assert copied_hf.lm_head.weight.data_ptr() == copied_hf.transformer.wte.weight.data_ptr()
        assert (copied_hf(idx).logits - expected).abs().max().item() <= 1e-5


def test_import_sharded_and_bin(tok_file, tmp_path):
    from safetensors.torch import load_file, save_file

    V = BPETokenizer(tok_file).vocab_size
    model = make_model(V)
    hf_dir = export_hf(model, tok_file, tmp_path / "hf")
    sd = load_file(str(hf_dir / "model.safetensors"))
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_bytes((hf_dir / "config.json").read_bytes())
    keys = sorted(sd)
    weight_map = {}
    for n, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2:])):
        name = f"model-0000{n + 1}-of-00002.safetensors"
        save_file({k: sd[k] for k in part}, str(sharded / name))
        weight_map.update({k: name for k in part})
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    bin_dir = export_hf(model, tok_file, tmp_path / "bin", safe_serialization=False)
    assert (bin_dir / "pytorch_model.bin").is_file() and not (bin_dir / "model.safetensors").exists()
    idx = torch.randint(0, V, (1, 20))
    with torch.no_grad():
        expected = model(idx)[0]
        for folder in (sharded, bin_dir):
            assert torch.equal(load_model(folder).eval()(idx)[0], expected)


def test_import_builds_tokenizer_from_vocab_and_merges(tok_file, tmp_path):
    """Folders with only GPT-2's vocab.json + merges.txt get an equivalent tokenizer.json."""
    tok = BPETokenizer(tok_file)
    hf_dir = export_hf(make_model(tok.vocab_size), tok_file, tmp_path / "hf")
    (hf_dir / "tokenizer.json").unlink()
    tok.tokenizer.model.save(str(hf_dir))  # vocab.json + merges.txt
    ckpt = import_hf(hf_dir, tmp_path / "ckpt")
    rebuilt = BPETokenizer(ckpt / "tokenizer.json")
    for text in ["What is the capital of France?<|endoftext|>", "unseen bytes: Ω ≈ 😀 ß\n"]:
        assert rebuilt.encode(text) == tok.encode(text)
    assert rebuilt.eot_token_id == 0


def test_portable_tokenizer_json(tok_file):
    """Merges as "a b" strings, the one notation every `tokenizers` reads (0.20+ writes [a, b] pairs,
    which 0.19 and older, as pinned by transformers 4.40-4.44, refuse to parse); same tokenizer."""
    from tokenizers import Tokenizer

    text = Path(tok_file).read_text(encoding="utf-8")
    pairs = json.loads(text)
    pairs["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m for m in pairs["model"]["merges"]]
    portable = portable_tokenizer_json(json.dumps(pairs))
    merges = json.loads(portable)["model"]["merges"]
    assert len(merges) == len(pairs["model"]["merges"]) > 0
    assert all(isinstance(m, str) and m.count(" ") == 1 for m in merges)
    assert json.loads(Tokenizer.from_str(portable).to_str()) == json.loads(Tokenizer.from_str(text).to_str())
    assert portable_tokenizer_json(portable) == portable  # already portable: verbatim
    spaced = json.loads(portable)
    spaced["model"]["merges"] = [["a ", "b"]]  # a symbol holding a space: only the pair form is exact
    assert portable_tokenizer_json(json.dumps(spaced)) == json.dumps(spaced)


def test_export_without_safetensors_falls_back(tok_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)  # import fails as if not installed
    model = make_model(BPETokenizer(tok_file).vocab_size)
    out = export_hf(model, tok_file, tmp_path / "hf")
    assert (out / "pytorch_model.bin").is_file() and not (out / "model.safetensors").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "safetensors is not installed" in err[0]


@pytest.mark.parametrize("key,value,words", [
    ("activation_function", "gelu", "tanh GELU"),
    ("n_inner", 100, "4 * n_embd"),
    ("scale_attn_by_inverse_layer_idx", True, "1/layer"),
    ("model_type", "llama", "not 'gpt2'"),
    ("layer_norm_epsilon", 1e-6, "1e-5"),
    ("add_cross_attention", True, "cross-attention"),
])
def test_refuses_non_gpt2(tok_file, tmp_path, key, value, words):
    hf_dir = export_hf(make_model(BPETokenizer(tok_file).vocab_size), tok_file, tmp_path / "hf")
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg[key] = value
    (hf_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError) as e:
        load_model(hf_dir)
    msg = str(e.value)
    assert str(hf_dir / "config.json") in msg and f"{key}={value!r}" in msg and words in msg
    assert "\n" not in msg
    with pytest.raises(UserError):
        import_hf(hf_dir, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


def test_refuses_bad_weights(tok_file, tmp_path):
    V = BPETokenizer(tok_file).vocab_size
    hf_dir = export_hf(make_model(V), tok_file, tmp_path / "hf")
    cfg = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**cfg, "vocab_size": V + 5}))
    with pytest.raises(UserError, match="vocab_size"):
        load_model(hf_dir)
    (hf_dir / "config.json").write_text(json.dumps(cfg))
    (hf_dir / "model.safetensors").unlink()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"x": Evil()}, hf_dir / "pytorch_model.bin")
    with pytest.raises(UserError, match="weights_only=True"):
        load_model(hf_dir)


# ---------------------------------------------------------------------------- char tokenizer

def test_char_tokenizer_export(tmp_path):
    from tokenizers import Tokenizer

    tok = CharTokenizer.from_text("hello world\nabc <|user|>x", special_tokens=special_tokens_for(chat=True))
    tok_path = tmp_path / "char.json"
    tok.save(tok_path)
    out = export_hf(make_model(tok.vocab_size), tok_path, tmp_path / "hf")
    hf_tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    for text in ["hello world\n", "<|user|>hi zq<|assistant|>ok<|endoftext|>", "tab\there é", "  \r\n"]:
        ids = tok.encode(text)
        assert hf_tok.encode(text, add_special_tokens=False).ids == ids, text
        assert hf_tok.decode(ids, skip_special_tokens=False) == tok.decode(ids)
    assert "chat_template" in json.loads((out / "tokenizer_config.json").read_text())


# ---------------------------------------------------------------------------- CLIs

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cli_export_import_roundtrip(tok_file, tmp_path):
    V = BPETokenizer(tok_file).vocab_size
    model = make_model(V, tie=True)
    run = tmp_path / "run"
    model.save_pretrained(run / "step_00000010", tokenizer_file=tok_file)
    (run / "latest").write_text("step_00000010\n")

    r = run_cli("export_hf.py", "--checkpoint_dir", str(run), "--out_dir", str(tmp_path / "hf"))
    assert r.returncode == 0, r.stderr
    assert "exported" in r.stderr and "tied head" in r.stderr and r.stdout == ""
    r = run_cli("import_hf.py", "--hf_dir", str(tmp_path / "hf"), "--out_dir", str(tmp_path / "ckpt"))
    assert r.returncode == 0, r.stderr
    idx = torch.randint(0, V, (2, 30))
    with torch.no_grad():
        expected = model(idx)[0]
        for folder in (tmp_path / "hf", tmp_path / "ckpt"):
            assert torch.equal(load_model(folder).eval()(idx)[0], expected)

    # a non-empty folder that is not an earlier export is never replaced
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    r = run_cli("export_hf.py", "--checkpoint_dir", str(run), "--out_dir", str(keep))
    assert r.returncode == 2 and r.stderr.startswith("error:") and str(keep) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and (keep / "notes.txt").read_text() == "mine"
    r = run_cli("import_hf.py", "--hf_dir", str(run), "--out_dir", str(tmp_path / "x"))
    assert r.returncode == 2 and "config.json" in r.stderr and len(r.stderr.strip().splitlines()) == 1
