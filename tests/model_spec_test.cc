#include "tierkv/model_spec.h"

#include <gtest/gtest.h>

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "core/sha256.h"

namespace tierkv {
namespace {

TEST(Sha256, KnownAnswers) {
  // FIPS 180-2 test vectors.
  EXPECT_EQ(digest_hex(sha256("abc", 3)),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(digest_hex(sha256("", 0)),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  EXPECT_EQ(digest_hex(sha256(two_blocks.data(), two_blocks.size())),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256, IncrementalEqualsOneShotAndResets) {
  Sha256 h;
  h.bytes("a", 1).bytes("bc", 2);
  EXPECT_EQ(h.finish(), sha256("abc", 3));
  h.bytes("abc", 3);  // finish() reset the state
  EXPECT_EQ(h.finish(), sha256("abc", 3));
}

TEST(Sha256, LengthPrefixedStringsAreUnambiguous) {
  Sha256 a, b;
  a.str("ab").str("c");
  b.str("a").str("bc");
  EXPECT_NE(a.finish(), b.finish());
}

TEST(ModelSpec, PresetsAreValid) {
  for (std::string_view name : model_preset_names()) {
    auto spec = model_preset(name);
    ASSERT_TRUE(spec.ok()) << name;
    EXPECT_TRUE(spec->validate().ok()) << spec->validate().to_string();
    EXPECT_EQ(spec->name, name);
  }
}

TEST(ModelSpec, Llama8bShape) {
  auto s = model_preset("llama-3.1-8b");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->num_layers, 32);
  EXPECT_EQ(s->num_q_heads, 32);
  EXPECT_EQ(s->num_kv_heads, 8);
  EXPECT_EQ(s->head_dim, 128);
  EXPECT_EQ(s->kv_dtype, DType::kBF16);
  EXPECT_EQ(s->gqa_group(), 4);
  EXPECT_EQ(s->kv_bytes_per_token_layer(), 4096u);   // 4 KiB per token and layer
  EXPECT_EQ(s->kv_bytes_per_token(), 128u * 1024u);  // 128 KiB per token
}

TEST(ModelSpec, UnknownPresetListsKnownOnes) {
  auto s = model_preset("llama-9");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("llama-3.1-8b"), std::string::npos);
}

TEST(ModelSpec, ValidateNamesTheBadField) {
  const ModelSpec good = *model_preset("tiny");
  const std::vector<std::pair<std::string, std::function<void(ModelSpec&)>>> cases = {
      {"num_layers", [](ModelSpec& s) { s.num_layers = 0; }},
      {"num_q_heads", [](ModelSpec& s) { s.num_q_heads = 3; }},
      {"num_kv_heads", [](ModelSpec& s) { s.num_kv_heads = -1; }},
      {"head_dim", [](ModelSpec& s) { s.head_dim = 12; }},
      {"kv_dtype", [](ModelSpec& s) { s.kv_dtype = DType::kF32; }},
      {"page_tokens", [](ModelSpec& s) { s.page_tokens = 0; }},
      {"tp_rank", [](ModelSpec& s) { s.identity.tp_rank = 2; }},
  };
  for (const auto& [field, mutate] : cases) {
    ModelSpec s = good;
    mutate(s);
    const Status st = s.validate();
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << field;
    EXPECT_NE(st.message().find(field), std::string::npos) << st.message();
  }
}

TEST(ModelSpec, IdentityDigestIsStableAndSensitiveToEveryField) {
  const ModelSpec base = *model_preset("llama-3.1-8b");
  EXPECT_EQ(base.identity_digest(), model_preset("llama-3.1-8b")->identity_digest());
  const std::vector<std::function<void(ModelSpec&)>> changes = {
      [](ModelSpec& s) { s.identity.model += "x"; },
      [](ModelSpec& s) { s.identity.revision = "r2"; },
      [](ModelSpec& s) { s.identity.tokenizer = "t"; },
      [](ModelSpec& s) { s.identity.tp_rank = 1, s.identity.tp_size = 2; },
      [](ModelSpec& s) { s.identity.tp_size = 2; },
      [](ModelSpec& s) { s.identity.layout_version += 1; },
      [](ModelSpec& s) { s.kv_dtype = DType::kF16; },
      [](ModelSpec& s) { s.page_tokens = 32; },
      [](ModelSpec& s) { s.num_layers = 31; },
      [](ModelSpec& s) { s.num_kv_heads = 4; },
      [](ModelSpec& s) { s.head_dim = 64; },
      [](ModelSpec& s) { s.rope_theta = 10000.0f; },
  };
  std::set<Digest> seen = {base.identity_digest()};
  for (std::size_t i = 0; i < changes.size(); ++i) {
    ModelSpec s = base;
    changes[i](s);
    EXPECT_TRUE(seen.insert(s.identity_digest()).second)
        << "change " << i << " left the digest as is";
  }
  // The preset name is a label, not identity.
  ModelSpec renamed = base;
  renamed.name = "my-llama";
  EXPECT_EQ(renamed.identity_digest(), base.identity_digest());
}

TEST(ModelSpec, FieldBoundariesCannotBeShifted) {
  // "ab" + "c" and "a" + "bc" in model and revision must not collide.
  ModelSpec a = *model_preset("tiny"), b = a;
  a.identity.model = "ab";
  a.identity.revision = "c";
  b.identity.model = "a";
  b.identity.revision = "bc";
  EXPECT_NE(a.identity_digest(), b.identity_digest());
}

}  // namespace
}  // namespace tierkv
