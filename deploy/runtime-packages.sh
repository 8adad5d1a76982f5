#!/usr/bin/env bash
# The distribution packages that hold the shared libraries a binary loads,
# one name a line: what an image's final stage installs to run ferry. They
# are read from the build itself, so the names fit whatever release the
# build ran on (Debian 12's libgrpc++1.51, Ubuntu 24.04's libgrpc++1.51t64).
# A library no package owns, or one the loader cannot find, is an error.
# usage: deploy/runtime-packages.sh BINARY
set -euo pipefail
bin=${1:?usage: runtime-packages.sh BINARY}
out=$(ldd "$bin")
if grep -q "not found" <<<"$out"; then
  echo "runtime-packages: $bin needs libraries the loader cannot find:" >&2
  grep "not found" <<<"$out" >&2
  exit 1
fi
# "libfoo.so.1 => /lib/x86_64-linux-gnu/libfoo.so.1 (0x...)"; the vDSO and
# the loader itself have no "=> path".
mapfile -t libs < <(awk '$2 == "=>" && $3 ~ /^\// {print $3}' <<<"$out")
# With merged /usr, the loader's path (/lib/...) and the one dpkg recorded
# (/usr/lib/...) may differ: each spelling is asked for, in one dpkg query.
candidates=()
for lib in "${libs[@]}"; do
  candidates+=("$lib" "/usr$lib" "${lib#/usr}" "$(readlink -f "$lib")")
done
declare -A owner_of
while IFS= read -r line; do
  # "libabsl20220623:amd64: /usr/lib/x86_64-linux-gnu/libabsl_...so.20220623"
  owner_of[${line#*: }]=${line%%:*}
done < <(dpkg-query -S "${candidates[@]}" 2>/dev/null || true)
packages=()
for lib in "${libs[@]}"; do
  owner=""
  for path in "$lib" "/usr$lib" "${lib#/usr}" "$(readlink -f "$lib")"; do
    owner=${owner_of[$path]:-}
    [[ -n $owner ]] && break
  done
  if [[ -z $owner ]]; then
    echo "runtime-packages: no package owns $lib" >&2
    exit 1
  fi
  packages+=("$owner")
done
printf '%s\n' "${packages[@]}" | sort -u
