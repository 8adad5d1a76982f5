#!/usr/bin/env bash
# Installs what ferry's build and tests need on Debian 12, and only what is
# missing: one dpkg query when everything is present, so it is quick to rerun.
# With --for-tests also the Python test packages (tests/requirements.txt,
# pinned) into build/venv and llama.cpp (tests/requirements-llamacpp.txt)
# once per machine.
# usage: deploy/install-deps.sh [--for-tests]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for_tests=0
[[ ${1:-} == --for-tests ]] && for_tests=1

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libabsl-dev libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  prometheus-cpp-dev civetweb libcivetweb-dev
  libgtest-dev libgmock-dev libbenchmark-dev libpcre2-dev
  clang libclang-rt-14-dev   # libFuzzer for the GGUF fuzz test
  python3 python3-venv
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

venv="$root/build/venv"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$root/tests/requirements.txt" | cut -d' ' -f1)
if [[ ! -x "$venv/bin/python" || ! -f "$stamp" || $(cat "$stamp") != "$want" ]]; then
  echo "install-deps: preparing $venv from tests/requirements.txt"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r "$root/tests/requirements.txt"
  echo "$want" >"$stamp"
fi

# llama.cpp (through llama-cpp-python) for the test that compares logits with
# it: built once per machine, kept outside the checkout.
cache=${FERRY_CACHE_DIR:-$HOME/.cache/ferry}
llama_venv="$cache/llama-cpp-venv"
llama_stamp="$llama_venv/.requirements.sha256"
llama_want=$(sha256sum "$root/tests/requirements-llamacpp.txt" | cut -d' ' -f1)
if [[ ! -x "$llama_venv/bin/python" || ! -f "$llama_stamp" || $(cat "$llama_stamp") != "$llama_want" ]]; then
  echo "install-deps: building llama.cpp through llama-cpp-python into $llama_venv (once per machine, ~6 min)"
  rm -rf "$llama_venv"
  mkdir -p "$cache"
  python3 -m venv "$llama_venv"
  "$llama_venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    -r "$root/tests/requirements-llamacpp.txt"
  echo "$llama_want" >"$llama_stamp"
fi
ln -sfn "$llama_venv" "$root/build/llama-venv"
