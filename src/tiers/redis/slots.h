// Redis Cluster hash slots: which of the 16384 slots a key belongs to, and the slot map a node
// reports with CLUSTER SLOTS.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tierkv/status.h"

struct redisReply;

namespace tierkv::redis {

inline constexpr int kClusterSlots = 16384;

// CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with.
std::uint16_t crc16(std::string_view bytes);

// The slot of `key`: CRC16 of its hash tag (the part between the first '{' and the next '}',
// when that is not empty) or of the whole key, modulo 16384.
int key_slot(std::string_view key);

struct SlotRange {
  int first = 0, last = 0;  // inclusive
  std::string host;
  int port = 0;
};

// The master of each slot range in a CLUSTER SLOTS reply. A node that does not know its own
// address reports an empty host (or "?"): `asked_host` (the host the reply came from) stands in.
// DataLoss when the reply is not a well-formed slot map.
Result<std::vector<SlotRange>> parse_cluster_slots(const redisReply* reply,
                                                   const std::string& asked_host);

}  // namespace tierkv::redis
