#!/usr/bin/env bash
# The main job on a fresh machine: install, build the `tierkv` tool, and replay the chat and
# document-QA workloads once per cache policy, printing time to first token per policy. Without a
# GPU it runs the tiny model on the CPU backend at small sizes (a few minutes on two cores) and says
# so. Measures the machine for the planner first (tierkv calibrate, once: out/profile-<host>.json).
# Writes out/replay.jsonl and plots under out/replay-plots/. Arguments go to `tierkv replay` (see
# --help) and replace the defaults below of the same name.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[[ -d /usr/local/cuda/bin ]] && export PATH="/usr/local/cuda/bin:$PATH"
# Without a visible GPU the CUDA backend is of no use here: build the CPU backend only (in a
# build directory of its own), which takes minutes instead of the CUDA kernels' much longer.
gpu=0
nvidia-smi -L >/dev/null 2>&1 && gpu=1
cuda_args=()
if ((gpu)); then
  build_dir=${BUILD_DIR:-build}
else
  build_dir=${BUILD_DIR:-build-cpu}
  cuda_args=(-DTIERKV_CUDA=OFF)
fi
# TIERKV_CMAKE_ARGS (environment) adds CMake options, as for scripts/build.sh.
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${cuda_args[@]}" ${TIERKV_CMAKE_ARGS:-} >/dev/null
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
tool="$build_dir/tools/tierkv/tierkv"
# The planner plans from this machine's measured costs: measure them once (tierkv calibrate), with
# the experiment tier at the bandwidth the replay gives it by default.
if ! given --profile "$@"; then
  profile=out/profile-$(hostname | tr -cd 'A-Za-z0-9_.-').json
  if [[ ! -f $profile ]]; then
    if ((gpu)); then
      "$tool" calibrate --profile "$profile" --experiment-gbps 2
    else
      "$tool" calibrate --backend cpu --profile "$profile" --experiment-gbps 0.0005 --chunk-tokens 64 \
        --tier-chunks 4 --reps 1
    fi
  fi
  defaults+=(--profile "$profile")
fi
exec "$tool" replay "${defaults[@]}" "$@"
