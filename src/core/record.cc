#include "core/record.h"

#include <algorithm>
#include <cstring>
#include <string>

// Header-only use of xxHash: no run-time library to ship with staged binaries.
#define XXH_INLINE_ALL
#include <xxhash.h>

namespace tierkv {
namespace {

// Byte offsets of the version-1 header's fields (docs/record-format.md).
constexpr std::size_t kOffMagic = 0;
constexpr std::size_t kOffVersion = 8;
constexpr std::size_t kOffHeaderBytes = 12;
constexpr std::size_t kOffChecksumKind = 16;
constexpr std::size_t kOffNumLayers = 20;
constexpr std::size_t kOffTokens = 24;
constexpr std::size_t kOffReserved = 28;
constexpr std::size_t kOffLayerBytes = 32;
constexpr std::size_t kOffPayloadBytes = 40;
constexpr std::size_t kOffIdentity = 48;
constexpr std::size_t kOffSaltTag = 80;
constexpr std::size_t kOffChunkKey = 112;
constexpr std::size_t kOffLayerTable = 144;
constexpr std::size_t kLayerEntryBytes = 16;  // u64 length, u64 checksum

constexpr std::uint32_t kChecksumXxh3 = 1;                       // XXH3-64, layer i seeded with i
constexpr std::uint64_t kHeaderSeed = 0x7469'6572'6b76'6872ull;  // "tierkvhr"

std::size_t table_end(std::uint32_t num_layers) {
  return kOffLayerTable + kLayerEntryBytes * std::size_t(num_layers);
}

void put32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i)
    p[i] = std::uint8_t(v >> (8 * i));
}
void put64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i)
    p[i] = std::uint8_t(v >> (8 * i));
}
std::uint32_t get32(const std::uint8_t* p) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i)
    v = (v << 8) | p[i];
  return v;
}
std::uint64_t get64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | p[i];
  return v;
}

std::string short_hex(const std::uint8_t* p, std::size_t n = 8) {
  static const char* kDigits = "0123456789abcdef";
  std::string s;
  for (std::size_t i = 0; i < n; ++i) {
    s += kDigits[p[i] >> 4];
    s += kDigits[p[i] & 15];
  }
  return s;
}

Status corrupt(const std::string& what) {
  return data_loss("corrupt record: " + what + "; it must not be served (remove it)");
}

// The checks that locate the layer table: magic, version, header length.
Result<std::uint32_t> check_prefix(std::span<const std::uint8_t> b) {
  if (b.size() < kRecordPrefixBytes)
    return corrupt("truncated before the header length (" + std::to_string(b.size()) + " bytes)");
  if (std::memcmp(b.data() + kOffMagic, kRecordMagic, sizeof(kRecordMagic)) != 0)
    return corrupt("bad magic");
  const std::uint32_t version = get32(b.data() + kOffVersion);
  if (version != kRecordFormatVersion)
    return corrupt("format version " + std::to_string(version) + ", this build reads version " +
                   std::to_string(kRecordFormatVersion));
  const std::uint32_t hb = get32(b.data() + kOffHeaderBytes);
  if (hb == 0 || hb % kRecordAlign != 0 || hb > record_header_size(kRecordMaxLayers))
    return corrupt("header length " + std::to_string(hb) + " is not a plausible header length");
  return hb;
}

}  // namespace

std::uint32_t record_header_size(std::uint32_t num_layers) {
  const std::size_t used = table_end(num_layers) + 8;  // + header checksum
  return std::uint32_t((used + kRecordAlign - 1) / kRecordAlign * kRecordAlign);
}

Status validate_record_id(const RecordId& id) {
  if (id.num_layers == 0 || id.num_layers > kRecordMaxLayers)
    return invalid_argument("record num_layers " + std::to_string(id.num_layers) +
                            " is outside [1, " + std::to_string(kRecordMaxLayers) + "]");
  if (id.layer_bytes == 0 || id.layer_bytes > kRecordMaxLayerBytes)
    return invalid_argument("record layer_bytes " + std::to_string(id.layer_bytes) +
                            " is outside [1, 2^36]");
  return Status::Ok();
}

#if TIERKV_XXH3_AVX2
namespace detail {
std::uint64_t xxh3_64_avx2(const void* data, std::size_t size, std::uint64_t seed);
}  // namespace detail

namespace {
// AVX2 about doubles XXH3's speed over the SSE2 baseline build; chosen once, by the CPU.
bool have_avx2() {
  static const bool yes = (__builtin_cpu_init(), __builtin_cpu_supports("avx2") != 0);
  return yes;
}
}  // namespace
#endif

std::uint64_t record_checksum(std::span<const std::uint8_t> bytes, std::uint64_t seed) {
#if TIERKV_XXH3_AVX2
  if (bytes.size() >= 1024 && have_avx2())
    return detail::xxh3_64_avx2(bytes.data(), bytes.size(), seed);
#endif
  return XXH3_64bits_withSeed(bytes.data(), bytes.size(), seed);
}

Status encode_record_header(const RecordId& id, std::span<const std::uint8_t> payload,
                            std::span<std::uint8_t> out) {
  TIERKV_RETURN_IF_ERROR(validate_record_id(id));
  if (payload.size() != id.payload_bytes())
    return invalid_argument("payload of " + std::to_string(payload.size()) +
                            " bytes for a record of " + std::to_string(id.payload_bytes()));
  const std::uint32_t hb = record_header_size(id.num_layers);
  if (out.size() != hb)
    return invalid_argument("header buffer of " + std::to_string(out.size()) + " bytes, need " +
                            std::to_string(hb));
  std::uint8_t* p = out.data();
  std::memset(p, 0, out.size());
  std::memcpy(p + kOffMagic, kRecordMagic, sizeof(kRecordMagic));
  put32(p + kOffVersion, kRecordFormatVersion);
  put32(p + kOffHeaderBytes, hb);
  put32(p + kOffChecksumKind, kChecksumXxh3);
  put32(p + kOffNumLayers, id.num_layers);
  put32(p + kOffTokens, id.tokens);
  put32(p + kOffReserved, 0);
  put64(p + kOffLayerBytes, id.layer_bytes);
  put64(p + kOffPayloadBytes, id.payload_bytes());
  std::memcpy(p + kOffIdentity, id.identity.data(), 32);
  std::memcpy(p + kOffSaltTag, id.salt_tag.data(), 32);
  std::memcpy(p + kOffChunkKey, id.chunk_key.bytes.data(), 32);
  for (std::uint32_t l = 0; l < id.num_layers; ++l) {
    std::uint8_t* e = p + kOffLayerTable + kLayerEntryBytes * l;
    put64(e, id.layer_bytes);
    put64(e + 8, record_checksum(payload.subspan(l * id.layer_bytes, id.layer_bytes), l));
  }
  const std::size_t end = table_end(id.num_layers);
  put64(p + end, record_checksum(out.first(end), kHeaderSeed));
  return Status::Ok();
}

Result<std::vector<std::uint8_t>> encode_record_header(const RecordId& id,
                                                       std::span<const std::uint8_t> payload) {
  TIERKV_RETURN_IF_ERROR(validate_record_id(id));
  std::vector<std::uint8_t> out(record_header_size(id.num_layers));
  TIERKV_RETURN_IF_ERROR(encode_record_header(id, payload, out));
  return out;
}

Result<std::vector<std::uint8_t>> encode_record(const RecordId& id,
                                                std::span<const std::uint8_t> payload) {
  TIERKV_RETURN_IF_ERROR(validate_record_id(id));
  const std::uint32_t hb = record_header_size(id.num_layers);
  std::vector<std::uint8_t> out(hb + payload.size());
  TIERKV_RETURN_IF_ERROR(encode_record_header(id, payload, std::span(out).first(hb)));
  std::copy(payload.begin(), payload.end(), out.begin() + hb);
  return out;
}

Result<std::uint32_t> peek_record_header_size(std::span<const std::uint8_t> prefix) {
  return check_prefix(prefix);
}

Result<RecordHeader> parse_record_header(std::span<const std::uint8_t> b) {
  TIERKV_ASSIGN_OR_RETURN(const std::uint32_t hb, check_prefix(b));
  if (b.size() < hb)
    return corrupt("truncated header: " + std::to_string(b.size()) + " of " + std::to_string(hb) +
                   " bytes");
  const std::uint8_t* p = b.data();
  const std::uint32_t layers = get32(p + kOffNumLayers);
  if (layers == 0 || layers > kRecordMaxLayers)
    return corrupt("layer count " + std::to_string(layers) + " out of range");
  if (record_header_size(layers) != hb)
    return corrupt("header length " + std::to_string(hb) + " does not fit " +
                   std::to_string(layers) + " layers");
  const std::size_t end = table_end(layers);  // + 8 <= hb, by the check above
  if (get64(p + end) != record_checksum(b.first(end), kHeaderSeed))
    return corrupt("header checksum mismatch");
  // From here the fields are as written; still check that they are consistent.
  if (get32(p + kOffChecksumKind) != kChecksumXxh3)
    return corrupt("unknown checksum kind " + std::to_string(get32(p + kOffChecksumKind)));
  if (get32(p + kOffReserved) != 0) return corrupt("reserved field is not zero");
  for (std::size_t i = end + 8; i < hb; ++i)
    if (p[i] != 0) return corrupt("header padding is not zero at byte " + std::to_string(i));
  RecordHeader h;
  h.version = kRecordFormatVersion;
  h.header_bytes = hb;
  h.id.num_layers = layers;
  h.id.tokens = get32(p + kOffTokens);
  h.id.layer_bytes = get64(p + kOffLayerBytes);
  h.payload_bytes = get64(p + kOffPayloadBytes);
  if (h.id.layer_bytes == 0 || h.id.layer_bytes > kRecordMaxLayerBytes)
    return corrupt("layer size " + std::to_string(h.id.layer_bytes) + " out of range");
  if (h.payload_bytes != h.id.payload_bytes())  // no overflow: 2^12 layers x 2^36 bytes
    return corrupt("payload length " + std::to_string(h.payload_bytes) + " is not layers x size");
  std::memcpy(h.id.identity.data(), p + kOffIdentity, 32);
  std::memcpy(h.id.salt_tag.data(), p + kOffSaltTag, 32);
  std::memcpy(h.id.chunk_key.bytes.data(), p + kOffChunkKey, 32);
  h.layer_checksums.resize(layers);
  for (std::uint32_t l = 0; l < layers; ++l) {
    const std::uint8_t* e = p + kOffLayerTable + kLayerEntryBytes * l;
    if (get64(e) != h.id.layer_bytes)
      return corrupt("layer " + std::to_string(l) + " length differs from the layer size");
    h.layer_checksums[l] = get64(e + 8);
  }
  return h;
}

Status check_record_id(const RecordHeader& h, const RecordId& e) {
  const auto foreign = [](const std::string& what) {
    return data_loss("foreign record: " + what + " differs from the one asked for");
  };
  if (h.id.identity != e.identity)
    return foreign("identity (stored " + short_hex(h.id.identity.data()) + ", asked " +
                   short_hex(e.identity.data()) + ")");
  if (h.id.salt_tag != e.salt_tag) return foreign("salt tag");
  if (h.id.chunk_key != e.chunk_key)
    return foreign("chunk key (stored " + short_hex(h.id.chunk_key.bytes.data()) + ", asked " +
                   short_hex(e.chunk_key.bytes.data()) + ")");
  if (h.id.tokens != e.tokens)
    return foreign("token count (stored " + std::to_string(h.id.tokens) + ", asked " +
                   std::to_string(e.tokens) + ")");
  if (h.id.num_layers != e.num_layers || h.id.layer_bytes != e.layer_bytes)
    return foreign("shape (stored " + std::to_string(h.id.num_layers) + " x " +
                   std::to_string(h.id.layer_bytes) + " B, asked " + std::to_string(e.num_layers) +
                   " x " + std::to_string(e.layer_bytes) + " B)");
  return Status::Ok();
}

Status verify_record_layer(const RecordHeader& h, std::uint32_t layer,
                           std::span<const std::uint8_t> bytes) {
  if (layer >= h.layer_checksums.size())
    return out_of_range("layer " + std::to_string(layer) + " of a record of " +
                        std::to_string(h.layer_checksums.size()) + " layers");
  if (bytes.size() != h.id.layer_bytes)
    return corrupt("layer " + std::to_string(layer) + " has " + std::to_string(bytes.size()) +
                   " bytes, the header says " + std::to_string(h.id.layer_bytes));
  if (record_checksum(bytes, layer) != h.layer_checksums[layer])
    return corrupt("layer " + std::to_string(layer) + " checksum mismatch");
  return Status::Ok();
}

Status verify_record_payload(const RecordHeader& h, std::span<const std::uint8_t> payload) {
  if (payload.size() != h.payload_bytes)
    return corrupt("payload has " + std::to_string(payload.size()) + " bytes, the header says " +
                   std::to_string(h.payload_bytes));
  for (std::uint32_t l = 0; l < h.id.num_layers; ++l)
    TIERKV_RETURN_IF_ERROR(
        verify_record_layer(h, l, payload.subspan(l * h.id.layer_bytes, h.id.layer_bytes)));
  return Status::Ok();
}

RecordCheck decode_record(std::span<const std::uint8_t> record, const RecordId& expected,
                          std::span<std::uint8_t> payload_out) {
  if (payload_out.size() != expected.payload_bytes())
    return {MissReason::kAbsent,
            invalid_argument("payload buffer of " + std::to_string(payload_out.size()) +
                             " bytes for a record of " + std::to_string(expected.payload_bytes()))};
  Result<RecordHeader> h = parse_record_header(record);
  if (!h.ok()) return {MissReason::kCorrupt, h.status()};
  if (Status s = check_record_id(*h, expected); !s.ok()) return {MissReason::kForeign, s};
  if (record.size() != h->record_bytes())
    return {MissReason::kCorrupt,
            corrupt("record has " + std::to_string(record.size()) + " bytes, the header says " +
                    std::to_string(h->record_bytes()))};
  const auto payload = record.subspan(h->header_bytes);
  if (Status s = verify_record_payload(*h, payload); !s.ok()) return {MissReason::kCorrupt, s};
  std::copy(payload.begin(), payload.end(), payload_out.begin());
  return {MissReason::kAbsent, Status::Ok()};
}

}  // namespace tierkv
