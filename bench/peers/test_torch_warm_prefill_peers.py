#!/usr/bin/env python3
"""Smoke tests of torch_warm_prefill_peers.py in its CPU mode (--device cpu --tiny).

They need PyTorch (any build; the CPU wheel is enough) and are skipped without it. Run with
python3 -m pytest bench/peers/test_torch_warm_prefill_peers.py, or alone with python3 (which ends
with 'N passed, N failed').
"""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "torch_warm_prefill_peers.py")
HAVE_TORCH = importlib.util.find_spec("torch") is not None
IMPLS = ("torch-compute", "torch-load", "torch-load-then-compute", "torch-layerwise", "torch-recompute")
QUICK = ["--device", "cpu", "--tiny", "--reps", "1", "--warmup", "0", "--quiet"]


class Skip(Exception):
    pass


def need_torch():
    if HAVE_TORCH:
        return
    try:
        import pytest
        pytest.skip("PyTorch is missing")
    except ImportError:
        raise Skip("PyTorch is missing") from None


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *QUICK, *args], capture_output=True, text=True, timeout=600)


def records(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_every_mode_is_timed_and_checked():
    need_torch()
    with tempfile.TemporaryDirectory() as d:
        out, txt = os.path.join(d, "wp.jsonl"), os.path.join(d, "wp.txt")
        p = run("--prefixes", "64,128", "--news", "16", "--json", out, "--table", txt)
        assert p.returncode == 0, p.stderr
        recs = records(out)
        assert [(r["prefix_tokens"], r["impl"]) for r in recs] == [(64, i) for i in IMPLS] + [(128, i) for i in IMPLS]
        for r in recs:
            assert r["bench"] == "warm_prefill" and r["card"] == "cpu" and r["model"] == "tiny", r
            assert r["new_tokens"] == 16 and r["us"] > 0 and len(r["date"]) == 10, r
            assert "error" not in r and "check_error" not in r, r
            assert r["lm_head"] == (r["impl"] != "torch-load"), r  # the first token, as a TTFT is
        load = next(r for r in recs if r["impl"] == "torch-load" and r["prefix_tokens"] == 128)
        assert load["bytes"] == 2 * 128 * 2 * 2 * 64 * 2  # layers x tokens x (K, V) x heads x dim x bf16
        assert next(r for r in recs if r["impl"] == "torch-recompute")["chunk_tokens"] == 64
        with open(txt, encoding="utf-8") as f:
            table = f.read()
        assert "layerwise" in table and "    128    16" in table, table
        assert table in p.stdout


def test_recompute_can_be_skipped_for_large_prefixes():
    need_torch()
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "wp.jsonl")
        p = run("--prefixes", "32,64", "--news", "8", "--skip-recompute-above", "32", "--json", out)
        assert p.returncode == 0, p.stderr
        recompute = [r["prefix_tokens"] for r in records(out) if r["impl"] == "torch-recompute"]
        assert recompute == [32]


def test_the_lm_head_can_be_left_out():
    need_torch()
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "wp.jsonl")
        p = run("--prefixes", "32", "--news", "8", "--no-lm-head", "--json", out)
        assert p.returncode == 0, p.stderr
        assert all(r["lm_head"] is False for r in records(out))


def test_sizes_that_do_not_fit_are_refused_with_a_message():
    need_torch()
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "wp.jsonl")
        # 65536 tokens of tiny KV are 64 MiB: over a 0.05 GiB budget; 64 tokens fit.
        p = run("--prefixes", "64,65536", "--news", "8", "--max-memory-gib", "0.05", "--json", out)
        assert p.returncode == 0, p.stderr
        assert "refused: prefix 65536" in p.stderr and "is free on cpu" in p.stderr, p.stderr
        recs = records(out)
        refused = [r for r in recs if r["prefix_tokens"] == 65536]
        assert len(refused) == len(IMPLS) and all(r["error"].startswith("does not fit") for r in refused)
        assert all("us" in r for r in recs if r["prefix_tokens"] == 64)
        p = run("--max-memory-gib", "0.000001")
        assert p.returncode == 2 and "weights need" in p.stderr, p.stderr


def test_a_load_that_never_lands_fails_the_check():
    """With the copies dropped, the layer-wise and load-then-compute modes attend over the NaN the
    check wrote into the prefix, and must say so."""
    need_torch()
    sys.path.insert(0, HERE)
    import torch_warm_prefill_peers as peers
    saved = peers.Case.load
    peers.Case.load = lambda self, per_layer_events: [None] * self.model.s.layers if per_layer_events else []
    try:
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "wp.jsonl")
            assert peers.main([*QUICK, "--prefixes", "32", "--news", "8", "--json", out]) == 0
            failed = {r["impl"] for r in records(out) if "check_error" in r}
            assert failed == {"torch-load-then-compute", "torch-layerwise"}, failed
    finally:
        peers.Case.load = saved


def test_without_a_gpu_cuda_mode_says_so():
    need_torch()
    import torch
    if torch.cuda.is_available():
        return
    p = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "no CUDA device" in p.stderr, p.stderr


def _main():
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_") and callable(f)]
    passed = failed = skipped = 0
    for name, fn in tests:
        try:
            fn()
            passed += 1
            print(f"ok    {name}")
        except Skip as e:
            skipped += 1
            print(f"skip  {name}: {e}")
        except Exception as e:  # noqa: BLE001 -- report every failure, then the count
            failed += 1
            print(f"FAIL  {name}: {type(e).__name__}: {e}")
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_main())
