"""train_data.py and train_state.py: the assistant-only mask on hand-built sequences, epoch windows and rank shares,
token-file checks, checkpoint verification, fallback and pruning; the trainer's small pure helpers."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train_colab_mmap as tcm  # noqa: E402
from common import UserError, sha256_file  # noqa: E402
from model import GPTConfig, TransformerLanguageModel  # noqa: E402
from train_data import (AssistantMask, BatchStream, Split, TokenFile, TokenSource, check_token_files,  # noqa: E402
                        choose_data_mode, epoch_permutation, make_batch)
from train_state import (find_checkpoint, list_checkpoints, prune_checkpoints, read_checkpoint,  # noqa: E402
                         recover_interrupted_saves, write_checkpoint)
from train_step import is_oom, lr_at, peak_flops, probe_bf16_speedup  # noqa: E402

EOT, USER, ASSIST, SYSTEM = 0, 1, 2, 3
# pos:    0       1   2     3   4   5       6   7   8     9   10      11  12   13    14  15      16  17  18   19  20
STREAM = [SYSTEM, 10, USER, 11, 12, ASSIST, 13, 14, USER, 15, ASSIST, 16, EOT, USER, 17, ASSIST, 18, 19, EOT, 10, 11]
# a target is an assistant token from just after <|assistant|> up to and including the next special token
ASSISTANT_POSITIONS = {6, 7, 8, 11, 12, 16, 17, 18}


def source_for(tmp_path: Path, ids, start: int = 0, preload: bool = False, dtype=np.uint16) -> TokenSource:
    path = tmp_path / "s.bin"
    np.asarray(ids, dtype=dtype).tofile(path)
    tf = TokenFile(path, np.dtype(dtype), len(ids))
    return TokenSource(Split(tf, start, len(ids)), preload)


def mask_for(vocab: int = 32) -> AssistantMask:
    return AssistantMask(vocab, ASSIST, [EOT, USER, SYSTEM])


@pytest.mark.parametrize("preload", [False, True])
def test_assistant_mask_on_hand_built_windows(tmp_path, preload):
    src = source_for(tmp_path, STREAM, preload=preload)
    cases = {  # (window start, block size): kept targets, written out by hand
        (0, 4): [False, False, False, False],
        (5, 4): [True, True, True, False],           # starts on <|assistant|>: the token itself is never a target
        (6, 4): [True, True, False, False],          # starts mid-turn: the state comes from before the window
        (7, 4): [True, False, False, True],          # the user token that ends a reply is kept; the next turn is not
        (9, 4): [False, True, True, False],
        (10, 8): [True, True, False, False, False, True, True, True],     # two conversations in one window
        (12, 8): [False, False, False, True, True, True, False, False],   # plain text after <|endoftext|>
    }
    for (w, T), want in cases.items():
        x, y = make_batch(src, np.array([w]), T, 32, mask_for())
        assert (y[0] != -100).tolist() == want, (w, T)
        np.testing.assert_array_equal(x[0], STREAM[w:w + T])
        kept = y[0][y[0] != -100]
        np.testing.assert_array_equal(kept, [STREAM[w + 1 + j] for j in range(T) if want[j]])
    # every start and length against the rule, several windows in one batch
    for T in (1, 3, 7, 20):
        starts = np.arange(0, len(STREAM) - T)
        _, y = make_batch(src, starts, T, 32, mask_for())
        want = [[w + 1 + j in ASSISTANT_POSITIONS for j in range(T)] for w in starts]
        assert (y != -100).tolist() == want


def test_assistant_mask_looks_back_across_the_split_and_far(tmp_path):
    # a validation split starting mid-reply still knows it is inside a reply
    src = source_for(tmp_path, STREAM, start=6)
    _, y = make_batch(src, np.array([0]), 4, 32, mask_for())
    assert (y[0] != -100).tolist() == [True, True, False, False]
    # a reply longer than the lookback's first chunks
    long = [USER, 11, ASSIST] + [12] * 5000 + [EOT] + [13] * 10
    src = source_for(tmp_path, long)
    _, y = make_batch(src, np.array([4000, 5002]), 5, 32, mask_for())
    assert (y[0] != -100).all()
    assert (y[1] != -100).tolist() == [True, False, False, False, False]  # EOT kept, then plain text
    assert mask_for().state_before(src, 0) == 0


def test_token_out_of_vocabulary_is_a_clear_error(tmp_path):
    src = source_for(tmp_path, [1, 2, 3, 40, 5, 6])
    with pytest.raises(UserError, match="token id 40 at position 3, outside the vocabulary of 32"):
        make_batch(src, np.array([0]), 4, 32, None)


def test_epoch_windows_are_a_seeded_permutation_shared_by_ranks(tmp_path):
    T, n_windows, B = 4, 10, 4
    ids = np.arange(T * n_windows + 1) % 60000
    src = source_for(tmp_path, ids)
    seen = {0: [], 1: []}
    for rank in (0, 1):
        s = BatchStream(src, T, 65536, B, rank, 2, seed=3, epoch=0, offset=0, mask=None, pin=False)
        for step in range(3):
            b = s.next()
            assert b.x.shape == (2, T) and torch.equal(b.y[:, :-1], b.x[:, 1:])
            assert (b.epoch, b.offset) == ((0, 4 * (step + 1)) if step < 2 else (1, 4))
            if step < 2:
                seen[rank] += (b.x[:, 0] // T).tolist()
        s.close()
    perm = epoch_permutation(n_windows, 3, 0)
    assert seen[0] + seen[1] != list(perm[:8])  # ranks interleave by step...
    assert sorted(seen[0] + seen[1]) == sorted(perm[:8].tolist())  # ...and cover the epoch's 8 windows once
    assert seen[0] == [*perm[0:2], *perm[4:6]] and seen[1] == [*perm[2:4], *perm[6:8]]
    assert list(epoch_permutation(n_windows, 3, 1)) != list(perm)  # a new order each epoch
    # resuming at (epoch 0, offset 4) yields exactly the batch that followed
    s = BatchStream(src, T, 65536, B, 0, 1, seed=3, epoch=0, offset=4, mask=None, pin=False)
    assert (s.next().x[:, 0] // T).tolist() == perm[4:8].tolist()
    s.close()


def test_check_token_files(tmp_path, capsys):
    tok = tmp_path / "tok.json"
    tok.write_text('{"type": "char"}')
    bin_ = tmp_path / "x.bin"
    np.arange(100, dtype=np.uint16).tofile(bin_)
    meta = {"dtype": "uint16", "num_tokens": 100, "vocab_size": 120, "tokenizer_sha256": sha256_file(tok)}
    (tmp_path / "x_metadata.json").write_text(json.dumps(meta))
    tf = check_token_files(str(bin_), None, str(tok), 120)  # the metadata beside the .bin is found
    assert (tf.num_tokens, tf.dtype) == (100, np.dtype(np.uint16))
    assert capsys.readouterr() == ("", "")
    (tmp_path / "x_metadata.json").rename(tmp_path / "elsewhere.json")  # none: dtype from the vocabulary, a note on stderr
    tf = check_token_files(str(bin_), None, str(tok), 120)
    assert (tf.num_tokens, tf.dtype) == (100, np.dtype(np.uint16))
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("note: no --metadata_file; reading x.bin as uint16")
    (tmp_path / "m.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "dtype"}))
    with pytest.raises(UserError, match=r"lacks \['dtype'\]"):
        check_token_files(str(bin_), str(tmp_path / "m.json"), str(tok), 120)
    with pytest.raises(UserError, match="not found"):
        check_token_files(str(tmp_path / "nope.bin"), None, str(tok), 120)
    assert choose_data_mode("auto", 1000) == "preload" and choose_data_mode("auto", 1 << 60) == "mmap"
    assert choose_data_mode("mmap", 10) == "mmap"


# ---------------------------------------------------------------------------- checkpoints

def tiny_model() -> TransformerLanguageModel:
    return TransformerLanguageModel(GPTConfig(vocab_size=40, block_size=8, n_layer=1, n_head=2, n_embd=16))


def fake_checkpoint(ck: Path, step: int, tok: Path) -> Path:
    return write_checkpoint(ck, f"step_{step:08d}", tiny_model(), str(tok), {"progress": {"step": step}}, {"step": step})


def test_truncated_or_corrupt_checkpoints_are_detected(tmp_path):
    tok = tmp_path / "tok.json"
    tok.write_text("{}")
    ck = tmp_path / "ck"
    for step in (1, 2, 3):
        fake_checkpoint(ck, step, tok)
        time.sleep(0.01)
        (ck / "latest").write_text(f"step_{step:08d}\n")
    saved = read_checkpoint(ck / "step_00000003")
    sd, ts, meta = saved.weights, saved.training_state, saved.trainer_state
    assert ts["progress"]["step"] == 3 and "transformer.wte.weight" in sd and meta["files"]["pytorch_model.bin"]["size"] > 0
    state = ck / "step_00000003" / "training_state.pt"
    state.write_bytes(state.read_bytes()[:-10])
    with pytest.raises(ValueError, match="training_state.pt is missing or truncated"):
        read_checkpoint(ck / "step_00000003")
    w = ck / "step_00000002" / "pytorch_model.bin"
    w.write_bytes(w.read_bytes()[:100] + b"x" + w.read_bytes()[101:])
    msgs = []
    folder = find_checkpoint(ck, msgs.append).folder
    assert folder.name == "step_00000001" and len(msgs) == 2 and "sha256 mismatch" in msgs[1]
    (ck / "step_00000001" / "trainer_state.json").write_text("{")
    with pytest.raises(UserError, match="no usable checkpoint"):
        find_checkpoint(ck, msgs.append)
    assert find_checkpoint(tmp_path / "empty", msgs.append) is None


def test_rewriting_a_step_and_pruning_keeps_best(tmp_path):
    tok = tmp_path / "tok.json"
    tok.write_text("{}")
    ck = tmp_path / "ck"
    for step in (10, 20, 30, 40):
        fake_checkpoint(ck, step, tok)
        os.utime(ck / f"step_{step:08d}" / "trainer_state.json", (step, step))
    (ck / "best").write_text("step_00000010\n")
    (ck / "latest").write_text("step_00000040\n")
    assert [p.name for p in list_checkpoints(ck)] == [f"step_{s:08d}" for s in (40, 30, 20, 10)]
    prune_checkpoints(ck, keep_last=2)
    assert sorted(p.name for p in list_checkpoints(ck)) == ["step_00000010", "step_00000030", "step_00000040"]
    fake_checkpoint(ck, 30, tok)  # the same step written again replaces the folder whole
    assert read_checkpoint(ck / "step_00000030").training_state["progress"]["step"] == 30
    assert not [p for p in ck.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def test_recover_interrupted_saves(tmp_path):
    tok = tmp_path / "tok.json"
    tok.write_text("{}")
    ck = tmp_path / "ck"
    fake_checkpoint(ck, 5, tok)
    fake_checkpoint(ck, 7, tok)
    (ck / ".tmp-step_00000009-123").mkdir()  # killed while writing: incomplete
    os.replace(ck / "step_00000007", ck / ".old-step_00000007-123")  # killed while replacing step 7
    fake_checkpoint(ck, 5, tok)
    (ck / "step_00000005").rename(ck / ".old-step_00000005-99")
    fake_checkpoint(ck, 5, tok)  # step 5 exists again: its .old copy is stale
    recover_interrupted_saves(ck)
    assert sorted(p.name for p in ck.iterdir()) == ["step_00000005", "step_00000007"]
    assert read_checkpoint(ck / "step_00000007").training_state["progress"]["step"] == 7


# ---------------------------------------------------------------------------- trainer helpers

def test_lr_schedule_warmup_then_cosine_to_min_lr():
    lrs = [lr_at(s, 100, 10, 1e-3, 1e-4) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert lrs[55] == pytest.approx(5.5e-4) and lrs[-1] == pytest.approx(1e-4, rel=1e-2)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


@pytest.mark.parametrize("speedup", [0.6, 1.0, 1.09, 1.1, 1.8])
def test_cpu_dtype_auto_follows_the_measured_probe(monkeypatch, speedup):
    """--dtype auto on a CPU takes bf16 exactly when the probe measured it faster (by the 1.1x margin),
    and says the measured ratio; an explicit dtype skips the probe."""
    cpu, config = torch.device("cpu"), GPTConfig(vocab_size=64, n_layer=1, n_head=2, n_embd=32, block_size=16)
    calls = []
    monkeypatch.setattr(tcm, "probe_bf16_speedup", lambda cfg, rows: calls.append((cfg, rows)) or speedup)
    dtype, why = tcm.choose_dtype("auto", cpu, config, 256)
    assert dtype == ("bf16" if speedup >= 1.1 else "fp32") and f"{speedup:.2f}x" in why
    assert calls == [(config, 256)]
    assert tcm.choose_dtype("fp16", cpu, config, 256) == ("fp16", "asked for") and len(calls) == 1


def test_bf16_probe_is_quick_and_measures_a_ratio():
    config = GPTConfig(vocab_size=512, n_layer=1, n_head=4, n_embd=128, block_size=64)
    t0 = time.perf_counter()
    speedup = probe_bf16_speedup(config, rows=4096)
    assert math.isfinite(speedup) and speedup > 0 and time.perf_counter() - t0 < 5  # ~0.1 s alone
    cpu = torch.device("cpu")
    assert peak_flops(cpu) is None
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory")) and not is_oom(RuntimeError("shape"))
