// A counter-based generator: the value at (seed, index) is a pure function, identical on the host
// and on the device, so both backends fill buffers with the same bits without sharing state.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/host_device.h"

namespace tierkv {

TIERKV_HOST_DEVICE std::uint64_t mix64(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

// Uniform in [lo, hi): 24 random bits, scaled with one correctly rounded fma on both sides.
TIERKV_HOST_DEVICE float counter_uniform(std::uint64_t seed, std::uint64_t index, float lo,
                                         float hi) {
  const std::uint64_t x = mix64(seed * 0x9e3779b97f4a7c15ull + index + 1);
  const float u = static_cast<float>(x >> 40) * (1.0f / 16777216.0f);  // exact
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(hi - lo, u, lo);
#else
  return std::fma(hi - lo, u, lo);
#endif
}

}  // namespace tierkv
