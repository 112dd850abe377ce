// Decode attention on every backend against the CPU reference (fp32) and an fp64 reference, on
// fresh random inputs, with poisoned outputs and NaN checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backends.h"
#include "synth/paged_batch.h"
#include "tierkv/attention.h"

namespace tierkv {
namespace {

using synth::HostBatch;
using synth::PagedBatch;
using synth::PagedBatchSpec;
using test::BackendTest;

// Tolerances against a reference rounded to the storage type: the kernel's fp32 sums run in a
// different order, so results may differ by a rounding step or two of the output type.
struct Tolerance {
  double rel_l2;       // ||out - ref|| / ||ref||
  double max_abs_rel;  // max |out - ref| / max |ref|
};
Tolerance tolerance_for(DType t) {
  return t == DType::kBF16 ? Tolerance{1e-2, 1.0 / 64} : Tolerance{2e-3, 1.0 / 512};
}

struct Comparison {
  double rel_l2 = 0, max_abs_rel = 0;
  std::size_t non_finite = 0;
};

Comparison compare(const std::vector<std::uint8_t>& got, const std::vector<std::uint8_t>& ref,
                   DType t) {
  const std::size_t n = got.size() / dtype_size(t);
  double diff2 = 0, ref2 = 0, max_diff = 0, max_ref = 0;
  Comparison c;
  for (std::size_t i = 0; i < n; ++i) {
    const double g = load_as_float(got.data(), i, t);
    const double r = load_as_float(ref.data(), i, t);
    if (!std::isfinite(g)) ++c.non_finite;
    diff2 += (g - r) * (g - r);
    ref2 += r * r;
    max_diff = std::max(max_diff, std::abs(g - r));
    max_ref = std::max(max_ref, std::abs(r));
  }
  c.rel_l2 = std::sqrt(diff2 / std::max(ref2, 1e-30));
  c.max_abs_rel = max_diff / std::max(max_ref, 1e-30);
  return c;
}

void expect_close(const std::vector<std::uint8_t>& got, const std::vector<std::uint8_t>& ref,
                  DType t, const std::string& what) {
  const Comparison c = compare(got, ref, t);
  const Tolerance tol = tolerance_for(t);
  EXPECT_EQ(c.non_finite, 0u) << what << ": NaN/inf in the output (unwritten or broken)";
  EXPECT_LE(c.rel_l2, tol.rel_l2) << what;
  EXPECT_LE(c.max_abs_rel, tol.max_abs_rel) << what;
}

struct Case {
  DType dtype = DType::kBF16;
  std::int32_t head_dim = 128;
  std::int32_t num_kv_heads = 2;
  std::int32_t group = 4;
  std::int32_t page_tokens = 16;
  KvLayout layout = KvLayout::kNHD;
};

std::string case_name(const Case& c) {
  return std::string(dtype_name(c.dtype)) + "_d" + std::to_string(c.head_dim) + "_g" +
         std::to_string(c.group) + "_p" + std::to_string(c.page_tokens) +
         (c.layout == KvLayout::kNHD ? "_nhd" : "_hnd");
}

class DecodeAttention : public BackendTest {
 protected:
  // Runs one decode on the backend, checks it against both references and returns nothing: all
  // checks are expectations.
  void run_and_check(const Case& c, std::vector<std::int32_t> lens, std::uint64_t seed,
                     const DeviceInfo* plan_device = nullptr) {
    PagedBatchSpec spec;
    spec.seq_lens = std::move(lens);
    spec.num_kv_heads = c.num_kv_heads;
    spec.num_q_heads = c.num_kv_heads * c.group;
    spec.head_dim = c.head_dim;
    spec.page_tokens = c.page_tokens;
    spec.dtype = c.dtype;
    spec.layout = c.layout;
    spec.spare_pages = 3;
    spec.seed = seed;
    ASSERT_OK_AND_ASSIGN(PagedBatch batch, PagedBatch::create(backend(), stream(), spec));
    ASSERT_OK_AND_ASSIGN(const DecodePlan plan,
                         plan_decode_attention(plan_device ? *plan_device : backend().info(),
                                               batch.layer(), spec.num_q_heads, spec.seq_lens));
    Buffer workspace;
    if (plan.workspace_bytes > 0) {
      ASSERT_OK_AND_ASSIGN(workspace,
                           backend().allocate(MemoryKind::kDevice, plan.workspace_bytes));
    }
    ASSERT_OK(backend().decode_attention(batch.decode_args(plan, workspace.data()), stream()));
    HostBatch host;
    ASSERT_OK(batch.download(stream(), host));

    std::vector<std::uint8_t> ref32(host.out.size()), ref64(host.out.size());
    decode_attention_reference(host.decode_args(spec.num_q_heads, ref32.data()));
    decode_attention_reference_f64(host.decode_args(spec.num_q_heads, ref64.data()));
    const std::string what = case_name(c) + " splits=" + std::to_string(plan.num_splits);
    expect_close(host.out, ref32, c.dtype, what + " vs fp32 reference");
    expect_close(host.out, ref64, c.dtype, what + " vs fp64 reference");
    expect_close(ref32, ref64, c.dtype, what + " fp32 reference vs fp64");
  }
};

TEST_P(DecodeAttention, EveryShapeOnOddLengths) {
  std::vector<Case> cases;
  for (DType t : {DType::kBF16, DType::kF16}) {
    for (std::int32_t d : {64, 128, 256}) {
      for (std::int32_t g : {1, 3, 4, 8})
        cases.push_back({t, d, 2, g, 16, KvLayout::kNHD});
    }
  }
  for (std::int32_t p : {32, 64})
    cases.push_back({DType::kBF16, 128, 8, 4, p, KvLayout::kNHD});
  cases.push_back({DType::kBF16, 128, 8, 4, 16, KvLayout::kHND});
  cases.push_back({DType::kF16, 64, 4, 2, 32, KvLayout::kHND});
  std::mt19937_64 seeds(std::random_device{}());
  for (const Case& c : cases) {
    SCOPED_TRACE(case_name(c));
    run_and_check(c, {1, 15, 17, 4097}, seeds());
  }
}

TEST_P(DecodeAttention, LongSingleSequenceSplitsAcrossTheDevice) {
  std::mt19937_64 seeds(std::random_device{}());
  for (std::int32_t len : {2048, 4097, 32768}) {
    SCOPED_TRACE(len);
    run_and_check(Case{DType::kBF16, 128, 8, 4, 16, KvLayout::kNHD}, {len}, seeds());
  }
}

TEST_P(DecodeAttention, RaggedBatchesFromASkewedDistribution) {
  std::mt19937_64 rng(std::random_device{}());
  std::lognormal_distribution<double> skew(6.0, 1.5);  // median ~400 tokens, long tail
  for (int round = 0; round < 3; ++round) {
    std::vector<std::int32_t> lens(static_cast<std::size_t>(5 + round * 11));
    for (auto& l : lens)
      l = std::clamp<std::int32_t>(static_cast<std::int32_t>(skew(rng)), 1, 20000);
    run_and_check(Case{DType::kBF16, 128, 8, 4, 16, KvLayout::kNHD}, lens, rng());
  }
}

TEST_P(DecodeAttention, ManySplitsWithShortSequencesInTheBatch) {
  // A plan for a much wider device forces splits even at batch 6, so some sequences end before the
  // last split: the merge must use only the splits a sequence has.
  DeviceInfo wide = backend().info();
  wide.compute_units = 4096;
  std::mt19937_64 seeds(std::random_device{}());
  run_and_check(Case{DType::kF16, 128, 2, 4, 16, KvLayout::kNHD}, {3000, 1, 64, 65, 700, 2999},
                seeds(), &wide);
}

TEST_P(DecodeAttention, OneTokenReturnsItsValueExactly) {
  PagedBatchSpec spec;
  spec.seq_lens = {1, 1, 1};
  spec.num_kv_heads = 8;
  spec.num_q_heads = 32;
  spec.seed = 5;
  ASSERT_OK_AND_ASSIGN(PagedBatch batch, PagedBatch::create(backend(), stream(), spec));
  ASSERT_OK_AND_ASSIGN(const DecodePlan plan,
                       plan_decode_attention(backend().info(), batch.layer(), 32, spec.seq_lens));
  ASSERT_OK(backend().decode_attention(batch.decode_args(plan, nullptr), stream()));
  HostBatch host;
  ASSERT_OK(batch.download(stream(), host));
  const PagedKvLayer& kv = host.layer;
  for (std::int32_t b = 0; b < 3; ++b) {
    const std::int32_t page = host.block_table[std::size_t(b) * kv.block_table_stride];
    for (std::int32_t h = 0; h < 32; ++h) {
      for (std::int32_t d = 0; d < 128; ++d) {
        const float v = load_as_float(host.v.data(), kv.offset(page, 0, h / 4) + d, kv.dtype);
        ASSERT_EQ(load_as_float(host.out.data(), (std::size_t(b) * 32 + h) * 128 + d, kv.dtype), v)
            << b << " " << h << " " << d;
      }
    }
  }
}

TEST_P(DecodeAttention, RejectsBadArguments) {
  PagedBatchSpec spec;
  spec.seq_lens = {10, 20};
  ASSERT_OK_AND_ASSIGN(PagedBatch batch, PagedBatch::create(backend(), stream(), spec));
  ASSERT_OK_AND_ASSIGN(const DecodePlan plan,
                       plan_decode_attention(backend().info(), batch.layer(), 32, spec.seq_lens));
  const DecodeAttentionArgs good = batch.decode_args(plan, nullptr);

  DecodeAttentionArgs misaligned = good;
  misaligned.q = static_cast<const char*>(good.q) + 2;
  EXPECT_EQ(backend().decode_attention(misaligned, stream()).code(), StatusCode::kInvalidArgument);
  DecodeAttentionArgs wrong_heads = good;
  wrong_heads.num_q_heads = 30;
  EXPECT_EQ(backend().decode_attention(wrong_heads, stream()).code(), StatusCode::kInvalidArgument);
  DecodeAttentionArgs wrong_plan = good;
  wrong_plan.plan.batch = 3;
  EXPECT_EQ(backend().decode_attention(wrong_plan, stream()).code(), StatusCode::kInvalidArgument);
  DecodeAttentionArgs no_scale = good;
  no_scale.sm_scale = NAN;
  EXPECT_EQ(backend().decode_attention(no_scale, stream()).code(), StatusCode::kInvalidArgument);

  const std::vector<std::int32_t> zero_len = {0, 20};
  EXPECT_EQ(plan_decode_attention(backend().info(), batch.layer(), 32, zero_len).status().code(),
            StatusCode::kInvalidArgument);
  const std::vector<std::int32_t> one_len = {20};
  EXPECT_EQ(plan_decode_attention(backend().info(), batch.layer(), 32, one_len).status().code(),
            StatusCode::kInvalidArgument);
  const std::vector<std::int32_t> too_long = {10, 100000};  // more pages than a table row holds
  EXPECT_EQ(plan_decode_attention(backend().info(), batch.layer(), 32, too_long).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(
      plan_decode_attention(backend().info(), batch.layer(), 8 * 16, spec.seq_lens).status().code(),
      StatusCode::kUnimplemented);  // group 16
  PagedKvLayer odd_dim = batch.layer();
  odd_dim.head_dim = 96;
  EXPECT_EQ(plan_decode_attention(backend().info(), odd_dim, 32, spec.seq_lens).status().code(),
            StatusCode::kUnimplemented);
  ASSERT_OK(stream().synchronize());
}

TIERKV_INSTANTIATE_BACKENDS(DecodeAttention);

TEST(DecodePlan, SplitsOnlyWhenTheDeviceWouldIdle) {
  DeviceInfo h100;
  h100.backend = BackendKind::kCuda;
  h100.compute_units = 132;
  PagedKvLayer kv;
  kv.batch = 1;
  kv.num_kv_heads = 8;
  kv.head_dim = 128;
  kv.page_tokens = 16;
  kv.block_table_stride = 4096;
  const std::vector<std::int32_t> one = {4096};
  ASSERT_OK_AND_ASSIGN(const DecodePlan p1, plan_decode_attention(h100, kv, 32, one));
  EXPECT_GT(p1.num_splits, 1);
  EXPECT_GE(std::int64_t{p1.num_splits} * p1.tokens_per_split, 4096);
  EXPECT_EQ(p1.tokens_per_split % 64, 0);
  EXPECT_GT(p1.workspace_bytes, 0u);

  kv.batch = 128;
  const std::vector<std::int32_t> many(128, 2048);
  ASSERT_OK_AND_ASSIGN(const DecodePlan p2, plan_decode_attention(h100, kv, 32, many));
  EXPECT_EQ(p2.num_splits, 1);
  EXPECT_EQ(p2.workspace_bytes, 0u);

  // Batch 16 x 8 heads = 128 blocks on 528 slots: four splits fill one wave; five would need two.
  kv.batch = 16;
  const std::vector<std::int32_t> sixteen(16, 2048);
  ASSERT_OK_AND_ASSIGN(const DecodePlan p4, plan_decode_attention(h100, kv, 32, sixteen));
  EXPECT_LE(16 * 8 * p4.num_splits, 4 * 132);
  EXPECT_GT(p4.num_splits, 1);

  DeviceInfo cpu;  // the CPU backend never splits
  kv.batch = 1;
  ASSERT_OK_AND_ASSIGN(const DecodePlan p3, plan_decode_attention(cpu, kv, 32, one));
  EXPECT_EQ(p3.num_splits, 1);
}

}  // namespace
}  // namespace tierkv
