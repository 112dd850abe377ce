// XXH3-64 compiled for AVX2 (this file only is built with -mavx2); record.cc calls it where the
// CPU has AVX2. XXH3's result does not depend on the instruction set.
#include <cstddef>
#include <cstdint>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace tierkv::detail {

std::uint64_t xxh3_64_avx2(const void* data, std::size_t size, std::uint64_t seed) {
  return XXH3_64bits_withSeed(data, size, seed);
}

}  // namespace tierkv::detail
