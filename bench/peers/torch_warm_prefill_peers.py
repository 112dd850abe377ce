#!/usr/bin/env python3
"""Warm prefill in plain PyTorch, layer by layer: the peer of tierkv's warm-prefill executor.

A request returns with a prefix of P tokens whose KV sits in pinned host memory and n new tokens to
prefill. The engine is Llama-3.1-8B-shaped (32 layers, hidden 4096, 32 query / 8 KV heads, head dim
128, intermediate 14336, vocabulary 128256, bf16, random weights; no embedding): per layer RMSNorm, fused QKV GEMM, rotary embedding, the new tokens' K/V
stored after the prefix, SDPA (flash backend, GQA, causal aligned to the end of the keys:
causal_lower_right), output GEMM, RMSNorm, fused gate/up GEMM, SiLU * up, down GEMM; GEMMs are
torch.nn.functional.linear (cuBLAS). Every mode that computes ends as a time to first token does:
the final RMSNorm and the LM head over the last row, and the argmax of its logits (the first token;
--no-lm-head leaves them out, as this peer did before). Each layer's KV is one buffer [tokens, 2 (K, V), 8, 128] on the
GPU, so a layer's prefix is one contiguous run that one copy fills (K and V are strided views of it,
which flash reads as they are); the host copy is [layers, P, 2, 8, 128] in pinned memory.

For each prefix P in --prefixes and new-token count n in --news, five modes (impl):
  torch-compute            the n tokens' prefill with the prefix KV already on the GPU;
  torch-load               all layers' prefix KV host -> device on one copy stream, one copy a layer;
  torch-load-then-compute  the load, then the compute once every layer landed;
  torch-layerwise          the load on a copy stream recording one event per layer, the compute on
                           the compute stream waiting for layer l's event right before layer l's
                           attention (the QKV GEMM of layer l may start earlier);
  torch-recompute          a cold prefill of all P + n tokens in --chunk-tokens chunks.
Timing: CUDA events around the region, --warmup runs, then the median of --reps, each mode
captured as one CUDA graph (copies, events and kernels of both streams; --eager launches the
kernels one by one instead). The prefix KV is what the model itself computes for P random input
rows (a cold prefill, untimed), so results are checked: load-then-compute and layer-wise must
reproduce compute-alone's output (relative L2 error <= 1e-3) after the GPU prefix was overwritten with garbage, and
recompute's last n rows must match it (relative L2 error < 2e-2). Memory is freed between cases,
and a case that does not fit the card (or host memory) is refused with a message and recorded with
`error`.

Output: JSON Lines in the schema of bench/peers/README.md, one object per case and mode: bench
"warm_prefill", impl, card, prefix_tokens, new_tokens, us, date, model, dtype, layers, graph,
reps; torch-load adds bytes and gbps; torch-recompute adds chunk_tokens; a failed check adds
check_error. Then a table with each mode in ms and layer-wise / max(load, compute).

On the H100 test machine (PyTorch 2.5 or later with CUDA; about 5 minutes, 13 GiB of weights on
the GPU, 4 GiB of pinned host memory at P = 32K), from the repository root:
  python3 bench/peers/torch_warm_prefill_peers.py --out-dir bench/results
which writes bench/results/warm-prefill-torch-<card>-<yyyymmdd>.{jsonl,txt} (through the device
runner: --out-dir "$OUT", then copy the two files into bench/results/). Add
--skip-recompute-above 16384 to leave out the slow recompute at 32K (about a minute and a half).

Smoke test on a CPU (tiny shapes, no streams: the modes run one after another):
  python3 bench/peers/torch_warm_prefill_peers.py --device cpu --tiny
"""
import argparse
import contextlib
import dataclasses
import datetime
import gc
import json
import os
import re
import statistics
import sys
import time

torch = None  # imported in main(), so that --help works without PyTorch

IMPLS = ("torch-compute", "torch-load", "torch-load-then-compute", "torch-layerwise", "torch-recompute")
GiB = 1 << 30
CHECK_TOLERANCE = 2e-2  # recompute against compute-alone
SAME_TOLERANCE = 1e-3   # the loading modes against compute-alone: the same kernels on the same data
OVERHEAD_BYTES = 1 * GiB  # CUDA context, cuBLAS workspaces, allocator slack (CUDA only)


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    inter: int
    vocab: int
    eps: float = 1e-5
    rope_theta: float = 500000.0

    @property
    def q_dim(self):
        return self.heads * self.head_dim

    @property
    def kv_dim(self):
        return self.kv_heads * self.head_dim

    def kv_bytes_per_token(self):  # all layers, K and V, bf16
        return self.layers * 2 * self.kv_dim * 2

    def weight_bytes(self):
        h = self.hidden
        per_layer = h * (self.q_dim + 2 * self.kv_dim) + self.q_dim * h + 3 * self.inter * h + 2 * h
        return (self.layers * per_layer + self.vocab * h + h) * 2

    def activation_bytes(self, rows):
        """A generous bound on one chunk of `rows` tokens' temporaries in one layer (bf16 GEMM
        outputs, fp32 rotary temporaries, the residual)."""
        bf16 = rows * 2 * (self.q_dim + 2 * self.kv_dim + 3 * self.inter + 6 * self.hidden)
        fp32 = rows * 4 * 4 * (self.q_dim + self.kv_dim)
        return 3 * (bf16 + fp32)


LLAMA_8B = Shape("llama-3.1-8b", 32, 4096, 32, 8, 128, 14336, 128256)
TINY = Shape("tiny", 2, 256, 4, 2, 64, 512, 1024)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--tiny", action="store_true",
                   help="tiny shapes (2 layers, hidden 256, 4/2 heads of 64) and sizes, for a smoke test")
    p.add_argument("--prefixes", help="prefix tokens (default 4096,8192,16384,32768; tiny: 64,128)")
    p.add_argument("--news", help="new tokens (default 128,512,2048; tiny: 16,32)")
    p.add_argument("--chunk-tokens", type=int, help="recompute chunk (default 2048; tiny: 64)")
    p.add_argument("--skip-recompute-above", type=int, default=None, metavar="P",
                   help="no torch-recompute for prefixes above P tokens (it is slow)")
    p.add_argument("--reps", type=int, help="timed repetitions, median reported (default 10; tiny: 3)")
    p.add_argument("--warmup", type=int, help="untimed runs first (default 3; tiny: 1)")
    p.add_argument("--eager", action="store_true", help="launch kernels one by one instead of CUDA graphs")
    p.add_argument("--no-lm-head", action="store_true",
                   help="leave out the final norm, LM head and argmax of the first token")
    p.add_argument("--max-memory-gib", type=float, default=None,
                   help="treat the device (and host) as having at most this much free memory")
    p.add_argument("--json", help="write JSON Lines here (overwritten)")
    p.add_argument("--table", help="write the text table here too")
    p.add_argument("--out-dir", help="write warm-prefill-torch-<card>-<yyyymmdd>.{jsonl,txt} here")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = p.parse_args(argv)
    tiny = args.tiny
    args.shape = TINY if tiny else LLAMA_8B
    args.prefixes = ints(args.prefixes or ("64,128" if tiny else "4096,8192,16384,32768"))
    args.news = ints(args.news or ("16,32" if tiny else "128,512,2048"))
    args.chunk_tokens = args.chunk_tokens or (64 if tiny else 2048)
    args.reps = args.reps or (3 if tiny else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if tiny else 3)
    if min(args.prefixes + args.news) < 1 or args.chunk_tokens < 1 or args.reps < 1:
        p.error("prefixes, news, --chunk-tokens and --reps must be >= 1")
    return args


def ints(text):
    return [int(x) for x in str(text).split(",") if x.strip()]


def progress(args, message):
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the model


class Model:
    """`layers` Llama layers with random weights, run over a paged-free KV buffer per layer."""

    def __init__(self, shape, device, seed):
        self.s, self.device = shape, device
        gen = torch.Generator(device=device).manual_seed(seed)
        bf = torch.bfloat16

        def rand(*size):
            return torch.rand(*size, generator=gen, device=device)

        def w(rows, cols):  # uniform, scaled for unit output variance; made where it is used
            bound = (3.0 / cols) ** 0.5
            return ((rand(rows, cols) * 2 - 1) * bound).to(bf)

        s = shape
        self.layers = []
        for _ in range(s.layers):
            self.layers.append({
                "qkv": w(s.q_dim + 2 * s.kv_dim, s.hidden),
                "o": w(s.hidden, s.q_dim),
                "gate_up": w(2 * s.inter, s.hidden),
                "down": w(s.hidden, s.inter),
                "norm1": (rand(s.hidden) * 0.2 + 0.9).to(bf),
                "norm2": (rand(s.hidden) * 0.2 + 0.9).to(bf),
            })
        self.final_norm = (rand(s.hidden) * 0.2 + 0.9).to(bf)
        self.lm_head = w(s.vocab, s.hidden)
        self.inv_freq = 1.0 / (s.rope_theta ** (torch.arange(0, s.head_dim, 2, dtype=torch.float32) / s.head_dim))
        self.cos = self.sin = None

    def rope_tables(self, positions):
        """cos / sin [positions, head_dim] in fp32, made once per prefix size (outside timing)."""
        ang = torch.arange(positions, dtype=torch.float32)[:, None] * self.inv_freq[None, :]
        ang = torch.cat([ang, ang], -1).to(self.device)
        self.cos, self.sin = torch.cos(ang), torch.sin(ang)

    def rms(self, x, w):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.s.eps) * w.float()).to(x.dtype)

    def rope(self, x, start):
        """x [rows, heads, dim] at positions start, start + 1, ..."""
        rows, half = x.shape[0], x.shape[-1] // 2
        cos = self.cos[start:start + rows, None, :]
        sin = self.sin[start:start + rows, None, :]
        rot = torch.cat([-x[..., half:], x[..., :half]], -1)
        return (x.float() * cos + rot.float() * sin).to(x.dtype)

    def layer(self, i, x, kv, start, before_attention=None):
        """One layer over x [rows, hidden] at positions [start, start + rows): stores the rows' K/V
        into kv [tokens, 2, kv_heads, head_dim] at [start, start + rows), attends over
        kv[:start + rows]. `before_attention()` runs right before the attention reads kv."""
        s, w, F = self.s, self.layers[i], torch.nn.functional
        rows = x.shape[0]
        qkv = F.linear(self.rms(x, w["norm1"]), w["qkv"])
        q = qkv[:, :s.q_dim].view(rows, s.heads, s.head_dim)
        k = qkv[:, s.q_dim:s.q_dim + s.kv_dim].view(rows, s.kv_heads, s.head_dim)
        v = qkv[:, s.q_dim + s.kv_dim:].view(rows, s.kv_heads, s.head_dim)
        q, k = self.rope(q, start), self.rope(k, start)
        end = start + rows
        kv[start:end, 0] = k
        kv[start:end, 1] = v
        if before_attention is not None:
            before_attention()
        keys = kv[:end, 0].unsqueeze(0).transpose(1, 2)  # [1, kv_heads, end, dim], strided
        values = kv[:end, 1].unsqueeze(0).transpose(1, 2)
        mask = causal_lower_right(rows, end)
        a = F.scaled_dot_product_attention(q.unsqueeze(0).transpose(1, 2), keys, values, attn_mask=mask,
                                           enable_gqa=True)
        x = x + F.linear(a.transpose(1, 2).reshape(rows, s.q_dim), w["o"])
        gu = F.linear(self.rms(x, w["norm2"]), w["gate_up"])
        return x + F.linear(F.silu(gu[:, :s.inter]) * gu[:, s.inter:], w["down"])

    def first_token(self, rows):
        """The answer of a prefill: the argmax of the LM head over the last row's final norm."""
        last = self.rms(rows[-1:], self.final_norm)
        return torch.nn.functional.linear(last, self.lm_head).argmax(-1)

    def prefill(self, x, kv, start, wait=None):
        """All layers over x [rows, hidden] at positions from `start`; kv is [layers, tokens, 2, ...].
        wait(l), when given, runs before layer l's attention."""
        for i in range(self.s.layers):
            x = self.layer(i, x, kv[i], start, None if wait is None else (lambda i=i: wait(i)))
        return x

    def chunked_prefill(self, x, kv, chunk):
        outs = []
        for start in range(0, x.shape[0], chunk):
            outs.append(self.prefill(x[start:start + chunk], kv, start))
        return torch.cat(outs)


def causal_lower_right(rows, keys):
    from torch.nn.attention.bias import causal_lower_right as clr
    return clr(rows, keys)


# ---------------------------------------------------------------- devices and timing


class Device:
    """Streams, events and clocks on CUDA; on the CPU the same calls run in order, synchronously."""

    def __init__(self, kind, eager):
        self.cuda = kind == "cuda"
        self.graphs = self.cuda and not eager
        self.copy_stream = torch.cuda.Stream() if self.cuda else None

    def name(self):
        if self.cuda:
            return torch.cuda.get_device_name()
        return "cpu"

    def on_copy_stream(self):
        return torch.cuda.stream(self.copy_stream) if self.cuda else contextlib.nullcontext()

    def fork(self):
        if self.cuda:
            self.copy_stream.wait_stream(torch.cuda.current_stream())

    def join(self):
        if self.cuda:
            torch.cuda.current_stream().wait_stream(self.copy_stream)

    def event(self):
        if not self.cuda:
            return None
        e = torch.cuda.Event()
        e.record(self.copy_stream)
        return e

    def wait(self, event):
        if event is not None:
            torch.cuda.current_stream().wait_event(event)

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def free(self):
        """Returns cached device memory, and cached pinned host blocks, once nothing holds them."""
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            if hasattr(torch._C, "_host_emptyCache"):
                torch._C._host_emptyCache()

    def free_bytes(self, cap):
        if self.cuda:
            free, _ = torch.cuda.mem_get_info()
        else:
            free = host_available_bytes()
        return free if cap is None else min(free, int(cap * GiB))

    def sdpa_backend(self):
        if not self.cuda:
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION])

    def timed(self, fn, reps, warmup):
        """(median µs, the CUDA graph that ran or None, the output of the last run). With graphs,
        the warm-up runs on a side stream first (lazy initialisation must not happen during
        capture), then `fn` is captured once and replayed."""
        graph = None
        if self.graphs:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(max(1, warmup)):
                    fn()
            torch.cuda.current_stream().wait_stream(side)
            self.sync()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                captured = fn()

            def run():
                graph.replay()
                return captured
        else:
            for _ in range(warmup):
                fn()
            self.sync()
            run = fn
        times = []
        for _ in range(reps):
            if self.cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                out = run()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b) * 1e3)
            else:
                t0 = time.perf_counter()
                out = run()
                times.append((time.perf_counter() - t0) * 1e6)
        self.sync()
        return statistics.median(times), graph, out


def host_available_bytes():
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 1 << 62


def gib(b):
    return f"{b / GiB:.2f} GiB"


# ---------------------------------------------------------------- one prefix size


class Case:
    """The buffers of one prefix size: the model's prefix KV in (pinned) host memory, the GPU KV
    buffer with room for the largest n, and the input rows."""

    def __init__(self, model, dev, prefix, max_new, seed):
        s = model.s
        self.model, self.dev, self.p = model, dev, prefix
        device = "cuda" if dev.cuda else "cpu"
        gen = torch.Generator(device=device).manual_seed(seed + prefix)
        rows = torch.randn(prefix + max_new, s.hidden, generator=gen, device=device) * 0.5
        self.x_all = rows.to(torch.bfloat16)  # prefix rows, then the new rows
        self.kv = torch.empty(s.layers, prefix + max_new, 2, s.kv_heads, s.head_dim, dtype=torch.bfloat16,
                              device=device)
        self.host = torch.empty(s.layers, prefix, 2, s.kv_heads, s.head_dim, dtype=torch.bfloat16,
                                pin_memory=dev.cuda)

    def make_prefix(self, chunk):
        """The prefix KV as the model computes it (a cold prefill, untimed), copied to the host."""
        with torch.no_grad(), self.dev.sdpa_backend():
            self.model.chunked_prefill(self.x_all[:self.p], self.kv, chunk)
            for i in range(self.model.s.layers):
                self.host[i].copy_(self.kv[i, :self.p])
        self.dev.sync()

    def scribble_prefix(self):
        """Garbage in the GPU prefix, so a compute that outruns its load reads it and fails the check."""
        self.kv[:, :self.p].fill_(float("nan"))
        self.dev.sync()

    def load(self, per_layer_events):
        events = []
        with self.dev.on_copy_stream():
            for i in range(self.model.s.layers):
                self.kv[i, :self.p].copy_(self.host[i], non_blocking=True)
                if per_layer_events:
                    events.append(self.dev.event())
        return events

    # The modes; each returns the output rows of the new tokens (None for the load alone).
    def mode(self, impl, n, chunk, lm_head=True):
        m, x_new = self.model, self.x_all[self.p:self.p + n]

        def answered(rows):
            """The rows, after the first token is computed from them (kept, so that it is done)."""
            if lm_head:
                self.token = m.first_token(rows)
            return rows

        def compute():
            return answered(m.prefill(x_new, self.kv, self.p))

        def load():
            self.dev.fork()
            self.load(per_layer_events=False)
            self.dev.join()
            return None

        def load_then_compute():
            self.dev.fork()
            self.load(per_layer_events=False)
            self.dev.join()
            return answered(m.prefill(x_new, self.kv, self.p))

        def layerwise():
            self.dev.fork()
            events = self.load(per_layer_events=True)
            out = m.prefill(x_new, self.kv, self.p, wait=lambda i: self.dev.wait(events[i]) if events else None)
            out = answered(out)
            self.dev.join()
            return out

        def recompute():
            return answered(m.chunked_prefill(self.x_all[:self.p + n], self.kv, chunk)[self.p:])

        return {"torch-compute": compute, "torch-load": load, "torch-load-then-compute": load_then_compute,
                "torch-layerwise": layerwise, "torch-recompute": recompute}[impl]


def relative_error(got, ref):
    if got is None or ref is None:
        return None
    g, r = got.float(), ref.float()
    if not torch.isfinite(g).all():
        return float("inf")
    return ((g - r).norm() / r.norm().clamp_min(1e-30)).item()


def case_bytes(shape, prefix, max_new, chunk):
    device = (shape.kv_bytes_per_token() * (prefix + max_new) + (prefix + max_new) * shape.hidden * 2 * 3
              + shape.activation_bytes(max(chunk, max_new)))
    host = shape.kv_bytes_per_token() * prefix
    return device, host


def run_prefix(args, model, dev, prefix, emit, results):
    s = model.s
    max_new = max(args.news)
    need_dev, need_host = case_bytes(s, prefix, max_new, args.chunk_tokens)
    free_dev = dev.free_bytes(args.max_memory_gib)
    free_host = host_available_bytes() if args.max_memory_gib is None else min(host_available_bytes(),
                                                                               int(args.max_memory_gib * GiB))
    problem = None
    if need_dev > free_dev:
        problem = (f"prefix {prefix} with up to {max_new} new tokens needs about {gib(need_dev)} of "
                   f"{'GPU' if dev.cuda else 'host'} memory beside the weights, {gib(free_dev)} is free on "
                   f"{dev.name()}; use smaller --prefixes / --news")
    elif dev.cuda and need_host > 0.8 * free_host:
        problem = (f"prefix {prefix} needs {gib(need_host)} of pinned host memory, {gib(free_host)} is available")
    if problem:
        print(f"torch_warm_prefill_peers: refused: {problem}", file=sys.stderr)
        for n in args.news:
            for impl in IMPLS:
                emit({"impl": impl, "prefix_tokens": prefix, "new_tokens": n, "error": f"does not fit: {problem}"})
        return
    progress(args, f"prefix {prefix}: computing its KV ({gib(need_host)}) ...")
    model.rope_tables(prefix + max_new)
    case = Case(model, dev, prefix, max_new, args.seed)
    try:
        case.make_prefix(args.chunk_tokens)
        for n in args.news:
            run_case(args, case, n, emit, results)
            dev.free()
    finally:
        del case
        dev.free()


def run_case(args, case, n, emit, results):
    dev, prefix = case.dev, case.p
    reference = None
    for impl in IMPLS:
        record = {"impl": impl, "prefix_tokens": prefix, "new_tokens": n}
        if impl == "torch-recompute":
            record["chunk_tokens"] = args.chunk_tokens
            if args.skip_recompute_above is not None and prefix > args.skip_recompute_above:
                continue
        fn = case.mode(impl, n, args.chunk_tokens, lm_head=not args.no_lm_head)
        graph = out = None
        try:
            with torch.no_grad(), dev.sdpa_backend():
                us, graph, out = dev.timed(fn, args.reps, args.warmup)
                check = None
                if impl in ("torch-load-then-compute", "torch-layerwise"):
                    # The timed runs left the right prefix in place: overwrite it with NaN and run
                    # once more, so a layer that attends before its load landed shows.
                    case.scribble_prefix()
                    if graph is not None:
                        graph.replay()  # `out` is the graph's output tensor
                    else:
                        out = fn()
                    dev.sync()
                    err = relative_error(out, reference)
                    if err is None or not err <= SAME_TOLERANCE:
                        check = f"output differs from torch-compute's (relative L2 error {err})"
                elif impl == "torch-recompute":
                    err = relative_error(out, reference)
                    if err is None or not err < CHECK_TOLERANCE:
                        check = f"last {n} rows differ from torch-compute's (relative L2 error {err})"
            if impl == "torch-compute":
                reference = out.clone()
        except (RuntimeError, TypeError, ValueError) as e:  # a backend refusal, out of memory: record, go on
            emit(dict(record, error=" ".join(str(e).split())[:400]))
            continue
        finally:
            del graph, out
            dev.free()
        record.update({"us": us, "graph": dev.graphs, "reps": args.reps,
                       "lm_head": impl != "torch-load" and not args.no_lm_head})
        if impl == "torch-load":
            record["bytes"] = case.model.s.kv_bytes_per_token() * prefix
            record["gbps"] = record["bytes"] / us / 1e3
        if check:
            record["check_error"] = check
            print(f"torch_warm_prefill_peers: check failed at P={prefix} n={n} {impl}: {check}", file=sys.stderr)
        emit(record)
        results[(prefix, n, impl)] = us
        progress(args, f"  P={prefix:6d} n={n:5d} {impl:24s} {us / 1e3:9.3f} ms")


def table(args, results, card):
    lines = [f"warm prefill in PyTorch, {args.shape.name} shapes, {card}, ms (median of {args.reps}; "
             f"{'CUDA graphs' if not args.eager and args.device == 'cuda' else 'eager'})",
             f"{'prefix':>7} {'new':>5} {'compute':>9} {'load':>9} {'load+comp':>9} {'layerwise':>9} "
             f"{'recompute':>10} {'lw/max':>7} {'ltc/lw':>7} {'rec/lw':>7}"]

    def ms(k):
        v = results.get(k)
        return f"{v / 1e3:9.2f}" if v is not None else f"{'-':>9}"

    for p in args.prefixes:
        for n in args.news:
            c, ld, ltc, lw, rec = (results.get((p, n, i)) for i in IMPLS)
            lw_max = f"{lw / max(c, ld):7.3f}" if None not in (c, ld, lw) else f"{'-':>7}"
            ltc_lw = f"{ltc / lw:7.2f}" if None not in (ltc, lw) else f"{'-':>7}"
            rec_lw = f"{rec / lw:7.1f}" if None not in (rec, lw) else f"{'-':>7}"
            lines.append(f"{p:7d} {n:5d} {ms((p, n, IMPLS[0]))} {ms((p, n, IMPLS[1]))} {ms((p, n, IMPLS[2]))} "
                         f"{ms((p, n, IMPLS[3]))} {ms((p, n, IMPLS[4]))} {lw_max} {ltc_lw} {rec_lw}")
    lines.append("lw/max: layer-wise over max(load alone, compute alone); ltc/lw: load-then-compute over "
                 "layer-wise; rec/lw: full recompute over layer-wise")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    global torch
    try:
        import torch as _torch
        torch = _torch
    except ImportError as e:
        print(f"torch_warm_prefill_peers: PyTorch is required: {e}", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("torch_warm_prefill_peers: no CUDA device (use --device cpu --tiny for a smoke test)", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    dev = Device(args.device, args.eager)
    card = dev.name()
    shape = args.shape
    need = shape.weight_bytes() + (OVERHEAD_BYTES if dev.cuda else 0)
    free = dev.free_bytes(args.max_memory_gib)
    if need > free:
        print(f"torch_warm_prefill_peers: the {shape.name} weights need about {gib(need)}, {gib(free)} is free "
              f"on {card}", file=sys.stderr)
        return 2
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    json_path, table_path = args.json, args.table
    if args.out_dir:
        base = os.path.join(args.out_dir, f"warm-prefill-torch-{re.sub(r'[^A-Za-z0-9]+', '-', card).strip('-')}-"
                                          f"{date.replace('-', '')}")
        json_path, table_path = json_path or base + ".jsonl", table_path or base + ".txt"
    out = open(json_path, "w", encoding="utf-8") if json_path else None

    def emit(record):
        full = {"bench": "warm_prefill", "card": card, "date": date, "model": shape.name, "dtype": "bf16",
                "layers": shape.layers}
        full.update(record)
        line = json.dumps(full)
        if out:
            out.write(line + "\n")
            out.flush()

    progress(args, f"{card}: {shape.name} weights ({gib(shape.weight_bytes())}) ...")
    model = Model(shape, "cuda" if dev.cuda else "cpu", args.seed)
    results = {}
    try:
        for prefix in args.prefixes:
            run_prefix(args, model, dev, prefix, emit, results)
    finally:
        if out:
            out.close()
    text = table(args, results, card)
    print(text, end="")
    if table_path:
        with open(table_path, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
