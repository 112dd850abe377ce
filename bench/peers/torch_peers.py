#!/usr/bin/env python3
"""Peer benchmark for tierkv: PyTorch decode attention, host-to-device copies
and an HBM copy ceiling at Llama-3.1-8B shapes, written as JSON Lines.

Decode sections: decode (batch-1 and batched sweeps), grid (batch x KV
length) and ragged (the skewed lengths a tierkv-bench run wrote, read back with
--ragged-from so both sides run the same case). Implementations: PyTorch SDPA
pinned to its flash or cuDNN backend (ragged: torch.nn.attention.varlen), and
FlashInfer's paged decode (flashinfer_peers.py) when asked for with --impls.

Needs PyTorch and a CUDA device. See README.md in this folder for the schema.
`torch_peers.py --targets FILE.jsonl...` (no PyTorch needed) checks the decode
targets of TARGETS.md against the records of one run.
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
MIN_REPLAY_US = 300
TOLERANCE = 2e-2
MEMORY_HEADROOM = 0.9  # share of free GPU memory a case may take
LARGE_COPY_BYTES = 256 * MiB
HBM_COPY_BYTES = 1 * GiB
# About 100 us at H100 clocks; longer than it takes the host to enqueue the
# timed work behind it (see hold_gpu).
HOLD_CYCLES = 200_000

SECTIONS = ("decode", "grid", "ragged", "transfer", "ceiling")
DEFAULT_SECTIONS = ("decode", "transfer", "ceiling")
SDPA_BACKENDS = {"torch-flash": "FLASH_ATTENTION", "torch-cudnn": "CUDNN_ATTENTION"}
IMPLS = ("torch-flash", "torch-cudnn", "flashinfer", "flashinfer-tc")
DEFAULT_IMPLS = ("torch-flash", "torch-cudnn")
COPY_IMPL = "torch-copy"

torch = None  # imported in main(), so that --help works without PyTorch


class DoesNotFit(Exception):
    """A case needs more GPU memory than is free."""


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
#
# A case is a list of sequence lengths (uniform for batch1 / batched / grid,
# skewed for ragged). Each implementation turns it into a runner: make_set()
# draws one random input set, run(inputs) queues one decode, check(inputs,
# output) compares with a float32 reference. The timing code below is shared.


def attention(q, k, v, gqa):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=False, enable_gqa=gqa)


def expand_heads(x):
    return x.repeat_interleave(NUM_Q_HEADS // NUM_KV_HEADS, dim=1)


def randn(*shape):
    return torch.randn(*shape, dtype=torch.bfloat16, device="cuda")


def tensor_bytes(*tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


class Unsupported(Exception):
    """The implementation cannot run this case (the message says why)."""


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


def dense_reference(q, k, v):
    """float32 decode attention: q [B, Hq, 1, D], k/v [B, Hk or Hq, L, D]."""
    batch = q.shape[0]
    rep = k.shape[1] // NUM_KV_HEADS  # expanded K/V: every rep-th head is an original
    k, v = k[:, ::rep].float(), v[:, ::rep].float()
    grouped_q = q.float().view(batch, NUM_KV_HEADS, NUM_Q_HEADS // NUM_KV_HEADS, HEAD_DIM)
    scores = grouped_q @ k.transpose(-1, -2) / math.sqrt(HEAD_DIM)
    return (torch.softmax(scores, dim=-1) @ v).view(batch, NUM_Q_HEADS, 1, HEAD_DIM)


def relative_error(out, reference):
    return ((out.float() - reference).norm() / reference.norm()).item()


class SdpaCase:
    """PyTorch SDPA pinned to one backend, dense [B, H, L, D] K/V (uniform lengths)."""

    def __init__(self, backend, lens):
        if len(set(lens)) != 1:
            raise Unsupported(
                "scaled_dot_product_attention takes dense [B, H, L, D] K/V; a ragged batch would be "
                "padded to its longest sequence (see the varlen row instead)"
            )
        self.backend = backend
        self.batch, self.kv_tokens = len(lens), lens[0]
        q, k, v = self.draw(True)
        out, gqa_reason = self.call(q, k, v, True)
        self.gqa, self.variant = True, "enable_gqa"
        if out is None:
            k, v = expand_heads(k), expand_heads(v)
            out, expanded_reason = self.call(q, k, v, False)
            if out is None:
                raise Unsupported(f"enable_gqa: {gqa_reason}; expanded_kv: {expanded_reason}")
            self.gqa, self.variant = False, "expanded_kv"
        self.first, self.first_out = (q, k, v), out
        self.set_bytes = tensor_bytes(q, k, v, out)

    def call(self, q, k, v, gqa):
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel([self.backend]):
            return try_attention(q, k, v, gqa)

    def draw(self, gqa):
        q = randn(self.batch, NUM_Q_HEADS, 1, HEAD_DIM)
        k = randn(self.batch, NUM_KV_HEADS, self.kv_tokens, HEAD_DIM)
        v = randn(self.batch, NUM_KV_HEADS, self.kv_tokens, HEAD_DIM)
        return (q, k, v) if gqa else (q, expand_heads(k), expand_heads(v))

    def make_set(self):
        if self.first is not None:
            first, self.first = self.first, None
            return first
        return self.draw(self.gqa)

    def run(self, inputs):
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel([self.backend]):
            return attention(*inputs, self.gqa)

    def check(self, inputs, output, tolerance):
        if torch.isnan(output).any().item():
            return "NaN in output"
        # The reference of the first sequence only: the largest cases hold 16 GiB of KV.
        q, k, v = (t[:1] for t in inputs)
        error = relative_error(output[:1], dense_reference(q, k, v))
        if not error < tolerance:
            return f"relative L2 error {error:.3g} against float32 reference (limit {tolerance})"
        return None


class VarlenCase:
    """torch.nn.attention.varlen.varlen_attn (FlashAttention varlen): packed
    [tokens, H, D] K/V, one query row per sequence. GQA through enable_gqa when
    this PyTorch has it, else K/V expanded to the query heads."""

    def __init__(self, lens):
        try:
            from torch.nn.attention.varlen import varlen_attn
        except ImportError as exc:
            raise Unsupported(f"torch.nn.attention.varlen is not in PyTorch {torch.__version__}: {exc}")
        self.fn = varlen_attn
        self.lens = lens
        self.total = sum(lens)
        cu_k = [0]
        for n in lens:
            cu_k.append(cu_k[-1] + n)
        self.cu_q = torch.arange(len(lens) + 1, dtype=torch.int32, device="cuda")
        self.cu_k = torch.tensor(cu_k, dtype=torch.int32, device="cuda")
        self.max_k = max(lens)
        q, k, v = self.draw(NUM_KV_HEADS)
        for heads, kwargs, variant in ((NUM_KV_HEADS, {"enable_gqa": True}, "varlen_gqa"),
                                       (NUM_Q_HEADS, {}, "varlen_expanded_kv")):
            if heads != NUM_KV_HEADS:
                k, v = (x.repeat_interleave(NUM_Q_HEADS // NUM_KV_HEADS, dim=1) for x in (k, v))
            try:
                out = self.fn(q, k, v, self.cu_q, self.cu_k, 1, self.max_k, **kwargs)
                torch.cuda.synchronize()
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as exc:
                last = f"{variant}: {' '.join(str(exc).split())}"
                continue
            self.heads, self.kwargs, self.variant = heads, kwargs, variant
            self.first = (q, k, v)
            self.set_bytes = tensor_bytes(q, k, v, out)
            return
        raise Unsupported(last)

    def draw(self, heads):
        q = randn(len(self.lens), NUM_Q_HEADS, HEAD_DIM)
        k = randn(self.total, heads, HEAD_DIM)
        v = randn(self.total, heads, HEAD_DIM)
        return q, k, v

    def make_set(self):
        if self.first is not None:
            first, self.first = self.first, None
            return first
        return self.draw(self.heads)

    def run(self, inputs):
        q, k, v = inputs
        return self.fn(q, k, v, self.cu_q, self.cu_k, 1, self.max_k, **self.kwargs)

    def check(self, inputs, output, tolerance):
        if torch.isnan(output).any().item():
            return "NaN in output"
        q, k, v = inputs
        longest = max(range(len(self.lens)), key=lambda b: self.lens[b])
        for b in sorted({0, longest}):
            start = int(self.cu_k[b])
            keys = k[start : start + self.lens[b]].transpose(0, 1).unsqueeze(0)  # [1, H, L, D]
            values = v[start : start + self.lens[b]].transpose(0, 1).unsqueeze(0)
            reference = dense_reference(q[b : b + 1].unsqueeze(2), keys, values)
            error = relative_error(output[b : b + 1].unsqueeze(2), reference)
            if not error < tolerance:
                return f"sequence {b}: relative L2 error {error:.3g} against float32 reference"
        return None


def make_runner(impl, lens, args):
    """The runner of impl for these lengths; raises Unsupported or DoesNotFit."""
    from torch.nn.attention import SDPBackend

    kv_bytes = sum(lens) * KV_BYTES_PER_TOKEN
    if 3 * kv_bytes > memory_budget():  # one set, and the float32 K/V of the reference
        raise DoesNotFit
    if impl in SDPA_BACKENDS:
        if len(set(lens)) != 1 and impl == "torch-flash":
            return VarlenCase(lens)
        return SdpaCase(getattr(SDPBackend, SDPA_BACKENDS[impl]), lens)
    import flashinfer_peers

    problem = flashinfer_peers.load(torch)
    if problem:
        raise Unsupported(problem)
    try:
        return flashinfer_peers.prepare(impl, lens, NUM_Q_HEADS, NUM_KV_HEADS, HEAD_DIM, args.page_tokens,
                                        torch.bfloat16)
    except flashinfer_peers.Unsupported as exc:
        raise Unsupported(str(exc)) from exc


def rotation_sets(l2_bytes, set_bytes, budget):
    """How many input sets to cycle through so that L2 holds none of them
    when it comes round again, within what fits in budget."""
    wanted = max(1, min(MAX_INPUT_SETS, math.ceil(4 * l2_bytes / set_bytes)))
    return max(1, min(wanted, budget // set_bytes))


def calls_per_graph(kv_bytes, count):
    """Enough calls per replay for the events to resolve it (at least MIN_REPLAY_US
    at 2.5 TB/s, at most MIN_CALLS_PER_GRAPH), and every set at least once."""
    estimate_us = kv_bytes / 2.5e6 + 3.0
    wanted = min(MIN_CALLS_PER_GRAPH, math.ceil(MIN_REPLAY_US / estimate_us))
    return count * math.ceil(max(wanted, count) / count)


def run_calls(runner, sets, calls):
    for i in range(calls):
        runner.run(sets[i % len(sets)])


def graph_us(runner, sets, calls, args):
    # Warm up on a side stream before capture, as torch.cuda.graph asks.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(args.warmup):
            run_calls(runner, sets, len(sets))
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run_calls(runner, sets, calls)
    for _ in range(args.warmup):
        graph.replay()
    times = event_times_ms(graph.replay, args.reps)
    return statistics.median(times) / calls * 1e3


def eager_us(runner, sets, calls, args):
    for _ in range(args.warmup):
        run_calls(runner, sets, calls)
    # No hold here: launch overhead is part of what eager calls cost.
    times = event_times_ms(lambda: run_calls(runner, sets, calls), args.reps, hold=False)
    return statistics.median(times) / calls * 1e3


def decode_case(args, out, impl, case, lens, l2_bytes):
    kv_bytes = sum(lens) * KV_BYTES_PER_TOKEN
    try:
        runner = make_runner(impl, lens, args)
    except Unsupported as exc:
        out.error("decode", impl, str(exc), **case)
        return
    variant = runner.variant
    first = runner.make_set()
    result = runner.run(first)
    torch.cuda.synchronize()
    problem = runner.check(first, result, TOLERANCE)
    if problem:
        out.error("decode", impl, problem, **case, variant=variant)
        return
    del result
    count = rotation_sets(l2_bytes, runner.set_bytes, memory_budget() + runner.set_bytes)
    sets = [first] + [runner.make_set() for _ in range(count - 1)]
    calls = calls_per_graph(kv_bytes, count)
    out.progress(f"  {variant}, {count} input set(s) of {human_bytes(runner.set_bytes)}, {calls} calls per timing")
    for graph, timer in ((True, graph_us), (False, eager_us)):
        try:
            us = timer(runner, sets, calls, args)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # a capture or launch failure ends this mode only
            out.error("decode", impl, " ".join(str(exc).split()), **case, graph=graph, variant=variant)
            continue
        out.result("decode", impl, us, kv_bytes, **case, graph=graph, variant=variant)
        out.progress(f"  {'graph' if graph else 'eager'}: {us:.2f} us")


def load_ragged(path):
    """The ragged cases of a tierkv-bench JSON Lines file: [lengths] in file order."""
    cases = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line) if line.strip() else {}
            if record.get("section") == "ragged" and record.get("graph") and "seq_lens" in record:
                if record["seq_lens"] not in cases:
                    cases.append(record["seq_lens"])
    return cases


def decode_cases(args, section):
    """(section name, lengths) of every case of a section."""
    if section == "decode":
        for kv_tokens in args.kv_lens:
            yield "batch1", [kv_tokens]
        for batch in args.batches:
            yield "batched", [args.batch_kv] * batch
    elif section == "grid":
        for batch in args.grid_batches:
            for kv_tokens in args.grid_kv:
                yield "grid", [kv_tokens] * batch
    elif section == "ragged":
        for lens in load_ragged(args.ragged_from) if args.ragged_from else []:
            yield "ragged", lens


def l2_cache_bytes():
    size = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0)
    return size if size > 0 else L2_FALLBACK_BYTES


def run_decode_section(args, out, section):
    l2_bytes = l2_cache_bytes()
    for impl in args.impls:
        for name, lens in decode_cases(args, section):
            batch = len(lens)
            case = {
                "section": name,
                "batch": batch,
                "kv_tokens": (sum(lens) + batch // 2) // batch,
                "num_q_heads": NUM_Q_HEADS,
                "num_kv_heads": NUM_KV_HEADS,
                "head_dim": HEAD_DIM,
                "dtype": "bf16",
            }
            if impl.startswith("flashinfer"):
                case["page_tokens"] = args.page_tokens
            if name == "ragged":
                case["seq_lens"] = lens
            out.progress(f"decode {impl} {name} batch={batch} kv_tokens={case['kv_tokens']}")
            try:
                decode_case(args, out, impl, case, lens, l2_bytes)
            except (DoesNotFit, torch.cuda.OutOfMemoryError):
                out.error("decode", impl, "does not fit", **case)
            release_memory()


def run_decode(args, out):
    run_decode_section(args, out, "decode")


def run_grid(args, out):
    run_decode_section(args, out, "grid")


def run_ragged(args, out):
    if not args.ragged_from:
        out.error("decode", "torch-sdpa", "ragged: no --ragged-from file with tierkv-bench's ragged lengths",
                  section="ragged")
        return
    run_decode_section(args, out, "ragged")


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


RUNNERS = {"decode": run_decode, "grid": run_grid, "ragged": run_ragged, "transfer": run_transfer,
           "ceiling": run_ceiling}
SECTION_IMPL = {"decode": "torch-sdpa", "grid": "torch-sdpa", "ragged": "torch-sdpa", "transfer": COPY_IMPL,
                "ceiling": COPY_IMPL}


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


def impl_list(text):
    impls = [item.strip() for item in text.split(",") if item.strip()]
    unknown = sorted(set(impls) - set(IMPLS))
    if unknown or not impls:
        raise argparse.ArgumentTypeError(f"implementations are among {', '.join(IMPLS)}; got {text!r}")
    return [impl for impl in IMPLS if impl in impls]


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
    parser.add_argument("--grid-batches", type=int_list, default="1,4,8,16,32,64,128",
                        help="batch sizes of the grid section (default: %(default)s)")
    parser.add_argument("--grid-kv", type=int_list, default="512,1024,2048,4096,8192,16384,32768",
                        help="KV tokens per sequence of the grid section (default: %(default)s)")
    parser.add_argument("--ragged-from", metavar="JSONL",
                        help="tierkv-bench JSON Lines whose ragged records give the ragged section's lengths")
    parser.add_argument("--page-tokens", type=int, default=16,
                        help="page size of the paged peers (FlashInfer) (default: %(default)s)")
    parser.add_argument("--impls", type=impl_list, default=",".join(DEFAULT_IMPLS),
                        help=f"decode implementations among {','.join(IMPLS)} (default: %(default)s)")
    parser.add_argument("--sections", type=section_list, default=",".join(DEFAULT_SECTIONS),
                        help=f"comma list among {','.join(SECTIONS)} (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    args = parser.parse_args(argv)
    if args.batch_kv <= 0 or args.reps <= 0 or args.warmup < 0 or args.page_tokens <= 0:
        parser.error("--batch-kv, --page-tokens and --reps must be positive, --warmup not negative")
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


# ---------------------------------------------------------------- targets


def targets_report(paths, datasheet_gbps=3350.0):
    """The decode targets of TARGETS.md, case by case, from tierkv-bench and peer
    JSON Lines of one run (graph timings): tierkv against the best PyTorch
    backend and the best FlashInfer variant. Standard library only."""
    floor_rate = datasheet_gbps * 1e3  # bytes per µs
    cases = {}
    for path in paths:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                record = json.loads(line) if line.strip() else {}
                if record.get("bench") != "decode" or not record.get("graph") or "us" not in record:
                    continue
                key = (record["section"], record["batch"], record["kv_tokens"])
                best = cases.setdefault(key, {}).get(record["impl"])
                if best is None or record["us"] < best["us"]:
                    cases[key][record["impl"]] = record

    def best_of(by_impl, prefix):
        found = [r for impl, r in by_impl.items() if impl.startswith(prefix)]
        return min(found, key=lambda r: r["us"]) if found else None

    rows, missed = [], []
    for key in sorted(cases, key=lambda k: (k[0] != "grid", k[1], k[2])):
        by_impl = cases[key]
        tk = by_impl.get("tierkv")
        if tk is None:
            continue
        pt, fi = best_of(by_impl, "torch-"), best_of(by_impl, "flashinfer")
        floor = tk["bytes"] / floor_rate
        checks = []
        if pt:
            near = tk["us"] <= 1.1 * floor and pt["us"] <= 1.1 * floor
            checks.append(("vs PyTorch" + (" (3%)" if near else ""), tk["us"] <= (1.03 if near else 1.0) * pt["us"]))
            if key[0] == "grid" and key[1] == 1 and key[2] >= 2048:
                checks.append(("0.6x PyTorch", tk["us"] <= 0.6 * pt["us"]))
        if key[0] == "grid" and key[1] * key[2] >= 65536:
            checks.append((">=85% of datasheet", tk["bytes"] / tk["us"] >= 0.85 * floor_rate))
        if fi:
            checks.append(("within 5% of FlashInfer", tk["us"] <= 1.05 * fi["us"]))
        failed = [name for name, ok in checks if not ok]
        for name in failed:
            missed.append(f"{key[0]} batch {key[1]} KV {key[2]}: {name}")
        fmt_us = lambda r: f"{r['us']:.2f}" if r else MISSING_CELL  # noqa: E731
        rows.append([
            key[0], str(key[1]), str(key[2]), f"{floor:.1f}", fmt_us(tk),
            f"{100 * tk['bytes'] / tk['us'] / floor_rate:.1f}%",
            fmt_us(pt), pt["impl"] if pt else "", f"{tk['us'] / pt['us']:.2f}" if pt else MISSING_CELL,
            fmt_us(fi), fi["impl"] if fi else "", f"{tk['us'] / fi['us']:.2f}" if fi else MISSING_CELL,
            "ok" if not failed else "MISSED: " + ", ".join(failed),
        ])
    header = ["section", "batch", "kv", "floor µs", "tierkv µs", "of 3.35 TB/s", "PyTorch µs", "backend",
              "tk/pt", "FlashInfer µs", "variant", "tk/fi", "targets"]
    table = format_table(header, rows, "lrrrrrrlrrlrl")
    return table + f"\n\n{len(missed)} target check(s) missed\n" + "\n".join("  " + m for m in missed)


MISSING_CELL = "—"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--targets":
        print(targets_report(argv[1:]))
        return 0
    args = parse_args(argv)
    problem = load_torch()
    if problem:
        print(f"torch_peers: {problem}", file=sys.stderr, flush=True)
        return 2
    torch.manual_seed(0)
    out = Output(args.json, torch.cuda.get_device_name(), args.quiet)
    out.progress(f"{out.card}, PyTorch {torch.__version__}, CUDA {torch.version.cuda}")
    if any(impl.startswith("flashinfer") for impl in args.impls):
        import flashinfer_peers

        problem = flashinfer_peers.load(torch)
        out.progress(f"FlashInfer: {problem or flashinfer_peers.version()}")
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
