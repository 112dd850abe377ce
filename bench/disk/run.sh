#!/usr/bin/env bash
# The disk tier against fio with O_DIRECT on the same file system, same bytes per record.
#
#   bench/disk/run.sh [DIR] [RECORDS] [OUT_PREFIX]
#
# DIR (default /var/tmp/tierkv-disk-bench) must be on the file system to measure. RECORDS (default
# 16) records of 32 layers x 1 MiB (one Llama-3.1-8B chunk of 256 tokens: 32 MiB) are written
# and read back, verified, by disk_bench (BUILD_DIR/bench/disk/disk_bench, default build/), once
# into an empty directory and once into a full cache (--steady 1: every write evicts one record of
# the same size and takes over its file, the store's steady state), reading with one thread and
# with two (the cache's promotion threads); fio
# moves the same bytes with O_DIRECT through io_uring, in 32 MiB blocks one at a time and in 1 MiB
# blocks 32 in flight (what the store does inside one record), end_fsync on writes, writing both a
# new file (removed first: its blocks are allocated as it writes) and over the file it wrote, so
# that each of the store's conditions has fio's in the same condition beside it; and, for writes,
# with an fsync after every 32 MiB as well (the store's durability: it fsyncs every record and its
# directory, where the other fio writes fsync once at the end). ROUNDS rounds
# (default 5) alternate them, so that all see the same machine; each figure is the median
# over the rounds. Prints JSON Lines (schema: bench/peers/README.md; bench "disk", impl "tierkv"
# or "fio") and a side-by-side table; with OUT_PREFIX, writes OUT_PREFIX.jsonl and OUT_PREFIX.txt.
# CARD names the machine (default cpu-<hostname>); DISK_BENCH names the disk_bench binary. Needs fio
# (scripts/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-/var/tmp/tierkv-disk-bench}
records=${2:-16}
out=${3:-}
rounds=${ROUNDS:-5}
bin=${DISK_BENCH:-${BUILD_DIR:-build}/bench/disk/disk_bench}
card=${CARD:-cpu-$(hostname -s)}
date=$(date -u +%Y-%m-%d)
[[ -x $bin ]] || { echo "run.sh: no $bin; build the target disk_bench" >&2; exit 2; }
command -v fio >/dev/null || { echo "run.sh: fio not found (apt install fio)" >&2; exit 2; }
mkdir -p "$dir"
fs=$(findmnt -no FSTYPE -T "$dir" 2>/dev/null || stat -f -c %T "$dir")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$dir/fio.dat" "$dir/tierkv"' EXIT
size=$((records * 32))M

# fio_row OP BS DEPTH FILE FSYNC_EVERY: one fio run's figures (from $tmp/fio.json) as a JSON line.
fio_row() {
  python3 - "$tmp/fio.json" "$@" >>"$tmp/fio-raw.jsonl" <<'PY'
import json, sys
path, op, bs, depth, file, fsync = sys.argv[1:]
job = json.load(open(path))["jobs"][0][op]
units = {"M": 1 << 20, "K": 1 << 10}
print(json.dumps({"op": op, "block_bytes": int(bs[:-1]) * units[bs[-1]], "iodepth": int(depth),
                  "file": file, "fsync_every": int(fsync), "bytes": job["io_bytes"],
                  "gbps": job["bw_bytes"] / 1e9}))
PY
}

for round in $(seq "$rounds"); do
  for steady in 0 1; do
    for readers in 1 2; do
      "$bin" --dir "$dir/tierkv" --records "$records" --reps 1 --steady $steady \
        --read-concurrency $readers --card "$card" 2>"$tmp/store.txt" >>"$tmp/tierkv-raw.jsonl"
    done
  done
  # fio writes a new file (rm first: blocks allocated as it writes, as a record into an empty
  # directory) and then over the file it wrote (as a record taking over an evicted one's file).
  for shape in "32M 1" "1M 32"; do
    set -- $shape
    for run in "write new" "write existing" "read existing"; do
      set -- "$1" "$2" $run
      [[ $4 == new ]] && rm -f "$dir/fio.dat"
      fio --name=disk --filename="$dir/fio.dat" --rw="$3" --bs="$1" --iodepth="$2" \
        --size="$size" --direct=1 --ioengine=io_uring --end_fsync=1 --output-format=json \
        >"$tmp/fio.json"
      fio_row "$3" "$1" "$2" "$4" 0
    done
  done
  # The store's durability beside fio's: the store fsyncs each 32 MiB record it writes (and its
  # directory); fio with an fsync after every 32 MiB, 1 MiB blocks 32 in flight.
  for file in new existing; do
    [[ $file == new ]] && rm -f "$dir/fio.dat"
    fio --name=disk --filename="$dir/fio.dat" --rw=write --bs=1M --iodepth=32 --size="$size" \
      --direct=1 --ioengine=io_uring --fsync=32 --end_fsync=1 --output-format=json >"$tmp/fio.json"
    fio_row write 1M 32 "$file" 32
  done
done

python3 - "$tmp" "$card" "$date" "$fs" "$rounds" "$(cat "$tmp/store.txt")" "$(uptime)" >"$tmp/all.jsonl" <<'PY'
import json, statistics, sys
tmp, card, date, fs, rounds, store, load = sys.argv[1:]
med = lambda v: round(statistics.median(v), 4)
rows = []
t = [json.loads(l) for l in open(f"{tmp}/tierkv-raw.jsonl")]
for steady in (False, True):
    for op, threads in (("write", 1), ("read", 1), ("read", 2)):
        # Writes: one writer (the cache's threads_per_tier), from both runs of the round.
        runs = [r for r in t if r["op"] == op and r.get("steady", False) == steady
                and r["concurrency"] == threads]
        r = dict(runs[0])
        r.pop("gbps_reps", None)
        r.update({"fs": fs, "rounds": int(rounds), "gbps": med([x["gbps"] for x in runs]),
                  "gbps_rounds": [round(x["gbps"], 4) for x in runs]})
        rows.append(r)
f = [json.loads(l) for l in open(f"{tmp}/fio-raw.jsonl")]
for op, file in (("write", "new"), ("write", "existing"), ("read", "existing")):
    shapes = [(32 << 20, 1, 0), (1 << 20, 32, 0)] + ([(1 << 20, 32, 32)] if op == "write" else [])
    for bb, depth, fsync in shapes:
        runs = [r for r in f if r["op"] == op and r["block_bytes"] == bb and r["file"] == file
                and r.get("fsync_every", 0) == fsync]
        rows.append({"bench": "disk", "impl": "fio", "op": op, "card": card, "date": date,
                     "bytes": runs[0]["bytes"], "block_bytes": bb, "iodepth": depth, "file": file,
                     "ioengine": "io_uring", "direct": 1, "end_fsync": 1, "fsync_every": fsync,
                     "fs": fs, "rounds": int(rounds), "gbps": med([x["gbps"] for x in runs]),
                     "gbps_rounds": [round(x["gbps"], 4) for x in runs]})
for r in rows:
    print(json.dumps(r))
PY
python3 - "$tmp/all.jsonl" >"$tmp/table.txt" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"disk tier vs fio O_DIRECT on {rows[0]['fs']}, GB/s (1 GB = 1e9 B), median of "
      f"{rows[0]['rounds']} alternating rounds")
print("tierkv: into an empty directory (each write makes a new file), and into a full cache (the")
print("budget holds N records and every write evicts one, taking over its file); writes from one")
print("thread (the cache's writer per tier), reads from one and from two (the cache's promotion")
print("threads, WriteDownOptions::promote_threads = 2). fio in the same condition: writes into a")
print("new file (empty) or over one it wrote (full); reads of the file it wrote.")
print("paired: the median over rounds of tierkv's figure over the best fio figure of the same round")
print("(rounds run minutes apart; on a shared machine the disk's speed drifts between them).")
print("fio fsync/rec: fio's 1 MiB x 32 writes with an fsync after every 32 MiB, the store's")
print("durability (it fsyncs each record and its directory), and tierkv's writes over it.")
print(f"{'op':6} {'cache':6} {'threads':>7} {'tierkv':>8} {'fio file':>9} {'fio 32M qd1':>12} "
      f"{'fio 1M qd32':>12} {'tierkv/best fio':>16} {'paired':>7} {'fio fsync/rec':>14} "
      f"{'tierkv/it':>10}")
for op in ("write", "read"):
    for steady in (False, True):
        file = "new" if op == "write" and not steady else "existing"
        synced = [r for r in rows if r["impl"] == "fio" and r["op"] == op and r["file"] == file
                  and r.get("fsync_every", 0) > 0]
        fio = [r for r in rows if r["impl"] == "fio" and r["op"] == op and r["file"] == file
               and r.get("fsync_every", 0) == 0]
        f = {r["block_bytes"]: r["gbps"] for r in fio}
        a, b = f.get(32 << 20, 0), f.get(1 << 20, 0)
        best_round = [max(v) for v in zip(*(r["gbps_rounds"] for r in fio))]
        for r in rows:
            if r["impl"] != "tierkv" or r["op"] != op or r.get("steady", False) != steady:
                continue
            t = r["gbps"]
            # Writes ran in each of the round's tierkv runs (several per round).
            per = max(1, len(r["gbps_rounds"]) // len(best_round))
            paired = statistics.median(x / best_round[i // per]
                                       for i, x in enumerate(r["gbps_rounds"]))
            same = (f"{synced[0]['gbps']:14.3f} {t / synced[0]['gbps']:10.2f}" if synced
                    else f"{'-':>14} {'-':>10}")
            print(f"{op:6} {'full' if steady else 'empty':6} {r['concurrency']:7d} {t:8.3f} "
                  f"{file:>9} {a:12.3f} {b:12.3f} {t / max(a, b):16.2f} {paired:7.2f} {same}")
PY
{ echo "# $(cat "$tmp/store.txt")"; echo "# load: $(uptime)"; cat "$tmp/table.txt"; } >"$tmp/report.txt"
cat "$tmp/all.jsonl" "$tmp/report.txt"
if [[ -n $out ]]; then
  cp "$tmp/all.jsonl" "$out.jsonl"
  cp "$tmp/report.txt" "$out.txt"
fi
