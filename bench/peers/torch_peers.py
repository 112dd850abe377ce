#!/usr/bin/env python3
"""Peer benchmark for tierkv: PyTorch decode attention, host-to-device copies
and an HBM copy ceiling at Llama-3.1-8B shapes, written as JSON Lines.

Needs PyTorch and a CUDA device. See README.md in this folder for the schema.
"""

import argparse
import datetime
import gc
import json
import math
import statistics
import sys
import warnings

from compare import format_table, human_bytes

MODEL = "llama-3.1-8b"
NUM_Q_HEADS = 32
NUM_KV_HEADS = 8
HEAD_DIM = 128
ELEMENT_BYTES = 2  # bf16
KV_BYTES_PER_TOKEN = 2 * NUM_KV_HEADS * HEAD_DIM * ELEMENT_BYTES  # K and V of one layer

MiB = 1 << 20
GiB = 1 << 30
L2_FALLBACK_BYTES = 50 * MiB
MAX_INPUT_SETS = 32
MIN_CALLS_PER_GRAPH = 20
TOLERANCE = 2e-2
MEMORY_HEADROOM = 0.9  # share of free GPU memory a case may take
LARGE_COPY_BYTES = 256 * MiB
HBM_COPY_BYTES = 1 * GiB
# About 100 us at H100 clocks; longer than it takes the host to enqueue the
# timed work behind it (see hold_gpu).
HOLD_CYCLES = 200_000

SECTIONS = ("decode", "transfer", "ceiling")
BACKENDS = (("torch-flash", "FLASH_ATTENTION"), ("torch-cudnn", "CUDNN_ATTENTION"))
COPY_IMPL = "torch-copy"

torch = None  # imported in main(), so that --help works without PyTorch


class DoesNotFit(Exception):
    """A case needs more GPU memory than is free."""


class BackendRefused(Exception):
    """The selected attention backend ran neither variant."""


class Output:
    """Adds the fields every record carries, appends each record to the JSON
    Lines file as soon as it exists and keeps it for the summary table."""

    def __init__(self, path, card, quiet):
        self.file = open(path, "w", encoding="utf-8") if path else None
        self.card = card
        self.date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        self.quiet = quiet
        self.records = []

    def progress(self, message):
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def emit(self, bench, impl, **fields):
        record = {"bench": bench, "card": self.card, "impl": impl, "date": self.date, "model": MODEL, **fields}
        self.records.append(record)
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def result(self, bench, impl, us, nbytes, **fields):
        self.emit(bench, impl, **fields, bytes=nbytes, us=round(us, 3), gbps=round(nbytes / us / 1e3, 3))

    def error(self, bench, impl, message, **fields):
        self.progress(f"  error: {message}")
        self.emit(bench, impl, **fields, error=message)

    def close(self):
        if self.file:
            self.file.close()


# ---------------------------------------------------------------- timing


def hold_gpu():
    """Queues a spin kernel on the current stream. Work enqueued behind it
    together with its start event is all in the queue before the start event
    fires, so host launch latency stays out of the measured interval."""
    torch.cuda._sleep(HOLD_CYCLES)


def event_times_ms(fn, reps, hold=True):
    pairs = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        if hold:
            hold_gpu()
        start.record()
        fn()
        end.record()
        pairs.append((start, end))
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in pairs]


def median_us(fn, args):
    """Median time of one call of fn, after args.warmup untimed calls."""
    for _ in range(args.warmup):
        fn()
    torch.cuda.synchronize()
    return statistics.median(event_times_ms(fn, args.reps)) * 1e3


def release_memory():
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def memory_budget():
    release_memory()
    return int(torch.cuda.mem_get_info()[0] * MEMORY_HEADROOM)


# ---------------------------------------------------------------- decode


def attention(q, k, v, gqa):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=False, enable_gqa=gqa)


def expand_heads(x):
    return x.repeat_interleave(NUM_Q_HEADS // NUM_KV_HEADS, dim=1)


def random_set(batch, kv_tokens, gqa):
    def randn(*shape):
        return torch.randn(*shape, dtype=torch.bfloat16, device="cuda")

    q = randn(batch, NUM_Q_HEADS, 1, HEAD_DIM)
    k = randn(batch, NUM_KV_HEADS, kv_tokens, HEAD_DIM)
    v = randn(batch, NUM_KV_HEADS, kv_tokens, HEAD_DIM)
    return (q, k, v) if gqa else (q, expand_heads(k), expand_heads(v))


def tensor_bytes(*tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def try_attention(q, k, v, gqa):
    """Returns (output, None), or (None, why the backend refused)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = attention(q, k, v, gqa)
            torch.cuda.synchronize()
            return out, None
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # backends refuse with RuntimeError and, at times, other types
            # The exception only says no kernel was available; the warnings say why.
            reasons = [str(exc)] + [str(w.message) for w in caught]
            return None, " | ".join(dict.fromkeys(" ".join(r.split()) for r in reasons))


def choose_variant(q, k, v):
    """Runs the active backend once with enable_gqa and, if it refuses, once
    with K/V expanded to the query head count. Returns (variant, gqa,
    (q, k, v) in that variant's layout, output)."""
    out, gqa_reason = try_attention(q, k, v, True)
    if out is not None:
        return "enable_gqa", True, (q, k, v), out
    k, v = expand_heads(k), expand_heads(v)
    out, expanded_reason = try_attention(q, k, v, False)
    if out is not None:
        return "expanded_kv", False, (q, k, v), out
    raise BackendRefused(f"enable_gqa: {gqa_reason}; expanded_kv: {expanded_reason}")


def accuracy_problem(out, q, k, v):
    """Compares out with a float32 reference; returns None when it matches."""
    if torch.isnan(out).any().item():
        return "NaN in output"
    batch = q.shape[0]
    # Expanded K/V were made by repeat_interleave, so every rep-th head is an original.
    rep = k.shape[1] // NUM_KV_HEADS
    k, v = k[:, ::rep].float(), v[:, ::rep].float()
    # Query head h reads KV head h // (NUM_Q_HEADS // NUM_KV_HEADS), as enable_gqa does.
    grouped_q = q.float().view(batch, NUM_KV_HEADS, NUM_Q_HEADS // NUM_KV_HEADS, HEAD_DIM)
    scores = grouped_q @ k.transpose(-1, -2) / math.sqrt(HEAD_DIM)
    reference = (torch.softmax(scores, dim=-1) @ v).view(batch, NUM_Q_HEADS, 1, HEAD_DIM)
    error = ((out.float() - reference).norm() / reference.norm()).item()
    if not error < TOLERANCE:
        return f"relative L2 error {error:.3g} against float32 reference (limit {TOLERANCE})"
    return None


def rotation_sets(l2_bytes, set_bytes, budget):
    """How many input sets to cycle through so that L2 holds none of them
    when it comes round again, within what fits in budget."""
    wanted = max(1, min(MAX_INPUT_SETS, math.ceil(4 * l2_bytes / set_bytes)))
    return min(wanted, budget // set_bytes)


def run_calls(gqa, sets, calls):
    for i in range(calls):
        attention(*sets[i % len(sets)], gqa)


def graph_us(gqa, sets, calls, args):
    # Warm up on a side stream before capture, as torch.cuda.graph asks.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(args.warmup):
            run_calls(gqa, sets, len(sets))
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run_calls(gqa, sets, calls)
    for _ in range(args.warmup):
        graph.replay()
    times = event_times_ms(graph.replay, args.reps)
    return statistics.median(times) / calls * 1e3


def eager_us(gqa, sets, calls, args):
    for _ in range(args.warmup):
        run_calls(gqa, sets, calls)
    # No hold here: launch overhead is part of what eager calls cost.
    times = event_times_ms(lambda: run_calls(gqa, sets, calls), args.reps, hold=False)
    return statistics.median(times) / calls * 1e3


def decode_case(args, out, impl, case, l2_bytes):
    batch, kv_tokens = case["batch"], case["kv_tokens"]
    kv_bytes = batch * kv_tokens * KV_BYTES_PER_TOKEN
    q_bytes = batch * NUM_Q_HEADS * HEAD_DIM * ELEMENT_BYTES
    # One input set, its output, and the float32 K/V of the reference.
    if 2 * q_bytes + 3 * kv_bytes > memory_budget():
        raise DoesNotFit
    try:
        variant, gqa, first, result = choose_variant(*random_set(batch, kv_tokens, True))
    except BackendRefused as exc:
        out.error("decode", impl, str(exc), **case)
        return
    problem = accuracy_problem(result, *first)
    if problem:
        out.error("decode", impl, problem, **case, variant=variant)
        return
    set_bytes = tensor_bytes(*first, result)
    del result
    count = rotation_sets(l2_bytes, set_bytes, memory_budget() + set_bytes)
    sets = [first] + [random_set(batch, kv_tokens, gqa) for _ in range(count - 1)]
    calls = count * math.ceil(MIN_CALLS_PER_GRAPH / count)
    out.progress(f"  {variant}, {count} input set(s) of {human_bytes(set_bytes)}, {calls} calls per timing")
    for graph, timer in ((True, graph_us), (False, eager_us)):
        try:
            us = timer(gqa, sets, calls, args)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # a capture or launch failure ends this mode only
            out.error("decode", impl, " ".join(str(exc).split()), **case, graph=graph, variant=variant)
            continue
        out.result("decode", impl, us, kv_bytes, **case, graph=graph, variant=variant)
        out.progress(f"  {'graph' if graph else 'eager'}: {us:.2f} us")


def decode_cases(args):
    for kv_tokens in args.kv_lens:
        yield "batch1", 1, kv_tokens
    for batch in args.batches:
        yield "batched", batch, args.batch_kv


def l2_cache_bytes():
    size = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0)
    return size if size > 0 else L2_FALLBACK_BYTES


def run_decode(args, out):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    l2_bytes = l2_cache_bytes()
    for impl, backend in BACKENDS:
        with sdpa_kernel([getattr(SDPBackend, backend)]):
            for section, batch, kv_tokens in decode_cases(args):
                case = {
                    "section": section,
                    "batch": batch,
                    "kv_tokens": kv_tokens,
                    "num_q_heads": NUM_Q_HEADS,
                    "num_kv_heads": NUM_KV_HEADS,
                    "head_dim": HEAD_DIM,
                    "dtype": "bf16",
                }
                out.progress(f"decode {impl} {section} batch={batch} kv_tokens={kv_tokens}")
                try:
                    decode_case(args, out, impl, case, l2_bytes)
                except (DoesNotFit, torch.cuda.OutOfMemoryError):
                    out.error("decode", impl, "does not fit", **case)
                release_memory()


# ---------------------------------------------------------------- transfer


def host_buffer(nbytes, pinned):
    buffer = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)
    # Writing every byte makes pageable pages resident before timing.
    buffer.random_()
    return buffer


def device_buffer(nbytes):
    return torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device="cuda")


def bidir_us(h2d, d2h, args):
    """Median time from a common start event until both copies, each on its
    own stream, have finished."""
    streams = (torch.cuda.Stream(), torch.cuda.Stream())

    def sample():
        start = torch.cuda.Event(enable_timing=True)
        hold_gpu()
        start.record()
        ends = []
        for stream, copy in zip(streams, (h2d, d2h)):
            stream.wait_event(start)
            with torch.cuda.stream(stream):
                copy()
                end = torch.cuda.Event(enable_timing=True)
                end.record()
            ends.append(end)
        for end in ends:
            torch.cuda.current_stream().wait_event(end)
        return start, ends

    for _ in range(args.warmup):
        sample()
    samples = [sample() for _ in range(args.reps)]
    torch.cuda.synchronize()
    return statistics.median(max(start.elapsed_time(end) for end in ends) for start, ends in samples) * 1e3


def run_transfer(args, out):
    for kv_tokens in args.kv_lens:
        nbytes = kv_tokens * KV_BYTES_PER_TOKEN
        device = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
        for memory, pinned in (("pinned", True), ("pageable", False)):
            out.progress(f"transfer {memory} h2d {human_bytes(nbytes)}")
            host = host_buffer(nbytes, pinned)
            us = median_us(lambda: device.copy_(host, non_blocking=pinned), args)
            out.result("transfer", COPY_IMPL, us, nbytes, memory=memory, direction="h2d", kv_tokens=kv_tokens)

    out.progress(f"transfer pinned h2d, d2h, bidir {human_bytes(LARGE_COPY_BYTES)}")
    host_src, host_dst = host_buffer(LARGE_COPY_BYTES, True), host_buffer(LARGE_COPY_BYTES, True)
    device_src, device_dst = device_buffer(LARGE_COPY_BYTES), device_buffer(LARGE_COPY_BYTES)

    def h2d():
        device_dst.copy_(host_src, non_blocking=True)

    def d2h():
        host_dst.copy_(device_src, non_blocking=True)

    for direction, copy in (("h2d", h2d), ("d2h", d2h)):
        us = median_us(copy, args)
        out.result("transfer", COPY_IMPL, us, LARGE_COPY_BYTES, memory="pinned", direction=direction, case="large")
    us = bidir_us(h2d, d2h, args)
    out.result("transfer", COPY_IMPL, us, 2 * LARGE_COPY_BYTES, memory="pinned", direction="bidir", case="large")


# ---------------------------------------------------------------- ceiling


def run_ceiling(args, out):
    out.progress(f"ceiling hbm_copy {human_bytes(HBM_COPY_BYTES)}")
    src = torch.randn(HBM_COPY_BYTES // ELEMENT_BYTES, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    us = median_us(lambda: dst.copy_(src), args)
    out.result("ceiling", COPY_IMPL, us, 2 * HBM_COPY_BYTES, what="hbm_copy")


RUNNERS = {"decode": run_decode, "transfer": run_transfer, "ceiling": run_ceiling}
SECTION_IMPL = {"decode": "torch-sdpa", "transfer": COPY_IMPL, "ceiling": COPY_IMPL}


# ---------------------------------------------------------------- main


def describe(record):
    words = [record.get(field) for field in ("section", "memory", "direction", "what")]
    if "batch" in record:
        words.append(f"B={record['batch']}")
    if "kv_tokens" in record:
        words.append(f"L={record['kv_tokens']}")
    if record["bench"] == "transfer" and "bytes" in record:
        words.append(human_bytes(record["bytes"]))
    if "graph" in record:
        words.append("graph" if record["graph"] else "eager")
    words.append(record.get("variant"))
    return " ".join(str(word) for word in words if word)


def summary(records):
    rows = []
    for record in records:
        if "error" in record:
            figures = ["", "", "error: " + record["error"][:70]]
        else:
            figures = [f"{record['us']:.2f}", f"{record['gbps']:.1f}", ""]
        rows.append([record["bench"], record["impl"], describe(record)] + figures)
    return format_table(["bench", "impl", "case", "us", "GB/s", ""], rows, "lllrrl")


def int_list(text):
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}")
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"needs positive integers: {text!r}")
    return values


def section_list(text):
    sections = [item.strip() for item in text.split(",") if item.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        raise argparse.ArgumentTypeError(f"sections are among {', '.join(SECTIONS)}; got {text!r}")
    return [section for section in SECTIONS if section in sections]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH", help="write JSON Lines results here (overwritten)")
    parser.add_argument("--kv-lens", type=int_list, default="512,1024,2048,4096,8192,16384,32768",
                        help="KV tokens for the batch-1 decode sweep and the transfers (default: %(default)s)")
    parser.add_argument("--batches", type=int_list, default="1,2,4,8,16,32,64,128",
                        help="batch sizes for the batched decode sweep (default: %(default)s)")
    parser.add_argument("--batch-kv", type=int, default=2048,
                        help="KV tokens per sequence in the batched decode sweep (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=30, help="timed repetitions per case (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed repetitions first (default: %(default)s)")
    parser.add_argument("--sections", type=section_list, default=",".join(SECTIONS),
                        help="comma list among decode,transfer,ceiling (default: all)")
    parser.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    args = parser.parse_args(argv)
    if args.batch_kv <= 0 or args.reps <= 0 or args.warmup < 0:
        parser.error("--batch-kv and --reps must be positive, --warmup not negative")
    return args


def load_torch():
    """Imports PyTorch into this module; returns why it cannot run, or None."""
    global torch
    try:
        import torch as module
    except ImportError as exc:
        return f"PyTorch is needed ({exc})"
    if not module.cuda.is_available():
        return "no CUDA device is available"
    torch = module
    return None


def main(argv=None):
    args = parse_args(argv)
    problem = load_torch()
    if problem:
        print(f"torch_peers: {problem}", file=sys.stderr, flush=True)
        return 2
    torch.manual_seed(0)
    out = Output(args.json, torch.cuda.get_device_name(), args.quiet)
    out.progress(f"{out.card}, PyTorch {torch.__version__}, CUDA {torch.version.cuda}")
    try:
        with torch.inference_mode():
            for section in args.sections:
                try:
                    RUNNERS[section](args, out)
                except RuntimeError as exc:  # includes running out of GPU or pinned memory
                    out.error(section, SECTION_IMPL[section], " ".join(str(exc).split()))
                release_memory()
    finally:
        out.close()
    print(summary(out.records), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
