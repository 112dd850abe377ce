// The chunk record: how every store below host memory (disk, Redis, the in-memory test store) keeps
// a chunk's payload so that it validates itself. docs/record-format.md is the byte-level reference.
//
// A record is a header, padded with zeros to a multiple of kRecordAlign (4096) bytes, followed by
// the payload exactly as a host slot holds it. Because the header is a whole number of 4096-byte
// blocks, the payload starts block-aligned in a file and can be read with O_DIRECT straight into an
// aligned host slot. Version 1 of the header holds, all integers little-endian and fixed width:
//
//   magic (8) | version u32 | header_bytes u32 | checksum_kind u32 | num_layers u32 | tokens u32 |
//   reserved u32 (0) | layer_bytes u64 | payload_bytes u64 | identity (32) | salt_tag (32) |
//   chunk_key (32) | num_layers x { layer length u64, layer checksum u64 } | header checksum u64 |
//   zero padding up to header_bytes
//
// Checksums are XXH3-64 (Debian's libxxhash): layer i's with seed i (so swapped layers fail), the
// header's with a fixed seed over every byte before it. The padding must be zero, so every byte of
// a header is covered by a check.
//
// How a store uses it:
//   write: encode_record_header(id, payload) -> store header bytes, then the payload
//   read:  parse_record_header(bytes)   DataLoss: the record is corrupt (MissReason::kCorrupt)
//          check_record_id(header, id)  DataLoss: the record is foreign (MissReason::kForeign)
//          verify_record_payload(...)   DataLoss: the record is corrupt
//   or, for a store that holds the whole record in memory, decode_record() does all three.
//
// Thread safety: every function here is pure (no state) and may be called from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tierkv/status.h"
#include "tierkv/store.h"

namespace tierkv {

inline constexpr std::uint32_t kRecordFormatVersion = 1;
// The header's length is a multiple of this, so the payload is O_DIRECT-aligned in a file.
inline constexpr std::size_t kRecordAlign = 4096;
// Bytes at the start of a record that tell the header's length (magic, version, header_bytes):
// peek_record_header_size() needs this many.
inline constexpr std::size_t kRecordPrefixBytes = 16;
// Bounds a parser enforces before trusting any length.
inline constexpr std::uint32_t kRecordMaxLayers = 4096;
inline constexpr std::uint64_t kRecordMaxLayerBytes = std::uint64_t(1) << 36;  // 64 GiB
// 8-byte magic at offset 0: a non-ASCII first byte and a line ending catch text-mode mangling.
inline constexpr std::uint8_t kRecordMagic[8] = {0x89, 'T', 'K', 'V', 'R', 'E', 'C', '\n'};

// Bytes of a version-1 header for `num_layers` layers (a multiple of kRecordAlign).
// REQUIRES: 1 <= num_layers <= kRecordMaxLayers.
std::uint32_t record_header_size(std::uint32_t num_layers);

// A parsed, validated header. The payload it describes still has to be verified.
struct RecordHeader {
  std::uint32_t version = 0;
  std::uint32_t header_bytes = 0;              // multiple of kRecordAlign; the payload starts here
  RecordId id;                                 // identity, salt tag, chunk key, tokens, shape
  std::uint64_t payload_bytes = 0;             // == id.payload_bytes()
  std::vector<std::uint64_t> layer_checksums;  // one per layer
  std::uint64_t record_bytes() const { return header_bytes + payload_bytes; }
};

// OK, or InvalidArgument naming the field of `id` a record cannot hold (no layers, empty layers,
// more than kRecordMaxLayers layers or layers over kRecordMaxLayerBytes).
Status validate_record_id(const RecordId& id);

// XXH3-64 of `bytes` with `seed`: the checksum the format uses.
std::uint64_t record_checksum(std::span<const std::uint8_t> bytes, std::uint64_t seed);

// Writes the header of the record of `id` holding `payload` into `out`, which must be exactly
// record_header_size(id.num_layers) bytes (it may be an O_DIRECT-aligned buffer). Reads every byte
// of `payload` to checksum it. InvalidArgument for a bad id, a payload of another length than
// id.payload_bytes(), or an `out` of the wrong size.
Status encode_record_header(const RecordId& id, std::span<const std::uint8_t> payload,
                            std::span<std::uint8_t> out);
// The same, into a new vector.
Result<std::vector<std::uint8_t>> encode_record_header(const RecordId& id,
                                                       std::span<const std::uint8_t> payload);
// A whole record (header then payload) in one vector, for stores that keep records as values.
Result<std::vector<std::uint8_t>> encode_record(const RecordId& id,
                                                std::span<const std::uint8_t> payload);

// From the first kRecordPrefixBytes (or more) bytes of a record, the header's length, after
// checking the magic, the version and that the length is a plausible header length. Lets a reader
// that does not know the record's shape read exactly the header. DataLoss otherwise.
Result<std::uint32_t> peek_record_header_size(std::span<const std::uint8_t> prefix);

// Parses and validates a header from `bytes` (at least its header_bytes; bytes after the header
// are ignored). Every length is checked against its bounds before it is used; the header checksum
// and the zero padding are checked. DataLoss, naming what failed, for anything that is not a valid
// version-1 header: a caller counts it as MissReason::kCorrupt.
Result<RecordHeader> parse_record_header(std::span<const std::uint8_t> bytes);

// OK when the header is the record of `expected` (identity, salt tag, chunk key, token count,
// layer count and layer size all equal); DataLoss naming the first field that differs otherwise.
// A caller counts that as MissReason::kForeign: a valid record, but not the one asked for.
Status check_record_id(const RecordHeader& header, const RecordId& expected);

// OK when `bytes` are layer `layer` of the payload `header` describes (length and checksum);
// DataLoss otherwise (corrupt). OutOfRange for a layer index past the header's layers.
Status verify_record_layer(const RecordHeader& header, std::uint32_t layer,
                           std::span<const std::uint8_t> bytes);
// Every layer of a whole payload; DataLoss naming the first layer that fails.
Status verify_record_payload(const RecordHeader& header, std::span<const std::uint8_t> payload);

// What decode_record found.
struct RecordCheck {
  MissReason reason = MissReason::kAbsent;  // kCorrupt or kForeign when !status.ok()
  Status status;                            // OK, or DataLoss saying what failed
};

// For a store holding a whole record in memory: parses `record`, checks it is the record of
// `expected`, checks its total length, verifies the payload and copies it into `payload_out`
// (expected.payload_bytes() bytes; unspecified contents on failure). InvalidArgument (reason
// kAbsent) when payload_out has the wrong size.
RecordCheck decode_record(std::span<const std::uint8_t> record, const RecordId& expected,
                          std::span<std::uint8_t> payload_out);

}  // namespace tierkv
