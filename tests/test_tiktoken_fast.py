"""The tiktoken fast encoder: refused where it would differ from HF, identical ids where accepted."""
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tiktoken")

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

from tokenizer import special_tokens_for  # noqa: E402
from tokenizer_bpe import BPETokenizer, tiktoken_conversion, tiktoken_encoding  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPECIALS = special_tokens_for(chat=True)


def _corpus(seed: int = 0, n: int = 1500) -> list[str]:
    rng = random.Random(seed)
    words = ["the", "cat", "don't", "it's", "naïve", "café", "東京", "日本語", "москва", "🙂", "👩‍💻", "e\u0301",
             "1234", "3.14", "  ", "\t", "hello", "world", "ünïcödé", "한국어", "αβγ", "𝔘𝔫𝔦", "!!", "...", "<|"]
    return [" ".join(rng.choices(words, k=rng.randint(5, 40))) + rng.choice(["\n", "\r\n", ". "]) for _ in range(n)]


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer().train(iter(_corpus()), vocab_size=1200, special_tokens=SPECIALS, show_progress=False)


def _hf_ids(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def _raw(normalizer=None, prefix_space=False, use_regex=True, alphabet=True, post=None) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space, use_regex=use_regex)
    if normalizer is not None:
        tok.normalizer = normalizer
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if alphabet else [])
    tok.train_from_iterator(_corpus(1, 200), trainer)
    if post is not None:
        tok.post_processor = post
    return tok


@pytest.mark.parametrize("make, reason", [
    (lambda: _raw(normalizer=normalizers.NFC()), "normalizer"),
    (lambda: _raw(prefix_space=True), "add_prefix_space=True"),
    (lambda: _raw(use_regex=False), "use_regex=False"),
    (lambda: _raw(alphabet=False), "missing from the vocabulary"),
    (lambda: _raw(post=processors.TemplateProcessing(single="$A <|endoftext|>", special_tokens=[("<|endoftext|>", 0)])),
     "post-processor"),
])
def test_conversion_refused_where_ids_would_differ(make, reason):
    tok = make()
    encoding, why = tiktoken_encoding(tok)
    assert encoding is None and reason in why
    wrapped = BPETokenizer()
    wrapped._tok = tok
    assert wrapped.encoder_name == "hf" and reason in wrapped.encoder_info
    text = "café 東京 \x00\x7f héllo"
    assert wrapped.encode(text) == tok.encode(text, add_special_tokens=False).ids


def test_conversion_refuses_merge_order_and_orphan_tokens(bpe):
    data = json.loads(bpe.tokenizer.to_str())
    assert tiktoken_conversion(data)[2] == "exact"
    bad = json.loads(json.dumps(data))  # swap the ids of the first two merge results
    # tokenizers >= 0.20 writes merges as [a, b], older versions as "a b"
    (a1, b1), (a2, b2) = (m.split(" ") if isinstance(m, str) else m for m in bad["model"]["merges"][:2])
    v = bad["model"]["vocab"]
    v[a1 + b1], v[a2 + b2] = v[a2 + b2], v[a1 + b1]
    assert "rise with merge order" in tiktoken_conversion(bad)[2]
    orphan = json.loads(json.dumps(data))
    orphan["model"]["merges"] = orphan["model"]["merges"][:-1]
    assert "not produced by any merge" in tiktoken_conversion(orphan)[2]
    flagged = json.loads(json.dumps(data))
    flagged["added_tokens"][1]["lstrip"] = True
    assert "lstrip" in tiktoken_conversion(flagged)[2]
    wordpiece = json.loads(json.dumps(data))
    wordpiece["model"]["type"] = "WordPiece"
    assert "not BPE" in tiktoken_conversion(wordpiece)[2]


def _unicode_texts() -> list[str]:
    """Every code point U+0000..U+2FFFF except surrogates, in contexts that exercise the regex
    classes (letters, numbers, spaces, punctuation, contractions) around it."""
    cps = [c for c in range(0x30000) if not 0xD800 <= c <= 0xDFFF]
    texts = []
    for i in range(0, len(cps), 512):
        chunk = cps[i:i + 512]
        texts.append("".join(f"{chr(c)}a{chr(c)} {chr(c)}1'{chr(c)}s\u3000{chr(c)}\r\n" if k % 4 == 0 else
                             f" x{chr(c)}{chr(c)}!" for k, c in enumerate(chunk)))
    rng = random.Random(3)
    pieces = ["<|user|>", "<|assistant|>", "<|system|>", "<|endoftext|>", "<|user", "<|foo|>", "|>", "<|",
              "<|endoftext", "\r\n", "\r", "\n\n", "   ", "\t", "🙂👍🏽", "👩‍👩‍👧", "🇫🇷", "e\u0301\u0302", "東京タワー",
              "한국어", "𝔘𝔫𝔦", "'s", "'ll", " don't", "x" * 50, " " * 300, "123456789", "ﬁ", "\u200b", "\ufeff",
              "\x00", "\x1c\x1d", "\x85", "\u2028", "\u00a0", "\U0002A6D6", "\U0001F9D1\u200D\U0001F680"]
    texts += ["".join(rng.choices(pieces, k=200)) for _ in range(200)]
    texts += ["", "<|endoftext|>", "<|user|><|assistant|>", "a<|endoftext|>b", " " * 5000 + "x"]
    texts += _corpus(7, 300)
    return texts


def test_ids_equal_hf_on_every_code_point_and_special_tokens(bpe):
    assert bpe.encoder_name == "tiktoken"
    texts = _unicode_texts()
    expected = _hf_ids(bpe.tokenizer, texts)
    assert bpe.encode_batch(texts) == expected
    assert [a.tolist() for a in bpe.encode_batch_numpy(texts)] == expected
    joined = "".join(texts[-320:])
    assert bpe.encode(joined) == bpe.tokenizer.encode(joined, add_special_tokens=False).ids
    ids = bpe.encode("<|user|>hi<|assistant|>yo<|endoftext|>")
    assert ids[0] == 1 and 2 in ids and ids[-1] == 0
    assert 1 not in bpe.encode("<|user hi <|foo|>")  # fake special tokens stay text


def test_gpt2_style_bytelevel_post_processor_keeps_the_fast_path():
    """GPT-2's own tokenizer.json (and an import_hf folder made from it) carries a ByteLevel
    post-processor: it only trims offsets, so tiktoken and whole-document cuts stay exact."""
    tok = _raw(post=processors.ByteLevel(trim_offsets=True))
    encoding, why = tiktoken_encoding(tok)
    assert why == "exact" and encoding is not None
    texts = _unicode_texts()[::4]
    assert [encoding.encode(t, allowed_special="all") for t in texts] == _hf_ids(tok, texts)
    wrapped = BPETokenizer()
    wrapped._tok = tok
    assert wrapped.encoder_name == "tiktoken" and wrapped.encode_batch(texts) == _hf_ids(tok, texts)


def test_prefix_overlapping_special_tokens_match_hf():
    specials = SPECIALS + ["<|tool|>", "<|tool|>x"]  # one is a prefix of the other: our own split
    tok = BPETokenizer().train(iter(_corpus(2, 300)), vocab_size=600, special_tokens=specials, show_progress=False)
    assert tok.encoder_name == "tiktoken" and not tok._fast.native
    texts = ["a<|tool|>x b<|tool|>y <|tool|>", "<|tool|>x<|tool|>xx<|endoftext|>", "<|tool|", "plain"]
    assert tok.encode_batch(texts) == _hf_ids(tok.tokenizer, texts)


def test_long_whitespace_run_and_surrogates_go_to_hf(bpe):
    text = "a" + " " * 1_050_000 + "b\n"  # tiktoken's regex engine panics on such a run
    assert bpe.encode(text) == bpe.tokenizer.encode(text, add_special_tokens=False).ids
    try:
        expected = bpe.tokenizer.encode("a\ud800b", add_special_tokens=False).ids
    except TypeError:  # tokenizers >= 0.20 refuses lone surrogates; the fast path must not hide that
        with pytest.raises(TypeError):
            bpe.encode("a\ud800b")
    else:  # older tokenizers replace them; the fast path must give the same ids
        assert bpe.encode("a\ud800b") == expected


def test_absent_tiktoken_falls_back_silently(bpe, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # import tiktoken -> ImportError
    path = tmp_path / "tok.json"
    bpe.save(path)
    tok = BPETokenizer(path)
    assert tok.encoder_name == "hf" and "not installed" in tok.encoder_info
    assert tok.encode("café<|user|>") == bpe.encode("café<|user|>")


def test_cli_encoder_line_and_identical_bin(bpe, tmp_path):
    path = tmp_path / "tok.json"
    bpe.save(path)
    text = "".join(_unicode_texts()[-330:-30]) + "<|endoftext|>"
    (tmp_path / "in.txt").write_text(text, encoding="utf-8", newline="")
    bins = {}
    for enc in ("auto", "hf"):
        out = tmp_path / enc
        r = subprocess.run([sys.executable, "tokenize_local_bpe.py", "--input", str(tmp_path / "in.txt"),
                            "--tokenizer", str(path), "--output_dir", str(out), "--encoder", enc],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("encoder:")]
        assert len(lines) == 1 and ("tiktoken" if enc == "auto" else "HF") in lines[0]
        bins[enc] = (out / "tokens_bpe.bin").read_bytes()
    assert bins["auto"] == bins["hf"]
    assert np.frombuffer(bins["auto"], np.uint16).tolist() == bpe.tokenizer.encode(text).ids
