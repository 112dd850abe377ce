// The fault-injecting Store decorator over the in-memory store.
#include "tiers/fault/fault_store.h"

#include <gtest/gtest.h>

#include <chrono>

#include "backends.h"
#include "store_checks.h"
#include "tiers/memory/memory_store.h"

namespace tierkv {
namespace {

using test::fill_payload;
using test::record_id;
using test::wrong_bytes;

std::unique_ptr<FaultStore> make() {
  auto m = MemoryStore::create();
  EXPECT_TRUE(m.ok());
  return std::make_unique<FaultStore>(std::move(m).value());
}

std::vector<std::uint8_t> payload_of(const RecordId& id, std::uint64_t seed) {
  std::vector<std::uint8_t> p(id.payload_bytes());
  fill_payload(seed, p);
  return p;
}

TEST(FaultStoreTest, FailsTheKthCallTransiently) {
  auto s = make();
  EXPECT_EQ(s->capabilities().name, "fault(memory)");
  const RecordId id = record_id(1);
  ASSERT_OK(s->add_rule({.op = FaultOp::kWrite, .code = StatusCode::kIoError, .first_call = 2}));
  ASSERT_OK(s->write(id, payload_of(id, 1)));
  const RecordId id2 = record_id(2);
  EXPECT_EQ(s->write(id2, payload_of(id2, 2)).code(), StatusCode::kIoError);
  ASSERT_OK_AND_ASSIGN(bool there, s->contains(id2));
  EXPECT_FALSE(there) << "a failed write leaves nothing behind";
  ASSERT_OK(s->write(id2, payload_of(id2, 2)));  // the third call passes again
  EXPECT_EQ(s->calls(FaultOp::kWrite), 3u);
  EXPECT_EQ(s->injected(), 1u);
}

TEST(FaultStoreTest, PersistentFaultsKeepFailing) {
  auto s = make();
  const RecordId id = record_id(1);
  ASSERT_OK(s->write(id, payload_of(id, 1)));
  ASSERT_OK(s->add_rule(
      {.op = FaultOp::kRead, .code = StatusCode::kUnavailable, .times = FaultRule::kPersistent}));
  ASSERT_OK(s->add_rule({.op = FaultOp::kContains,
                         .code = StatusCode::kDeadlineExceeded,
                         .times = FaultRule::kPersistent}));
  ASSERT_OK(s->add_rule({.op = FaultOp::kErase, .code = StatusCode::kIoError}));
  std::vector<std::uint8_t> out(id.payload_bytes());
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(s->read(id, out).code(), StatusCode::kUnavailable);
  EXPECT_EQ(s->contains(id).status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(s->erase(id).code(), StatusCode::kIoError);
  s->clear_rules();
  ASSERT_OK(s->read(id, out));
  EXPECT_EQ(wrong_bytes(1, out), 0u);
}

TEST(FaultStoreTest, CorruptionAndDelay) {
  auto s = make();
  const RecordId id = record_id(1);
  ASSERT_OK(s->write(id, payload_of(id, 1)));
  ASSERT_OK(s->add_rule({.op = FaultOp::kRead, .kind = FaultKind::kCorrupt}));
  ASSERT_OK(
      s->add_rule({.op = FaultOp::kRead, .kind = FaultKind::kCorruptSilently, .first_call = 2}));
  ASSERT_OK(s->add_rule({.op = FaultOp::kRead,
                         .kind = FaultKind::kDelay,
                         .first_call = 3,
                         .delay = std::chrono::milliseconds(20)}));
  std::vector<std::uint8_t> out(id.payload_bytes());
  EXPECT_EQ(s->read(id, out).code(), StatusCode::kDataLoss);
  EXPECT_GT(wrong_bytes(1, out), 0u) << "the buffer was scribbled on";
  ASSERT_OK(s->read(id, out));
  EXPECT_EQ(wrong_bytes(1, out), 1u) << "the lying read flips one byte";
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_OK(s->read(id, out));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(20));
  EXPECT_EQ(wrong_bytes(1, out), 0u);
}

TEST(FaultStoreTest, FailAfterLetsTheWriteLand) {
  auto s = make();
  const RecordId id = record_id(1);
  ASSERT_OK(s->add_rule({.op = FaultOp::kWrite,
                         .kind = FaultKind::kFailAfter,
                         .code = StatusCode::kDeadlineExceeded}));
  EXPECT_EQ(s->write(id, payload_of(id, 1)).code(), StatusCode::kDeadlineExceeded);
  std::vector<std::uint8_t> out(id.payload_bytes());
  ASSERT_OK(s->read(id, out));
  EXPECT_EQ(wrong_bytes(1, out), 0u);
}

TEST(FaultStoreTest, ARuleThatNamesARecordFiresOnlyForIt) {
  auto s = make();
  const RecordId a = record_id(1), b = record_id(2);
  ASSERT_OK(s->write(a, payload_of(a, 1)));
  ASSERT_OK(s->write(b, payload_of(b, 2)));
  ASSERT_OK(
      s->add_rule({.op = FaultOp::kRead, .code = StatusCode::kIoError, .times = 2, .record = b}));
  std::vector<std::uint8_t> out(a.payload_bytes());
  for (int i = 0; i < 3; ++i) {
    ASSERT_OK(s->read(a, out));  // calls for other records pass, whatever their number
    EXPECT_EQ(wrong_bytes(1, out), 0u);
  }
  EXPECT_EQ(s->read(b, out).code(), StatusCode::kIoError);
  ASSERT_OK(s->read(a, out));
  EXPECT_EQ(s->read(b, out).code(), StatusCode::kIoError) << "the second of its two faults";
  ASSERT_OK(s->read(b, out));
  EXPECT_EQ(wrong_bytes(2, out), 0u);
  EXPECT_EQ(s->injected(), 2u);
}

TEST(FaultStoreTest, BadRulesAreRefused) {
  auto s = make();
  EXPECT_EQ(s->add_rule({.op = FaultOp::kWrite, .kind = FaultKind::kCorrupt}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(s->add_rule({.op = FaultOp::kRead, .times = 0}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->add_rule({.op = FaultOp::kRead, .code = StatusCode::kOk}).code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tierkv
