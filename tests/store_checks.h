// Helpers shared by the store tests: record ids and payloads filled from a seed, so that every byte
// a store returns can be checked against the byte it was given.
#pragma once

#include <stdlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/counter_rng.h"
#include "tierkv/store.h"

namespace tierkv::test {

// A small record shape: `layers` layers of `layer_bytes` each, keyed by `i`, identity `who`.
inline RecordId record_id(std::uint64_t i, std::uint32_t layers = 4,
                          std::uint64_t layer_bytes = 8192, std::uint8_t who = 1,
                          std::uint8_t salt = 7) {
  RecordId id;
  for (std::size_t b = 0; b < 32; ++b) {
    id.identity[b] = std::uint8_t(who * 31 + b);
    id.salt_tag[b] = std::uint8_t(salt * 17 + b);
    id.chunk_key.bytes[b] = std::uint8_t(mix64(i * 977 + b) >> 7);
  }
  id.tokens = 256;
  id.num_layers = layers;
  id.layer_bytes = layer_bytes;
  return id;
}

// Byte `k` of the payload of seed `seed`: a pure function, so any byte can be checked alone.
inline std::uint8_t payload_byte(std::uint64_t seed, std::uint64_t k) {
  return std::uint8_t(mix64((seed << 40) ^ (k >> 3)) >> (8 * (k & 7)));
}
inline void fill_payload(std::uint64_t seed, std::span<std::uint8_t> out) {
  for (std::uint64_t k = 0; k < out.size(); k += 8) {
    const std::uint64_t w = mix64((seed << 40) ^ (k >> 3));
    for (std::uint64_t j = 0; j < 8 && k + j < out.size(); ++j)
      out[k + j] = std::uint8_t(w >> (8 * j));
  }
}
// Number of bytes of `got` that differ from the payload of `seed`.
inline std::uint64_t wrong_bytes(std::uint64_t seed, std::span<const std::uint8_t> got) {
  std::uint64_t wrong = 0;
  for (std::uint64_t k = 0; k < got.size(); ++k)
    wrong += got[k] != payload_byte(seed, k);
  return wrong;
}

// A 4096-aligned buffer like a host slot (O_DIRECT stores need the alignment).
struct AlignedBuffer {
  explicit AlignedBuffer(std::size_t n)
      : size(n),
        data(static_cast<std::uint8_t*>(std::aligned_alloc(4096, (n + 4095) / 4096 * 4096))) {}
  ~AlignedBuffer() { std::free(data); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  std::span<std::uint8_t> span() { return {data, size}; }
  std::size_t size;
  std::uint8_t* data;
};

// A fresh directory under $TMPDIR (or /tmp), removed with its files when the object dies.
class TempDir {
 public:
  explicit TempDir(std::string base = "") {
    if (base.empty()) {
      const char* t = std::getenv("TMPDIR");
      base = t && *t ? t : "/tmp";
    }
    std::string templ = base + "/tierkv-test-XXXXXX";
    if (mkdtemp(templ.data()) != nullptr) path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  // Empty when the directory could not be made.
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A store that forwards every call to a shared inner store: what two caches of one test share as
// their tier, and the base of test decorators, which override only what they change.
class ForwardingStore : public Store {
 public:
  explicit ForwardingStore(std::shared_ptr<Store> inner) : inner_(std::move(inner)) {}
  const StoreCapabilities& capabilities() const override { return inner_->capabilities(); }
  Result<bool> contains(const RecordId& id) override { return inner_->contains(id); }
  Status read(const RecordId& id, std::span<std::uint8_t> p) override {
    return inner_->read(id, p);
  }
  Status write(const RecordId& id, std::span<const std::uint8_t> p) override {
    return inner_->write(id, p);
  }
  Status erase(const RecordId& id) override { return inner_->erase(id); }
  StoreStats stats() const override { return inner_->stats(); }

 protected:
  Store& inner() { return *inner_; }

 private:
  std::shared_ptr<Store> inner_;
};

}  // namespace tierkv::test
