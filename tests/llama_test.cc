// The reference runner on every backend: chunked prefill equals one-shot prefill, decode equals
// prefill at the last position, batched decode equals single decode, and the CUDA runner equals
// the CPU runner on the tiny model. On the CPU backend the arithmetic of each row does not depend
// on how rows are grouped, so those equalities are exact there.
#include "engine/llama.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "backends.h"
#include "engine/llama_loader.h"
#include "engine/rope.h"
#include "tierkv/page_pool.h"

namespace tierkv {
namespace {

using test::BackendTest;

struct Diff {
  double rel_l2 = 0, max_abs = 0;
};
Diff diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d2 = 0, r2 = 0, mx = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    d2 += double(a[i] - b[i]) * (a[i] - b[i]);
    r2 += double(b[i]) * b[i];
    mx = std::max(mx, double(std::abs(a[i] - b[i])));
  }
  return {std::sqrt(d2 / std::max(r2, 1e-30)), mx};
}

std::vector<std::int32_t> random_prompt(std::size_t n, std::int32_t vocab, std::mt19937& rng) {
  std::vector<std::int32_t> t(n);
  for (auto& x : t)
    x = std::int32_t(rng() % std::uint32_t(vocab));
  return t;
}

// Logits agree: exactly on the CPU backend, within bf16 rounding of the activations on CUDA.
void expect_same_logits(BackendKind k, const std::vector<float>& a, const std::vector<float>& b,
                        const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (float v : a)
    ASSERT_TRUE(std::isfinite(v)) << what;
  if (k == BackendKind::kCpu) {
    EXPECT_EQ(a, b) << what;
  } else {
    EXPECT_LE(diff(a, b).rel_l2, 2e-2) << what;
  }
}

class LlamaTest : public BackendTest {
 protected:
  void SetUp() override {
    BackendTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    model_ = *model_preset("tiny");
    PagePoolOptions po;
    po.model = model_;
    po.num_pages = 256;
    auto pool = PagePool::create(backend(), po);
    ASSERT_TRUE(pool.ok()) << pool.status().to_string();
    pool_ = std::move(pool).value();
    ASSERT_OK_AND_ASSIGN(LlamaWeights w, random_llama_weights(backend(), stream(), model_, 7));
    RunnerOptions ro;
    ro.max_step_tokens = 256;
    ro.max_batch = 8;
    ro.max_pages_per_seq = 128;
    auto r = LlamaRunner::create(backend(), std::move(w), pool_->view(), ro);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    runner_ = std::move(r).value();
  }
  void TearDown() override {
    runner_.reset();
    pool_.reset();
    BackendTest::TearDown();
  }

  Sequence new_sequence(std::int32_t tokens) {
    Sequence s;
    auto pages = pool_->allocate((tokens + model_.page_tokens - 1) / model_.page_tokens);
    EXPECT_TRUE(pages.ok());
    if (pages.ok()) s.pages = *pages;
    return s;
  }

  ModelSpec model_;
  std::unique_ptr<PagePool> pool_;
  std::unique_ptr<LlamaRunner> runner_;
};

TEST_P(LlamaTest, ChunkedPrefillMatchesOneShot) {
  std::mt19937 rng(std::random_device{}());
  const auto prompt = random_prompt(150, model_.vocab, rng);
  Sequence whole = new_sequence(150), chunked = new_sequence(150);
  std::vector<float> a, b;
  ASSERT_OK(runner_->prefill(whole, prompt, 256, stream(), &a));
  for (std::int32_t chunk : {1, 7, 16, 33, 100}) {
    chunked.len = 0;
    ASSERT_OK(runner_->prefill(chunked, prompt, chunk, stream(), &b));
    EXPECT_EQ(chunked.len, 150);
    expect_same_logits(GetParam(), b, a, ("chunks of " + std::to_string(chunk)).c_str());
  }
}

TEST_P(LlamaTest, DecodeMatchesPrefillAtTheLastPosition) {
  std::mt19937 rng(std::random_device{}());
  const auto prompt = random_prompt(77, model_.vocab, rng);
  Sequence s1 = new_sequence(77), s2 = new_sequence(77);
  std::vector<float> by_prefill, by_decode;
  ASSERT_OK(runner_->prefill(s1, prompt, 256, stream(), &by_prefill));
  ASSERT_OK(runner_->prefill(s2, std::span(prompt).first(76), 32, stream(), nullptr));
  Sequence* one[] = {&s2};
  const std::int32_t last[] = {prompt.back()};
  ASSERT_OK(runner_->decode(one, last, stream(), &by_decode, nullptr));
  EXPECT_EQ(s2.len, 77);
  expect_same_logits(GetParam(), by_decode, by_prefill, "decode vs prefill");
}

TEST_P(LlamaTest, BatchedDecodeMatchesDecodingAlone) {
  std::mt19937 rng(std::random_device{}());
  std::vector<Sequence> alone, together;
  std::vector<std::int32_t> next_tokens;
  for (std::int32_t len : {5, 40, 129}) {
    const auto prompt = random_prompt(std::size_t(len), model_.vocab, rng);
    alone.push_back(new_sequence(len + 1));
    together.push_back(new_sequence(len + 1));
    ASSERT_OK(runner_->prefill(alone.back(), prompt, 64, stream(), nullptr));
    ASSERT_OK(runner_->prefill(together.back(), prompt, 64, stream(), nullptr));
    next_tokens.push_back(std::int32_t(rng() % std::uint32_t(model_.vocab)));
  }
  std::vector<Sequence*> batch;
  for (auto& s : together)
    batch.push_back(&s);
  std::vector<float> batched;
  std::vector<std::int32_t> greedy;
  ASSERT_OK(runner_->decode(batch, next_tokens, stream(), &batched, &greedy));
  ASSERT_EQ(greedy.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    Sequence* one[] = {&alone[i]};
    std::vector<float> single;
    std::vector<std::int32_t> g;
    ASSERT_OK(runner_->decode(one, std::span(next_tokens).subspan(i, 1), stream(), &single, &g));
    const std::vector<float> row(batched.begin() + std::ptrdiff_t(i * model_.vocab),
                                 batched.begin() + std::ptrdiff_t((i + 1) * model_.vocab));
    expect_same_logits(GetParam(), row, single, "batched vs alone");
    const auto best = std::max_element(single.begin(), single.end()) - single.begin();
    EXPECT_EQ(g[0], best) << "greedy sampling takes the largest logit";
  }
}

TEST_P(LlamaTest, BadRequestsAreErrors) {
  Sequence s = new_sequence(32);
  const std::vector<std::int32_t> out_of_vocab = {1, model_.vocab, 2};
  EXPECT_EQ(runner_->prefill(s, out_of_vocab, 16, stream(), nullptr).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(s.len, 0) << "a refused step changes nothing";
  const std::vector<std::int32_t> negative = {-1};
  EXPECT_EQ(runner_->prefill(s, negative, 16, stream(), nullptr).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(runner_->prefill(s, {}, 16, stream(), nullptr).code(), StatusCode::kInvalidArgument);
  const std::vector<std::int32_t> too_long(33, 1);  // pages hold 32 tokens
  EXPECT_EQ(runner_->prefill(s, too_long, 64, stream(), nullptr).code(),
            StatusCode::kInvalidArgument);
  const std::vector<std::int32_t> huge_chunk(300, 1);
  EXPECT_EQ(runner_->prefill_chunk(s, huge_chunk, stream(), nullptr).code(),
            StatusCode::kInvalidArgument);
  Sequence far = new_sequence(32);
  far.len = model_.max_positions;  // past the model's context
  const std::vector<std::int32_t> one = {3};
  Sequence* batch[] = {&far};
  EXPECT_EQ(runner_->decode(batch, one, stream(), nullptr, nullptr).code(),
            StatusCode::kInvalidArgument);
  const std::vector<std::int32_t> two = {3, 4};
  EXPECT_EQ(runner_->decode(batch, two, stream(), nullptr, nullptr).code(),
            StatusCode::kInvalidArgument);
}

TEST_P(LlamaTest, SafetensorsCheckpointRunsLikeTheWeightsItWasWrittenFrom) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("tierkv-llama-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  ASSERT_OK_AND_ASSIGN(LlamaWeights original, random_llama_weights(backend(), stream(), model_, 7));
  ASSERT_OK(save_llama_weights(stream(), original, (dir / "model.safetensors").string()));
  ASSERT_OK_AND_ASSIGN(SafetensorsSet ckpt, SafetensorsSet::open_dir(dir.string()));
  ASSERT_OK_AND_ASSIGN(LlamaWeights loaded, load_llama_weights(backend(), stream(), model_, ckpt));
  ASSERT_OK_AND_ASSIGN(auto from_file, LlamaRunner::create(backend(), std::move(loaded),
                                                           pool_->view(), RunnerOptions{}));
  std::mt19937 rng(std::random_device{}());
  const auto prompt = random_prompt(40, model_.vocab, rng);
  Sequence a = new_sequence(40), b = new_sequence(40);
  std::vector<float> la, lb;
  ASSERT_OK(
      runner_->prefill(a, prompt, 16, stream(), &la));  // the fixture's runner: weights of seed 7
  ASSERT_OK(from_file->prefill(b, prompt, 16, stream(), &lb));
  EXPECT_EQ(la, lb) << "the same weights, the same arithmetic";

  // A checkpoint of another shape is refused with the problems named.
  ModelSpec wider = model_;
  wider.hidden *= 2;
  const auto refused = load_llama_weights(backend(), stream(), wider, ckpt);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("model.embed_tokens.weight"), std::string::npos)
      << refused.status().message();
  std::filesystem::remove_all(dir);
}

TIERKV_INSTANTIATE_BACKENDS(LlamaTest);

TEST(LlamaCrossBackend, CudaRunnerMatchesCpuRunner) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const ModelSpec model = *model_preset("tiny");
  std::mt19937 rng(std::random_device{}());
  const auto prompt = random_prompt(200, model.vocab, rng);
  std::vector<std::vector<float>> logits;
  for (BackendKind kind : {BackendKind::kCpu, BackendKind::kCuda}) {
    ASSERT_OK_AND_ASSIGN(auto backend, create_backend(kind));
    ASSERT_OK_AND_ASSIGN(auto stream, backend->create_stream());
    PagePoolOptions po;
    po.model = model;
    po.num_pages = 64;
    ASSERT_OK_AND_ASSIGN(auto pool, PagePool::create(*backend, po));
    ASSERT_OK_AND_ASSIGN(LlamaWeights w, random_llama_weights(*backend, *stream, model, 11));
    ASSERT_OK_AND_ASSIGN(
        auto runner, LlamaRunner::create(*backend, std::move(w), pool->view(), RunnerOptions{}));
    Sequence s;
    ASSERT_OK_AND_ASSIGN(s.pages, pool->allocate(16));
    std::vector<float> l;
    ASSERT_OK(runner->prefill(s, prompt, 64, *stream, &l));
    logits.push_back(l);
  }
  const Diff d = diff(logits[1], logits[0]);
  EXPECT_LE(d.rel_l2, 2e-2) << "CUDA vs CPU, max abs " << d.max_abs;
}

TEST(Rope, Llama3ScalingRegimes) {
  const ModelSpec m = *model_preset("llama-3.1-8b");
  const std::vector<float> f = rope_inv_freq(m);
  ASSERT_EQ(f.size(), 64u);
  EXPECT_FLOAT_EQ(f[0], 1.0f);  // short wavelength: unchanged
  const double raw_last = std::pow(500000.0, -126.0 / 128.0);
  EXPECT_NEAR(f[63], raw_last / 8.0, raw_last * 1e-6);  // long wavelength: divided by the factor
  for (std::size_t i = 1; i < f.size(); ++i)
    EXPECT_LT(f[i], f[i - 1]) << "frequencies fall monotonically";
  ModelSpec plain = m;
  plain.rope_scaling.factor = 0;
  EXPECT_NEAR(rope_inv_freq(plain)[63], raw_last, raw_last * 1e-6);
}

}  // namespace
}  // namespace tierkv
