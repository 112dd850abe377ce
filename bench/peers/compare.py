#!/usr/bin/env python3
"""Side-by-side report of tierkv-bench and peer benchmark results.

Reads JSON Lines files (see README.md in this folder for the schema), groups
the records by case and prints fixed-width tables with one column per
implementation and the ratio of tierkv's time to the best peer's.
"""

import argparse
import json
import sys
from collections import defaultdict

TIERKV = "tierkv"
MISSING = "—"
EXPANDED_MARK = "*"

# The fields that identify a case, per bench, in the order they are shown.
KEY_FIELDS = {
    "decode": ("section", "batch", "kv_tokens", "graph"),
    "transfer": ("memory", "direction", "bytes"),
    "ceiling": ("what",),
    "prefill_layer": ("prefix_tokens", "chunk_tokens"),
    "decode_layer": ("kv_tokens", "batch"),
    "prefill_attention": ("prefix_tokens", "chunk_tokens"),
}
# Benches compared by time alone (every impl does the same work); the others per byte moved.
TIME_ONLY = ("prefill_layer", "decode_layer", "prefill_attention")
FIELD_TYPES = {
    "section": str,
    "batch": int,
    "kv_tokens": int,
    "graph": bool,
    "memory": str,
    "direction": str,
    "bytes": int,
    "what": str,
    "prefix_tokens": int,
    "chunk_tokens": int,
}
# Display order of known values; others follow, sorted.
MEMORY_ORDER = ("pinned", "pageable")
DIRECTION_ORDER = ("h2d", "d2h", "bidir")
WHAT_ORDER = ("hbm_copy", "pcie_h2d", "pcie_d2h", "pcie_bidir")


def warn(message):
    print(f"compare: {message}", file=sys.stderr)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def problem_with(record):
    """Why a parsed line cannot be used, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    bench = record.get("bench")
    if bench not in KEY_FIELDS:
        return f"unknown bench {bench!r}"
    if not isinstance(record.get("impl"), str):
        return "no impl"
    if "error" in record:
        return None
    for field in KEY_FIELDS[bench] + (() if bench in TIME_ONLY else ("bytes",)):
        if not isinstance(record.get(field), FIELD_TYPES[field]):
            return f"missing or mistyped {field!r}"
    if not is_number(record.get("us")) or record["us"] <= 0:
        return "missing or non-positive 'us'"
    if "bytes" in record and record["bytes"] <= 0:
        return "non-positive 'bytes'"
    return None


def load(paths):
    """Returns (results, errors): usable records, and records carrying 'error'."""
    results, errors = [], []
    for path in paths:
        with open(path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    warn(f"{path}:{number}: skipped, invalid JSON ({exc.msg})")
                    continue
                problem = problem_with(record)
                if problem:
                    warn(f"{path}:{number}: skipped, {problem}")
                    continue
                (errors if "error" in record else results).append(record)
    return results, errors


def case_key(record):
    return tuple(record[field] for field in KEY_FIELDS[record["bench"]])


def group(results):
    """{bench: {case key: {impl: record}}}; a later record of the same case
    and impl replaces an earlier one."""
    cases = defaultdict(lambda: defaultdict(dict))
    replaced = 0
    for record in results:
        by_impl = cases[record["bench"]][case_key(record)]
        replaced += record["impl"] in by_impl
        by_impl[record["impl"]] = record
    if replaced:
        warn(f"{replaced} record(s) replaced by later ones for the same case and impl")
    return cases


def rank(value, order):
    return (order.index(value), "") if value in order else (len(order), value)


def ordered_impls(by_impl_list):
    impls = {impl for by_impl in by_impl_list for impl in by_impl}
    return sorted(impls, key=lambda impl: (impl != TIERKV, impl))


def seconds_per_byte(record):
    """Time per unit of work: per byte moved, or per call where every impl does the same work."""
    return record["us"] / record["bytes"] if "bytes" in record else record["us"]


def gbps(record):
    return record["bytes"] / record["us"] / 1e3


def human_bytes(count):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size and count % size == 0:
            return f"{count // size} {unit}"
    return f"{count} B"


def best_peer(by_impl):
    """The peer that did the work in the least time per byte, or None."""
    peers = [impl for impl in by_impl if impl != TIERKV]
    return min(peers, key=lambda impl: (seconds_per_byte(by_impl[impl]), impl), default=None)


def ratio_cell(by_impl, best):
    if TIERKV not in by_impl or best is None:
        return MISSING
    return f"{seconds_per_byte(by_impl[TIERKV]) / seconds_per_byte(by_impl[best]):.2f}"


def us_cell(record):
    if record is None:
        return MISSING
    mark = EXPANDED_MARK if record.get("variant") == "expanded_kv" else ""
    return f"{record['us']:.2f}{mark}"


def gbps_cell(record):
    return MISSING if record is None else f"{gbps(record):.1f}"


def format_table(header, rows, align):
    """Fixed-width text table; align holds 'l' or 'r' for each column."""
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]

    def line(cells):
        padded = (
            cell.ljust(width) if side == "l" else cell.rjust(width)
            for cell, width, side in zip(cells, widths, align)
        )
        return "  ".join(padded).rstrip()

    rule = ["-" * width for width in widths]
    return "\n".join([line(header), line(rule)] + [line(row) for row in rows])


def comparison_table(cases, key_columns, with_gbps, hbm_gbps=None):
    """cases: [(key cells, {impl: record})] in display order; key_columns:
    [(title, align)] for the key cells."""
    impls = ordered_impls([by_impl for _, by_impl in cases])
    columns = list(key_columns)
    for impl in impls:
        columns.append((f"{impl} µs", "r"))
        if with_gbps:
            columns.append((f"{impl} GB/s", "r"))
    columns += [("best peer", "l"), ("tierkv/best", "r")]
    if hbm_gbps:
        columns.append(("tierkv %HBM", "r"))

    rows = []
    for key_cells, by_impl in cases:
        row = list(key_cells)
        for impl in impls:
            record = by_impl.get(impl)
            row.append(us_cell(record))
            if with_gbps:
                row.append(gbps_cell(record))
        best = best_peer(by_impl)
        row += [best or MISSING, ratio_cell(by_impl, best)]
        if hbm_gbps:
            tierkv = by_impl.get(TIERKV)
            row.append(MISSING if tierkv is None else f"{100 * gbps(tierkv) / hbm_gbps:.1f}%")
        rows.append(row)
    return format_table([title for title, _ in columns], rows, [side for _, side in columns])


def decode_section(cases, hbm_gbps):
    blocks = []
    tables = sorted({(key[3], key[0]) for key in cases}, key=lambda t: (not t[0], t[1]))
    for graph, section in tables:
        keys = sorted(
            (key for key in cases if key[3] == graph and key[0] == section),
            key=lambda key: (key[1], key[2]),
        )
        rows = [((str(key[1]), str(key[2])), cases[key]) for key in keys]
        mode = "CUDA graph" if graph else "eager, no graph"
        title = f"decode attention, {section}, {mode} (µs per call)"
        table = comparison_table(rows, [("batch", "r"), ("kv_tokens", "r")], False, hbm_gbps)
        blocks.append(f"{title}\n{table}")
    expanded = any(
        record.get("variant") == "expanded_kv" for by_impl in cases.values() for record in by_impl.values()
    )
    if expanded:
        blocks.append(f"{EXPANDED_MARK} K/V expanded to the query head count (backend refused enable_gqa)")
    return blocks


def transfer_section(cases):
    keys = sorted(cases, key=lambda key: (rank(key[0], MEMORY_ORDER), rank(key[1], DIRECTION_ORDER), key[2]))
    rows = []
    for memory, direction, count in keys:
        tokens = {r["kv_tokens"] for r in cases[(memory, direction, count)].values() if "kv_tokens" in r}
        size = human_bytes(count) + (f" ({tokens.pop()} tok)" if len(tokens) == 1 else "")
        rows.append(((memory, direction, size), cases[(memory, direction, count)]))
    columns = [("memory", "l"), ("direction", "l"), ("bytes", "r")]
    return [f"host/device transfer\n{comparison_table(rows, columns, True)}"]


def ceiling_section(cases):
    rows = [((key[0],), cases[key]) for key in sorted(cases, key=lambda key: rank(key[0], WHAT_ORDER))]
    return [f"bandwidth ceilings\n{comparison_table(rows, [('what', 'l')], True)}"]


def layer_section(cases, bench, title, columns):
    rows = [((str(key[0]), str(key[1])), cases[key]) for key in sorted(cases)]
    return [f"{title}\n{comparison_table(rows, columns, False)}"]


LAYER_SECTIONS = {
    "prefill_attention": ("prefill attention alone (µs per call)", [("prefix", "r"), ("chunk", "r")]),
    "prefill_layer": ("one Llama layer of prefill: a chunk over a cached prefix (µs per layer)",
                      [("prefix", "r"), ("chunk", "r")]),
    "decode_layer": ("one Llama layer of a decode step (µs per layer)", [("kv_tokens", "r"), ("batch", "r")]),
}


def header_lines(paths, results, errors):
    records = results + errors
    impls_by_card = defaultdict(set)
    for record in records:
        impls_by_card[record.get("card", "unknown card")].add(record["impl"])
    lines = ["tierkv peer comparison", "inputs: " + ", ".join(paths)]
    for card in sorted(impls_by_card):
        lines.append(f"card:   {card} ({', '.join(sorted(impls_by_card[card]))})")
    dates = sorted({str(record["date"]) for record in records if "date" in record})
    lines.append("date:   " + (", ".join(dates) if dates else MISSING))
    lines.append("tierkv/best = tierkv's time over the best peer's for the same work (< 1: tierkv is faster)")
    return ["\n".join(lines)]


def describe_error(record):
    fields = KEY_FIELDS[record["bench"]] + ("variant",)
    words = [record["bench"], record["impl"]]
    words += [f"{field}={record[field]}" for field in fields if field in record]
    return f"  {' '.join(words)}: {record['error']}"


def error_section(errors):
    if not errors:
        return []
    return [f"errors ({len(errors)})\n" + "\n".join(describe_error(record) for record in errors)]


def report(paths, hbm_gbps):
    results, errors = load(paths)
    cases = group(results)
    blocks = header_lines(paths, results, errors)
    if "decode" in cases:
        blocks += decode_section(cases["decode"], hbm_gbps)
    if "transfer" in cases:
        blocks += transfer_section(cases["transfer"])
    if "ceiling" in cases:
        blocks += ceiling_section(cases["ceiling"])
    for bench, (title, columns) in LAYER_SECTIONS.items():
        if bench in cases:
            blocks += layer_section(cases[bench], bench, title, columns)
    blocks += error_section(errors)
    return "\n\n".join(blocks) + "\n"


def positive_float(text):
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", metavar="FILE.jsonl", help="JSON Lines results")
    parser.add_argument("--out", help="write the report to this file instead of stdout")
    parser.add_argument(
        "--hbm-gbps",
        type=positive_float,
        help="HBM bandwidth of the card in GB/s (datasheet); adds tierkv's share of it to decode tables",
    )
    args = parser.parse_args(argv)
    try:
        text = report(args.files, args.hbm_gbps)
    except OSError as exc:
        parser.exit(2, f"compare: {exc}\n")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
