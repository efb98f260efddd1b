#!/usr/bin/env bash
# Figure: the image's size, and the seconds from `podman build` start to the first reply
# from the built image, with the machine they were measured on. The smoke check measures
# them; this records them.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/image_smoke.sh --out "${1:-docs/figures/image.json}"
