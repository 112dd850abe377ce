#!/usr/bin/env python3
"""`tierkv replay` end to end on the CPU backend, and the tool's refusals.

  replay_cli_test.py TIERKV_BINARY SOURCE_DIR

A tiny chat and document-QA workload under every policy (the disk tier in a temporary directory;
planned-redis needs a server and is left to the Redis suite): exit 0, the tables, the JSON Lines
against bench/replay's schema checker, one record per request and policy, a timeline, and the same
greedy output for every request under every policy. With a cost profile that lacks the disk tier's
figures, planned-disk measures the tier first and says so. Then: usage errors exit 2, a --json path
that cannot be written fails before any replay, `tierkv inspect` of a missing directory exits 2.
Runs in well under a minute on two cores.
"""
import os
import subprocess
import sys
import tempfile
import time

POLICIES = ["recompute", "gpu-only", "load-then-compute", "warm", "planned",
            "planned-slow (experiment tier", "planned-disk"]
# Chunks of 64 tokens and a GPU pool of 24 pages (384 tokens), so that documents leave the GPU and
# come back from the host tier, and from the lower tiers under their small staging host tier.
SMALL = ["--backend", "cpu", "--quiet", "--cache-chunk-tokens", "64", "--gpu-pages", "24",
         "--sessions", "2", "--turns", "2", "--max-turns", "2", "--system-tokens", "96",
         "--user-tokens", "24", "--answer-tokens", "4",
         "--documents", "3", "--document-tokens", "200", "--questions", "8", "--zipf", "0"]

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAIL: {what}", file=sys.stderr)


def run(binary, args, timeout=300):
    t0 = time.monotonic()
    p = subprocess.run([binary] + args, capture_output=True, text=True, timeout=timeout)
    return p, time.monotonic() - t0


def replay_all_policies(binary, source, tmp):
    jsonl = os.path.join(tmp, "replay.jsonl")
    plots = os.path.join(tmp, "plots")
    disk = os.path.join(tmp, "disk")
    os.mkdir(disk)
    p, secs = run(binary, ["replay", "--workload", "chat,docqa", "--json", jsonl, "--plots", plots,
                           "--disk-dir", disk] + SMALL)
    print(p.stdout)
    print(f"replay: exit {p.returncode} in {secs:.1f} s", file=sys.stderr)
    check(p.returncode == 0, f"replay exits 0 (got {p.returncode}; stderr: {p.stderr[-2000:]})")
    out = p.stdout
    check(out.startswith("tierkv replay: cpu backend"), "the first line names the backend")
    for w in ("chat", "docqa"):
        check(f"== {w} on the cpu backend" in out, f"a table for {w}")
    check("TTFT p50 ms" in out and "ITL p50 ms" in out and "hit gpu" in out and "memory host" in out,
          "the table's columns")
    for policy in POLICIES:
        check(any(line.startswith(policy) for line in out.splitlines()), f"a row for {policy}")
    check("EXPERIMENT TIER" in out and "experiment-tier" in out, "the experiment tier says so")
    check(out.count("Outputs: identical across 7 policies") == 2, "identical outputs reported")
    check(os.listdir(disk) == [], "the disk tier's directory is removed after the run")
    check("Plots: skipped" in out or os.path.isdir(plots) and any(f.endswith(".png") for f in os.listdir(plots)),
          "plots drawn, or skipped with a reason")
    return jsonl


def measures_a_tier_the_profile_lacks(binary, tmp):
    """With a cost profile that has no disk figures (calibrate measures a tier only when given one),
    the planned-disk policy measures the disk tier first, on a store of its own, and says so."""
    profile = os.path.join(tmp, "profile.json")
    p, _ = run(binary, ["calibrate", "--backend", "cpu", "--profile", profile, "--reps", "1"])
    check(p.returncode == 0, f"calibrate exits 0 (got {p.returncode}; stderr: {p.stderr[-1000:]})")
    disk = os.path.join(tmp, "disk-measured")
    os.mkdir(disk)
    p, _ = run(binary, ["replay", "--workload", "chat", "--policies", "planned-disk", "--profile",
                        profile, "--disk-dir", disk] + SMALL)
    check(p.returncode == 0, f"planned-disk with a profile exits 0 (got {p.returncode}; stderr: "
                             f"{p.stderr[-1000:]})")
    check("the cost profile has no figures for the disk tier; measured now" in p.stderr,
          "the disk tier is measured for the planner, and that is said")
    check(os.listdir(disk) == [], "the measured store's directory and the tier's are removed")


def check_jsonl(jsonl, source):
    sys.path.insert(0, os.path.join(source, "bench", "replay"))
    import plot_replay  # the schema checker the plots use
    try:
        data = plot_replay.load([jsonl])
    except plot_replay.ReplayFileError as e:
        check(False, f"JSON Lines follow the schema: {e}")
        return
    reqs = data["request"]
    policies = sorted({r["policy"] for r in reqs})
    check(len(policies) == 7, f"request records of 7 policies (got {policies})")
    check(len(data["summary"]) == 14, f"a summary per policy and workload (got {len(data['summary'])})")
    check(len(data["timeline"]) > 0, "timeline records")
    check(any(p.startswith("planned-slow (experiment tier") for p in policies),
          "the experiment tier's policy is marked in the JSON")
    digests = {}
    for r in reqs:
        digests.setdefault((r["workload"], r["id"]), set()).add(r["output_digest"])
    per_policy = {}
    for r in reqs:
        per_policy.setdefault(r["policy"], set()).add((r["workload"], r["id"]))
    check(all(v == set(digests) for v in per_policy.values()), "every request under every policy")
    check(all(len(d) == 1 for d in digests.values()), "the same output under every policy")
    check(all(r["ttft_ms"] > 0 for r in reqs), "positive TTFTs")
    loaded = {}
    for r in reqs:
        loaded[r["policy"]] = loaded.get(r["policy"], 0) + r["loaded_tokens"]
    check(loaded.get("warm", 0) > 0, f"warm loads from the host tier (loaded tokens: {loaded})")
    lower = sum(r["hit_tokens"].get("experiment-tier", 0) + r["hit_tokens"].get("disk", 0) for r in reqs)
    check(lower > 0, "the lower tiers are hit")


def report_mode(binary):
    """--outputs report: the agreement of every policy with recompute, printed, and exit 0 (on the
    cpu backend every output agrees)."""
    p, _ = run(binary, ["replay", "--workload", "chat", "--outputs", "report",
                        "--policies", "recompute,gpu-only,warm"] + SMALL)
    check(p.returncode == 0, f"--outputs report exits 0 (got {p.returncode}: {p.stderr[-500:]})")
    lines = [l for l in p.stdout.splitlines() if "outputs identical" in l]
    check(len(lines) == 2 and all(l.strip().startswith(("gpu-only:", "warm:")) for l in lines),
          f"one agreement line per policy but recompute (got {lines})")
    for l in lines:
        n = l.split(":")[1].split()
        check(n[0] == n[2], f"every output agrees on the cpu backend ({l.strip()})")
    check("MISMATCHES" not in p.stdout and "Outputs: identical" not in p.stdout,
          "the report replaces the exact check")


def refusals(binary, tmp):
    for args in (["replay", "--no-such-flag"], ["replay", "--workload", "nope"], [],
                 ["replay", "--backend", "cpu", "--policies", "planned-redis"],
                 ["replay", "--backend", "cpu", "--gpu-pages", "2"],
                 ["replay", "--outputs", "maybe"]):
        p, _ = run(binary, args, timeout=60)
        check(p.returncode == 2, f"`tierkv {' '.join(args)}` exits 2 (got {p.returncode}: {p.stderr[-500:]})")
    bad = os.path.join(tmp, "no-such-dir", "out.jsonl")
    p, secs = run(binary, ["replay", "--json", bad] + SMALL, timeout=60)
    check(p.returncode == 2, f"an unwritable --json exits 2 (got {p.returncode})")
    check("--json" in p.stderr and "workload" not in p.stdout,
          f"it names --json and replays nothing (stdout: {p.stdout[:300]!r})")
    check(secs < 10, f"it fails at once ({secs:.1f} s)")
    p, _ = run(binary, ["inspect", os.path.join(tmp, "no-such-dir")], timeout=60)
    check(p.returncode == 2, f"inspect of a missing directory exits 2 (got {p.returncode})")
    empty = os.path.join(tmp, "empty")
    os.mkdir(empty)
    p, _ = run(binary, ["inspect", empty], timeout=60)
    check(p.returncode == 0, f"inspect of an empty directory exits 0 (got {p.returncode})")


def main():
    binary, source = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory(prefix="tierkv-replay-test-") as tmp:
        jsonl = replay_all_policies(binary, source, tmp)
        if os.path.exists(jsonl):
            check_jsonl(jsonl, source)
        report_mode(binary)
        measures_a_tier_the_profile_lacks(binary, tmp)
        refusals(binary, tmp)
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        return 1
    print("replay_cli_test: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
