#!/usr/bin/env bash
# Build the wheel, install it into a fresh venv away from the source tree, and check that
# the command runs and the server serves its page and answers: a missing package-data
# entry (the web page) fails here.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=$(realpath "${RLCHAT_TEST_CORPUS:-../shared/data/cornell-excerpt}")
work=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT

.venv/bin/python -m build --wheel --outdir "$work/dist" . > "$work/build.log"
"${PYTHON:-python3.11}" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "torch==2.13.0"
"$work/venv/bin/python" -m pip install --quiet "$work"/dist/rlchat-*.whl
cd "$work"
venv/bin/rlchat --help > /dev/null
venv/bin/rlchat train ce --genre comedy --corpus "$corpus" --out run --vocab-size 300 \
  --max-tokens 8 --embedding-dim 16 --hidden-size 32 --max-steps 2 --batch-size 16 \
  --no-progress > /dev/null 2>&1
venv/bin/rlchat serve run --port 8765 --database feedback.sqlite3 > serve.log 2>&1 &
server=$!
venv/bin/python - <<'PY'
import json, time, urllib.request

base = "http://127.0.0.1:8765"
for _ in range(120):
    try:
        urllib.request.urlopen(base + "/readyz", timeout=1)
        break
    except OSError:
        time.sleep(0.5)
page = urllib.request.urlopen(base + "/").read().decode()
assert "<html" in page.lower(), "the chat page is missing from the wheel"
for asset in ("app.js", "style.css"):
    urllib.request.urlopen(f"{base}/static/{asset}")
request = urllib.request.Request(
    base + "/api/v1/chat",
    data=json.dumps({"message": "hi"}).encode(),
    headers={"content-type": "application/json"},
)
assert "reply" in json.loads(urllib.request.urlopen(request).read())
PY
echo "wheel smoke check passed: $(ls "$work"/dist)"
