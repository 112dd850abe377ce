#include "tiers/redis/layout.h"

#include <algorithm>

#include "tiers/redis/slots.h"

namespace tierkv::redis {
namespace {

std::string hex(std::span<const std::uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  s.reserve(bytes.size() * 2);
  for (std::uint8_t b : bytes) {
    s.push_back(kDigits[b >> 4]);
    s.push_back(kDigits[b & 15]);
  }
  return s;
}

}  // namespace

std::uint32_t RecordLayout::parts_for(std::uint64_t layer_bytes, std::uint64_t max_value_bytes) {
  return std::uint32_t((layer_bytes + max_value_bytes - 1) / max_value_bytes);
}

bool RecordLayout::valid_parts(std::uint64_t layer_bytes, std::uint64_t parts) {
  if (parts == 0 || parts > layer_bytes || parts > 0xffffffffu) return false;
  const std::uint64_t part_bytes = (layer_bytes + parts - 1) / parts;
  return (parts - 1) * part_bytes < layer_bytes;
}

RecordLayout::RecordLayout(const RecordId& id, std::string_view prefix, std::uint32_t parts)
    : num_layers_(id.num_layers), layer_bytes_(id.layer_bytes), parts_(parts) {
  part_bytes_ = (layer_bytes_ + parts_ - 1) / parts_;  // balanced parts
  base_.reserve(prefix.size() + 90);
  base_.append(prefix).append(":");
  base_.append(hex(std::span(id.identity).first(8))).append(":{");
  base_.append(hex(id.chunk_key.bytes)).append("}:");
  header_key_ = base_ + "h";
  slot_ = key_slot(header_key_);
}

std::string RecordLayout::value_key(std::size_t v) const {
  std::string k = base_ + std::to_string(v / parts_);
  if (parts_ > 1) k.append(".").append(std::to_string(v % parts_));
  return k;
}

std::uint64_t RecordLayout::offset(std::size_t v) const {
  return std::uint64_t(v / parts_) * layer_bytes_ + std::uint64_t(v % parts_) * part_bytes_;
}

std::uint64_t RecordLayout::length(std::size_t v) const {
  std::uint64_t start = std::uint64_t(v % parts_) * part_bytes_;
  return std::min(part_bytes_, layer_bytes_ - start);
}

std::span<std::uint8_t> RecordLayout::value_bytes(std::span<std::uint8_t> payload,
                                                  std::size_t v) const {
  return payload.subspan(offset(v), length(v));
}

std::span<const std::uint8_t> RecordLayout::value_bytes(std::span<const std::uint8_t> payload,
                                                        std::size_t v) const {
  return payload.subspan(offset(v), length(v));
}

}  // namespace tierkv::redis
