#!/usr/bin/env bash
# Configures and builds tierkv (Release) into BUILD_DIR (default: build). Extra arguments go to
# CMake, e.g. scripts/build.sh -DTIERKV_SANITIZE=thread.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
[[ -d /usr/local/cuda/bin ]] && export PATH="/usr/local/cuda/bin:$PATH"
# TIERKV_CMAKE_ARGS (environment) adds options, e.g. -DTIERKV_CUDA=ON to insist on the CUDA backend.
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release ${TIERKV_CMAKE_ARGS:-} "$@"
cmake --build "$build_dir" --parallel "$(nproc)"
