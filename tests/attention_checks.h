// How attention kernels are checked against the references: outputs compared in the storage
// type, with tolerances of a few rounding steps of that type, and no NaN or infinity anywhere;
// and the shapes the plan tests reason about.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "synth/paged_batch.h"
#include "tierkv/backend.h"
#include "tierkv/dtype.h"
#include "tierkv/paged_kv.h"

namespace tierkv::test {

// The kernels sum in another order than the references (and may round softmax weights to the
// storage type before P V, as FlashAttention does): a few rounding steps of the output type.
struct Tolerance {
  double rel_l2;       // ||out - ref|| / ||ref||
  double max_abs_rel;  // max |out - ref| / max |ref|
};
inline Tolerance tolerance_for(DType t) {
  return t == DType::kBF16 ? Tolerance{1e-2, 1.0 / 64} : Tolerance{2e-3, 1.0 / 512};
}

struct Comparison {
  double rel_l2 = 0, max_abs_rel = 0;
  std::size_t non_finite = 0;
};

// Compares elements [first, last) of two outputs of type `t`.
inline Comparison compare(const std::vector<std::uint8_t>& got,
                          const std::vector<std::uint8_t>& ref, DType t, std::size_t first,
                          std::size_t last) {
  double diff2 = 0, ref2 = 0, max_diff = 0, max_ref = 0;
  Comparison c;
  for (std::size_t i = first; i < last; ++i) {
    const double g = load_as_float(got.data(), i, t);
    const double r = load_as_float(ref.data(), i, t);
    if (!std::isfinite(g)) ++c.non_finite;
    diff2 += (g - r) * (g - r);
    ref2 += r * r;
    max_diff = std::max(max_diff, std::abs(g - r));
    max_ref = std::max(max_ref, std::abs(r));
  }
  c.rel_l2 = std::sqrt(diff2 / std::max(ref2, 1e-30));
  c.max_abs_rel = max_diff / std::max(max_ref, 1e-30);
  return c;
}

// Expects elements [first, last) to agree within tolerance_for(t), with no NaN or infinity.
inline void expect_close(const std::vector<std::uint8_t>& got, const std::vector<std::uint8_t>& ref,
                         DType t, std::size_t first, std::size_t last, const std::string& what) {
  const Comparison c = compare(got, ref, t, first, last);
  const Tolerance tol = tolerance_for(t);
  EXPECT_EQ(c.non_finite, 0u) << what << ": NaN/inf in the output (unwritten or broken)";
  EXPECT_LE(c.rel_l2, tol.rel_l2) << what;
  EXPECT_LE(c.max_abs_rel, tol.max_abs_rel) << what;
}

// The whole of two outputs.
inline void expect_close(const std::vector<std::uint8_t>& got, const std::vector<std::uint8_t>& ref,
                         DType t, const std::string& what) {
  expect_close(got, ref, t, 0, got.size() / dtype_size(t), what);
}

// One layer of Llama-3.1-8B's KV (8 heads of 128, pages of 16) for `batch` sequences: the shape
// fields only, which is all a plan reads.
inline PagedKvLayer llama_kv_shape(std::int32_t batch) {
  PagedKvLayer kv;
  kv.batch = batch;
  kv.num_kv_heads = 8;
  kv.head_dim = 128;
  kv.page_tokens = 16;
  kv.block_table_stride = 4096;
  return kv;
}

// For sequences whose query sees a single token (the first of its first page), each query head's
// output is that token's V row of its KV head, bit for bit: softmax of one score is exactly 1.
inline void expect_outputs_are_first_value(const synth::HostBatch& host, std::int32_t sequences,
                                           std::int32_t num_q_heads, const std::string& what) {
  const PagedKvLayer& kv = host.layer;
  const std::int32_t group = num_q_heads / kv.num_kv_heads;
  for (std::int32_t b = 0; b < sequences; ++b) {
    const std::int32_t page = host.block_table[std::size_t(b) * kv.block_table_stride];
    for (std::int32_t h = 0; h < num_q_heads; ++h) {
      for (std::int32_t d = 0; d < kv.head_dim; ++d) {
        const float v = load_as_float(host.v.data(), kv.offset(page, 0, h / group) + d, kv.dtype);
        const float o = load_as_float(
            host.out.data(), (std::size_t(b) * num_q_heads + h) * kv.head_dim + d, kv.dtype);
        if (o != v) {
          ADD_FAILURE() << what << ": sequence " << b << " head " << h << " dim " << d << ": " << o
                        << " != " << v;
          return;
        }
      }
    }
  }
}

// A test case's head shape and pages, as both attention tests describe them (C has dtype, head_dim,
// num_kv_heads, group, page_tokens and layout): its name, and a batch spec of that shape with 3
// spare pages in the pool; the caller adds the lengths.
template <typename C>
std::string shape_name(const C& c) {
  return std::string(dtype_name(c.dtype)) + "_d" + std::to_string(c.head_dim) + "_g" +
         std::to_string(c.group) + "_p" + std::to_string(c.page_tokens) +
         (c.layout == KvLayout::kNHD ? "_nhd" : "_hnd");
}
template <typename C>
synth::PagedBatchSpec shape_spec(const C& c, std::uint64_t seed) {
  synth::PagedBatchSpec spec;
  spec.num_kv_heads = c.num_kv_heads;
  spec.num_q_heads = c.num_kv_heads * c.group;
  spec.head_dim = c.head_dim;
  spec.page_tokens = c.page_tokens;
  spec.dtype = c.dtype;
  spec.layout = c.layout;
  spec.spare_pages = 3;
  spec.seed = seed;
  return spec;
}

// What a plan needs to know of the H100 test machine.
inline DeviceInfo h100_device() {
  DeviceInfo d;
  d.backend = BackendKind::kCuda;
  d.compute_units = 132;
  return d;
}

}  // namespace tierkv::test
