#!/usr/bin/env python3
"""Turns keys_bench's --benchmark_format=json output into bench/results JSON Lines.

One object per case, from the median of the repetitions (wall time per prompt):
  {"bench": "keys", "impl": "tierkv" | "openssl", "card": <CPU model>, "date": "YYYY-MM-DD",
   "tokens": N, "page_tokens": 16, "case": "keys" | "probe" | "keys+probe", "us": median,
   "hasher": <page_key_hasher of the run>, "target_us": 1000 (keys+probe at 131072 only)}

Usage: keys_to_jsonl.py RUN.json > bench/results/keys-<cpu-slug>-<yyyymmdd>.jsonl
Run it on the machine that ran the benchmark: the CPU model is read from /proc/cpuinfo.
"""
import json
import sys

CASES = {  # benchmark name -> (impl, case)
    "BM_PageKeys": ("tierkv", "keys"),
    "BM_PageKeysOpenSsl": ("openssl", "keys"),
    "BM_Probe": ("tierkv", "probe"),
    "BM_KeysPlusProbe": ("tierkv", "keys+probe"),
}
TARGET_US = {("keys+probe", 131072): 1000}
PAGE_TOKENS = 16
TO_US = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main(path):
    with open(path) as f:
        run = json.load(f)
    context = run["context"]
    card = cpu_model()
    date = context["date"][:10]
    for b in run["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        name, tokens = b["run_name"].split("/")
        impl, case = CASES[name]
        row = {
            "bench": "keys",
            "impl": impl,
            "card": card,
            "date": date,
            "tokens": int(tokens),
            "page_tokens": PAGE_TOKENS,
            "case": case,
            "us": round(b["real_time"] * TO_US[b["time_unit"]], 3),
            "hasher": context.get("page_key_hasher", "unknown") if impl == "tierkv" else "openssl",
        }
        target = TARGET_US.get((case, int(tokens)))
        if target is not None and impl == "tierkv":
            row["target_us"] = target
        print(json.dumps(row, sort_keys=True))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
