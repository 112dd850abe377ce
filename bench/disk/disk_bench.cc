// disk_bench: writes and reads N chunk records through the disk tier and reports GB/s both ways,
// as JSON Lines (bench "disk", impl "tierkv"; the schema of bench/peers/README.md). The default
// record is a Llama-3.1-8B chunk of 256 tokens: 32 layers of 1 MiB (32 MiB). bench/disk/run.sh
// runs it beside fio on the same file system.
//
// Each write encodes the record header (XXH3 over the payload) and writes header and payload with
// O_DIRECT (where the file system allows it), then syncs per --sync and renames; each read reads
// and verifies the whole record (header, identity, every layer's checksum). Timed: the store calls
// only; the payload is filled once per thread before the clock starts.
//
// --steady 1 measures a full cache: the store's budget is N records, filled with N other records
// before the clock starts, so that every timed write evicts one (and takes over its file, as the
// store does when the sizes match); each rep writes N new keys. --steady 0 (the default) writes
// into an empty directory, each rep's records erased after it.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "core/counter_rng.h"
#include "core/record.h"
#include "tierkv/disk_store.h"

namespace {

struct Args {
  std::string dir;
  int records = 16;
  int layers = 32;
  std::uint64_t layer_kib = 1024;
  int reps = 3;
  int concurrency = 1;
  int read_concurrency = 0;  // 0: as concurrency
  std::string sync = "full";
  std::string io = "auto";
  int threads = 4;
  int queue_depth = 32;
  std::uint64_t block_kib = 1024;
  std::string card = "cpu";
  bool verify_while_reading = true;
  bool steady = false;
};

void usage() {
  std::fprintf(
      stderr,
      "usage: disk_bench --dir DIR [--records N=16] [--layers L=32] [--layer-kib K=1024]\n"
      "  [--reps R=3] [--concurrency C=1] [--sync none|file|full] [--io auto|io_uring|"
      "threads]\n  [--threads T=4] [--queue-depth Q=32] [--block-kib B=1024]\n"
      "  [--verify-while-reading 0|1=1] [--steady 0|1=0] [--read-concurrency C=concurrency]\n"
      "  [--card NAME]\n"
      "Writes N records of L x K KiB into a disk store in DIR (records it made are "
      "erased first and at the end), reads them back verified, R times; prints JSON "
      "Lines.\n");
}

bool parse(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) return false;
    const char* v = argv[++i];
    if (k == "--dir")
      a->dir = v;
    else if (k == "--records")
      a->records = std::atoi(v);
    else if (k == "--layers")
      a->layers = std::atoi(v);
    else if (k == "--layer-kib")
      a->layer_kib = std::strtoull(v, nullptr, 10);
    else if (k == "--reps")
      a->reps = std::atoi(v);
    else if (k == "--concurrency")
      a->concurrency = std::atoi(v);
    else if (k == "--sync")
      a->sync = v;
    else if (k == "--io")
      a->io = v;
    else if (k == "--threads")
      a->threads = std::atoi(v);
    else if (k == "--queue-depth")
      a->queue_depth = std::atoi(v);
    else if (k == "--block-kib")
      a->block_kib = std::strtoull(v, nullptr, 10);
    else if (k == "--card")
      a->card = v;
    else if (k == "--read-concurrency")
      a->read_concurrency = std::atoi(v);
    else if (k == "--steady")
      a->steady = std::atoi(v) != 0;
    else if (k == "--verify-while-reading")
      a->verify_while_reading = std::atoi(v) != 0;
    else
      return false;
  }
  if (a->read_concurrency == 0) a->read_concurrency = a->concurrency;
  return !a->dir.empty() && a->records > 0 && a->layers > 0 && a->layer_kib > 0 && a->reps > 0 &&
         a->concurrency > 0 && a->read_concurrency > 0;
}

tierkv::RecordId record(int i, const Args& a) {
  tierkv::RecordId id;
  for (std::size_t b = 0; b < 32; ++b) {
    id.identity[b] = std::uint8_t(b + 1);
    id.salt_tag[b] = std::uint8_t(2 * b);
    id.chunk_key.bytes[b] = std::uint8_t(tierkv::mix64(std::uint64_t(i) * 131 + b));
  }
  id.tokens = 256;
  id.num_layers = std::uint32_t(a.layers);
  id.layer_bytes = a.layer_kib << 10;
  return id;
}

std::string today() {
  const std::time_t t = std::time(nullptr);
  char s[16];
  std::strftime(s, sizeof s, "%Y-%m-%d", std::gmtime(&t));
  return s;
}

// Runs `op` on records 0..N-1 from `threads` threads (record i on thread i % threads); seconds.
template <typename Op>
double timed(const Args& a, int threads, Op op, std::atomic<int>* failures) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      for (int i = t; i < a.records; i += threads)
        if (!op(t, i)) ++*failures;
    });
  for (auto& t : ts)
    t.join();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (!parse(argc, argv, &a)) {
    usage();
    return 2;
  }
  tierkv::DiskStoreOptions o;
  o.directory = a.dir;
  o.sync = a.sync == "none"   ? tierkv::DiskSync::kNone
           : a.sync == "file" ? tierkv::DiskSync::kFile
                              : tierkv::DiskSync::kFileAndDirectory;
  o.io = a.io == "io_uring"  ? tierkv::IoBackend::kIoUring
         : a.io == "threads" ? tierkv::IoBackend::kThreads
                             : tierkv::IoBackend::kAuto;
  o.io_threads = a.threads;
  o.queue_depth = a.queue_depth;
  o.io_block_bytes = a.block_kib << 10;
  o.verify_while_reading = a.verify_while_reading;
  const tierkv::RecordId shape = record(0, a);
  const std::size_t bytes = shape.payload_bytes();
  if (a.steady)
    o.budget_bytes =
        std::uint64_t(a.records) * (tierkv::record_header_size(shape.num_layers) + bytes);
  auto opened = tierkv::open_disk_store(o);
  if (!opened.ok()) {
    std::fprintf(stderr, "disk_bench: %s\n", opened.status().to_string().c_str());
    return 1;
  }
  tierkv::Store& store = **opened;
  std::fprintf(stderr, "disk_bench: %s\n", store.capabilities().description.c_str());
  std::vector<std::uint8_t*> bufs(std::size_t(std::max(a.concurrency, a.read_concurrency)));
  for (auto& b : bufs) {
    b = static_cast<std::uint8_t*>(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096));
    for (std::size_t k = 0; k < bytes; k += 8) {
      const std::uint64_t w = tierkv::mix64(k);
      std::memcpy(b + k, &w, std::min<std::size_t>(8, bytes - k));
    }
  }
  // Keys of rep r (steady: r + 1; the fill uses 0) are key(r, i).
  const auto key = [&](int r, int i) { return record(r * 1000003 + i, a); };
  const auto erase_all = [&] {
    for (int r = 0; r <= a.reps; ++r)
      for (int i = 0; i < a.records; ++i)
        store.erase(key(r, i)).ignore();
  };
  erase_all();
  std::atomic<int> failures{0};
  if (a.steady) {
    for (int i = 0; i < a.records; ++i)
      if (!store.write(key(0, i), {bufs[0], bytes}).ok()) ++failures;
  }

  const double total = double(bytes) * a.records;
  std::vector<double> wr, rd;
  for (int r = 0; r < a.reps; ++r) {
    const int k = a.steady ? r + 1 : 0;
    wr.push_back(total /
                 timed(
                     a, a.concurrency,
                     [&](int t, int i) {
                       return store.write(key(k, i), {bufs[std::size_t(t)], bytes}).ok();
                     },
                     &failures) /
                 1e9);
    rd.push_back(total /
                 timed(
                     a, a.read_concurrency,
                     [&](int t, int i) {
                       return store.read(key(k, i), {bufs[std::size_t(t)], bytes}).ok();
                     },
                     &failures) /
                 1e9);
    if (!a.steady)
      for (int i = 0; i < a.records; ++i)
        store.erase(key(k, i)).ignore();
  }
  const std::uint64_t evictions = store.stats().evictions;
  erase_all();
  if (failures.load() != 0) {
    std::fprintf(stderr, "disk_bench: %d operations failed\n", failures.load());
    return 1;
  }
  const std::string io = store.capabilities().description;
  const auto line = [&](const char* op, int threads, std::vector<double> g) {
    std::sort(g.begin(), g.end());
    std::printf(
        "{\"bench\": \"disk\", \"impl\": \"tierkv\", \"op\": \"%s\", \"card\": \"%s\", "
        "\"date\": \"%s\", \"bytes\": %.0f, \"record_bytes\": %zu, \"records\": %d, "
        "\"layers\": %d, \"concurrency\": %d, \"sync\": \"%s\", \"block_bytes\": %llu, "
        "\"verify_while_reading\": %s, \"steady\": %s, \"evictions\": %llu, \"gbps\": %.4f, "
        "\"gbps_reps\": [",
        op, a.card.c_str(), today().c_str(), total, bytes, a.records, a.layers, threads,
        a.sync.c_str(), static_cast<unsigned long long>(a.block_kib << 10),
        a.verify_while_reading ? "true" : "false", a.steady ? "true" : "false",
        static_cast<unsigned long long>(evictions), g[g.size() / 2]);
    for (std::size_t i = 0; i < g.size(); ++i)
      std::printf("%s%.4f", i ? ", " : "", g[i]);
    std::printf("], \"store\": \"%s\"}\n", io.c_str());
  };
  line("write", a.concurrency, wr);
  line("read", a.read_concurrency, rd);
  for (auto* b : bufs)
    std::free(b);
  return 0;
}
