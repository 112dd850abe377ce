#!/usr/bin/env python3
"""Plots of `tierkv replay` results: TTFT against prefix length, one request's timeline, TTFT CDFs.

Reads one or more JSON Lines files in the schema of bench/replay/README.md (records of kind
"request", "summary" and "timeline") and writes, as PNG and SVG into --out:

  ttft_vs_<x>-<workload>   TTFT per policy against the cached prefix (hit tokens, all tiers) or the
                           prompt length (--x prompt): medians over equal-width bins of x (drawn at each bin's median x), one line
                           per policy, a shaded band from the median to the p90, log y;
  timeline-<policy>-<id>   one request's loads and compute per layer in two lanes (load, compute),
                           so the overlap of layer l+1's load with layer l's compute shows;
  ttft_cdf-<workload>      the cumulative distribution of TTFT per policy, log x.

It also prints the summary records as a table. Headless: matplotlib's Agg backend, no display.
A malformed file stops it with exit status 2 and a message naming the file and the line; unknown
record kinds are skipped with a warning. matplotlib comes from Debian's python3-matplotlib.

  python3 bench/replay/plot_replay.py replay.jsonl --out plots/
  python3 bench/replay/plot_replay.py a.jsonl b.jsonl --out plots/ --x prompt --timeline-policy warm
"""
import argparse
import json
import math
import os
import re
import sys

KINDS = ("request", "summary", "timeline")
LANES = ("load", "compute")


class ReplayFileError(Exception):
    """A record that does not follow the schema; the message names the file and the line."""


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v))


def _is_str(v):
    return isinstance(v, str)


def _is_count(v):
    return _is_int(v) and v >= 0


def _is_nonneg(v):
    return _is_number(v) and v >= 0


def _is_number_or_null(v):
    return v is None or _is_nonneg(v)


def _map_of(check):
    return lambda v: isinstance(v, dict) and all(_is_str(k) and check(x) for k, x in v.items())


def _has_keys(keys):
    return lambda v: isinstance(v, dict) and all(k in v and _is_nonneg(v[k]) for k in keys)


# Fields each kind must carry, with their checks and what the check means (for messages).
SCHEMA = {
    "request": {
        "policy": (_is_str, "a string"),
        "workload": (_is_str, "a string"),
        "id": (_is_int, "an integer"),
        "session": (_is_int, "an integer"),
        "turn": (_is_count, "an integer >= 0"),
        "arrival_s": (_is_number, "a number"),
        "prompt_tokens": (_is_count, "an integer >= 0"),
        "hit_tokens": (_map_of(_is_count), "an object of tier -> integer >= 0"),
        "loaded_tokens": (_is_count, "an integer >= 0"),
        "recomputed_tokens": (_is_count, "an integer >= 0"),
        "computed_tokens": (_is_count, "an integer >= 0"),
        "ttft_ms": (_is_nonneg, "a number >= 0"),
        "itl_ms": (_is_number_or_null, "a number >= 0 or null"),
        "output_tokens": (_is_count, "an integer >= 0"),
        "plan": (_is_str, "a string"),
    },
    "summary": {
        "policy": (_is_str, "a string"),
        "workload": (_is_str, "a string"),
        "requests": (_is_count, "an integer >= 0"),
        "ttft_ms": (_has_keys(("p50", "p90", "p99")), "an object with numbers p50, p90, p99"),
        "itl_ms": (_has_keys(("p50", "p90")), "an object with numbers p50, p90"),
        "hit_rate": (_map_of(_is_nonneg), "an object of tier -> number"),
        "bytes": (_map_of(_is_count), "an object of tier -> integer >= 0"),
        "memory_bytes": (_map_of(_is_count), "an object of tier -> integer >= 0"),
        "wall_s": (_is_nonneg, "a number >= 0"),
        "backend": (_is_str, "a string"),
        "model": (_is_str, "a string"),
    },
    "timeline": {
        "policy": (_is_str, "a string"),
        "id": (_is_int, "an integer"),
        "lane": (lambda v: v in LANES, '"load" or "compute"'),
        "layer": (_is_count, "an integer >= 0"),
        "chunk": (_is_count, "an integer >= 0"),
        "start_ms": (_is_number, "a number"),
        "end_ms": (_is_number, "a number"),
    },
}


def check_record(rec, where):
    """Raises ReplayFileError unless `rec` follows its kind's schema. Returns its kind, or None for
    a kind this script does not know."""
    if not isinstance(rec, dict):
        raise ReplayFileError(f"{where}: not a JSON object")
    kind = rec.get("kind")
    if not _is_str(kind):
        raise ReplayFileError(f'{where}: missing "kind" (one of {", ".join(KINDS)})')
    if kind not in SCHEMA:
        return None
    for field, (check, meaning) in SCHEMA[kind].items():
        if field not in rec:
            raise ReplayFileError(f'{where}: {kind} record without "{field}"')
        if not check(rec[field]):
            raise ReplayFileError(f'{where}: {kind} "{field}" must be {meaning}, got {json.dumps(rec[field])}')
    if kind == "timeline" and rec["end_ms"] < rec["start_ms"]:
        raise ReplayFileError(f"{where}: timeline end_ms {rec['end_ms']} is before start_ms {rec['start_ms']}")
    return kind


def load(paths, warn=sys.stderr):
    """Records of every file, by kind: {"request": [...], "summary": [...], "timeline": [...]}."""
    out = {k: [] for k in KINDS}
    for path in paths:
        try:
            f = open(path, encoding="utf-8")
        except OSError as e:
            raise ReplayFileError(f"{path}: cannot open: {e.strerror}") from None
        with f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}:{n}"
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ReplayFileError(f"{where}: not valid JSON: {e.msg} at column {e.colno}") from None
                kind = check_record(rec, where)
                if kind is None:
                    print(f"plot_replay: {where}: skipping a record of unknown kind {rec['kind']!r}", file=warn)
                    continue
                out[kind].append(rec)
    return out


def percentile(sorted_values, p):
    """Nearest-rank percentile of a sorted, non-empty list."""
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def hit_tokens(rec):
    return sum(rec["hit_tokens"].values())


def binned(points, edges):
    """(median x, median y, p90 y, count) for every bin of `edges` that holds points, in order;
    `points` are (x, y). The last bin is closed on the right. A bin is drawn at the median x of
    its points, not at its centre, so a policy whose points sit at one x is drawn there."""
    bins = [[] for _ in range(len(edges) - 1)]
    for x, y in points:
        i = len(edges) - 2
        for j in range(len(edges) - 1):
            if x < edges[j + 1]:
                i = j
                break
        bins[max(i, 0)].append((x, y))
    rows = []
    for pts in bins:
        if pts:
            xs = sorted(p[0] for p in pts)
            ys = sorted(p[1] for p in pts)
            rows.append((percentile(xs, 50), percentile(ys, 50), percentile(ys, 90), len(ys)))
    return rows


def bin_edges(xs, count):
    lo, hi = min(xs), max(xs)
    if hi <= lo:
        return [lo - 0.5, lo + 0.5]
    return [lo + (hi - lo) * i / count for i in range(count + 1)]


def slug(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)) or "_"


def by_key(records, key):
    groups = {}
    for r in records:
        groups.setdefault(r[key], []).append(r)
    return groups


def plain_log_ticks(axis):
    """Log-scale ticks at 1, 2 and 5 per decade, labelled as plain numbers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def save(fig, out_dir, name, formats):
    paths = []
    for ext in formats:
        path = os.path.join(out_dir, f"{name}.{ext}")
        fig.savefig(path, dpi=120, bbox_inches="tight")
        paths.append(path)
    return paths


def plot_ttft_vs_x(plt, requests, workload, x_kind, bins, out_dir, formats):
    xf = hit_tokens if x_kind == "hit" else (lambda r: r["prompt_tokens"])
    xlabel = "cached prefix (hit tokens, all tiers)" if x_kind == "hit" else "prompt tokens"
    edges = bin_edges([xf(r) for r in requests], bins)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, (policy, recs) in enumerate(sorted(by_key(requests, "policy").items())):
        rows = binned([(xf(r), max(r["ttft_ms"], 1e-3)) for r in recs], edges)
        xs = [row[0] for row in rows]
        color = f"C{i % 10}"
        ax.plot(xs, [row[1] for row in rows], marker="o", ms=3, color=color, label=f"{policy} (median)")
        ax.fill_between(xs, [row[1] for row in rows], [row[2] for row in rows], color=color, alpha=0.18,
                        linewidth=0)
        if len(rows) == 1:  # a band needs two bins: draw the one bin's median-to-p90 as a bar
            ax.vlines(xs, [rows[0][1]], [rows[0][2]], color=color, alpha=0.4, linewidth=6)
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("time to first token (ms)")
    ax.set_title(f"TTFT by {'cached prefix' if x_kind == 'hit' else 'prompt length'} — {workload} "
                 f"(band: median to p90)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    paths = save(fig, out_dir, f"ttft_vs_{x_kind}-{slug(workload)}", formats)
    plt.close(fig)
    return paths


def plot_cdf(plt, requests, workload, out_dir, formats):
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, (policy, recs) in enumerate(sorted(by_key(requests, "policy").items())):
        ys = sorted(max(r["ttft_ms"], 1e-3) for r in recs)
        n = len(ys)
        ax.step(ys, [(k + 1) / n for k in range(n)], where="post", color=f"C{i % 10}",
                label=f"{policy} (p50 {percentile(ys, 50):.1f} ms, p90 {percentile(ys, 90):.1f} ms)")
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("time to first token (ms)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"TTFT distribution — {workload}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    paths = save(fig, out_dir, f"ttft_cdf-{slug(workload)}", formats)
    plt.close(fig)
    return paths


def plot_timeline(plt, records, policy, rid, out_dir, formats):
    t0 = min(r["start_ms"] for r in records)
    layers = max(r["layer"] for r in records) + 1
    fig, ax = plt.subplots(figsize=(10, 2.8))
    lane_y = {"load": 1, "compute": 0}
    for r in sorted(records, key=lambda r: (r["lane"], r["start_ms"])):
        # Alternate two shades of each lane's colour by layer, so neighbouring bars stay apart.
        base = "C0" if r["lane"] == "load" else "C1"
        ax.broken_barh([(r["start_ms"] - t0, r["end_ms"] - r["start_ms"])], (lane_y[r["lane"]] - 0.35, 0.7),
                       facecolors=base, alpha=0.95 if r["layer"] % 2 == 0 else 0.55, edgecolor="white",
                       linewidth=0.3)
        if layers <= 40 and r["end_ms"] - r["start_ms"] > 0:
            ax.text((r["start_ms"] + r["end_ms"]) / 2 - t0, lane_y[r["lane"]], str(r["layer"]), ha="center",
                    va="center", fontsize=5, color="black")
    loads = [r for r in records if r["lane"] == "load"]
    computes = [r for r in records if r["lane"] == "compute"]
    span = max(r["end_ms"] for r in records) - t0
    parts = [f"end {span:.2f} ms"]
    if loads:
        parts.append(f"load {max(r['end_ms'] for r in loads) - min(r['start_ms'] for r in loads):.2f} ms")
    if computes:
        parts.append(f"compute {max(r['end_ms'] for r in computes) - min(r['start_ms'] for r in computes):.2f} ms")
    ax.set_yticks([0, 1])
    ax.set_yticklabels(["compute", "load"])
    ax.set_ylim(-0.6, 1.6)
    ax.set_xlabel("ms from the request's first event (numbers in bars: layer)")
    ax.set_title(f"request {rid} under {policy}: {layers} layers; " + ", ".join(parts))
    ax.grid(True, axis="x", alpha=0.3)
    paths = save(fig, out_dir, f"timeline-{slug(policy)}-{rid}", formats)
    plt.close(fig)
    return paths


def summary_table(summaries):
    rows = [("workload", "policy", "requests", "ttft p50", "p90", "p99", "itl p50", "p90", "hit rate", "wall s")]
    for s in sorted(summaries, key=lambda s: (s["workload"], s["policy"])):
        hit = ", ".join(f"{k} {v:.2f}" for k, v in sorted(s["hit_rate"].items())) or "-"
        rows.append((s["workload"], s["policy"], str(s["requests"]), f"{s['ttft_ms']['p50']:.2f}",
                     f"{s['ttft_ms']['p90']:.2f}", f"{s['ttft_ms']['p99']:.2f}", f"{s['itl_ms']['p50']:.2f}",
                     f"{s['itl_ms']['p90']:.2f}", hit, f"{s['wall_s']:.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def pick_timeline(timelines, policy, rid):
    """The (policy, id) to draw: as asked, else the first request that has a timeline."""
    keys = []
    for r in timelines:
        k = (r["policy"], r["id"])
        if k not in keys:
            keys.append(k)
    for k in keys:
        if (policy is None or k[0] == policy) and (rid is None or k[1] == rid):
            return k
    return None


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help="JSON Lines files written by `tierkv replay`")
    p.add_argument("--out", required=True, help="directory for the plots (created)")
    p.add_argument("--x", choices=("hit", "prompt"), default="hit",
                   help="x of the TTFT plot: cached prefix tokens (default) or prompt tokens")
    p.add_argument("--bins", type=int, default=12, help="bins of the TTFT plot (default 12)")
    p.add_argument("--timeline-policy", help="policy of the request whose timeline to draw")
    p.add_argument("--timeline-id", type=int, help="id of the request whose timeline to draw")
    p.add_argument("--formats", default="png,svg", help="comma-separated (default png,svg)")
    args = p.parse_args(argv)
    if args.bins < 1:
        p.error("--bins must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        data = load(args.files)
    except ReplayFileError as e:
        print(f"plot_replay: {e}", file=sys.stderr)
        return 2
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        print(f"plot_replay: matplotlib is required (Debian: apt-get install python3-matplotlib): {e}",
              file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    formats = [f for f in args.formats.split(",") if f]
    written = []
    for workload, reqs in sorted(by_key(data["request"], "workload").items()):
        written += plot_ttft_vs_x(plt, reqs, workload, args.x, args.bins, args.out, formats)
        written += plot_cdf(plt, reqs, workload, args.out, formats)
    key = pick_timeline(data["timeline"], args.timeline_policy, args.timeline_id)
    if key:
        recs = [r for r in data["timeline"] if (r["policy"], r["id"]) == key]
        written += plot_timeline(plt, recs, key[0], key[1], args.out, formats)
    elif data["timeline"] or args.timeline_policy or args.timeline_id is not None:
        print("plot_replay: no timeline records for the request asked for; no timeline plot", file=sys.stderr)
    if not data["request"]:
        print("plot_replay: no request records; no TTFT plots", file=sys.stderr)
    if data["summary"]:
        print(summary_table(data["summary"]))
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
