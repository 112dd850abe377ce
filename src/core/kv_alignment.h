// What the attention kernels ask of memory: 16-byte vector accesses, so every pointer they read or
// write and every K/V stride (in elements of a 2-byte dtype) is a multiple of 16 bytes. The planners
// check what they see (the KV layout); the runs check the rest (q, out) as well.
#pragma once

#include <cstdint>
#include <string>

#include "tierkv/paged_kv.h"
#include "tierkv/status.h"

namespace tierkv {

inline bool misaligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 != 0;
}

// The K/V strides, and the K/V base pointers when set, are 16-byte aligned.
inline Status check_kv_alignment(const PagedKvLayer& kv, const char* what) {
  if ((kv.k != nullptr && misaligned16(kv.k)) || (kv.v != nullptr && misaligned16(kv.v)) ||
      kv.strides.page % 8 != 0 || kv.strides.token % 8 != 0 || kv.strides.head % 8 != 0) {
    return invalid_argument(std::string(what) +
                            ": K, V and their strides must be 16-byte aligned (strides in "
                            "multiples of 8 elements)");
  }
  return Status::Ok();
}

// Everything a run reads or writes is 16-byte aligned.
inline Status check_run_alignment(const PagedKvLayer& kv, const void* q, const void* out,
                                  const char* what) {
  if (misaligned16(q) || misaligned16(out) || misaligned16(kv.k) || misaligned16(kv.v)) {
    return invalid_argument(std::string(what) + ": q, out, K and V must be 16-byte aligned");
  }
  return check_kv_alignment(kv, what);
}

}  // namespace tierkv
