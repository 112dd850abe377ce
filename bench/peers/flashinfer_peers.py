#!/usr/bin/env python3
"""FlashInfer's paged decode as a tierkv peer: BatchDecodeWithPagedKVCacheWrapper
over the same paged layout tierkv reads (NHD pages of 16 tokens, scattered
through a pool), on the cases of torch_peers.py, written as the same JSON Lines.

Two variants: `flashinfer` (the decode kernel, use_tensor_cores=False) and
`flashinfer-tc` (use_tensor_cores=True, FlashInfer's advice for GQA groups of
4 and more). FlashInfer compiles its kernels with the machine's nvcc on first
use (cached under ~/.cache/flashinfer).

Run it alone (`flashinfer_peers.py --json F --sections grid,ragged ...`, the
flags of torch_peers.py) or through `torch_peers.py --impls ...`.
"""

import math
import sys

IMPLS = ("flashinfer", "flashinfer-tc")
WORKSPACE_BYTES = 256 << 20

torch = None
flashinfer = None
_import_problem = None


def load(torch_module):
    """Imports flashinfer once; returns why it cannot be used, or None."""
    global torch, flashinfer, _import_problem
    torch = torch_module
    if flashinfer is not None or _import_problem is not None:
        return _import_problem
    try:
        import flashinfer as module
    except Exception as exc:  # a missing optional dependency surfaces as any exception type
        _import_problem = f"import flashinfer failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
        return _import_problem
    flashinfer = module
    return None


def version():
    return getattr(flashinfer, "__version__", "unknown") if flashinfer else None


class Unsupported(Exception):
    """The implementation cannot run this case (the message says why)."""


class FlashInferCase:
    """One case: a page table shared by every input set, a planned wrapper, and
    per set a query, a K page pool and a V page pool."""

    def __init__(self, impl, lens, num_q_heads, num_kv_heads, head_dim, page_tokens, dtype):
        self.impl = impl
        self.variant = "tensor_cores" if impl == "flashinfer-tc" else "decode_kernel"
        self.lens = lens
        self.hq, self.hk, self.d, self.p = num_q_heads, num_kv_heads, head_dim, page_tokens
        self.dtype = dtype
        batch = len(lens)
        pages_per_seq = [math.ceil(n / page_tokens) for n in lens]
        self.total_pages = sum(pages_per_seq)
        element = torch.empty((), dtype=dtype).element_size()
        self.page_bytes = page_tokens * num_kv_heads * head_dim * element
        self.set_bytes = 2 * self.total_pages * self.page_bytes + 2 * batch * num_q_heads * head_dim * element
        # Pages scattered through the pool, as after an engine's churn.
        generator = torch.Generator().manual_seed(len(lens) * 7919 + sum(lens))
        order = torch.randperm(self.total_pages, generator=generator).to(torch.int32)
        indptr = [0]
        for n in pages_per_seq:
            indptr.append(indptr[-1] + n)
        self.indices = order.cuda()
        self.indptr = torch.tensor(indptr, dtype=torch.int32, device="cuda")
        self.last_page_len = torch.tensor(
            [n - (math.ceil(n / page_tokens) - 1) * page_tokens for n in lens], dtype=torch.int32, device="cuda"
        )
        self.workspace = torch.zeros(WORKSPACE_BYTES, dtype=torch.uint8, device="cuda")
        self.wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
            self.workspace,
            "NHD",
            use_cuda_graph=True,
            use_tensor_cores=impl == "flashinfer-tc",
            paged_kv_indptr_buffer=torch.empty(batch + 1, dtype=torch.int32, device="cuda"),
            paged_kv_indices_buffer=torch.empty(self.total_pages, dtype=torch.int32, device="cuda"),
            paged_kv_last_page_len_buffer=torch.empty(batch, dtype=torch.int32, device="cuda"),
        )
        self.wrapper.plan(
            self.indptr,
            self.indices,
            self.last_page_len,
            num_q_heads,
            num_kv_heads,
            head_dim,
            page_tokens,
            pos_encoding_mode="NONE",
            q_data_type=dtype,
            kv_data_type=dtype,
        )

    def make_set(self):
        shape = (self.total_pages, self.p, self.hk, self.d)
        q = torch.randn(len(self.lens), self.hq, self.d, dtype=self.dtype, device="cuda")
        k = torch.randn(shape, dtype=self.dtype, device="cuda")
        v = torch.randn(shape, dtype=self.dtype, device="cuda")
        out = torch.empty_like(q)
        return (q, k, v, out)

    def run(self, inputs):
        q, k, v, out = inputs
        return self.wrapper.run(q, (k, v), out=out)

    def gather(self, cache, b):
        """Sequence b's tokens from a page pool: [len, heads, dim]."""
        start, end = int(self.indptr[b]), int(self.indptr[b + 1])
        pages = cache[self.indices[start:end].long()]
        return pages.reshape(-1, self.hk, self.d)[: self.lens[b]]

    def check(self, inputs, output, tolerance):
        """Compares the first and the longest sequence with a float32 reference."""
        q, k, v, _ = inputs
        if torch.isnan(output).any().item():
            return "NaN in output"
        longest = max(range(len(self.lens)), key=lambda b: self.lens[b])
        group = self.hq // self.hk
        for b in sorted({0, longest}):
            keys = self.gather(k, b).float().transpose(0, 1)  # [hk, len, d]
            values = self.gather(v, b).float().transpose(0, 1)
            query = q[b].float().view(self.hk, group, self.d)
            scores = query @ keys.transpose(-1, -2) / math.sqrt(self.d)
            reference = (torch.softmax(scores, dim=-1) @ values).reshape(self.hq, self.d)
            error = ((output[b].float() - reference).norm() / reference.norm()).item()
            if not error < tolerance:
                return f"sequence {b}: relative L2 error {error:.3g} against float32 reference (limit {tolerance})"
        return None


def prepare(impl, lens, num_q_heads, num_kv_heads, head_dim, page_tokens, dtype):
    """The runner of one case, or Unsupported with the reason."""
    problem = _import_problem if flashinfer is None else None
    if problem:
        raise Unsupported(problem)
    try:
        return FlashInferCase(impl, lens, num_q_heads, num_kv_heads, head_dim, page_tokens, dtype)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as exc:  # plan or JIT failures: reported, not fatal
        raise Unsupported(f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc


def main(argv=None):
    import torch_peers

    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--impls" or a.startswith("--impls=") for a in argv):
        argv += ["--impls", ",".join(IMPLS)]
    return torch_peers.main(argv)


if __name__ == "__main__":
    sys.exit(main())
