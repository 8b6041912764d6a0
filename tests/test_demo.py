"""demo.py (`make demo`) end to end at tiny scale, its rerun/resume behaviour, and colab.ipynb."""
from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib  # noqa: F401  (required: the demo draws loss_curve.png with it)
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
STEPS = ["corpus", "clean", "tokenize", "train", "generate1", "generate2"]


def run_demo(out: Path, *extra: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "demo.py", "--quick", "--out_dir", str(out), *extra], cwd=REPO,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, f"demo failed:\n{r.stderr[-3000:]}"
    return r


def skipped(stderr: str) -> set[str]:
    """Names of the steps that the run reported as up to date."""
    names = re.findall(r"^\[\d+/\d+\] (\w+):.*\n  up to date, skipped", stderr, flags=re.M)
    return set(names)


@pytest.mark.slow
def test_demo_quick_builds_every_step_resumes_and_reuses(tmp_path):
    out = tmp_path / "demo_out"

    # 1) training stopped by the time limit after its first step: the demo still reports, and says so
    first = run_demo(out, "--minutes", "0.0001")
    for name in STEPS:
        assert f"{name}:" in first.stderr
    assert "$ python sample_data.py" in first.stderr and "$ python train_colab_mmap.py" in first.stderr
    assert "training stopped at the 0.0001-minute limit" in first.stdout
    state = json.loads((out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip()
                        / "trainer_state.json").read_text())
    assert state["epoch"] < 1 and state["step"] >= 1

    # 2) rerun: data steps reused, training resumes from checkpoints/latest and finishes its epoch
    second = run_demo(out)
    assert {"corpus", "clean", "tokenize"} <= skipped(second.stderr)
    assert "resuming from" in second.stderr and f"resumed from step_{state['step']:08d}" in second.stderr
    assert "train" not in skipped(second.stderr) and "Note:" not in second.stdout

    # files each step made
    chat, heldout = out / "data" / "demo_chat.jsonl", out / "data" / "demo_heldout.jsonl"
    clean = out / "clean" / "demo_chat.txt"
    tok = out / "tokens"
    assert chat.stat().st_size > 80_000 and len(heldout.read_text().splitlines()) > 100
    text = clean.read_text(encoding="utf-8")
    assert text.endswith("<|endoftext|>") and text.startswith("<|") and "<|assistant|>" in text
    assert len(text.encode()) < chat.stat().st_size  # JSON syntax, HTML and duplicates are gone
    meta = json.loads((tok / "tokens_bpe_metadata.json").read_text())
    ids = np.fromfile(tok / "tokens_bpe.bin", dtype=meta["dtype"])
    assert len(ids) == meta["num_tokens"] and ids.max() < meta["vocab_size"] <= 512
    assert gzip.decompress((tok / "tokens_bpe.bin.gz").read_bytes()) == (tok / "tokens_bpe.bin").read_bytes()
    ck = out / "checkpoints"
    folder = ck / (ck / "latest").read_text().strip()
    state = json.loads((folder / "trainer_state.json").read_text())
    assert state["epoch"] == 1 and state["step"] > 1
    assert 0 < state["val_bpb"] < 8 and isinstance(meta["num_bytes"], int)  # bits per byte of the validation text
    assert (folder / "tokenizer.json").read_bytes() == (tok / "bpe_tokenizer.json").read_bytes()
    assert (folder / "pytorch_model.bin").stat().st_size > 100_000
    metrics = [json.loads(line) for line in (ck / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == state["step"]
    assert (ck / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the report: the seed's table answered by this model, held-out accuracy, loss, time, curve
    results = json.loads((out / "results.json").read_text())
    report = second.stdout
    assert report == "\n" + (out / "results.md").read_text()
    assert "| Prompt | Seed's output" in report
    assert len(results["seed_table"]) == 2  # the seed's two prompts, each answered
    for row in results["seed_table"]:
        assert row["verdict"] in ("exact", "correct", "wrong")
        assert f"| \"{row['prompt']}\" | \"{row['seed']}\" |" in report
    assert results["generate_py_agrees"] is True  # generate.py and the seed's snippet give the same text
    h = results["heldout"]["all"]
    assert h["total"] == 24 and f"**{h['correct']}/24 = {100 * h['accuracy']:.1f}%**" in report
    assert f"train {state['train_loss']:.4f}" in report and "loss_curve.png" in report
    assert f"{state['val_bpb']:.4f} bits per byte" in report and results["train"]["val_bpb"] == state["val_bpb"]
    assert re.search(r"Time to build everything: \d+\.\d min", report)

    # 3) a lost output file: only its step runs again (same bytes, so nothing after it is redone)
    clean.unlink()
    third = run_demo(out)
    assert "clean" not in skipped(third.stderr)
    assert {"corpus", "tokenize", "train", "generate1", "generate2"} <= skipped(third.stderr)
    assert clean.read_text(encoding="utf-8") == text

    # 4) a plain rerun reuses everything and prints the same table
    fourth = run_demo(out)
    assert set(STEPS) <= skipped(fourth.stderr) and not re.search(r"^\$ python", fourth.stderr, flags=re.M)
    assert "evaluate" in fourth.stderr and "results.json matches the checkpoint" in fourth.stderr
    table = lambda s: s[s.index("| Prompt"):s.index("Final loss")]  # noqa: E731
    assert table(fourth.stdout) == table(report)


def test_generate_py_agreement_needs_every_answer():
    import demo
    assert demo.same_answers(["Paris.", "ML."], ["Paris.", "ML."])
    assert not demo.same_answers(["Paris.", "ML."], ["Paris.", "ml."])
    assert not demo.same_answers([], [])  # nothing compared is no agreement
    assert not demo.same_answers(["Paris."], ["Paris.", "ML."])


def test_demo_rejects_bad_flags(tmp_path):
    r = subprocess.run([sys.executable, "demo.py", "--minutes", "0", "--out_dir", str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == "error: --minutes 0: must be above 0; try --minutes 9"
    f = tmp_path / "file"
    f.write_text("x")
    r = subprocess.run([sys.executable, "demo.py", "--out_dir", str(f)], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "is a file; pass a folder" in r.stderr


def test_colab_notebook_follows_the_seed():
    nb = json.loads((REPO / "colab.ipynb").read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4 and isinstance(nb["metadata"], dict)
    cells = nb["cells"]
    for c in cells:
        assert c["cell_type"] in ("markdown", "code") and isinstance(c["source"], list)
        if c["cell_type"] == "code":
            assert c["outputs"] == [] and c["execution_count"] is None
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    prose = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert "drive.mount('/content/drive')" in code
    assert "!gunzip /content/drive/MyDrive/tokens_bpe.bin.gz -c > /content/tokens_bpe.bin" in code
    assert "git clone https://github.com/YOUR_USERNAME/gpt2-from-scratch.git" in code
    assert "%cd /content/gpt2-from-scratch" in code
    train = next(src for src in ("".join(c["source"]) for c in cells) if "!python train_colab_mmap.py" in src)
    for flag in ("--bin_file /content/tokens_bpe.bin", "--tokenizer_file /content/drive/MyDrive/bpe_tokenizer.json",
                 "--metadata_file /content/drive/MyDrive/tokens_bpe_metadata.json", "--model_size gpt2_small",
                 "--batch_size 64", "--epochs 10", "--use_gpu", "--checkpoint_dir /content/drive/MyDrive/checkpoints"):
        assert flag in train
    assert "generate_text(" in code and "pytorch_model.bin" in code
    assert "resume" in prose.lower() and "rerun" in prose.lower()
    # every flag the notebook passes to a script exists in that script's parser
    for script, flags in (("train_colab_mmap.py", re.findall(r"--\w+", train)),):
        r = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
        for flag in flags:
            assert flag in r.stdout, f"{script} has no {flag}"
