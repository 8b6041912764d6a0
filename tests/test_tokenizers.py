"""Both tokenizers: Unicode round trips, special tokens, files, load_tokenizer."""
import json

import pytest

from common import UserError
from tokenizer import CHAT_SPECIAL_TOKENS, EOT_TOKEN, CharTokenizer, load_tokenizer, special_tokens_for
from tokenizer_bpe import CHAT_TEMPLATE, BPETokenizer, render_chat

NASTY = ("Hello, world! café naïve e\u0301 (combining) 東京タワー 한국어 🙂👩‍👩‍👧 \U0001F600 𝔘𝔫𝔦 "
         "tabs\there\r\nwindows\rmac\x00nul \u200bzero-width \ufeffbom ") * 3
CORPUS = ["The capital of France is Paris.\n", "<|user|>Hi there\n<|assistant|>Hello! How can I help?\n<|endoftext|>",
          "Machine learning is a way for computers to learn from data.\n"] * 50


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer().train(CORPUS, vocab_size=400, special_tokens=special_tokens_for(chat=True),
                                show_progress=False)


def test_bpe_round_trips_arbitrary_unicode_exactly(bpe):
    assert bpe.decode(bpe.encode(NASTY)) == NASTY
    # bytes never seen in training still encode (initial alphabet), no unknown token
    assert bpe.decode(bpe.encode("\x7f\x01 ÿ 𐍈")) == "\x7f\x01 ÿ 𐍈"


def test_bpe_special_token_ids_and_single_tokens(bpe):
    assert [bpe.token_to_id(t) for t in [EOT_TOKEN] + CHAT_SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert bpe.eot_token_id == 0
    for i, tok in enumerate([EOT_TOKEN] + CHAT_SPECIAL_TOKENS):
        assert bpe.encode(tok) == [i]
    ids = bpe.encode("<|user|>hi\n<|assistant|>")
    assert ids[0] == 1 and ids[-1] == 2
    assert bpe.decode([1, 2, 0]) == "<|user|><|assistant|><|endoftext|>"  # decode keeps them


def test_bpe_encode_batch_equals_encode(bpe):
    texts = [NASTY, "", "<|user|>x", "plain"]
    assert bpe.encode_batch(texts) == [bpe.encode(t) for t in texts]


def test_bpe_learns_merges(bpe):
    text = "The capital of France is Paris."
    assert len(bpe.encode(text)) < len(text.encode()) / 2
    assert 300 < bpe.vocab_size <= 400


def test_bpe_save_load_and_seed_usage(bpe, tmp_path):
    path = tmp_path / "checkpoint" / "tokenizer.json"
    path.parent.mkdir()
    bpe.save(path)
    tokenizer = BPETokenizer()
    tokenizer.load(str(path))  # the seed's two lines
    assert tokenizer.encode(NASTY) == bpe.encode(NASTY)
    assert json.loads(path.read_text())["model"]["type"] == "BPE"
    assert type(load_tokenizer(path)) is BPETokenizer


def test_bpe_loads_plain_tokenizers_file_written_elsewhere(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "t.json"))
    loaded = load_tokenizer(tmp_path / "t.json")
    assert loaded.encode("hello world") == [0, 1] and loaded.vocab_size == 3


def test_bpe_vocab_too_small_is_clear():
    with pytest.raises(UserError, match="--vocab_size 100 is too small.*at least 260"):
        BPETokenizer().train(["abc"], vocab_size=100, special_tokens=special_tokens_for(chat=True))


def test_char_round_trip_and_policy(tmp_path):
    tok = CharTokenizer.from_text(NASTY + "<|user|><|assistant|>", special_tokens_for(chat=True))
    assert tok.decode(tok.encode(NASTY)) == NASTY
    assert tok.encode("<|user|>") == [1] and tok.encode(EOT_TOKEN) == [0]
    assert tok.eot_token_id == 0 and tok.token_to_id("<|assistant|>") == 2
    # documented policy: unseen characters become U+FFFD
    assert tok.decode(tok.encode("Zq")) == "\ufffd\ufffd"
    # special tokens are not split into characters while building
    assert "|" not in tok.id_to_token[4:]
    tok.save(tmp_path / "char.json")
    again = load_tokenizer(tmp_path / "char.json")
    assert isinstance(again, CharTokenizer) and again.id_to_token == tok.id_to_token


def test_char_from_files_streams_and_keeps_crlf(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes("line one\r\nline two <|endoftext|>".encode())
    tok = CharTokenizer.from_files([p], chunk_chars=5)  # a special token split across reads
    text = p.read_bytes().decode()
    assert tok.decode(tok.encode(text)) == text
    assert "\r" in tok.id_to_token and "<" not in tok.id_to_token


def test_load_tokenizer_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="tokenizer file not found: .*missing.json"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="bad.json is not valid JSON"):
        load_tokenizer(bad)
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    with pytest.raises(UserError, match="other.json is neither"):
        load_tokenizer(other)


def test_chat_template_rendering():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"}]
    assert render_chat(msgs) == "<|system|>Be brief.\n<|user|>Hi\n<|assistant|>Hello!\n<|endoftext|>"
    assert render_chat(msgs[:2], add_generation_prompt=True) == "<|system|>Be brief.\n<|user|>Hi\n<|assistant|>"
    assert "<|{{ message['role'] }}|>" in CHAT_TEMPLATE
    with pytest.raises(ValueError):
        render_chat([{"role": "robot", "content": "x"}])
