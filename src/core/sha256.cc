#include "core/sha256.h"

#include <openssl/evp.h>

#include <bit>
#include <cstring>

#include "tierkv/status.h"

namespace tierkv {
namespace {

EVP_MD_CTX* ctx_of(void* p) {
  return static_cast<EVP_MD_CTX*>(p);
}

void init(EVP_MD_CTX* ctx) {
  if (EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1) {
    detail::abort_with("tierkv: EVP_DigestInit_ex(sha256) failed");
  }
}

template <typename T>
void put_le(Sha256& h, T v) {
  unsigned char b[sizeof(T)];
  for (std::size_t i = 0; i < sizeof(T); ++i)
    b[i] = static_cast<unsigned char>(v >> (8 * i));
  h.bytes(b, sizeof(T));
}

}  // namespace

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (ctx_ == nullptr) detail::abort_with("tierkv: EVP_MD_CTX_new failed");
  init(ctx_of(ctx_));
}

Sha256::~Sha256() {
  EVP_MD_CTX_free(ctx_of(ctx_));
}

Sha256& Sha256::bytes(const void* data, std::size_t n) {
  EVP_DigestUpdate(ctx_of(ctx_), data, n);
  return *this;
}
Sha256& Sha256::u32(std::uint32_t v) {
  put_le(*this, v);
  return *this;
}
Sha256& Sha256::u64(std::uint64_t v) {
  put_le(*this, v);
  return *this;
}
Sha256& Sha256::f32(float v) {
  return u32(std::bit_cast<std::uint32_t>(v));
}
Sha256& Sha256::str(std::string_view s) {
  u64(s.size());
  return bytes(s.data(), s.size());
}

Digest Sha256::finish() {
  Digest d{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_of(ctx_), d.data(), &len);
  init(ctx_of(ctx_));
  return d;
}

Digest sha256(const void* data, std::size_t n) {
  return Sha256().bytes(data, n).finish();
}

}  // namespace tierkv
