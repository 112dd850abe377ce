// Prefill attention on every backend against the CPU reference (fp32) and an fp64 reference, on
// fresh random inputs, with poisoned outputs and NaN checks. Errors are measured per sequence, so
// a wrong page in one long sequence is not averaged away by the rest of the batch.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "attention_checks.h"
#include "backends.h"
#include "synth/paged_batch.h"
#include "tierkv/prefill.h"

namespace tierkv {
namespace {

using synth::HostBatch;
using synth::PagedBatch;
using synth::PagedBatchSpec;
using test::BackendTest;

// Checks every sequence of the batch separately.
void expect_close(const HostBatch& host, const std::vector<std::uint8_t>& got,
                  const std::vector<std::uint8_t>& ref, std::int32_t num_q_heads,
                  const std::string& what) {
  const std::size_t row = std::size_t(num_q_heads) * host.layer.head_dim;
  for (std::size_t b = 0; b + 1 < host.q_offsets.size(); ++b) {
    const std::string seq = what + ", sequence " + std::to_string(b) + " (" +
                            std::to_string(host.q_offsets[b + 1] - host.q_offsets[b]) + " new of " +
                            std::to_string(host.seq_lens[b]) + ")";
    test::expect_close(got, ref, host.layer.dtype, host.q_offsets[b] * row,
                       host.q_offsets[b + 1] * row, seq);
  }
}

// Runs `reference` over the batch in pieces of at most 32 query rows on all hardware threads (the
// references are single-threaded). A piece of rows j0..j1 of sequence b is itself a prefill: the
// sequence cut after row j1, with j1 - j0 new tokens.
void run_reference(void (*reference)(const PrefillAttentionArgs&), const HostBatch& host,
                   std::int32_t num_q_heads, float sm_scale, std::vector<std::uint8_t>& out) {
  constexpr std::int32_t kPiece = 32;
  PrefillAttentionArgs all = host.prefill_args(num_q_heads, out.data());
  all.sm_scale = sm_scale;
  const std::size_t row_bytes =
      std::size_t(num_q_heads) * host.layer.head_dim * dtype_size(host.layer.dtype);
  struct Piece {
    std::int32_t b, j0, j1;
  };
  std::vector<Piece> pieces;
  for (std::int32_t b = 0; b < host.layer.batch; ++b) {
    const std::int32_t n = host.q_offsets[std::size_t(b) + 1] - host.q_offsets[std::size_t(b)];
    for (std::int32_t j0 = 0; j0 < n; j0 += kPiece)
      pieces.push_back({b, j0, std::min(n, j0 + kPiece)});
  }
  std::atomic<std::size_t> next{0};
  const auto worker = [&] {
    for (std::size_t i = next++; i < pieces.size(); i = next++) {
      const Piece& pc = pieces[i];
      const std::int32_t first = host.q_offsets[std::size_t(pc.b)] + pc.j0;
      const std::int32_t n =
          host.q_offsets[std::size_t(pc.b) + 1] - host.q_offsets[std::size_t(pc.b)];
      const std::int32_t len = host.seq_lens[std::size_t(pc.b)] - n + pc.j1;
      const std::int32_t offsets[2] = {0, pc.j1 - pc.j0};
      PrefillAttentionArgs a = all;
      a.kv.batch = 1;
      a.kv.block_table += std::int64_t(pc.b) * host.layer.block_table_stride;
      a.kv.seq_lens = &len;
      a.q = static_cast<const char*>(all.q) + std::size_t(first) * row_bytes;
      a.out = static_cast<char*>(all.out) + std::size_t(first) * row_bytes;
      a.q_offsets = offsets;
      a.plan.batch = 1;
      a.plan.total_q_tokens = offsets[1];
      reference(a);
    }
  };
  std::vector<std::thread> threads;
  const unsigned n_threads = std::max(1u, std::min(std::thread::hardware_concurrency(), 32u));
  for (unsigned i = 0; i < n_threads; ++i)
    threads.emplace_back(worker);
  for (std::thread& t : threads)
    t.join();
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
  return test::shape_name(c);
}

// A sequence of the batch: `chunk` new tokens after `prefix` cached ones.
struct Seq {
  std::int32_t chunk, prefix;
};

std::vector<Seq> full_grid() {
  std::vector<Seq> seqs;
  for (std::int32_t chunk : {1, 15, 17, 64, 257}) {
    for (std::int32_t prefix : {0, 1, 63, 1000})
      seqs.push_back({chunk, prefix});
  }
  return seqs;
}

// One of the four prefixes for each chunk length, rotated by `shift`: across shifts every pair of
// the full grid appears.
std::vector<Seq> rotated_grid(int shift) {
  const std::int32_t chunks[] = {1, 15, 17, 64, 257};
  const std::int32_t prefixes[] = {0, 1, 63, 1000};
  std::vector<Seq> seqs;
  for (int i = 0; i < 5; ++i)
    seqs.push_back({chunks[i], prefixes[(i + shift) % 4]});
  return seqs;
}

// How the view seen by the kernel differs from the packed batch that holds the data.
enum class View {
  kPacked,
  kHeadSubset,  // the batch has twice the KV heads; the view uses every other one from head 1,
                // so token (NHD) or page (HND) strides exceed the packed ones and K/V are offset
};

class PrefillAttention : public BackendTest {
 protected:
  // The CPU backend runs the reference itself, single-threaded: CI checks the API there on a
  // subset of the cases; a device gets all of them.
  bool thorough() const { return GetParam() != BackendKind::kCpu; }

  // Runs one prefill on the backend and checks it against both references. With
  // `plan_device`, the plan is made for that device instead (to force or forbid KV splits);
  // `options` override the planner. Returns the output (empty after a failed assertion).
  std::vector<std::uint8_t> run_and_check(const Case& c, const std::vector<Seq>& seqs,
                                          std::uint64_t seed,
                                          const DeviceInfo* plan_device = nullptr,
                                          View view = View::kPacked, float sm_scale = 0.0f,
                                          const PrefillPlanOptions& options = {}) {
    const bool subset = view == View::kHeadSubset;
    PagedBatchSpec spec = test::shape_spec(c, seed);
    for (const Seq& s : seqs) {
      spec.seq_lens.push_back(s.prefix + s.chunk);
      spec.q_lens.push_back(s.chunk);
    }
    if (subset) spec.num_kv_heads = 2 * c.num_kv_heads;  // the layer views every other head
    std::vector<std::uint8_t> out;
    run_and_check_impl(c, spec, plan_device, subset, sm_scale, options, out);
    return out;
  }

 private:
  static PagedKvLayer subset_view(PagedKvLayer l) {
    const std::int64_t off = l.strides.head * std::int64_t(dtype_size(l.dtype));
    l.k = static_cast<const char*>(l.k) + off;
    l.v = static_cast<const char*>(l.v) + off;
    l.strides.head *= 2;
    l.num_kv_heads /= 2;
    return l;
  }

  // sm_scale 0: the batch's 1/sqrt(head_dim).
  void run_and_check_impl(const Case& c, const PagedBatchSpec& spec, const DeviceInfo* plan_device,
                          bool subset, float sm_scale, const PrefillPlanOptions& options,
                          std::vector<std::uint8_t>& out) {
    ASSERT_OK_AND_ASSIGN(PagedBatch batch, PagedBatch::create(backend(), stream(), spec));
    const PagedKvLayer layer = subset ? subset_view(batch.layer()) : batch.layer();
    ASSERT_OK_AND_ASSIGN(
        const PrefillPlan plan,
        plan_prefill_attention(plan_device ? *plan_device : backend().info(), layer,
                               spec.num_q_heads, spec.q_lens, spec.seq_lens, options));
    if (options.tile_rows > 0) {
      EXPECT_EQ(plan.tile_rows, options.tile_rows);
    }
    if (options.splits > 0) {
      EXPECT_EQ(prefill_kv_splits(plan, layer.num_kv_heads), options.splits);
    }
    Buffer workspace;
    if (plan.workspace_bytes > 0) {
      ASSERT_OK_AND_ASSIGN(workspace,
                           backend().allocate(MemoryKind::kDevice, plan.workspace_bytes));
    }
    PrefillAttentionArgs args = batch.prefill_args(plan, workspace.data());
    args.kv = layer;
    if (sm_scale != 0.0f) args.sm_scale = sm_scale;
    ASSERT_OK(backend().prefill_attention(args, stream()));
    HostBatch host;
    ASSERT_OK(batch.download(stream(), host));
    if (subset) host.layer = subset_view(host.layer);

    std::vector<std::uint8_t> ref32(host.out.size()), ref64(host.out.size());
    run_reference(prefill_attention_reference, host, spec.num_q_heads, args.sm_scale, ref32);
    run_reference(prefill_attention_reference_f64, host, spec.num_q_heads, args.sm_scale, ref64);
    const std::string what = case_name(c) + (subset ? " head-subset view" : "") +
                             " tile_rows=" + std::to_string(plan.tile_rows) +
                             " work_items=" + std::to_string(plan.work_items) +
                             " workspace=" + std::to_string(plan.workspace_bytes);
    expect_close(host, host.out, ref32, spec.num_q_heads, what + " vs fp32 reference");
    expect_close(host, host.out, ref64, spec.num_q_heads, what + " vs fp64 reference");
    expect_close(host, ref32, ref64, spec.num_q_heads, what + " fp32 reference vs fp64");
    out = std::move(host.out);
  }
};

// Every dtype x head dim x group x page size; each shape gets every chunk length, with the
// prefixes rotated across shapes so that every (chunk, prefix) pair meets every dimension.
TEST_P(PrefillAttention, EveryShapeOverChunksAndPrefixes) {
  std::mt19937_64 seeds(std::random_device{}());
  int shift = 0;
  for (DType t : {DType::kBF16, DType::kF16}) {
    for (std::int32_t d : {64, 128}) {
      for (std::int32_t g : {1, 3, 4, 8}) {
        for (std::int32_t p : {16, 32, 64}) {
          const Case c{t, d, 2, g, p, KvLayout::kNHD};
          SCOPED_TRACE(case_name(c));
          if (thorough() || shift % 7 == 0) run_and_check(c, rotated_grid(shift), seeds());
          ++shift;
        }
      }
    }
  }
}

// The full grid of chunk lengths x prefixes in one ragged batch, at Llama's head shape, in both
// layouts; on a device the plan splits the KV of this small grid, so the narrow plan (no splits)
// runs the other path. The same inputs give the same bits twice.
TEST_P(PrefillAttention, FullGridOfChunksAndPrefixes) {
  std::mt19937_64 seeds(std::random_device{}());
  DeviceInfo narrow = backend().info();
  narrow.compute_units = 1;
  for (KvLayout layout : {KvLayout::kNHD, KvLayout::kHND}) {
    const Case c{DType::kBF16, 128, 2, 4, 16, layout};
    SCOPED_TRACE(case_name(c));
    const std::uint64_t seed = seeds();
    const std::vector<std::uint8_t> first = run_and_check(c, full_grid(), seed);
    if (!thorough()) continue;
    const std::vector<std::uint8_t> again = run_and_check(c, full_grid(), seed);
    EXPECT_TRUE(first == again) << "two runs on the same inputs differ: a race";
    run_and_check(c, full_grid(), seeds(), &narrow);
  }
  if (thorough())
    run_and_check(Case{DType::kF16, 64, 2, 3, 32, KvLayout::kHND}, full_grid(), seeds());
}

TEST_P(PrefillAttention, StridedViewsOfBothLayouts) {
  std::mt19937_64 seeds(std::random_device{}());
  for (KvLayout layout : {KvLayout::kNHD, KvLayout::kHND}) {
    for (DType t : {DType::kBF16, DType::kF16}) {
      const Case c{t, 128, 2, 4, 16, layout};
      SCOPED_TRACE(case_name(c));
      run_and_check(c, rotated_grid(1), seeds(), nullptr, View::kHeadSubset);
    }
  }
}

// Any finite non-zero scale is valid: a negative one turns the largest score into the smallest.
TEST_P(PrefillAttention, NegativeAndLargeScales) {
  std::mt19937_64 seeds(std::random_device{}());
  const Case c{DType::kBF16, 128, 2, 4, 16, KvLayout::kNHD};
  run_and_check(c, rotated_grid(2), seeds(), nullptr, View::kPacked, -0.2f);
  run_and_check(c, rotated_grid(3), seeds(), nullptr, View::kPacked, 0.5f);
}

// Page sizes the kernel has no fast path for (not powers of two), and pages longer than a tile.
TEST_P(PrefillAttention, OddAndLargePageSizes) {
  std::mt19937_64 seeds(std::random_device{}());
  for (std::int32_t p : {1, 5, 24, 128}) {
    const Case c{DType::kBF16, 64, 2, 4, p, KvLayout::kNHD};
    SCOPED_TRACE(case_name(c));
    run_and_check(c, rotated_grid(p), seeds());
  }
}

TEST_P(PrefillAttention, RaggedBatchesWithScatteredPages) {
  std::mt19937_64 rng(std::random_device{}());
  std::uniform_int_distribution<std::int32_t> chunk(1, 300), prefix(0, 2000);
  DeviceInfo wide = backend().info();
  wide.compute_units = 4096;  // on a device: as many KV splits as the plan allows
  for (int round = 0; round < (thorough() ? 3 : 1); ++round) {
    std::vector<Seq> seqs(static_cast<std::size_t>(3 + round * 4));
    for (Seq& s : seqs)
      s = {chunk(rng), round == 0 ? 0 : prefix(rng)};
    const Case c{
        round == 1 ? DType::kF16 : DType::kBF16, 128, 2, round == 2 ? 8 : 4, 16, KvLayout::kNHD};
    SCOPED_TRACE(case_name(c) + " round " + std::to_string(round));
    run_and_check(c, seqs, rng());
    run_and_check(c, seqs, rng(), &wide);
  }
}

// Both query tiles (64 and 128 packed rows), each unsplit, split by the planner and split in 3,
// over odd chunk lengths and prefixes that end mid-page, so that the 64-row tile meets its
// diagonal, padding and empty-split cases at every group (64 rows are 64, 16 or 8 positions).
TEST_P(PrefillAttention, BothQueryTilesWithForcedSplits) {
  std::mt19937_64 seeds(std::random_device{}());
  // Pages of 16: the prefixes 5, 9, 63 and 1000 end inside a page.
  const std::vector<Seq> seqs = {{1, 0}, {15, 9}, {17, 63}, {63, 1000}, {129, 5}, {255, 0}};
  for (DType t : {DType::kBF16, DType::kF16}) {
    for (std::int32_t d : {64, 128}) {
      for (std::int32_t g : {1, 4, 8}) {
        const Case c{t, d, 2, g, 16, KvLayout::kNHD};
        for (std::int32_t tile : {64, 128}) {
          for (std::int32_t splits : {0, 1, 3}) {
            // The CPU backend runs the reference whatever the tile: one case checks the API.
            if (!thorough() && !(t == DType::kBF16 && d == 128 && g == 4 && splits == 3)) continue;
            // Both tile orders and launches, alternating over the cases.
            const bool balanced = (splits + tile / 64 + g) % 2 == 0;
            const bool pdl = (splits + d / 64) % 2 == 0;
            SCOPED_TRACE(case_name(c) + " tile " + std::to_string(tile) + " splits " +
                         std::to_string(splits) + (balanced ? " balanced" : " longest first") +
                         (pdl ? " pdl" : ""));
            run_and_check(c, seqs, seeds(), nullptr, View::kPacked, 0.0f,
                          PrefillPlanOptions{.splits = splits,
                                             .tile_rows = tile,
                                             .balanced_order = balanced,
                                             .programmatic_launch = pdl});
          }
        }
      }
    }
  }
}

// The 64-row tile over the full grid in the paged layout with head-major pages, split in 4, and
// at Llama's shape with no prefix (the case it is planned for): the same inputs give the same
// bits twice.
TEST_P(PrefillAttention, SixtyFourRowTilesOverTheFullGrid) {
  std::mt19937_64 seeds(std::random_device{}());
  const Case hnd{DType::kBF16, 128, 2, 4, 16, KvLayout::kHND};
  run_and_check(hnd, full_grid(), seeds(), nullptr, View::kPacked, 0.0f,
                PrefillPlanOptions{.splits = 4, .tile_rows = 64});
  if (!thorough()) return;
  const Case llama{DType::kBF16, 128, 8, 4, 16, KvLayout::kNHD};
  const std::uint64_t seed = seeds();
  const PrefillPlanOptions small{.splits = 0, .tile_rows = 64};
  const std::vector<std::uint8_t> first =
      run_and_check(llama, {{511, 0}}, seed, nullptr, View::kPacked, 0.0f, small);
  const std::vector<std::uint8_t> again =
      run_and_check(llama, {{511, 0}}, seed, nullptr, View::kPacked, 0.0f, small);
  EXPECT_TRUE(first == again) << "two runs on the same inputs differ: a race";
  run_and_check(llama, {{300, 0}, {57, 7}}, seeds(), nullptr, View::kHeadSubset);
}

// One new token with no prefix attends to itself alone: its output is its V row, exactly.
TEST_P(PrefillAttention, FirstTokenReturnsItsValueExactly) {
  PagedBatchSpec spec;
  spec.seq_lens = {1, 1};
  spec.q_lens = {1, 1};
  spec.seed = 9;
  ASSERT_OK_AND_ASSIGN(PagedBatch batch, PagedBatch::create(backend(), stream(), spec));
  ASSERT_OK_AND_ASSIGN(
      const PrefillPlan plan,
      plan_prefill_attention(backend().info(), batch.layer(), 32, spec.q_lens, spec.seq_lens));
  ASSERT_OK(backend().prefill_attention(batch.prefill_args(plan, nullptr), stream()));
  HostBatch host;
  ASSERT_OK(batch.download(stream(), host));
  test::expect_outputs_are_first_value(host, 2, 32, "prefill");
}

TEST_P(PrefillAttention, RejectsBadArguments) {
  PagedBatchSpec spec;
  spec.seq_lens = {10, 20};
  spec.q_lens = {4, 20};
  ASSERT_OK_AND_ASSIGN(PagedBatch batch, PagedBatch::create(backend(), stream(), spec));
  const PagedKvLayer layer = batch.layer();
  ASSERT_OK_AND_ASSIGN(const PrefillPlan plan, plan_prefill_attention(backend().info(), layer, 32,
                                                                      spec.q_lens, spec.seq_lens));
  const PrefillAttentionArgs good = batch.prefill_args(plan, nullptr);
  const auto code = [&](const PrefillAttentionArgs& a) {
    return backend().prefill_attention(a, stream()).code();
  };

  PrefillAttentionArgs misaligned = good;
  misaligned.q = static_cast<const char*>(good.q) + 2;
  EXPECT_EQ(code(misaligned), StatusCode::kInvalidArgument);
  PrefillAttentionArgs misaligned_out = good;
  misaligned_out.out = static_cast<char*>(good.out) + 8;
  EXPECT_EQ(code(misaligned_out), StatusCode::kInvalidArgument);
  PrefillAttentionArgs no_offsets = good;
  no_offsets.q_offsets = nullptr;
  EXPECT_EQ(code(no_offsets), StatusCode::kInvalidArgument);
  PrefillAttentionArgs wrong_heads = good;
  wrong_heads.num_q_heads = 30;
  EXPECT_EQ(code(wrong_heads), StatusCode::kInvalidArgument);
  PrefillAttentionArgs wrong_plan = good;
  wrong_plan.plan.batch = 3;
  EXPECT_EQ(code(wrong_plan), StatusCode::kInvalidArgument);
  PrefillAttentionArgs no_scale = good;
  no_scale.sm_scale = NAN;
  EXPECT_EQ(code(no_scale), StatusCode::kInvalidArgument);
  PrefillAttentionArgs bad_tile = good;
  bad_tile.plan.tile_rows = 96;
  EXPECT_EQ(code(bad_tile), StatusCode::kInvalidArgument);
  PrefillAttentionArgs no_workspace = good;
  no_workspace.plan.workspace_bytes = 1024;
  EXPECT_EQ(code(no_workspace), StatusCode::kInvalidArgument);
  PrefillAttentionArgs bad_stride = good;
  bad_stride.kv.strides.token = 4;  // tokens overlap heads
  EXPECT_EQ(code(bad_stride), StatusCode::kInvalidArgument);
  if (GetParam() == BackendKind::kCuda) {
    // The CUDA kernel reads its grid from the plan; a plan for another tiling is refused.
    PrefillAttentionArgs foreign_plan = good;
    foreign_plan.plan.work_items += 1;
    EXPECT_EQ(code(foreign_plan), StatusCode::kInvalidArgument);
  }

  const auto plan_code = [&](const PagedKvLayer& kv, std::int32_t heads,
                             std::vector<std::int32_t> q_lens, std::vector<std::int32_t> seq_lens) {
    return plan_prefill_attention(backend().info(), kv, heads, q_lens, seq_lens).status().code();
  };
  EXPECT_EQ(plan_code(layer, 32, {0, 20}, {10, 20}), StatusCode::kInvalidArgument);  // no new token
  EXPECT_EQ(plan_code(layer, 32, {11, 20}, {10, 20}), StatusCode::kInvalidArgument);  // more than L
  EXPECT_EQ(plan_code(layer, 32, {4}, {10}), StatusCode::kInvalidArgument);  // batch mismatch
  EXPECT_EQ(plan_code(layer, 32, {4, 20}, {10, 100000}),
            StatusCode::kInvalidArgument);                                           // table row
  EXPECT_EQ(plan_code(layer, 30, {4, 20}, {10, 20}), StatusCode::kInvalidArgument);  // 30 % 8 != 0
  EXPECT_EQ(plan_code(layer, 8 * 16, {4, 20}, {10, 20}), StatusCode::kUnimplemented);  // group 16
  PagedKvLayer odd_dim = layer;
  odd_dim.head_dim = 96;
  EXPECT_EQ(plan_code(odd_dim, 32, {4, 20}, {10, 20}), StatusCode::kUnimplemented);
  const std::vector<std::int32_t> q_lens{4, 20}, seq_lens{10, 20};
  for (const PrefillPlanOptions& o :
       {PrefillPlanOptions{.splits = -1}, PrefillPlanOptions{.splits = 33},
        PrefillPlanOptions{.tile_rows = 96}, PrefillPlanOptions{.tile_rows = -64}}) {
    EXPECT_EQ(
        plan_prefill_attention(backend().info(), layer, 32, q_lens, seq_lens, o).status().code(),
        StatusCode::kInvalidArgument)
        << o.splits << " splits, " << o.tile_rows << " rows";
  }
  ASSERT_OK(stream().synchronize());
}

TIERKV_INSTANTIATE_BACKENDS(PrefillAttention);

TEST(PrefillPlan, SplitsTheKvOnlyWhenTheTilesLeaveTheDeviceIdle) {
  const DeviceInfo h100 = test::h100_device();
  const PagedKvLayer kv = test::llama_kv_shape(1);
  // 256 new tokens x 4 heads = 8 tiles of 128 rows per KV head: 64 CTAs, a quarter of 2 per SM.
  ASSERT_OK_AND_ASSIGN(const PrefillPlan small,
                       plan_prefill_attention(h100, kv, 32, std::vector<std::int32_t>{256},
                                              std::vector<std::int32_t>{16384 + 256}));
  EXPECT_EQ(small.work_items, 64 * 4);
  EXPECT_EQ(small.workspace_bytes, (std::size_t(4) * 256 * 32 * 128 * 4 + 255) / 256 * 256 +
                                       std::size_t(4) * 256 * 32 * 4);
  EXPECT_EQ(small.tile_rows, 128);
  EXPECT_EQ(prefill_kv_splits(small, kv.num_kv_heads), 4);
  // With no prefix there are too few KV tiles to split: 64-row tiles instead, 128 CTAs.
  ASSERT_OK_AND_ASSIGN(const PrefillPlan no_prefix,
                       plan_prefill_attention(h100, kv, 32, std::vector<std::int32_t>{256},
                                              std::vector<std::int32_t>{256}));
  EXPECT_EQ(no_prefix.tile_rows, 64);
  EXPECT_EQ(no_prefix.work_items, 128);
  EXPECT_EQ(no_prefix.workspace_bytes, 0u);
  // 2048 new tokens: 512 CTAs, two waves: no split.
  ASSERT_OK_AND_ASSIGN(const PrefillPlan big,
                       plan_prefill_attention(h100, kv, 32, std::vector<std::int32_t>{2048},
                                              std::vector<std::int32_t>{16384 + 2048}));
  EXPECT_EQ(big.work_items, 512);
  EXPECT_EQ(big.tile_rows, 128);
  EXPECT_EQ(big.workspace_bytes, 0u);
  EXPECT_EQ(big.total_q_tokens, 2048);
  EXPECT_EQ(big.max_seq_len, 16384 + 2048);

  DeviceInfo cpu;  // the CPU backend never splits
  ASSERT_OK_AND_ASSIGN(const PrefillPlan on_cpu,
                       plan_prefill_attention(cpu, kv, 32, std::vector<std::int32_t>{256},
                                              std::vector<std::int32_t>{16384 + 256}));
  EXPECT_EQ(on_cpu.work_items, 64);
  EXPECT_EQ(on_cpu.tile_rows, 128);
  EXPECT_EQ(on_cpu.workspace_bytes, 0u);
}

// The benchmark grid at Llama's shape on an H100: 64-row tiles exactly where the 128-row grid is
// below a wave (264 CTAs) and the KV is at most 16 tiles: the causal chunks up to 1024 with no
// prefix. Everything else keeps v3's plan.
TEST(PrefillPlan, SixtyFourRowTilesForSmallGridsOverShortKv) {
  const DeviceInfo h100 = test::h100_device();
  const PagedKvLayer kv = test::llama_kv_shape(1);
  struct Want {
    std::int32_t chunk, prefix, tile_rows, splits;
  };
  const Want wants[] = {
      {256, 0, 64, 1},
      {512, 0, 64, 1},
      {1024, 0, 64, 1},
      {2048, 0, 128, 1},
      {256, 4096, 128, 4},
      {512, 4096, 128, 2},
      {1024, 4096, 128, 1},
      {2048, 4096, 128, 1},
      {256, 16384, 128, 4},
      {512, 16384, 128, 2},
      {1024, 16384, 128, 1},
      {2048, 16384, 128, 1},
      // A prefix that keeps the KV within 16 tiles, and one that does not.
      {512, 500, 64, 1},
      {512, 600, 128, 2},
  };
  for (const Want& w : wants) {
    SCOPED_TRACE(std::to_string(w.chunk) + " over " + std::to_string(w.prefix));
    ASSERT_OK_AND_ASSIGN(const PrefillPlan plan,
                         plan_prefill_attention(h100, kv, 32, std::vector<std::int32_t>{w.chunk},
                                                std::vector<std::int32_t>{w.prefix + w.chunk}));
    EXPECT_EQ(plan.tile_rows, w.tile_rows);
    EXPECT_EQ(prefill_kv_splits(plan, kv.num_kv_heads), w.splits);
    EXPECT_EQ(plan.work_items, w.chunk * 4 / w.tile_rows * 8 * w.splits);
    EXPECT_EQ(plan.workspace_bytes > 0, w.splits > 1);
    // The grids resident at once (at most two CTAs per multiprocessor) pair long tiles with short.
    EXPECT_EQ(plan.balanced_order, plan.work_items <= 2 * h100.compute_units);
    // No dependent launch where the pairing decides the time (it would undo it).
    EXPECT_EQ(plan.programmatic_launch,
              !(plan.balanced_order && plan.work_items > h100.compute_units));
  }
  // 512 over 0 is one such grid: 256 CTAs of 64 rows on 132 multiprocessors; 256 over 0 has a
  // multiprocessor per CTA and keeps the dependent launch; 1024 over 0 takes two waves.
  const auto plan_of = [&](std::int32_t chunk) {
    return plan_prefill_attention(h100, kv, 32, std::vector<std::int32_t>{chunk},
                                  std::vector<std::int32_t>{chunk});
  };
  ASSERT_OK_AND_ASSIGN(const PrefillPlan small, plan_of(512));
  EXPECT_TRUE(small.balanced_order);
  EXPECT_FALSE(small.programmatic_launch);
  ASSERT_OK_AND_ASSIGN(const PrefillPlan tiny, plan_of(256));
  EXPECT_TRUE(tiny.balanced_order);
  EXPECT_TRUE(tiny.programmatic_launch);
  ASSERT_OK_AND_ASSIGN(const PrefillPlan waves, plan_of(1024));
  EXPECT_FALSE(waves.balanced_order);
  EXPECT_TRUE(waves.programmatic_launch);
  // The CPU backend launches nothing: neither applies.
  ASSERT_OK_AND_ASSIGN(const PrefillPlan cpu,
                       plan_prefill_attention(DeviceInfo{}, kv, 32, std::vector<std::int32_t>{512},
                                              std::vector<std::int32_t>{512}));
  EXPECT_FALSE(cpu.balanced_order);
  EXPECT_FALSE(cpu.programmatic_launch);
}

TEST(PrefillPlan, OptionsForceTheTileAndTheSplits) {
  const DeviceInfo h100 = test::h100_device();
  const PagedKvLayer kv = test::llama_kv_shape(1);
  const std::vector<std::int32_t> q_lens{512}, seq_lens{512};
  const auto plan = [&](PrefillPlanOptions o) {
    return plan_prefill_attention(h100, kv, 32, q_lens, seq_lens, o);
  };
  // 128-row tiles alone: v3's plan, split in two parts of 4 KV tiles.
  ASSERT_OK_AND_ASSIGN(const PrefillPlan large, plan({.tile_rows = 128}));
  EXPECT_EQ(large.tile_rows, 128);
  EXPECT_EQ(large.work_items, 16 * 8 * 2);
  EXPECT_EQ(prefill_kv_splits(large, 8), 2);
  ASSERT_OK_AND_ASSIGN(const PrefillPlan unsplit, plan({.splits = 1, .tile_rows = 128}));
  EXPECT_EQ(unsplit.work_items, 16 * 8);
  EXPECT_EQ(unsplit.workspace_bytes, 0u);
  // 64-row tiles split in 4 (more parts than the 8 KV tiles fill evenly is allowed).
  ASSERT_OK_AND_ASSIGN(const PrefillPlan split, plan({.splits = 4, .tile_rows = 64}));
  EXPECT_EQ(split.tile_rows, 64);
  EXPECT_EQ(split.work_items, 32 * 8 * 4);
  EXPECT_EQ(prefill_kv_splits(split, 8), 4);
  EXPECT_EQ(split.workspace_bytes, (std::size_t(4) * 512 * 32 * 128 * 4 + 255) / 256 * 256 +
                                       std::size_t(4) * 512 * 32 * 4);
  // Splits alone leave the tile to the planner.
  ASSERT_OK_AND_ASSIGN(const PrefillPlan three, plan({.splits = 3}));
  EXPECT_EQ(three.tile_rows, 64);
  EXPECT_EQ(prefill_kv_splits(three, 8), 3);
  // Overrides hold on any device, so a CPU run can check the plan a GPU run would use.
  ASSERT_OK_AND_ASSIGN(const PrefillPlan on_cpu,
                       plan_prefill_attention(DeviceInfo{}, kv, 32, q_lens, seq_lens,
                                              {.splits = 2, .tile_rows = 64}));
  EXPECT_EQ(on_cpu.work_items, 32 * 8 * 2);
  EXPECT_GT(on_cpu.workspace_bytes, 0u);
}

TEST(PrefillPlan, RaggedBatchesCoverTheLongestChunkForEverySequence) {
  DeviceInfo cpu;
  const PagedKvLayer kv = test::llama_kv_shape(3);
  ASSERT_OK_AND_ASSIGN(const PrefillPlan plan,
                       plan_prefill_attention(cpu, kv, 32, std::vector<std::int32_t>{1, 100, 33},
                                              std::vector<std::int32_t>{1, 5000, 33}));
  EXPECT_EQ(plan.total_q_tokens, 134);
  EXPECT_EQ(plan.max_q_tokens, 100);
  EXPECT_EQ(plan.work_items, 4 * 3 * 8);  // ceil(100 * 4 / 128) tiles x 3 sequences x 8 heads
  // With 64-row tiles, ceil(100 * 4 / 64) = 7 tiles: the last has 16 rows.
  ASSERT_OK_AND_ASSIGN(
      const PrefillPlan small,
      plan_prefill_attention(cpu, kv, 32, std::vector<std::int32_t>{1, 100, 33},
                             std::vector<std::int32_t>{1, 5000, 33}, {.tile_rows = 64}));
  EXPECT_EQ(small.work_items, 7 * 3 * 8);
  EXPECT_EQ(prefill_kv_splits(small, 8), 1);
}

}  // namespace
}  // namespace tierkv
