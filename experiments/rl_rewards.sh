#!/usr/bin/env bash
# Which RL reward to make the default: RL runs from the same fine-tuned CE bot, equal minutes,
# each reward in turn, judged on the VALIDATION split (never test) by `rlchat eval`.
# Needs a quickstart's directory (its ce/ and backward/ runs).
#
#   OUT=runs/experiment-comedy MINUTES=5 bash experiments/rl_rewards.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${CORPUS:-../shared/data/cornell-excerpt}
OUT=${OUT:-runs/experiment-comedy}
MINUTES=${MINUTES:-5}
DEFAULT="bleu=1.0,repeat=0.5,generic=0.15,stock=0.3"
declare -A REWARDS=(
  [default]="$DEFAULT"
  [mutual]="$DEFAULT,mutual=0.5"
  [mutual-dull]="$DEFAULT,mutual=0.5,dull=0.1"
)
runs=("$OUT/ce")
for name in default mutual mutual-dull; do
  run="$OUT/rewards/$name"
  if [ ! -f "$run/done.json" ]; then
    rm -rf "$run"
    .venv/bin/rlchat train rl --init "$OUT/ce" --out "$run" --corpus "$CORPUS" \
      --max-minutes "$MINUTES" --epochs 100 --reward "${REWARDS[$name]}" \
      --backward "$OUT/backward" --no-progress
    echo '{}' > "$run/done.json"
  fi
  runs+=("$run")
done
.venv/bin/rlchat eval "${runs[@]}" --split valid --corpus "$CORPUS" --no-progress \
  --reward "$DEFAULT" --out "$OUT/rewards/valid.json"
