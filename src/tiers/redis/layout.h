// How one chunk record is laid out in Redis: its keys and which payload bytes each value holds.
//
//   <prefix>:<identity, first 8 bytes in hex>:{<chunk key, 64 hex>}:h        header value
//   <prefix>:<identity, first 8 bytes in hex>:{<chunk key, 64 hex>}:<l>      layer l, or
//   <prefix>:<identity, first 8 bytes in hex>:{<chunk key, 64 hex>}:<l>.<p>  part p of layer l
//
// The header value is the record header (src/core/record.h) followed by the writer's number of
// parts per layer (8 bytes, little-endian), so that a reader configured with another
// max_value_bytes still finds the parts. Every key of a record has the same hash tag, the chunk
// key, so a record lives in one cluster slot and one MSET (or MULTI/EXEC) or MGET covers it.
//
// Thread safety: values and pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "tierkv/store.h"

namespace tierkv::redis {

inline constexpr std::size_t kPartTrailerBytes = 8;

class RecordLayout {
 public:
  // Layers of `id` split into `parts` parts each (of ceil(layer_bytes / parts) bytes, the last
  // one possibly shorter). REQUIRES: 1 <= parts <= id.layer_bytes.
  RecordLayout(const RecordId& id, std::string_view prefix, std::uint32_t parts);

  // The fewest parts per layer that keep every value within `max_value_bytes` (> 0).
  static std::uint32_t parts_for(std::uint64_t layer_bytes, std::uint64_t max_value_bytes);
  // Whether `parts` (read from a record, so untrusted) splits layers of `layer_bytes` into
  // non-empty parts.
  static bool valid_parts(std::uint64_t layer_bytes, std::uint64_t parts);

  std::uint32_t num_layers() const { return num_layers_; }
  std::uint32_t parts_per_layer() const { return parts_; }
  std::uint64_t part_bytes() const { return part_bytes_; }
  std::size_t values() const { return std::size_t(num_layers_) * parts_; }

  // The cluster slot of every key of the record.
  int slot() const { return slot_; }
  const std::string& header_key() const { return header_key_; }
  // Key and payload bytes of value v, 0 <= v < values() (layer v / parts, part v % parts).
  std::string value_key(std::size_t v) const;
  std::span<std::uint8_t> value_bytes(std::span<std::uint8_t> payload, std::size_t v) const;
  std::span<const std::uint8_t> value_bytes(std::span<const std::uint8_t> payload,
                                            std::size_t v) const;

 private:
  std::uint64_t offset(std::size_t v) const;
  std::uint64_t length(std::size_t v) const;

  std::string base_;  // "<prefix>:<identity>:{<chunk key>}:"
  std::string header_key_;
  std::uint32_t num_layers_;
  std::uint64_t layer_bytes_;
  std::uint32_t parts_;
  std::uint64_t part_bytes_;
  int slot_;
};

}  // namespace tierkv::redis
