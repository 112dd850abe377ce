// Throughput of the Redis tier: records of `--values` values of `--value-bytes` each (one record =
// one MSET on write, one MGET on read, so a record is a pipeline of that many values) written
// and read through open_redis_store() by `--threads` threads for `--seconds` each, against a
// running server (--port) or cluster (--cluster). Prints one JSON line per operation (bench
// "redis", impl "tierkv"; schema in bench/redis/README.md). bench/redis/run.sh starts the servers
// and runs redis-benchmark beside it.
//
// The working set cycles over `--records` records per thread, so the server's memory stays at
// threads x records x values x value-bytes. Every read is verified (header and layer checksums)
// as it always is; the bytes are not compared again here. CPU seconds per GB of this process and
// of the servers named by --server-pids are reported too: on a shared machine they say more
// about cost than the wall-clock rate does.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tierkv/redis_store.h"

namespace tierkv {
namespace {

using Clock = std::chrono::steady_clock;

struct Flags {
  std::string host = "127.0.0.1";
  int port = 6379;
  bool cluster = false;
  std::uint64_t value_bytes = 1 << 20;
  std::uint32_t values = 8;
  int threads = 2;
  int records = 8;
  double seconds = 3;
  std::string card = "cpu";
  std::string op = "both";       // set, get or both
  std::vector<int> server_pids;  // whose CPU time to report
  std::string mode_name;
};

std::string utc_date() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d", &tm);
  return buf;
}

RecordId record(int thread, int i, const Flags& f) {
  RecordId id;
  for (std::size_t b = 0; b < 32; ++b) {
    id.identity[b] = std::uint8_t(0xb0 + b);
    id.salt_tag[b] = std::uint8_t(b);
  }
  std::mt19937_64 g(std::uint64_t(thread) * 1000003 + std::uint64_t(i));
  for (auto& b : id.chunk_key.bytes)
    b = std::uint8_t(g());
  id.tokens = 256;
  id.num_layers = f.values;
  id.layer_bytes = f.value_bytes;
  return id;
}

// CPU seconds (user + system) process `pid` has used, from /proc; 0 when unreadable.
double proc_cpu_seconds(int pid) {
  std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (f == nullptr) return 0;
  char buf[1024] = {};
  std::size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  const char* p = std::strrchr(buf, ')');  // fields after the command name
  if (n == 0 || p == nullptr) return 0;
  unsigned long long utime = 0, stime = 0;
  // state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
  if (std::sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) !=
      2)
    return 0;
  return double(utime + stime) / double(::sysconf(_SC_CLK_TCK));
}

double self_cpu_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

struct Phase {
  std::uint64_t records = 0, failures = 0;
  double seconds = 0;
  double client_cpu = 0, server_cpu = 0;  // CPU seconds during the phase
};

// Runs `op` on every thread for f.seconds, each thread cycling over its records.
template <typename Op>
Phase run_phase(const Flags& f, Op op) {
  std::atomic<std::uint64_t> done{0}, failed{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  auto server_cpu = [&] {
    double c = 0;
    for (int pid : f.server_pids)
      c += proc_cpu_seconds(pid);
    return c;
  };
  const double client0 = self_cpu_seconds(), server0 = server_cpu();
  auto t0 = Clock::now();
  for (int t = 0; t < f.threads; ++t)
    threads.emplace_back([&, t] {
      std::vector<std::uint8_t> buf(std::size_t(f.values) * f.value_bytes);
      std::mt19937_64 g(std::uint64_t(t) + 7);
      for (std::size_t k = 0; k < buf.size(); k += 8) {
        std::uint64_t w = g();
        for (std::size_t j = 0; j < 8 && k + j < buf.size(); ++j)
          buf[k + j] = std::uint8_t(w >> (8 * j));
      }
      std::uint64_t n = 0, bad = 0;
      for (int i = 0; !stop; i = (i + 1) % f.records) {
        Status s = op(record(t, i, f), buf);
        ++n;
        bad += !s.ok();
        if (bad == 1 && !s.ok()) std::fprintf(stderr, "redis_bench: %s\n", s.to_string().c_str());
      }
      done += n;
      failed += bad;
    });
  std::this_thread::sleep_for(std::chrono::duration<double>(f.seconds));
  stop = true;
  for (auto& t : threads)
    t.join();
  Phase p;
  p.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  p.client_cpu = self_cpu_seconds() - client0;
  p.server_cpu = server_cpu() - server0;
  p.records = done;
  p.failures = failed;
  return p;
}

void print(const Flags& f, const char* op, const Phase& p, const std::string& date) {
  const double values = double(p.records - p.failures) * f.values;
  const double bytes = values * double(f.value_bytes);
  std::printf(
      "{\"bench\": \"redis\", \"impl\": \"tierkv\", \"mode\": \"%s\", \"op\": \"%s\", "
      "\"value_bytes\": %llu, \"pipeline\": %u, \"clients\": %d, \"ops_per_s\": %.1f, "
      "\"records_per_s\": %.1f, \"gbps\": %.4f, \"failures\": %llu, \"seconds\": %.2f, "
      "\"client_cpu_s_per_gb\": %.3f, \"server_cpu_s_per_gb\": %.3f, "
      "\"card\": \"%s\", \"date\": \"%s\"}\n",
      f.mode_name.c_str(), op, (unsigned long long)f.value_bytes, f.values, f.threads,
      values / p.seconds, double(p.records - p.failures) / p.seconds, bytes / p.seconds / 1e9,
      (unsigned long long)p.failures, p.seconds, p.client_cpu / (bytes / 1e9),
      f.server_pids.empty() ? 0.0 : p.server_cpu / (bytes / 1e9), f.card.c_str(), date.c_str());
  std::fflush(stdout);
}

int run(const Flags& f) {
  RedisStoreOptions o;
  if (f.cluster) {
    o.cluster_seeds = {{f.host, f.port}};
  } else {
    o.server = {f.host, f.port};
  }
  o.max_value_bytes = std::max<std::uint64_t>(f.value_bytes, 4096);
  o.pool_size = f.threads;
  o.command_timeout = std::chrono::milliseconds(5000);
  o.connect_timeout = std::chrono::milliseconds(1000);
  auto store = open_redis_store(o);
  if (!store.ok()) {
    std::fprintf(stderr, "redis_bench: %s\n", store.status().to_string().c_str());
    return 1;
  }
  Store& s = **store;
  const std::string date = utc_date();
  auto write = [&](const RecordId& id, std::vector<std::uint8_t>& b) { return s.write(id, b); };
  auto read = [&](const RecordId& id, std::vector<std::uint8_t>& b) { return s.read(id, b); };
  // Write the whole working set, warm up (connections, server allocations), then measure.
  {
    std::vector<std::uint8_t> buf(std::size_t(f.values) * f.value_bytes, 0x5a);
    for (int t = 0; t < f.threads; ++t)
      for (int i = 0; i < f.records; ++i) {
        Status st = s.write(record(t, i, f), buf);
        if (!st.ok()) {
          std::fprintf(stderr, "redis_bench: writing the working set: %s\n",
                       st.to_string().c_str());
          return 1;
        }
      }
  }
  Flags warm = f;
  warm.seconds = std::min(0.5, f.seconds);
  run_phase(warm, write);
  std::uint64_t failures = 0;
  if (f.op != "get") {
    Phase w = run_phase(f, write);
    print(f, "set", w, date);
    failures += w.failures;
  }
  if (f.op != "set") {
    Phase r = run_phase(f, read);
    print(f, "get", r, date);
    failures += r.failures;
  }
  return failures == 0 ? 0 : 2;
}

}  // namespace
}  // namespace tierkv

int main(int argc, char** argv) {
  tierkv::Flags f;
  CLI::App app{"Redis tier throughput: records written and read through the Redis store"};
  app.add_option("--host", f.host, "server or cluster seed address");
  app.add_option("--port", f.port, "server or cluster seed port");
  app.add_flag("--cluster", f.cluster, "the port is a Redis Cluster seed");
  app.add_option("--value-bytes", f.value_bytes, "bytes of one value (one layer of a record)");
  app.add_option("--values", f.values, "values per record: the pipeline depth of one call");
  app.add_option("--threads", f.threads, "threads calling the store at once (connections)");
  app.add_option("--records", f.records, "records each thread cycles over");
  app.add_option("--seconds", f.seconds, "seconds per measured phase");
  app.add_option("--card", f.card, "machine name written into the results");
  app.add_option("--op", f.op, "set, get or both (get writes the working set first, untimed)")
      ->check(CLI::IsMember({"set", "get", "both"}));
  app.add_option("--server-pids", f.server_pids, "redis-server processes whose CPU time to report")
      ->delimiter(',');
  CLI11_PARSE(app, argc, argv);
  f.mode_name = f.cluster ? "cluster" : "single";
  return tierkv::run(f);
}
