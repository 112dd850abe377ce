// The store seam: one narrow interface for every tier below pinned host memory (disk, Redis, Redis
// Cluster, and the in-memory and fault-injecting stores the tests use).
//
// A store keeps whole chunks. What it is given and gives back is a chunk's payload exactly as a host
// slot holds it (layer-major: for each layer, the chunk's K pages then its V pages, contiguous), and
// a RecordId that says whose chunk it is. How a store lays the bytes out (one file, several Redis
// values) is its own business, but every store keeps them as self-validating records
// (src/core/record.h, docs/record-format.md): the identity digest, the salt tag, the full chunk key,
// the token count and a checksum per layer travel with the bytes, and read() verifies all of them
// before it reports a hit. A record that fails verification is a miss: read() returns DataLoss,
// counts it, and removes the record. Nothing unverified ever reaches a slot the cache publishes.
//
// The pinned host tier is not a Store: it is the staging area every lower-tier hit passes through on
// its way to the GPU (the GPU reads only pinned host memory). The cache reads a lower-tier hit into
// a reserved host slot, and publishes that slot only after read() returned OK.
//
// Errors: every call returns a Status. A miss is NotFound; a record that is corrupt, truncated or
// foreign is DataLoss (and is removed); a store that cannot be reached is Unavailable or
// DeadlineExceeded (every remote call has a timeout); a full store or queue is ResourceExhausted;
// I/O failures are IoError. No call blocks without bound and no call throws.
//
// Thread safety: every method may be called from any thread at the same time.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "tierkv/key.h"
#include "tierkv/model_spec.h"
#include "tierkv/status.h"

namespace tierkv {

// Whose chunk a record holds and how its payload is shaped. The cache fills it from the prompt's
// keys; a store writes it into the record and read() refuses a record whose fields differ.
struct RecordId {
  Digest identity{};               // Cache::identity(): model, weights, layout, chunk size
  Digest salt_tag{};               // SHA-256 of the tenant salt (the salt itself is never stored)
  Key chunk_key;                   // the chained key of the chunk's last page
  std::uint32_t tokens = 0;        // tokens in the chunk (chunk_tokens)
  std::uint32_t num_layers = 0;    // payload = num_layers layers of layer_bytes each
  std::uint64_t layer_bytes = 0;   // one layer of the chunk: its K pages then its V pages

  std::uint64_t payload_bytes() const { return std::uint64_t(num_layers) * layer_bytes; }
  friend bool operator==(const RecordId&, const RecordId&) = default;
};

// What a store is, for the planner and for people reading stats.
struct StoreCapabilities {
  std::string name;              // "disk", "redis", "redis-cluster", "memory", ...
  std::string description;       // e.g. "disk /var/cache/tierkv (io_uring, O_DIRECT)"
  bool persistent = false;       // survives the process
  bool shared = false;           // other processes or machines see the same records
  bool experiment = false;       // not a real tier: a bandwidth-limited stand-in for experiments
  std::uint64_t max_value_bytes = 0;  // largest single value it moves (0: no limit); informative
};

// Why a read did not hit. Reported per tier by the cache's stats.
enum class MissReason : std::uint8_t {
  kAbsent = 0,    // never stored here (or already erased)
  kEvicted,       // was here, dropped by the store's budget or TTL
  kCorrupt,       // failed verification: checksum, truncation, bad header (removed)
  kForeign,       // another identity, salt or key than asked for (removed)
  kTimeout,       // the store did not answer in time
  kUnavailable,   // the store could not be reached
  kDropped,       // a write was dropped before it reached the store (queue full)
  kCount
};
const char* miss_reason_name(MissReason r);

// Latency histogram with fixed power-of-two microsecond buckets: bucket i counts operations that
// took [2^(i-1), 2^i) µs (bucket 0: under 1 µs; the last bucket: everything longer).
struct LatencyHistogram {
  static constexpr int kBuckets = 24;
  std::array<std::uint64_t, kBuckets> counts{};
  std::uint64_t total_us = 0;
  void add(double us);
  std::uint64_t count() const;
  // Upper edge (µs) of the bucket holding quantile q in [0, 1]; 0 when empty.
  double quantile_us(double q) const;
  void merge(const LatencyHistogram& o);
};

struct StoreStats {
  std::uint64_t hits = 0;
  std::array<std::uint64_t, std::size_t(MissReason::kCount)> misses{};
  std::uint64_t writes = 0, write_failures = 0, erases = 0, evictions = 0;
  std::uint64_t bytes_read = 0, bytes_written = 0;
  std::uint64_t records = 0;         // records held now (when the store can tell; else 0)
  std::uint64_t bytes_held = 0;      // payload bytes held now (when the store can tell; else 0)
  std::uint64_t budget_bytes = 0;    // 0: unbounded or unknown
  LatencyHistogram read_latency, write_latency;
};

class Store {
 public:
  virtual ~Store() = default;

  virtual const StoreCapabilities& capabilities() const = 0;

  // Whether a record for `id` is here, without reading its payload. May be stale by the time of a
  // read(): only read() decides a hit. Errors: Unavailable / DeadlineExceeded.
  virtual Result<bool> contains(const RecordId& id) = 0;

  // Reads the record of `id` into `payload` (exactly id.payload_bytes() bytes; for O_DIRECT
  // stores, 4096-byte aligned: host slots are) and verifies it completely before returning OK.
  // NotFound on a miss; DataLoss when the record fails verification (it is removed); on any error
  // the contents of `payload` are unspecified and must not be used.
  virtual Status read(const RecordId& id, std::span<std::uint8_t> payload) = 0;

  // Stores `payload` (id.payload_bytes() bytes) as the record of `id`. Publication is atomic: a
  // reader sees the whole record or none of it, never a torn one, and a failed write leaves no
  // visible record. AlreadyExists is not an error a store returns: writing a key that is present
  // replaces it or keeps the old one (both hold the same bytes).
  virtual Status write(const RecordId& id, std::span<const std::uint8_t> payload) = 0;

  // Removes the record of `id` if it is here. OK when it was absent.
  virtual Status erase(const RecordId& id) = 0;

  virtual StoreStats stats() const = 0;
};

}  // namespace tierkv
