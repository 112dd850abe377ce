// The in-memory store: verification on read, LRU budget, the experiment-tier throttle.
#include "tiers/memory/memory_store.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "backends.h"
#include "store_checks.h"

namespace tierkv {
namespace {

using test::fill_payload;
using test::record_id;
using test::wrong_bytes;

std::unique_ptr<MemoryStore> make(const MemoryStoreOptions& o = {}) {
  auto s = MemoryStore::create(o);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return s.ok() ? std::move(s).value() : nullptr;
}

std::vector<std::uint8_t> payload_of(const RecordId& id, std::uint64_t seed) {
  std::vector<std::uint8_t> p(id.payload_bytes());
  fill_payload(seed, p);
  return p;
}

TEST(MemoryStoreTest, WriteReadEraseAndStats) {
  auto s = make();
  EXPECT_EQ(s->capabilities().name, "memory");
  EXPECT_FALSE(s->capabilities().experiment);
  const RecordId id = record_id(1);
  std::vector<std::uint8_t> out(id.payload_bytes());
  EXPECT_EQ(s->read(id, out).code(), StatusCode::kNotFound);
  ASSERT_OK(s->write(id, payload_of(id, 1)));
  ASSERT_OK_AND_ASSIGN(bool there, s->contains(id));
  EXPECT_TRUE(there);
  ASSERT_OK(s->read(id, out));
  EXPECT_EQ(wrong_bytes(1, out), 0u);
  ASSERT_OK(s->erase(id));
  ASSERT_OK(s->erase(id));  // absent: still OK
  EXPECT_EQ(s->read(id, out).code(), StatusCode::kNotFound);
  const StoreStats st = s->stats();
  EXPECT_EQ(st.hits, 1u);
  EXPECT_EQ(st.misses[std::size_t(MissReason::kAbsent)], 2u);
  EXPECT_EQ(st.writes, 1u);
  EXPECT_EQ(st.erases, 1u);
  EXPECT_EQ(st.bytes_read, id.payload_bytes());
  EXPECT_EQ(st.read_latency.count(), 1u);
  EXPECT_EQ(st.records, 0u);
}

TEST(MemoryStoreTest, WrongSizesAreRefused) {
  auto s = make();
  const RecordId id = record_id(1);
  std::vector<std::uint8_t> small(10);
  EXPECT_EQ(s->write(id, small).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->read(id, small).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->stats().write_failures, 1u);
}

TEST(MemoryStoreTest, CorruptAndForeignRecordsAreMissesAndRemoved) {
  auto s = make();
  const RecordId id = record_id(1);
  std::vector<std::uint8_t> out(id.payload_bytes());
  ASSERT_OK(s->write(id, payload_of(id, 1)));
  ASSERT_OK(s->edit_record(id, [](std::vector<std::uint8_t>& b) { b[5000] ^= 4; }));
  EXPECT_EQ(s->read(id, out).code(), StatusCode::kDataLoss);
  ASSERT_OK_AND_ASSIGN(bool there, s->contains(id));
  EXPECT_FALSE(there) << "a corrupt record is removed";

  ASSERT_OK(s->write(id, payload_of(id, 1)));
  RecordId other = id;
  other.salt_tag[3] ^= 1;  // same chunk key, another tenant
  EXPECT_EQ(s->read(other, out).code(), StatusCode::kDataLoss);
  const StoreStats st = s->stats();
  EXPECT_EQ(st.misses[std::size_t(MissReason::kCorrupt)], 1u);
  EXPECT_EQ(st.misses[std::size_t(MissReason::kForeign)], 1u);
  EXPECT_EQ(st.hits, 0u);
}

TEST(MemoryStoreTest, BudgetEvictsLeastRecentlyUsed) {
  const RecordId shape = record_id(0);
  const std::uint64_t rec = 4096 + shape.payload_bytes();
  auto s = make({.budget_bytes = 3 * rec + rec / 2});
  std::vector<std::uint8_t> out(shape.payload_bytes());
  for (int i = 0; i < 3; ++i)
    ASSERT_OK(s->write(record_id(i), payload_of(record_id(i), i)));
  ASSERT_OK(s->read(record_id(0), out));  // 0 becomes the most recent
  ASSERT_OK(s->write(record_id(3), payload_of(record_id(3), 3)));
  EXPECT_EQ(s->read(record_id(1), out).code(), StatusCode::kNotFound);
  for (int i : {0, 2, 3}) {
    ASSERT_OK(s->read(record_id(i), out));
    EXPECT_EQ(wrong_bytes(i, out), 0u);
  }
  const StoreStats st = s->stats();
  EXPECT_EQ(st.evictions, 1u);
  EXPECT_EQ(st.misses[std::size_t(MissReason::kEvicted)], 1u);
  EXPECT_EQ(st.records, 3u);
  EXPECT_EQ(st.budget_bytes, 3 * rec + rec / 2);
  EXPECT_EQ(s->write(record_id(9, 40, 8192), std::vector<std::uint8_t>(40 * 8192)).code(),
            StatusCode::kResourceExhausted);
}

TEST(MemoryStoreTest, ThrottledStoreIsAnExperimentTierAndTakesItsTime) {
  auto s = make({.bandwidth_gbps = 0.1, .latency_us = 1000});  // 100 MB/s, 1 ms
  EXPECT_EQ(s->capabilities().name, "memory-experiment");
  EXPECT_TRUE(s->capabilities().experiment);
  const RecordId id = record_id(1, 4, 250000);  // 1 MB: 10 ms at 100 MB/s
  ASSERT_OK(s->write(id, payload_of(id, 1)));
  std::vector<std::uint8_t> out(id.payload_bytes());
  const auto t0 = std::chrono::steady_clock::now();
  // Two readers share the link: together they take at least 20 ms + 1 ms.
  std::thread other([&] {
    std::vector<std::uint8_t> o(id.payload_bytes());
    EXPECT_OK(s->read(id, o));
  });
  ASSERT_OK(s->read(id, out));
  other.join();
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(ms, 20.0);
  EXPECT_LT(ms, 2000.0);
  EXPECT_EQ(wrong_bytes(1, out), 0u);
  EXPECT_EQ(MemoryStore::create({.bandwidth_gbps = -1}).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tierkv
