// The misuse suite: every public entry of the model spec, the page pool, the cache and its
// handles, the paged-KV views and the attention planners, driven with out-of-range, overflowing,
// default-constructed, moved-from and foreign inputs. Each must be answered by a clear Status
// (an error code and a message), never a crash, a hang, an exception or wrong KV. It runs under
// AddressSanitizer+UBSan and ThreadSanitizer in CI, which turn any out-of-bounds access the
// checks miss into a failure. It prints how many cases it tried.
#include <gtest/gtest.h>

#include <climits>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cache_harness.h"
#include "engine/llama.h"
#include "tierkv/attention.h"
#include "tierkv/prefill.h"

namespace tierkv {
namespace {

using test::CacheHarness;
using test::random_tokens;

constexpr std::int32_t kChunk = CacheHarness::kChunk;

int g_cases = 0;

// One refused case: an error with the expected code and a message a person can act on.
#define EXPECT_REFUSED(expr, code_)                                                       \
  do {                                                                                    \
    ++g_cases;                                                                            \
    const ::tierkv::Status refused_s_ = (expr);                                           \
    EXPECT_EQ(refused_s_.code(), (code_)) << #expr << ": " << refused_s_.to_string();     \
    EXPECT_FALSE(refused_s_.message().empty()) << #expr << " refused without a message"; \
  } while (0)

template <typename T>
Status status_of(const Result<T>& r) {
  return r.status();
}
Status status_of(const Status& s) {
  return s;
}
#define REFUSED(expr, code_) EXPECT_REFUSED(status_of(expr), code_)

class MisuseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(backend_, create_backend(BackendKind::kCpu));
    h_ = std::make_unique<CacheHarness>(*backend_, 256);
    ASSERT_OK_AND_ASSIGN(stream_, backend_->create_stream());
    CacheOptions o = h_->options(4);
    o.gpu_pool = &h_->pool();
    ASSERT_OK_AND_ASSIGN(cache_, Cache::create(*backend_, o));
    std::mt19937_64 rng(5);
    tokens_ = random_tokens(2 * kChunk + 7, rng);
    ASSERT_OK_AND_ASSIGN(keys_, cache_->keys(tokens_, "tenant"));
    ASSERT_OK_AND_ASSIGN(pages_, h_->pool().allocate(std::int32_t(keys_.pages.size()) + 1));
  }
  void TearDown() override {
    if (h_ && !pages_.empty()) EXPECT_OK(h_->pool().release(pages_));
    cache_.reset();
    stream_.reset();
    h_.reset();
    backend_.reset();
  }

  LoadRequest load(std::int32_t first, std::int32_t num) {
    return h_->load_request(keys_, first, num, pages_);
  }
  SaveRequest save() { return h_->save_request(keys_, pages_, *stream_); }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<CacheHarness> h_;
  std::unique_ptr<Stream> stream_;
  std::unique_ptr<Cache> cache_;
  std::vector<std::int32_t> tokens_;
  PromptKeys keys_;
  std::vector<std::int32_t> pages_;
};

constexpr auto kInvalid = StatusCode::kInvalidArgument;

TEST_F(MisuseTest, ModelSpecRefusesWhatIsOutOfRange) {
  const ModelSpec good = h_->model();
  ASSERT_OK(good.validate());
  const auto with = [&](auto change) {
    ModelSpec m = good;
    change(m);
    return m.validate();
  };
  REFUSED(with([](ModelSpec& m) { m.num_layers = 0; }), kInvalid);
  REFUSED(with([](ModelSpec& m) { m.num_layers = INT32_MAX; }), kInvalid);
  REFUSED(with([](ModelSpec& m) { m.num_kv_heads = -1; }), kInvalid);
  REFUSED(with([](ModelSpec& m) { m.num_q_heads = 3; }), kInvalid);
  REFUSED(with([](ModelSpec& m) { m.num_q_heads = m.num_kv_heads = 1 << 20; }), kInvalid);
  REFUSED(with([](ModelSpec& m) { m.head_dim = 12; }), kInvalid);
  REFUSED(with([](ModelSpec& m) { m.head_dim = 1 << 16; }), kInvalid);
  REFUSED(with([](ModelSpec& m) { m.kv_dtype = DType::kF32; }), kInvalid);
  REFUSED(with([](ModelSpec& m) { m.kv_dtype = static_cast<DType>(7); }), kInvalid);
  REFUSED(with([](ModelSpec& m) { m.page_tokens = 0; }), kInvalid);
  REFUSED(with([](ModelSpec& m) { m.page_tokens = 1 << 20; }), kInvalid);
  REFUSED(with([](ModelSpec& m) { m.hidden = INT32_MAX; }), kInvalid);
  REFUSED(with([](ModelSpec& m) { m.intermediate = -5; }), kInvalid);
  REFUSED(with([](ModelSpec& m) { m.vocab = INT32_MAX; }), kInvalid);
  REFUSED(with([](ModelSpec& m) { m.max_positions = INT32_MAX; }), kInvalid);
  REFUSED(with([](ModelSpec& m) { m.identity.model.clear(); }), kInvalid);
  REFUSED(with([](ModelSpec& m) { m.identity.revision.assign(5000, 'x'); }), kInvalid);
  REFUSED(with([](ModelSpec& m) { m.identity.tp_size = 0; }), kInvalid);
  REFUSED(with([](ModelSpec& m) { m.identity.tp_rank = 2; }), kInvalid);
  REFUSED(model_preset("llama-9"), kInvalid);
  REFUSED(require_weights_digest(ModelIdentity{}), kInvalid);
}

TEST_F(MisuseTest, CacheCreationRefusesBadOptions) {
  const auto create = [&](auto change) {
    CacheOptions o = h_->options(4);
    change(o);
    return Cache::create(*backend_, o).status();
  };
  REFUSED(create([](CacheOptions& o) { o.model.identity.weights.clear(); }), kInvalid);
  REFUSED(create([](CacheOptions& o) { o.model.num_layers = 0; }), kInvalid);
  REFUSED(create([](CacheOptions& o) { o.chunk_tokens = 0; }), kInvalid);
  REFUSED(create([](CacheOptions& o) { o.chunk_tokens = -64; }), kInvalid);
  REFUSED(create([](CacheOptions& o) { o.chunk_tokens = 24; }), kInvalid);
  REFUSED(create([](CacheOptions& o) { o.chunk_tokens = 1 << 30; }), kInvalid);
  REFUSED(create([](CacheOptions& o) { o.page_layout = static_cast<KvLayout>(9); }), kInvalid);
  REFUSED(create([](CacheOptions& o) { o.transfer.sm_blocks = 0; }), kInvalid);
  REFUSED(create([&](CacheOptions& o) { o.host_bytes = h_->chunk_bytes() - 1; }), kInvalid);
  REFUSED(create([](CacheOptions& o) { o.host_bytes = std::numeric_limits<std::size_t>::max(); }),
          kInvalid);  // more slots than the tier can index
  REFUSED(create([](CacheOptions& o) { o.host_bytes = std::size_t{1} << 44; }),
          StatusCode::kResourceExhausted);  // more than the machine has
  REFUSED(create([&](CacheOptions& o) {
            o.gpu_pool = &h_->pool();
            o.model.identity.epoch = 1;  // the pool was made for epoch 0
          }),
          kInvalid);
}

TEST_F(MisuseTest, KeysRefuseBadTokens) {
  const std::vector<std::int32_t> negative = {1, -2, 3};
  REFUSED(cache_->keys(negative, ""), kInvalid);
  const std::vector<std::int32_t> past_vocab = {1, h_->model().vocab, 3};
  REFUSED(cache_->keys(past_vocab, ""), kInvalid);
  const std::vector<std::int32_t> int_max = {INT32_MAX};
  REFUSED(cache_->keys(int_max, ""), kInvalid);
  std::vector<std::int32_t> too_long(std::size_t(kMaxPromptTokens) + 1, 0);
  REFUSED(cache_->keys(too_long, ""), kInvalid);
}

TEST_F(MisuseTest, MatchLoadAndSaveRefuseForeignAndMalformedKeys) {
  // Default-constructed keys, keys of another cache, and crafted keys whose fields disagree.
  const PromptKeys empty;
  REFUSED(cache_->match(empty), kInvalid);
  CacheOptions other = h_->options(4);
  other.model.identity.weights = "other-weights";
  ASSERT_OK_AND_ASSIGN(auto other_cache, Cache::create(*backend_, other));
  ASSERT_OK_AND_ASSIGN(const PromptKeys foreign, other_cache->keys(tokens_, "tenant"));
  REFUSED(cache_->match(foreign), kInvalid);
  LoadRequest r = load(0, kChunk);
  r.keys = &foreign;
  REFUSED(cache_->load(r), kInvalid);
  SaveRequest sr = save();
  sr.keys = &foreign;
  REFUSED(cache_->save(sr), kInvalid);

  const auto crafted = [&](auto change) {
    PromptKeys k = keys_;
    change(k);
    return k;
  };
  for (const PromptKeys& k :
       {crafted([](PromptKeys& k) { k.chunk_tokens = 0; }),
        crafted([](PromptKeys& k) { k.page_tokens = 0; }),
        crafted([](PromptKeys& k) { k.tokens = -1; }),
        crafted([](PromptKeys& k) { k.tokens = INT32_MAX; }),
        crafted([](PromptKeys& k) { k.pages.pop_back(); }),
        crafted([](PromptKeys& k) { k.pages.clear(); }),
        crafted([](PromptKeys& k) { k.identity[0] ^= 1; })}) {
    REFUSED(cache_->match(k), kInvalid);
    LoadRequest lr = load(0, kChunk);
    lr.keys = &k;
    REFUSED(cache_->load(lr), kInvalid);
    SaveRequest s = save();
    s.keys = &k;
    REFUSED(cache_->save(s), kInvalid);
  }
  REFUSED(cache_->load(LoadRequest{}), kInvalid);
  REFUSED(cache_->save(SaveRequest{}), kInvalid);
}

TEST_F(MisuseTest, LoadRefusesBadRangesAndPages) {
  REFUSED(cache_->load(load(-16, kChunk)), kInvalid);
  REFUSED(cache_->load(load(0, -kChunk)), kInvalid);
  REFUSED(cache_->load(load(3, kChunk - 3)), kInvalid);               // not on a page
  REFUSED(cache_->load(load(0, kChunk + 16)), kInvalid);              // not ending on a chunk
  REFUSED(cache_->load(load(0, 3 * kChunk)), kInvalid);               // past the full chunks
  REFUSED(cache_->load(load(INT32_MAX - 63, kChunk)), kInvalid);      // first + num overflows
  REFUSED(cache_->load(load(kChunk, INT32_MAX - 15)), kInvalid);      // likewise
  REFUSED(cache_->load(load(INT32_MIN, INT32_MIN)), kInvalid);
  const std::int32_t num_pages = h_->pool().view().num_pages;
  for (std::int32_t bad : {-1, num_pages, num_pages + 1, INT32_MAX, INT32_MIN}) {
    std::vector<std::int32_t> pages = pages_;
    pages[2] = bad;
    LoadRequest r = h_->load_request(keys_, 0, 2 * kChunk, pages);
    REFUSED(cache_->load(r), kInvalid);
    SaveRequest s = h_->save_request(keys_, pages, *stream_);
    REFUSED(cache_->save(s), kInvalid);
  }
  REFUSED(cache_->load(h_->load_request(keys_, 0, 2 * kChunk, std::span(pages_).first(3))),
          kInvalid);
  const auto with_view = [&](auto change) {
    LoadRequest r = load(0, kChunk);
    change(r.dst);
    return cache_->load(r).status();
  };
  REFUSED(with_view([](PagedKvView& v) { v.num_pages = 0; }), kInvalid);
  REFUSED(with_view([](PagedKvView& v) { v.k_layers = {}; }), kInvalid);
  REFUSED(with_view([](PagedKvView& v) { v.head_dim = 128; }), kInvalid);
  REFUSED(with_view([](PagedKvView& v) { v.dtype = DType::kF16; }), kInvalid);
  REFUSED(with_view([](PagedKvView& v) { v.page_tokens = 32; }), kInvalid);
  REFUSED(with_view([](PagedKvView& v) { v.strides.token = 1; }), kInvalid);
  std::vector<const void*> null_layers(std::size_t(h_->model().num_layers), nullptr);
  REFUSED(with_view([&](PagedKvView& v) { v.k_layers = null_layers; }), kInvalid);
  // Nothing was pinned or queued by any refused call.
  EXPECT_EQ(cache_->stats().host_pinned_slots, 0);
  EXPECT_EQ(cache_->stats().loads, 0u);
}

TEST_F(MisuseTest, SaveRefusesBadRequests) {
  SaveRequest r = save();
  r.producer = nullptr;
  REFUSED(cache_->save(r), kInvalid);
  r = save();
  r.num_tokens = -1;
  REFUSED(cache_->save(r), kInvalid);
  r.num_tokens = keys_.tokens + 1;
  REFUSED(cache_->save(r), kInvalid);
  r.num_tokens = INT32_MAX;
  REFUSED(cache_->save(r), kInvalid);
  r = save();
  r.src_pages = std::span(pages_).first(2);
  REFUSED(cache_->save(r), kInvalid);
  EXPECT_EQ(cache_->stats().saves, 0u);
}

TEST_F(MisuseTest, MovedFromHandlesAreEmptyAndSafe) {
  h_->write_kv(*stream_, keys_, pages_, keys_.pages.size());
  ASSERT_OK_AND_ASSIGN(Save s, cache_->save(save()));
  ASSERT_OK(s.wait());
  Save s2 = std::move(s);
  REFUSED(s.wait(), StatusCode::kFailedPrecondition);  // NOLINT(bugprone-use-after-move)
  EXPECT_TRUE(s.done());
  EXPECT_EQ(s.queued_chunks(), 0);
  ASSERT_OK_AND_ASSIGN(auto dst, h_->pool().allocate(8));
  ASSERT_OK_AND_ASSIGN(Load l, cache_->load(h_->load_request(keys_, 0, 2 * kChunk, dst)));
  Load l2 = std::move(l);
  REFUSED(l.wait(), StatusCode::kFailedPrecondition);  // NOLINT(bugprone-use-after-move)
  REFUSED(l.wait_layer(0, *stream_), StatusCode::kFailedPrecondition);
  EXPECT_EQ(l.loaded_tokens(), 0);
  EXPECT_EQ(l.first_token(), 0);
  REFUSED(l2.wait_layer(-1, *stream_), kInvalid);
  REFUSED(l2.wait_layer(h_->model().num_layers, *stream_), kInvalid);
  ASSERT_OK(l2.wait());
  l = std::move(l2);  // assigning into a moved-from handle
  ASSERT_OK(l.wait());
  EXPECT_EQ(h_->wrong_elements(*stream_, keys_, dst, 0, dst.size()), 0u);
  ASSERT_OK(h_->pool().release(dst));
}

TEST_F(MisuseTest, PagePoolRefusesBadSizesAndIds) {
  const auto create = [&](auto change) {
    PagePoolOptions o;
    o.model = h_->model();
    o.num_pages = 16;
    change(o);
    return PagePool::create(*backend_, o).status();
  };
  REFUSED(create([](PagePoolOptions& o) { o.num_pages = 0; }), kInvalid);
  REFUSED(create([](PagePoolOptions& o) { o.num_pages = -3; }), kInvalid);
  REFUSED(create([](PagePoolOptions& o) { o.num_pages = INT32_MAX; }), kInvalid);
  REFUSED(create([](PagePoolOptions& o) { o.pages_per_run = 0; }), kInvalid);
  REFUSED(create([](PagePoolOptions& o) { o.pages_per_run = 17; }), kInvalid);
  REFUSED(create([](PagePoolOptions& o) { o.model.head_dim = 7; }), kInvalid);
  // Fits the page-id range, not the machine: refused before any allocation, not by bad_alloc.
  REFUSED(create([](PagePoolOptions& o) {
            o.num_pages = kMaxPoolPages;
            o.model.num_layers = 1024;
          }),
          StatusCode::kResourceExhausted);
  PagePool& pool = h_->pool();
  REFUSED(pool.allocate(-1), kInvalid);
  REFUSED(pool.allocate(INT32_MAX), StatusCode::kResourceExhausted);
  const std::int32_t n = pool.view().num_pages;
  for (std::int32_t bad : {-1, n, INT32_MAX}) {
    const std::vector<std::int32_t> ids = {bad};
    REFUSED(pool.release(ids), kInvalid);
    ++g_cases;
    EXPECT_FALSE(pool.publish(bad, keys_.pages[0]));
  }
  ASSERT_OK_AND_ASSIGN(auto one, pool.allocate(1));
  const std::vector<std::int32_t> twice = {one[0], one[0]};
  REFUSED(pool.release(twice), StatusCode::kFailedPrecondition);  // all or nothing
  ASSERT_OK(pool.release(one));
  REFUSED(pool.release(one), StatusCode::kFailedPrecondition);  // a second release
}

TEST_F(MisuseTest, PlansRefuseWhatTheirRunsWouldRefuse) {
  PagedKvLayer kv = h_->pool().view().layer(0);
  std::vector<std::int32_t> table(8, 0), lens = {16};
  kv.block_table = table.data();
  kv.seq_lens = lens.data();
  kv.block_table_stride = 8;
  kv.batch = 1;
  const DeviceInfo& dev = backend_->info();
  const std::int32_t hq = h_->model().num_q_heads;
  ASSERT_OK(plan_decode_attention(dev, kv, hq, lens).status());
  PagedKvLayer odd = kv;
  odd.k = static_cast<const std::uint8_t*>(kv.k) + 2;  // not 16-byte aligned
  REFUSED(plan_decode_attention(dev, odd, hq, lens), kInvalid);
  const std::vector<std::int32_t> q_lens = {16};
  REFUSED(plan_prefill_attention(dev, odd, hq, q_lens, lens), kInvalid);
  odd = kv;
  odd.strides.token += 4;  // 8 bytes: every row misaligned
  odd.strides.page += 4 * odd.page_tokens;
  REFUSED(plan_decode_attention(dev, odd, hq, lens), kInvalid);
  REFUSED(plan_prefill_attention(dev, odd, hq, q_lens, lens), kInvalid);
  REFUSED(plan_decode_attention(dev, kv, hq + 1, lens), kInvalid);
  REFUSED(plan_decode_attention(dev, kv, hq, std::vector<std::int32_t>{0}), kInvalid);
  const std::vector<std::int32_t> two = {16, 16};
  REFUSED(plan_decode_attention(dev, kv, hq, two), kInvalid);
  PagedKvLayer wide = kv;
  wide.head_dim = 96;
  wide.strides = packed_strides(KvLayout::kNHD, wide.page_tokens, wide.num_kv_heads, 96);
  REFUSED(plan_decode_attention(dev, wide, hq, lens), StatusCode::kUnimplemented);
}

TEST_F(MisuseTest, BackendRefusesBadCalls) {
  REFUSED(backend_->allocate(MemoryKind::kDevice, 0), kInvalid);
  REFUSED(backend_->allocate(MemoryKind::kDevice, std::numeric_limits<std::size_t>::max()),
          StatusCode::kResourceExhausted);
  REFUSED(stream_->copy(nullptr, pages_.data(), 4), kInvalid);
  REFUSED(stream_->fill(nullptr, 0, 4), kInvalid);
  const CopyRun null_run{nullptr, nullptr, 16};
  REFUSED(backend_->copy_runs(std::span(&null_run, 1), CopyPath::kCopyEngine, 1, *stream_),
          kInvalid);
  REFUSED(backend_->copy_runs({}, CopyPath::kSmKernel, 0, *stream_), kInvalid);
  PagedKvLayer kv;
  REFUSED(validate(kv), kInvalid);
}

TEST_F(MisuseTest, RunnerRefusesBadViewsWeightsAndSteps) {
  ModelSpec m = h_->model();
  m.identity.weights.clear();
  ASSERT_OK_AND_ASSIGN(LlamaWeights w, random_llama_weights(*backend_, *stream_, m, 1));
  PagedKvView view = h_->pool().view();
  PagedKvView no_count = view;
  no_count.num_pages = 0;
  ASSERT_OK_AND_ASSIGN(LlamaWeights w2, random_llama_weights(*backend_, *stream_, m, 1));
  REFUSED(LlamaRunner::create(*backend_, std::move(w2), no_count, {}), kInvalid);
  LlamaWeights no_digest;
  ASSERT_OK_AND_ASSIGN(no_digest, random_llama_weights(*backend_, *stream_, m, 2));
  no_digest.digest.clear();
  REFUSED(LlamaRunner::create(*backend_, std::move(no_digest), view, {}), kInvalid);
  ModelSpec claims = m;
  claims.identity.weights = "xxh3-128:00";
  REFUSED(random_llama_weights(*backend_, *stream_, claims, 1), kInvalid);

  RunnerOptions ro;
  ro.max_step_tokens = 64;
  ASSERT_OK_AND_ASSIGN(auto runner, LlamaRunner::create(*backend_, std::move(w), view, ro));
  Sequence seq;
  seq.pages = {pages_[0], h_->pool().view().num_pages};  // the second id is one past the end
  const std::vector<std::int32_t> t20(20, 1);
  REFUSED(runner->prefill_chunk(seq, t20, *stream_, nullptr), kInvalid);
  seq.pages = {pages_[0], -1};
  REFUSED(runner->prefill_chunk(seq, t20, *stream_, nullptr), kInvalid);
  EXPECT_EQ(seq.len, 0) << "a refused step changed the sequence";
  seq.pages = {pages_[0], pages_[1]};
  const std::vector<std::int32_t> bad_id = {1, m.vocab};
  REFUSED(runner->prefill_chunk(seq, bad_id, *stream_, nullptr), kInvalid);
  REFUSED(runner->prefill_chunk(seq, {}, *stream_, nullptr), kInvalid);
  const std::vector<std::int32_t> t65(65, 1);
  REFUSED(runner->prefill_chunk(seq, t65, *stream_, nullptr), kInvalid);
  Sequence* one[] = {&seq};
  REFUSED(runner->decode(one, {}, *stream_, nullptr, nullptr), kInvalid);
}

TEST(MisuseSummary, Report) {
  std::cout << "misuse: " << g_cases << " cases tried, each refused with a Status\n";
}

}  // namespace
}  // namespace tierkv
