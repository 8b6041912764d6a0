"""train_colab_mmap.py end to end on the CPU: learning, exact resume after SIGKILL, SIGINT, checkpoint
fallback, data modes, accumulation, torchrun, micro-batch OOM retries, NaN rollback, clear errors.

Runs use a 1-layer, 32-wide model on a generated character corpus, one CPU thread (deterministic and
fast on a shared machine), so every loss comparison can be exact or within 1e-5 (2e-3 with Muon: see TOLERANCE)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train_colab_mmap as tcm  # noqa: E402
from common import UserError  # noqa: E402
from model import TransformerLanguageModel  # noqa: E402
from char_data import WORDS, word_documents, write_char_dataset  # noqa: E402
from train_data import epoch_permutation  # noqa: E402
from train_step import lr_at  # noqa: E402
from fault_injection import fake_nan, fake_oom  # noqa: E402

SMALL = ["--device", "cpu", "--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--block_size", "32", "--batch_size", "8",
         "--dtype", "fp32", "--compile", "off", "--lr", "3e-3", "--seed", "0", "--log_every_steps", "1",
         "--eval_every_steps", "0", "--save_every_steps", "0", "--save_every_minutes", "0", "--keep_last", "0"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return write_char_dataset(tmp_path_factory.mktemp("data"), word_documents(1500, seed=0))


def data_args(d: dict) -> list[str]:
    return ["--bin_file", str(d["bin"]), "--tokenizer_file", str(d["tok"]), "--metadata_file", str(d["meta"])]


def train(d: dict, ck: Path, *extra: str) -> int:
    return tcm.main(data_args(d) + SMALL + ["--checkpoint_dir", str(ck), *extra])


def losses(ck: Path) -> dict[int, float]:
    recs = [json.loads(ln) for ln in (ck / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if "loss" in r}


def cli(d: dict, ck: Path, *extra: str, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "train_colab_mmap.py", *data_args(d), *SMALL, "--checkpoint_dir", str(ck), *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_for_step(ck: Path, step: int, proc: subprocess.Popen, timeout: float = 60) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if (ck / "metrics.jsonl").exists():
            got = losses(ck) if (ck / "metrics.jsonl").read_text().endswith("\n") else {}
            if got and max(got) >= step:
                return max(got)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.01)
    raise AssertionError(f"step {step} not reached")


# ---------------------------------------------------------------------------- learning and outputs

@pytest.mark.slow
def test_tiny_model_trains_to_stated_loss(data, tmp_path):
    """The seed's `tiny` (2 layers, 128 wide) on the word corpus: from ln(V) ~ 3.4 to a validation
    loss under 1.0 nats/char in 150 steps; the checkpoint folder's files on disk (README: File formats)."""
    ck = tmp_path / "ck"
    code = tcm.main(data_args(data) + ["--device", "cpu", "--model_size", "tiny", "--block_size", "64", "--batch_size", "16",
                                       "--epochs", "3", "--max_steps", "150", "--dtype", "fp32", "--compile", "off", "--lr", "2e-3", "--eval_every_steps", "75",
                                       "--log_every_steps", "5", "--checkpoint_dir", str(ck)])
    assert code == 0
    recs = [json.loads(ln) for ln in (ck / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in recs if "loss" in r]
    val = [r["val_loss"] for r in recs if "val_loss" in r]
    assert train_recs[0]["loss"] > 3.0 and val[-1] < 1.0, (train_recs[0]["loss"], val)
    for field in ("step", "loss", "lr", "grad_norm", "tokens_per_sec", "mfu", "memory_gb", "micro_batch_size"):
        assert field in train_recs[-1]
    assert train_recs[-1]["mfu"] is None  # n/a on a CPU
    latest = (ck / "latest").read_text()
    assert latest == "step_00000150\n" and (ck / "best").read_text() == latest
    folder = ck / latest.strip()
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "pytorch_model.bin", "tokenizer.json",
                                                      "trainer_state.json", "training_state.pt"]
    assert (folder / "tokenizer.json").read_bytes() == data["tok"].read_bytes()
    state = json.loads((folder / "trainer_state.json").read_text())
    assert state["step"] == 150 and state["best_val_loss"] == min(val) and state["args"]["model_size"] == "tiny"
    assert (ck / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(ck.glob(".tmp-*"))


def test_seed_snippet_loads_checkpoint(data, tmp_path):
    ck = tmp_path / "ck"
    assert train(data, ck, "--max_steps", "3", "--tie_embeddings") == 0
    folder = ck / (ck / "latest").read_text().strip()
    # the seed's README, with the config the trainer wrote
    model = TransformerLanguageModel(**json.load(open(folder / "config.json")))
    model.load_state_dict(torch.load(folder / "pytorch_model.bin"))
    x = torch.from_numpy(data["ids"][:32].astype(np.int64))[None]
    ref = TransformerLanguageModel.from_pretrained(ck)
    assert torch.equal(model(x)[0], ref(x)[0])
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in torch.load(folder / "pytorch_model.bin"))


# ---------------------------------------------------------------------------- resume

def records(ck: Path) -> list[dict]:
    """metrics.jsonl's complete lines (a run killed mid-write may leave half a line at the end)."""
    text = (ck / "metrics.jsonl").read_text()
    return [json.loads(ln) for ln in text[:text.rfind("\n") + 1].splitlines() if ln.strip()]


KILL_SEED = 20261201  # the kill step is drawn from this seed, so a failure replays the same way


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_losses(data, tmp_path, capsys):
    """SIGKILL mid-run, then the same command: it resumes from the newest checkpoint (its message
    says so), keeps the log of the steps before it as written, runs each later step exactly once,
    and every step's loss equals an uninterrupted run's, bitwise, dropout included."""
    steps = ["--max_steps", "60", "--save_every_steps", "7", "--model_size", "tiny", "--block_size", "64",
             "--batch_size", "16", "--n_embd", "64", "--dropout", "0.1"]
    ref = tmp_path / "ref"
    assert train(data, ref, *steps) == 0
    ck = tmp_path / "ck"
    proc = cli(data, ck, *steps)
    kill_step = random.Random(KILL_SEED).randint(15, 40)
    killed_at = wait_for_step(ck, kill_step, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    resumed_from = int((ck / "latest").read_text().strip()[5:])
    assert 7 <= resumed_from <= killed_at < 60, (KILL_SEED, kill_step, resumed_from, killed_at)
    kept = [r for r in records(ck) if r["step"] <= resumed_from]
    capsys.readouterr()
    assert train(data, ck, *steps) == 0  # same command: --resume auto
    assert f"resumed from step_{resumed_from:08d}" in capsys.readouterr().err
    after = records(ck)
    assert after[:len(kept)] == kept  # the first run's records, untouched: nothing before the checkpoint re-ran
    new_steps = [r["step"] for r in after[len(kept):] if "loss" in r]
    assert new_steps == list(range(resumed_from + 1, 61)), (KILL_SEED, resumed_from, new_steps)
    assert losses(ck) == losses(ref)  # exactly, every step, dropout included


def test_resume_with_a_smaller_micro_batch_evaluates_the_same_windows(data, tmp_path):
    """The validation set is fixed by the first run (eval_batches x its micro-batch), so a resume
    with a halved micro-batch (as after an out-of-memory halving) compares the same windows."""
    args = ["--val_fraction", "0.3", "--eval_every_steps", "2", "--eval_batches", "4", "--warmup_steps", "0",
            "--min_lr", "3e-3"]
    ref, ck = tmp_path / "ref", tmp_path / "ck"
    assert train(data, ref, *args, "--max_steps", "6", "--micro_batch_size", "4") == 0
    assert train(data, ck, *args, "--max_steps", "4", "--micro_batch_size", "4", "--save_every_steps", "4") == 0
    assert train(data, ck, *args, "--max_steps", "6", "--micro_batch_size", "2") == 0

    def val(d: Path) -> dict[int, float]:
        recs = [json.loads(ln) for ln in (d / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["val_loss"] for r in recs if r.get("val_loss") is not None}

    assert sorted(val(ref)) == sorted(val(ck)) == [2, 4, 6]
    for step in (2, 4, 6):  # micro 2 x 2 sums to the same gradients as micro 4: equal up to float rounding
        assert abs(val(ck)[step] - val(ref)[step]) < 1e-5, (step, val(ck), val(ref))


def test_sigint_saves_and_exits_cleanly(data, tmp_path):
    ck = tmp_path / "ck"
    proc = cli(data, ck, "--max_steps", "100000", "--model_size", "tiny", "--block_size", "64", "--n_embd", "64")
    wait_for_step(ck, 5, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    step = max(losses(ck))
    assert (ck / "latest").read_text() == f"step_{step:08d}\n"
    assert "SIGINT" in err and "run the same command again to resume" in err and "Traceback" not in err
    assert json.loads((ck / f"step_{step:08d}" / "trainer_state.json").read_text())["step"] == step


def test_corrupt_newest_checkpoint_falls_back(data, tmp_path, capsys):
    ref, ck = tmp_path / "ref", tmp_path / "ck"
    flat = ["--warmup_steps", "0", "--min_lr", "3e-3", "--schedule", "cosine"]  # a constant lr: --max_steps does not change it
    assert train(data, ref, "--max_steps", "15", *flat) == 0
    assert train(data, ck, "--max_steps", "10", "--save_every_steps", "5", *flat) == 0
    newest = ck / "step_00000010" / "pytorch_model.bin"
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)  # same size, damaged bytes
    newest.write_bytes(bytes(raw))
    capsys.readouterr()
    assert train(data, ck, "--max_steps", "15", *flat) == 0
    err = capsys.readouterr().err
    assert "step_00000010 is unusable" in err and "falling back to step_00000005" in err
    assert "resumed from step_00000005" in err
    assert losses(ck) == losses(ref)


# ---------------------------------------------------------------------------- equivalences

def test_mmap_and_preload_give_the_same_losses(data, tmp_path):
    assert train(data, tmp_path / "a", "--max_steps", "8", "--data_mode", "mmap") == 0
    assert train(data, tmp_path / "b", "--max_steps", "8", "--data_mode", "preload") == 0
    assert losses(tmp_path / "a") == losses(tmp_path / "b") and len(losses(tmp_path / "a")) == 8


# Muon orthogonalises each update in bf16 (torch.optim.Muon's Newton-Schulz), so gradients that differ
# in the last float bits (summed in another order) can round apart: its runs agree to ~3e-4 over 30 steps
# where AdamW's agree to 5e-7.
TOLERANCE = {"adamw": 1e-5, "muon": 2e-3}


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_grad_accumulation_equals_one_big_batch(data, tmp_path, optimizer):
    assert train(data, tmp_path / "a", "--max_steps", "10", "--grad_accum_steps", "4", "--optimizer", optimizer) == 0
    assert train(data, tmp_path / "b", "--max_steps", "10", "--optimizer", optimizer) == 0
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert a.keys() == b.keys() and max(abs(a[k] - b[k]) for k in a) <= TOLERANCE[optimizer]


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_simulated_oom_halves_micro_batch_with_same_losses(data, tmp_path, monkeypatch, capsys, optimizer):
    assert train(data, tmp_path / "ref", "--max_steps", "6", "--micro_batch_size", "2", "--optimizer", optimizer) == 0
    fake_oom(2, patch=monkeypatch.setattr)
    capsys.readouterr()
    assert train(data, tmp_path / "oom", "--max_steps", "6", "--optimizer", optimizer) == 0
    err = capsys.readouterr().err
    assert "out of memory at micro-batch 8" in err and "out of memory at micro-batch 4" in err
    a, b = losses(tmp_path / "ref"), losses(tmp_path / "oom")
    assert a.keys() == b.keys() and max(abs(a[k] - b[k]) for k in a) <= TOLERANCE[optimizer] / 10
    state = json.loads((tmp_path / "oom" / "step_00000006" / "trainer_state.json").read_text())
    assert state["micro_batch_size"] == 2
    # a resume starts at the size that worked: no new OOM message
    capsys.readouterr()
    assert train(data, tmp_path / "oom", "--max_steps", "8") == 0
    assert "out of memory" not in capsys.readouterr().err


def test_oom_in_the_middle_of_accumulation_drops_the_partial_gradients(data, tmp_path, monkeypatch, capsys):
    """Micro-batches of 4 rows: the first one's backward has run when the second one runs out of
    memory. The step is redone at micro-batch 2 from zeroed gradients: the losses equal a run that
    used micro-batch 2 from the start (left-over gradients of the first try would change them)."""
    assert train(data, tmp_path / "ref", "--max_steps", "6", "--micro_batch_size", "2", "--optimizer", "adamw") == 0
    fake_oom(3, after=1, patch=monkeypatch.setattr)  # more than 3 rows: fine once, then out of memory
    capsys.readouterr()
    assert train(data, tmp_path / "oom", "--max_steps", "6", "--micro_batch_size", "4", "--optimizer", "adamw") == 0
    err = capsys.readouterr().err
    assert err.count("out of memory at micro-batch 4: retrying the step with micro-batch 2") == 1
    a, b = losses(tmp_path / "ref"), losses(tmp_path / "oom")
    assert a.keys() == b.keys() and len(a) == 6 and max(abs(a[k] - b[k]) for k in a) <= 1e-6, (a, b)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["all_tokens_with_oom_probe", "assistant_only"])
def test_torchrun_two_ranks_match_single_process(data, chat, tmp_path, case):
    """Same global batch, 10 steps, Gloo: the per-step losses of rank 0 equal one process's
    within TOLERANCE. The first case also makes both ranks' probe halve the micro-batch (simulated OOM);
    the second weights each rank's loss by the global count of assistant targets."""
    # the first case trains with Muon (the default), the second with AdamW
    d, extra, env = (data, [], {**ENV, "FAKE_OOM_ABOVE": "2"}) if case.startswith("all") else \
        (chat, ["--loss_on", "assistant", "--optimizer", "adamw"], ENV)
    assert train(d, tmp_path / "single", "--max_steps", "10", *extra) == 0
    ck = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "tests/fault_injection.py", *data_args(d), *SMALL, "--checkpoint_dir", str(ck), "--max_steps", "10", *extra]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = losses(tmp_path / "single"), losses(ck)
    assert a.keys() == b.keys() and len(a) == 10
    assert max(abs(a[k] - b[k]) for k in a) <= TOLERANCE["muon" if case.startswith("all") else "adamw"], (a, b)
    assert "2 ranks" in out.stderr
    if case.startswith("all"):
        assert "out of memory at micro-batch 4 on some rank: using micro-batch 2" in out.stderr
        assert json.loads((ck / "step_00000010" / "trainer_state.json").read_text())["micro_batch_size"] == 2


def test_compile_failure_falls_back_to_eager_with_one_warning(data, tmp_path, monkeypatch, capsys):
    class Broken(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, *a, **k):
            raise RuntimeError("no working C++ compiler (simulated)")

    assert train(data, tmp_path / "eager", "--max_steps", "4") == 0
    monkeypatch.setattr(torch, "compile", lambda m, **kw: Broken(m))
    capsys.readouterr()
    assert train(data, tmp_path / "comp", "--max_steps", "4", "--compile", "on") == 0
    err = capsys.readouterr().err
    assert err.count("torch.compile failed") == 1 and "continuing in eager mode" in err
    assert losses(tmp_path / "eager") == losses(tmp_path / "comp")


# ---------------------------------------------------------------------------- NaN handling

def test_nan_steps_are_skipped_then_rolled_back_with_lower_lr(data, tmp_path, monkeypatch):
    fake_nan({7, 8, 9}, patch=monkeypatch.setattr)
    ck = tmp_path / "ck"
    # cosine: a WSD run would also save where its decay begins (step 8 here), the newest checkpoint
    assert train(data, ck, "--max_steps", "12", "--save_every_steps", "5", "--nan_patience", "3", "--schedule", "cosine") == 0
    recs = [json.loads(ln) for ln in (ck / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "rollback" and r["to"] == "step_00000005" for r in recs)
    ts = torch.load(ck / "step_00000012" / "training_state.pt", weights_only=True)["progress"]
    assert (ts["nan_skipped"], ts["rollbacks"], ts["lr_scale"]) == (3, 1, 0.5)
    lr = {r["step"]: r["lr"] for r in recs if "lr" in r}
    sched = lr_at(6, 12, 0, 3e-3, 3e-4)  # warmup 0: 12 // 20
    assert lr[7] == pytest.approx(0.5 * sched)


def test_repeated_nan_without_checkpoint_stops_with_advice(data, tmp_path, monkeypatch):
    fake_nan({2, 3}, patch=monkeypatch.setattr)
    with pytest.raises(UserError, match=r"NaN/inf for 2 steps in a row at step 3.*lower --lr"):
        train(data, tmp_path / "ck", "--max_steps", "10", "--nan_patience", "2")


# ---------------------------------------------------------------------------- assistant-only loss

@pytest.fixture(scope="module")
def chat(tmp_path_factory) -> dict:
    rng = random.Random(1)
    docs = []
    for _ in range(300):
        turns = "".join(f"<|user|>{' '.join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))}?\n"
                        f"<|assistant|>{' '.join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))}\n"
                        for _ in range(rng.randint(1, 3)))
        docs.append(("<|system|>be brief\n" if rng.random() < 0.3 else "") + turns + "<|endoftext|>")
    return write_char_dataset(tmp_path_factory.mktemp("chat"), "".join(docs), "chat")


@pytest.mark.parametrize("chunk", ["0", "16"])
def test_assistant_loss_equals_hand_reference(chat, tmp_path, chunk):
    """Step 1's logged loss is the mean cross-entropy over exactly the assistant targets of
    the first batch, computed here from the same initial weights with a plain loop."""
    ck = tmp_path / "ck"
    assert train(chat, ck, "--max_steps", "1", "--loss_on", "assistant", "--loss_chunk_size", chunk,
                 "--val_fraction", "0") == 0
    ids = chat["ids"].astype(np.int64)
    starts = epoch_permutation((len(ids) - 1) // 32, 0, 0)[:8] * 32
    torch.manual_seed(0)
    cfg = json.loads((ck / "step_00000001" / "config.json").read_text())
    model = TransformerLanguageModel(**cfg)
    last_special = [None]  # last_special[p]: the last special token at a position < p
    for t in ids:
        last_special.append(int(t) if t in (0, 1, 2, 3) else last_special[-1])
    total, count = 0.0, 0
    for s in starts:
        x = torch.from_numpy(ids[s:s + 32])[None]
        logp = torch.log_softmax(model(x)[0][0].double(), dim=-1)
        for j in range(32):
            if last_special[s + j + 1] == 2:  # target ids[s+j+1] follows <|assistant|>
                total -= logp[j, ids[s + j + 1]].item()
                count += 1
    assert 0 < count < 8 * 32
    assert losses(ck)[1] == pytest.approx(total / count, abs=1e-5)


def test_init_from_then_assistant_finetune(data, chat, tmp_path):
    """The seed's 'pretrain, then make it chat' path: weights come from --init_from, and
    a tokenizer of another vocabulary is refused."""
    pre = tmp_path / "pre"
    assert train(chat, pre, "--max_steps", "40") == 0
    ft = tmp_path / "ft"
    assert train(chat, ft, "--max_steps", "2", "--init_from", str(pre), "--loss_on", "assistant") == 0
    fresh = tmp_path / "fresh"
    assert train(chat, fresh, "--max_steps", "2", "--loss_on", "assistant") == 0
    assert losses(ft)[1] < losses(fresh)[1] - 0.5
    with pytest.raises(UserError, match="vocab_size"):
        train(data, tmp_path / "x", "--max_steps", "2", "--init_from", str(pre))


# ---------------------------------------------------------------------------- clear errors

def test_mismatches_are_one_line_errors(data, chat, tmp_path):
    base = data_args(data) + SMALL + ["--checkpoint_dir", str(tmp_path / "ck")]
    with pytest.raises(UserError, match="is not the tokenizer data.bin was made with"):
        tcm.main(base + ["--tokenizer_file", str(chat["tok"])])
    bad_meta = tmp_path / "meta.json"
    meta = json.loads(data["meta"].read_text())
    bad_meta.write_text(json.dumps({**meta, "num_tokens": meta["num_tokens"] + 1}))
    with pytest.raises(UserError, match="truncated or from another run"):
        tcm.main(base + ["--metadata_file", str(bad_meta)])
    bad_meta.write_text(json.dumps({**meta, "vocab_size": meta["vocab_size"] + 5}))
    with pytest.raises(UserError, match="vocab_size"):
        tcm.main(base + ["--metadata_file", str(bad_meta)])
    n = meta["num_tokens"]
    with pytest.raises(UserError, match="--block_size .* is longer than the training data"):
        tcm.main(base + ["--block_size", str(n + 10), "--val_fraction", "0"])
    with pytest.raises(UserError, match="--batch_size 8 needs 8 windows"):
        tcm.main(base + ["--block_size", str(n // 4), "--val_fraction", "0"])
    with pytest.raises(UserError, match="does not divide the per-rank batch"):
        tcm.main(base + ["--grad_accum_steps", "3"])
    assert not (tmp_path / "ck").exists()  # nothing written before validation passed


def test_cli_error_is_one_line_and_use_gpu_without_gpu(data, tmp_path):
    out = subprocess.run([sys.executable, "train_colab_mmap.py", *data_args(data), "--block_size", "99999999",
                          "--checkpoint_dir", str(tmp_path / "ck")], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("error: --block_size 99999999")
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        with pytest.raises(UserError, match="--use_gpu: .* sees no GPU"):
            train(data, tmp_path / "ck", "--use_gpu")


def test_max_minutes_saves_and_stops(data, tmp_path, capsys):
    ck = tmp_path / "ck"
    assert train(data, ck, "--max_steps", "1000", "--max_minutes", "0.00001") == 0
    assert (ck / "latest").read_text() == "step_00000001\n"
    assert "stopped by --max_minutes" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_autocast_dtypes_train_on_cpu(data, tmp_path, dtype, capsys):
    """bf16 autocast, and fp16 with a GradScaler, run the same code path a GPU takes."""
    assert train(data, tmp_path / "ck", "--max_steps", "12", "--dtype", dtype) == 0
    got = losses(tmp_path / "ck")
    assert len(got) == 12 and all(np.isfinite(v) for v in got.values()) and got[12] < got[1]
    assert f"dtype {dtype} (asked for)" in capsys.readouterr().err
    ts = torch.load(tmp_path / "ck" / "step_00000012" / "training_state.pt", weights_only=True)
    assert bool(ts["scaler"]) == (dtype == "fp16")


@pytest.mark.slow
def test_init_from_huggingface_gpt2_folder(chat, tmp_path):
    """--init_from a HuggingFace GPT2LMHeadModel folder: step 1's loss is that model's loss on
    the first batch (positions cropped to --block_size 32)."""
    transformers = pytest.importorskip("transformers")
    V = chat["tokenizer"].vocab_size
    torch.manual_seed(3)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=V, n_positions=64, n_embd=32, n_layer=1,
                                                              n_head=2, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0))
    hf.save_pretrained(tmp_path / "hf")
    ck = tmp_path / "ck"
    assert train(chat, ck, "--max_steps", "1", "--init_from", str(tmp_path / "hf"), "--val_fraction", "0") == 0
    ids = chat["ids"].astype(np.int64)
    rows = torch.from_numpy(np.stack([ids[s:s + 33] for s in epoch_permutation((len(ids) - 1) // 32, 0, 0)[:8] * 32]))
    with torch.no_grad():
        logits = hf.eval()(rows[:, :-1]).logits
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, V), rows[:, 1:].reshape(-1))
    assert losses(ck)[1] == pytest.approx(ref.item(), abs=1e-5)
    assert json.loads((ck / "step_00000001" / "config.json").read_text())["block_size"] == 32
