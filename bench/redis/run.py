#!/usr/bin/env python3
"""The Redis tier beside redis-benchmark at the same value sizes, on loopback.

Starts its own servers (one redis-server, then a three-node cluster made with
`redis-cli --cluster create`) on free ports, and for each value size runs, alternately and
--reps times each:
  - redis_bench (bench/redis/redis_bench.cc): records of --pipeline values written (one
    MSET) and read (one MGET) through the Redis store by --clients threads;
  - redis-benchmark -t set,get -d SIZE -P PIPELINE -c CLIENTS (the peer: the same value size,
    the same number of values in flight per connection, the same number of connections).
Prints one JSON line per (mode, size, op, impl) with the median of the reps (bench "redis",
impl "tierkv" or "redis-benchmark"; see bench/redis/README.md) and, on stderr, the table with
tierkv's share of the peer. Beside the rate, each line has the CPU seconds per GB moved of the
client and of the servers, which a busy shared machine disturbs less than the rate. Standard
library only.
"""
import argparse
import datetime
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 55000:
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + 10000))  # the cluster bus port
                return port
            except OSError:
                pass


def card_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                return " ".join(name.split()[:2]) if name.startswith("AMD EPYC") else name
    except OSError:
        pass
    return "cpu"


class Servers:
    """redis-server processes in a temporary directory, killed and removed on close()."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tierkv-redis-bench-")
        self.procs = []

    def start(self, port, cluster=False):
        d = os.path.join(self.dir, str(port))
        os.makedirs(d)
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", d, "--logfile", os.path.join(d, "log")]
        if cluster:
            argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-require-full-coverage", "no"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        for _ in range(500):
            r = subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True,
                               text=True)
            if r.stdout.strip() == "PONG":
                return proc.pid
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {port} did not start (log: {d}/log)")

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_cluster(servers, n=3):
    ports, pids = [], []
    for _ in range(n):
        ports.append(free_port())
        pids.append(servers.start(ports[-1], cluster=True))
    subprocess.run(["redis-cli", "--cluster", "create"] +
                   [f"127.0.0.1:{p}" for p in ports] +
                   ["--cluster-replicas", "0", "--cluster-yes"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        info = [subprocess.run(["redis-cli", "-p", str(p), "CLUSTER", "INFO"],
                               capture_output=True, text=True).stdout for p in ports]
        if all("cluster_state:ok" in i and f"cluster_known_nodes:{n}" in i for i in info):
            return ports, pids
        time.sleep(0.05)
    raise RuntimeError("the cluster did not reach state ok")


def proc_cpu(pids):
    """CPU seconds (user + system) the processes `pids` have used."""
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_tierkv(args, target, size, op):
    port, pids, cluster = target
    cmd = [args.bench_bin, "--port", str(port), "--value-bytes", str(size),
           "--values", str(args.pipeline), "--threads", str(args.clients),
           "--records", str(args.records), "--seconds", str(args.seconds), "--card", args.card,
           "--op", op, "--server-pids", ",".join(str(p) for p in pids)]
    if cluster:
        cmd.append("--cluster")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = [json.loads(l) for l in out.splitlines() if l.startswith("{")][0]
    return {k: r[k] for k in ("ops_per_s", "client_cpu_s_per_gb", "server_cpu_s_per_gb")}


def run_peer(args, target, size, op, requests):
    """redis-benchmark -t `op`: values per second and CPU seconds per GB (client, servers)."""
    port, pids, cluster = target
    # -r: the same number of distinct values as redis_bench cycles over (threads x records x
    # values), so that both work on the same working set (one hot key would stay in cache).
    keyspace = args.clients * args.records * args.pipeline
    cmd = ["redis-benchmark", "-p", str(port), "-t", op, "-d", str(size), "-r", str(keyspace),
           "-P", str(args.pipeline), "-c", str(args.clients), "-n", str(requests), "--csv"]
    if args.peer_threads > 1:
        cmd += ["--threads", str(args.peer_threads)]
    if cluster:
        cmd.append("--cluster")
    for attempt in range(3):  # redis-benchmark --cluster now and then gives up ("All clients
        c0, s0, t0 = children_cpu(), proc_cpu(pids), time.time()  # disconnected"): retry
        r = subprocess.run(cmd, capture_output=True, text=True)
        c1, s1, took = children_cpu(), proc_cpu(pids), time.time() - t0
        if r.returncode == 0:
            break
        print(f"# redis-benchmark failed (exit {r.returncode}): {r.stderr.strip()[-200:]}",
              file=sys.stderr)
    else:
        return None
    out = r.stdout
    rps = None
    for line in out.splitlines():
        f = [x.strip('"') for x in line.split(",")]
        if len(f) > 1 and f[0] == op.upper():
            rps = float(f[1])
    if rps is None:
        raise RuntimeError(f"no {op.upper()} line from redis-benchmark: {out!r}")
    gb = requests * size / 1e9
    return {"ops_per_s": rps, "client_cpu_s_per_gb": (c1 - c0) / gb,
            "server_cpu_s_per_gb": (s1 - s0) / gb, "took": took}


def median_record(runs, base):
    med = lambda k: statistics.median(r[k] for r in runs)
    ops = med("ops_per_s")
    rec = dict(base)
    rec.update(ops_per_s=round(ops, 1), gbps=round(ops * base["value_bytes"] / 1e9, 4),
               client_cpu_s_per_gb=round(med("client_cpu_s_per_gb"), 3),
               server_cpu_s_per_gb=round(med("server_cpu_s_per_gb"), 3),
               reps=len(runs), gbps_runs=[round(r["ops_per_s"] * base["value_bytes"] / 1e9, 4)
                                          for r in runs])
    return rec


def measure_mode(args, target, mode, date, out):
    for size in args.sizes:
        for op in ("set", "get"):
            # One uncounted peer run sizes -n so that a peer run lasts about --seconds.
            requests = max(400, int(args.seconds * 0.25e9 / size))
            first = run_peer(args, target, size, op, requests)
            took = first["took"] if first else args.seconds
            requests = max(400, int(requests * args.seconds / max(took, 0.05)))
            tk, peer = [], []
            for rep in range(args.reps):  # alternately, so that both see the same machine
                if rep % 2 == 0:
                    tk.append(run_tierkv(args, target, size, op))
                p = run_peer(args, target, size, op, requests)
                if p:
                    peer.append(p)
                if rep % 2 == 1:
                    tk.append(run_tierkv(args, target, size, op))
            common = {"bench": "redis", "mode": mode, "op": op, "value_bytes": size,
                      "pipeline": args.pipeline, "clients": args.clients, "card": args.card,
                      "date": date}
            a = median_record(tk, dict(common, impl="tierkv"))
            peer_base = dict(common, impl="redis-benchmark", threads=args.peer_threads)
            if not peer:
                peer_base["error"] = "redis-benchmark failed every run"
                for rec in (a, peer_base):
                    out.append(json.dumps(rec))
                    print(out[-1], flush=True)
                print(f"{mode:8s} {size:>8d} {op:3s}  tierkv {a['gbps']:7.3f} GB/s   "
                      "redis-benchmark failed every run", file=sys.stderr, flush=True)
                continue
            b = median_record(peer, peer_base)
            for rec in (a, b):
                line = json.dumps(rec)
                print(line, flush=True)
                out.append(line)
            print(f"{mode:8s} {size:>8d} {op:3s}  tierkv {a['gbps']:7.3f} GB/s "
                  f"(cpu/GB client {a['client_cpu_s_per_gb']:.2f} s, server "
                  f"{a['server_cpu_s_per_gb']:.2f} s)   redis-benchmark {b['gbps']:7.3f} GB/s "
                  f"(client {b['client_cpu_s_per_gb']:.2f} s, server "
                  f"{b['server_cpu_s_per_gb']:.2f} s)   tierkv/peer {a['gbps'] / b['gbps']:.2f}",
                  file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="16384,65536,262144,1048576",
                    help="value sizes in bytes, comma-separated")
    ap.add_argument("--pipeline", type=int, default=8, help="values per record / -P")
    ap.add_argument("--clients", type=int, default=2, help="threads / -c connections")
    ap.add_argument("--peer-threads", type=int, default=1, help="redis-benchmark --threads")
    ap.add_argument("--records", type=int, default=8, help="records each tierkv thread cycles over")
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds per measured phase")
    ap.add_argument("--reps", type=int, default=3, help="alternating runs of each; medians kept")
    ap.add_argument("--modes", default="single,cluster")
    ap.add_argument("--bench-bin", default="", help="redis_bench (default: build*/bench/redis/)")
    ap.add_argument("--card", default=card_name())
    ap.add_argument("--out", default="", help="also write the JSON lines here")
    args = ap.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if not args.bench_bin:
        for d in ("build", "build-redis-bench"):
            cand = os.path.join(ROOT, d, "bench/redis/redis_bench")
            if os.access(cand, os.X_OK):
                args.bench_bin = cand
                break
    for prog in ("redis-server", "redis-cli", "redis-benchmark"):
        if shutil.which(prog) is None:
            sys.exit(f"run.py: {prog} is not on PATH (scripts/setup.sh installs redis-server "
                     "and redis-tools)")
    if not args.bench_bin:
        sys.exit("run.py: no redis_bench binary; build the redis_bench target or pass --bench-bin")
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    print(f"# load average before: {os.getloadavg()}", file=sys.stderr)
    out = []
    servers = Servers()
    try:
        for mode in args.modes.split(","):
            if mode == "single":
                port = free_port()
                target = (port, [servers.start(port)], False)
            else:
                ports, pids = start_cluster(servers)
                target = (ports[0], pids, True)
            measure_mode(args, target, mode, date, out)
    finally:
        servers.close()
    print(f"# load average after: {os.getloadavg()}", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
