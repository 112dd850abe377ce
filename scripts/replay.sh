#!/usr/bin/env bash
# The main job on a fresh machine: install, build the `tierkv` tool, and replay the chat and
# document-QA workloads once per cache policy, printing time to first token per policy. Without a
# GPU it runs the tiny model on the CPU backend at small sizes (a few minutes on two cores) and says
# so. Writes out/replay.jsonl and plots under out/replay-plots/. Arguments go to `tierkv replay`
# (see --help) and replace the defaults below of the same name.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build_dir=${BUILD_DIR:-build}
[[ -d /usr/local/cuda/bin ]] && export PATH="/usr/local/cuda/bin:$PATH"
# TIERKV_CMAKE_ARGS (environment) adds CMake options, as for scripts/build.sh.
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release ${TIERKV_CMAKE_ARGS:-} >/dev/null
echo "replay: building the tierkv tool in $build_dir"
cmake --build "$build_dir" --target tierkv_cli --parallel "$(nproc)" >/dev/null

given() {  # given FLAG ARGS...: whether FLAG is among ARGS (as FLAG or FLAG=...)
  local flag=$1 a
  shift
  for a in "$@"; do [[ $a == "$flag" || $a == "$flag="* ]] && return 0; done
  return 1
}
defaults=()
given --workload "$@" || defaults+=(--workload chat,docqa)
given --json "$@" || defaults+=(--json out/replay.jsonl)
given --plots "$@" || defaults+=(--plots out/replay-plots)
mkdir -p out
exec "$build_dir/tools/tierkv/tierkv" replay "${defaults[@]}" "$@"
