#include "tierkv/paged_kv.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace tierkv {
namespace {

PagedKvLayer valid_layer(KvLayout layout) {
  static std::uint16_t k[64], v[64];
  static std::int32_t table[4], lens[2];
  PagedKvLayer l;
  l.k = k;
  l.v = v;
  l.block_table = table;
  l.seq_lens = lens;
  l.batch = 2;
  l.block_table_stride = 2;
  l.page_tokens = 16;
  l.num_kv_heads = 8;
  l.head_dim = 128;
  l.strides = packed_strides(layout, 16, 8, 128);
  return l;
}

TEST(PagedKv, PackedStrides) {
  const KvStrides nhd = packed_strides(KvLayout::kNHD, 16, 8, 128);
  EXPECT_EQ(nhd.page, 16 * 8 * 128);
  EXPECT_EQ(nhd.token, 8 * 128);
  EXPECT_EQ(nhd.head, 128);
  const KvStrides hnd = packed_strides(KvLayout::kHND, 16, 8, 128);
  EXPECT_EQ(hnd.page, 16 * 8 * 128);
  EXPECT_EQ(hnd.token, 128);
  EXPECT_EQ(hnd.head, 16 * 128);
}

TEST(PagedKv, OffsetFollowsStrides) {
  const PagedKvLayer l = valid_layer(KvLayout::kHND);
  EXPECT_EQ(l.offset(3, 5, 2), 3 * 16 * 8 * 128 + 5 * 128 + 2 * 16 * 128);
}

TEST(PagedKv, ValidLayoutsPass) {
  EXPECT_TRUE(validate(valid_layer(KvLayout::kNHD)).ok());
  EXPECT_TRUE(validate(valid_layer(KvLayout::kHND)).ok());
  PagedKvLayer padded = valid_layer(KvLayout::kNHD);
  padded.strides.page += 64;  // padding between pages is fine
  EXPECT_TRUE(validate(padded).ok());
}

TEST(PagedKv, RejectsMalformedViews) {
  std::vector<std::pair<const char*, PagedKvLayer>> bad;
  auto add = [&](const char* what, auto mutate) {
    PagedKvLayer l = valid_layer(KvLayout::kNHD);
    mutate(l);
    bad.emplace_back(what, l);
  };
  add("zero batch", [](PagedKvLayer& l) { l.batch = 0; });
  add("null k", [](PagedKvLayer& l) { l.k = nullptr; });
  add("null table", [](PagedKvLayer& l) { l.block_table = nullptr; });
  add("f32 kv", [](PagedKvLayer& l) { l.dtype = DType::kF32; });
  add("heads overlap dims", [](PagedKvLayer& l) { l.strides.head = 64; });
  add("tokens overlap heads", [](PagedKvLayer& l) { l.strides.token = 512; });
  add("pages overlap tokens", [](PagedKvLayer& l) { l.strides.page = 1024; });
  add("negative stride", [](PagedKvLayer& l) { l.strides.token = -1024; });
  add("zero table stride", [](PagedKvLayer& l) { l.block_table_stride = 0; });
  for (const auto& [what, layer] : bad) {
    EXPECT_EQ(validate(layer).code(), StatusCode::kInvalidArgument) << what;
  }
}

TEST(PagedKv, ViewYieldsLayers) {
  static std::uint16_t k0[8], k1[8], v0[8], v1[8];
  const void* ks[] = {k0, k1};
  const void* vs[] = {v0, v1};
  PagedKvView view;
  view.k_layers = ks;
  view.v_layers = vs;
  view.batch = 1;
  view.head_dim = 128;
  EXPECT_EQ(view.num_layers(), 2);
  const PagedKvLayer l1 = view.layer(1);
  EXPECT_EQ(l1.k, k1);
  EXPECT_EQ(l1.v, v1);
  EXPECT_EQ(l1.head_dim, 128);
}

}  // namespace
}  // namespace tierkv
