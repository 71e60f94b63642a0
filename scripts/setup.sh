#!/usr/bin/env bash
# scripts/setup.sh — everything a fresh Debian 12 machine needs, idempotently:
#   1. Debian packages (compilers, gRPC/Protobuf, Abseil, spdlog, GoogleTest,
#      Google Benchmark, CLI11, yaml-cpp, nlohmann-json, libzip, clang for the
#      fuzzers); `apt-get update` only runs when something is missing.
#   2. A Python venv (.venv) over /usr/bin/python3 with its system site
#      packages (so Debian's CPU PyTorch, python3-torch, is importable), plus
#      from PyPI: test tooling (numpy 1.x for torch's ABI, pytest, the
#      incumbent reprod-log, safetensors, grpcio), PaddlePaddle (CPU) and our
#      own Python client (pip install ./client/python, stubs generated from
#      proto/ at install). torch and paddle must import, or setup fails.
#   3. Configure and build (build/, Release with debug info).
# Environment: REPROD_BUILD_DIR (default build), REPROD_JOBS (default nproc),
# REPROD_SKIP_BUILD=1 to stop after 1 and 2.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${REPROD_BUILD_DIR:-$ROOT/build}"
JOBS="${REPROD_JOBS:-$(nproc)}"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  clang libclang-rt-14-dev
  libabsl-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev libyaml-cpp-dev nlohmann-json3-dev libzip-dev zlib1g-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev librocksdb-dev libcpp-httplib-dev
  python3 python3-venv python3-dev python3-torch
)

install_apt_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    log "Debian packages: all ${#APT_PACKAGES[@]} present"
    return
  fi
  log "Debian packages: installing ${missing[*]}"
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# One hash over the contents of the files named on stdin (install stamps).
stamp_of() { sort | xargs -d '\n' sha256sum | sha256sum | cut -d' ' -f1; }

setup_venv() {
  local venv="$ROOT/.venv" req="$ROOT/tests/python/requirements.txt"
  # The venv must see Debian's python3-torch: recreate one made without
  # system site packages (older checkouts).
  if [ -f "$venv/pyvenv.cfg" ] && ! grep -q '^include-system-site-packages = true' "$venv/pyvenv.cfg"; then
    log "recreating $venv with system site packages (for Debian's python3-torch)"
    rm -rf "$venv"
  fi
  if [ ! -x "$venv/bin/python" ]; then
    log "creating Python venv $venv (system site packages: Debian's torch)"
    /usr/bin/python3 -m venv --system-site-packages "$venv"
  fi
  # Re-install only when requirements.txt changed since the last install.
  local stamp="$venv/.requirements.sha256"
  local want
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing Python packages from PyPI (first time: PaddlePaddle is ~200 MB)"
    "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$venv/bin/python" -m pip install -q -r "$req"
    echo "$want" >"$stamp"
  else
    log "Python venv: up to date"
  fi
  # Both frameworks must import: the bert_tiny end-to-end test needs them and
  # must never be skipped silently.
  if ! "$venv/bin/python" -c 'import torch, paddle' >/dev/null 2>&1; then
    "$venv/bin/python" -c 'import torch, paddle' || true
    log "ERROR: torch (Debian python3-torch) or paddle (PyPI paddlepaddle) does not import in $venv"
    exit 1
  fi
  # Our client, re-installed when its sources or the protos change.
  local client_stamp="$venv/.reprod_client.sha256"
  local client_want
  client_want="$( (find "$ROOT/client/python" -type f \( -name '*.py' -o -name '*.toml' -o -name '*.cfg' \) -not -path '*/build/*' -not -path '*/_proto/*' -not -path '*.egg-info/*'; find "$ROOT/proto" -name '*.proto') | stamp_of)"
  if [ ! -f "$client_stamp" ] || [ "$(cat "$client_stamp")" != "$client_want" ]; then
    log "installing reprod_client (client/python; stubs generated from proto/)"
    "$venv/bin/python" -m pip install -q --no-build-isolation --no-deps --force-reinstall "$ROOT/client/python"
    echo "$client_want" >"$client_stamp"
  else
    log "reprod_client: up to date"
  fi
}

build() {
  if [ ! -f "$BUILD_DIR/build.ninja" ]; then
    log "configuring $BUILD_DIR"
    cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  fi
  log "building ($JOBS jobs)"
  cmake --build "$BUILD_DIR" -j "$JOBS"
}

install_apt_packages
setup_venv
if [ "${REPROD_SKIP_BUILD:-0}" != 1 ]; then build; fi
