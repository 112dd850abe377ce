// The parts of the store seam (tierkv/store.h) that are not per tier: miss reason names and the
// latency histogram.
#include <algorithm>
#include <cmath>

#include "tierkv/store.h"

namespace tierkv {

const char* miss_reason_name(MissReason r) {
  switch (r) {
    case MissReason::kAbsent:
      return "absent";
    case MissReason::kEvicted:
      return "evicted";
    case MissReason::kCorrupt:
      return "corrupt";
    case MissReason::kForeign:
      return "foreign";
    case MissReason::kTimeout:
      return "timeout";
    case MissReason::kUnavailable:
      return "unavailable";
    case MissReason::kDropped:
      return "dropped";
    case MissReason::kCount:
      break;
  }
  return "unknown";
}

void LatencyHistogram::add(double us) {
  if (!(us >= 0)) us = 0;  // NaN and negatives (a clock step) count as the fastest bucket
  int b = 0;
  // Bucket i >= 1 holds [2^(i-1), 2^i): the number of bits of floor(us).
  for (double edge = 1; b < kBuckets - 1 && us >= edge; edge *= 2)
    ++b;
  ++counts[std::size_t(b)];
  total_us += static_cast<std::uint64_t>(std::llround(std::min(us, 1e15)));
}

std::uint64_t LatencyHistogram::count() const {
  std::uint64_t n = 0;
  for (std::uint64_t c : counts)
    n += c;
  return n;
}

double LatencyHistogram::quantile_us(double q) const {
  const std::uint64_t n = count();
  if (n == 0) return 0;
  q = std::min(std::max(q, 0.0), 1.0);
  // The smallest bucket whose cumulative count reaches ceil(q * n) (at least 1).
  const auto want =
      std::max<std::uint64_t>(1, static_cast<std::uint64_t>(std::ceil(q * double(n))));
  std::uint64_t seen = 0;
  for (int b = 0; b < kBuckets; ++b) {
    seen += counts[std::size_t(b)];
    if (seen >= want) return std::ldexp(1.0, b);  // upper edge of bucket b: 2^b
  }
  return std::ldexp(1.0, kBuckets - 1);
}

void LatencyHistogram::merge(const LatencyHistogram& o) {
  for (int b = 0; b < kBuckets; ++b)
    counts[std::size_t(b)] += o.counts[std::size_t(b)];
  total_us += o.total_us;
}

}  // namespace tierkv
