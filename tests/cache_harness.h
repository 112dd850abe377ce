// What the cache suites share: a tiny-model page pool on a backend, KV "a model would compute"
// for any page (a pure function of its page key and layer, written with fill_uniform), and a
// check of any page against it. The key names the whole prefix (salt and scope included), so a
// correct cache returns exactly that content and anything else is wrong KV.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string_view>
#include <vector>

#include "backends.h"
#include "tierkv/cache.h"
#include "tierkv/page_pool.h"

namespace tierkv::test {

inline std::uint64_t kv_seed(const Key& k, std::int32_t layer, int kv) {
  return k.hash() ^ (std::uint64_t(layer) * 2 + std::uint64_t(kv) + 1);
}

// Token ids inside the tiny model's vocabulary.
inline std::vector<std::int32_t> random_tokens(std::size_t n, std::mt19937_64& rng) {
  std::vector<std::int32_t> t(n);
  for (auto& x : t)
    x = static_cast<std::int32_t>(rng() % 512);
  return t;
}

class CacheHarness {
 public:
  static constexpr std::int32_t kChunk = 64;  // 4 pages of 16 tokens

  // `backend` is borrowed and must outlive the harness. `num_layers`: the tiny model's (2) unless
  // given.
  explicit CacheHarness(Backend& backend, std::int32_t num_pages = 512, std::int32_t num_layers = 0)
      : backend_(backend) {
    model_ = *model_preset("tiny");
    model_.identity.weights = "test-weights";
    if (num_layers > 0) model_.num_layers = num_layers;
    PagePoolOptions po;
    po.model = model_;
    po.num_pages = num_pages;
    po.pages_per_run = kChunk / model_.page_tokens;
    auto pool = PagePool::create(backend, po);
    EXPECT_TRUE(pool.ok()) << pool.status().to_string();
    if (pool.ok()) pool_ = std::move(pool).value();
    page_elems_ = std::size_t(model_.page_tokens) * model_.num_kv_heads * model_.head_dim;
  }

  Backend& backend() { return backend_; }
  PagePool& pool() { return *pool_; }
  const ModelSpec& model() const { return model_; }
  std::size_t chunk_bytes() const { return std::size_t(kChunk) * model_.kv_bytes_per_token(); }

  CacheOptions options(std::int32_t host_chunks, TransferMode mode = TransferMode::kAuto) const {
    CacheOptions o;
    o.model = model_;
    o.chunk_tokens = kChunk;
    o.host_bytes = std::size_t(host_chunks) * chunk_bytes();
    o.transfer.mode = mode;
    return o;
  }

  void* page_ptr(std::int32_t layer, int kv, std::int32_t page) const {
    const PagedKvView v = pool_->view();
    const void* base = (kv == 0 ? v.k_layers : v.v_layers)[std::size_t(layer)];
    return static_cast<std::uint8_t*>(const_cast<void*>(base)) +
           std::size_t(page) * page_elems_ * 2;
  }

  // Writes the KV of keyed pages [first, first + n) of a prompt into pages[first...].
  void write_kv(Stream& s, const PromptKeys& keys, std::span<const std::int32_t> pages,
                std::size_t n, std::size_t first = 0) {
    for (std::size_t i = first; i < first + n; ++i) {
      for (std::int32_t l = 0; l < model_.num_layers; ++l) {
        for (int kv = 0; kv < 2; ++kv) {
          EXPECT_OK(backend_.fill_uniform(page_ptr(l, kv, pages[i]), page_elems_, model_.kv_dtype,
                                          kv_seed(keys.pages[i], l, kv), -1.0f, 1.0f, s));
        }
      }
    }
  }

  void clobber(Stream& s, std::span<const std::int32_t> pages) {
    for (std::int32_t p : pages) {
      for (std::int32_t l = 0; l < model_.num_layers; ++l) {
        for (int kv = 0; kv < 2; ++kv)
          EXPECT_OK(s.fill(page_ptr(l, kv, p), 0xff, page_elems_ * 2));
      }
    }
  }

  // Elements of pages[j] (j in [0, n)) that differ from the content of keys.pages[first + j], in
  // the first `layers` layers (all when -1).
  std::size_t wrong_elements(Stream& s, const PromptKeys& keys, std::span<const std::int32_t> pages,
                             std::size_t first, std::size_t n, std::int32_t layers = -1) {
    std::vector<std::uint16_t> got(page_elems_);
    std::size_t wrong = 0;
    for (std::size_t j = 0; j < n; ++j) {
      for (std::int32_t l = 0; l < (layers < 0 ? model_.num_layers : layers); ++l) {
        for (int kv = 0; kv < 2; ++kv) {
          EXPECT_OK(s.copy(got.data(), page_ptr(l, kv, pages[j]), page_elems_ * 2));
          EXPECT_OK(s.synchronize());
          const std::uint64_t seed = kv_seed(keys.pages[first + j], l, kv);
          for (std::size_t e = 0; e < page_elems_; ++e)
            wrong += got[e] != float_to_bf16_bits(uniform_at(seed, e, -1.0f, 1.0f));
        }
      }
    }
    return wrong;
  }
  // Blocks (a page's K or V in one layer) of pages[j] that hold exactly the content of
  // keys.pages[first + j]: random bf16 values match element by element often enough by chance,
  // whole blocks never.
  std::size_t matching_blocks(Stream& s, const PromptKeys& keys,
                              std::span<const std::int32_t> pages, std::size_t first,
                              std::size_t n) {
    std::vector<std::uint16_t> got(page_elems_);
    std::size_t matching = 0;
    for (std::size_t j = 0; j < n; ++j) {
      for (std::int32_t l = 0; l < model_.num_layers; ++l) {
        for (int kv = 0; kv < 2; ++kv) {
          EXPECT_OK(s.copy(got.data(), page_ptr(l, kv, pages[j]), page_elems_ * 2));
          EXPECT_OK(s.synchronize());
          const std::uint64_t seed = kv_seed(keys.pages[first + j], l, kv);
          bool same = true;
          for (std::size_t e = 0; e < page_elems_ && same; ++e)
            same = got[e] == float_to_bf16_bits(uniform_at(seed, e, -1.0f, 1.0f));
          matching += same;
        }
      }
    }
    return matching;
  }
  std::size_t page_bytes_checked(std::size_t n) const {
    return n * std::size_t(model_.num_layers) * 2 * page_elems_ * 2;
  }

  LoadRequest load_request(const PromptKeys& keys, std::int32_t first, std::int32_t num,
                           std::span<const std::int32_t> pages) const {
    LoadRequest r;
    r.keys = &keys;
    r.first_token = first;
    r.num_tokens = num;
    r.dst = pool_->view();
    r.dst_pages = pages;
    return r;
  }

  SaveRequest save_request(const PromptKeys& keys, std::span<const std::int32_t> pages,
                           Stream& producer) const {
    SaveRequest r;
    r.keys = &keys;
    r.num_tokens = keys.tokens;
    r.src = pool_->view();
    r.src_pages = pages;
    r.producer = &producer;
    return r;
  }

  // Computes, writes and saves a prompt of `chunks` full chunks; returns its keys.
  PromptKeys save_prompt(Cache& cache, Stream& s, std::mt19937_64& rng, std::int32_t chunks,
                         std::string_view salt = "") {
    const auto tokens = random_tokens(std::size_t(chunks) * kChunk, rng);
    auto keys = cache.keys(tokens, salt);
    EXPECT_TRUE(keys.ok());
    auto pages = pool_->allocate(std::int32_t(keys->pages.size()));
    EXPECT_TRUE(pages.ok());
    write_kv(s, *keys, *pages, keys->pages.size());
    auto save = cache.save(save_request(*keys, *pages, s));
    EXPECT_TRUE(save.ok()) << save.status().to_string();
    if (save.ok()) EXPECT_OK(save->wait());
    EXPECT_OK(s.synchronize());
    EXPECT_OK(pool_->release(*pages));
    return *keys;
  }

 private:
  Backend& backend_;
  ModelSpec model_;
  std::unique_ptr<PagePool> pool_;
  std::size_t page_elems_ = 0;
};

}  // namespace tierkv::test
