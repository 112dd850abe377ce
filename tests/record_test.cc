// The chunk record format (core/record.h) and the store seam's shared pieces (miss reason names,
// the latency histogram).
#include "core/record.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <random>

#include "backends.h"
#include "fuzz/record_header_fuzz.h"
#include "store_checks.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace tierkv {
namespace {

using test::fill_payload;
using test::record_id;

std::vector<std::uint8_t> payload_of(const RecordId& id, std::uint64_t seed) {
  std::vector<std::uint8_t> p(id.payload_bytes());
  fill_payload(seed, p);
  return p;
}

TEST(RecordTest, HeaderSizeIsBlockAligned) {
  EXPECT_EQ(record_header_size(1), 4096u);
  EXPECT_EQ(record_header_size(32), 4096u);
  EXPECT_EQ(record_header_size(246), 4096u);
  EXPECT_EQ(record_header_size(247), 8192u);
  EXPECT_EQ(record_header_size(kRecordMaxLayers) % kRecordAlign, 0u);
}

// The checksum is XXH3-64 whatever instruction set computes it (record.cc picks AVX2 at run
// time where the CPU has it; this test's copy is the baseline build).
TEST(RecordTest, ChecksumIsXxh3OnEveryPath) {
  std::vector<std::uint8_t> b(100000);
  fill_payload(9, b);
  for (std::size_t n : {0, 1, 17, 240, 1023, 1024, 4096, 99999, 100000})
    for (std::uint64_t seed : {0ull, 1ull, 31ull})
      EXPECT_EQ(record_checksum(std::span(b).first(n), seed),
                XXH3_64bits_withSeed(b.data(), n, seed))
          << n;
}

TEST(RecordTest, EncodeParseRoundTrip) {
  const RecordId id = record_id(3, 5, 1000);
  const auto payload = payload_of(id, 11);
  ASSERT_OK_AND_ASSIGN(auto rec, encode_record(id, payload));
  ASSERT_EQ(rec.size(), 4096 + payload.size());
  ASSERT_OK_AND_ASSIGN(RecordHeader h, parse_record_header(rec));
  EXPECT_EQ(h.version, kRecordFormatVersion);
  EXPECT_EQ(h.header_bytes, 4096u);
  EXPECT_EQ(h.payload_bytes, payload.size());
  EXPECT_EQ(h.record_bytes(), rec.size());
  EXPECT_EQ(h.id.identity, id.identity);
  EXPECT_EQ(h.id.salt_tag, id.salt_tag);
  EXPECT_EQ(h.id.chunk_key, id.chunk_key);
  EXPECT_EQ(h.id.tokens, id.tokens);
  EXPECT_EQ(h.layer_checksums.size(), 5u);
  EXPECT_OK(check_record_id(h, id));
  EXPECT_OK(verify_record_payload(h, std::span(rec).subspan(4096)));
  for (std::uint32_t l = 0; l < 5; ++l)
    EXPECT_OK(verify_record_layer(h, l, std::span(payload).subspan(l * 1000, 1000)));
  EXPECT_EQ(verify_record_layer(h, 5, {}).code(), StatusCode::kOutOfRange);
  ASSERT_OK_AND_ASSIGN(std::uint32_t hb, peek_record_header_size(std::span(rec).first(16)));
  EXPECT_EQ(hb, 4096u);

  std::vector<std::uint8_t> out(payload.size());
  const RecordCheck c = decode_record(rec, id, out);
  EXPECT_OK(c.status);
  EXPECT_EQ(out, payload);
}

TEST(RecordTest, EncodingIsLittleEndianAtFixedOffsets) {
  RecordId id = record_id(1, 2, 0x010203);
  id.tokens = 0x0a0b0c0d;
  std::vector<std::uint8_t> payload(id.payload_bytes(), 0x5a);
  ASSERT_OK_AND_ASSIGN(auto h, encode_record_header(id, payload));
  EXPECT_EQ(std::memcmp(h.data(), kRecordMagic, 8), 0);
  EXPECT_EQ(h[8], 1);      // version
  EXPECT_EQ(h[13], 0x10);  // header_bytes 4096 = 0x1000
  EXPECT_EQ(h[20], 2);     // num_layers
  EXPECT_EQ(h[24], 0x0d);
  EXPECT_EQ(h[27], 0x0a);  // tokens
  EXPECT_EQ(h[32], 0x03);
  EXPECT_EQ(h[34], 0x01);  // layer_bytes
  EXPECT_EQ(h[40], 0x06);
  EXPECT_EQ(h[42], 0x02);  // payload_bytes 0x020406
  EXPECT_EQ(std::memcmp(h.data() + 48, id.identity.data(), 32), 0);
  EXPECT_EQ(std::memcmp(h.data() + 80, id.salt_tag.data(), 32), 0);
  EXPECT_EQ(std::memcmp(h.data() + 112, id.chunk_key.bytes.data(), 32), 0);
}

TEST(RecordTest, RejectsBadArguments) {
  RecordId id = record_id(1);
  std::vector<std::uint8_t> payload(id.payload_bytes());
  std::vector<std::uint8_t> small(100);
  EXPECT_EQ(encode_record_header(id, payload, small).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(encode_record(id, small).status().code(), StatusCode::kInvalidArgument);
  id.num_layers = 0;
  EXPECT_EQ(encode_record(id, {}).status().code(), StatusCode::kInvalidArgument);
  id = record_id(1);
  id.num_layers = kRecordMaxLayers + 1;
  EXPECT_EQ(validate_record_id(id).code(), StatusCode::kInvalidArgument);
  id = record_id(1);
  id.layer_bytes = 0;
  EXPECT_EQ(validate_record_id(id).code(), StatusCode::kInvalidArgument);
}

TEST(RecordTest, EveryHeaderByteFlippedIsCorrupt) {
  const RecordId id = record_id(9, 3, 512);
  const auto payload = payload_of(id, 2);
  ASSERT_OK_AND_ASSIGN(auto rec, encode_record(id, payload));
  std::vector<std::uint8_t> out(payload.size());
  int corrupt = 0;
  for (std::size_t i = 0; i < 4096; ++i) {
    for (std::uint8_t mask : {std::uint8_t(0x01), std::uint8_t(0x80)}) {
      rec[i] ^= mask;
      EXPECT_FALSE(parse_record_header(rec).ok()) << "byte " << i;
      const RecordCheck c = decode_record(rec, id, out);
      EXPECT_EQ(c.status.code(), StatusCode::kDataLoss) << "byte " << i;
      EXPECT_EQ(c.reason, MissReason::kCorrupt) << "byte " << i;
      corrupt += c.reason == MissReason::kCorrupt;
      rec[i] ^= mask;
    }
  }
  EXPECT_EQ(corrupt, 2 * 4096);
  EXPECT_OK(decode_record(rec, id, out).status);
}

TEST(RecordTest, PayloadFlipsAndTruncationsAreCorrupt) {
  const RecordId id = record_id(4, 4, 4096);
  const auto payload = payload_of(id, 5);
  ASSERT_OK_AND_ASSIGN(auto rec, encode_record(id, payload));
  std::vector<std::uint8_t> out(payload.size());
  for (std::size_t i = 4096; i < rec.size(); i += 97) {
    rec[i] ^= 0x10;
    EXPECT_EQ(decode_record(rec, id, out).reason, MissReason::kCorrupt) << i;
    rec[i] ^= 0x10;
  }
  for (std::size_t n : {std::size_t(0), std::size_t(15), std::size_t(16), std::size_t(4095),
                        std::size_t(4096), std::size_t(5000), rec.size() - 1}) {
    const RecordCheck c = decode_record(std::span(rec).first(n), id, out);
    EXPECT_EQ(c.reason, MissReason::kCorrupt) << n;
  }
  auto longer = rec;
  longer.push_back(0);
  EXPECT_EQ(decode_record(longer, id, out).reason, MissReason::kCorrupt);
}

TEST(RecordTest, SwappedLayersAreCorrupt) {
  const RecordId id = record_id(4, 2, 4096);
  auto payload = payload_of(id, 5);
  ASSERT_OK_AND_ASSIGN(auto rec, encode_record(id, payload));
  std::swap_ranges(rec.begin() + 4096, rec.begin() + 8192, rec.begin() + 8192);
  std::vector<std::uint8_t> out(payload.size());
  EXPECT_EQ(decode_record(rec, id, out).reason, MissReason::kCorrupt);
}

TEST(RecordTest, AnotherIdentitySaltKeyOrShapeIsForeign) {
  const RecordId id = record_id(4, 4, 4096);
  const auto payload = payload_of(id, 5);
  ASSERT_OK_AND_ASSIGN(auto rec, encode_record(id, payload));
  std::vector<std::uint8_t> out(payload.size());
  std::vector<RecordId> others(6, id);
  others[0].identity[31] ^= 1;
  others[1].salt_tag[0] ^= 1;
  others[2].chunk_key.bytes[17] ^= 1;
  others[3].tokens += 1;
  others[4] = record_id(4, 2, 8192);  // same payload size, other shape
  others[5] = record_id(4, 4, 4096, /*who=*/2);
  for (const RecordId& o : others) {
    const RecordCheck c = decode_record(rec, o, out);
    EXPECT_EQ(c.status.code(), StatusCode::kDataLoss);
    EXPECT_EQ(c.reason, MissReason::kForeign) << c.status.to_string();
    EXPECT_NE(c.status.message().find("foreign"), std::string::npos);
  }
}

TEST(RecordTest, LengthsAreCheckedBeforeUse) {
  const RecordId id = record_id(1, 1, 64);
  const auto payload = payload_of(id, 1);
  ASSERT_OK_AND_ASSIGN(auto rec, encode_record(id, payload));
  // A huge header length or layer count is refused without reading past the buffer (ASan checks).
  auto bad = rec;
  bad[12] = 0;
  bad[13] = 0;
  bad[14] = 0;
  bad[15] = 0x7f;
  EXPECT_FALSE(peek_record_header_size(bad).ok());
  EXPECT_FALSE(parse_record_header(bad).ok());
  bad = rec;
  bad[20] = 0xff;
  bad[21] = 0xff;
  EXPECT_FALSE(parse_record_header(bad).ok());
  EXPECT_FALSE(parse_record_header(std::span(rec).first(4095)).ok());
}

// The fuzzer's body over random and mutated inputs (libFuzzer itself: scripts/fuzz.sh).
TEST(RecordTest, FuzzBodySmoke) {
  std::mt19937_64 rng(1234);
  const RecordId id = record_id(2, 3, 100);
  const auto payload = payload_of(id, 3);
  ASSERT_OK_AND_ASSIGN(auto rec, encode_record(id, payload));
  test::fuzz_record_header_once(rec.data(), rec.size());
  int inputs = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  while (std::chrono::steady_clock::now() < end) {
    auto m = rec;
    const int flips = 1 + int(rng() % 4);
    for (int f = 0; f < flips; ++f)
      m[rng() % 160] = std::uint8_t(rng());
    m.resize(rng() % (m.size() + 1));
    test::fuzz_record_header_once(m.data(), m.size());
    ++inputs;
  }
  EXPECT_GT(inputs, 100);
}

TEST(StoreCommonTest, MissReasonNames) {
  EXPECT_STREQ(miss_reason_name(MissReason::kAbsent), "absent");
  EXPECT_STREQ(miss_reason_name(MissReason::kEvicted), "evicted");
  EXPECT_STREQ(miss_reason_name(MissReason::kCorrupt), "corrupt");
  EXPECT_STREQ(miss_reason_name(MissReason::kForeign), "foreign");
  EXPECT_STREQ(miss_reason_name(MissReason::kTimeout), "timeout");
  EXPECT_STREQ(miss_reason_name(MissReason::kUnavailable), "unavailable");
  EXPECT_STREQ(miss_reason_name(MissReason::kDropped), "dropped");
  EXPECT_STREQ(miss_reason_name(MissReason::kCount), "unknown");
}

TEST(StoreCommonTest, LatencyHistogramBuckets) {
  LatencyHistogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.quantile_us(0.5), 0.0);
  h.add(0.5);   // bucket 0: [0, 1)
  h.add(1.0);   // bucket 1: [1, 2)
  h.add(3.0);   // bucket 2: [2, 4)
  h.add(1000);  // bucket 10: [512, 1024)
  h.add(1e12);  // last bucket
  h.add(-1);    // clamped to bucket 0
  EXPECT_EQ(h.counts[0], 2u);
  EXPECT_EQ(h.counts[1], 1u);
  EXPECT_EQ(h.counts[2], 1u);
  EXPECT_EQ(h.counts[10], 1u);
  EXPECT_EQ(h.counts[LatencyHistogram::kBuckets - 1], 1u);
  EXPECT_EQ(h.count(), 6u);
  EXPECT_EQ(h.quantile_us(0), 1.0);
  EXPECT_EQ(h.quantile_us(0.5), 2.0);
  EXPECT_EQ(h.quantile_us(4.0 / 6), 4.0);
  EXPECT_EQ(h.quantile_us(5.0 / 6), 1024.0);
  EXPECT_EQ(h.quantile_us(1), double(1 << (LatencyHistogram::kBuckets - 1)));
  LatencyHistogram g;
  g.add(3.0);
  g.merge(h);
  EXPECT_EQ(g.count(), 7u);
  EXPECT_EQ(g.counts[2], 2u);
  EXPECT_EQ(g.total_us, h.total_us + 3);
}

}  // namespace
}  // namespace tierkv
