"""tokenize_local_bpe.py: byte-exact .bin files, metadata, dtypes, validation split, char path,
bad inputs (one line, non-zero exit, nothing half-written) and bounded memory."""
import gzip
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tokenize_corpus
import tokenize_writer
import tokenize_local_bpe as T
from tokenizer import EOT_TOKEN, CharTokenizer, load_tokenizer

REPO = Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / "tokenize_local_bpe.py")
SEED_FILES = {"tokens_bpe.bin", "tokens_bpe.bin.gz", "bpe_tokenizer.json", "tokens_bpe_metadata.json"}


def make_docs(n: int, seed: int = 0) -> list[str]:
    """Cleaner-style documents: prose, chat turns, \\r\\n lines, non-ASCII."""
    rng = random.Random(seed)
    words = ["the", "capital", "of", "France", "is", "Paris", "don't", "it's", "café", "東京", "🙂", "naïve",
             "1984", "3.14", "москва", "e\u0301", "learning", "data", "model", "   ", "\t"]
    docs = []
    for i in range(n):
        body = " ".join(rng.choices(words, k=rng.randint(3, 60)))
        if i % 4 == 0:
            body = f"<|user|>{body}?\n<|assistant|>{body[::-1]}\n"
        elif i % 4 == 1:
            body = body.replace(" of ", "\r\n")
        docs.append(body)
    return docs


def cleaned_text(n: int, seed: int = 0) -> str:
    return "".join(d + EOT_TOKEN for d in make_docs(n, seed))


def run(args: list[str], cwd: Path = REPO, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def decode_bin(out: Path, prefix: str = "tokens_bpe", tok_name: str = "bpe_tokenizer.json") -> str:
    meta = json.loads((out / f"{prefix}_metadata.json").read_text())
    ids = np.fromfile(out / f"{prefix}.bin", dtype=meta["dtype"])
    return load_tokenizer(out / tok_name).decode(ids.tolist())


def check_metadata(out: Path, prefix: str, tok_name: str) -> dict:
    meta = json.loads((out / f"{prefix}_metadata.json").read_text())
    size = (out / f"{prefix}.bin").stat().st_size
    assert meta["num_tokens"] * np.dtype(meta["dtype"]).itemsize == size
    assert meta["tokenizer_file"] == tok_name
    assert meta["tokenizer_sha256"] == hashlib.sha256((out / tok_name).read_bytes()).hexdigest()
    assert meta["bin_sha256"] == hashlib.sha256((out / f"{prefix}.bin").read_bytes()).hexdigest()
    tok = load_tokenizer(out / tok_name)
    assert meta["vocab_size"] == tok.vocab_size and meta["eot_token_id"] == tok.eot_token_id == 0
    ids = np.fromfile(out / f"{prefix}.bin", dtype=meta["dtype"])
    assert meta["num_documents"] == int((ids == 0).sum()) and ids.max() < meta["vocab_size"]
    for key in ("format_version", "source_files", "created_at", "settings"):
        assert key in meta
    return meta


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The seed's command, as written (smaller vocabulary), in a fresh directory."""
    d = tmp_path_factory.mktemp("seed")
    write(d / "your_dataset.txt", cleaned_text(400))
    r = run(["--input", "your_dataset.txt", "--vocab_size", "600", "--compress"], cwd=d)
    assert r.returncode == 0, r.stderr
    return d


def test_seed_command_writes_its_four_files_byte_exact(trained):
    assert {p.name for p in trained.iterdir()} == SEED_FILES | {"your_dataset.txt"}  # no temp files left
    assert decode_bin(trained) == (trained / "your_dataset.txt").read_bytes().decode()
    meta = check_metadata(trained, "tokens_bpe", "bpe_tokenizer.json")
    assert meta["dtype"] == "uint16" and meta["num_documents"] == 400 and meta["vocab_size"] <= 600
    assert gzip.decompress((trained / "tokens_bpe.bin.gz").read_bytes()) == (trained / "tokens_bpe.bin").read_bytes()
    tok = load_tokenizer(trained / "bpe_tokenizer.json")  # chat markers in the sample: chat tokens registered
    assert [tok.token_to_id(t) for t in ("<|user|>", "<|assistant|>", "<|system|>")] == [1, 2, 3]
    vocab = json.loads((trained / "bpe_tokenizer.json").read_text())["model"]["vocab"]
    assert "endoftext" not in vocab and "<|" not in vocab  # special strings kept out of BPE training


def test_several_inputs_globs_and_plain_text_documents(trained, tmp_path):
    a = write(tmp_path / "a_clean.txt", cleaned_text(50, seed=1))
    b = write(tmp_path / "b_plain.txt", "Plain text\r\nwithout any end marker.\n")
    c = write(tmp_path / "c_clean.txt", cleaned_text(5, seed=2)[:-len(EOT_TOKEN)])  # last document unterminated
    r = run(["--input", str(tmp_path / "*_clean.txt"), str(b), "--tokenizer", str(trained / "bpe_tokenizer.json"),
             "--output_dir", str(tmp_path / "out")])
    assert r.returncode == 0, r.stderr
    expected = a.read_bytes().decode() + c.read_bytes().decode() + EOT_TOKEN + b.read_bytes().decode() + EOT_TOKEN
    assert decode_bin(tmp_path / "out") == expected
    meta = check_metadata(tmp_path / "out", "tokens_bpe", "bpe_tokenizer.json")
    assert meta["num_documents"] == 50 + 5 + 1 and meta["source_files"] == [str(a), str(c), str(b)]
    assert (tmp_path / "out" / "bpe_tokenizer.json").read_bytes() == (trained / "bpe_tokenizer.json").read_bytes()
    assert "2 file(s) did not end with" in r.stderr


def test_long_documents_are_cut_where_ids_do_not_change(trained, tmp_path, monkeypatch, capsys):
    """In-process with tiny limits: a 300 kB document is encoded in many pieces (our tokenizer is
    GPT-2-style, so it keeps the fast segment cuts); the ids equal those of encoding it whole,
    special tokens and whitespace runs included."""
    monkeypatch.setattr(tokenize_corpus, "MAX_CARRY_CHARS", 20_000)
    monkeypatch.setattr(tokenize_corpus, "BLOCK_BYTES", 7_000)
    monkeypatch.setattr(T, "SEGMENT_CHARS", dict.fromkeys(T.SEGMENT_CHARS, 3_000))
    buffers, segments = [], []  # the text the reader holds per block: bounded by the limits above
    whole_block = tokenize_corpus.DocumentReader._block

    def block(self, buf, end, nbytes):
        buffers.append(len(buf))
        b = whole_block(self, buf, end, nbytes)
        segments.extend(len(text) for _, text in b.segments)
        return b

    monkeypatch.setattr(tokenize_corpus.DocumentReader, "_block", block)
    rng = random.Random(5)
    parts = ["word", "wörd", "東京", "x1", "'s", "don't", "!!", "<|user|>", "<|endoftext", "🙂", "12345", "\u3000"]
    spaces = [" ", "  ", "\n", "\r\n", "\t", " \n ", "    \r\n"]
    text = "".join(rng.choice(parts) + rng.choice(spaces) for _ in range(40_000)) + " " * 5000 + "end"
    write(tmp_path / "long.txt", text)
    for enc in ("tiktoken", "hf"):
        out = tmp_path / enc
        assert T.main(["--input", str(tmp_path / "long.txt"), "--tokenizer", str(trained / "bpe_tokenizer.json"),
                       "--output_dir", str(out), "--encoder", enc]) == 0
        tok = load_tokenizer(out / "bpe_tokenizer.json")
        tok.set_encoder("hf")
        ids = np.fromfile(out / "tokens_bpe.bin", dtype=np.uint16).tolist()
        assert ids == tok.encode(text + EOT_TOKEN)
    assert len(buffers) > 80 and max(buffers) < 30_000, max(buffers)  # both encoders: > 40 blocks each
    # ~3,000-character segments, but for the trailing 5,000 spaces (no safe cut), once per encoder
    assert len(segments) > 150 and sum(n > 3_000 for n in segments) == 2, sorted(segments)[-3:]
    err = capsys.readouterr().err
    assert "cut arbitrarily" not in err and "encoded whole" not in err


def _reused_tokenizer(path: Path, kind: str, text: str) -> Path:
    """A `tokenizers` file not made by our trainer, with the pipeline piece `kind`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if kind == "prefix space":  # RoBERTa-style: a space before every piece that lacks one
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    elif kind == "normalizer":  # Strip changes the ids of a piece cut before whitespace; NFKC/Lowercase do not
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(), normalizers.Strip()])
        tok.pre_tokenizer = byte_level
    else:  # sentencepiece-style: "▁" before the first piece of each encoded text only
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=[EOT_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([text.replace(EOT_TOKEN, " ")], trainer)
    tok.save(str(path))
    return path


@pytest.mark.parametrize("kind", ["prefix space", "normalizer", "metaspace first"])
def test_reused_tokenizer_whose_ids_change_at_cuts_encodes_each_document_whole(tmp_path, monkeypatch, capsys, kind):
    """With a prefix space, a normalizer or a Metaspace pre-tokenizer, a piece of a document is not
    encoded as it is inside the whole: the .bin holds each document's own whole encode (its EOT
    included), however long the document and however small the read and segment sizes."""
    monkeypatch.setattr(tokenize_corpus, "MAX_CARRY_CHARS", 6_000)
    monkeypatch.setattr(tokenize_corpus, "HARD_CARRY_CHARS", 12_000)
    monkeypatch.setattr(tokenize_corpus, "BLOCK_BYTES", 4_000)
    monkeypatch.setattr(T, "SEGMENT_CHARS", dict.fromkeys(T.SEGMENT_CHARS, 1_000))
    segments = []
    whole_block = tokenize_corpus.DocumentReader._block

    def block(self, buf, end, nbytes):
        b = whole_block(self, buf, end, nbytes)
        segments.extend(text for _, text in b.segments)
        return b

    monkeypatch.setattr(tokenize_corpus.DocumentReader, "_block", block)
    rng = random.Random(7)
    words = ["Word", "wörd", "ＡＢＣ", "ﬁne", "x1", "don't", "!!", "東京", "🙂", "12345"]
    long_doc = "".join(rng.choice(words) + rng.choice([" ", "\n", "  ", "\t", "\r\n", " \n"])
                       for _ in range(3_000))  # ~20K characters, with no EOT
    docs = make_docs(30, seed=4)[1:4] + [long_doc] + make_docs(30, seed=5)[1:] + ["\n last one "]
    text = "".join(d + EOT_TOKEN for d in docs)
    write(tmp_path / "in.txt", text)
    tok_file = _reused_tokenizer(tmp_path / "reused.json", kind, text)
    assert T.main(["--input", str(tmp_path / "in.txt"), "--tokenizer", str(tok_file), "--encoder", "auto",
                   "--output_dir", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    tok = load_tokenizer(tok_file).tokenizer
    expected = [i for d in docs for i in tok.encode(d + EOT_TOKEN, add_special_tokens=False).ids]
    ids = np.fromfile(tmp_path / "out" / "tokens_bpe.bin", dtype=np.uint16).tolist()
    assert len(ids) == len(expected) and ids == expected
    assert segments == [d + EOT_TOKEN for d in docs]  # one segment per document, the long one whole
    assert "each document is encoded whole" in err and "cut arbitrarily" not in err
    assert {"prefix space": "add_prefix_space=True", "normalizer": "normalizer (Sequence)",
            "metaspace first": "'Metaspace'"}[kind] in err


def test_val_fraction_splits_whole_documents_deterministically(trained, tmp_path):
    docs = make_docs(200, seed=3)
    write(tmp_path / "in.txt", "".join(d + EOT_TOKEN for d in docs))
    outs = []
    for i in range(2):
        out = tmp_path / f"out{i}"
        r = run(["--input", str(tmp_path / "in.txt"), "--tokenizer", str(trained / "bpe_tokenizer.json"),
                 "--val_fraction", "0.1", "--compress", "--output_dir", str(out)])
        assert r.returncode == 0, r.stderr
        outs.append(out)
    out = outs[0]
    train_docs = decode_bin(out).split(EOT_TOKEN)[:-1]
    val_docs = decode_bin(out, "tokens_bpe_val").split(EOT_TOKEN)[:-1]
    assert len(val_docs) == 20 and len(train_docs) == 180
    # every document lands whole in exactly one split, in input order, spread over the corpus
    val_idx = [i for i in range(200) if (i + 1) * 20 // 200 > i * 20 // 200]
    assert val_docs == [docs[i] for i in val_idx] and val_idx[0] < 20 and val_idx[-1] == 199
    assert train_docs == [d for i, d in enumerate(docs) if i not in set(val_idx)]
    check_metadata(out, "tokens_bpe_val", "bpe_tokenizer.json")
    meta = check_metadata(out, "tokens_bpe", "bpe_tokenizer.json")
    assert meta["val_metadata_file"] == "tokens_bpe_val_metadata.json"
    for name in ("tokens_bpe.bin", "tokens_bpe_val.bin", "tokens_bpe_val.bin.gz"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
    r = run(["--input", str(tmp_path / "in.txt"), "--tokenizer", str(trained / "bpe_tokenizer.json"),
             "--output_dir", str(out)])  # a rerun without a split removes the now-stale val files
    assert r.returncode == 0 and not (out / "tokens_bpe_val.bin").exists() and not (out / "tokens_bpe.bin.gz").exists()


def test_char_path_and_uint32(tmp_path):
    """--tokenizer_type char: same files (char names); > 65,536 distinct characters give uint32."""
    chars = [chr(c) for c in range(0x4E00, 0x9FFF)] + [chr(c) for c in range(0x20000, 0x20000 + 50_000)]
    random.Random(0).shuffle(chars)
    text = "".join("".join(chars[i:i + 500]) + "\r\n<|endoftext|>" for i in range(0, len(chars), 500))
    text += "<|user|>hi\n<|assistant|>ok\n"
    write(tmp_path / "big.txt", text)
    r = run(["--input", str(tmp_path / "big.txt"), "--tokenizer_type", "char", "--compress",
             "--output_dir", str(tmp_path / "out")])
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {"tokens_char.bin", "tokens_char.bin.gz", "char_tokenizer.json",
                                               "tokens_char_metadata.json"}
    meta = check_metadata(out, "tokens_char", "char_tokenizer.json")
    assert meta["dtype"] == "uint32" and meta["vocab_size"] > 65_536 and meta["tokenizer_type"] == "char"
    tok = load_tokenizer(out / "char_tokenizer.json")
    assert isinstance(tok, CharTokenizer) and tok.token_to_id("<|assistant|>") == 2
    ids = np.fromfile(out / "tokens_char.bin", dtype="<u4")
    assert ids.tolist() == tok.encode(text + EOT_TOKEN)  # the vectorised encoder equals CharTokenizer.encode
    assert decode_bin(out, "tokens_char", "char_tokenizer.json") == text + EOT_TOKEN
    assert gzip.decompress((out / "tokens_char.bin.gz").read_bytes()) == ids.tobytes()
    r = run(["--input", str(tmp_path / "big.txt"), "--tokenizer_type", "char", "--dtype", "uint16",
             "--output_dir", str(tmp_path / "out16")])
    assert r.returncode == 2 and "uint16" in r.stderr and not (tmp_path / "out16").exists()


def test_uint16_with_a_large_vocab_is_refused_before_any_work(tmp_path):
    write(tmp_path / "in.txt", cleaned_text(20))
    r = run(["--input", str(tmp_path / "in.txt"), "--vocab_size", "70000", "--dtype", "uint16",
             "--output_dir", str(tmp_path / "out")])
    assert r.returncode == 2 and r.stderr.startswith("error: --dtype uint16") and "training" not in r.stderr
    assert not (tmp_path / "out").exists() and r.stdout == "" and r.stderr.count("\n") == 1  # no "input:" line


def test_special_tokens_flag_and_chat_marker_warning(tmp_path, capsys):
    text = "plain words <|tool|>call()\nmore words here<|endoftext|>" * 50
    write(tmp_path / "in.txt", text)
    assert T.main(["--input", str(tmp_path / "in.txt"), "--vocab_size", "300", "--special_tokens", "<|tool|>",
                   "--output_dir", str(tmp_path / "a")]) == 0
    tok = load_tokenizer(tmp_path / "a" / "bpe_tokenizer.json")
    assert tok.special_tokens == ["<|endoftext|>", "<|tool|>"] and tok.token_to_id("<|user|>") is None
    assert decode_bin(tmp_path / "a") == text and tok.encode("<|tool|>") == [1]
    write(tmp_path / "chat.txt", "<|user|>hi\n<|assistant|>hello\n<|endoftext|>")
    assert T.main(["--input", str(tmp_path / "chat.txt"), "--tokenizer", str(tmp_path / "a" / "bpe_tokenizer.json"),
                   "--output_dir", str(tmp_path / "b")]) == 0
    assert "2 <|user|>/<|assistant|> markers but the tokenizer has no such tokens" in capsys.readouterr().err
    assert decode_bin(tmp_path / "b") == "<|user|>hi\n<|assistant|>hello\n<|endoftext|>"  # as plain text
    with pytest.raises(T.UserError, match="lacks <\\|user\\|>"):
        T.main(["--input", str(tmp_path / "chat.txt"), "--tokenizer", str(tmp_path / "a" / "bpe_tokenizer.json"),
                "--special_tokens", "chat", "--output_dir", str(tmp_path / "c")])


def test_interrupted_run_leaves_previous_outputs_and_no_temp_files(trained, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    for name in SEED_FILES:
        (out / name).write_bytes(b"previous")
    write(tmp_path / "in.txt", cleaned_text(3000))
    monkeypatch.setattr(tokenize_corpus, "BLOCK_BYTES", 50_000)
    calls = []

    def interrupted(self, ids):  # Ctrl-C while the second block is being written
        calls.append(len(ids))
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(tokenize_writer.TokenFileWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        T.main(["--input", str(tmp_path / "in.txt"), "--tokenizer", str(trained / "bpe_tokenizer.json"),
                "--compress", "--output_dir", str(out)])
    assert len(calls) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {n: b"previous" for n in SEED_FILES}


def test_stale_temp_files_of_a_killed_run_are_removed_and_nothing_else(trained, tmp_path):
    """What a SIGKILLed run leaves (mkstemp names: .tmp-NAME. + 8 characters) goes on the next run into
    the folder; look-alikes that are not temporaries of this run's own outputs stay."""
    out = tmp_path / "out"
    out.mkdir()
    stale = [".tmp-tokens_bpe.bin.k2x_9qaz", ".tmp-tokens_bpe.bin.gz.0abcdefg", ".tmp-bpe_tokenizer.json.zz81mmq0",
             ".tmp-tokens_bpe_metadata.json.a1b2c3d4", ".tmp-tokens_bpe_val.bin.qqqqqqqq"]
    foreign = [".tmp-tokens_bpe.bin.keep", ".tmp-tokens_bpe.bin.k2x_9qaz1", ".tmp-tokens_bpe.bin.k2x_9qaz.txt",
               ".tmp-tokens_bpe2.bin.k2x_9qaz", ".tmp-my_tokens.bin.k2x_9qaz", "tmp-tokens_bpe.bin.k2x_9qaz",
               ".tmp-tokens_bpe.bin-k2x_9qaz", ".tmp-tokens_bpe.bin.K2X_9QAZ"]
    hour_ago = time.time() - 3600
    for name in stale + foreign:
        (out / name).write_bytes(b"partial ids")
        os.utime(out / name, (hour_ago, hour_ago))
    (out / ".tmp-tokens_bpe.bin.dir00000").mkdir()  # a folder is never ours to remove
    write(tmp_path / "in.txt", cleaned_text(30))
    r = run(["--input", str(tmp_path / "in.txt"), "--tokenizer", str(trained / "bpe_tokenizer.json"),
             "--compress", "--output_dir", str(out)])
    assert r.returncode == 0, r.stderr
    removed = sorted(ln for ln in r.stderr.splitlines() if ln.startswith("removed stale temp file"))
    assert removed == sorted(f"removed stale temp file {out / n} from an interrupted run" for n in stale)
    assert {p.name for p in out.iterdir()} == SEED_FILES | set(foreign) | {".tmp-tokens_bpe.bin.dir00000"}
    assert all((out / n).read_bytes() == b"partial ids" for n in foreign)
    assert decode_bin(out) == (tmp_path / "in.txt").read_bytes().decode()


def test_temp_files_are_left_alone_while_another_run_is_live(trained, tmp_path, capsys):
    """A live run holds a shared lock on the folder; then none of its temporaries is removed, however
    old (its tokenizer temp sits untouched for the whole run); and a fresh temp file never is."""
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "out"
    out.mkdir()
    old, fresh = out / ".tmp-tokens_bpe.bin.old00000", out / ".tmp-bpe_tokenizer.json.new00000"
    write(tmp_path / "in.txt", cleaned_text(30))
    args = ["--input", str(tmp_path / "in.txt"), "--tokenizer", str(trained / "bpe_tokenizer.json"),
            "--output_dir", str(out)]
    old.write_bytes(b"live")
    os.utime(old, (time.time() - 3600,) * 2)
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # what a live run holds
        assert T.main(args) == 0
        assert old.read_bytes() == b"live"
    finally:
        os.close(fd)
    fresh.write_bytes(b"live")
    os.utime(fresh, (time.time() + 3600,) * 2)  # newer than the next run's start
    assert T.main(args) == 0
    assert not old.exists() and fresh.read_bytes() == b"live"
    assert f"removed stale temp file {old} from an interrupted run" in capsys.readouterr().err


def _bad_inputs(d: Path, good_tok: Path) -> dict:
    write(d / "good.txt", cleaned_text(30))
    (d / "empty.txt").write_bytes(b"")
    (d / "binary.dat").write_bytes(bytes(range(256)) * 10)
    late = cleaned_text(3000).encode()  # invalid byte after the first 64 kB: found while encoding
    (d / "late_bad.txt").write_bytes(late + b"\xff\xfe tail" + EOT_TOKEN.encode())
    (d / "data.txt.gz").write_bytes(gzip.compress(b"hello"))
    write(d / "notjson.json", "{ nope")
    write(d / "other.json", json.dumps({"hello": 1}))
    write(d / "plain.txt", "one plain document\n" * 100)
    good = ["--input", str(d / "good.txt")]
    return {
        "missing file": (["--input", str(d / "nope.txt")], "file not found"),
        "empty file": (["--input", str(d / "empty.txt")], "empty"),
        "binary file": (["--input", str(d / "binary.dat")], "binary"),
        "invalid UTF-8 mid-file": (["--input", str(d / "late_bad.txt"), "--tokenizer", str(good_tok)],
                                   f"byte {len(late)}"),
        "gzip input": (["--input", str(d / "data.txt.gz")], "gzip"),
        "unknown encoder": (good + ["--encoder", "fast"], "--encoder"),
        "tokenizer not JSON": (good + ["--tokenizer", str(d / "notjson.json")], "not valid JSON"),
        "tokenizer missing": (good + ["--tokenizer", str(d / "nope.json")], "not found"),
        "tokenizer of no kind": (good + ["--tokenizer", str(d / "other.json")], "neither"),
        "no glob match": (["--input", str(d / "*.nothing")], "matches no file"),
        "val of one document": (["--input", str(d / "plain.txt"), "--val_fraction", "0.1"], "single document"),
        "val_fraction too big": (good + ["--val_fraction", "0.9"], "--val_fraction 0.9"),
        "tiny vocab": (good + ["--vocab_size", "100"], "too small"),
    }


def test_bad_inputs_one_line_nonzero_exit_and_previous_outputs_untouched(trained, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    before = {}
    for name in SEED_FILES | {"tokens_bpe_val.bin"}:
        before[name] = f"previous {name}".encode()
        (out / name).write_bytes(before[name])
    for label, (args, needle) in _bad_inputs(tmp_path, trained / "bpe_tokenizer.json").items():
        r = run(args + ["--output_dir", str(out), "--compress"])
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0, label
        assert lines[-1].startswith("error: ") and needle in lines[-1], (label, r.stderr)
        assert "Traceback" not in r.stderr, label
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before, label  # nothing new, nothing lost


@pytest.mark.slow
def test_bounded_memory_on_tens_of_mb(trained, tmp_path):
    """Peak RSS does not grow with the input: 24 MB vs 60 MB, half of each in one single document
    (holding the extra 36 MB of text, 4 bytes per character here, would add over 100 MB)."""
    words = cleaned_text(2000, seed=9).replace(EOT_TOKEN, " ").split(" ")
    rng = random.Random(1)
    chunks = [" ".join(rng.choices(words, k=20_000)) for _ in range(8)]

    def gen(path: Path, mb: float, separated: bool) -> Path:
        with open(path, "w", encoding="utf-8", newline="") as f:
            size = i = 0
            while size < mb * 1e6:
                chunk = chunks[i % len(chunks)] + (EOT_TOKEN if separated else "\n")
                f.write(chunk)
                size, i = size + len(chunk.encode()), i + 1
        return path

    peaks = {}
    for name, mb in (("small", 12), ("big", 30)):
        inputs = [gen(tmp_path / f"{name}_docs.txt", mb, True), gen(tmp_path / f"{name}_one_doc.txt", mb, False)]
        proc = subprocess.Popen([sys.executable, SCRIPT, "--input", *map(str, inputs), "--tokenizer",
                                 str(trained / "bpe_tokenizer.json"), "--compress", "--output_dir", str(tmp_path / name)],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stderr = proc.stderr.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)
        assert status == 0, stderr
        peaks[name] = usage.ru_maxrss / 1024  # MB (Linux reports kB)
        for p in inputs:
            p.unlink()
    meta = json.loads((tmp_path / "big" / "tokens_bpe_metadata.json").read_text())
    assert meta["source_bytes"] > 60e6 and meta["num_documents"] > 100
    assert peaks["big"] < 2048 and peaks["big"] - peaks["small"] < 40, peaks


def bin_decodes(out: Path, prefix: str, tok_name: str) -> list[tuple[int, int]]:
    """(num_bytes from the metadata, UTF-8 bytes of the whole .bin decoded) for each split written."""
    tok = load_tokenizer(out / tok_name)
    pairs = []
    for split in ("", "_val"):
        if (out / f"{prefix}{split}_metadata.json").exists():
            meta = json.loads((out / f"{prefix}{split}_metadata.json").read_text())
            ids = np.fromfile(out / f"{prefix}{split}.bin", dtype=meta["dtype"])
            pairs.append((meta["num_bytes"], len(tok.decode(ids.tolist()).encode("utf-8"))))
    return pairs


def test_num_bytes_is_the_size_of_the_text_each_bin_decodes_to(trained, tmp_path):
    """num_bytes (for bits per byte) == len(decode(all ids).encode()) for the train and val files: BPE on
    both encoders, char, a reused char tokenizer lacking characters (they decode as U+FFFD, not as the
    input) and a non-ASCII extra special token (HF decodes its bytes as invalid UTF-8)."""
    text = cleaned_text(300, seed=12) + "last document without an end marker 東京\r\n"
    write(tmp_path / "in.txt", text)
    val = ["--val_fraction", "0.1"]
    for enc in ("tiktoken", "hf"):
        out = tmp_path / f"bpe_{enc}"
        assert T.main(["--input", str(tmp_path / "in.txt"), "--tokenizer", str(trained / "bpe_tokenizer.json"),
                       "--encoder", enc, "--output_dir", str(out), *val]) == 0
        pairs = bin_decodes(out, "tokens_bpe", "bpe_tokenizer.json")
        assert len(pairs) == 2 and all(meta == decoded for meta, decoded in pairs), pairs
        assert sum(meta for meta, _ in pairs) == len((text + EOT_TOKEN).encode())  # byte-level: all of the input
    assert T.main(["--input", str(tmp_path / "in.txt"), "--tokenizer_type", "char", "--output_dir",
                   str(tmp_path / "char"), *val]) == 0
    pairs = bin_decodes(tmp_path / "char", "tokens_char", "char_tokenizer.json")
    assert len(pairs) == 2 and all(meta == decoded for meta, decoded in pairs), pairs

    CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz ").save(tmp_path / "few_chars.json")
    assert T.main(["--input", str(tmp_path / "in.txt"), "--tokenizer", str(tmp_path / "few_chars.json"),
                   "--output_dir", str(tmp_path / "few"), *val]) == 0
    pairs = bin_decodes(tmp_path / "few", "tokens_char", "char_tokenizer.json")
    assert all(meta == decoded for meta, decoded in pairs), pairs
    assert sum(meta for meta, _ in pairs) != len((text + EOT_TOKEN).encode())  # 東京 etc. became U+FFFD

    write(tmp_path / "tool.txt", "call <|tööl|> now, café<|endoftext|>" * 40)
    assert T.main(["--input", str(tmp_path / "tool.txt"), "--vocab_size", "300", "--special_tokens", "<|tööl|>",
                   "--output_dir", str(tmp_path / "tool")]) == 0
    [(meta, decoded)] = bin_decodes(tmp_path / "tool", "tokens_bpe", "bpe_tokenizer.json")
    assert meta == decoded != (tmp_path / "tool.txt").stat().st_size


def test_num_bytes_of_a_tokenizer_decoding_otherwise_counts_the_input_text(tmp_path):
    """A reused tokenizer whose decoder is not byte-level (Metaspace drops a leading space): num_bytes is
    then the UTF-8 size of the text encoded, EOTs included."""
    text = cleaned_text(60, seed=13)
    write(tmp_path / "in.txt", text)
    tok_file = _reused_tokenizer(tmp_path / "metaspace.json", "metaspace first", text)
    assert T.main(["--input", str(tmp_path / "in.txt"), "--tokenizer", str(tok_file), "--val_fraction", "0.2",
                   "--output_dir", str(tmp_path / "out")]) == 0
    metas = [json.loads((tmp_path / "out" / f"tokens_bpe{s}_metadata.json").read_text()) for s in ("", "_val")]
    assert sum(m["num_bytes"] for m in metas) == len(text.encode()) and min(m["num_bytes"] for m in metas) > 0


def test_large_buffers_get_their_own_mapping_after_a_larger_one_is_freed():
    """glibc's default: freeing a 16 MB buffer raises its mmap threshold to 16 MB, so the next 4 MB
    block comes from the heap, where such blocks fragment (RSS grew with the input read). After
    keep_large_buffers_off_the_heap it is mapped on its own (mallinfo2's hblkhd counts those bytes)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("mallopt is glibc's")
    code = f"""
import ctypes, sys
sys.path.insert(0, {str(REPO)!r})
import tokenize_local_bpe as T
applied = T.keep_large_buffers_off_the_heap() if sys.argv[1] == "set" else None
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks "
                                                "fordblks keepcost").split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
mapped = libc.mallinfo2().hblkhd
big = bytearray(16 << 20)
del big
block = bytearray(4 << 20)
print(applied, libc.mallinfo2().hblkhd - mapped)
"""
    results = {}
    for mode in ("default", "set"):
        r = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=120)
        if "mallinfo2" in r.stderr:
            pytest.skip("a C library without mallinfo2 (glibc < 2.33)")
        assert r.returncode == 0, r.stderr
        results[mode] = r.stdout.split()
    assert results["default"][0] == "None" and int(results["default"][1]) < 4 << 20  # from the heap
    assert results["set"][0] == "True" and int(results["set"][1]) >= 4 << 20  # its own mapping
