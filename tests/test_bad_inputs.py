"""Bad inputs across every CLI (issue 9): each gets one clear line, a non-zero exit, no traceback, and
leaves every file that was already there byte for byte intact.

The rule every row of TABLE must pass (see `check_one_error_line`):

  R1  exit code 2: common.cli_main's code for a UserError. Code 1 means an unexpected exception
      reached the last-resort handler ("error: SomeError: ... (rerun with --debug ...)"), which
      names neither the input nor the fix, so it fails here.
  R2  no "Traceback" anywhere in stderr.
  R3  stderr, split on newlines and carriage returns, has exactly one line starting "error:", and
      it is the last non-empty line.
  R4  every other non-empty line is progress noise: a tqdm bar, or a log line the script prints
      while working, which starts at column 0 with a lowercase letter ("input: 1 file(s)",
      "note: ...", "device cpu ...", "step 4: ..."); argparse's "usage:" block (and its indented
      continuation lines) and a second "error:" are not noise.
  R5  the error line names the file or flag (the row's `names` regex) and says the fix (the row's
      `fix` regex).
  R6  every file under the row's output folder before the run has the same bytes after it, and no
      .tmp-* / .old-* leftovers remain there.

Root can write into a chmod 0o555 folder, and these tests run as root, so "a read-only output folder"
is provoked by an output path under a regular FILE (out/afile/sub: mkdir fails with ENOTDIR/EEXIST,
as it would for EROFS/EACCES). A full disk is simulated with RLIMIT_FSIZE (set by a small launcher
before exec): a write past the limit fails with EFBIG, as ENOSPC would; Python ignores SIGXFSZ.

The rows run two at a time (the machine has 2 cores) in a module fixture; each row is still its own
test. Time budget: 90 s for this file.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from char_data import write_char_dataset  # noqa: E402

ENV = {k: v for k, v in os.environ.items() if k != "GPT_DEBUG"} | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
WORDS = "the quick brown fox jumps over the lazy dog while a cat sleeps on the warm mat".split()
TRAIN = ["--device", "cpu", "--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--block_size", "32",
         "--batch_size", "4", "--max_steps", "2", "--compile", "off", "--dtype", "fp32", "--eval_every_steps", "0",
         "--save_every_steps", "0", "--save_every_minutes", "0", "--seed", "0"]
# Runs the script with RLIMIT_FSIZE = argv[1] bytes: a file write past it fails with EFBIG.
FSIZE_LAUNCHER = ("import os, resource, sys; n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
                  "os.execv(sys.executable, [sys.executable] + sys.argv[2:])")
TORCH_SCRIPTS = {"train_colab_mmap.py", "generate.py", "export_hf.py", "import_hf.py"}  # ~2 s per start: slow
LAST_RESORT = "rerun with --debug for the traceback"
TQDM = re.compile(r"\d+%\||[\d.]+\s?[kMG]?(?:it|B|step)/s\b|\?(?:it|B|step)/s")
FIX_VERB = (r"\b(use|pass|pick|choose|drop|remove|delete|regenerate|re-create|check|free|decompress|point|train|fix"
            r"|try)\b")


# ---------------------------------------------------------------------------- the data every row uses

def copy_ckpt(src: Path, dst: Path, **config_changes) -> Path:
    shutil.copytree(src, dst)
    if config_changes:
        cfg = json.loads((dst / "config.json").read_text())
        (dst / "config.json").write_text(json.dumps({**cfg, **config_changes}))
    return dst


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> SimpleNamespace:
    """Inputs shared by the rows (read-only for them: each row writes only into its own folder)."""
    d = tmp_path_factory.mktemp("inputs")
    rng = random.Random(0)
    text = "".join(" ".join(rng.choice(WORDS) for _ in range(12)) + ".<|endoftext|>" for _ in range(300))
    (d / "corpus.txt").write_text(text)
    (d / "big.txt").write_text("".join(" ".join(rng.choice(WORDS) for _ in range(15)) + f" {i}\n" for i in range(6000)))
    main_set = write_char_dataset(d, text, "data")
    bin_, tok, meta = main_set["bin"], main_set["tok"], main_set["meta"]
    other_tok = write_char_dataset(d, "completely different words: XYZ 0123456789!", "other")["tok"]
    raw = bin_.read_bytes()
    (d / "short.bin").write_bytes(raw[:1001])
    shutil.copy(meta, d / "short_metadata.json")  # says 17,929 tokens; the .bin holds 500.5
    (d / "tiny.bin").write_bytes(raw[:40])
    (d / "tiny_metadata.json").write_text(json.dumps({**json.loads(meta.read_text()), "num_tokens": 20}))
    (d / "empty.bin").write_bytes(b"")
    (d / "binary.bin").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 16)  # an executable, say
    (d / "latin1.txt").write_bytes("café au lait, crème brûlée\nhello world again\n".encode("latin-1"))
    (d / "empty.txt").write_bytes(b"")
    (d / "allbad.jsonl").write_text('{"text": "unterminated\n{broken\nnot json at all\n')
    return SimpleNamespace(d=d, bin=bin_, tok=tok, meta=meta, other_tok=other_tok)


def add_checkpoints(w: SimpleNamespace) -> None:
    """A real trainer checkpoint (2 steps), damaged variants of it and an HF export: only the rows of
    the torch scripts need them."""
    import torch
    import train_colab_mmap as tcm

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert tcm.main(["--bin_file", str(w.bin), "--tokenizer_file", str(w.tok), "--metadata_file", str(w.meta),
                         *TRAIN, "--checkpoint_dir", str(w.d / "ck")]) == 0
    finally:
        torch.set_num_threads(threads)
    d = w.d
    step = d / "ck" / (d / "ck" / "latest").read_text().strip()
    truncate(copy_ckpt(step, d / "trunc") / "pytorch_model.bin")
    copy_ckpt(step, d / "shape", n_embd=64)           # config.json of another model size than the weights
    (copy_ckpt(step, d / "garbagecfg") / "config.json").write_text('{"vocab_size": 33, "n_layer": ')
    (copy_ckpt(step, d / "listcfg") / "config.json").write_text("[1, 2, 3]")
    (copy_ckpt(step, d / "badtok") / "tokenizer.json").write_text('{"model": 12}')
    (d / "notck").mkdir()
    (d / "notck" / "readme.txt").write_text("photos, not a checkpoint\n")

    from export_hf import export_hf
    from model import TransformerLanguageModel

    export_hf(TransformerLanguageModel.from_pretrained(step), step / "tokenizer.json", d / "hf")
    llama = shutil.copytree(d / "hf", d / "llama")
    (llama / "config.json").write_text(json.dumps({**json.loads((llama / "config.json").read_text()),
                                                   "model_type": "llama"}))
    w.ck, w.step, w.sizes = d / "ck", step, {f.name: f.stat().st_size for f in step.iterdir()}


# ---------------------------------------------------------------------------- the table

@dataclass
class Row:
    id: str
    script: str
    argv: Callable[[SimpleNamespace, Path], list[str]]   # (inputs, this row's output folder) -> arguments
    names: str                                           # regex: the file or flag the line must name
    fix: str                                             # regex: the fix the line must state
    setup: Callable[[SimpleNamespace, Path], None] | None = None   # pre-existing outputs (checked intact)
    fsize: Callable[[SimpleNamespace], int] | None = None          # RLIMIT_FSIZE in bytes: a full disk
    may_change: tuple[str, ...] = ()                     # logs a resumed run appends to by design


def sentinel(*names: str) -> Callable[[SimpleNamespace, Path], None]:
    def make(_w: SimpleNamespace, out: Path) -> None:
        for n in names:
            (out / n).parent.mkdir(parents=True, exist_ok=True)
            (out / n).write_bytes(f"earlier output {n}: must survive a failed run\n".encode() + bytes(range(256)))
    return make


def with_file(name: str = "afile", then=None):
    """A regular file where the row's output folder would go (root ignores chmod 0o555)."""
    def make(w: SimpleNamespace, out: Path) -> None:
        (out / name).write_text("a regular file, not a folder\n")
        if then:
            then(w, out)
    return make


def prior_ckpt(sub: str = "ck"):
    def make(w: SimpleNamespace, out: Path) -> None:
        shutil.copytree(w.ck, out / sub)
    return make


def ckpt_copy(variant: str):
    def make(w: SimpleNamespace, out: Path) -> None:
        shutil.copytree(w.d / variant if variant != "step" else w.step, out / "model")
    return make


CLEAN_OUT = sentinel("clean.txt", "clean.txt.stats.json")
TOK_OUT = sentinel("tokens_char.bin", "tokens_char.bin.gz", "tokens_char_metadata.json", "char_tokenizer.json",
                   "tokens_bpe.bin", "tokens_bpe.bin.gz", "tokens_bpe_metadata.json", "bpe_tokenizer.json")
HF_OUT = sentinel("hf/config.json", "hf/model.safetensors")


def clean(w, out, *a):
    return ["--input", *a, "--output", str(out / "clean.txt"), "--no_progress", "--workers", "1"]


def tokenize(w, out, *a):
    return [*a, "--output_dir", str(out), "--workers", "1"]


def train(w, out, *a, data=None):
    data = data or ["--bin_file", str(w.bin), "--tokenizer_file", str(w.tok), "--metadata_file", str(w.meta)]
    return [*data, *TRAIN, "--checkpoint_dir", str(out / "ck"), *a]


TABLE = [
    # dataset_cleaner.py
    Row("clean-missing-input", "dataset_cleaner.py", lambda w, o: clean(w, o, str(o / "nope.txt")),
        "nope.txt", FIX_VERB, CLEAN_OUT),
    Row("clean-empty-input", "dataset_cleaner.py", lambda w, o: clean(w, o, str(w.d / "empty.txt")),
        "empty.txt", FIX_VERB, CLEAN_OUT),
    Row("clean-binary-input", "dataset_cleaner.py", lambda w, o: clean(w, o, str(w.d / "binary.bin")),
        "binary.bin", FIX_VERB, CLEAN_OUT),
    Row("clean-non-utf8-strict", "dataset_cleaner.py", lambda w, o: clean(w, o, str(w.d / "latin1.txt"), "--strict"),
        r"latin1\.txt.*byte", "drop --strict|fix the file|--errors", CLEAN_OUT),
    Row("clean-jsonl-all-lines-broken", "dataset_cleaner.py", lambda w, o: clean(w, o, str(w.d / "allbad.jsonl")),
        r"allbad\.jsonl", FIX_VERB, CLEAN_OUT),
    Row("clean-output-under-a-file", "dataset_cleaner.py",
        lambda w, o: ["--input", str(w.d / "corpus.txt"), "--output", str(o / "afile" / "sub" / "clean.txt"),
                      "--no_progress", "--workers", "1"],
        r"--output|afile", "choose|pick|another", with_file(then=CLEAN_OUT)),
    Row("clean-disk-full", "dataset_cleaner.py", lambda w, o: clean(w, o, str(w.d / "big.txt")),
        r"clean\.txt", "free (disk )?space", CLEAN_OUT, fsize=lambda w: 20_000),

    # tokenize_local_bpe.py
    Row("tok-missing-input", "tokenize_local_bpe.py", lambda w, o: tokenize(w, o, "--input", str(o / "nope.txt")),
        "nope.txt", FIX_VERB, TOK_OUT),
    Row("tok-empty-input", "tokenize_local_bpe.py", lambda w, o: tokenize(w, o, "--input", str(w.d / "empty.txt")),
        "empty.txt", FIX_VERB + "|nothing to tokenize", TOK_OUT),
    Row("tok-binary-input", "tokenize_local_bpe.py", lambda w, o: tokenize(w, o, "--input", str(w.d / "binary.bin")),
        "binary.bin", "dataset_cleaner.py|--errors replace", TOK_OUT),
    Row("tok-non-utf8-input", "tokenize_local_bpe.py", lambda w, o: tokenize(w, o, "--input", str(w.d / "latin1.txt")),
        r"latin1\.txt.*byte \d+", "dataset_cleaner.py|--errors replace", TOK_OUT),
    Row("tok-uint16-vocab-too-big", "tokenize_local_bpe.py",
        lambda w, o: tokenize(w, o, "--input", str(w.d / "corpus.txt"), "--vocab_size", "70000", "--dtype", "uint16"),
        "--dtype uint16.*70000", "use --dtype uint32", TOK_OUT),
    Row("tok-unknown-encoder", "tokenize_local_bpe.py",
        lambda w, o: tokenize(w, o, "--input", str(w.d / "corpus.txt"), "--encoder", "sentencepiece"),
        "--encoder", "choose from|--help", TOK_OUT),
    Row("tok-tokenizer-not-json", "tokenize_local_bpe.py",
        lambda w, o: tokenize(w, o, "--input", str(w.d / "corpus.txt"), "--tokenizer", str(w.d / "binary.bin")),
        "binary.bin", "regenerate", TOK_OUT),
    Row("tok-output-under-a-file", "tokenize_local_bpe.py",
        lambda w, o: ["--input", str(w.d / "corpus.txt"), "--tokenizer_type", "char", "--output_dir",
                      str(o / "afile" / "sub"), "--workers", "1"],
        r"--output_dir|afile", "choose|pick|another|pass", with_file(then=TOK_OUT)),
    Row("tok-disk-full", "tokenize_local_bpe.py",
        lambda w, o: tokenize(w, o, "--input", str(w.d / "big.txt"), "--tokenizer_type", "char", "--compress"),
        r"--output_dir|tokens_char|char_tokenizer", "free (disk )?space|another", TOK_OUT, fsize=lambda w: 40_000),

    # train_colab_mmap.py
    Row("train-missing-bin", "train_colab_mmap.py",
        lambda w, o: train(w, o, data=["--bin_file", str(o / "nope.bin"), "--tokenizer_file", str(w.tok)]),
        r"--bin_file .*nope\.bin", "pass the .bin|gunzip", prior_ckpt()),
    Row("train-empty-bin", "train_colab_mmap.py",
        lambda w, o: train(w, o, data=["--bin_file", str(w.d / "empty.bin"), "--tokenizer_file", str(w.tok)]),
        r"empty\.bin", FIX_VERB, prior_ckpt()),
    Row("train-bin-size-disagrees-with-metadata", "train_colab_mmap.py",
        lambda w, o: train(w, o, data=["--bin_file", str(w.d / "short.bin"), "--tokenizer_file", str(w.tok),
                                       "--metadata_file", str(w.d / "short_metadata.json")]),
        r"short\.bin.*short_metadata\.json", "decompress it again|matching metadata", prior_ckpt()),
    Row("train-metadata-from-another-tokenizer", "train_colab_mmap.py",
        lambda w, o: train(w, o, data=["--bin_file", str(w.bin), "--tokenizer_file", str(w.other_tok),
                                       "--metadata_file", str(w.meta)]),
        r"other_tok\.json", "pass the tokenizer", prior_ckpt()),
    Row("train-tokenizer-not-json", "train_colab_mmap.py",
        lambda w, o: train(w, o, data=["--bin_file", str(w.bin), "--tokenizer_file", str(w.d / "binary.bin")]),
        "binary.bin", "regenerate", prior_ckpt()),
    Row("train-block-size-longer-than-data", "train_colab_mmap.py",
        lambda w, o: train(w, o, "--val_fraction", "0", data=["--bin_file", str(w.d / "tiny.bin"), "--tokenizer_file",
                                                              str(w.tok), "--metadata_file",
                                                              str(w.d / "tiny_metadata.json")]),
        "--block_size 32", r"use --block_size \d+ or less", prior_ckpt("other")),
    Row("train-n-embd-not-divisible-by-n-head", "train_colab_mmap.py",
        lambda w, o: train(w, o, "--n_embd", "100", "--n_head", "3"),
        "n_embd=100.*n_head=3", "multiple of n_head", prior_ckpt("other")),
    Row("train-min-lr-above-the-default-lr", "train_colab_mmap.py", lambda w, o: train(w, o, "--min_lr", "0.5"),
        r"--min_lr 0\.5 .*learning rate 0\.004 \(the muon default", r"pass --min_lr 0\.0004 or --lr 0\.5", prior_ckpt()),
    Row("train-unknown-model-size", "train_colab_mmap.py", lambda w, o: train(w, o, "--model_size", "huge"),
        "--model_size", "choose", prior_ckpt()),
    Row("train-use-gpu-without-gpu", "train_colab_mmap.py", lambda w, o: train(w, o, "--use_gpu"),
        "--use_gpu", "drop --use_gpu", prior_ckpt()),
    Row("train-resume-checkpoint-of-another-config", "train_colab_mmap.py",
        lambda w, o: train(w, o, "--n_embd", "64"),
        r"step_\d+.*--n_embd 32.*64", "pass the same model flags|--resume never", prior_ckpt()),
    Row("train-init-from-truncated-weights", "train_colab_mmap.py",
        lambda w, o: train(w, o, "--init_from", str(w.d / "trunc")),
        r"trunc/pytorch_model\.bin", "earlier checkpoint", prior_ckpt("other")),
    Row("train-init-from-weights-of-another-config", "train_colab_mmap.py",
        lambda w, o: train(w, o, "--init_from", str(w.d / "shape")),
        r"shape", FIX_VERB, prior_ckpt("other")),
    Row("train-init-from-garbage-config", "train_colab_mmap.py",
        lambda w, o: train(w, o, "--init_from", str(w.d / "garbagecfg")),
        r"garbagecfg/config\.json", FIX_VERB, prior_ckpt("other")),
    Row("train-checkpoint-dir-under-a-file", "train_colab_mmap.py",
        lambda w, o: train(w, o, "--checkpoint_dir", str(o / "afile" / "sub")),
        r"--checkpoint_dir|afile", "pass|choose|pick|another", with_file(then=prior_ckpt())),
    Row("train-disk-full-while-saving", "train_colab_mmap.py", lambda w, o: train(w, o, "--max_steps", "4"),
        r"ck|checkpoint", "free (disk )?space|another --checkpoint_dir", prior_ckpt(),
        fsize=lambda w: (w.sizes["pytorch_model.bin"] + w.sizes["training_state.pt"]) // 2,
        may_change=("ck/metrics.jsonl", "ck/loss_curve.png")),

    # generate.py (its checkpoint folder is copied into the row's folder: reading must not change it)
    Row("gen-missing-checkpoint-dir", "generate.py", lambda w, o: ["--checkpoint_dir", str(o / "nope")],
        "nope", "pass the --checkpoint_dir", sentinel("samples.txt")),
    Row("gen-truncated-weights", "generate.py", lambda w, o: ["--checkpoint_dir", str(o / "model")],
        r"pytorch_model\.bin", "earlier checkpoint", ckpt_copy("trunc")),
    Row("gen-checkpoint-of-another-config", "generate.py", lambda w, o: ["--checkpoint_dir", str(o / "model")],
        r"model.*config\.json", FIX_VERB, ckpt_copy("shape")),
    Row("gen-garbage-config", "generate.py", lambda w, o: ["--checkpoint_dir", str(o / "model")],
        r"config\.json", "earlier checkpoint", ckpt_copy("garbagecfg")),
    Row("gen-config-not-an-object", "generate.py", lambda w, o: ["--checkpoint_dir", str(o / "model")],
        r"config\.json", FIX_VERB, ckpt_copy("listcfg")),
    Row("gen-garbage-tokenizer", "generate.py", lambda w, o: ["--checkpoint_dir", str(o / "model")],
        r"tokenizer\.json", "regenerate", ckpt_copy("badtok")),
    Row("gen-cuda-without-gpu", "generate.py",
        lambda w, o: ["--checkpoint_dir", str(o / "model"), "--device", "cuda"],
        "--device cuda", "use --device cpu", ckpt_copy("step")),

    # export_hf.py
    Row("export-not-a-checkpoint", "export_hf.py",
        lambda w, o: ["--checkpoint_dir", str(w.d / "notck"), "--out_dir", str(o / "hf")],
        "notck", r"expected .*latest.*config\.json", HF_OUT),
    Row("export-garbage-config", "export_hf.py",
        lambda w, o: ["--checkpoint_dir", str(w.d / "garbagecfg"), "--out_dir", str(o / "hf")],
        r"config\.json", FIX_VERB, HF_OUT),
    Row("export-over-a-folder-that-is-not-an-export", "export_hf.py",
        lambda w, o: ["--checkpoint_dir", str(w.ck), "--out_dir", str(o / "photos")],
        "--out_dir", "remove it or pick", sentinel("photos/holiday.jpg", "photos/notes.txt")),
    Row("export-out-dir-under-a-file", "export_hf.py",
        lambda w, o: ["--checkpoint_dir", str(w.ck), "--out_dir", str(o / "afile" / "hf")],
        r"--out_dir|afile", "pick|choose|another", with_file(then=HF_OUT)),
    Row("export-disk-full", "export_hf.py",
        lambda w, o: ["--checkpoint_dir", str(w.ck), "--out_dir", str(o / "hf")],
        r"--out_dir|hf", "free (disk )?space|another", HF_OUT, fsize=lambda w: 30_000),

    # import_hf.py
    Row("import-non-gpt2-config", "import_hf.py",
        lambda w, o: ["--hf_dir", str(w.d / "llama"), "--out_dir", str(o / "imported")],
        "model_type='llama'", "GPT-2", sentinel("imported/config.json", "imported/pytorch_model.bin")),
    Row("import-missing-hf-dir", "import_hf.py",
        lambda w, o: ["--hf_dir", str(o / "nope"), "--out_dir", str(o / "imported")],
        "--hf_dir", "pass a folder", sentinel("imported/config.json")),
    Row("import-disk-full", "import_hf.py",
        lambda w, o: ["--hf_dir", str(w.d / "hf"), "--out_dir", str(o / "imported")],
        r"--out_dir|imported", "free (disk )?space|another", sentinel("imported/config.json"),
        fsize=lambda w: 30_000),

    # sample_data.py
    Row("sample-missing-facts-dir", "sample_data.py",
        lambda w, o: ["--out", str(o / "train.jsonl"), "--facts_dir", str(o / "nope")],
        r"nope/capitals\.tsv", "--facts_dir", sentinel("train.jsonl")),
    Row("sample-bad-size", "sample_data.py", lambda w, o: ["--out", str(o / "train.jsonl"), "--size_mb", "-1"],
        "--size_mb", "try --size_mb", sentinel("train.jsonl")),
    Row("sample-out-under-a-file", "sample_data.py",
        lambda w, o: ["--out", str(o / "afile" / "train.jsonl")],
        r"--out|afile", "choose|pick|another", with_file(then=sentinel("train.jsonl"))),
]


# ---------------------------------------------------------------------------- running and checking

def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_row(row: Row, w: SimpleNamespace, out: Path) -> SimpleNamespace:
    out.mkdir(parents=True)
    if row.setup:
        row.setup(w, out)
    before = snapshot(out)
    cmd = [sys.executable, row.script, *row.argv(w, out)]
    if row.fsize:
        cmd = [sys.executable, "-c", FSIZE_LAUNCHER, str(row.fsize(w)), *cmd[1:]]
    p = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    return SimpleNamespace(rc=p.returncode, stderr=p.stderr, stdout=p.stdout, before=before, after=snapshot(out),
                           leftovers=[str(q.relative_to(out)) for q in out.rglob("*")
                                      if q.name.startswith((".tmp-", ".old-"))])


@pytest.fixture(scope="module")
def results(request, w, tmp_path_factory) -> dict[str, SimpleNamespace]:
    """Run the rows selected in this session, two at a time."""
    wanted = {item.callspec.params["row"].id for item in request.session.items
              if getattr(item, "originalname", "") == "test_bad_input" and hasattr(item, "callspec")}
    rows = [r for r in TABLE if r.id in wanted]
    if any(r.script in TORCH_SCRIPTS for r in rows):
        add_checkpoints(w)
    base = tmp_path_factory.mktemp("rows")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {r.id: pool.submit(run_row, r, w, base / r.id) for r in rows}
        return {k: f.result() for k, f in futures.items()}


def check_one_error_line(stderr: str) -> str:
    """R2-R4 of the module docstring; returns the error line."""
    assert "Traceback" not in stderr, f"traceback without --debug:\n{stderr[-3000:]}"
    lines = [s.rstrip() for s in re.split(r"[\r\n]", stderr)]
    lines = [s for s in lines if s.strip() and not TQDM.search(s)]
    assert lines, "stderr is empty: the failure is silent"
    errors = [s for s in lines if s.startswith("error:")]
    assert len(errors) == 1, f"expected exactly one 'error:' line, got {len(errors)}:\n{stderr[-3000:]}"
    assert lines[-1] == errors[0], f"the error line is not the last line of stderr:\n{stderr[-3000:]}"
    for s in lines[:-1]:
        assert re.match(r"[a-z]", s) and not s.startswith("usage:") and "error:" not in s, \
            f"stderr line that is neither progress nor a log line: {s!r}\nfull stderr:\n{stderr[-3000:]}"
    return errors[0]


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id, marks=[pytest.mark.slow] * (r.script in TORCH_SCRIPTS))
                                 for r in TABLE])
def test_bad_input(row: Row, results: dict) -> None:
    r = results[row.id]
    line = check_one_error_line(r.stderr)
    assert LAST_RESORT not in line, f"unexpected exception, not a UserError: {line}"
    assert r.rc == 2, f"exit code {r.rc} (expected 2, a UserError); stderr:\n{r.stderr[-2000:]}"
    assert re.search(row.names, line), f"the line does not name /{row.names}/: {line}"
    # folders are cut from paths first, so a word in a folder name never passes for the fix
    without_folders = re.sub(r"/[^\s:;,()'\"]*/", "", line)
    assert re.search(row.fix, without_folders), f"the line does not state the fix /{row.fix}/: {line}"
    changed = [k for k, v in r.before.items() if r.after.get(k) != v and k not in row.may_change]
    assert not changed, f"pre-existing outputs changed or lost: {changed}"
    assert not r.leftovers, f"temporary files left behind: {r.leftovers}"


def test_table_covers_every_cli() -> None:
    assert len(TABLE) >= 25
    assert {r.script for r in TABLE} == {"dataset_cleaner.py", "tokenize_local_bpe.py", "train_colab_mmap.py",
                                         "generate.py", "export_hf.py", "import_hf.py", "sample_data.py"}
    assert len({r.id for r in TABLE}) == len(TABLE)


@pytest.mark.slow
def test_debug_shows_the_traceback(w, tmp_path) -> None:
    """The same bad input as a table row, with --debug: the traceback is there, ending in the UserError."""
    p = subprocess.run([sys.executable, "train_colab_mmap.py", *train(w, tmp_path, "--n_embd", "100", "--n_head", "3"),
                        "--debug"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert "Traceback (most recent call last)" in p.stderr
    assert re.search(r"UserError: model config: n_embd=100 is not divisible by n_head=3", p.stderr)


def test_cleaner_counts_broken_jsonl_lines_and_continues(tmp_path) -> None:
    """Broken JSONL lines and undecodable bytes are skipped/replaced, counted, and the rest is kept."""
    src = tmp_path / "mixed.jsonl"
    src.write_bytes(b'{"text": "the first good document is here and long enough"}\n'
                    b'{"text": "broken, no closing brace"\n'
                    b'{"text": "the second good document has caf\xe9 in latin-1"}\n'
                    b'this line is not json at all\n'
                    b'{"text": "the third good document is fine too"}\n')
    out = tmp_path / "clean.jsonl"
    p = subprocess.run([sys.executable, "dataset_cleaner.py", "--input", str(src), "--output", str(out),
                        "--no_progress", "--workers", "1", "--quality_filters", "off"],
                       cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    stats = json.loads((tmp_path / "clean.jsonl.stats.json").read_text())
    assert stats["malformed_lines"] == 2
    assert stats["malformed_examples"] == [f"{src}:2", f"{src}:4"]
    assert stats["replaced_bytes"] == 1
    assert stats["docs_out"] == 3
    texts = [json.loads(ln)["text"] for ln in out.read_text(encoding="utf-8").splitlines()]
    assert len(texts) == 3 and "caf\ufffd" in texts[1]
    assert re.search(r"malformed JSON lines\s+2", p.stderr)
