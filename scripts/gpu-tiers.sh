#!/usr/bin/env bash
# On the H100 test machine: the lower tiers against their peers, from .gpu-tiers.tgz
# (scripts/stage-tiers.sh).
#   scripts/gpu-tiers.sh OUT_DIR PART...
# Parts:
#   disk    bench/disk/run.sh: the disk tier against fio with O_DIRECT, in DISK_DIR (default
#           /var/tmp/tierkv-disk-bench; its file system is named in the report), RECORDS (16)
#           records of 32 MiB, ROUNDS (5) alternating rounds
#   redis   bench/redis/run.py: the Redis tier against redis-benchmark, one server and a
#           three-node cluster on loopback; REDIS_ARGS adds flags
# Results go to OUT_DIR as <bench>-<card>-<date>.{jsonl,txt}; the card is the machine's GPU name
# with "-host" (these benchmarks use its CPUs and disk, not the GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?OUT_DIR}
shift
mkdir -p "$out"
[[ -d .gpu-tiers ]] || tar xzf .gpu-tiers.tgz
tools=$PWD/.gpu-tiers
# The Redis binaries find their libraries through wrappers, so that nothing else loads them.
mkdir -p "$tools/wrap"
for b in redis-server redis-cli redis-benchmark; do
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s/lib exec %s/bin/%s "$@"\n' "$tools" "$tools" "$b" >"$tools/wrap/$b"
  chmod +x "$tools/wrap/$b"
done
export PATH=$tools/wrap:$tools/bin:$PATH
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9_.-')
card=${gpu:-unknown}-host
day=$(date -u +%Y%m%d)
{
  echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
  echo "# load: $(uptime)"
} >"$out/machine.txt"
status=0
for part in "$@"; do
  start=$SECONDS
  case $part in
    disk)
      dir=${DISK_DIR:-/var/tmp/tierkv-disk-bench}
      mkdir -p "$dir"
      { echo "# disk: $(findmnt -no SOURCE,FSTYPE,OPTIONS -T "$dir")"; df -h "$dir" | tail -1; } >>"$out/machine.txt"
      DISK_BENCH=$tools/bin/disk_bench CARD=$card ROUNDS=${ROUNDS:-5} timeout "${DISK_TIMEOUT:-300}" \
        bench/disk/run.sh "$dir" "${RECORDS:-16}" "$out/disk-$card-$day" >"$out/disk.log" 2>&1 || status=1
      tail -8 "$out/disk.log"
      ;;
    redis)
      timeout "${REDIS_TIMEOUT:-300}" python3 bench/redis/run.py --bench-bin "$tools/bin/redis_bench" \
        --card "$card" --out "$out/redis-$card-$day.jsonl" ${REDIS_ARGS:-} 2>"$out/redis-$card-$day.txt" || status=1
      tail -25 "$out/redis-$card-$day.txt"
      ;;
    *) echo "gpu-tiers: unknown part $part" >&2; status=2 ;;
  esac
  echo "gpu-tiers: $part took $((SECONDS - start)) s (status so far $status)"
done
exit $status
