#!/usr/bin/env bash
# Builds the fuzzers -- the record header parser and the disk tier's index rebuild -- with clang
# (libFuzzer, AddressSanitizer, UBSan) into build-fuzz and runs each for a bounded time. Usage: scripts/fuzz.sh [SECONDS] (default 60). Exits non-zero on
# a crash; the crashing input is left in build-fuzz/ as crash-*. Needs clang-14 and
# libclang-rt-14-dev (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
cxx=$(command -v clang++-14 || command -v clang++ || true)
if [[ -z $cxx ]]; then
  echo "fuzz: no clang++ found; install clang-14 and libclang-rt-14-dev (scripts/setup.sh)" >&2
  exit 2
fi
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$cxx" \
  -DTIERKV_CUDA=OFF -DTIERKV_BUILD_BENCHMARKS=OFF -DTIERKV_STATIC_DEPS=OFF >/dev/null
cmake --build build-fuzz --target record_header_fuzz disk_index_fuzz
corpus=build-fuzz/record-corpus
mkdir -p "$corpus"
cp tests/fuzz/corpus/* "$corpus"/
cd build-fuzz
# Each target gets the time; the index rebuild starts from the same record corpus (a record file).
for target in record_header_fuzz disk_index_fuzz; do
  mkdir -p "$target-corpus"
  cp record-corpus/* "$target-corpus"/
  ./tests/fuzz/$target -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 \
    "$target-corpus" 2>&1 | tail -12
  echo "fuzz: $target ran ${seconds} s without a crash"
done
