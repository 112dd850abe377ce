#!/usr/bin/env bash
# Installs, builds and runs the whole test suite. Tests of the CUDA backend run where a GPU is
# visible and are skipped (not failed) elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh >/dev/null
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure --timeout 1800
