#!/usr/bin/env python3
"""Tests of plot_replay.py on sample records made here (no data is committed).

Runs under pytest (python3 -m pytest bench/replay/test_plot_replay.py) or alone
(python3 bench/replay/test_plot_replay.py, which ends with 'N passed, N failed'). The plotting
tests are skipped where matplotlib is missing; the schema tests need only the standard library.
"""
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import plot_replay  # noqa: E402

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None


class Skip(Exception):
    pass


def need_matplotlib():
    if HAVE_MPL:
        return
    try:
        import pytest
        pytest.skip("matplotlib is missing (Debian: python3-matplotlib)")
    except ImportError:
        raise Skip("matplotlib is missing") from None


def sample_records(seed=1, requests=120, layers=32):
    """Request, summary and timeline records of three policies over one workload, as the replay
    writes them."""
    rng = random.Random(seed)
    policies = {"recompute": 0.0, "load-then-compute": 1.0, "warm-prefill": 1.0}
    out = []
    for policy, hit_share in policies.items():
        ttfts = []
        for i in range(requests):
            prompt = rng.randint(64, 4000)
            hit = int(prompt * hit_share * rng.uniform(0.3, 1.0)) // 16 * 16
            computed = prompt - hit
            load_ms = hit * 0.002 if hit_share else 0.0
            compute_ms = computed * 0.01 + 2.0
            ttft = (max(load_ms, compute_ms) if policy == "warm-prefill" else load_ms + compute_ms)
            ttft *= rng.uniform(0.9, 1.3)
            ttfts.append(ttft)
            out.append({"kind": "request", "policy": policy, "workload": "chat", "id": i, "session": i // 4,
                        "turn": i % 4, "arrival_s": i * 0.5, "prompt_tokens": prompt,
                        "hit_tokens": {"gpu": hit // 4, "host": hit - hit // 4}, "loaded_tokens": hit - hit // 4,
                        "recomputed_tokens": 0, "computed_tokens": computed, "ttft_ms": ttft,
                        "itl_ms": rng.uniform(5, 8), "output_tokens": rng.randint(1, 200),
                        "plan": "load" if hit else "compute"})
        ttfts.sort()
        out.append({"kind": "summary", "policy": policy, "workload": "chat", "requests": requests,
                    "ttft_ms": {"p50": plot_replay.percentile(ttfts, 50), "p90": plot_replay.percentile(ttfts, 90),
                                "p99": plot_replay.percentile(ttfts, 99)},
                    "itl_ms": {"p50": 6.0, "p90": 7.5}, "hit_rate": {"gpu": 0.2, "host": 0.5 * hit_share},
                    "bytes": {"host": 123456789}, "memory_bytes": {"gpu": 1 << 30, "host": 4 << 30},
                    "wall_s": 61.5, "backend": "cpu", "model": "tiny"})
    # One request's layer-wise warm prefill: layer l's compute waits for layer l's load.
    load_end, compute_end = 0.0, 0.0
    for layer in range(layers):
        start = load_end
        load_end = start + 0.30
        out.append({"kind": "timeline", "policy": "warm-prefill", "id": 7, "lane": "load", "layer": layer,
                    "chunk": 0, "start_ms": start, "end_ms": load_end})
        c0 = max(load_end, compute_end)
        compute_end = c0 + 0.25
        out.append({"kind": "timeline", "policy": "warm-prefill", "id": 7, "lane": "compute", "layer": layer,
                    "chunk": 0, "start_ms": c0, "end_ms": compute_end})
    return out


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def run_cli(*args):
    return subprocess.run([sys.executable, os.path.join(HERE, "plot_replay.py"), *args], capture_output=True,
                          text=True, timeout=300)


def test_plots_are_written_as_png_and_svg():
    need_matplotlib()
    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, "replay.jsonl")
        write_jsonl(data, sample_records())
        out = os.path.join(d, "plots")
        p = run_cli(data, "--out", out)
        assert p.returncode == 0, p.stderr
        for name in ("ttft_vs_hit-chat", "ttft_cdf-chat", "timeline-warm-prefill-7"):
            for ext in ("png", "svg"):
                path = os.path.join(out, f"{name}.{ext}")
                assert os.path.getsize(path) > 1000, path
            with open(os.path.join(out, f"{name}.png"), "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n"
            with open(os.path.join(out, f"{name}.svg"), encoding="utf-8") as f:
                assert "<svg" in f.read(2000)
        assert "warm-prefill" in p.stdout and "ttft p50" in p.stdout  # the summary table


def test_two_files_prompt_axis_and_a_chosen_timeline():
    need_matplotlib()
    with tempfile.TemporaryDirectory() as d:
        recs = sample_records()
        a, b = os.path.join(d, "a.jsonl"), os.path.join(d, "b.jsonl")
        write_jsonl(a, [r for r in recs if r.get("policy") != "recompute"])
        other = sample_records(seed=2, requests=40, layers=4)
        for r in other:
            r["policy"] = "lru-host"
            if "workload" in r:
                r["workload"] = "docqa"
        write_jsonl(b, other + [{"kind": "future-kind", "x": 1}])
        out = os.path.join(d, "plots")
        p = run_cli(a, b, "--out", out, "--x", "prompt", "--timeline-policy", "lru-host", "--formats", "png")
        assert p.returncode == 0, p.stderr
        assert "unknown kind 'future-kind'" in p.stderr
        for name in ("ttft_vs_prompt-chat", "ttft_vs_prompt-docqa", "ttft_cdf-docqa", "timeline-lru-host-7"):
            assert os.path.exists(os.path.join(out, f"{name}.png")), name
        assert not os.path.exists(os.path.join(out, "ttft_cdf-chat.svg"))


def test_malformed_files_fail_with_the_file_and_line():
    cases = [
        ("{not json", "not valid JSON"),
        ('[1, 2]', "not a JSON object"),
        ('{"policy": "x"}', 'missing "kind"'),
        (None, 'request record without "ttft_ms"'),
        (None, 'request "hit_tokens" must be an object of tier -> integer >= 0'),
        (None, 'timeline "lane" must be "load" or "compute"'),
        (None, "end_ms 1.0 is before start_ms 2.0"),
        (None, 'summary "ttft_ms" must be an object with numbers p50, p90, p99'),
    ]
    good = sample_records(requests=2, layers=1)
    request = next(r for r in good if r["kind"] == "request")
    summary = next(r for r in good if r["kind"] == "summary")
    timeline = next(r for r in good if r["kind"] == "timeline")
    broken = [
        {k: v for k, v in request.items() if k != "ttft_ms"},
        dict(request, hit_tokens={"gpu": -1}),
        dict(timeline, lane="save"),
        dict(timeline, start_ms=2.0, end_ms=1.0),
        dict(summary, ttft_ms={"p50": 1.0}),
    ]
    texts = [c[0] for c in cases[:3]] + [json.dumps(r) for r in broken]
    with tempfile.TemporaryDirectory() as d:
        for text, (_, expect) in zip(texts, cases):
            path = os.path.join(d, "bad.jsonl")
            with open(path, "w", encoding="utf-8") as f:
                f.write(json.dumps(request) + "\n\n" + text + "\n")
            try:
                plot_replay.load([path])
            except plot_replay.ReplayFileError as e:
                assert f"{path}:3: " in str(e), str(e)
                assert expect in str(e), str(e)
            else:
                raise AssertionError(f"accepted: {text}")
        # The command line says the same and exits with 2, before any plotting.
        p = run_cli(path, "--out", os.path.join(d, "plots"))
        assert p.returncode == 2
        assert f"plot_replay: {path}:3: " in p.stderr, p.stderr
        assert not os.path.exists(os.path.join(d, "plots"))
        p = run_cli(os.path.join(d, "missing.jsonl"), "--out", os.path.join(d, "plots"))
        assert p.returncode == 2 and "cannot open" in p.stderr, p.stderr


def test_binned_medians_and_p90():
    edges = plot_replay.bin_edges([0, 100], 2)
    assert edges == [0, 50, 100]
    rows = plot_replay.binned([(0, 1), (10, 2), (20, 3), (60, 10), (100, 20)], edges)
    assert rows == [(10, 2, 3, 3), (60, 10, 20, 2)]
    assert plot_replay.bin_edges([5, 5], 4) == [4.5, 5.5]
    assert plot_replay.percentile(list(range(1, 101)), 90) == 90


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
