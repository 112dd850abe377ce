#!/usr/bin/env python3
"""The Redis tier beside redis-benchmark at the same value sizes, on loopback.

Starts its own servers (one redis-server, then a three-node cluster made with
`redis-cli --cluster create`) on free ports, and for each value size runs, alternately and
--reps times each:
  - redis_bench (bench/redis/redis_bench.cc): records of --pipeline values written (one
    MULTI/EXEC) and read (one MGET) through the Redis store by --clients threads;
  - redis-benchmark -t set,get -d SIZE -P PIPELINE -c CLIENTS (the peer: the same value size,
    the same number of values in flight per connection, the same number of connections).
Prints one JSON line per (mode, size, op, impl) with the median of the reps (bench "redis",
impl "tierkv" or "redis-benchmark"; see bench/redis/README.md) and, on stderr, the table with
tierkv's share of the peer. Standard library only.
"""
import argparse
import datetime
import json
import os
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
        self.procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL))
        for _ in range(500):
            r = subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True,
                               text=True)
            if r.stdout.strip() == "PONG":
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {port} did not start (log: {d}/log)")

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_cluster(servers, n=3):
    ports = []
    for _ in range(n):
        ports.append(free_port())
        servers.start(ports[-1], cluster=True)
    subprocess.run(["redis-cli", "--cluster", "create"] +
                   [f"127.0.0.1:{p}" for p in ports] +
                   ["--cluster-replicas", "0", "--cluster-yes"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        info = [subprocess.run(["redis-cli", "-p", str(p), "CLUSTER", "INFO"],
                               capture_output=True, text=True).stdout for p in ports]
        if all("cluster_state:ok" in i and f"cluster_known_nodes:{n}" in i for i in info):
            return ports
        time.sleep(0.05)
    raise RuntimeError("the cluster did not reach state ok")


def run_tierkv(args, port, cluster, size):
    cmd = [args.bench_bin, "--port", str(port), "--value-bytes", str(size),
           "--values", str(args.pipeline), "--threads", str(args.clients),
           "--records", str(args.records), "--seconds", str(args.seconds), "--card", args.card]
    if cluster:
        cmd.append("--cluster")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return {r["op"]: r for r in (json.loads(l) for l in out.splitlines() if l.startswith("{"))}


def run_peer(args, port, cluster, size, requests):
    cmd = ["redis-benchmark", "-p", str(port), "-t", "set,get", "-d", str(size),
           "-P", str(args.pipeline), "-c", str(args.clients), "-n", str(requests), "--csv"]
    if args.peer_threads > 1:
        cmd += ["--threads", str(args.peer_threads)]
    if cluster:
        cmd.append("--cluster")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rps = {}
    for line in out.splitlines():
        f = [x.strip('"') for x in line.split(",")]
        if len(f) > 1 and f[0] in ("SET", "GET"):
            rps[f[0].lower()] = float(f[1])
    return rps


def median_record(runs, base):
    ops = statistics.median(r["ops_per_s"] for r in runs)
    rec = dict(base)
    rec.update(ops_per_s=round(ops, 1), gbps=round(ops * base["value_bytes"] / 1e9, 4),
               reps=len(runs), gbps_runs=[round(r["ops_per_s"] * base["value_bytes"] / 1e9, 4)
                                          for r in runs])
    return rec


def measure_mode(args, port, mode, date, out):
    cluster = mode == "cluster"
    for size in args.sizes:
        tk = {"set": [], "get": []}
        peer = {"set": [], "get": []}
        # One uncounted peer run sizes -n so that a peer run takes about as long as tierkv's.
        requests = max(200, int(args.seconds * 0.5e9 / size))
        t0 = time.time()
        run_peer(args, port, cluster, size, requests)
        requests = max(200, int(requests * 2 * args.seconds / max(time.time() - t0, 0.05)))
        for _ in range(args.reps):
            r = run_tierkv(args, port, cluster, size)
            for op in tk:
                tk[op].append({"ops_per_s": r[op]["ops_per_s"]})
            t0 = time.time()
            p = run_peer(args, port, cluster, size, requests)
            took = time.time() - t0
            for op in peer:
                peer[op].append({"ops_per_s": p[op]})
            requests = max(200, int(requests * 2 * args.seconds / max(took, 0.05)))
        for op in ("set", "get"):
            common = {"bench": "redis", "mode": mode, "op": op, "value_bytes": size,
                      "pipeline": args.pipeline, "clients": args.clients, "card": args.card,
                      "date": date}
            a = median_record(tk[op], dict(common, impl="tierkv"))
            b = median_record(peer[op], dict(common, impl="redis-benchmark",
                                             threads=args.peer_threads))
            for rec in (a, b):
                line = json.dumps(rec)
                print(line)
                out.append(line)
            print(f"{mode:8s} {size:>8d} {op:3s}  tierkv {a['gbps']:7.3f} GB/s "
                  f"{a['ops_per_s']:9.1f}/s   redis-benchmark {b['gbps']:7.3f} GB/s "
                  f"{b['ops_per_s']:9.1f}/s   tierkv/peer {a['gbps'] / b['gbps']:.2f}",
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
                servers.start(port)
            else:
                port = start_cluster(servers)[0]
            measure_mode(args, port, mode, date, out)
    finally:
        servers.close()
    print(f"# load average after: {os.getloadavg()}", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
