"""generate.py: KV-cached decoding equals recomputation, sampling filters, seeds, stop strings,
batches, sliding window, streaming, chat mode, the seed's snippet, the CLI and the chat REPL."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import UserError  # noqa: E402
from generate import (TextStream, stream_batch, chat_repl, generate, generate_text, load_checkpoint,  # noqa: E402
                      stream_text, window_keep)
from char_data import memorising_model  # noqa: E402
from model import GPTConfig, TransformerLanguageModel  # noqa: E402
from tokenizer import CharTokenizer, special_tokens_for  # noqa: E402
from tokenizer_bpe import BPETokenizer  # noqa: E402

CHAT_DOCS = [
    "<|user|>hi\n<|assistant|>hello there\n<|endoftext|>",
    "<|user|>hi\n<|assistant|>hello there\n<|user|>hi\n<|assistant|>you said hi twice\n<|endoftext|>",
    "<|user|>bye\n<|assistant|>see you ✓ 😀\n<|endoftext|>",
    "<|user|>What is the capital of France?\n<|assistant|>The capital of France is Paris.\n<|endoftext|>",
]
REPLIES = {"hi": "hello there", "bye": "see you ✓ 😀",
           "What is the capital of France?": "The capital of France is Paris."}


@pytest.fixture(scope="module")
def tokenizers() -> dict:
    char = CharTokenizer.from_text("".join(CHAT_DOCS), special_tokens_for(chat=True))
    bpe = BPETokenizer().train(CHAT_DOCS * 3, vocab_size=300, special_tokens=special_tokens_for(chat=True),
                               show_progress=False)
    assert len(bpe.encode("😀")) > 1 and len(bpe.encode("✓")) > 1  # multi-byte chars span several tokens
    return {"char": char, "bpe": bpe}


def random_model(vocab_size: int, block_size: int = 32, seed: int = 0) -> TransformerLanguageModel:
    """Random weights with a scaled-up head: peaked distributions, so sampling filters matter
    and greedy has no near-ties."""
    torch.manual_seed(seed)
    model = TransformerLanguageModel(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2,
                                               n_head=2, n_embd=32))
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    return model.eval()


def train_chat_model(tokenizer) -> TransformerLanguageModel:
    """A tiny model that memorises CHAT_DOCS (about a second of training)."""
    return memorising_model(tokenizer, CHAT_DOCS, 128, 64, 3e-3, 120)


@pytest.fixture(scope="module")
def chat_models(tokenizers) -> dict:
    return {kind: train_chat_model(tok) for kind, tok in tokenizers.items()}


@pytest.fixture(scope="module")
def char_checkpoint(tmp_path_factory, tokenizers, chat_models) -> Path:
    root = tmp_path_factory.mktemp("ckpt")
    tokenizers["char"].save(root / "char_tok.json")
    chat_models["char"].save_pretrained(root / "step_00000010", tokenizer_file=root / "char_tok.json")
    (root / "latest").write_text("step_00000010\n")
    return root


def greedy_reference(model, ids: list[int], n: int, block_size: int, penalty: float = 1.0) -> list[int]:
    """No cache: the whole window through the model every step; the same window rule as generate."""
    seq, start = list(ids), 0
    keep = window_keep(block_size)
    if len(seq) > block_size:
        start = len(seq) - keep
    for _ in range(n):
        if len(seq) - start > block_size:
            start = len(seq) - keep
        with torch.no_grad():
            logits, _ = model(torch.tensor([seq[start:]]))
        last = logits[0, -1].clone()
        if penalty != 1.0:
            for t in set(seq):
                last[t] = last[t] / penalty if last[t] > 0 else last[t] * penalty
        seq.append(int(last.argmax()))
    return seq


# ---------------------------------------------------------------------------- ids

def test_greedy_cache_equals_no_cache():
    model = random_model(40)
    torch.manual_seed(1)
    prompts = torch.randint(0, 40, (3, 6))
    out = generate(model, prompts, 24, temperature=0, eos_ids=())
    assert out.shape == (3, 30) and torch.equal(out[:, :6], prompts)
    for b in range(3):
        assert out[b].tolist() == greedy_reference(model, prompts[b].tolist(), 24, 32)
    assert torch.equal(generate(model, prompts, 24, temperature=0, eos_ids=(), use_cache=False), out)
    assert torch.equal(generate(model, prompts[0], 24, temperature=0, eos_ids=()), out[0])  # 1-D in, 1-D out


def test_zero_new_tokens_returns_the_prompt():
    model = random_model(40)
    prompt = torch.randint(0, 40, (2, 5), generator=torch.Generator().manual_seed(4))
    assert torch.equal(generate(model, prompt, 0), prompt)  # nanoGPT's contract: idx back, unchanged
    assert torch.equal(generate(model, prompt[0], 0), prompt[0])


@pytest.mark.parametrize("capability,expected", [((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16),
                                                  ((7, 5), torch.float16), ((7, 0), torch.float16)])
def test_cuda_autocast_dtype_follows_native_bf16(monkeypatch, capability, expected):
    """T4 (7.5) and V100 (7.0) emulate bf16 slowly, so generation there runs in fp16; A100/H100 bf16."""
    import generate as G

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what a T4 reports
    dtype = G.autocast_dtype(torch.device("cuda"))
    assert dtype == expected
    assert G.autocast_dtype(torch.device("cpu")) is None  # CPU: the model's own dtype


def test_cpu_decode_layout_matches_linear_follows_weight_changes_and_is_freed():
    """cpu_decode: inside decode_layout, 1-3 rows go through (in, out) weight copies whose
    results match nn.Linear's; any change of the weights (optimizer step, a .data copy that leaves
    the version counter alone, a new tensor) is picked up by the next call; outside inference mode
    and outside the context nn.Linear runs as usual; the copies go when the model does."""
    import gc
    import cpu_decode

    model = random_model(40)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    prompt = torch.randint(0, 40, (3, 6), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        for rows in (1, 3, 4):  # 4 rows: nn.Linear itself
            expected, _ = model(prompt[:1, :rows] if rows < 4 else prompt[:, :4])
            with cpu_decode.decode_layout(model):
                got, _ = model(prompt[:1, :rows] if rows < 4 else prompt[:, :4])
            assert torch.allclose(got, expected, atol=1e-4, rtol=1e-5)
    copies = cpu_decode._copies[model]
    assert len(copies) == len(linears)  # one (in, out) copy per linear, made by the 1- and 3-row calls
    assert all("forward" not in m.__dict__ for m in linears)  # the context put nn.Linear.forward back
    with cpu_decode.decode_layout(model):  # outside inference mode (training code): plain nn.Linear
        model(prompt[:1, :2], targets=prompt[:1, :2])[1].backward()
    with pytest.raises(ValueError, match="block_size"), torch.inference_mode(), cpu_decode.decode_layout(model):
        model(torch.zeros(1, 33, dtype=torch.long))  # an error inside the context ...
    assert all("forward" not in m.__dict__ for m in linears)  # ... still restores the layers
    head = model.lm_head.weight
    changes = [
        lambda: torch.optim.SGD([p for p in model.parameters() if p.grad is not None], lr=0.5).step(),  # version bump
        lambda: head.data.copy_(torch.randn_like(head) * 30),  # .data: no version bump
        lambda: head.data[:10].mul_(-1),  # .data, a few rows only
        lambda: setattr(head, "data", torch.randn_like(head) * 30),  # new storage
    ]
    for change in changes:
        before = generate(model, prompt[:1], 16, temperature=0, eos_ids=())
        change()
        after = generate(model, prompt[:1], 16, temperature=0, eos_ids=())
        assert after[0].tolist() == greedy_reference(model, prompt[0].tolist(), 16, 32)
        assert not torch.equal(before, after)  # the change mattered, so a stale copy would fail above
    assert all("forward" not in m.__dict__ for m in linears)
    n = len(cpu_decode._copies)
    model = linears = changes = head = None  # the last references
    gc.collect()
    assert len(cpu_decode._copies) == n - 1


def test_generation_past_block_size_slides_the_window():
    model = random_model(40, block_size=16)
    torch.manual_seed(2)
    for length in (5, 16, 23):  # shorter than, equal to and longer than block_size
        prompt = torch.randint(0, 40, (length,))
        out = generate(model, prompt, 45, temperature=0, eos_ids=())
        assert out.tolist() == greedy_reference(model, prompt.tolist(), 45, 16)
    tok = CharTokenizer("abcdefghijklmnopqrstuvwxyz0123456789 .")  # 40 ids, like the model
    assert tok.vocab_size == 40
    prompts = ["ab", "the quick brown", "lorem ipsum dolor sit am"]  # 2, 15 and 24 tokens
    batch = generate_text(model, tok, prompts, max_new_tokens=40, temperature=1.0, seed=5, chat=False)
    singles = [generate_text(model, tok, p, max_new_tokens=40, temperature=1.0, seed=5 + b, chat=False)
               for b, p in enumerate(prompts)]
    assert batch == singles


def test_repetition_penalty_and_eos():
    model = random_model(40)
    prompt = [3, 9, 9, 14, 2]
    out = generate(model, torch.tensor(prompt), 12, temperature=0, repetition_penalty=1.7, eos_ids=())
    assert out.tolist() == greedy_reference(model, prompt, 12, 32, penalty=1.7)
    plain = generate(model, torch.tensor(prompt), 12, temperature=0, eos_ids=()).tolist()
    stop_at = plain[len(prompt) + 4]
    first = plain.index(stop_at, len(prompt))
    stopped = generate(model, torch.tensor([prompt, prompt]), 12, temperature=0, eos_ids=[stop_at])
    assert stopped.shape == (2, first + 1) and stopped[0].tolist() == plain[:first + 1]


def test_top_k_and_top_p_stay_inside_the_allowed_set():
    model = random_model(40)
    prompt = torch.tensor([[5, 1, 7]])
    with torch.no_grad():
        logits = model(prompt)[0][0, -1].double()
    order = logits.argsort(descending=True).tolist()
    allowed_k = set(order[:4])
    # top-p at temperature 2: choose top_p between the mass of the top 3 and the top 4 tokens, so
    # exactly the top 4 may be drawn (the 5th still has a few percent of the mass)
    mass = torch.softmax(logits / 2.0, dim=-1)[order].cumsum(0)
    top_p = float(mass[2] + mass[3]) / 2
    allowed_p = set(order[:4])
    n = 400
    draws_k = generate(model, prompt.repeat(n, 1), 1, temperature=1.0, top_k=4, seed=0)[:, -1].tolist()
    draws_p = generate(model, prompt.repeat(n, 1), 1, temperature=2.0, top_p=top_p, seed=0)[:, -1].tolist()
    draws_all = generate(model, prompt.repeat(n, 1), 1, temperature=2.0, seed=0)[:, -1].tolist()
    assert set(draws_k) <= allowed_k and len(set(draws_k)) >= 3
    assert set(draws_p) == allowed_p
    assert not set(draws_all) <= allowed_p  # without the filter, the tail does get drawn
    greedy = generate(model, prompt, 1, temperature=0)[0, -1].item()
    assert greedy == order[0]


def test_fixed_seed_reproduces(tokenizers):
    tok = tokenizers["bpe"]
    model = random_model(tok.vocab_size)
    a = generate_text(model, tok, "hello", max_new_tokens=20, temperature=1.0, seed=7, chat=False)
    assert a == generate_text(model, tok, "hello", max_new_tokens=20, temperature=1.0, seed=7, chat=False)
    others = {generate_text(model, tok, "hello", max_new_tokens=20, temperature=1.0, seed=s, chat=False)
              for s in (8, 9, 10)}
    assert others != {a}
    torch.manual_seed(3)
    b = generate_text(model, tok, "hello", max_new_tokens=20, temperature=1.0, chat=False)
    torch.manual_seed(3)
    assert b == generate_text(model, tok, "hello", max_new_tokens=20, temperature=1.0, chat=False)


# ---------------------------------------------------------------------------- text

@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_stop_strings_cut_exactly(tokenizers, kind):
    tok = tokenizers[kind]
    model = random_model(tok.vocab_size, block_size=64)
    kw = dict(max_new_tokens=40, temperature=1.0, seed=11, chat=False)
    full = generate_text(model, tok, "hi", **kw)
    assert len(full) > 12
    for stop in (full[5:8], full[9:10]):
        cut = full.find(stop)
        assert generate_text(model, tok, "hi", stop=stop, **kw) == full[:cut]
        pieces = list(stream_text(model, tok, "hi", stop=[stop, "\x00never"], **kw))
        assert "".join(pieces) == full[:cut]
    assert generate_text(model, tok, "hi", stop="\x00never", return_prompt=True, **kw) == "hi" + full


def test_text_stream_never_splits_a_character_and_flushes_the_tail(tokenizers):
    bpe = tokenizers["bpe"]
    nasty = "caf\u00e9 \u6771\u4eac \U0001F600 e\u0301 \r\n\t\x00 \u2713 " * 3
    asm = TextStream(bpe, stops=[], strip_newline=False)
    pieces = [asm.push(i) for i in bpe.encode(nasty)] + [asm.finish(at_stop_token=False)]
    assert "".join(pieces) == nasty == asm.completion
    assert all("\ufffd" not in p for p in pieces)
    partial = bpe.encode("ok ") + bpe.encode("\u6771")[:1]  # the stream ends inside a character
    asm = TextStream(bpe, stops=[], strip_newline=False)
    pieces = [asm.push(i) for i in partial] + [asm.finish(at_stop_token=False)]
    assert "".join(pieces) == bpe.decode(partial)  # the tail is flushed, not lost


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_streaming_reassembles_to_the_decoded_ids(tokenizers, kind):
    tok = tokenizers[kind]
    model = random_model(tok.vocab_size, block_size=64, seed=4)
    for seed in range(3):
        kw = dict(max_new_tokens=30, temperature=1.5, seed=seed)
        pieces: list[str] = []
        text = generate_text(model, tok, "see", chat=False, stream=pieces.append, **kw)
        assert "".join(pieces) == text == "".join(stream_text(model, tok, "see", chat=False, **kw))
        ids = generate(model, torch.tensor(tok.encode("see")), eos_ids=[0], **kw)[len(tok.encode("see")):].tolist()
        if ids and ids[-1] == 0:
            ids = ids[:ids.index(0)]
        assert text == tok.decode(ids)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_chat_mode_returns_only_the_reply(tokenizers, chat_models, kind):
    tok, model = tokenizers[kind], chat_models[kind]
    for prompt, reply in REPLIES.items():
        assert generate_text(model, tok, prompt, temperature=0) == reply
    full = generate_text(model, tok, "hi", temperature=0, return_prompt=True)
    assert full == "<|user|>hi\n<|assistant|>hello there"
    history = "<|user|>hi\n<|assistant|>hello there\n<|user|>hi\n<|assistant|>"  # already a chat: used as is
    assert generate_text(model, tok, history, temperature=0) == "you said hi twice"
    raw = generate_text(model, tok, "<|user|>bye\n<|assistant|>", temperature=0, chat=False, max_new_tokens=20)
    assert raw.startswith("see you ✓ 😀\n")  # plain mode keeps the newline and the text after it
    pieces: list[str] = []
    assert generate_text(model, tok, "bye", temperature=0, stream=pieces.append) == "see you ✓ 😀"
    assert "".join(pieces) == "see you ✓ 😀" and not any("\ufffd" in p for p in pieces)
    # a batch of replies of different lengths, each stopping on its own
    prompts = list(REPLIES) + ["hi"]
    assert generate_text(model, tok, prompts, temperature=0) == [REPLIES[p] for p in prompts]


def test_batch_equals_single_prompts(tokenizers):
    tok = tokenizers["bpe"]
    model = random_model(tok.vocab_size, block_size=64, seed=5)
    prompts = ["h", "hello there, you", "What is", ""]
    kw = dict(max_new_tokens=25, temperature=0.9, top_k=20, top_p=0.95, repetition_penalty=1.2, chat=False,
              stop="ca")
    batch = generate_text(model, tok, prompts, seed=100, **kw)
    assert batch == [generate_text(model, tok, p, seed=100 + b, **kw) for b, p in enumerate(prompts)]
    assert len(set(batch)) == len(batch)


def test_stream_batch_streams_every_row_and_drops_the_rows_let_go(tokenizers):
    """stream_batch's (row, piece) pairs join, row by row, to generate_text's batch; a row whose
    keep_going turns False after its first piece leaves the batch, and the others are unchanged."""
    tok = tokenizers["bpe"]
    model = random_model(tok.vocab_size, block_size=64, seed=5)
    prompts = ["h", "hello there, you", "What is"]
    kw = dict(max_new_tokens=25, temperature=0.9, top_k=20, seed=7, chat=False)
    expected = generate_text(model, tok, prompts, **kw)
    joined, order = ["", "", ""], []
    for b, piece in stream_batch(model, tok, prompts, **kw):
        joined[b] += piece
        order.append(b)
    assert joined == expected and len(set(order[:3])) > 1  # rows interleave: each is streamed as it grows
    cut, steps = ["", "", ""], []
    for b, piece in stream_batch(model, tok, prompts, keep_going=lambda b: b != 1 or not cut[1], **kw):
        cut[b] += piece
        steps.append(b)
    assert cut[0] == expected[0] and cut[2] == expected[2]
    assert expected[1].startswith(cut[1]) and 0 < len(tok.encode(cut[1])) < len(tok.encode(expected[1])) - 5


def test_wrapped_models_and_training_mode_restored(tmp_path, tokenizers, chat_models):
    import torch.distributed as dist

    tok, model = tokenizers["char"], chat_models["char"]
    compiled = torch.compile(model)  # lazy: generation unwraps it, nothing is compiled
    assert generate_text(compiled, tok, "hi", temperature=0) == "hello there"
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        assert generate_text(ddp, tok, "bye", temperature=0) == "see you ✓ 😀"
    finally:
        dist.destroy_process_group()
    model.train()
    try:
        assert generate_text(model, tok, "hi", temperature=0) == "hello there"
        assert model.training
    finally:
        model.eval()


SEED_SNIPPET = """
from model import TransformerLanguageModel
from tokenizer_bpe import BPETokenizer
from generate import generate_text
import torch

# Load model and tokenizer
model = TransformerLanguageModel(...)
model.load_state_dict(torch.load('checkpoint/pytorch_model.bin'))
tokenizer = BPETokenizer()
tokenizer.load('checkpoint/tokenizer.json')

# Generate
text = generate_text(
    model, tokenizer,
    prompt="What is the capital of France?",
    max_new_tokens=100,
    temperature=0.8
)
print(text)
"""


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_seed_readme_snippet(tmp_path, monkeypatch, capsys, tokenizers, chat_models, kind):
    tok = tokenizers[kind]
    tok.save(tmp_path / "tok.json")
    chat_models[kind].save_pretrained(tmp_path / "checkpoint", tokenizer_file=tmp_path / "tok.json")
    monkeypatch.chdir(tmp_path)
    code = SEED_SNIPPET.replace("TransformerLanguageModel(...)",
                                "TransformerLanguageModel(**json.load(open('checkpoint/config.json')))")
    if kind == "char":  # phases 1-2: the same snippet with the character tokenizer
        code = code.replace("tokenizer = BPETokenizer()\ntokenizer.load('checkpoint/tokenizer.json')",
                            "from tokenizer import load_tokenizer\n"
                            "tokenizer = load_tokenizer('checkpoint/tokenizer.json')")
    torch.manual_seed(0)
    exec(compile(code, "README.md", "exec"), {"json": json})
    assert capsys.readouterr().out == "The capital of France is Paris.\n"


# ---------------------------------------------------------------------------- checkpoints and CLI

def test_load_checkpoint_errors(tmp_path, char_checkpoint, tokenizers):
    model, tok = load_checkpoint(char_checkpoint)
    assert generate_text(model, tok, "hi", temperature=0) == "hello there"
    with pytest.raises(UserError, match="checkpoint directory not found"):
        load_checkpoint(tmp_path / "nope")
    bare = random_model(tokenizers["bpe"].vocab_size - 5).save_pretrained(tmp_path / "bare")
    with pytest.raises(UserError, match="tokenizer.json not found"):
        load_checkpoint(bare)
    tokenizers["bpe"].save(tmp_path / "bpe.json")
    small = random_model(tokenizers["bpe"].vocab_size - 5).save_pretrained(tmp_path / "small",
                                                                            tokenizer_file=tmp_path / "bpe.json")
    with pytest.raises(UserError, match=r"has 300 tokens but the model .* vocab_size 295"):
        load_checkpoint(small)


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, "generate.py", *args], cwd=ROOT, input=stdin, capture_output=True,
                          text=True, encoding="utf-8", timeout=120, env=env)


@pytest.mark.slow
def test_cli_prints_only_generated_text(char_checkpoint):
    model, tok = load_checkpoint(char_checkpoint)
    args = ["--checkpoint_dir", str(char_checkpoint), "--num_samples", "3", "--seed", "4", "--temperature", "1.0",
            "--max_new_tokens", "60"]
    expected = generate_text(model, tok, [""] * 3, max_new_tokens=60, temperature=1.0, seed=4, chat=False)
    assert len(set(expected)) > 1
    plain = run_cli(*args)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == "".join(t + "\n" for t in expected)
    assert "--- sample 2/3" in plain.stderr and "loaded" in plain.stderr
    streamed = run_cli(*args, "--stream")
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout == plain.stdout
    chat = run_cli("--checkpoint_dir", str(char_checkpoint), "--prompt", "bye", "--temperature", "0")
    assert chat.returncode == 0 and chat.stdout == "see you ✓ 😀\n"
    missing = run_cli("--checkpoint_dir", str(char_checkpoint / "missing"), "--prompt", "x")
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.strip().splitlines() == [f"error: checkpoint directory not found: "
                                                   f"{char_checkpoint / 'missing'} (pass the --checkpoint_dir "
                                                   f"the trainer wrote)"]


@pytest.mark.slow
def test_chat_repl_through_stdin(char_checkpoint):
    proc = run_cli("--checkpoint_dir", str(char_checkpoint), "--chat", "--temperature", "0",
                   stdin="hi\nhi\n/reset\nhi\n\n/quit\nbye\n")
    assert proc.returncode == 0, proc.stderr
    # the second "hi" sees the first exchange; /reset forgets it; nothing runs after /quit
    assert proc.stdout == "hello there\nyou said hi twice\nhello there\n"
    assert "you> " in proc.stderr and "(conversation reset)" in proc.stderr


def test_chat_repl_trims_history_and_exits_on_eof(char_checkpoint):
    model, tok = load_checkpoint(char_checkpoint)
    args = Namespace(max_new_tokens=100, temperature=0.0, top_k=None, top_p=1.0, repetition_penalty=1.0,
                     stop=None, seed=None)
    out, err = io.StringIO(), io.StringIO()
    # block_size 128 - 100 new tokens leaves 32 prompt tokens: the third "hi" drops the first exchange
    assert chat_repl(model, tok, args, stdin=io.StringIO("hi\nhi\nhi\n"), stdout=out, stderr=err) == 0
    assert out.getvalue().startswith("hello there\nyou said hi twice\n") and out.getvalue().endswith("\n")
    assert "dropped 2 oldest messages" in err.getvalue()
    plain = CharTokenizer.from_text("abc")
    with pytest.raises(UserError, match="--chat needs a tokenizer"):
        chat_repl(random_model(plain.vocab_size), plain, args, stdin=io.StringIO(""), stdout=out, stderr=err)
