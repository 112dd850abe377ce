// The Redis tier against real redis-server processes that the tests start on free loopback ports
// (src/tiers/redis/testing/local_redis.h): round trips with every byte checked, misses, erase,
// TTL, AUTH, values split at max_value_bytes, threads, two stores and a second process sharing one
// server; chaos (the server killed, paused, flushed, restarted mid-workload; values corrupted or
// replaced by another identity's); a three-node cluster (spread, MOVED, ASK, a node lost).
// Skipped, saying why, when redis-server or redis-cli is not on PATH.
#include "tierkv/redis_store.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "store_checks.h"
#include "tiers/redis/flat_reader.h"
#include "tiers/redis/layout.h"
#include "tiers/redis/slots.h"
#include "tiers/redis/testing/local_redis.h"

namespace tierkv {
namespace {

using namespace std::chrono_literals;
using redis::RecordLayout;
using redis::reply_text;
using redis::testing::LocalRedis;
using redis::testing::LocalRedisCluster;
using redis::testing::LocalRedisOptions;
using Clock = std::chrono::steady_clock;

#define SKIP_WITHOUT_REDIS()                                                     \
  do {                                                                           \
    std::string missing_ = redis::testing::redis_programs_missing();             \
    if (!missing_.empty()) GTEST_SKIP() << "Redis tier tests need " << missing_; \
  } while (0)

#define ASSERT_OK(expr)                                      \
  do {                                                       \
    ::tierkv::Status s_ = (expr);                            \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_.to_string(); \
  } while (0)
#define EXPECT_OK(expr)                                      \
  do {                                                       \
    ::tierkv::Status s_ = (expr);                            \
    EXPECT_TRUE(s_.ok()) << #expr << ": " << s_.to_string(); \
  } while (0)

constexpr auto kCommandTimeout = 300ms;
// How far past its timeout a call may return on a loaded 2-core machine (sanitizers included).
constexpr auto kTimeoutSlack = 400ms;

// ---- reliability figures, summed over the chaos tests and printed at the end -----------------

struct Figures {
  std::atomic<std::uint64_t> rounds{0}, requests{0}, hits{0}, wrong_bytes{0}, late_calls{0};
  std::array<std::atomic<std::uint64_t>, std::size_t(MissReason::kCount)> misses{};
  std::atomic<std::int64_t> max_call_us{0};

  void add_misses(const StoreStats& s) {
    for (std::size_t i = 0; i < s.misses.size(); ++i)
      misses[i] += s.misses[i];
  }
  std::string line() const {
    std::string t = "rounds=" + std::to_string(rounds) + " requests=" + std::to_string(requests) +
                    " hits=" + std::to_string(hits) + " misses:";
    for (std::size_t i = 0; i < misses.size(); ++i)
      t += std::string(" ") + miss_reason_name(MissReason(i)) + "=" + std::to_string(misses[i]);
    t += " wrong_bytes=" + std::to_string(wrong_bytes) +
         " max_call_ms=" + std::to_string(max_call_us / 1000) +
         " calls_past_timeout=" + std::to_string(late_calls);
    return t;
  }
};
Figures g_total;

class PrintFigures : public ::testing::Environment {
 public:
  void TearDown() override {
    if (g_total.requests > 0)
      std::printf("reliability: all redis chaos: %s\n", g_total.line().c_str());
  }
};
[[maybe_unused]] const auto* g_env = ::testing::AddGlobalTestEnvironment(new PrintFigures);

// ---- helpers ---------------------------------------------------------------------------------

RedisStoreOptions options_for(int port) {
  RedisStoreOptions o;
  o.server = {"127.0.0.1", port};
  o.connect_timeout = 100ms;
  o.command_timeout = kCommandTimeout;
  o.backoff_min = 10ms;
  o.backoff_max = 200ms;
  return o;
}

std::unique_ptr<Store> open_store(const RedisStoreOptions& o) {
  auto s = open_redis_store(o);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return s.ok() ? std::move(s).value() : nullptr;
}

std::unique_ptr<LocalRedis> start_server(const LocalRedisOptions& o = {}) {
  auto r = LocalRedis::start(o);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? std::move(r).value() : nullptr;
}

std::uint64_t seed_of(const RecordId& id) {
  return id.chunk_key.hash() ^ id.identity[0];
}

std::vector<std::uint8_t> payload_of(const RecordId& id) {
  std::vector<std::uint8_t> p(id.payload_bytes());
  test::fill_payload(seed_of(id), p);
  return p;
}

Status write_record(Store& s, const RecordId& id) {
  return s.write(id, payload_of(id));
}

// Reads `id`; on a hit, adds the bytes that differ from what was written to *wrong.
Status read_record(Store& s, const RecordId& id, std::uint64_t* wrong = nullptr) {
  std::vector<std::uint8_t> got(id.payload_bytes());
  Status st = s.read(id, got);
  if (st.ok()) {
    std::uint64_t w = test::wrong_bytes(seed_of(id), got);
    if (wrong) *wrong += w;
    EXPECT_EQ(w, 0u) << "wrong bytes served";
  }
  return st;
}

std::string layout_key(const RecordId& id, std::uint64_t max_value, std::size_t v) {
  RecordLayout l(id, "tkv", RecordLayout::parts_for(id.layer_bytes, max_value));
  return v == SIZE_MAX ? l.header_key() : l.value_key(v);
}
std::string header_key(const RecordId& id) {
  return layout_key(id, 1 << 20, SIZE_MAX);
}

long long integer_of(const Result<redis::ReplyPtr>& r) {
  return r.ok() && r->get()->type == REDIS_REPLY_INTEGER ? r->get()->integer : -1;
}

// Threads reading and writing records of `shape(i)` until stopped, every call timed and every
// hit's bytes checked.
class Workload {
 public:
  Workload(Store& store, std::function<RecordId(int)> shape, int records, int threads,
           double write_share)
      : store_(store), shape_(std::move(shape)), records_(records), write_share_(write_share) {
    for (int t = 0; t < threads; ++t)
      threads_.emplace_back([this, t] { run(t); });
  }
  ~Workload() { stop(); }
  void stop() {
    stop_ = true;
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  std::uint64_t hits() const { return hits_; }
  // Waits until the workload hits again (after an outage); false after `limit`.
  bool wait_hits(std::chrono::milliseconds limit) {
    std::uint64_t h0 = hits_;
    auto until = Clock::now() + limit;
    while (Clock::now() < until) {
      if (hits_ > h0 + 2) return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }
  void add_to(Figures& f) const {
    f.requests += requests_;
    f.hits += hits_;
    f.wrong_bytes += wrong_;
    f.late_calls += late_;
    f.max_call_us = std::max<std::int64_t>(f.max_call_us, max_us_);
  }
  std::uint64_t wrong() const { return wrong_; }
  std::uint64_t late() const { return late_; }
  std::int64_t max_call_us() const { return max_us_; }

 private:
  void run(int t) {
    std::mt19937_64 rng(1234 + t);
    std::uint64_t wrong = 0;
    while (!stop_) {
      RecordId id = shape_(int(rng() % std::uint64_t(records_)));
      bool write = std::uniform_real_distribution<double>(0, 1)(rng) < write_share_;
      auto t0 = Clock::now();
      Status s = write ? write_record(store_, id) : read_record(store_, id, &wrong);
      auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
      ++requests_;
      if (!write && s.ok()) ++hits_;
      if (us > std::chrono::microseconds(kCommandTimeout + kTimeoutSlack).count()) ++late_;
      std::int64_t m = max_us_;
      while (us > m && !max_us_.compare_exchange_weak(m, us)) {
      }
    }
    wrong_ += wrong;
  }

  Store& store_;
  std::function<RecordId(int)> shape_;
  int records_;
  double write_share_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> requests_{0}, hits_{0}, wrong_{0}, late_{0};
  std::atomic<std::int64_t> max_us_{0};
  std::vector<std::thread> threads_;
};

// ---- the key layout and slots ------------------------------------------------------------------

TEST(RedisSlots, MatchRedisCluster) {
  EXPECT_EQ(redis::crc16("123456789"), 0x31C3);
  EXPECT_EQ(redis::key_slot("foo"), 12182);
  EXPECT_EQ(redis::key_slot("{user1000}.following"), redis::key_slot("{user1000}.followers"));
  EXPECT_EQ(redis::key_slot("foo{}{bar}"), redis::key_slot("foo{}{bar}"));
  EXPECT_EQ(redis::key_slot("{}x"), int(redis::crc16("{}x") & 16383));
  RecordId id = test::record_id(3, 4, 3 << 20);
  RecordLayout l(id, "tkv", RecordLayout::parts_for(id.layer_bytes, 1 << 20));
  EXPECT_EQ(l.parts_per_layer(), 3u);
  EXPECT_EQ(l.values(), 12u);
  for (std::size_t v = 0; v < l.values(); ++v)
    EXPECT_EQ(redis::key_slot(l.value_key(v)), l.slot());
  EXPECT_NE(l.header_key().find(":{" + id.chunk_key.hex() + "}:h"), std::string::npos);
  EXPECT_EQ(l.value_key(4), l.header_key().substr(0, l.header_key().size() - 1) + "1.1");
  EXPECT_FALSE(RecordLayout::valid_parts(10, 6));  // 2+2+2+2+2+0: an empty part
  EXPECT_TRUE(RecordLayout::valid_parts(10, 4));
}

// The flat reply reader over a socket pair, the stream cut into pieces of every kind.
TEST(RedisFlatReader, ParsesAnyChunkingAndDeliversIntoTheSink) {
  std::string big(40000, '\0');
  for (std::size_t i = 0; i < big.size(); ++i)
    big[i] = char(i * 7 + 3);
  const std::string stream = "+OK\r\n*4\r\n$5\r\nhello\r\n$-1\r\n$" + std::to_string(big.size()) +
                             "\r\n" + big + "\r\n:7\r\n:42\r\n-ERR no\r\n*0\r\n$3\r\nabc\r\n";
  for (std::size_t chunk : {std::size_t(1), std::size_t(7), std::size_t(4096), stream.size()}) {
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
    redis::FlatReader reader;
    std::vector<std::uint8_t> small(5), large(big.size());
    redis::ReplySink sink;
    sink.targets = {small, {}, large, {}};
    std::vector<redis::ReplyPtr> replies;
    for (std::size_t off = 0; off < stream.size(); off += chunk) {
      std::size_t n = std::min(chunk, stream.size() - off);
      ASSERT_EQ(::write(fds[1], stream.data() + off, n), ssize_t(n));
      bool would_block = false;
      while (!would_block && replies.size() < 6)
        ASSERT_OK(reader.pump(fds[0], &replies, 6, &sink, &would_block));
    }
    ::close(fds[0]);
    ::close(fds[1]);
    ASSERT_EQ(replies.size(), 6u) << "chunk " << chunk;
    EXPECT_TRUE(redis::is_status(replies[0].get(), "OK"));
    const redisReply* a = replies[1].get();
    ASSERT_EQ(a->type, REDIS_REPLY_ARRAY);
    ASSERT_EQ(a->elements, 4u);
    EXPECT_TRUE(redis::delivered(a->element[0]));
    EXPECT_EQ(std::string(small.begin(), small.end()), "hello");
    EXPECT_TRUE(redis::is_nil(a->element[1]));
    EXPECT_TRUE(redis::delivered(a->element[2]));
    EXPECT_TRUE(std::equal(large.begin(), large.end(), big.begin(),
                           [](std::uint8_t x, char y) { return x == std::uint8_t(y); }));
    EXPECT_EQ(a->element[3]->integer, 7);
    EXPECT_EQ(replies[2]->integer, 42);
    EXPECT_EQ(reply_text(replies[3].get()), "ERR no");
    EXPECT_EQ(replies[4]->type, REDIS_REPLY_ARRAY);
    EXPECT_EQ(replies[4]->elements, 0u);
    EXPECT_EQ(reply_text(replies[5].get()), "abc");  // no sink target: an ordinary string
    EXPECT_TRUE(reader.idle());
  }
  // A nested array is refused, not misread.
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
  const std::string nested = "*1\r\n*1\r\n:1\r\n";
  ASSERT_EQ(::write(fds[1], nested.data(), nested.size()), ssize_t(nested.size()));
  redis::FlatReader reader;
  std::vector<redis::ReplyPtr> replies;
  bool would_block = false;
  EXPECT_EQ(reader.pump(fds[0], &replies, 1, nullptr, &would_block).code(), StatusCode::kDataLoss);
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(RedisStoreOptionsTest, RefusesBadOptions) {
  RedisStoreOptions o = options_for(6379);
  o.connect_at_open = false;
  auto bad = [&](auto change) {
    RedisStoreOptions c = o;
    change(c);
    return open_redis_store(c).status().code();
  };
  EXPECT_EQ(bad([](auto& c) { c.server.port = 0; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& c) { c.max_value_bytes = 100; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& c) { c.key_prefix = "a{b}"; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& c) { c.command_timeout = 0ms; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& c) { c.backoff_max = 1ms; }), StatusCode::kInvalidArgument);
  EXPECT_TRUE(open_redis_store(o).ok());
}

// ---- one server ------------------------------------------------------------------------------

TEST(RedisStore, WriteReadMissEraseContains) {
  SKIP_WITHOUT_REDIS();
  auto server = start_server();
  ASSERT_TRUE(server);
  auto store = open_store(options_for(server->port()));
  ASSERT_TRUE(store);
  EXPECT_EQ(store->capabilities().name, "redis");
  EXPECT_TRUE(store->capabilities().shared);
  for (int i = 0; i < 16; ++i)
    ASSERT_OK(write_record(*store, test::record_id(i, 4, 65536)));
  std::uint64_t wrong = 0;
  for (int i = 0; i < 16; ++i)
    EXPECT_OK(read_record(*store, test::record_id(i, 4, 65536), &wrong));
  EXPECT_EQ(wrong, 0u);

  RecordId absent = test::record_id(99, 4, 65536);
  EXPECT_EQ(read_record(*store, absent).code(), StatusCode::kNotFound);
  EXPECT_EQ(*store->contains(absent), false);
  EXPECT_EQ(*store->contains(test::record_id(3, 4, 65536)), true);
  ASSERT_OK(store->erase(test::record_id(3, 4, 65536)));
  EXPECT_EQ(read_record(*store, test::record_id(3, 4, 65536)).code(), StatusCode::kNotFound);
  EXPECT_OK(store->erase(absent));
  EXPECT_EQ(integer_of(server->command({"DBSIZE"})), 15 * 5);  // header + 4 layers each

  std::vector<std::uint8_t> small(100);
  EXPECT_EQ(store->read(absent, small).code(), StatusCode::kInvalidArgument);
  StoreStats s = store->stats();
  EXPECT_EQ(s.hits, 16u);
  EXPECT_EQ(s.misses[std::size_t(MissReason::kAbsent)], 2u);
  EXPECT_EQ(s.writes, 16u);
  EXPECT_EQ(s.erases, 2u);
  EXPECT_EQ(s.bytes_read, 16u * 4 * 65536);
  EXPECT_EQ(s.read_latency.count(), 18u);
}

TEST(RedisStore, TtlExpiresHeaderFirst) {
  SKIP_WITHOUT_REDIS();
  auto server = start_server();
  ASSERT_TRUE(server);
  RedisStoreOptions o = options_for(server->port());
  o.ttl = 150ms;
  auto store = open_store(o);
  ASSERT_TRUE(store);
  RecordId id = test::record_id(1);
  ASSERT_OK(write_record(*store, id));
  EXPECT_OK(read_record(*store, id));
  long long head_ttl = integer_of(server->command({"PTTL", header_key(id)}));
  long long value_ttl = integer_of(server->command({"PTTL", layout_key(id, 1 << 20, 0)}));
  EXPECT_GT(head_ttl, 0);
  EXPECT_LE(head_ttl, 150);
  EXPECT_GT(value_ttl, 150);  // payload values outlive the header
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(read_record(*store, id).code(), StatusCode::kNotFound);
  EXPECT_EQ(store->stats().misses[std::size_t(MissReason::kEvicted)], 1u);
  EXPECT_EQ(integer_of(server->command({"DBSIZE"})), 0);  // the remnants were removed
}

TEST(RedisStore, Password) {
  SKIP_WITHOUT_REDIS();
  LocalRedisOptions so;
  so.password = "s3cret-pw";
  auto server = start_server(so);
  ASSERT_TRUE(server);
  RedisStoreOptions o = options_for(server->port());
  EXPECT_EQ(open_redis_store(o).status().code(), StatusCode::kFailedPrecondition);  // NOAUTH
  o.password = "wrong";
  auto refused = open_redis_store(o);
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("password"), std::string::npos);
  o.connect_at_open = false;
  auto lazy = open_store(o);
  ASSERT_TRUE(lazy);
  EXPECT_EQ(read_record(*lazy, test::record_id(1)).code(), StatusCode::kUnavailable);
  o.password = so.password;
  o.connect_at_open = true;
  auto store = open_store(o);
  ASSERT_TRUE(store);
  ASSERT_OK(write_record(*store, test::record_id(1)));
  EXPECT_OK(read_record(*store, test::record_id(1)));
}

TEST(RedisStore, NoServer) {
  SKIP_WITHOUT_REDIS();
  RedisStoreOptions o = options_for(redis::testing::free_port());
  EXPECT_EQ(open_redis_store(o).status().code(), StatusCode::kUnavailable);
  o.connect_at_open = false;
  auto store = open_store(o);
  ASSERT_TRUE(store);
  auto t0 = Clock::now();
  EXPECT_EQ(read_record(*store, test::record_id(1)).code(), StatusCode::kUnavailable);
  EXPECT_EQ(write_record(*store, test::record_id(1)).code(), StatusCode::kUnavailable);
  EXPECT_LT(Clock::now() - t0, kCommandTimeout);
  EXPECT_EQ(store->stats().misses[std::size_t(MissReason::kUnavailable)], 1u);
  EXPECT_EQ(store->stats().write_failures, 1u);
}

TEST(RedisStore, ValuesSplitAtMaxValueBytes) {
  SKIP_WITHOUT_REDIS();
  auto server = start_server();
  ASSERT_TRUE(server);
  RedisStoreOptions o = options_for(server->port());
  o.max_value_bytes = 16384;
  auto store = open_store(o);
  ASSERT_TRUE(store);
  RecordId id = test::record_id(5, 3, 40000);  // 3 parts per layer: 13334 + 13334 + 13332
  ASSERT_OK(write_record(*store, id));
  EXPECT_EQ(integer_of(server->command({"DBSIZE"})), 1 + 9);
  for (std::size_t v = 0; v < 9; ++v) {
    long long len = integer_of(server->command({"STRLEN", layout_key(id, o.max_value_bytes, v)}));
    EXPECT_GT(len, 0);
    EXPECT_LE(len, 16384);
  }
  EXPECT_OK(read_record(*store, id));
  // A store with another limit follows the writer's split.
  auto other = open_store(options_for(server->port()));
  ASSERT_TRUE(other);
  EXPECT_OK(read_record(*other, id));
  // A Llama-3.1-8B chunk of 256 tokens: 32 layers of 1 MiB, one value each by default.
  RecordId llama = test::record_id(6, 32, 1 << 20);
  ASSERT_OK(write_record(*other, llama));
  EXPECT_OK(read_record(*other, llama));
  EXPECT_OK(read_record(*store, llama));  // 64 parts of 512 KiB expected, 32 found
}

TEST(RedisStore, ThreadsEveryByteChecked) {
  SKIP_WITHOUT_REDIS();
  auto server = start_server();
  ASSERT_TRUE(server);
  auto store = open_store(options_for(server->port()));
  ASSERT_TRUE(store);
  auto shape = [](int i) {
    return test::record_id(std::uint64_t(i), 1 + i % 4, 4096 * (1 + i % 7));
  };
  std::atomic<std::uint64_t> wrong{0}, hits{0}, failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      std::uint64_t w = 0;
      for (int k = 0; k < 200; ++k) {
        RecordId id = shape(int(rng() % 48));
        Status s = (rng() % 3 == 0) ? write_record(*store, id) : read_record(*store, id, &w);
        hits += s.ok();
        failures += !s.ok() && s.code() != StatusCode::kNotFound;
      }
      wrong += w;
    });
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(wrong, 0u);
  EXPECT_EQ(failures, 0u);
  for (int i = 0; i < 48; ++i)
    ASSERT_OK(write_record(*store, shape(i)));
  for (int i = 0; i < 48; ++i)
    EXPECT_OK(read_record(*store, shape(i)));
}

TEST(RedisStore, TwoStoresAndAProcessShareOneServer) {
  SKIP_WITHOUT_REDIS();
  auto server = start_server();
  ASSERT_TRUE(server);
  auto a = open_store(options_for(server->port()));
  auto b = open_store(options_for(server->port()));
  ASSERT_TRUE(a && b);
  for (int i = 0; i < 8; ++i)
    ASSERT_OK(write_record(*a, test::record_id(i)));
  for (int i = 0; i < 8; ++i)
    EXPECT_OK(read_record(*b, test::record_id(i)));
  ASSERT_OK(b->erase(test::record_id(0)));
  EXPECT_EQ(read_record(*a, test::record_id(0)).code(), StatusCode::kNotFound);

  // A second engine process: writes records this one then reads.
  std::fflush(nullptr);  // or the child's exit may write this process's buffered output again
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto s = open_redis_store(options_for(server->port()));
    int bad = s.ok() ? 0 : 1;
    for (int i = 100; i < 110 && bad == 0; ++i)
      bad += !write_record(**s, test::record_id(i)).ok();
    ::_exit(bad == 0 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child process failed to write";
  std::uint64_t wrong = 0;
  for (int i = 100; i < 110; ++i)
    EXPECT_OK(read_record(*a, test::record_id(i), &wrong));
  EXPECT_EQ(wrong, 0u);
}

TEST(RedisStore, CorruptAndForeignRecordsAreRemovedMisses) {
  SKIP_WITHOUT_REDIS();
  auto server = start_server();
  ASSERT_TRUE(server);
  auto store = open_store(options_for(server->port()));
  ASSERT_TRUE(store);
  auto count = [&](MissReason r) { return store->stats().misses[std::size_t(r)]; };
  auto gone = [&](const RecordId& id) {
    return integer_of(server->command({"EXISTS", header_key(id), layout_key(id, 1 << 20, 0),
                                       layout_key(id, 1 << 20, 3)})) == 0;
  };
  // A flipped payload byte.
  RecordId id = test::record_id(1);
  ASSERT_OK(write_record(*store, id));
  std::string byte(1, char(payload_of(id)[2 * 8192 + 100] ^ 0x5a));
  server->command({"SETRANGE", layout_key(id, 1 << 20, 2), "100", byte}).status().ignore();
  EXPECT_EQ(read_record(*store, id).code(), StatusCode::kDataLoss);
  EXPECT_EQ(count(MissReason::kCorrupt), 1u);
  EXPECT_TRUE(gone(id));
  // A flipped header byte, then a truncated value.
  ASSERT_OK(write_record(*store, id));
  server->command({"SETRANGE", header_key(id), "200", "\x01"}).status().ignore();
  EXPECT_EQ(read_record(*store, id).code(), StatusCode::kDataLoss);
  ASSERT_OK(write_record(*store, id));
  server->command({"SET", layout_key(id, 1 << 20, 1), "short"}).status().ignore();
  EXPECT_EQ(read_record(*store, id).code(), StatusCode::kDataLoss);
  EXPECT_EQ(count(MissReason::kCorrupt), 3u);
  EXPECT_TRUE(gone(id));
  // Another identity's header put in place.
  RecordId other = id;
  other.identity[0] ^= 1;
  ASSERT_OK(write_record(*store, id));
  ASSERT_OK(write_record(*store, other));
  auto foreign_header = server->command({"GET", header_key(other)});
  ASSERT_TRUE(foreign_header.ok());
  server->command({"SET", header_key(id), std::string(reply_text(foreign_header->get()))})
      .status()
      .ignore();
  EXPECT_EQ(read_record(*store, id).code(), StatusCode::kDataLoss);
  EXPECT_EQ(count(MissReason::kForeign), 1u);
  EXPECT_TRUE(gone(id));
  EXPECT_OK(read_record(*store, other));
  // Another tenant's salt under the same chunk key (the same Redis keys).
  RecordId salted = id;
  salted.salt_tag[5] ^= 1;
  ASSERT_OK(write_record(*store, id));
  EXPECT_EQ(read_record(*store, salted).code(), StatusCode::kDataLoss);
  EXPECT_EQ(count(MissReason::kForeign), 2u);
  // A value lost on its own (maxmemory eviction): an evicted miss, the rest removed.
  ASSERT_OK(write_record(*store, id));
  server->command({"DEL", layout_key(id, 1 << 20, 3)}).status().ignore();
  EXPECT_EQ(read_record(*store, id).code(), StatusCode::kNotFound);
  EXPECT_EQ(count(MissReason::kEvicted), 1u);
  EXPECT_TRUE(gone(id));
  StoreStats st = store->stats();
  EXPECT_EQ(st.hits, 1u);
  const std::uint64_t reads = st.hits + st.misses[std::size_t(MissReason::kCorrupt)] +
                              st.misses[std::size_t(MissReason::kForeign)] +
                              st.misses[std::size_t(MissReason::kEvicted)];
  std::printf(
      "reliability: redis corrupt, foreign and partly evicted records: %llu reads, %llu "
      "hits, corrupt=%llu foreign=%llu evicted=%llu, each removed, 0 wrong bytes\n",
      (unsigned long long)reads, (unsigned long long)st.hits,
      (unsigned long long)st.misses[std::size_t(MissReason::kCorrupt)],
      (unsigned long long)st.misses[std::size_t(MissReason::kForeign)],
      (unsigned long long)st.misses[std::size_t(MissReason::kEvicted)]);
  g_total.requests += reads;
  g_total.hits += st.hits;
  g_total.add_misses(st);
}

// The server killed, restarted, paused and flushed under a running workload.
TEST(RedisStore, ChaosKillPauseFlushRestart) {
  SKIP_WITHOUT_REDIS();
  auto server = start_server();
  ASSERT_TRUE(server);
  auto store = open_store(options_for(server->port()));
  ASSERT_TRUE(store);
  auto shape = [](int i) { return test::record_id(std::uint64_t(i), 4, 32768); };
  for (int i = 0; i < 32; ++i)
    ASSERT_OK(write_record(*store, shape(i)));
  Figures f;
  {
    Workload w(*store, shape, 48, 3, 0.4);
    for (int round = 0; round < 2; ++round) {
      ASSERT_TRUE(w.wait_hits(3s)) << "no hits before round " << round;
      server->kill();
      std::this_thread::sleep_for(700ms);
      ASSERT_OK(server->restart());
      EXPECT_TRUE(w.wait_hits(3s)) << "no reconnect after a restart";
      std::this_thread::sleep_for(250ms);
      server->pause();
      std::this_thread::sleep_for(700ms);
      server->resume();
      EXPECT_TRUE(w.wait_hits(3s)) << "no hits after a pause";
      std::this_thread::sleep_for(250ms);
      server->command({"FLUSHALL"}).status().ignore();
      EXPECT_TRUE(w.wait_hits(3s)) << "no hits after FLUSHALL";
      std::this_thread::sleep_for(250ms);
      f.rounds += 3;
    }
    w.stop();
    w.add_to(f);
    EXPECT_EQ(w.wrong(), 0u);
    EXPECT_EQ(w.late(), 0u) << "a call took " << w.max_call_us() / 1000 << " ms";
  }
  StoreStats s = store->stats();
  f.add_misses(s);
  EXPECT_GT(s.misses[std::size_t(MissReason::kUnavailable)], 0u);
  EXPECT_GT(s.misses[std::size_t(MissReason::kTimeout)], 0u);
  std::printf("reliability: redis single server (kill, restart, SIGSTOP, FLUSHALL): %s\n",
              f.line().c_str());
  g_total.rounds += f.rounds;
  g_total.requests += f.requests;
  g_total.hits += f.hits;
  g_total.wrong_bytes += f.wrong_bytes;
  g_total.late_calls += f.late_calls;
  g_total.max_call_us = std::max<std::int64_t>(g_total.max_call_us, f.max_call_us);
  g_total.add_misses(s);
}

// ---- a three-node cluster --------------------------------------------------------------------

class RedisClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!redis::testing::redis_programs_missing().empty()) return;
    auto c = LocalRedisCluster::start(3);
    if (c.ok()) {
      cluster_ = std::move(c).value();
    } else {
      setup_error_ = c.status().to_string();
    }
  }
  static void TearDownTestSuite() { cluster_.reset(); }
  void SetUp() override {
    SKIP_WITHOUT_REDIS();
    ASSERT_TRUE(cluster_) << setup_error_;
  }

  static RedisStoreOptions options() {
    RedisStoreOptions o = options_for(0);
    o.cluster_seeds = {{"127.0.0.1", cluster_->node(0).port()}};  // the others are learned
    return o;
  }
  // The node that serves `slot` now, by CLUSTER SLOTS of node `ask`.
  static int node_of_slot(int slot, int ask = 0) {
    auto r = cluster_->node(ask).command({"CLUSTER", "SLOTS"});
    if (!r.ok()) return -1;
    auto ranges = redis::parse_cluster_slots(r->get(), "127.0.0.1");
    if (!ranges.ok()) return -1;
    for (const auto& range : *ranges)
      if (slot >= range.first && slot <= range.last) return cluster_->index_of(range.port);
    return -1;
  }
  static std::string node_id(int i) {
    auto r = cluster_->node(i).command({"CLUSTER", "MYID"});
    return r.ok() ? std::string(reply_text(r->get())) : "";
  }
  static int slot_of(const RecordId& id) {
    return RecordLayout(id, "tkv", RecordLayout::parts_for(id.layer_bytes, 1 << 20)).slot();
  }

  static std::unique_ptr<LocalRedisCluster> cluster_;
  static std::string setup_error_;
};
std::unique_ptr<LocalRedisCluster> RedisClusterTest::cluster_;
std::string RedisClusterTest::setup_error_;

RecordId cluster_record(int i) {
  return test::record_id(std::uint64_t(1000 + i), 2, 16384);
}

TEST_F(RedisClusterTest, RecordsSpreadOverEveryNode) {
  auto store = open_store(options());
  ASSERT_TRUE(store);
  EXPECT_EQ(store->capabilities().name, "redis-cluster");
  std::vector<int> per_node(3, 0);
  for (int i = 0; i < 60; ++i) {
    ASSERT_OK(write_record(*store, cluster_record(i)));
    int n = node_of_slot(slot_of(cluster_record(i)));
    ASSERT_GE(n, 0);
    ++per_node[std::size_t(n)];
  }
  for (int n = 0; n < 3; ++n) {
    EXPECT_GT(per_node[std::size_t(n)], 5) << "node " << n;
    EXPECT_EQ(integer_of(cluster_->node(n).command({"DBSIZE"})), per_node[std::size_t(n)] * 3);
  }
  std::uint64_t wrong = 0;
  for (int i = 0; i < 60; ++i)
    EXPECT_OK(read_record(*store, cluster_record(i), &wrong));
  EXPECT_EQ(wrong, 0u);
  // The slot computed here is the server's.
  std::string key = header_key(cluster_record(7));
  EXPECT_EQ(integer_of(cluster_->node(0).command({"CLUSTER", "KEYSLOT", key})),
            slot_of(cluster_record(7)));
}

// A slot migrated under two stores: reads follow ASK while it moves; afterwards both (their slot
// maps now stale) follow MOVED, for reads and writes.
TEST_F(RedisClusterTest, MovedAndAsk) {
  auto a = open_store(options());
  auto b = open_store(options());
  ASSERT_TRUE(a && b);
  RecordId r = cluster_record(500);
  ASSERT_OK(write_record(*a, r));
  EXPECT_OK(read_record(*b, r));
  const int slot = slot_of(r);
  const int src = node_of_slot(slot), dst = (src + 1) % 3, third = (src + 2) % 3;
  ASSERT_GE(src, 0);
  const std::string src_id = node_id(src), dst_id = node_id(dst);
  const std::string s = std::to_string(slot);
  auto& S = cluster_->node(src);
  auto& D = cluster_->node(dst);
  ASSERT_TRUE(D.command({"CLUSTER", "SETSLOT", s, "IMPORTING", src_id}).ok());
  ASSERT_TRUE(S.command({"CLUSTER", "SETSLOT", s, "MIGRATING", dst_id}).ok());
  auto keys = S.command({"CLUSTER", "GETKEYSINSLOT", s, "100"});
  ASSERT_TRUE(keys.ok());
  ASSERT_EQ(keys->get()->elements, 3u);
  std::vector<std::string> migrate = {"MIGRATE", "127.0.0.1", std::to_string(D.port()), "", "0",
                                      "5000",    "KEYS"};
  for (std::size_t k = 0; k < keys->get()->elements; ++k)
    migrate.emplace_back(reply_text(keys->get()->element[k]));
  auto moved = S.command(migrate);
  ASSERT_TRUE(moved.ok() && redis::is_status(moved->get(), "OK")) << redis::describe(moved->get());
  // The record is on dst; src still owns the slot and answers ASK.
  std::uint64_t wrong = 0;
  EXPECT_OK(read_record(*a, r, &wrong));  // during the migration: ASK
  RecordId r3 = r;
  r3.identity[0] ^= 4;  // a new record in the migrating slot
  // Redis answers TRYAGAIN to a multi-key transaction on keys not yet in a migrating slot: the
  // write fails as Unavailable (or succeeds, were it allowed), and never leaves a partial record.
  Status during = write_record(*a, r3);
  EXPECT_TRUE(during.ok() || during.code() == StatusCode::kUnavailable) << during.to_string();
  for (int n : {dst, src, third})
    ASSERT_TRUE(cluster_->node(n).command({"CLUSTER", "SETSLOT", s, "NODE", dst_id}).ok());
  EXPECT_EQ(node_of_slot(slot, third), dst);
  EXPECT_OK(read_record(*b, r, &wrong));  // after the migration: MOVED
  RecordId r2 = r;
  r2.identity[0] ^= 2;  // another record in the same slot (the hash tag is the chunk key)
  ASSERT_EQ(slot_of(r2), slot);
  EXPECT_OK(write_record(*a, r2));  // after the migration: MOVED
  EXPECT_OK(read_record(*b, r2, &wrong));
  EXPECT_EQ(integer_of(D.command({"CLUSTER", "COUNTKEYSINSLOT", s})), during.ok() ? 9 : 6);
  Status r3_read = read_record(*b, r3, &wrong);
  EXPECT_TRUE(during.ok() ? r3_read.ok() : r3_read.code() == StatusCode::kNotFound)
      << r3_read.to_string();
  EXPECT_EQ(wrong, 0u);
}

// One node killed mid-workload: its records become misses within the timeout, the others keep
// hitting. Runs last: the cluster keeps two nodes afterwards.
TEST_F(RedisClusterTest, NodeLostMidWorkload) {
  auto store = open_store(options());
  ASSERT_TRUE(store);
  for (int i = 0; i < 60; ++i)
    ASSERT_OK(write_record(*store, cluster_record(i)));
  const int victim = 2;
  std::vector<bool> on_victim(60);
  for (int i = 0; i < 60; ++i)
    on_victim[std::size_t(i)] = node_of_slot(slot_of(cluster_record(i))) == victim;
  Figures f;
  std::atomic<std::uint64_t> live_hits{0}, live_misses{0}, dead_hits{0}, dead_misses{0};
  std::atomic<bool> killed{false}, stop{false};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t)
    readers.emplace_back([&, t] {
      std::mt19937 rng(t);
      std::uint64_t wrong = 0;
      while (!stop) {
        int i = int(rng() % 60);
        bool after = killed;
        auto t0 = Clock::now();
        Status st = read_record(*store, cluster_record(i), &wrong);
        auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
        ++f.requests;
        f.hits += st.ok();
        f.late_calls += us > std::chrono::microseconds(kCommandTimeout + kTimeoutSlack).count();
        std::int64_t m = f.max_call_us;
        while (us > m && !f.max_call_us.compare_exchange_weak(m, us)) {
        }
        if (!after) continue;
        bool dead = on_victim[std::size_t(i)];
        (dead ? (st.ok() ? dead_hits : dead_misses) : (st.ok() ? live_hits : live_misses))++;
      }
      f.wrong_bytes += wrong;
    });
  std::this_thread::sleep_for(300ms);
  cluster_->node(victim).kill();
  killed = true;
  f.rounds += 1;
  std::this_thread::sleep_for(1500ms);
  stop = true;
  for (auto& t : readers)
    t.join();
  StoreStats s = store->stats();
  f.add_misses(s);
  std::printf(
      "reliability: redis cluster, 1 of 3 nodes killed: %s; after the kill: live nodes "
      "%llu hits %llu misses, dead node %llu hits %llu misses\n",
      f.line().c_str(), (unsigned long long)live_hits.load(),
      (unsigned long long)live_misses.load(), (unsigned long long)dead_hits.load(),
      (unsigned long long)dead_misses.load());
  EXPECT_GT(live_hits, 0u);
  EXPECT_EQ(live_misses, 0u);
  EXPECT_GT(dead_misses, 0u);
  EXPECT_EQ(dead_hits, 0u);
  EXPECT_EQ(f.wrong_bytes, 0u);
  EXPECT_EQ(f.late_calls, 0u);
  g_total.rounds += f.rounds;
  g_total.requests += f.requests;
  g_total.hits += f.hits;
  g_total.wrong_bytes += f.wrong_bytes;
  g_total.late_calls += f.late_calls;
  g_total.max_call_us = std::max<std::int64_t>(g_total.max_call_us, f.max_call_us);
  g_total.add_misses(s);
}

}  // namespace
}  // namespace tierkv
