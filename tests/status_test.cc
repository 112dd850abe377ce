#include "tierkv/status.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace tierkv {
namespace {

Status fails_with(StatusCode code) {
  return Status(code, "boom");
}

Status propagates(StatusCode code, bool* reached_end) {
  TIERKV_RETURN_IF_ERROR(fails_with(code));
  *reached_end = true;
  return Status::Ok();
}

Result<int> parse_positive(int v) {
  if (v <= 0) return invalid_argument("not positive: " + std::to_string(v));
  return v;
}

Result<int> doubled(int v) {
  TIERKV_ASSIGN_OR_RETURN(const int x, parse_positive(v));
  return 2 * x;
}

TEST(Status, DefaultIsOk) {
  const Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOk);
  EXPECT_EQ(s.to_string(), "OK");
}

TEST(Status, CarriesCodeAndMessage) {
  const Status s = data_loss("checksum mismatch in record 7");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_EQ(s.to_string(), "DataLoss: checksum mismatch in record 7");
  EXPECT_EQ(s.with_context("disk tier").to_string(),
            "DataLoss: disk tier: checksum mismatch in record 7");
  EXPECT_TRUE(Status::Ok().with_context("ignored").ok());
}

TEST(Status, EveryCodeHasAName) {
  for (int c = 0; c <= static_cast<int>(StatusCode::kInternal); ++c) {
    EXPECT_NE(status_code_name(static_cast<StatusCode>(c)), "Unknown") << c;
  }
}

TEST(Status, ReturnIfErrorStopsAtTheFirstError) {
  bool reached = false;
  const Status s = propagates(StatusCode::kIoError, &reached);
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_FALSE(reached);
  EXPECT_TRUE(propagates(StatusCode::kOk, &reached).ok());
  EXPECT_TRUE(reached);
}

TEST(Result, HoldsValueOrError) {
  const Result<int> good = doubled(21);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 42);
  EXPECT_TRUE(good.status().ok());
  const Result<int> bad = doubled(-1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "not positive: -1");
}

TEST(Result, MovesOnlyTypes) {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(7);
  ASSERT_TRUE(r.ok());
  std::unique_ptr<int> p = std::move(r).value();
  EXPECT_EQ(*p, 7);
}

TEST(ResultDeathTest, ValueOfErrorAborts) {
  const Result<int> bad = invalid_argument("no value here");
  EXPECT_DEATH((void)bad.value(), "no value here");
}

TEST(ResultDeathTest, OkStatusIsNotAnError) {
  EXPECT_DEATH((void)Result<int>(Status::Ok()), "OK Status");
}

}  // namespace
}  // namespace tierkv
