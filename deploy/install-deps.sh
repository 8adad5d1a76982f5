#!/usr/bin/env bash
# Installs what ferry's build needs on Debian 12, and only what is missing:
# one dpkg query when everything is present, so it is quick to rerun. With
# --for-tests also what the tests need, the Python test packages
# (tests/requirements.txt, pinned) into build/venv and llama.cpp
# (tests/requirements-llamacpp.txt) once per machine.
# usage: deploy/install-deps.sh [--for-tests]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for_tests=0
[[ ${1:-} == --for-tests ]] && for_tests=1

# What building ferry needs (deploy/bootstrap.sh start and build, and the
# container images, which run it on Debian 12 and on NVIDIA's Ubuntu 24.04).
packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libabsl-dev libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  prometheus-cpp-dev civetweb libcivetweb-dev libpcre2-dev
)
# The tests also need GoogleTest, libFuzzer for the GGUF fuzz test, Python
# for the interop checks, and a real Prometheus server and promtool.
((for_tests)) && packages+=(
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev
  python3 python3-venv
  prometheus openssl
)

installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${packages[@]}" 2>/dev/null |
            awk '$NF == "installed" {print $1}' | sed 's/:.*//') || true
missing=()
for p in "${packages[@]}"; do
  grep -qx "$p" <<<"$installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "install-deps: run as root (or install sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

((for_tests)) || exit 0

# A venv with the pinned packages of a requirements file, rebuilt only when
# that file changes (its sha256 is kept in the venv).
ensure_venv() {  # VENV REQUIREMENTS MESSAGE
  local venv=$1 requirements=$2 message=$3
  local want
  want=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [[ -x "$venv/bin/python" && -f "$venv/.requirements.sha256" && $(cat "$venv/.requirements.sha256") == "$want" ]]; then
    return
  fi
  echo "install-deps: $message"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r "$requirements"
  echo "$want" >"$venv/.requirements.sha256"
}

ensure_venv "$root/build/venv" "$root/tests/requirements.txt" "preparing build/venv from tests/requirements.txt"

# llama.cpp (through llama-cpp-python) for the test that compares logits with
# it and the benchmark peer: built once per machine, kept outside the checkout.
llama_venv="${FERRY_CACHE_DIR:-$HOME/.cache/ferry}/llama-cpp-venv"
ensure_venv "$llama_venv" "$root/tests/requirements-llamacpp.txt" \
  "building llama.cpp through llama-cpp-python into $llama_venv (once per machine, ~6 min)"
ln -sfn "$llama_venv" "$root/build/llama-venv"
