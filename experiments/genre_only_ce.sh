#!/usr/bin/env bash
# Does pretraining on every genre pay? CE on comedy alone for the minutes the quickstart's
# pretraining and fine-tune took together, then both CE bots evaluated (greedy) on the same
# comedy test pairs. Needs a quickstart's directory.
#
#   OUT=runs/experiment-comedy bash experiments/genre_only_ce.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${CORPUS:-../shared/data/cornell-excerpt}
OUT=${OUT:-runs/experiment-comedy}
MINUTES=$(.venv/bin/python -c "
import json, sys
total = sum(json.load(open(f'$OUT/{s}/done.json'))['minutes'] for s in ('pretrain', 'ce'))
print(round(total, 2))")
echo "genre-only CE for $MINUTES min (the quickstart's pretraining + fine-tune)"
if [ ! -f "$OUT/genre-only-ce/best/model.safetensors" ]; then
  rm -rf "$OUT/genre-only-ce"
  .venv/bin/rlchat train ce --genre comedy --corpus "$CORPUS" --out "$OUT/genre-only-ce" \
    --max-minutes "$MINUTES" --epochs 100 --no-progress
fi
.venv/bin/rlchat eval "$OUT/genre-only-ce" "$OUT/ce" --corpus "$CORPUS" --no-progress \
  --out "$OUT/genre_only_vs_pretrained.json"
