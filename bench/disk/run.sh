#!/usr/bin/env bash
# The disk tier against fio with O_DIRECT on the same file system, same bytes per record.
#
#   bench/disk/run.sh [DIR] [RECORDS] [OUT_PREFIX]
#
# DIR (default /var/tmp/tierkv-disk-bench) must be on the file system to measure; RECORDS (default
# 16) records of 32 layers x 1 MiB (one Llama-3.1-8B chunk of 256 tokens, 32 MiB) are written and
# read back 3 times by disk_bench (BUILD_DIR/bench/disk/disk_bench, default build/), then fio
# moves the same bytes with O_DIRECT through io_uring: in 32 MiB blocks one at a time, and in
# 1 MiB blocks 32 in flight (what the store does inside one record). Prints JSON Lines (schema:
# bench/peers/README.md; bench "disk", impl "tierkv" or "fio") and a side-by-side table; with
# OUT_PREFIX, writes OUT_PREFIX.jsonl and OUT_PREFIX.txt too. CARD names the machine (default
# cpu-<hostname>). Needs fio (scripts/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-/var/tmp/tierkv-disk-bench}
records=${2:-16}
out=${3:-}
bin=${BUILD_DIR:-build}/bench/disk/disk_bench
card=${CARD:-cpu-$(hostname -s)}
date=$(date -u +%Y-%m-%d)
[[ -x $bin ]] || { echo "run.sh: no $bin; build the target disk_bench" >&2; exit 2; }
command -v fio >/dev/null || { echo "run.sh: fio not found (apt install fio)" >&2; exit 2; }
mkdir -p "$dir"
fs=$(stat -f -c %T "$dir")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$dir/fio.dat" "$dir/tierkv"' EXIT

"$bin" --dir "$dir/tierkv" --records "$records" --reps 3 --card "$card" >"$tmp/tierkv.jsonl"

size=$((records * 32))M
for op in write read; do
  for shape in "32M 1" "1M 32"; do
    set -- $shape
    fio --name=disk --filename="$dir/fio.dat" --rw="$op" --bs="$1" --iodepth="$2" --size="$size" \
      --loops=3 --direct=1 --ioengine=io_uring --end_fsync=1 --output-format=json \
      >"$tmp/fio-$op-$1.json"
    python3 - "$tmp/fio-$op-$1.json" "$op" "$1" "$2" "$card" "$date" "$fs" >>"$tmp/fio.jsonl" <<'PY'
import json, sys
path, op, bs, depth, card, date, fs = sys.argv[1:]
job = json.load(open(path))["jobs"][0][op]
units = {"M": 1 << 20, "K": 1 << 10}
print(json.dumps({"bench": "disk", "impl": "fio", "op": op, "card": card, "date": date,
                  "bytes": job["io_bytes"], "block_bytes": int(bs[:-1]) * units[bs[-1]],
                  "iodepth": int(depth), "ioengine": "io_uring", "direct": 1, "fs": fs,
                  "gbps": round(job["bw_bytes"] / 1e9, 4)}))
PY
  done
done

cat "$tmp/tierkv.jsonl" "$tmp/fio.jsonl" >"$tmp/all.jsonl"
python3 - "$tmp/all.jsonl" "$fs" >"$tmp/table.txt" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"disk tier vs fio O_DIRECT on {sys.argv[2]}, GB/s (1 GB = 1e9 B)")
print(f"{'op':6} {'tierkv':>8} {'fio 32M qd1':>12} {'fio 1M qd32':>12} {'tierkv/best fio':>16}")
for op in ("write", "read"):
    t = next(r["gbps"] for r in rows if r["impl"] == "tierkv" and r["op"] == op)
    f = {r["block_bytes"]: r["gbps"] for r in rows if r["impl"] == "fio" and r["op"] == op}
    a, b = f.get(32 << 20, 0), f.get(1 << 20, 0)
    print(f"{op:6} {t:8.3f} {a:12.3f} {b:12.3f} {t / max(a, b):16.2f}")
PY
cat "$tmp/all.jsonl"
cat "$tmp/table.txt"
if [[ -n $out ]]; then
  cp "$tmp/all.jsonl" "$out.jsonl"
  cp "$tmp/table.txt" "$out.txt"
fi
