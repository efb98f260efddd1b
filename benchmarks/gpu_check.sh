#!/usr/bin/env bash
# CUDA check and GPU figures, for a machine with a GPU and PyTorch (CUDA build) installed.
# Trains CE and RL briefly on CUDA through the CLI (bf16 autocast, pinned memory), resumes the
# finished CE run (it must load its CUDA checkpoint and stop at once), evaluates both, then runs
# the training and RL throughput benchmarks on the GPU.
#
#   CORPUS=../shared/data/cornell-excerpt bash benchmarks/gpu_check.sh [LOG_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${CORPUS:-../shared/data/cornell-excerpt}
LOG=${1:-/tmp/rlchat-gpu}
RUNS=$(mktemp -d)
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1
rlchat() { "$PY" -m rlchat "$@"; }

[ "$DEVICE" = cuda ] && nvidia-smi -L
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'

echo "== CE on CUDA, then resumed from its checkpoint"
rlchat train ce --corpus "$CORPUS" --genre comedy --out "$RUNS/ce" --device "$DEVICE" \
  --max-steps 400 --eval-every 200 --no-progress 2>&1 | tail -3
rlchat train ce --resume "$RUNS/ce" --corpus "$CORPUS" --device "$DEVICE" --no-progress \
  2>&1 | tail -3
echo "== RL on CUDA"
rlchat train rl --init "$RUNS/ce" --out "$RUNS/rl" --corpus "$CORPUS" --device "$DEVICE" \
  --max-steps 100 --eval-every 50 --no-progress 2>&1 | tail -3
echo "== evaluation on CUDA"
rlchat eval "$RUNS/ce" "$RUNS/rl" --genre comedy --corpus "$CORPUS" --device "$DEVICE" \
  --max-pairs 500 --resamples 200 --markdown > "$LOG/eval.md"
head -20 "$LOG/eval.md"

echo "== training throughput on CUDA"
"$PY" benchmarks/train_throughput.py --corpus "$CORPUS" --device "$DEVICE" --seconds 10 \
  | tee "$LOG/train_throughput.txt"
"$PY" benchmarks/train_throughput.py --corpus "$CORPUS" --device "$DEVICE" --seconds 10 \
  --batch-size 512 | tee "$LOG/train_throughput_b512.txt"
echo "== RL throughput on CUDA"
"$PY" benchmarks/rl_throughput.py --corpus "$CORPUS" --device "$DEVICE" --seconds 20 \
  | tee "$LOG/rl_throughput.txt"
"$PY" benchmarks/rl_throughput.py --corpus "$CORPUS" --device "$DEVICE" --seconds 20 \
  --batch-size 256 | tee "$LOG/rl_throughput_b256.txt"
