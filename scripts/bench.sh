#!/usr/bin/env bash
# The main job on a fresh machine: install, build, run tierkv-bench. On a machine without a GPU it
# runs the CPU backend at small sizes (and says so). Arguments go to tierkv-bench (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh >/dev/null
exec "${BUILD_DIR:-build}/tools/tierkv-bench/tierkv-bench" "$@"
