"""Faults and untrusted files (issue 9): a checkpoint write that fails midway, SIGKILL during
tokenization, interrupted .gz output, pickles that would run code, garbage config/tokenizer JSON.

A full disk is simulated with RLIMIT_FSIZE (set by a small launcher before exec): a write past the
limit fails with EFBIG, as ENOSPC would (Python ignores SIGXFSZ). Time budget: 60 s for this file.
"""
from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train_colab_mmap as tcm  # noqa: E402
import train_state  # noqa: E402
from common import UserError, sha256_file  # noqa: E402
from model import TransformerLanguageModel  # noqa: E402
from tokenizer import load_tokenizer  # noqa: E402
from char_data import word_documents, write_char_dataset  # noqa: E402

ENV = {k: v for k, v in os.environ.items() if k != "GPT_DEBUG"} | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TRAIN = ["--device", "cpu", "--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--block_size", "32",
         "--batch_size", "4", "--compile", "off", "--dtype", "fp32", "--eval_every_steps", "0",
         "--save_every_steps", "0", "--save_every_minutes", "0", "--seed", "0", "--log_every_steps", "1"]
FSIZE_LAUNCHER = ("import os, resource, sys; n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
                  "os.execv(sys.executable, [sys.executable] + sys.argv[2:])")
pytestmark = pytest.mark.usefixtures("one_thread")


def run(script: str, *args: str, fsize: int | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, script, *args]
    if fsize is not None:
        cmd = [sys.executable, "-c", FSIZE_LAUNCHER, str(fsize), script, *args]
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


def one_error_line(p: subprocess.CompletedProcess) -> str:
    """Non-zero exit, no traceback, and stderr ends in the single 'error:' line (common.cli_main)."""
    assert p.returncode != 0, f"expected a failure, got exit 0; stderr:\n{p.stderr[-2000:]}"
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    lines = [s for s in re.split(r"[\r\n]", p.stderr) if s.strip()]
    errors = [s for s in lines if s.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], p.stderr[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("data")
    files = write_char_dataset(d, word_documents(300, seed=0))
    return {"dir": d, "args": ["--bin_file", str(files["bin"]), "--tokenizer_file", str(files["tok"]),
                               "--metadata_file", str(files["meta"])]}


@pytest.fixture(scope="module")
def ckpt(data, tmp_path_factory) -> Path:
    """A trainer checkpoint dir after 2 steps (latest -> step_00000002)."""
    ck = tmp_path_factory.mktemp("ck") / "ck"
    assert tcm.main([*data["args"], *TRAIN, "--max_steps", "2", "--checkpoint_dir", str(ck)]) == 0
    return ck


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------- checkpoint write fails midway

@contextlib.contextmanager
def small_tmpfs(where: Path, size: int):
    """A real filesystem of `size` bytes (ENOSPC when full): needs root; skips the test otherwise."""
    where.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.decode(errors='replace').strip()[:100]})")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True)


@pytest.mark.slow
@pytest.mark.parametrize("disk", ["rlimit-weights", "rlimit-training-state", "tmpfs-enospc"])
def test_disk_full_while_saving_keeps_previous_checkpoint(data, ckpt, tmp_path, disk) -> None:
    """The trainer resumes at step 2, trains to 4, and its save hits a full disk midway (RLIMIT_FSIZE
    while writing pytorch_model.bin or training_state.pt, or a real ENOSPC on a small tmpfs): step 2
    stays whole and loadable, `latest` still names it, nothing half-written is left, and the same
    command with room to write then resumes from it and finishes."""
    sizes = {f: (ckpt / "step_00000002" / f).stat().st_size for f in ("pytorch_model.bin", "training_state.pt")}
    fsize = {"rlimit-weights": sizes["pytorch_model.bin"] // 2,
             "rlimit-training-state": (sizes["pytorch_model.bin"] + sizes["training_state.pt"]) // 2}.get(disk)
    with contextlib.ExitStack() as stack:
        root = tmp_path
        if disk == "tmpfs-enospc":  # room for the old checkpoint plus the new weights, not its training state
            used = sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file())
            root = stack.enter_context(small_tmpfs(tmp_path / "mnt", used + sizes["pytorch_model.bin"] + 64 * 1024))
        ck = shutil.copytree(ckpt, root / "ck")
        step2 = ck / "step_00000002"
        before = tree_bytes(step2)
        args = [*data["args"], *TRAIN, "--max_steps", "4"]
        p = run("train_colab_mmap.py", *args, "--checkpoint_dir", str(ck), fsize=fsize)
        assert p.returncode != 0, p.stderr[-2000:]
        assert "resumed from step_00000002" in p.stderr
        logged = [json.loads(ln) for ln in (ck / "metrics.jsonl").read_text().splitlines() if ln.strip()]
        assert any(r.get("step") == 4 for r in logged), "the run failed before its save at step 4"
        assert (ck / "latest").read_text() == "step_00000002\n"
        assert not (ck / "step_00000004").exists()
        assert [q.name for q in ck.iterdir() if q.name.startswith((".tmp-", ".old-"))] == []
        assert tree_bytes(step2) == before
        saved = train_state.read_checkpoint(step2)  # sizes and sha256 of every file still match
        sd, ts, meta = saved.weights, saved.training_state, saved.trainer_state
        assert meta["step"] == 2 and ts["progress"]["step"] == 2
        model = TransformerLanguageModel.from_pretrained(ck)
        assert torch.equal(model.state_dict()["transformer.wte.weight"], sd["transformer.wte.weight"])
        ck = shutil.copytree(ck, tmp_path / "ck_with_room")
    again = run("train_colab_mmap.py", *args, "--checkpoint_dir", str(ck))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from step_00000002" in again.stderr
    assert (ck / "latest").read_text() == "step_00000004\n"


def test_write_checkpoint_failing_midway_in_process(ckpt, tmp_path, monkeypatch) -> None:
    """train_state.write_checkpoint with torch.save failing (ENOSPC) on training_state.pt, both for a new
    step and when rewriting the folder of an existing step: the old folders are untouched."""
    ck = shutil.copytree(ckpt, tmp_path / "ck")
    step2 = ck / "step_00000002"
    before = tree_bytes(ck)
    model = TransformerLanguageModel.from_pretrained(ck)
    real_save = torch.save

    def failing_save(obj, f, *a, **kw):
        if str(f).endswith("training_state.pt"):
            real_save(obj, f, *a, **kw)
            with open(f, "r+b") as fh:  # half the bytes made it to disk, then the disk filled up
                fh.truncate(os.path.getsize(f) // 2)
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(train_state.torch, "save", failing_save)
    state = {"format_version": 1, "progress": {"step": 3}, "optimizer": {}, "scaler": {}, "rng": []}
    for name in ("step_00000003", "step_00000002"):
        with pytest.raises(OSError):
            train_state.write_checkpoint(ck, name, model, str(step2 / "tokenizer.json"), state, {"step": 3})
        assert tree_bytes(ck) == before
        assert [q.name for q in ck.iterdir() if q.name.startswith((".tmp-", ".old-"))] == []
    train_state.read_checkpoint(step2)


def test_crash_between_the_two_renames_is_recovered(ckpt, tmp_path) -> None:
    """Rewriting step_N moves the old folder to .old-step_N-PID, then renames the new one in. A crash
    between the two leaves no step_N: the trainer's next start puts the old folder back and drops the
    half-built .tmp-* folder."""
    ck = shutil.copytree(ckpt, tmp_path / "ck")
    step2 = ck / "step_00000002"
    before = tree_bytes(step2)
    os.replace(step2, ck / ".old-step_00000002-4242")
    half = ck / ".tmp-step_00000002-4242"
    half.mkdir()
    (half / "pytorch_model.bin").write_bytes(b"PK\x03\x04 half")
    train_state.recover_interrupted_saves(ck)
    assert tree_bytes(step2) == before
    assert sorted(q.name for q in ck.iterdir() if q.name.startswith(".")) == []
    found = train_state.find_checkpoint(ck, print)
    assert found is not None and found.folder == step2


# ---------------------------------------------------------------------------- SIGKILL during tokenization

@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory) -> Path:
    """About 11 MB of documents: long enough to SIGKILL the tokenizer while it writes."""
    block = word_documents(2000, seed=1)
    path = tmp_path_factory.mktemp("big") / "big.txt"
    with open(path, "w") as f:
        for i in range(80):
            f.write(block.replace("dog", f"dog{i}"))
    return path


def gzip_is_whole(blob: bytes) -> bool:
    """What `gzip -t` checks: at least one member, every member complete with a matching CRC."""
    try:
        return bool(blob) and gzip.decompress(blob) is not None
    except (EOFError, OSError, zlib.error):
        return False


FINAL = ("tokens_char.bin", "tokens_char.bin.gz", "tokens_char_metadata.json", "char_tokenizer.json")


def tokenize_cmd(corpus: Path, out: Path) -> list[str]:
    return [sys.executable, "tokenize_local_bpe.py", "--input", str(corpus), "--tokenizer_type", "char",
            "--output_dir", str(out), "--compress", "--compress_level", "9", "--workers", "1"]


def kill_while_writing(corpus: Path, out: Path) -> None:
    """Start the tokenizer; SIGKILL it as soon as its temporary .bin holds data."""
    proc = subprocess.Popen(tokenize_cmd(corpus, out), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    try:
        while time.time() < deadline and proc.poll() is None:
            if any(q.stat().st_size > 0 for q in out.glob(".tmp-tokens_char.bin.*") if not q.name.endswith(".gz")
                   and ".gz." not in q.name):
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the tokenizer finished before it could be killed: use a bigger corpus"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()


def check_complete(out: Path) -> dict:
    """The outputs a finished run leaves: metadata, .bin and .gz agree with each other."""
    meta = json.loads((out / "tokens_char_metadata.json").read_text())
    raw = (out / "tokens_char.bin").read_bytes()
    assert len(raw) == meta["num_tokens"] * np.dtype(meta["dtype"]).itemsize
    assert gzip.decompress((out / "tokens_char.bin.gz").read_bytes()) == raw
    assert meta["tokenizer_sha256"] == sha256_file(out / "char_tokenizer.json")
    if "bin_sha256" in meta:
        assert meta["bin_sha256"] == sha256_file(out / "tokens_char.bin")
    return meta


@pytest.mark.slow
def test_sigkill_during_tokenization_leaves_nothing_that_looks_complete(big_corpus, tmp_path) -> None:
    out = tmp_path / "tok"
    out.mkdir()
    kill_while_writing(big_corpus, out)
    names = sorted(q.name for q in out.iterdir())
    assert not any(n in FINAL for n in names), names
    assert names and all(n.startswith(".tmp-") for n in names), names
    # the interrupted .gz has a temporary name and is not a whole gzip stream
    for q in out.glob(".tmp-tokens_char.bin.gz.*"):
        assert not gzip_is_whole(q.read_bytes())
    # the same command again succeeds and its outputs are whole
    p = subprocess.run(tokenize_cmd(big_corpus, out), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    meta = check_complete(out)
    assert meta["num_documents"] == 160_000
    assert not any(q.name.startswith(".tmp-") for q in out.iterdir())  # the rerun removed the killed run's temps
    assert "removed stale temp file" in p.stderr


@pytest.mark.slow
def test_sigkill_while_replacing_outputs_keeps_the_old_complete_set(big_corpus, data, tmp_path) -> None:
    """A finished small run, then a big run into the same folder killed mid-write: the small run's
    metadata, .bin, .gz and tokenizer are still there and agree with each other."""
    out = tmp_path / "tok"
    small = data["dir"] / "small.txt"
    small.write_text("a small corpus.<|endoftext|>with two documents.<|endoftext|>")
    p = subprocess.run(tokenize_cmd(small, out), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    first = tree_bytes(out)
    kill_while_writing(big_corpus, out)
    assert {k: v for k, v in tree_bytes(out).items() if not k.startswith(".tmp-")} == first
    assert check_complete(out)["num_documents"] == 2


def test_truncated_gz_is_never_taken_for_whole(data, tmp_path) -> None:
    """A .bin.gz cut short (a Drive upload interrupted) fails gzip -t, and what gunzip salvages from
    it is refused by the trainer, whose metadata check names the size mismatch."""
    out = tmp_path / "tok"
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(word_documents(400, seed=2))
    p = subprocess.run(tokenize_cmd(corpus, out), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    meta = check_complete(out)
    # the metadata, the "complete" marker, is written after the data files
    assert (out / "tokens_char_metadata.json").stat().st_mtime_ns >= max(
        (out / n).stat().st_mtime_ns for n in ("tokens_char.bin", "tokens_char.bin.gz", "char_tokenizer.json"))
    gz = (out / "tokens_char.bin.gz").read_bytes()
    assert gzip_is_whole(gz)
    cut = tmp_path / "cut.bin.gz"
    cut.write_bytes(gz[: len(gz) // 2])
    assert not gzip_is_whole(cut.read_bytes())
    if shutil.which("gzip"):
        assert subprocess.run(["gzip", "-t", str(cut)], capture_output=True).returncode != 0
    salvaged = b""
    with gzip.open(cut, "rb") as f:
        with pytest.raises(EOFError):
            while chunk := f.read(4096):
                salvaged += chunk
    assert 0 < len(salvaged) < meta["num_tokens"] * 2
    (tmp_path / "salvaged.bin").write_bytes(salvaged)
    p = run("train_colab_mmap.py", "--bin_file", str(tmp_path / "salvaged.bin"), "--tokenizer_file",
            str(out / "char_tokenizer.json"), "--metadata_file", str(out / "tokens_char_metadata.json"), *TRAIN,
            "--max_steps", "1", "--checkpoint_dir", str(tmp_path / "ck"))
    line = one_error_line(p)
    assert "salvaged.bin" in line and "truncated" in line
    assert not (tmp_path / "ck").exists()


# ---------------------------------------------------------------------------- untrusted files

class _RunsCode:
    """Unpickling this calls exec(): it writes the side-effect file."""

    def __init__(self, side: Path) -> None:
        self.side = side

    def __reduce__(self):
        return exec, (f"open({str(self.side)!r}, 'w').write('pwned')",)


def poison(folder: Path, side: Path, which: str = "pytorch_model.bin", fix_manifest: bool = True) -> None:
    """Replace `which` with a pickle that runs code; with fix_manifest, trainer_state.json's sizes and
    sha256 are updated so that only weights_only=True stands between the file and exec()."""
    torch.save({"transformer.wte.weight": torch.zeros(1), "payload": _RunsCode(side)}, folder / which)
    ts = folder / "trainer_state.json"
    if fix_manifest and ts.exists():
        meta = json.loads(ts.read_text())
        meta["files"][which] = {"size": (folder / which).stat().st_size, "sha256": sha256_file(folder / which)}
        ts.write_text(json.dumps(meta))


@pytest.fixture
def evil(ckpt, tmp_path) -> tuple[Path, Path]:
    """A copy of the 2-step checkpoint whose pytorch_model.bin runs code, and the file it would write."""
    side = tmp_path / "PWNED"
    folder = shutil.copytree(ckpt / "step_00000002", tmp_path / "evil")
    poison(folder, side)
    return folder, side


def test_the_payload_is_live(evil) -> None:
    """Guard for the tests below: without weights_only the file really runs code."""
    folder, side = evil
    torch.load(folder / "pytorch_model.bin", weights_only=False)
    assert side.read_text() == "pwned"


def test_from_pretrained_refuses_a_code_pickle(evil) -> None:
    folder, side = evil
    with pytest.raises(UserError, match="pytorch_model.bin"):
        TransformerLanguageModel.from_pretrained(folder)
    assert not side.exists()


@pytest.mark.slow
@pytest.mark.parametrize("cli", ["generate", "init_from", "resume_weights", "resume_training_state", "export_hf",
                                 "import_hf"])
def test_clis_refuse_a_code_pickle(cli, ckpt, data, tmp_path) -> None:
    side = tmp_path / "PWNED"
    folder = shutil.copytree(ckpt / "step_00000002", tmp_path / "evil")
    poison(folder, side, "training_state.pt" if cli == "resume_training_state" else "pytorch_model.bin")
    train = [*data["args"], *TRAIN, "--max_steps", "3", "--checkpoint_dir", str(tmp_path / "ck")]
    if cli == "generate":
        p = run("generate.py", "--checkpoint_dir", str(folder), "--max_new_tokens", "2")
    elif cli == "init_from":
        p = run("train_colab_mmap.py", *train, "--init_from", str(folder))
    elif cli.startswith("resume"):
        p = run("train_colab_mmap.py", *train, "--resume", str(folder))
    elif cli == "export_hf":
        p = run("export_hf.py", "--checkpoint_dir", str(folder), "--out_dir", str(tmp_path / "hf"))
    else:
        hf = tmp_path / "hf_in"
        hf.mkdir()
        (hf / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 33, "n_positions": 32,
                                                    "n_embd": 32, "n_layer": 1, "n_head": 2}))
        torch.save({"payload": _RunsCode(side)}, hf / "pytorch_model.bin")
        p = run("import_hf.py", "--hf_dir", str(hf), "--out_dir", str(tmp_path / "imported"))
    assert not side.exists(), "the pickle ran code"
    line = one_error_line(p)
    assert re.search(r"pytorch_model\.bin|training_state\.pt", line), line


# ---------------------------------------------------------------------------- JSON validated before use

@pytest.mark.parametrize("content", ['{"vocab_size": 33, "n_layer": ', "[1, 2, 3]", '"a string"',
                                     '{"vocab_size": "33", "block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 32}',
                                     '{"vocab_size": 33, "block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 32, '
                                     '"activation": "relu"}',
                                     b"\xff\xfe{\x00}\x00"],
                         ids=["truncated", "list", "string", "vocab-as-string", "unknown-key", "utf16"])
def test_garbage_config_json_is_one_clear_error(ckpt, tmp_path, content) -> None:
    """from_pretrained raises UserError naming config.json (never JSONDecodeError, AttributeError, ...)."""
    folder = shutil.copytree(ckpt / "step_00000002", tmp_path / "m")
    cfg = folder / "config.json"
    cfg.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError, match="config.json"):
        TransformerLanguageModel.from_pretrained(folder)


@pytest.mark.parametrize("content", ['{"model": 12}', '{"model": {"type": "BPE"}}', "[]", "not json",
                                     '{"type": "char", "chars": "abc"}', '{"type": "char", "chars": ["ab"]}',
                                     '{"type": "wordpiece"}', b"\x00\x01\x02"],
                         ids=["model-int", "model-no-vocab", "list", "not-json", "char-chars-str", "char-multichar",
                              "unknown-type", "binary"])
def test_garbage_tokenizer_json_is_one_clear_error(tmp_path, content) -> None:
    path = tmp_path / "tok_under_test.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError, match="tok_under_test.json"):
        load_tokenizer(path)


def test_garbage_hf_config_is_one_clear_error(tmp_path) -> None:
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "gpt2", "n_embd": ')
    line = one_error_line(run("import_hf.py", "--hf_dir", str(hf), "--out_dir", str(tmp_path / "out")))
    assert "config.json" in line
