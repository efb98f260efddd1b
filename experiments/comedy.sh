#!/usr/bin/env bash
# The comedy experiment, as the quickstart runs it within MINUTES of wall time: CE on every
# genre, a fine-tune on comedy, the backward model, RL, then CE, RL and the served bot (RL
# with MMI reranking) evaluated beside the baselines on the held-out test split, and the
# report. 2 CPU cores suffice. Re-running resumes and skips finished stages.
#
#   bash experiments/comedy.sh                            # excerpt next to the repository
#   SPLIT_BY=movie OUT=runs/experiment-comedy-movie bash experiments/comedy.sh
#   SEED=1 OUT=runs/experiment-comedy-seed1 bash experiments/comedy.sh   # another draw
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${CORPUS:-../shared/data/cornell-excerpt}
OUT=${OUT:-runs/experiment-comedy}
MINUTES=${MINUTES:-20}
SPLIT_BY=${SPLIT_BY:-conversation}
SEED=${SEED:-0}
VOCAB_UL=${VOCAB_UL:-}  # --finetune-vocab-unlikelihood; unset: the quickstart's default, 0: the fifth recipe
NEGATIVE=${NEGATIVE:-}  # --finetune-negative-threshold; unset: the quickstart's default
SPARE=${SPARE:-}  # 1: --finetune-spare-pieces
VUL_SHARE=${VUL_SHARE:-}  # --finetune-vocab-unlikelihood-share; unset: the quickstart's default
PREFIX_UL=${PREFIX_UL:-}  # --finetune-prefix-unlikelihood; unset: the quickstart's default
SELECT_TOP1=${SELECT_TOP1:-}  # --finetune-select-top1; unset: the quickstart's default

started=$SECONDS
.venv/bin/rlchat quickstart --genre comedy --corpus "$CORPUS" --minutes "$MINUTES" \
  --split-by "$SPLIT_BY" --out "$OUT" --seed "$SEED" \
  ${VOCAB_UL:+--finetune-vocab-unlikelihood "$VOCAB_UL"} \
  ${NEGATIVE:+--finetune-negative-threshold "$NEGATIVE"} ${SPARE:+--finetune-spare-pieces} \
  ${SELECT_TOP1:+--finetune-select-top1 "$SELECT_TOP1"} \
  ${VUL_SHARE:+--finetune-vocab-unlikelihood-share "$VUL_SHARE"} \
  ${PREFIX_UL:+--finetune-prefix-unlikelihood "$PREFIX_UL"} \
  --no-serve --no-progress
echo "wall time: $((SECONDS - started)) s for a budget of $MINUTES min" | tee "$OUT/wall.txt"
echo "evaluation: $OUT/eval.json; report: $OUT/report/report.md"
