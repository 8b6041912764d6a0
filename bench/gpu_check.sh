#!/usr/bin/env bash
# One prepared GPU check of train_colab_mmap.py on synthetic data, about 5 minutes on an H100:
#   1. CUDA tests: bf16 autocast with a pinned, prefetched feed; fp16 with a GradScaler; an
#      out-of-memory at a chosen micro-batch (simulated) halves it and matches a run that started
#      small; resuming uses no more GPU memory than a fresh start; a GPU-trained checkpoint loads
#      with the seed's torch.load on a machine without CUDA; the CPU test files pass here too.
#   2. gpt2_small, vocab 32,000, block 1024, bf16, --batch_size 64 (the seed's): eager with the
#      micro-batch chosen automatically (OOM halving for real), then torch.compile at that
#      micro-batch: tokens/s, MFU, peak memory, compiled / eager.
#   3. Generation of gpt2_small at batch 1 and 8 under bf16 autocast: KV cache vs no cache, and
#      vs HF GPT2LMHeadModel.generate under the same autocast (bench/bench_generate.py --device cuda).
# Results: $OUT_DIR/gpu_check.md (and the logs beside it).
#
#   bash bench/gpu_check.sh [OUT_DIR]                 # on the GPU machine
#   GPU_CHECK_DRY=1 bash bench/gpu_check.sh /tmp/dry  # the same plumbing on a CPU, tiny sizes
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1
PY=${PYTHON:-$(command -v python3 || command -v python)}
DRY=${GPU_CHECK_DRY:-0}
STATUS="$OUT_DIR/status.txt"
: > "$STATUS"

if [ "$DRY" = 1 ]; then
  DEV=(--device cpu --dtype fp32); BIG=(--model_size tiny --n_layer 1 --block_size 64); BIG_BATCH=16
  SMALL=(--model_size tiny --n_layer 1 --block_size 64); VOCAB=512; NTOK=400000; STEPS=12; SKIP=4
else
  DEV=(--use_gpu); BIG=(--model_size gpt2_small); BIG_BATCH=64
  SMALL=(--model_size small); VOCAB=32000; NTOK=8000000; STEPS=30; SKIP=10
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/gpu.txt"
fi
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())" | tee -a "$OUT_DIR/gpu.txt"

# synthetic data: a char tokenizer of exactly $VOCAB tokens and token ids with some structure
$PY - "$WORK" "$VOCAB" "$NTOK" <<'EOF'
import json, sys
import numpy as np
sys.path.insert(0, ".")
from common import sha256_file
from tokenizer import CharTokenizer
work, vocab, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tok = CharTokenizer(chars=[chr(0x4E00 + i) for i in range(vocab - 2)])
assert tok.vocab_size == vocab
tok.save(f"{work}/tok.json")
rng = np.random.default_rng(0)  # 500 phrases of 32 tokens over 2000 ids, in random order: learnable
phrases = rng.integers(0, min(vocab, 2000), (500, 32), dtype=np.uint16)
phrases[rng.integers(0, 500, n // 32 + 1)].ravel()[:n].tofile(f"{work}/data.bin")
json.dump({"dtype": "uint16", "num_tokens": n, "vocab_size": vocab,
           "tokenizer_sha256": sha256_file(f"{work}/tok.json")}, open(f"{work}/data_metadata.json", "w"))
EOF
DATA=(--bin_file "$WORK/data.bin" --tokenizer_file "$WORK/tok.json" --metadata_file "$WORK/data_metadata.json")
QUIET=(--eval_every_steps 0 --save_every_steps 0 --save_every_minutes 0 --val_fraction 0 --seed 0)

train() {  # train NAME ARGS...: logs to $OUT_DIR/NAME.log, checkpoints in $WORK/NAME
  local name=$1; shift
  # tests/fault_injection.py runs the trainer with a simulated out-of-memory above FAKE_OOM rows (empty: none)
  FAKE_OOM_ABOVE="${FAKE_OOM:-}" timeout 240 $PY tests/fault_injection.py "${DATA[@]}" "${QUIET[@]}" --checkpoint_dir "$WORK/$name" "$@" \
    > "$OUT_DIR/$name.out" 2> "$OUT_DIR/$name.log"
}
check() {  # check NAME COMMAND...: records PASS/FAIL
  local name=$1; shift
  if "$@"; then echo "PASS $name" | tee -a "$STATUS"; else echo "FAIL $name" | tee -a "$STATUS"; fi
}
metric() {  # metric NAME EXPR: a Python expression over `m` (train records) and `log` (stderr text)
  $PY - "$WORK/$1/metrics.jsonl" "$OUT_DIR/$1.log" "$2" <<'EOF'
import json, sys
m = [r for r in map(json.loads, open(sys.argv[1])) if "loss" in r]
log = open(sys.argv[2]).read()
ok = eval(sys.argv[3])
print(sys.argv[3], "->", ok)
sys.exit(0 if ok else 1)
EOF
}

# ---------------------------------------------------------------- 1. CUDA tests
T1=(--max_steps 40 --batch_size 16 --compile off --log_every_steps 1 "${SMALL[@]}")
check bf16_trains train t_bf16 "${DEV[@]}" "${T1[@]}"
check bf16_loss_falls metric t_bf16 "m[-1]['loss'] < m[0]['loss'] - 0.05 and ('dtype bf16' in log or '$DRY' == '1')"
check fp16_scaler train t_fp16 "${DEV[@]}" "${T1[@]}" --dtype fp16
check fp16_finite metric t_fp16 "all(r['loss'] == r['loss'] for r in m) and len(m) == 40"
check micro4_ref train t_micro4 "${DEV[@]}" "${T1[@]}" --max_steps 6 --micro_batch_size 4
FAKE_OOM=4
check oom_halving train t_oom "${DEV[@]}" "${T1[@]}" --max_steps 6
FAKE_OOM=
check oom_logged metric t_oom "'out of memory at micro-batch 16' in log and m[-1]['micro_batch_size'] == 4"
check oom_same_losses $PY - "$WORK" <<'EOF'
import json, sys
get = lambda n: {r["step"]: r["loss"] for r in map(json.loads, open(f"{sys.argv[1]}/{n}/metrics.jsonl")) if "loss" in r}
a, b = get("t_micro4"), get("t_oom")
print("max |diff|", max(abs(a[k] - b[k]) for k in a), "micro", [r["micro_batch_size"] for r in map(json.loads, open(f"{sys.argv[1]}/t_oom/metrics.jsonl"))][-1])
sys.exit(0 if a.keys() == b.keys() and max(abs(a[k] - b[k]) for k in a) < 2e-2 else 1)
EOF
check resume_fresh train t_resume "${DEV[@]}" "${T1[@]}" --max_steps 10 --save_every_steps 10
cp "$WORK/t_resume/metrics.jsonl" "$WORK/fresh_metrics.jsonl"
check resume_run train t_resume "${DEV[@]}" "${T1[@]}" --max_steps 20
check resume_memory $PY - "$WORK" <<'EOF'
import json, sys
w = sys.argv[1]
fresh = [r for r in map(json.loads, open(f"{w}/fresh_metrics.jsonl")) if "memory_gb" in r][-1]["memory_gb"]
resumed = [r for r in map(json.loads, open(f"{w}/t_resume/metrics.jsonl")) if "memory_gb" in r][-1]["memory_gb"]
print("peak GB: fresh", fresh, "resumed", resumed)
sys.exit(0 if resumed <= fresh * 1.05 + 0.01 else 1)
EOF
check seed_snippet_without_cuda env CUDA_VISIBLE_DEVICES= $PY - "$WORK/t_resume" <<'EOF'
import json, sys, torch
sys.path.insert(0, ".")
from model import TransformerLanguageModel
ck = sys.argv[1] + "/" + open(sys.argv[1] + "/latest").read().strip()
model = TransformerLanguageModel(**json.load(open(ck + "/config.json")))
model.load_state_dict(torch.load(ck + "/pytorch_model.bin"))  # the seed's line, no map_location
print("loaded on", next(model.parameters()).device)
EOF
if [ "$DRY" != 1 ]; then
  check cpu_test_files timeout 150 $PY -m pytest -q -x -m "not slow" tests/test_train.py tests/test_train_data_state.py \
    > "$OUT_DIR/pytest.log" 2>&1
fi

# ---------------------------------------------------------------- 2. gpt2_small benchmark
B=(--batch_size "$BIG_BATCH" --max_steps "$STEPS" --log_every_steps 2 "${BIG[@]}")
check eager_auto_micro train b_eager "${DEV[@]}" "${B[@]}" --compile off
MICRO=$($PY -c "import json,sys; print([r for r in map(json.loads, open('$WORK/b_eager/metrics.jsonl')) if 'loss' in r][-1]['micro_batch_size'])" 2>/dev/null || echo 16)
check compiled train b_compiled "${DEV[@]}" "${B[@]}" --compile on --micro_batch_size "$MICRO"
check compiled_no_warning metric b_compiled "'torch.compile failed' not in log and 'compile on' in log"

# ---------------------------------------------------------------- 3. generation (KV cache, bf16 autocast)
if [ "$DRY" = 1 ]; then
  GEN=(--device cpu --quick --sizes tiny --batch_sizes 1 --no_hf)
else
  GEN=(--device cuda --sizes gpt2_small --batch_sizes 1 8)
fi
check generate_bench timeout 240 $PY bench/bench_generate.py "${GEN[@]}" --no_head_table --out "$OUT_DIR/generate.md" \
  > "$OUT_DIR/generate.log" 2>&1

$PY - "$WORK" "$OUT_DIR" "$SKIP" "$STATUS" "$DRY" <<'EOF'
import json, sys
from pathlib import Path
work, out, skip, status, dry = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
def summary(name):
    f = work / name / "metrics.jsonl"
    if not f.exists():
        return None
    m = [r for r in map(json.loads, open(f)) if "loss" in r]
    a, b = next(r for r in m if r["step"] >= skip), m[-1]
    tps = (b["tokens"] - a["tokens"]) / max(b["elapsed_s"] - a["elapsed_s"], 1e-9)
    mfus = [r["mfu"] for r in m if r["step"] > skip and r["mfu"] is not None]
    return {"tokens_per_sec": tps, "mfu": sum(mfus) / len(mfus) if mfus else None, "peak_gb": max(r["memory_gb"] for r in m),
            "micro": b["micro_batch_size"], "loss": b["loss"], "steps": b["step"]}
lines = [f"# GPU check ({'DRY RUN on CPU' if dry == '1' else (out / 'gpu.txt').read_text().strip()})", "",
         "| check | result |", "|---|---|"]
lines += [f"| {ln.split()[1]} | {ln.split()[0]} |" for ln in open(status) if ln.strip()]
lines += ["", "| run | micro-batch | tokens/s | MFU | peak memory (GB) | final loss |", "|---|---|---|---|---|---|"]
res = {}
for name in ("b_eager", "b_compiled"):
    s = res[name] = summary(name)
    if s:
        mfu = "n/a" if s["mfu"] is None else f"{100 * s['mfu']:.1f}%"
        lines.append(f"| {name} | {s['micro']} | {s['tokens_per_sec']:,.0f} | {mfu} | {s['peak_gb']:.2f} | {s['loss']:.4f} |")
    else:
        lines.append(f"| {name} | failed (see {name}.log) | | | | |")
if res["b_eager"] and res["b_compiled"]:
    lines += ["", f"compiled / eager tokens/s: {res['b_compiled']['tokens_per_sec'] / res['b_eager']['tokens_per_sec']:.2f}"]
if (out / "generate.md").exists():
    lines += ["", "Generation (bench/bench_generate.py):", "", (out / "generate.md").read_text().strip()]
(out / "gpu_check.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
grep -q FAIL "$STATUS" && exit 1 || exit 0
