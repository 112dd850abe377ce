// libFuzzer target for the record header parser. Built only with clang (-fsanitize=fuzzer); see
// tests/fuzz/CMakeLists.txt and scripts/fuzz.sh, which runs it for a bounded time.
#include "fuzz/record_header_fuzz.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  tierkv::test::fuzz_record_header_once(data, size);
  return 0;
}
