// Incremental SHA-256 (OpenSSL) with helpers for unambiguous encodings: fixed-width little-endian
// integers and length-prefixed strings, so that distinct field sequences never hash alike.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "tierkv/model_spec.h"

namespace tierkv {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  Sha256& bytes(const void* data, std::size_t n);
  Sha256& u32(std::uint32_t v);
  Sha256& u64(std::uint64_t v);
  Sha256& f32(float v);
  // Length (u64) then the characters.
  Sha256& str(std::string_view s);
  // Returns the digest and resets for a new message.
  Digest finish();

 private:
  void* ctx_;  // EVP_MD_CTX
};

Digest sha256(const void* data, std::size_t n);

}  // namespace tierkv
