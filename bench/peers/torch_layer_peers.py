#!/usr/bin/env python3
"""One Llama-3.1-8B layer in PyTorch (cuBLAS GEMMs + SDPA), the peer of tierkv's reference runner.

Prefill: a chunk of new tokens over a cached prefix (K/V contiguous in [1, heads, tokens, dim]):
RMSNorm, fused QKV projection, rotary embedding, SDPA with a causal mask aligned to the end of the
keys (torch.nn.attention.bias.causal_lower_right), output projection and residual, RMSNorm, fused
gate/up projection, SiLU * up, down projection and residual. Decode: one token per sequence over
batch x KV tokens, SDPA without a mask. Times are medians of CUDA-event-timed replays of a CUDA
graph of several layer calls (after a warm-up), per call, written as JSON Lines in the project's
schema (bench "prefill_layer" / "decode_layer", "graph": true).
"""
import argparse
import datetime
import json
import math
import sys


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="write JSON Lines here")
    p.add_argument("--chunks", default="256,512,1024,2048")
    p.add_argument("--prefixes", default="0,4096,16384")
    p.add_argument("--batches", default="1,2,4,8,16,32,64")
    p.add_argument("--decode-kv", type=int, default=2048)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--backends", default="flash,cudnn", help="SDPA backends to time")
    p.add_argument("--per-graph", type=int, default=4, help="layer calls captured per CUDA graph")
    return p.parse_args()


def ints(text):
    return [int(x) for x in text.split(",") if x]


class Layer:
    hidden, heads, kv_heads, dim, inter, eps = 4096, 32, 8, 128, 14336, 1e-5

    def __init__(self, torch):
        self.t = torch
        dev, bf = "cuda", torch.bfloat16
        h, q, kv = self.hidden, self.heads * self.dim, self.kv_heads * self.dim

        def w(rows, cols):
            bound = math.sqrt(3.0 / cols)
            return (torch.rand(rows, cols, device=dev, dtype=torch.float32) * 2 - 1).mul_(bound).to(bf)

        self.qkv = w(q + 2 * kv, h)
        self.o = w(h, q)
        self.gate_up = w(2 * self.inter, h)
        self.down = w(h, self.inter)
        self.norm1 = (torch.rand(h, device=dev) * 0.2 + 0.9).to(bf)
        self.norm2 = (torch.rand(h, device=dev) * 0.2 + 0.9).to(bf)
        inv = 1.0 / (500000.0 ** (torch.arange(0, self.dim, 2, device=dev, dtype=torch.float32) / self.dim))
        self.inv_freq = inv

    def rms(self, x, w):
        t = self.t
        xf = x.float()
        return (xf * t.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * w.float()).to(x.dtype)

    def rope(self, x, pos):
        t = self.t
        ang = pos.float()[:, None] * self.inv_freq[None, :]
        cos, sin = t.cos(ang), t.sin(ang)
        cos = t.cat([cos, cos], -1)[None, None]
        sin = t.cat([sin, sin], -1)[None, None]
        half = x.shape[-1] // 2
        rot = t.cat([-x[..., half:], x[..., :half]], -1)
        return (x.float() * cos + rot.float() * sin).to(x.dtype)

    def forward(self, x, k_cache, v_cache, pos, mask, batch):
        """x [batch * n, hidden]; caches [batch, kv_heads, prefix + n, dim] (the chunk's rows last)."""
        t, F = self.t, self.t.nn.functional
        n = x.shape[0] // batch
        qd, kvd = self.heads * self.dim, self.kv_heads * self.dim
        xn = self.rms(x, self.norm1)
        qkv = F.linear(xn, self.qkv)
        q = qkv[:, :qd].view(batch, n, self.heads, self.dim).transpose(1, 2)
        k = qkv[:, qd:qd + kvd].view(batch, n, self.kv_heads, self.dim).transpose(1, 2)
        v = qkv[:, qd + kvd:].view(batch, n, self.kv_heads, self.dim).transpose(1, 2)
        q, k = self.rope(q, pos), self.rope(k, pos)
        k_cache[:, :, -n:] = k
        v_cache[:, :, -n:] = v
        a = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask, enable_gqa=True)
        a = a.transpose(1, 2).reshape(batch * n, qd)
        x = x + F.linear(a, self.o)
        gu = F.linear(self.rms(x, self.norm2), self.gate_up)
        h = F.silu(gu[:, :self.inter]) * gu[:, self.inter:]
        return x + F.linear(h, self.down)


def median_us(torch, fn, reps, warmup, per_graph):
    """Median µs per call of `fn`, replayed from a CUDA graph of `per_graph` calls (so the host's
    launch overhead of PyTorch's eager kernels stays out of the figure)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(per_graph):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / per_graph)
    times.sort()
    del graph
    return times[len(times) // 2]


def main():
    args = parse_args()
    try:
        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from torch.nn.attention.bias import causal_lower_right
    except ImportError as e:
        print(f"torch_layer_peers: PyTorch is required: {e}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("torch_layer_peers: no CUDA device", file=sys.stderr)
        return 2
    torch.manual_seed(1)
    layer = Layer(torch)
    card = torch.cuda.get_device_name()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    backends = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                "efficient": SDPBackend.EFFICIENT_ATTENTION}
    out = open(args.json, "w") if args.json else None

    def emit(record):
        record.update({"card": card, "date": date, "model": "llama-3.1-8b", "dtype": "bf16"})
        line = json.dumps(record)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    bf = torch.bfloat16
    for name in [b for b in args.backends.split(",") if b]:
        impl = f"torch-{name}"
        for prefix in ints(args.prefixes):
            for n in ints(args.chunks):
                total = prefix + n
                x = torch.randn(n, layer.hidden, device="cuda", dtype=bf)
                kc = torch.randn(1, layer.kv_heads, total, layer.dim, device="cuda", dtype=bf)
                vc = torch.randn_like(kc)
                pos = torch.arange(prefix, total, device="cuda")
                mask = causal_lower_right(n, total)
                try:
                    with sdpa_kernel([backends[name]]):
                        us = median_us(torch, lambda: layer.forward(x, kc, vc, pos, mask, 1), args.reps, args.warmup,
                                       args.per_graph)
                    emit({"bench": "prefill_layer", "impl": impl, "chunk_tokens": n, "prefix_tokens": prefix, "us": us,
                          "graph": True})
                except RuntimeError as e:
                    emit({"bench": "prefill_layer", "impl": impl, "chunk_tokens": n, "prefix_tokens": prefix,
                          "error": str(e).splitlines()[0]})
                del x, kc, vc
        for batch in ints(args.batches):
            kv = args.decode_kv
            x = torch.randn(batch, layer.hidden, device="cuda", dtype=bf)
            kc = torch.randn(batch, layer.kv_heads, kv, layer.dim, device="cuda", dtype=bf)
            vc = torch.randn_like(kc)
            pos = torch.full((1,), kv - 1, device="cuda")
            try:
                with sdpa_kernel([backends[name]]):
                    us = median_us(torch, lambda: layer.forward(x, kc, vc, pos, None, batch), args.reps, args.warmup,
                                   args.per_graph)
                emit({"bench": "decode_layer", "impl": impl, "batch": batch, "kv_tokens": kv, "us": us, "graph": True})
            except RuntimeError as e:
                emit({"bench": "decode_layer", "impl": impl, "batch": batch, "kv_tokens": kv,
                      "error": str(e).splitlines()[0]})
            del x, kc, vc
    return 0


if __name__ == "__main__":
    sys.exit(main())
