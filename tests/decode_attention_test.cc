// Decode attention on every backend against the CPU reference (fp32) and an fp64 reference, on
// fresh random inputs, with poisoned (NaN-filled) outputs and NaN checks.
//
// Tolerances, against references rounded to the storage type: bf16 relative L2 error <= 1e-2 and
// max |error| <= max |ref| / 64; fp16 2e-3 and max |ref| / 512. The kernel sums in fp32 in another
// order and rounds the softmax probabilities to the storage type before the P.V product, so an
// output may differ by a rounding step or two of the output type; a wrong index or a lost split
// is off by far more.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "attention_checks.h"
#include "backends.h"
#include "synth/paged_batch.h"
#include "tierkv/attention.h"

namespace tierkv {
namespace {

using synth::HostBatch;
using synth::PagedBatch;
using synth::PagedBatchSpec;
using test::BackendTest;
using test::expect_close;

struct Case {
  DType dtype = DType::kBF16;
  std::int32_t head_dim = 128;
  std::int32_t num_kv_heads = 2;
  std::int32_t group = 4;
  std::int32_t page_tokens = 16;
  KvLayout layout = KvLayout::kNHD;
  DecodePlanOptions options;  // default: the planner's choice
};

std::string case_name(const Case& c) {
  std::string s = test::shape_name(c);
  if (c.options.splits > 0) s += "_s" + std::to_string(c.options.splits);
  if (c.options.merge) s += "_" + std::string(decode_merge_name(*c.options.merge));
  if (c.options.pipeline) s += "_pipe" + std::to_string(*c.options.pipeline);
  if (c.options.heads_per_block) s += "_fused" + std::to_string(*c.options.heads_per_block);
  return s;
}

PagedBatchSpec spec_of(const Case& c, std::vector<std::int32_t> lens, std::uint64_t seed) {
  PagedBatchSpec spec = test::shape_spec(c, seed);
  spec.seq_lens = std::move(lens);
  return spec;
}

// The last-block merge counts in the first plan.workspace_counter_bytes of the workspace; the
// contract (tierkv/attention.h) wants them zero before the first run and leaves them zero after
// each.
class DecodeAttention : public BackendTest {
 protected:
  // A workspace for `plan` as the contract asks for it: the counters zero, the rest garbage (which
  // must not matter: every run rewrites what it reads).
  void make_workspace(const DecodePlan& plan, Buffer& workspace) {
    if (plan.workspace_bytes == 0) return;
    ASSERT_OK_AND_ASSIGN(workspace, backend().allocate(MemoryKind::kDevice, plan.workspace_bytes));
    ASSERT_OK(stream().fill(workspace.data(), 0x5a, plan.workspace_bytes));
    if (plan.workspace_counter_bytes > 0)
      ASSERT_OK(stream().fill(workspace.data(), 0, plan.workspace_counter_bytes));
  }

  // Every run must leave the counters zero, or the next run on the workspace (or graph replay)
  // would count from the wrong start.
  void expect_counters_zero(const DecodePlan& plan, const Buffer& workspace) {
    if (plan.workspace_counter_bytes == 0) return;
    std::vector<std::uint8_t> counters(plan.workspace_counter_bytes);
    ASSERT_OK(stream().copy(counters.data(), workspace.data(), counters.size()));
    ASSERT_OK(stream().synchronize());
    EXPECT_EQ(std::count(counters.begin(), counters.end(), std::uint8_t{0}),
              static_cast<std::ptrdiff_t>(counters.size()))
        << "the last-block merge left counters set";
  }

  // Runs one decode on the backend and checks it against both references; all checks are
  // expectations. The output starts as NaN (PagedBatch poisons it), so an unwritten element fails.
  void run_and_check(const Case& c, std::vector<std::int32_t> lens, std::uint64_t seed,
                     const DeviceInfo* plan_device = nullptr) {
    const PagedBatchSpec spec = spec_of(c, std::move(lens), seed);
    ASSERT_OK_AND_ASSIGN(PagedBatch batch, PagedBatch::create(backend(), stream(), spec));
    ASSERT_OK_AND_ASSIGN(
        const DecodePlan plan,
        plan_decode_attention(plan_device ? *plan_device : backend().info(), batch.layer(),
                              spec.num_q_heads, spec.seq_lens, c.options));
    Buffer workspace;
    make_workspace(plan, workspace);
    ASSERT_OK(backend().decode_attention(batch.decode_args(plan, workspace.data()), stream()));
    HostBatch host;
    ASSERT_OK(batch.download(stream(), host));
    check_against_references(c, spec, host, plan);
    expect_counters_zero(plan, workspace);
  }

  void check_against_references(const Case& c, const PagedBatchSpec& spec, const HostBatch& host,
                                const DecodePlan& plan) {
    std::vector<std::uint8_t> ref32(host.out.size()), ref64(host.out.size());
    decode_attention_reference(host.decode_args(spec.num_q_heads, ref32.data()));
    decode_attention_reference_f64(host.decode_args(spec.num_q_heads, ref64.data()));
    const std::string what = case_name(c) + " plan: " + std::to_string(plan.num_splits) + " " +
                             std::string(decode_merge_name(plan.merge)) + " pipeline " +
                             std::to_string(plan.pipeline) + " heads per block " +
                             std::to_string(plan.heads_per_block);
    expect_close(host.out, ref32, c.dtype, what + " vs fp32 reference");
    expect_close(host.out, ref64, c.dtype, what + " vs fp64 reference");
    expect_close(ref32, ref64, c.dtype, what + " fp32 reference vs fp64");
  }
};

// Lengths that cover the edges: one token, one into a page, one short of a page boundary, and a
// random length, all different.
std::vector<std::int32_t> edge_lengths(std::int32_t page_tokens, std::mt19937_64& rng) {
  std::uniform_int_distribution<std::int32_t> any(2, 3000);
  return {1, page_tokens + 1, 4 * page_tokens - 1, any(rng), 2049};
}

// Every dtype x head dim x page size x merge, with the GQA group, layout and pipeline rotating
// through their values, on fresh random inputs each time.
TEST_P(DecodeAttention, EveryDtypeHeadDimPageSizeAndMerge) {
  std::mt19937_64 rng(std::random_device{}());
  const std::int32_t groups[] = {1, 3, 4, 8};
  int n = 0;
  for (DType t : {DType::kBF16, DType::kF16}) {
    for (std::int32_t d : {64, 128, 256}) {
      for (std::int32_t page : {16, 32, 64}) {
        for (int merge = 0; merge < 5; ++merge, ++n) {
          Case c{t, d, 2, groups[n % 4], page, n % 3 == 0 ? KvLayout::kHND : KvLayout::kNHD, {}};
          if (backend().kind() == BackendKind::kCuda) {
            c.options.pipeline = n % 4;
            if (merge == 1) c.options.merge = DecodeMerge::kNone, c.options.splits = 1;
            if (merge == 2) c.options.merge = DecodeMerge::kCluster, c.options.splits = 3 + n % 14;
            if (merge == 3)
              c.options.merge = DecodeMerge::kWorkspace, c.options.splits = 5 + n % 40;
            if (merge == 4)
              c.options.merge = DecodeMerge::kWorkspaceLast, c.options.splits = 2 + n % 40;
          }
          SCOPED_TRACE(case_name(c));
          run_and_check(c, edge_lengths(page, rng), rng());
        }
      }
    }
  }
}

// Blocks that stream 2, 4 or 8 KV heads together (whole token rows of their heads), without
// splits and with either workspace merge; the heads per block rotate so that every (heads, merge)
// pair meets every dtype and head dim.
TEST_P(DecodeAttention, HeadFusedBlocks) {
  std::mt19937_64 rng(std::random_device{}());
  const std::int32_t heads_per_block[] = {2, 4, 8};
  int n = 0;
  for (DType t : {DType::kBF16, DType::kF16}) {
    for (std::int32_t d : {64, 128}) {
      for (std::int32_t page : {16, 32, 64, 8}) {
        for (DecodeMerge merge :
             {DecodeMerge::kNone, DecodeMerge::kWorkspace, DecodeMerge::kWorkspaceLast}) {
          const std::int32_t hb = heads_per_block[(n + n / 3) % 3];
          // The CPU backend ignores both: one merge per case is enough there.
          if (backend().kind() != BackendKind::kCuda && merge != DecodeMerge::kNone) {
            ++n;
            continue;
          }
          const std::int32_t kv_heads[] = {8, hb, 16, 2 * hb};  // one block of heads, or more
          Case c{t,
                 d,
                 kv_heads[n % 4],
                 n % 2 == 0 ? 4 : 1,
                 page,
                 n % 4 == 3 ? KvLayout::kHND : KvLayout::kNHD,
                 {}};
          if (backend().kind() == BackendKind::kCuda) {
            c.options.heads_per_block = hb;
            c.options.merge = merge;
            c.options.splits = merge == DecodeMerge::kNone ? 1 : 2 + n % 9;
            c.options.pipeline = n % 2;
          }
          ++n;
          SCOPED_TRACE(case_name(c));
          run_and_check(c, edge_lengths(page, rng), rng());
        }
      }
    }
  }
}

TEST_P(DecodeAttention, PagesSmallerThanATileOrNotAPowerOfTwo) {
  std::mt19937_64 rng(std::random_device{}());
  for (std::int32_t page : {1, 8, 24, 48}) {
    for (DecodeMerge merge :
         {DecodeMerge::kCluster, DecodeMerge::kWorkspace, DecodeMerge::kWorkspaceLast}) {
      Case c{DType::kBF16, 128, 2, 4, page, KvLayout::kNHD, {}};
      if (backend().kind() == BackendKind::kCuda) {
        c.options.merge = merge;
        c.options.splits = 4;
      }
      SCOPED_TRACE(case_name(c));
      run_and_check(c, {1, page + 1, 1000, 333}, rng());
    }
  }
}

TEST_P(DecodeAttention, LongSingleSequenceSplitsAcrossTheDevice) {
  std::mt19937_64 seeds(std::random_device{}());
  for (std::int32_t len : {2048, 4097, 32768}) {
    SCOPED_TRACE(len);
    run_and_check(Case{DType::kBF16, 128, 8, 4, 16, KvLayout::kNHD, {}}, {len}, seeds());
  }
}

TEST_P(DecodeAttention, RaggedBatchesFromASkewedDistribution) {
  std::mt19937_64 rng(std::random_device{}());
  std::lognormal_distribution<double> skew(6.0, 1.5);  // median ~400 tokens, long tail
  for (int round = 0; round < 6; ++round) {
    std::vector<std::int32_t> lens(static_cast<std::size_t>(5 + round * 9));
    for (auto& l : lens)
      l = std::clamp<std::int32_t>(static_cast<std::int32_t>(skew(rng)), 1, 20000);
    lens[0] = 1;
    Case c{DType::kBF16, 128, 8, 4, 16, KvLayout::kNHD, {}};
    if (backend().kind() == BackendKind::kCuda && round % 2 == 1) {
      c.options.merge = round == 1   ? DecodeMerge::kWorkspace
                        : round == 3 ? DecodeMerge::kCluster
                                     : DecodeMerge::kWorkspaceLast;
      c.options.splits = round == 3 ? 16 : 24;
    }
    SCOPED_TRACE(case_name(c));
    run_and_check(c, lens, rng());
  }
}

// The last-block merge, per head and head-fused, on ragged batches from the skewed distribution
// (one token, lengths ending mid-page, short sequences with fewer splits than the longest),
// several runs on one workspace with fresh inputs each: a counter left set by a run would make the
// next one skip its merge (its output stays poisoned) or merge too early.
TEST_P(DecodeAttention, LastBlockMergeRunsAgainOnTheSameWorkspace) {
  std::mt19937_64 rng(std::random_device{}());
  std::lognormal_distribution<double> skew(6.0, 1.5);  // median ~400 tokens, long tail
  const bool cuda = backend().kind() == BackendKind::kCuda;
  const std::int32_t groups[] = {4, 1, 8, 3};
  int n = 0;
  for (DType t : {DType::kBF16, DType::kF16}) {
    for (std::int32_t d : {64, 128}) {
      for (std::int32_t page : {16, 32, 64}) {
        for (std::int32_t hb : {1, 2, 4, 8}) {
          // The CPU reference has no splits or heads per block: a few cases show it takes the
          // repeated runs.
          if (!cuda && (hb != 1 || page != 16 || d != 128)) continue;
          Case c{t, d, 8, groups[n % 4], page, KvLayout::kNHD, {}};
          if (cuda) {
            c.options.merge = DecodeMerge::kWorkspaceLast;
            c.options.splits = 3 + n % 14;
            c.options.heads_per_block = hb;
            c.options.pipeline = n % 2;
          }
          std::vector<std::int32_t> lens(static_cast<std::size_t>(4 + n % 9));
          for (auto& l : lens)
            l = std::clamp<std::int32_t>(static_cast<std::int32_t>(skew(rng)), 1, 5000);
          lens[0] = 1;
          lens[1] = 3 * page + page / 2;  // ends mid-page
          lens[2] = 5000;                 // the longest: every split
          ++n;
          SCOPED_TRACE(case_name(c));
          Buffer workspace;
          DecodePlan first;
          for (int run = 0; run < 3; ++run) {
            SCOPED_TRACE("run " + std::to_string(run));
            const PagedBatchSpec spec = spec_of(c, lens, rng());
            ASSERT_OK_AND_ASSIGN(PagedBatch batch, PagedBatch::create(backend(), stream(), spec));
            ASSERT_OK_AND_ASSIGN(const DecodePlan plan,
                                 plan_decode_attention(backend().info(), batch.layer(),
                                                       spec.num_q_heads, spec.seq_lens, c.options));
            if (run == 0) {
              first = plan;
              make_workspace(plan, workspace);
              if (cuda) {
                ASSERT_EQ(plan.merge, DecodeMerge::kWorkspaceLast);
                ASSERT_EQ(plan.heads_per_block, hb);
              }
            }
            ASSERT_EQ(plan.workspace_bytes, first.workspace_bytes);
            const DecodeAttentionArgs args = batch.decode_args(plan, workspace.data());
            ASSERT_OK(backend().decode_attention(args, stream()));
            // The last run goes twice in a row (the second waits for the first as a programmatic
            // dependent): it must find the counters the first left.
            if (run == 2) ASSERT_OK(backend().decode_attention(args, stream()));
            HostBatch host;
            ASSERT_OK(batch.download(stream(), host));
            check_against_references(c, spec, host, plan);
            expect_counters_zero(plan, workspace);
          }
        }
      }
    }
  }
}

// A plan made for the H100 with the last-block merge runs on every backend (the CPU reference
// ignores the splits).
TEST_P(DecodeAttention, APlanWithTheLastBlockMergeRunsOnEveryBackend) {
  std::mt19937_64 seeds(std::random_device{}());
  const DeviceInfo h100 = test::h100_device();
  for (std::int32_t hb : {1, 4}) {
    Case c{DType::kBF16, 128, 8, 4, 16, KvLayout::kNHD, {}};
    c.options.merge = DecodeMerge::kWorkspaceLast;
    c.options.splits = 8;
    c.options.heads_per_block = hb;
    SCOPED_TRACE(case_name(c));
    run_and_check(c, {2000, 1, 777}, seeds(), &h100);
  }
}

TEST_P(DecodeAttention, ManySplitsWithShortSequencesInTheBatch) {
  // A plan for a much wider device forces splits even at batch 6, so some sequences end before the
  // last split: the merge must use only the splits a sequence has.
  DeviceInfo wide = backend().info();
  wide.compute_units = 4096;
  std::mt19937_64 seeds(std::random_device{}());
  run_and_check(Case{DType::kF16, 128, 2, 4, 16, KvLayout::kNHD, {}}, {3000, 1, 64, 65, 700, 2999},
                seeds(), &wide);
}

// A graph captured for some lengths is replayed after the lengths on the device shrank: the kernel
// reads them at every run.
// Replays twice, the output poisoned before each, so that the second replay must merge too (the
// last-block merge's counters must be back at zero after the first).
TEST_P(DecodeAttention, GraphReplayAfterTheLengthsChange) {
  std::mt19937_64 rng(std::random_device{}());
  const std::pair<DecodeMerge, std::int32_t> variants[] = {
      {DecodeMerge::kNone, 1},          {DecodeMerge::kCluster, 1},
      {DecodeMerge::kWorkspace, 1},     {DecodeMerge::kWorkspaceLast, 1},
      {DecodeMerge::kWorkspace, 2},     {DecodeMerge::kWorkspaceLast, 4},
      {DecodeMerge::kWorkspaceLast, 8},
  };
  for (const auto& [merge, hb] : variants) {
    Case c{DType::kBF16, 128, 8, 4, 16, KvLayout::kNHD, {}};
    if (backend().kind() == BackendKind::kCuda) {
      c.options.merge = merge;
      c.options.splits = merge == DecodeMerge::kNone ? 1 : 6;
      if (hb > 1) c.options.heads_per_block = hb;
    }
    SCOPED_TRACE(case_name(c));
    const std::vector<std::int32_t> planned = {3000, 17, 1500};
    PagedBatchSpec spec = spec_of(c, planned, rng());
    ASSERT_OK_AND_ASSIGN(PagedBatch batch, PagedBatch::create(backend(), stream(), spec));
    ASSERT_OK_AND_ASSIGN(const DecodePlan plan,
                         plan_decode_attention(backend().info(), batch.layer(), spec.num_q_heads,
                                               spec.seq_lens, c.options));
    Buffer workspace;
    make_workspace(plan, workspace);
    const DecodeAttentionArgs args = batch.decode_args(plan, workspace.data());
    ASSERT_OK(backend().decode_attention(args, stream()));  // outside the capture first
    ASSERT_OK(stream().begin_capture());
    const Status queued = backend().decode_attention(args, stream());
    auto graph = stream().end_capture();
    ASSERT_OK(queued);
    ASSERT_TRUE(graph.ok()) << graph.status().to_string();

    const std::vector<std::int32_t> shorter = {2001, 1, 1499};
    ASSERT_OK(stream().copy(const_cast<std::int32_t*>(batch.layer().seq_lens), shorter.data(),
                            shorter.size() * sizeof(std::int32_t)));
    ASSERT_OK(stream().fill(batch.out(), 0xff, batch.out_bytes()));
    ASSERT_OK((*graph)->launch(stream()));
    ASSERT_OK(stream().fill(batch.out(), 0xff, batch.out_bytes()));
    ASSERT_OK((*graph)->launch(stream()));  // twice: a replay leaves nothing behind
    HostBatch host;
    ASSERT_OK(batch.download(stream(), host));
    spec.seq_lens = shorter;
    check_against_references(c, spec, host, plan);
    expect_counters_zero(plan, workspace);
  }
}

TEST_P(DecodeAttention, OneTokenReturnsItsValueExactly) {
  for (DecodeMerge merge : {DecodeMerge::kNone, DecodeMerge::kCluster, DecodeMerge::kWorkspace,
                            DecodeMerge::kWorkspaceLast}) {
    PagedBatchSpec spec;
    spec.seq_lens = {1, 1, 1};
    spec.num_kv_heads = 8;
    spec.num_q_heads = 32;
    spec.seed = 5;
    ASSERT_OK_AND_ASSIGN(PagedBatch batch, PagedBatch::create(backend(), stream(), spec));
    DecodePlanOptions options;
    if (backend().kind() == BackendKind::kCuda) {
      options.merge = merge;
      options.splits = merge == DecodeMerge::kNone ? 1 : 4;
    }
    ASSERT_OK_AND_ASSIGN(
        const DecodePlan plan,
        plan_decode_attention(backend().info(), batch.layer(), 32, spec.seq_lens, options));
    Buffer workspace;
    make_workspace(plan, workspace);
    ASSERT_OK(backend().decode_attention(batch.decode_args(plan, workspace.data()), stream()));
    HostBatch host;
    ASSERT_OK(batch.download(stream(), host));
    test::expect_outputs_are_first_value(host, 3, 32, std::string(decode_merge_name(merge)));
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
  DecodeAttentionArgs split_without_merge = good;
  split_without_merge.plan.num_splits = 4;
  split_without_merge.plan.merge = DecodeMerge::kNone;
  EXPECT_EQ(backend().decode_attention(split_without_merge, stream()).code(),
            StatusCode::kInvalidArgument);
  DecodeAttentionArgs huge_cluster = good;
  huge_cluster.plan.num_splits = 17;
  huge_cluster.plan.merge = DecodeMerge::kCluster;
  EXPECT_EQ(backend().decode_attention(huge_cluster, stream()).code(),
            StatusCode::kInvalidArgument);
  DecodeAttentionArgs no_workspace = good;
  no_workspace.plan.num_splits = 2;
  no_workspace.plan.tokens_per_split = 16;
  no_workspace.plan.merge = DecodeMerge::kWorkspace;
  no_workspace.plan.workspace_bytes = 4096;
  EXPECT_EQ(backend().decode_attention(no_workspace, stream()).code(),
            StatusCode::kInvalidArgument);
  // The kernels lay the workspace out from the shape: a plan claiming less is refused.
  ASSERT_OK_AND_ASSIGN(Buffer small, backend().allocate(MemoryKind::kDevice, 4096));
  DecodeAttentionArgs small_workspace = good;
  small_workspace.workspace = small.data();
  small_workspace.plan.num_splits = 2;
  small_workspace.plan.tokens_per_split = 16;
  small_workspace.plan.merge = DecodeMerge::kWorkspaceLast;
  small_workspace.plan.workspace_bytes = 64;
  small_workspace.plan.workspace_counter_bytes = 64;
  EXPECT_EQ(backend().decode_attention(small_workspace, stream()).code(),
            StatusCode::kInvalidArgument);
  DecodeAttentionArgs odd_fused = good;
  odd_fused.plan.heads_per_block = 3;
  EXPECT_EQ(backend().decode_attention(odd_fused, stream()).code(), StatusCode::kInvalidArgument);

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
  DecodePlanOptions contradictory;
  contradictory.splits = 4;
  contradictory.merge = DecodeMerge::kNone;
  EXPECT_EQ(plan_decode_attention(backend().info(), batch.layer(), 32, spec.seq_lens, contradictory)
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  ASSERT_OK(stream().synchronize());
}

TIERKV_INSTANTIATE_BACKENDS(DecodeAttention);

TEST(DecodePlan, SplitsFillTheDeviceOnlyWhenItWouldIdle) {
  // Batch 1: 8 (sequence, KV head) pairs on 132 multiprocessors: split.
  const std::vector<std::int32_t> one = {4096};
  ASSERT_OK_AND_ASSIGN(
      const DecodePlan p1,
      plan_decode_attention(test::h100_device(), test::llama_kv_shape(1), 32, one));
  EXPECT_GE(p1.num_splits, 8);
  EXPECT_LE(p1.num_splits * 8, 132);
  EXPECT_NE(p1.merge, DecodeMerge::kNone);
  EXPECT_EQ(p1.tokens_per_split % 16, 0);
  EXPECT_GE(std::int64_t{p1.num_splits} * p1.tokens_per_split, 4096);
  EXPECT_EQ(p1.workspace_bytes > 0, p1.merge == DecodeMerge::kWorkspace);
  // Short: still split, never below 64 tokens a split.
  const std::vector<std::int32_t> short_one = {256};
  ASSERT_OK_AND_ASSIGN(
      const DecodePlan ps,
      plan_decode_attention(test::h100_device(), test::llama_kv_shape(1), 32, short_one));
  EXPECT_GE(ps.num_splits, 2);
  EXPECT_GE(ps.tokens_per_split, 64);

  // Batch 4: two splits, merged by clusters of two blocks in the same launch.
  const std::vector<std::int32_t> four(4, 8192);
  ASSERT_OK_AND_ASSIGN(
      const DecodePlan p4,
      plan_decode_attention(test::h100_device(), test::llama_kv_shape(4), 32, four));
  EXPECT_EQ(p4.num_splits, 2);
  EXPECT_EQ(p4.merge, DecodeMerge::kCluster);
  EXPECT_EQ(p4.workspace_bytes, 0u);

  // Batch 32: 256 pairs, two waves of blocks: no split, two blocks per multiprocessor.
  const std::vector<std::int32_t> mid(32, 2048);
  ASSERT_OK_AND_ASSIGN(
      const DecodePlan pm,
      plan_decode_attention(test::h100_device(), test::llama_kv_shape(32), 32, mid));
  EXPECT_EQ(pm.num_splits, 1);
  EXPECT_EQ(pm.merge, DecodeMerge::kNone);
  EXPECT_EQ(pm.pipeline, 2);
  EXPECT_EQ(pm.heads_per_block, 1);

  // Batch 128: 128 blocks of 8 KV heads each fill the device: no split, head-fused blocks.
  const std::vector<std::int32_t> many(128, 2048);
  ASSERT_OK_AND_ASSIGN(
      const DecodePlan p2,
      plan_decode_attention(test::h100_device(), test::llama_kv_shape(128), 32, many));
  EXPECT_EQ(p2.num_splits, 1);
  EXPECT_EQ(p2.merge, DecodeMerge::kNone);
  EXPECT_EQ(p2.workspace_bytes, 0u);
  EXPECT_EQ(p2.heads_per_block, 8);

  DeviceInfo cpu;  // the CPU backend never splits
  ASSERT_OK_AND_ASSIGN(const DecodePlan p3,
                       plan_decode_attention(cpu, test::llama_kv_shape(1), 32, one));
  EXPECT_EQ(p3.num_splits, 1);
  EXPECT_EQ(p3.merge, DecodeMerge::kNone);
}

TEST(DecodePlan, OneLongSequenceAmongShortOnesGetsFixedSplits) {
  // 31 short sequences and one of 32K: one block per pair would leave the long one's blocks
  // streaming alone long after the rest; fixed splits cut it into many.
  std::vector<std::int32_t> lens(32, 300);
  lens[7] = 32768;
  PagedKvLayer kv = test::llama_kv_shape(32);
  ASSERT_OK_AND_ASSIGN(const DecodePlan p,
                       plan_decode_attention(test::h100_device(), kv, 32, lens));
  // Merged by the last block of each sequence's splits (measured faster on skewed batches).
  EXPECT_EQ(p.merge, DecodeMerge::kWorkspaceLast);
  EXPECT_GT(p.num_splits, 4);
  EXPECT_GT(p.workspace_counter_bytes, 0u);
  EXPECT_GT(p.workspace_bytes, p.workspace_counter_bytes);
  // The second-kernel merge when asked for.
  DecodePlanOptions o;
  o.merge = DecodeMerge::kWorkspace;
  ASSERT_OK_AND_ASSIGN(const DecodePlan w,
                       plan_decode_attention(test::h100_device(), kv, 32, lens, o));
  EXPECT_EQ(w.merge, DecodeMerge::kWorkspace);
  EXPECT_EQ(w.num_splits, p.num_splits);
  EXPECT_EQ(w.workspace_counter_bytes, 0u);
}

TEST(DecodePlan, OptionsOverrideTheChoice) {
  const std::vector<std::int32_t> one = {4096};
  DecodePlanOptions o;
  o.splits = 40;
  ASSERT_OK_AND_ASSIGN(
      const DecodePlan w,
      plan_decode_attention(test::h100_device(), test::llama_kv_shape(1), 32, one, o));
  EXPECT_EQ(w.merge, DecodeMerge::kWorkspace);  // more than a cluster holds
  EXPECT_GE(std::int64_t{w.num_splits} * w.tokens_per_split, 4096);
  EXPECT_GT(w.workspace_bytes, 0u);
  o.splits = 6;
  o.pipeline = 1;
  o.programmatic_launch = false;
  ASSERT_OK_AND_ASSIGN(
      const DecodePlan c,
      plan_decode_attention(test::h100_device(), test::llama_kv_shape(1), 32, one, o));
  EXPECT_EQ(c.merge, DecodeMerge::kCluster);
  EXPECT_EQ(c.num_splits, 6);
  EXPECT_EQ(c.pipeline, 1);
  EXPECT_FALSE(c.programmatic_launch);
}

TEST(DecodePlan, UniformBatchesKeepTheSecondKernelMerge) {
  // Uniform lengths: the planner keeps the second-kernel merge (within 1% of the last block at
  // batch 1, and 0.04-0.1 us ahead up to 8K).
  const std::vector<std::int32_t> one = {4096};
  ASSERT_OK_AND_ASSIGN(const DecodePlan w, plan_decode_attention(test::h100_device(),
                                                                 test::llama_kv_shape(1), 32, one));
  EXPECT_EQ(w.merge, DecodeMerge::kWorkspace);
  EXPECT_EQ(w.workspace_counter_bytes, 0u);

  // Asked for alone: the planner's split count, merged by the last blocks; the counters (one per
  // sequence and KV head, 256-byte aligned) lead the workspace.
  DecodePlanOptions o;
  o.merge = DecodeMerge::kWorkspaceLast;
  ASSERT_OK_AND_ASSIGN(
      const DecodePlan l,
      plan_decode_attention(test::h100_device(), test::llama_kv_shape(1), 32, one, o));
  EXPECT_EQ(l.merge, DecodeMerge::kWorkspaceLast);
  EXPECT_EQ(l.num_splits, w.num_splits);
  EXPECT_EQ(l.tokens_per_split, w.tokens_per_split);
  EXPECT_EQ(l.workspace_counter_bytes, 256u);
  EXPECT_EQ(l.workspace_bytes, w.workspace_bytes);  // kWorkspace reserves the same bytes
  EXPECT_EQ(decode_merge_name(l.merge), "last");

  // With splits and with head-fused blocks.
  o.splits = 16;
  o.heads_per_block = 4;
  const std::vector<std::int32_t> sixteen(16, 2048);
  ASSERT_OK_AND_ASSIGN(
      const DecodePlan f,
      plan_decode_attention(test::h100_device(), test::llama_kv_shape(16), 32, sixteen, o));
  EXPECT_EQ(f.merge, DecodeMerge::kWorkspaceLast);
  EXPECT_EQ(f.num_splits, 16);
  EXPECT_EQ(f.heads_per_block, 4);
  EXPECT_EQ(f.workspace_counter_bytes, 16u * 8 * 4);  // a multiple of 256 already
  const std::size_t rows = 16u * 32 * 16;
  EXPECT_EQ(f.workspace_bytes, f.workspace_counter_bytes + rows * 128 * 4 + rows * 4);

  // Skewed lengths keep the planner's fixed splits, merged the asked way.
  std::vector<std::int32_t> lens(32, 300);
  lens[7] = 32768;
  DecodePlanOptions last;
  last.merge = DecodeMerge::kWorkspaceLast;
  ASSERT_OK_AND_ASSIGN(
      const DecodePlan r,
      plan_decode_attention(test::h100_device(), test::llama_kv_shape(32), 32, lens, last));
  EXPECT_EQ(r.merge, DecodeMerge::kWorkspaceLast);
  EXPECT_GT(r.num_splits, 4);

  // One split needs no merge.
  last.splits = 1;
  last.merge.reset();
  ASSERT_OK_AND_ASSIGN(
      const DecodePlan s1,
      plan_decode_attention(test::h100_device(), test::llama_kv_shape(1), 32, one, last));
  EXPECT_EQ(s1.merge, DecodeMerge::kNone);
  EXPECT_EQ(s1.workspace_bytes, 0u);
}

TEST(DecodePlan, HeadFusedBlocksOf2_4And8Heads) {
  const std::vector<std::int32_t> lens(32, 4096);
  for (std::int32_t hb : {2, 4, 8}) {
    DecodePlanOptions o;
    o.heads_per_block = hb;
    ASSERT_OK_AND_ASSIGN(
        const DecodePlan p,
        plan_decode_attention(test::h100_device(), test::llama_kv_shape(32), 32, lens, o));
    EXPECT_EQ(p.heads_per_block, hb);
    EXPECT_EQ(p.num_splits, 1);
    EXPECT_EQ(p.merge, DecodeMerge::kNone);
    o.splits = 4;
    ASSERT_OK_AND_ASSIGN(
        const DecodePlan s,
        plan_decode_attention(test::h100_device(), test::llama_kv_shape(32), 32, lens, o));
    EXPECT_EQ(s.merge, DecodeMerge::kWorkspace);  // no cluster merge for head-fused blocks
    EXPECT_EQ(s.num_splits, 4);
    o.merge = DecodeMerge::kCluster;
    EXPECT_EQ(plan_decode_attention(test::h100_device(), test::llama_kv_shape(32), 32, lens, o)
                  .status()
                  .code(),
              StatusCode::kInvalidArgument);
  }
  // Not a divisor of the KV heads, not built, or a head dim beyond 128.
  PagedKvLayer two_heads = test::llama_kv_shape(32);
  two_heads.num_kv_heads = 2;
  PagedKvLayer wide = test::llama_kv_shape(32);
  wide.head_dim = 256;
  const std::pair<std::int32_t, PagedKvLayer> bad[] = {
      {4, two_heads}, {3, test::llama_kv_shape(32)}, {16, test::llama_kv_shape(32)}, {2, wide}};
  for (const auto& [hb, kv] : bad) {
    DecodePlanOptions o;
    o.heads_per_block = hb;
    EXPECT_EQ(plan_decode_attention(test::h100_device(), kv, kv.num_kv_heads * 4, lens, o)
                  .status()
                  .code(),
              StatusCode::kInvalidArgument)
        << hb << " heads per block, " << kv.num_kv_heads << " KV heads, head dim " << kv.head_dim;
  }
}

}  // namespace
}  // namespace tierkv
