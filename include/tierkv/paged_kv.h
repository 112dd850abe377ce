// Non-owning views of a paged KV layout, the way an inference engine keeps it.
//
// Each layer has a K array and a V array of pages. A page holds `page_tokens` consecutive tokens of
// one sequence. Element (page p, token t within the page, kv head h, dim d) of a layer's K lives at
//
//     k + p * page_stride + t * token_stride + h * head_stride + d        (in elements)
//
// and likewise for V with the same strides. This covers the common engine layouts:
//   NHD  [pages][page_tokens][kv_heads][head_dim]   (vLLM, FlashInfer's default)
//   HND  [pages][kv_heads][page_tokens][head_dim]
// A sequence's pages are listed in its row of the block table. The views own nothing: the caller
// keeps every pointed-to buffer alive, and the pointers must be readable by the backend that uses
// the view (device memory for the CUDA backend, host memory for the CPU backend).
//
// The views are trivially copyable and passed to kernels by value; the CPU reference reads through
// the very same struct.
#pragma once

#include <cstdint>
#include <span>
#include <type_traits>

#include "tierkv/dtype.h"
#include "tierkv/status.h"

namespace tierkv {

enum class KvLayout : std::uint8_t { kNHD = 0, kHND = 1 };

// Strides, in elements, of one layer's K (or V) page array for a packed layout.
struct KvStrides {
  std::int64_t page = 0;
  std::int64_t token = 0;
  std::int64_t head = 0;
};
KvStrides packed_strides(KvLayout layout, std::int32_t page_tokens, std::int32_t num_kv_heads,
                         std::int32_t head_dim);

// One layer of paged KV plus the batch's block table and lengths: all a kernel needs.
struct PagedKvLayer {
  const void* k = nullptr;                    // page 0 of this layer's K
  const void* v = nullptr;                    // page 0 of this layer's V
  const std::int32_t* block_table = nullptr;  // [batch][block_table_stride] page ids
  const std::int32_t* seq_lens = nullptr;     // [batch] tokens of each sequence (>= 1)
  KvStrides strides;                          // element strides, shared by K and V
  std::int32_t block_table_stride = 0;  // entries per block-table row (>= pages of longest seq)
  std::int32_t batch = 0;
  std::int32_t page_tokens = 0;
  std::int32_t num_kv_heads = 0;
  std::int32_t head_dim = 0;
  DType dtype = DType::kBF16;

  // Element offset of (page, token-in-page, head) relative to k or v.
  constexpr std::int64_t offset(std::int64_t page, std::int32_t token, std::int32_t head) const {
    return page * strides.page + token * strides.token + head * strides.head;
  }
};
static_assert(std::is_trivially_copyable_v<PagedKvLayer>);

// All layers of an engine's paged KV. k_layers[l] and v_layers[l] are the base pointers of layer l;
// every layer shares the strides, page size, block table and lengths.
struct PagedKvView {
  std::span<const void* const> k_layers;
  std::span<const void* const> v_layers;
  // Pages in each layer's K (and V) array: valid page ids are [0, num_pages). The cache and the
  // runner refuse page ids outside it, and a view without it (0), since they cannot check them.
  std::int32_t num_pages = 0;
  const std::int32_t* block_table = nullptr;
  const std::int32_t* seq_lens = nullptr;
  KvStrides strides;
  std::int32_t block_table_stride = 0;
  std::int32_t batch = 0;
  std::int32_t page_tokens = 0;
  std::int32_t num_kv_heads = 0;
  std::int32_t head_dim = 0;
  DType dtype = DType::kBF16;

  std::int32_t num_layers() const { return static_cast<std::int32_t>(k_layers.size()); }
  // REQUIRES: 0 <= l < num_layers().
  PagedKvLayer layer(std::int32_t l) const;
};
static_assert(std::is_trivially_copyable_v<PagedKvView>);

// Checks the shape fields (positive sizes, non-null pointers, head_dim contiguous, strides that
// keep heads, tokens and pages from overlapping). It cannot read device memory, so block-table
// contents and lengths are the caller's to get right.
Status validate(const PagedKvLayer& kv);

}  // namespace tierkv
