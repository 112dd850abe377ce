#!/usr/bin/env python3
"""Peer benchmark for tierkv's prefill attention: PyTorch SDPA (FlashAttention
and cuDNN backends) at Llama-3.1-8B shapes, written as JSON Lines.

Each case is a chunk of n new tokens over a prefix of P cached tokens, batch 1:
q [1, 32, n, 128] and K/V [1, 8, P + n, 128] in bf16 with enable_gqa=True. Query
row i sits at position P + i and sees keys 0..P + i: the causal mask is aligned
to the bottom right. SDPA's is_causal=True aligns to the top left, which is the
same only when P = 0, so for P > 0 each backend is given that mask in the first
form it accepts:
  * causal_lower_right: torch.nn.attention.bias.causal_lower_right(n, P + n)
    as attn_mask; SDPA sends it to the flash kernel's own bottom-right
    causal path, no mask tensor is read;
  * bool_mask: an explicit [n, P + n] boolean mask (True = attend).
The variant that ran is recorded, every case is checked against a float32
reference on sampled rows (so a wrongly aligned mask fails), and the CUDA
kernels one call launched are recorded and must belong to the named backend.

Timing: the median over --reps replays of a CUDA graph of several calls that
rotate through input sets larger than the L2 cache, after warm-up.
FLOPs counted as 4 * n * (P + (n + 1) / 2) * 32 * 128 (causal).

With --compare TIERKV.jsonl the summary also shows tierkv-prefill-bench's
figures for the same cases, side by side.
"""

import argparse
import datetime
import gc
import json
import math
import statistics
import sys
import warnings

NUM_Q_HEADS = 32
NUM_KV_HEADS = 8
HEAD_DIM = 128
GROUP = NUM_Q_HEADS // NUM_KV_HEADS
ELEMENT_BYTES = 2  # bf16
MODEL = "llama-3.1-8b"
BENCH = "prefill_attention"

MiB = 1 << 20
L2_FALLBACK_BYTES = 50 * MiB
MAX_INPUT_SETS = 32
MEMORY_HEADROOM = 0.8
SAMPLED_ROWS = 4  # at each end of the chunk
TOLERANCE = 2e-2
HOLD_CYCLES = 200_000  # keeps the GPU busy while the timed work is queued behind it

BACKENDS = (("torch-flash", "FLASH_ATTENTION"), ("torch-cudnn", "CUDNN_ATTENTION"))
# Kernel-name marks of the other SDPA paths: FlashAttention-2 (flash_fwd_kernel,
# flash_fwd_splitkv_kernel), memory-efficient (fmha_cutlass...), and the math path (a softmax
# kernel between matrix products). cuDNN's own kernels carry none of them.
FLASH_MARK = "flash_fwd"
OTHER_MARKS = ("fmha_cutlass", "efficient", "softmax")

torch = None  # imported in main(), so that --help works without PyTorch


class Refused(Exception):
    """The backend ran no variant of the case."""


def flops(chunk, prefix):
    return 4.0 * chunk * (prefix + (chunk + 1) / 2.0) * NUM_Q_HEADS * HEAD_DIM


def progress(args, message):
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- inputs and variants


def random_set(chunk, prefix):
    def randn(*shape):
        return torch.randn(*shape, dtype=torch.bfloat16, device="cuda")

    return randn(1, NUM_Q_HEADS, chunk, HEAD_DIM), randn(1, NUM_KV_HEADS, prefix + chunk, HEAD_DIM), randn(
        1, NUM_KV_HEADS, prefix + chunk, HEAD_DIM
    )


def bottom_right_mask(chunk, prefix):
    rows = torch.arange(chunk, device="cuda").view(-1, 1) + prefix
    return torch.arange(prefix + chunk, device="cuda").view(1, -1) <= rows


def variants(chunk, prefix, impl):
    """(name, make_mask) in the order tried; make_mask() returns SDPA's keyword arguments."""
    if prefix == 0:
        return [("is_causal", lambda: {"is_causal": True})]
    from torch.nn.attention.bias import causal_lower_right

    lower_right = ("causal_lower_right", lambda: {"attn_mask": causal_lower_right(chunk, prefix + chunk)})
    boolean = ("bool_mask", lambda: {"attn_mask": bottom_right_mask(chunk, prefix)})
    return [lower_right, boolean] if impl == "torch-flash" else [boolean, lower_right]


def expand(x):
    return x.repeat_interleave(GROUP, dim=1)


def call(q, k, v, mask_kwargs, gqa):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=gqa, **mask_kwargs)


def kernels_of(fn):
    """Names of the CUDA kernels one call of fn launches."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = []
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA and event.name not in names:
            names.append(event.name)
    return names


def reference_error(out, q, k, v, prefix):
    """Relative L2 error of out against a float32 reference on the first and last rows."""
    chunk = q.shape[2]
    rows = sorted(set(list(range(min(SAMPLED_ROWS, chunk))) + list(range(max(0, chunk - SAMPLED_ROWS), chunk))))
    index = torch.tensor(rows, device="cuda")
    qs = q[:, :, index].float()
    if k.shape[1] == NUM_Q_HEADS:  # expanded by repeat_interleave: every GROUP-th head is an original
        k, v = k[:, ::GROUP], v[:, ::GROUP]
    kf, vf = expand(k.float()), expand(v.float())
    scores = qs @ kf.transpose(-1, -2) / math.sqrt(HEAD_DIM)
    keys = torch.arange(prefix + chunk, device="cuda").view(1, -1)
    allowed = keys <= (index.view(-1, 1) + prefix)
    scores = scores.masked_fill(~allowed, float("-inf"))
    ref = torch.softmax(scores, dim=-1) @ vf
    got = out[:, :, index].float()
    if torch.isnan(out).any().item():
        return float("nan")
    return ((got - ref).norm() / ref.norm()).item()


def ran_on(impl, kernels):
    """Whether the kernels one call launched are the named backend's."""
    if not kernels:
        return False
    flash = any(FLASH_MARK in n for n in kernels)
    other = any(m in n.lower() for n in kernels for m in OTHER_MARKS)
    return flash and not other if impl == "torch-flash" else not flash and not other


def choose(chunk, prefix, impl, first):
    """Runs each variant once (with enable_gqa, then with K/V expanded) until one runs on the
    named backend's kernels and matches the reference. Returns (variant, gqa, mask_kwargs,
    kernels, error)."""
    q, k, v = first
    reasons = []
    for name, make in variants(chunk, prefix, impl):
        for gqa in (True, False):
            kk, vv = (k, v) if gqa else (expand(k), expand(v))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    mask_kwargs = make()
                    out = call(q, kk, vv, mask_kwargs, gqa)
                    torch.cuda.synchronize()
                except torch.cuda.OutOfMemoryError:
                    raise
                except Exception as exc:  # backends refuse with RuntimeError and, at times, other types
                    why = " | ".join([" ".join(str(exc).split())] + [" ".join(str(w.message).split()) for w in caught])
                    reasons.append(f"{name}{'' if gqa else '+expanded'}: {why[:300]}")
                    continue
            kernels = kernels_of(lambda: call(q, kk, vv, mask_kwargs, gqa))
            if not ran_on(impl, kernels):
                reasons.append(f"{name}{'' if gqa else '+expanded'}: ran {kernels[:3]}, not {impl}'s kernels")
                continue
            error = reference_error(out, q, kk, vv, prefix)
            if not error < TOLERANCE:
                reasons.append(f"{name}{'' if gqa else '+expanded'}: relative L2 error {error:.3g}")
                continue
            variant = name if gqa else name + "+expanded_kv"
            return variant, gqa, mask_kwargs, kernels, error
    raise Refused("; ".join(reasons))


# ---------------------------------------------------------------- timing


def graph_us(run_calls, calls, args):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(max(1, args.warmup)):
            run_calls()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run_calls()
    for _ in range(args.warmup):
        graph.replay()
    torch.cuda.synchronize()
    pairs = []
    for _ in range(args.reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(HOLD_CYCLES)
        start.record()
        graph.replay()
        end.record()
        pairs.append((start, end))
    torch.cuda.synchronize()
    times = [s.elapsed_time(e) * 1e3 / calls for s, e in pairs]
    del graph
    return statistics.median(times), min(times)


def release():
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def measure(args, impl, chunk, prefix, l2_bytes):
    first = random_set(chunk, prefix)
    variant, gqa, mask_kwargs, kernels, error = choose(chunk, prefix, impl, first)
    if not gqa:
        first = (first[0], expand(first[1]), expand(first[2]))
    set_bytes = sum(t.numel() * t.element_size() for t in first) + first[0].numel() * ELEMENT_BYTES
    release()
    budget = int(torch.cuda.mem_get_info()[0] * MEMORY_HEADROOM)
    count = max(1, min(MAX_INPUT_SETS, math.ceil(4 * l2_bytes / set_bytes), budget // (2 * set_bytes)))
    sets = [first]
    for _ in range(count - 1):
        q, k, v = random_set(chunk, prefix)
        sets.append((q, k, v) if gqa else (q, expand(k), expand(v)))
    calls = count * math.ceil(args.min_calls / count)

    def run_calls():
        for i in range(calls):
            call(*sets[i % count], mask_kwargs, gqa)

    us, us_min = graph_us(run_calls, calls, args)
    return {
        "variant": variant,
        "alignment": "bottom_right",
        "kernels": kernels[:4],
        "rel_l2_error": round(error, 6),
        "sets": count,
        "calls": calls,
        "graph": True,
        "us": round(us, 3),
        "us_min": round(us_min, 3),
        "tflops": round(flops(chunk, prefix) / us / 1e6, 2),
    }


# ---------------------------------------------------------------- output


def load_records(path):
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                print(f"skipping a line of {path} that is not JSON", file=sys.stderr)
                continue
            if r.get("bench") == BENCH:
                records.append(r)
    return records


def summary(records, peak_tflops):
    """A table of us per case: tierkv, torch-flash, torch-cudnn, the floor, and ratios."""
    cases = sorted({(r["prefix_tokens"], r["chunk_tokens"]) for r in records})
    by = {(r["impl"], r["prefix_tokens"], r["chunk_tokens"]): r for r in records}
    impls = ["tierkv", "torch-flash", "torch-cudnn"]
    lines = [
        f"{'prefix':>6} {'chunk':>6} {'floor us':>9} "
        + " ".join(f"{i + ' us':>15}" for i in impls)
        + f" {'tierkv TF/s':>11} {'/flash':>7} {'/cudnn':>7}"
    ]
    for prefix, chunk in cases:
        floor = flops(chunk, prefix) / (peak_tflops * 1e6)
        cells, us = [], {}
        for impl in impls:
            r = by.get((impl, prefix, chunk))
            if r is None:
                cells.append(f"{'-':>15}")
            elif "error" in r:
                cells.append(f"{'error':>15}")
            else:
                us[impl] = r["us"]
                cells.append(f"{r['us']:>15.1f}")
        tk = us.get("tierkv")
        tf = f"{flops(chunk, prefix) / tk / 1e6:>11.0f}" if tk else f"{'-':>11}"
        ratios = [f"{tk / us[p]:>7.2f}" if tk and p in us else f"{'-':>7}" for p in ("torch-flash", "torch-cudnn")]
        lines.append(f"{prefix:>6} {chunk:>6} {floor:>9.1f} " + " ".join(cells) + f" {tf} " + " ".join(ratios))
    errors = [r for r in records if "error" in r]
    for r in errors:
        lines.append(f"error {r['impl']} prefix {r['prefix_tokens']} chunk {r['chunk_tokens']}: {r['error'][:200]}")
    return "\n".join(lines)


def parse_list(text):
    return [int(x) for x in text.split(",") if x.strip()]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="JSON Lines output (overwritten); without it only the table is printed")
    parser.add_argument("--chunks", type=parse_list, default=[256, 512, 1024, 2048], help="new tokens per case")
    parser.add_argument("--prefixes", type=parse_list, default=[0, 4096, 16384], help="cached tokens per case")
    parser.add_argument("--impls", default="torch-flash,torch-cudnn", help="peers to run")
    parser.add_argument("--reps", type=int, default=20, help="timed graph replays per case (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed replays first")
    parser.add_argument("--min-calls", type=int, default=4, help="calls per graph replay, at least")
    parser.add_argument("--peak-tflops", type=float, default=800.0, help="card's measured bf16 rate, for the floor")
    parser.add_argument("--compare", help="tierkv-prefill-bench JSON Lines to show beside the peers")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args()
    if args.reps < 1 or args.min_calls < 1 or args.warmup < 0:
        parser.error("--reps and --min-calls must be >= 1, --warmup >= 0")
    if any(c < 1 for c in args.chunks) or any(p < 0 for p in args.prefixes):
        parser.error("chunks must be >= 1 and prefixes >= 0")
    impls = [i for i in args.impls.split(",") if i]
    known = {b[0] for b in BACKENDS}
    if any(i not in known for i in impls):
        parser.error(f"--impls: choose from {sorted(known)}")

    global torch
    try:
        import torch as torch_module
    except ImportError:
        print("torch_prefill_peers: PyTorch is not installed", file=sys.stderr)
        return 2
    torch = torch_module
    if not torch.cuda.is_available():
        print("torch_prefill_peers: no CUDA device", file=sys.stderr)
        return 2
    from torch.nn.attention import SDPBackend, sdpa_kernel

    card = torch.cuda.get_device_name(0)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    l2_bytes = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or L2_FALLBACK_BYTES
    out_file = open(args.json, "w", encoding="utf-8") if args.json else None
    records = []
    for impl, backend in BACKENDS:
        if impl not in impls:
            continue
        with sdpa_kernel([getattr(SDPBackend, backend)]):
            for prefix in args.prefixes:
                for chunk in args.chunks:
                    base = {
                        "bench": BENCH,
                        "impl": impl,
                        "card": card,
                        "date": date,
                        "model": MODEL,
                        "batch": 1,
                        "chunk_tokens": chunk,
                        "prefix_tokens": prefix,
                        "num_q_heads": NUM_Q_HEADS,
                        "num_kv_heads": NUM_KV_HEADS,
                        "head_dim": HEAD_DIM,
                        "dtype": "bf16",
                        "torch": torch.__version__,
                    }
                    progress(args, f"{impl} chunk {chunk} over prefix {prefix}")
                    try:
                        record = {**base, **measure(args, impl, chunk, prefix, l2_bytes)}
                        progress(args, f"  {record['variant']}: {record['us']:.1f} us, {record['tflops']} TFLOP/s")
                    except Refused as exc:
                        record = {**base, "error": str(exc)}
                        progress(args, f"  error: {str(exc)[:300]}")
                    except torch.cuda.OutOfMemoryError:
                        record = {**base, "error": "does not fit in GPU memory"}
                    records.append(record)
                    if out_file:
                        out_file.write(json.dumps(record) + "\n")
                        out_file.flush()
                    release()
    if out_file:
        out_file.close()
    if args.compare:
        records = load_records(args.compare) + records
    print(summary(records, args.peak_tflops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
