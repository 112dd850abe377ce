#include "tiers/redis/slots.h"

#include <hiredis/hiredis.h>

#include <array>

#include "tiers/redis/resp.h"

namespace tierkv::redis {
namespace {

constexpr std::array<std::uint16_t, 256> make_crc16_table() {
  std::array<std::uint16_t, 256> t{};
  for (int i = 0; i < 256; ++i) {
    std::uint16_t c = std::uint16_t(i << 8);
    for (int b = 0; b < 8; ++b)
      c = (c & 0x8000) ? std::uint16_t((c << 1) ^ 0x1021) : std::uint16_t(c << 1);
    t[std::size_t(i)] = c;
  }
  return t;
}
constexpr std::array<std::uint16_t, 256> kCrc16Table = make_crc16_table();

}  // namespace

std::uint16_t crc16(std::string_view bytes) {
  std::uint16_t crc = 0;
  for (char ch : bytes)
    crc = std::uint16_t((crc << 8) ^ kCrc16Table[((crc >> 8) ^ std::uint8_t(ch)) & 0xff]);
  return crc;
}

int key_slot(std::string_view key) {
  std::size_t open = key.find('{');
  if (open != std::string_view::npos) {
    std::size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1)
      key = key.substr(open + 1, close - open - 1);
  }
  return crc16(key) & (kClusterSlots - 1);
}

Result<std::vector<SlotRange>> parse_cluster_slots(const redisReply* reply,
                                                   const std::string& asked_host) {
  if (reply == nullptr || reply->type != REDIS_REPLY_ARRAY)
    return data_loss("CLUSTER SLOTS answered " + describe(reply) + ", not a slot map");
  std::vector<SlotRange> ranges;
  for (std::size_t i = 0; i < reply->elements; ++i) {
    const redisReply* e = reply->element[i];
    // [first, last, [host, port, id, ...] (the master), replicas...]
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
        e->element[0]->type != REDIS_REPLY_INTEGER || e->element[1]->type != REDIS_REPLY_INTEGER ||
        e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2)
      return data_loss("CLUSTER SLOTS entry " + std::to_string(i) + " is malformed");
    const redisReply* master = e->element[2];
    if (master->element[1]->type != REDIS_REPLY_INTEGER)
      return data_loss("CLUSTER SLOTS entry " + std::to_string(i) + " has no port");
    SlotRange r;
    r.first = int(e->element[0]->integer);
    r.last = int(e->element[1]->integer);
    r.host = std::string(reply_text(master->element[0]));
    if (r.host.empty() || r.host == "?") r.host = asked_host;
    r.port = int(master->element[1]->integer);
    if (r.first < 0 || r.last >= kClusterSlots || r.first > r.last || r.port <= 0)
      return data_loss("CLUSTER SLOTS entry " + std::to_string(i) + " is out of range");
    ranges.push_back(std::move(r));
  }
  return ranges;
}

}  // namespace tierkv::redis
