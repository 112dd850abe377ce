#!/usr/bin/env python3
"""`tierkv-warm-bench` end to end on the CPU backend (tiny model, small sizes).

  warm_bench_cli_test.py TIERKV_WARM_BENCH

Section 1 with fixed fronts (--host-fronts), the per-layer analysis, and section 3 over the
experiment tier: exit 0, the report's sections, one JSON Lines row per policy and point, each fixed
front and each fixed split with the planner's prediction beside the measurement, and the tier
part's predicted and measured readiness. Then: usage errors exit 2 before measuring anything.
Runs in well under a minute on two cores.
"""
import json
import os
import subprocess
import sys
import tempfile

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAIL: {what}", file=sys.stderr)


def main():
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="tierkv-warm-bench-test-") as tmp:
        jsonl, report = os.path.join(tmp, "w.jsonl"), os.path.join(tmp, "w.txt")
        p = subprocess.run([binary, "--backend", "cpu", "--quiet", "--prefix", "256", "--new", "16",
                            "--reps", "1", "--host-fronts", "0,128,256,4096",
                            "--slow-gbps", "0.02", "--slow-prefix", "256", "--slow-new", "16",
                            "--splits", "1", "--json", jsonl, "--report", report],
                           capture_output=True, text=True, timeout=300)
        check(p.returncode == 0, f"exit 0 (got {p.returncode}; stderr: {p.stderr[-2000:]})")
        if p.returncode != 0:
            return
        text = open(report).read()
        for section in ("1. Prefix in the host tier", "2. Per layer", "3. Prefix of 256 tokens"):
            check(section in text, f"the report has '{section}'")
        check("fixed fronts (ms, measured / predicted): 0:" in text, "the fixed fronts' line")
        check("the tier's part: predicted in host slots at" in text, "the tier part's readiness")
        check("host time before its first chunk: plan" in text, "the planned runs' host time")
        rows = [json.loads(line) for line in open(jsonl)]
        impls = {r["impl"] for r in rows}
        for impl in ("tierkv-compute", "tierkv-load", "tierkv-load-then-compute", "tierkv-layerwise",
                     "tierkv-planned", "tierkv-recompute", "tierkv-host-front",
                     "tierkv-fixed-split", "tierkv-planned-slow"):
            check(impl in impls, f"a row of {impl}")
        fronts = sorted(r["split"] for r in rows if r["impl"] == "tierkv-host-front")
        check(fronts == [0, 128, 256], f"fronts 0, 128, 256 timed, 4096 (past the prefix) not: {fronts}")
        for r in rows:
            check(r["us"] > 0, f"{r['impl']}: a positive time")
            if r["impl"] in ("tierkv-planned", "tierkv-host-front", "tierkv-fixed-split",
                             "tierkv-planned-slow"):
                host = r.get("plan_us", -1) + r.get("queue_us", -1)
                check(r.get("plan_us", -1) >= 0 and r.get("queue_us", -1) >= 0 and host < r["us"],
                      f"{r['impl']} {r.get('split')}: host time before compute, within the run")
            if r["impl"] in ("tierkv-host-front", "tierkv-fixed-split", "tierkv-planned-slow"):
                check(r.get("predicted_us", 0) > 0, f"{r['impl']} {r.get('split')}: a prediction")
                check(r.get("fallback_tokens") == 0, f"{r['impl']} {r.get('split')}: nothing fell back")
            if r["impl"] in ("tierkv-fixed-split", "tierkv-planned-slow"):
                check(r.get("tier_measured_gbps", 0) > 0, "the tier as calibrate measured it")
                if r["lower_ready_predicted_us"] > 0:
                    check(r["lower_ready_us"] > 0, f"split {r['split']}: when the tier part was ready")
    for bad in (["--host-fronts", "x"], ["--reps", "0"], ["--backend", "tpu"]):
        p = subprocess.run([binary] + bad, capture_output=True, text=True, timeout=60)
        check(p.returncode == 2, f"{bad}: exit 2 (got {p.returncode})")


main()
if failures:
    print(f"{len(failures)} failure(s)", file=sys.stderr)
    sys.exit(1)
print("tierkv-warm-bench CLI: all checks passed")
