#!/usr/bin/env bash
# Builds here and copies the binaries the GPU run needs into .gpu-bin/ (ignored by git), so that a
# device call can carry them instead of building there: scripts/gpu-suite.sh uses them. The
# binaries each hold every kernel, so together they pass a device call's 64 MiB carry limit: carry
# the archive .gpu-bin.tgz instead, which gpu-suite.sh unpacks when .gpu-bin/ is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh >/dev/null
rm -rf .gpu-bin && mkdir -p .gpu-bin
cp build/tests/tierkv_all_tests build/tools/tierkv-bench/tierkv-bench build/tools/tierkv-transfer-bench/tierkv-transfer-bench build/tools/tierkv-model-bench/tierkv-model-bench build/tools/tierkv-prefill-bench/tierkv-prefill-bench build/tools/tierkv-warm-bench/tierkv-warm-bench build/tools/tierkv/tierkv .gpu-bin/
strip --strip-unneeded .gpu-bin/*
tar czf .gpu-bin.tgz .gpu-bin
du -sh .gpu-bin .gpu-bin.tgz
