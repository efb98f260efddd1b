#!/usr/bin/env bash
# Build the Dockerfile for real and get a reply from the server inside the built image.
#
#   bash scripts/image_smoke.sh [--out FILE]      (or RLCHAT_IMAGE_OUT=FILE)
#
# No registry is reachable on CI machines, so the base image is made here: a debootstrap
# minbase of bookworm, imported under the name the Dockerfile's FROM uses. Torch and every
# other dependency come from a wheelhouse built on the host (offline build, WHEELS=wheels).
# `podman run` fails on these machines (rlimits, cgroups); `buildah run --isolation chroot`
# runs the image's entrypoint instead. Prints, and with --out writes as JSON, the image size
# and the seconds from `podman build` start to the first reply.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

out=${RLCHAT_IMAGE_OUT:-}
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --out=*) out=${1#--out=}; shift ;;
    *) echo "usage: $0 [--out FILE]" >&2; exit 2 ;;
  esac
done
[ -z "$out" ] || out=$(realpath -m "$out")
corpus=$(realpath "${RLCHAT_TEST_CORPUS:-../shared/data/cornell-excerpt}")
mirror=${RLCHAT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
base=docker.io/library/debian:bookworm-slim
tag=localhost/rlchat:smoke-$$
python=$repo/.venv/bin/python

step() { printf '\n== %s\n' "$*"; }
for tool in podman buildah debootstrap; do
  command -v "$tool" >/dev/null || { echo "image_smoke: $tool is not installed" >&2; exit 1; }
done
# The wheelhouse is resolved by the host's pip for the image's interpreter: both must be 3.11.
"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version'

work=$(mktemp -d "${TMPDIR:-/var/tmp}/rlchat-image.XXXXXX")
ctr="" server="" made_base="" jobs=()
# A step failed: show the end of its log (the work directory goes with the cleanup).
show() { { echo "-- last lines of $1:"; tail -40 "$1"; } >&2; exit 1; }
cleanup() {
  status=$?
  set +e
  [ "$status" = 0 ] || echo "image_smoke: FAILED (exit $status)" >&2
  # Background steps still running (a failure elsewhere): stop them with their children.
  for job in "${jobs[@]}"; do kill -TERM -- "-$job" 2>/dev/null && wait "$job" 2>/dev/null; done
  [ -n "$server" ] && kill -TERM -- "-$server" 2>/dev/null && wait "$server" 2>/dev/null
  [ -n "$ctr" ] && buildah rm "$ctr" >/dev/null 2>&1
  # RLCHAT_IMAGE_KEEP=1 leaves the images to inspect (podman image inspect, buildah from).
  if [ -z "${RLCHAT_IMAGE_KEEP:-}" ]; then
    podman rmi -f "$tag" >/dev/null 2>&1
    [ -n "$made_base" ] && podman rmi -f "$base" >/dev/null 2>&1
  else
    echo "kept the image $tag" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap "exit 130" INT TERM

step "tiny model, base image and wheelhouse (in parallel)"
# The model is trained on the host meanwhile: it is the volume, not part of the image.
# The background steps run in their own process groups (setsid), for the cleanup to stop.
mkdir -p "$work/models"
setsid "$repo/.venv/bin/rlchat" train ce --genre comedy --corpus "$corpus" \
  --out "$work/models/run" --vocab-size 300 --max-tokens 8 --embedding-dim 16 \
  --hidden-size 32 --max-steps 3 --batch-size 16 --no-progress > "$work/train.log" 2>&1 &
train=$!
jobs+=("$train")

if podman image exists "$base" && [ -z "${RLCHAT_IMAGE_FRESH_BASE:-}" ]; then
  echo "base: reusing the local $base"
else
  made_base=1
  setsid debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" \
    > "$work/debootstrap.log" 2>&1 &
  boot=$!
  jobs+=("$boot")
fi

# The build context: the tree as git sees it (tracked and untracked-not-ignored files),
# plus the wheelhouse; .dockerignore then applies as it would to `podman build .`.
mkdir "$work/context"
# (--ignore-failed-read: a tracked file deleted from the work tree is left out, not fatal)
git ls-files -co --exclude-standard -z \
  | tar --null --ignore-failed-read -T - -c 2>/dev/null | tar -C "$work/context" -x
"$python" - > "$work/requirements.txt" <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    meta = tomllib.load(f)
# What `pip install /src` needs: the dependencies and the build backend (no index there).
print("\n".join(meta["project"]["dependencies"] + meta["build-system"]["requires"]))
PY
# torch==2.13.0 is pinned in pyproject.toml; pip takes it from the files it finds on disk
# (this machine's find-links: the +cpu wheel). A CUDA build would drag in nvidia-* wheels.
"$python" -m pip download --quiet --only-binary=:all: --dest "$work/context/wheels" \
  -r "$work/requirements.txt" > "$work/pip.log" 2>&1 || show "$work/pip.log"
wheels=$work/context/wheels
torch_wheel=$(cd "$wheels" && ls torch-2.13.0*.whl)
case $torch_wheel in *+cpu*) ;; *) echo "not a CPU torch wheel: $torch_wheel" >&2; exit 1 ;; esac
if ls "$wheels" | grep -qi '^nvidia'; then echo "CUDA wheels in the wheelhouse" >&2; exit 1; fi
echo "wheelhouse: $(ls "$wheels" | wc -l) wheels, $(du -sh "$wheels" | cut -f1); torch: $torch_wheel"

if [ -n "$made_base" ]; then
  wait "$boot" || show "$work/debootstrap.log"
  jobs=("$train")
  # As the real slim image: no apt lists or downloaded packages, docs and man pages dropped.
  root=$work/rootfs
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/*
  printf 'path-exclude /usr/share/%s/*\n' doc man info > "$root/etc/dpkg/dpkg.cfg.d/slim"
  tar -C "$root" -c . | podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$base" > /dev/null
  rm -rf "$root"
  echo "base: $base from debootstrap, $(podman image inspect --format '{{.Size}}' "$base") bytes"
fi
wait "$train" || show "$work/train.log"
jobs=()
# No chmod: runs are written world-readable, so the image's own user reads them as they are.
echo "model: a 3-step comedy run in $work/models/run"

step "podman build (offline: --build-arg WHEELS=wheels)"
load=$(cut -d' ' -f1 /proc/loadavg)
start=$(date +%s.%N)
# --pull=never: the FROM must be the local base, never a registry. --format docker keeps
# the HEALTHCHECK. --network host: apt inside RUN reaches the mirror. --layers=false: one
# committed layer for the final image, nothing reused from an earlier build.
podman build --pull=never --isolation chroot --network host --format docker --layers=false \
  --build-arg WHEELS=wheels -t "$tag" "$work/context" > "$work/build.log" 2>&1 \
  || show "$work/build.log"
built=$(date +%s.%N)
size=$(podman image inspect --format '{{.Size}}' "$tag")
echo "built in $(awk "BEGIN { printf \"%.0f\", $built - $start }") s; image size $size bytes"

step "checks of the image's configuration"
podman image inspect "$tag" > "$work/inspect.json"
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
# Prints the entrypoint, then the health check's command with its port made ours.
"$python" - "$work/inspect.json" "$port" > "$work/config" <<'PY'
import json, shlex, sys

image = json.load(open(sys.argv[1]))[0]
config = image["Config"]
assert config.get("User") == "rlchat", f"runs as {config.get('User')!r}, not the rlchat user"
assert "/models" in (config.get("Volumes") or {}), "no /models volume"
assert "8000/tcp" in (config.get("ExposedPorts") or {}), "port 8000 not exposed"
assert config.get("Entrypoint") == ["rlchat", "serve"], config.get("Entrypoint")
test = (image.get("Healthcheck") or {}).get("Test") or []
assert test[:1] == ["CMD"] and any("/healthz" in part for part in test), f"health check {test}"
print(shlex.join(config["Entrypoint"]))
print(shlex.join(part.replace(":8000/", f":{sys.argv[2]}/") for part in test[1:]))
PY
entrypoint=$(sed -n 1p "$work/config")
healthcheck=$(sed -n 2p "$work/config")
echo "user rlchat, volume /models, port 8000, entrypoint: $entrypoint"

step "server inside the image (buildah run --isolation chroot, port $port)"
ctr=$(buildah from --pull=never "$tag")
# Its own process group (setsid), so that stopping it stops the server under buildah too.
# The run is mounted below /models: buildah run puts an empty volume on the image's VOLUME
# /models itself, over a bind mount there.
# shellcheck disable=SC2086 # the entrypoint's words
setsid buildah run --isolation chroot --network host -v "$work/models/run:/models/run:ro" \
  "$ctr" -- $entrypoint /models/run --host 127.0.0.1 --port "$port" --device cpu \
  > "$work/serve.log" 2>&1 &
server=$!
"$python" - "$port" "$start" "$size" "$built" "$work/result.json" "$server" <<'PY' \
  || show "$work/serve.log"
import json, sys, time, urllib.request
from pathlib import Path

port, start, size, built, result, server = sys.argv[1:]
base = f"http://127.0.0.1:{port}"


def post(path, body):
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def alive(pid):
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


deadline = time.time() + 180
while True:
    try:
        urllib.request.urlopen(base + "/readyz", timeout=2)
        break
    except OSError:
        if not alive(server):
            sys.exit("the server in the image exited before it was ready")
        if time.time() > deadline:
            sys.exit("the server in the image was not ready within 180 s")
        time.sleep(0.2)
legacy = post("/chat", {"text": "hello"})  # the original project's contract
first = time.time()
api = post("/api/v1/chat", {"message": "hi"})
for route, answer in (("/chat", legacy), ("/api/v1/chat", api)):
    assert isinstance(answer.get("reply"), str) and answer["reply"].strip(), (route, answer)
    print(f"{route}: {answer['reply']!r}")
json.dump(
    {
        "image_size_bytes": int(size),
        "build_s": round(float(built) - float(start), 1),
        "build_to_first_reply_s": round(first - float(start), 1),
        "replies": {"/chat": legacy["reply"], "/api/v1/chat": api["reply"]},
    },
    open(result, "w"),
)
PY
# The image's own HEALTHCHECK command, run in the image against the running server.
echo "health check in the image: $healthcheck"
buildah run --isolation chroot --network host "$ctr" -- sh -c "$healthcheck" \
  || show "$work/serve.log"
echo "HEALTHCHECK passed"

kill -TERM -- "-$server"
wait "$server" || true
server=""
buildah rm "$ctr" > /dev/null
ctr=""

step "figures"
"$python" - "$work/result.json" "$out" "$(podman --version)" "$torch_wheel" "$(nproc)" "$load" <<'PY'
import json, platform, sys

result = json.load(open(sys.argv[1]))
cpu = next(
    (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
    platform.processor(),
)
figures = {
    "what": "image size, and seconds from `podman build` start to the first reply from the built image",
    "image_size_mb": round(result["image_size_bytes"] / 1e6, 1),
    **result,
    "build": "scripts/image_smoke.sh: podman build --isolation chroot --layers=false, offline "
    f"wheelhouse ({sys.argv[4]}), base from debootstrap --variant=minbase bookworm",
    "machine": {"nproc": int(sys.argv[5]), "cpu": cpu, "podman": sys.argv[3]},
    # Other work on the machine slows the build: the 1-minute load average when it started.
    "load_average_at_build_start": float(sys.argv[6]),
}
print(json.dumps(figures, indent=2))
print(
    f"image {figures['image_size_mb']} MB; podman build start to first reply "
    f"{figures['build_to_first_reply_s']} s (build {figures['build_s']} s)"
)
if sys.argv[2]:
    with open(sys.argv[2], "w") as f:
        json.dump(figures, f, indent=2)
        f.write("\n")
PY
echo "image smoke check passed"
