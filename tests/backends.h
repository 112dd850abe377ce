// Runs a test suite over every backend: the CPU backend always, the CUDA backend when this build
// has it and a device is visible (skipped otherwise, never failed).
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "tierkv/backend.h"

namespace tierkv::test {

// Fails the test with the status message when `expr` is not OK.
#define ASSERT_OK(expr)                                         \
  do {                                                          \
    const ::tierkv::Status assert_ok_s_ = (expr);               \
    ASSERT_TRUE(assert_ok_s_.ok()) << assert_ok_s_.to_string(); \
  } while (0)
#define EXPECT_OK(expr)                                         \
  do {                                                          \
    const ::tierkv::Status expect_ok_s_ = (expr);               \
    EXPECT_TRUE(expect_ok_s_.ok()) << expect_ok_s_.to_string(); \
  } while (0)
// `lhs = value`, or fails the test.
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL_(TIERKV_CONCAT_(assert_result_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr)   \
  auto tmp = (expr);                                 \
  ASSERT_TRUE(tmp.ok()) << tmp.status().to_string(); \
  lhs = std::move(tmp).value()

class BackendTest : public ::testing::TestWithParam<BackendKind> {
 protected:
  void SetUp() override {
    if (GetParam() == BackendKind::kCuda && cuda_device_count() == 0) {
      GTEST_SKIP() << "no CUDA device";
    }
    auto b = create_backend(GetParam());
    ASSERT_TRUE(b.ok()) << b.status().to_string();
    backend_ = std::move(b).value();
    auto s = backend_->create_stream();
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    stream_ = std::move(s).value();
  }
  void TearDown() override {
    stream_.reset();
    backend_.reset();
  }

  Backend& backend() { return *backend_; }
  Stream& stream() { return *stream_; }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Stream> stream_;
};

inline std::string backend_param_name(const ::testing::TestParamInfo<BackendKind>& info) {
  return std::string(backend_kind_name(info.param));
}

}  // namespace tierkv::test

#define TIERKV_INSTANTIATE_BACKENDS(suite)                                          \
  INSTANTIATE_TEST_SUITE_P(                                                         \
      Backends, suite,                                                              \
      ::testing::Values(::tierkv::BackendKind::kCpu, ::tierkv::BackendKind::kCuda), \
      ::tierkv::test::backend_param_name)
