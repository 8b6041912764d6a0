#!/usr/bin/env bash
# Assemble BENCHMARKS.md from the per-area result tables each benchmark run leaves in bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# Benchmarks"
  echo
  echo "Every hot path has a benchmark in \`bench/\` that prints a ratio against a baseline measured in"
  echo "the same run. The tables below are copied from \`bench/results/*.md\` (rebuild this file with"
  echo "\`bash bench/make_benchmarks_md.sh\`). Machine unless stated: 2-core AMD EPYC CPU (AVX512-BF16,"
  echo "no AMX), 24 GiB, torch 2.13.0 CPU build, no GPU; each table gives its date. No GPU has been lent to this"
  echo "project yet: \`bench/gpu_check.sh\` is prepared but its H100 figures are not measured."
  echo
  echo "| area | benchmark | baseline in the same run |"
  echo "|---|---|---|"
  echo "| model | \`bench/bench_model.py\` | eager vs \`torch.compile\`, explicit attention vs SDPA |"
  echo "| cleaning | \`bench/bench_clean.py\` | \`--workers 1\` vs 2 |"
  echo "| tokenizing | \`bench/bench_tokenize.py\` | raw \`tokenizers\` \`encode_batch\` vs our pipeline (HF and tiktoken encoders) |"
  echo "| training | \`bench/bench_train.py\` | a minimal PyTorch loop vs the full trainer; chunked vs unchunked loss memory |"
  echo "| CPU training | \`bench/bench_cpu.py\` | nanoGPT's \`train.py\`, whole processes; \`--dtype auto\` vs forced fp32 and bf16 |"
  echo "| learning efficiency | \`bench/bench_learning.py\` | AdamW + cosine: tokens and time to its final bits per byte |"
  echo "| generation | \`bench/bench_generate.py\` | no-cache vs KV-cache, vs HF \`GPT2LMHeadModel.generate\` |"
  echo "| serving | \`bench/bench_serve.py\` | 32 streaming clients served in turn vs batched |"
  echo "| soak | \`bench/soak_train.py\` | an uninterrupted run vs one SIGKILLed and resumed |"
  echo "| demo | \`make demo\` | the seed's results table |"
  for f in model clean tokenize train cpu learning generate serve soak demo; do
    if [ -f "bench/results/$f.md" ]; then
      echo
      # demote the results' own top-level headings under this page's
      # and point its images (bench/results/NAME.png) at their place from the repo root
      sed -e 's/^# /## /' -e 's#](\([A-Za-z0-9_]*\.png\))#](bench/results/\1)#g' "bench/results/$f.md"
    fi
  done
} > BENCHMARKS.md.tmp && mv BENCHMARKS.md.tmp BENCHMARKS.md
echo "wrote BENCHMARKS.md"
