#!/usr/bin/env bash
# One command for the H100 test machine: runs the GPU test suite, tierkv-bench and the PyTorch
# peers, and collects the reports in one folder.
#   scripts/gpu-suite.sh [OUT_DIR]          (default: $OUT, else out/)
# Binaries come from .gpu-bin/ or .gpu-bin.tgz (scripts/stage-gpu.sh, on the build machine) or, when
# both are missing, from a build made here (needs the build dependencies). Environment: BENCH_ARGS and
# PEER_ARGS add flags to tierkv-bench and torch_peers.py; SKIP_TESTS=1 / SKIP_BENCH=1 skip parts.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-out}}
mkdir -p "$out"
bin=.gpu-bin
[[ ! -x $bin/tierkv-bench && -f .gpu-bin.tgz ]] && tar xzf .gpu-bin.tgz
if [[ ! -x $bin/tierkv-bench ]]; then
  scripts/build.sh >/dev/null || { echo "gpu-suite: no .gpu-bin and the build failed" >&2; exit 1; }
  bin=build/bin-staged && mkdir -p $bin && cp build/tests/tierkv_all_tests build/tools/*/tierkv-*bench $bin/
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.max,pcie.link.width.max --format=csv \
  >"$out/gpu.txt" 2>&1
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9_.-')
day=$(date -u +%Y%m%d)
status=0

if [[ ${SKIP_TESTS:-0} != 1 ]]; then
  # Full logs in gpu-tests.log, a summary in gpu-tests.txt (and on stdout).
  : >"$out/gpu-tests.txt"
  : >"$out/gpu-tests.log"
  for t in "$bin"/*_tests; do
    log=$(mktemp)
    timeout "${TEST_TIMEOUT:-300}" stdbuf -oL "$t" --gtest_brief=1 >"$log" 2>&1
    rc=$?
    [[ $rc -eq 0 ]] || status=1
    { echo "== $(basename "$t") (exit $rc)"; cat "$log"; } >>"$out/gpu-tests.log"
    { echo "== $(basename "$t") (exit $rc)"; grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests ran|Failure" "$log"; } |
      tee -a "$out/gpu-tests.txt"
    rm -f "$log"
  done
fi

if [[ ${SKIP_BENCH:-0} != 1 ]]; then
  timeout "${BENCH_TIMEOUT:-400}" "$bin/tierkv-bench" --backend cuda --json "$out/bench-$card-$day.jsonl" \
    --report "$out/bench-$card-$day.txt" ${BENCH_ARGS:-} || status=1
  PYTHONUNBUFFERED=1 python3 bench/peers/torch_peers.py --json "$out/peers-$card-$day.jsonl" --quiet \
    ${PEER_ARGS:-} >"$out/peers-$card-$day.txt" 2>&1 || status=1
  python3 bench/peers/compare.py "$out/bench-$card-$day.jsonl" "$out/peers-$card-$day.jsonl" \
    --hbm-gbps 3350 --out "$out/compare-$card-$day.txt" || status=1
  cat "$out/compare-$card-$day.txt"
fi
exit $status
