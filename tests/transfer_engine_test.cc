#include "transfer/transfer_engine.h"

#include <gtest/gtest.h>

#include <vector>

#include "backends.h"

namespace tierkv {
namespace {

using test::BackendTest;

std::vector<CopyRun> runs_of(std::size_t count, std::size_t bytes) {
  static std::uint8_t a alignas(16)[16], b alignas(16)[16];
  return std::vector<CopyRun>(count, CopyRun{a, b, bytes});
}

TEST(BandwidthCurve, InterpolatesInLogSizeAndClamps) {
  const BandwidthCurve c{{{1024, 10.0}, {4096, 30.0}}};
  EXPECT_DOUBLE_EQ(c.gbps(512), 10.0);
  EXPECT_DOUBLE_EQ(c.gbps(1024), 10.0);
  EXPECT_DOUBLE_EQ(c.gbps(2048), 20.0);  // halfway in log2
  EXPECT_DOUBLE_EQ(c.gbps(4096), 30.0);
  EXPECT_DOUBLE_EQ(c.gbps(1 << 20), 30.0);
}

TEST(PathCosts, ComputeBesideChargesTheStolenTime) {
  PathCosts c;
  const double alone = c.sm_kernel_us(64, 64 << 20, false);
  EXPECT_NEAR(c.sm_kernel_us(64, 64 << 20, true), alone * (1 + c.sm_kernel_compute_slowdown), 1e-9);
  EXPECT_EQ(c.copy_engine_us(0, 0, true), 0.0);
}

class TransferEngineTest : public BackendTest {};

TEST_P(TransferEngineTest, ChoosesFromCostsNotAConstant) {
  TransferOptions o;
  o.calibrate = false;  // the H100 test machine's figures
  ASSERT_OK_AND_ASSIGN(auto engine, TransferEngine::create(backend(), o));
  // A chunk's layers (large contiguous runs) beside prefill: the copy engines, which take no SMs.
  EXPECT_EQ(engine->choose(runs_of(32, 512 << 10), true), CopyPath::kCopyEngine);
  // The same alone: both reach the link; the copy engines are a little faster there.
  EXPECT_EQ(engine->choose(runs_of(32, 512 << 10), false), CopyPath::kCopyEngine);
  // 16 KiB pages scattered, nothing beside: the copy engines starve on small runs; the kernel.
  EXPECT_EQ(engine->choose(runs_of(4096, 16 << 10), false), CopyPath::kSmKernel);
  // 64 and 128 KiB pages: past the copy engines' knee they fill the link; no SMs needed.
  EXPECT_EQ(engine->choose(runs_of(4096, 64 << 10), false), CopyPath::kCopyEngine);
  EXPECT_EQ(engine->choose(runs_of(2048, 128 << 10), false), CopyPath::kCopyEngine);
  // The stolen compute can flip a choice: make the kernel expensive beside compute.
  TransferOptions heavy = o;
  heavy.sm_kernel_compute_slowdown = 5.0;
  ASSERT_OK_AND_ASSIGN(auto careful, TransferEngine::create(backend(), heavy));
  EXPECT_EQ(careful->choose(runs_of(4096, 16 << 10), true), CopyPath::kCopyEngine);
  EXPECT_EQ(careful->choose(runs_of(4096, 16 << 10), false), CopyPath::kSmKernel);
}

TEST_P(TransferEngineTest, KernelMustWinByTheMargin) {
  TransferOptions o;
  o.calibrate = false;
  o.sm_kernel_min_gain = 0.10;
  ASSERT_OK_AND_ASSIGN(auto engine, TransferEngine::create(backend(), o));
  const PathCosts& c = engine->costs();
  // Run sizes where the kernel is a little (< 8%) and clearly (> 25%) cheaper than the copy engines
  // alone.
  const auto gain = [&](std::size_t run) {
    return 1.0 -
           c.sm_kernel_us(1024, 1024 * run, false) / c.copy_engine_us(1024, 1024 * run, false);
  };
  std::size_t near = 0, clear = 0;
  for (std::size_t run = 16 << 10; run <= (1u << 20); run += 1024) {
    const double g = gain(run);
    if (near == 0 && g > 0.0 && g < 0.08) near = run;
    if (clear == 0 && g > 0.25) clear = run;
  }
  ASSERT_GT(clear, 0u);
  ASSERT_GT(near, 0u);
  EXPECT_EQ(engine->choose(runs_of(1024, clear), false), CopyPath::kSmKernel);
  EXPECT_EQ(engine->choose(runs_of(1024, near), false), CopyPath::kCopyEngine);
  o.sm_kernel_min_gain = 0.0;
  ASSERT_OK_AND_ASSIGN(auto eager, TransferEngine::create(backend(), o));
  EXPECT_EQ(eager->choose(runs_of(1024, near), false), CopyPath::kSmKernel);
}

TEST_P(TransferEngineTest, ForcedModesAndCounters) {
  TransferOptions o;
  o.calibrate = false;
  o.mode = TransferMode::kSmKernel;
  ASSERT_OK_AND_ASSIGN(auto engine, TransferEngine::create(backend(), o));
  EXPECT_EQ(engine->choose(runs_of(2, 1 << 20), true), CopyPath::kSmKernel);
  ASSERT_OK_AND_ASSIGN(Buffer dev, backend().allocate(MemoryKind::kDevice, 1 << 16));
  ASSERT_OK_AND_ASSIGN(Buffer host, backend().allocate(MemoryKind::kPinnedHost, 1 << 16));
  const CopyRun run{dev.data(), host.data(), 1 << 16};
  ASSERT_OK_AND_ASSIGN(const CopyPath used, engine->copy({&run, 1}, false, stream()));
  EXPECT_EQ(used, CopyPath::kSmKernel);
  ASSERT_OK(stream().synchronize());
  EXPECT_EQ(engine->counters().sm_kernel, 1u);
  EXPECT_EQ(engine->counters().copy_engine, 0u);
}

TEST_P(TransferEngineTest, CalibrationMeasuresEveryPath) {
  ASSERT_OK_AND_ASSIGN(auto engine, TransferEngine::create(backend(), TransferOptions{}));
  const PathCosts& c = engine->costs();
  for (const BandwidthCurve* curve : {&c.copy_engine, &c.sm_kernel}) {
    ASSERT_EQ(curve->points.size(), 6u);
    for (const auto& [bytes, gbps] : curve->points) {
      EXPECT_GT(bytes, 0.0);
      EXPECT_GT(gbps, 0.01);
    }
  }
  EXPECT_GE(c.copy_engine.fixed_us, 0.0);
}

TEST_P(TransferEngineTest, RejectsBadOptions) {
  TransferOptions o;
  o.sm_blocks = 0;
  EXPECT_EQ(TransferEngine::create(backend(), o).status().code(), StatusCode::kInvalidArgument);
  o.sm_blocks = 4;
  o.sm_kernel_compute_slowdown = -1;
  EXPECT_EQ(TransferEngine::create(backend(), o).status().code(), StatusCode::kInvalidArgument);
  o.sm_kernel_compute_slowdown = 0.5;
  o.sm_kernel_min_gain = 1.0;
  EXPECT_EQ(TransferEngine::create(backend(), o).status().code(), StatusCode::kInvalidArgument);
}

TIERKV_INSTANTIATE_BACKENDS(TransferEngineTest);

}  // namespace
}  // namespace tierkv
