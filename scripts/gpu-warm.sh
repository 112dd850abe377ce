#!/usr/bin/env bash
# On the H100 test machine: the warm-prefill measurements, in parts that each fit one device call.
#   scripts/gpu-warm.sh OUT_DIR PART...
# Parts:
#   tests     the GPU test suite (tierkv_all_tests, its CUDA instances), summary in gpu-tests.txt
#   host      tierkv-warm-bench, prefix in the host tier (and the per-layer analysis); writes the
#             measured profile to profile.json
#   eager     the host part's grid with every load queued whole before the compute
#             (--queue-layers -1), to compare with loads queued beside it (the default); reads
#             profile.json when the host part wrote it
#   fronts    tierkv-warm-bench, 16K prefix in the host tier + 128 / 512 new tokens, every front
#             of 0-4096 tokens recomputed while the rest loads, measured beside its prediction
#             (reads profile.json when the host part wrote it)
#   slow      tierkv-warm-bench, the planner against fixed splits over the experiment tier at 1, 2,
#             5 and 10 GB/s (reads profile.json when the host part wrote it)
#   peer      the PyTorch layer-wise warm-prefill peer on the same grid (its smoke tests first)
#   replay    tierkv replay (8B shape, random weights); REPLAY_ARGS, by default a chat workload
#             that fits one device call and reaches the tiers below the GPU: 24 sessions, answers
#             of 32 tokens, a GPU pool of 448 pages (7168 tokens: sessions leave the GPU between
#             turns; 4096 pages held 8 sessions whole), the disk tier under /var/tmp; policies
#             recompute, gpu-only, warm, planned, planned-disk (about 160 s)
#   trace     tierkv replay of the Mooncake trace's first TRACE_REQUESTS (300) requests at 1/8
#             lengths and twice its arrival rate, recompute against planned, with the max-rate
#             search (4 probes each, the first the replay itself; each probe's p90 on stderr, so a
#             search cut by the call's limit keeps what it found); TRACE_ARGS adds flags
# Binaries come from .gpu-bin/ or .gpu-bin.tgz (scripts/stage-gpu.sh).
# The device tool brings back at most 8 files: every result is written to a work folder and, after
# each part, packed into OUT_DIR/gpu-warm-results.tgz (so a call cut short keeps the parts done);
# the test summary is also copied to OUT_DIR.
set -uo pipefail
cd "$(dirname "$0")/.."
final=${1:?OUT_DIR}
shift
mkdir -p "$final"
out=$(mktemp -d /tmp/gpu-warm.XXXXXX)
# PROFILE=FILE: a cost profile measured earlier on this card, used where the host part did not
# write one.
[[ -n ${PROFILE:-} && -f ${PROFILE:-} ]] && cp "$PROFILE" "$out/profile.json"
[[ ! -x .gpu-bin/tierkv-warm-bench && -f .gpu-bin.tgz ]] && tar xzf .gpu-bin.tgz
bin=.gpu-bin
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9_.-')
day=$(date -u +%Y%m%d)
status=0
for part in "$@"; do
  start=$SECONDS
  case $part in
    tests)
      # The CUDA instances (the CPU ones run in CI); TEST_FILTER= runs everything.
      timeout "${TEST_TIMEOUT:-300}" stdbuf -oL "$bin/tierkv_all_tests" --gtest_brief=1 \
        --gtest_filter="${TEST_FILTER-*cuda*:*Cuda*:*CUDA*}" >"$out/gpu-tests.log" 2>&1
      rc=$?
      { echo "== tierkv_all_tests (exit $rc)"; grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests ran|Failure" "$out/gpu-tests.log" | head -60; } \
        | tee "$out/gpu-tests.txt"
      [[ $rc -eq 0 ]] || status=1
      ;;
    host)
      timeout "${HOST_TIMEOUT:-400}" "$bin/tierkv-warm-bench" --backend cuda --reps "${REPS:-3}" \
        --save-profile "$out/profile.json" --json "$out/warm-prefill-$card-$day.jsonl" \
        --report "$out/warm-prefill-$card-$day.txt" ${HOST_ARGS:-} || status=1
      ;;
    eager)
      prof=()
      [[ -f $out/profile.json ]] && prof=(--profile "$out/profile.json")
      timeout "${HOST_TIMEOUT:-400}" "$bin/tierkv-warm-bench" --backend cuda --reps "${REPS:-3}" \
        "${prof[@]}" --queue-layers -1 --json "$out/warm-prefill-eager-$card-$day.jsonl" \
        --report "$out/warm-prefill-eager-$card-$day.txt" ${HOST_ARGS:-} || status=1
      ;;
    fronts)
      prof=()
      [[ -f $out/profile.json ]] && prof=(--profile "$out/profile.json")
      timeout "${FRONTS_TIMEOUT:-200}" "$bin/tierkv-warm-bench" --backend cuda --reps "${REPS:-3}" \
        "${prof[@]}" --prefix 16384 --new 128,512 --recompute-max 1 \
        --host-fronts 0,512,1024,1536,2048,3072,4096 \
        --json "$out/warm-prefill-fronts-$card-$day.jsonl" \
        --report "$out/warm-prefill-fronts-$card-$day.txt" ${FRONTS_ARGS:-} || status=1
      ;;
    slow)
      prof=()
      [[ -f $out/profile.json ]] && prof=(--profile "$out/profile.json")
      timeout "${SLOW_TIMEOUT:-400}" "$bin/tierkv-warm-bench" --backend cuda --reps 2 "${prof[@]}" \
        --prefix 4096 --new 512 --slow-gbps 1,2,5,10 --slow-prefix 16384 --slow-new 128,2048 \
        --splits 4 --json "$out/warm-prefill-slow-$card-$day.jsonl" \
        --report "$out/warm-prefill-slow-$card-$day.txt" ${SLOW_ARGS:-} || status=1
      ;;
    peer)
      # Its smoke tests first (CPU mode, tiny shapes; seconds), then the peer on the card.
      timeout 180 python3 bench/peers/test_torch_warm_prefill_peers.py >"$out/peer-tests.txt" 2>&1 \
        || status=1
      tail -1 "$out/peer-tests.txt"
      PYTHONUNBUFFERED=1 timeout "${PEER_TIMEOUT:-400}" python3 bench/peers/torch_warm_prefill_peers.py \
        --out-dir "$out" ${PEER_ARGS:-} || status=1
      ;;
    replay)
      prof=()
      [[ -f $out/profile.json ]] && prof=(--profile "$out/profile.json")
      timeout "${REPLAY_TIMEOUT:-450}" "$bin/tierkv" replay --backend cuda "${prof[@]}" \
        --json "$out/replay-$card-$day.jsonl" \
        ${REPLAY_ARGS:---workload chat --sessions 24 --answer-tokens 32 --gpu-pages 448 --disk-dir /var/tmp --policies recompute,gpu-only,warm,planned,planned-disk} \
        >"$out/replay-$card-$day.txt" 2>"$out/replay-$card-$day.err" \
        || status=1
      tail -60 "$out/replay-$card-$day.txt"
      ;;
    trace)
      prof=()
      [[ -f $out/profile.json ]] && prof=(--profile "$out/profile.json")
      timeout "${TRACE_TIMEOUT:-540}" "$bin/tierkv" replay --backend cuda "${prof[@]}" \
        --workload trace --trace bench/traces/mooncake-conversation.jsonl \
        --requests "${TRACE_REQUESTS:-300}" --length-scale 0.125 --time-scale 0.5 \
        --policies recompute,planned --find-max-rate on --max-rate-steps 4 \
        --json "$out/replay-trace-$card-$day.jsonl" ${TRACE_ARGS:-} \
        >"$out/replay-trace-$card-$day.txt" 2>"$out/replay-trace-$card-$day.err" || status=1
      tail -30 "$out/replay-trace-$card-$day.txt"
      tr '\r' '\n' <"$out/replay-trace-$card-$day.err" | grep -E 'replayed in|max rate' | tail -20
      ;;
    *) echo "gpu-warm: unknown part $part" >&2; status=2 ;;
  esac
  echo "gpu-warm: $part took $((SECONDS - start)) s (status so far $status)"
  tar czf "$final/gpu-warm-results.tgz.part" -C "$out" . && mv "$final/gpu-warm-results.tgz.part" "$final/gpu-warm-results.tgz"
  [[ -f $out/gpu-tests.txt ]] && cp "$out/gpu-tests.txt" "$final/"
done
exit $status
