"""What the trainer does to learn faster: Muon for the block matrices, the WSD schedule (placed by
the time budget, extendable), and validation bits per byte."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train_colab_mmap as tcm  # noqa: E402
from char_data import word_documents, write_char_dataset  # noqa: E402
from common import UserError  # noqa: E402
from model import GPTConfig, TransformerLanguageModel  # noqa: E402
from tokenizer import load_tokenizer  # noqa: E402
import train_step  # noqa: E402
from train_step import build_optimizers, lr_at  # noqa: E402

SMALL = ["--device", "cpu", "--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--block_size", "32", "--batch_size", "8",
         "--dtype", "fp32", "--compile", "off", "--lr", "3e-3", "--seed", "0", "--log_every_steps", "1",
         "--eval_every_steps", "0", "--save_every_steps", "0", "--save_every_minutes", "0", "--keep_last", "0"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return write_char_dataset(tmp_path_factory.mktemp("data"), word_documents(1500, seed=0))


def train(d: dict, ck: Path, *extra: str) -> int:
    return tcm.main(["--bin_file", str(d["bin"]), "--tokenizer_file", str(d["tok"]), "--metadata_file", str(d["meta"]),
                     *SMALL, "--checkpoint_dir", str(ck), *extra])


def records(ck: Path) -> list[dict]:
    return [json.loads(ln) for ln in (ck / "metrics.jsonl").read_text().splitlines() if ln.strip()]


# ---------------------------------------------------------------------------- optimizers

def test_muon_takes_exactly_the_block_matrices():
    model = TransformerLanguageModel(GPTConfig(vocab_size=64, n_layer=2, n_head=2, n_embd=32, block_size=16))
    adamw, muon = build_optimizers(model, "muon", 1e-3, 1e-4, 0.02, 0.1, "cpu")
    names = {id(p): n for n, p in model.named_parameters()}
    in_muon = sorted(names[id(p)] for g in muon.param_groups for p in g["params"])
    assert in_muon == sorted(f"transformer.h.{i}.{m}.weight" for i in range(2)
                             for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"))
    decay, no_decay = ({names[id(p)] for p in g["params"]} for g in adamw.param_groups)
    assert decay == {"transformer.wte.weight", "transformer.wpe.weight", "lm_head.weight"}
    assert all(p.dim() == 1 for g in adamw.param_groups[1:] for p in g["params"]) and len(no_decay) == 2 * (4 + 4) + 2  # per block: 4 biases, 2 LayerNorms x (gain, bias); ln_f
    assert len(in_muon) + len(decay) + len(no_decay) == len(names)  # every parameter exactly once
    assert [(g["peak_lr"], g["min_lr"]) for g in muon.param_groups] == [(0.02, pytest.approx(0.002))]
    (only,) = build_optimizers(model, "adamw", 1e-3, 1e-4, 0.02, 0.1, "cpu")
    decay, no_decay = only.param_groups  # AdamW alone: weight decay on every matrix, never on vectors
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(names)


def test_resume_keeps_the_saved_optimizer_and_refuses_another(data, tmp_path, capsys):
    ck = tmp_path / "ck"
    assert train(data, ck, "--max_steps", "3", "--save_every_steps", "3") == 0  # default: muon
    state = torch.load(ck / "step_00000003" / "training_state.pt", weights_only=True)
    assert state["muon"]["state"] and state["optimizer"]["state"]  # both optimizers' moments saved
    assert train(data, ck, "--max_steps", "5") == 0  # no flag: keeps muon
    assert json.loads((ck / "step_00000005" / "trainer_state.json").read_text())["optimizer"] == "muon"
    with pytest.raises(UserError, match=r"trained with --optimizer muon, this run asks for --optimizer adamw"):
        train(data, ck, "--max_steps", "7", "--optimizer", "adamw")
    assert train(data, tmp_path / "a", "--max_steps", "2", "--optimizer", "adamw") == 0
    assert not torch.load(tmp_path / "a" / "step_00000002" / "training_state.pt", weights_only=True)["muon"]


# ---------------------------------------------------------------------------- schedules

def test_wsd_warms_up_holds_then_decays_linearly():
    lrs = [lr_at(s, 100, 10, 1e-3, 1e-4, "wsd", decay_start=70, decay_steps=30) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert lrs[10:71] == [1e-3] * 61
    assert lrs[85] == pytest.approx(1e-3 + (1e-4 - 1e-3) * 15 / 30) and lrs[99] == pytest.approx(1e-4 + 9e-4 / 30)
    assert lr_at(50, 100, 10, 1e-3, 1e-4, "wsd") == 1e-3  # decay_steps 0: not begun
    assert lr_at(500, 100, 10, 1e-3, 1e-4, "wsd", 70, 30) == pytest.approx(1e-4)  # past the end: the decayed rate


def test_wsd_run_saves_where_its_decay_begins_and_extends_from_there(data, tmp_path, capsys):
    """20 steps, --decay_fraction 0.3: constant to step 14, then the decay; `decay_start` names
    the checkpoint before it. Resumed from there with --max_steps 40, the run decays again over its
    new last 30% (steps 28-40), instead of going on at the decayed rate."""
    ck, flat = tmp_path / "ck", ["--warmup_steps", "0", "--min_lr", "3e-4", "--schedule", "wsd", "--decay_fraction", "0.3"]
    assert train(data, ck, "--max_steps", "20", *flat) == 0
    lr = {r["step"]: r["lr"] for r in records(ck) if "lr" in r}  # the rate step N was taken with
    assert (ck / "decay_start").read_text() == "step_00000014\n" and (ck / "step_00000014").is_dir()
    assert lr[14] == 3e-3 and lr[15] == 3e-3 and lr[16] < 3e-3 and lr[20] == pytest.approx(3e-3 - 2.7e-3 * 5 / 6)
    capsys.readouterr()
    assert train(data, ck, "--max_steps", "40", *flat, "--resume", str(ck / "step_00000014")) == 0
    assert "resumed from step_00000014" in capsys.readouterr().err
    lr = {r["step"]: r["lr"] for r in records(ck) if "lr" in r}
    assert lr[20] == 3e-3 and lr[28] == 3e-3 and lr[29] == 3e-3 and lr[30] < 3e-3 and lr[40] == pytest.approx(3e-3 - 2.7e-3 * 11 / 12)
    assert (ck / "decay_start").read_text() == "step_00000028\n"


def test_planned_end_follows_the_time_left(monkeypatch):
    monkeypatch.setattr(train_step.time, "time", lambda: 130.0)
    # 10 steps in 30 s this session: 3 s a step; 97% of a 60 s budget -> 9 more steps
    assert train_step.planned_end(1000, 50, 10, 100.0, 1.0) == 59
    assert train_step.planned_end(55, 50, 10, 100.0, 1.0) == 55  # the planned steps end first
    assert train_step.planned_end(1000, 50, 2, 100.0, 1.0) == 1000  # too few steps measured yet
    assert train_step.planned_end(1000, 50, 10, 100.0, None) == 1000


def test_wsd_cut_by_max_minutes_still_ends_decayed(data, tmp_path):
    ck = tmp_path / "ck"
    assert train(data, ck, "--max_steps", "100000", "--max_minutes", "0.1", "--schedule", "wsd", "--min_lr", "3e-4",
                 "--warmup_steps", "0") == 0
    lr = [r["lr"] for r in records(ck) if "lr" in r]
    steps = len(lr)
    assert 20 < steps < 100000 and max(lr) == 3e-3
    assert lr[-1] < 3e-3 * 0.25, lr[-20:]  # the last step ran near the end of its decay
    decay_begins = json.loads((ck / (ck / "decay_start").read_text().strip() / "trainer_state.json").read_text())["step"]
    assert 0.6 * steps < decay_begins < 0.95 * steps  # about --decay_fraction 0.2 of the steps the time allowed


# ---------------------------------------------------------------------------- bits per byte

def test_val_bpb_is_the_loss_in_bits_per_byte_of_the_validation_text(data, tmp_path, capsys):
    """The held-out tail: bytes counted by decoding it (no metadata covers a part of a file).
    A separate validation file with num_bytes in its metadata: that count is used."""
    ck = tmp_path / "ck"
    assert train(data, ck, "--max_steps", "4", "--val_fraction", "0.05", "--eval_every_steps", "2") == 0
    tok = load_tokenizer(data["tok"])
    n = len(data["ids"])
    tail = data["ids"][n - int(n * 0.05):]
    ratio = len(tail) / len(tok.decode(tail.tolist()).encode("utf-8")) / math.log(2)
    evals = [r for r in records(ck) if "val_loss" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(r["val_bpb"] == pytest.approx(r["val_loss"] * ratio, rel=1e-12) for r in evals)
    state = json.loads((ck / "step_00000004" / "trainer_state.json").read_text())
    assert state["val_bpb"] == evals[-1]["val_bpb"] and "val bpb" in capsys.readouterr().err

    val = tmp_path / "val.bin"
    tail.tofile(val)
    (tmp_path / "val_metadata.json").write_text(json.dumps({"num_tokens": len(tail), "num_bytes": 3 * len(tail)}))
    ck2 = tmp_path / "ck2"
    assert train(data, ck2, "--max_steps", "2", "--val_bin_file", str(val)) == 0
    (last,) = [r for r in records(ck2) if "val_loss" in r]
    assert last["val_bpb"] == pytest.approx(last["val_loss"] / 3 / math.log(2), rel=1e-12)


def test_split_bytes_cuts_chunks_after_endoftext_only(data):
    """Decoding in chunks gives the same count as decoding the whole split at once."""
    from train_data import Split, TokenFile, split_bytes

    tok = load_tokenizer(data["tok"])
    tf = TokenFile(data["bin"], np.dtype(np.uint16), len(data["ids"]))
    whole = len(tok.decode(data["ids"][1000:30000].tolist()).encode("utf-8"))
    assert split_bytes(Split(tf, 1000, 30000), tok, chunk=997) == whole


def test_default_rates_follow_the_optimizer_and_the_width():
    learning_rates = tcm.learning_rates
    assert learning_rates(128, "adamw", None, None)[0] == 1e-3 and learning_rates(768, "adamw", None, None)[0] == 6e-4
    assert learning_rates(128, "muon", None, None) == (4e-3, 0.006)  # measured best at 4L/128
    assert learning_rates(256, "muon", None, None) == (4e-3, 0.006)
    assert learning_rates(768, "muon", None, None) == pytest.approx((2.4e-3, 0.006 * (256 / 768) ** 0.5))
    assert learning_rates(768, "muon", 5e-4, 0.01) == (5e-4, 0.01)  # the flags win
