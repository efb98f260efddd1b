#!/usr/bin/env bash
# The comedy experiment: cross-entropy, then SCST from it, then both evaluated on the
# held-out test split with paired bootstrap intervals, then the report (plots, table,
# sample replies). 2 CPU cores suffice. Re-running resumes and skips finished stages.
#
#   bash experiments/comedy.sh                           # excerpt next to the repository
#   CORPUS=~/corpus MINUTES=40 bash experiments/comedy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${CORPUS:-../shared/data/cornell-excerpt}
OUT=${OUT:-runs/experiment-comedy}
MINUTES=${MINUTES:-20}   # 60% cross-entropy, 30% RL plus what CE leaves unused

.venv/bin/rlchat quickstart --genre comedy --corpus "$CORPUS" --minutes "$MINUTES" \
  --out "$OUT" --no-serve --no-progress
echo "evaluation: $OUT/eval.json; report: $OUT/report/report.md"
