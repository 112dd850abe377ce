// Corruption sweep over the disk tier: every header byte flipped, a sample of payload bytes
// flipped, truncations at many lengths, a file grown by a byte, and records of another identity,
// salt, key or shape put in a record's place. Each must be a miss (DataLoss, counted corrupt or
// foreign), and the record must be removed. Then the same damage found at open: removed there.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "backends.h"
#include "core/record.h"
#include "store_checks.h"
#include "tiers/disk/disk_files.h"

namespace tierkv {
namespace {

using test::AlignedBuffer;
using test::fill_payload;
using test::record_id;
using test::TempDir;
using test::wrong_bytes;

std::vector<std::uint8_t> slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
void spill(const std::string& path, std::span<const std::uint8_t> bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

class DiskCorruptionTest : public ::testing::Test {
 protected:
  // The sweep rewrites the record thousands of times: without O_DIRECT (the page cache absorbs
  // the writes) for the full sweep, with O_DIRECT for a sample, so that both read paths are swept.
  void open(bool direct) {
    store_.reset();
    o_.directory = dir_.path() + (direct ? "/direct" : "/buffered");
    o_.sync = DiskSync::kNone;  // durability is not what is tested here
    o_.direct_io = direct;
    auto s = open_disk_store(o_);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    store_ = std::move(s).value();
    payload_ = std::make_unique<AlignedBuffer>(id_.payload_bytes());
    fill_payload(11, payload_->span());
    ASSERT_OK(store_->write(id_, payload_->span()));
    path_ = o_.directory + "/" + disk::record_file_name(id_);
    good_ = slurp(path_);
    ASSERT_EQ(good_.size(), 4096 + id_.payload_bytes());
  }
  void sweep(bool direct, std::size_t header_stride, std::size_t payload_samples,
             std::size_t truncations);

  // Puts `bytes` in place of the record's file (the store's index still names it), reads it, and
  // returns the miss reason the store counted for it (kAbsent when the read hit). Checks that the
  // file is gone afterwards when the read failed.
  MissReason damage_and_read(std::span<const std::uint8_t> bytes) {
    spill(path_, bytes);
    const StoreStats before = store_->stats();
    AlignedBuffer out(id_.payload_bytes());
    const Status r = store_->read(id_, out.span());
    const StoreStats after = store_->stats();
    MissReason why = MissReason::kAbsent;
    for (std::size_t m = 0; m < std::size_t(MissReason::kCount); ++m)
      if (after.misses[m] > before.misses[m]) why = MissReason(m);
    if (r.ok()) {
      served_wrong_ += wrong_bytes(11, out.span()) != 0;
      ++hits_;
    } else {
      EXPECT_EQ(r.code(), StatusCode::kDataLoss) << r.to_string();
      removed_ += !std::filesystem::exists(path_) && !store_->contains(id_).value();
    }
    // Put the good record back through the store for the next case.
    EXPECT_OK(store_->write(id_, payload_->span()));
    return why;
  }

  TempDir dir_;
  DiskStoreOptions o_;
  const RecordId id_ = record_id(5, 4, 16 << 10);
  std::unique_ptr<Store> store_;
  std::unique_ptr<AlignedBuffer> payload_;
  std::string path_;
  std::vector<std::uint8_t> good_;
  std::uint64_t hits_ = 0, served_wrong_ = 0, removed_ = 0;
};

void DiskCorruptionTest::sweep(bool direct, std::size_t header_stride, std::size_t payload_samples,
                               std::size_t truncations) {
  open(direct);
  hits_ = served_wrong_ = removed_ = 0;
  std::uint64_t header = 0, header_corrupt = 0;
  for (std::size_t i = 0; i < 4096; i += header_stride) {
    auto bad = good_;
    bad[i] ^= std::uint8_t(1u << (i % 8));
    header_corrupt += damage_and_read(bad) == MissReason::kCorrupt;
    ++header;
  }
  std::mt19937_64 rng(3);
  std::uint64_t payload = 0, payload_corrupt = 0;
  std::vector<std::size_t> at = {4096, good_.size() - 1};
  for (std::uint64_t l = 1; l < id_.num_layers; ++l)
    at.insert(at.end(), {4096 + l * id_.layer_bytes - 1, 4096 + l * id_.layer_bytes});
  while (at.size() < payload_samples)
    at.push_back(4096 + rng() % id_.payload_bytes());
  for (std::size_t i : at) {
    auto bad = good_;
    bad[i] ^= std::uint8_t(1 + rng() % 255);
    payload_corrupt += damage_and_read(bad) == MissReason::kCorrupt;
    ++payload;
  }
  std::uint64_t trunc = 0, trunc_corrupt = 0;
  std::vector<std::size_t> lengths = {
      0, 1, 15, 16, 17, 143, 144, 4095, 4096, 4097, good_.size() - 4096, good_.size() - 1};
  while (lengths.size() < truncations)
    lengths.push_back(rng() % good_.size());
  for (std::size_t n : lengths) {
    trunc_corrupt += damage_and_read(std::span(good_).first(n)) == MissReason::kCorrupt;
    ++trunc;
  }
  auto longer = good_;
  longer.push_back(0);
  trunc_corrupt += damage_and_read(longer) == MissReason::kCorrupt;
  ++trunc;

  // Records of another identity (same file name: it differs after the first 8 bytes), salt, key
  // or shape, put in place of this one.
  std::vector<RecordId> others(5, id_);
  others[0].identity[20] ^= 1;
  others[1].salt_tag[0] ^= 1;
  others[2].chunk_key = record_id(6).chunk_key;
  others[3].tokens = 128;
  others[4] = record_id(5, 300, 16 << 10);  // 300 layers: a two-block header
  others[4].chunk_key = id_.chunk_key;
  std::uint64_t foreign = 0, foreign_counted = 0;
  for (const RecordId& o : others) {
    std::vector<std::uint8_t> p(o.payload_bytes());
    fill_payload(11, p);
    ASSERT_OK_AND_ASSIGN(auto rec, encode_record(o, p));
    foreign_counted += damage_and_read(rec) == MissReason::kForeign;
    ++foreign;
  }
  const std::uint64_t cases = header + payload + trunc + foreign;
  EXPECT_EQ(hits_, 0u);
  EXPECT_EQ(served_wrong_, 0u);
  EXPECT_EQ(header_corrupt, header);
  EXPECT_EQ(payload_corrupt, payload);
  EXPECT_EQ(trunc_corrupt, trunc);
  EXPECT_EQ(foreign_counted, foreign);
  EXPECT_EQ(removed_, cases);
  std::printf(
      "reliability: corruption sweep (%s): header bytes flipped %llu/%llu missed as corrupt, "
      "payload bytes flipped %llu/%llu, truncations and growth %llu/%llu, foreign "
      "(identity, salt, key, tokens, shape) %llu/%llu missed as foreign; %llu/%llu "
      "records removed, %llu served\n",
      direct ? "O_DIRECT reads, every 16th header byte" : "buffered reads",
      static_cast<unsigned long long>(header_corrupt), static_cast<unsigned long long>(header),
      static_cast<unsigned long long>(payload_corrupt), static_cast<unsigned long long>(payload),
      static_cast<unsigned long long>(trunc_corrupt), static_cast<unsigned long long>(trunc),
      static_cast<unsigned long long>(foreign_counted), static_cast<unsigned long long>(foreign),
      static_cast<unsigned long long>(removed_), static_cast<unsigned long long>(cases),
      static_cast<unsigned long long>(hits_));
}

TEST_F(DiskCorruptionTest, EveryDamageIsAMissAndTheRecordIsRemoved) {
  sweep(false, 1, 512, 128);
}
TEST_F(DiskCorruptionTest, SampleThroughODirect) {
  sweep(true, 16, 100, 50);
}

// Damage found when the directory is opened: a header flip, a truncation, a record of another key
// under this name are removed by the index rebuild and counted.
TEST_F(DiskCorruptionTest, DamageFoundAtOpenIsRemoved) {
  open(true);
  std::mt19937_64 rng(9);
  std::uint64_t cases = 0, removed = 0;
  for (int i = 0; i < 60; ++i) {
    store_.reset();
    auto bad = good_;
    if (i % 3 == 0) bad[rng() % 4096] ^= 0x20;
    if (i % 3 == 1) bad.resize(rng() % good_.size());
    if (i % 3 == 2) {
      RecordId other = id_;
      other.chunk_key = record_id(100 + i).chunk_key;
      std::vector<std::uint8_t> p(other.payload_bytes());
      auto rec = encode_record(other, p);
      ASSERT_TRUE(rec.ok());
      bad = *rec;
    }
    spill(path_, bad);
    DiskRecovery rec;
    auto s = open_disk_store(o_, &rec);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    store_ = std::move(s).value();
    removed += rec.removed_invalid == 1 && !std::filesystem::exists(path_);
    ++cases;
    ASSERT_OK(store_->write(id_, payload_->span()));
  }
  EXPECT_EQ(removed, cases);
  std::printf("reliability: damage at open: %llu/%llu damaged records removed by the rebuild\n",
              static_cast<unsigned long long>(removed), static_cast<unsigned long long>(cases));
}

}  // namespace
}  // namespace tierkv
