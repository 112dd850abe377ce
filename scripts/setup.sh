#!/usr/bin/env bash
# Installs what tierkv builds with, from Debian's packages. Safe to run again: installs only what is
# missing. Needs root (or sudo). The CUDA toolkit is optional: with nvcc under /usr/local/cuda or on
# PATH, the CUDA backend is built too.
set -euo pipefail

packages=(build-essential cmake ninja-build pkg-config libssl-dev libgtest-dev libgmock-dev
          libbenchmark-dev libcli11-dev nlohmann-json3-dev python3 python3-matplotlib
          liburing-dev libxxhash-dev fio clang-14 libclang-rt-14-dev
          redis-server redis-tools libhiredis-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if command -v nvcc >/dev/null || [[ -x /usr/local/cuda/bin/nvcc ]]; then
  echo "setup: CUDA toolkit found; the CUDA backend will be built"
else
  echo "setup: no CUDA toolkit; building the CPU backend only"
fi
