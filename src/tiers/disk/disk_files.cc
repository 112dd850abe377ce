#include "tiers/disk/disk_files.h"

#include <cstdlib>
#include <cstring>

namespace tierkv::disk {
namespace {

constexpr std::string_view kRecSuffix = ".rec";
constexpr std::string_view kTmpSuffix = ".tmp";

void append_hex(std::string& s, const std::uint8_t* p, std::size_t n) {
  static const char* kDigits = "0123456789abcdef";
  for (std::size_t i = 0; i < n; ++i) {
    s += kDigits[p[i] >> 4];
    s += kDigits[p[i] & 15];
  }
}

bool parse_hex(std::string_view s, std::uint8_t* out) {
  const auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < s.size() / 2; ++i) {
    const int hi = nibble(s[2 * i]), lo = nibble(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = std::uint8_t(hi << 4 | lo);
  }
  return true;
}

}  // namespace

std::string record_file_name(const RecordId& id) {
  std::string s;
  s.reserve(85);
  append_hex(s, id.identity.data(), 8);
  s += '-';
  append_hex(s, id.chunk_key.bytes.data(), 32);
  s += kRecSuffix;
  return s;
}

std::optional<RecordFileName> parse_record_file_name(std::string_view name) {
  if (name.size() != 16 + 1 + 64 + kRecSuffix.size() || name[16] != '-' ||
      name.substr(81) != kRecSuffix)
    return std::nullopt;
  RecordFileName r;
  if (!parse_hex(name.substr(0, 16), r.identity_prefix.data()) ||
      !parse_hex(name.substr(17, 64), r.chunk_key.bytes.data()))
    return std::nullopt;
  return r;
}

bool is_temporary_file_name(std::string_view name) {
  return name.size() > kTmpSuffix.size() &&
         name.substr(name.size() - kTmpSuffix.size()) == kTmpSuffix;
}

bool header_matches_name(const RecordHeader& h, const RecordFileName& name) {
  return std::memcmp(h.id.identity.data(), name.identity_prefix.data(), 8) == 0 &&
         h.id.chunk_key == name.chunk_key;
}

AlignedBytes::AlignedBytes(std::size_t n) : n_(n) {
  void* p = nullptr;
  const std::size_t rounded = (n + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
  if (::posix_memalign(&p, kDirectAlign, rounded == 0 ? kDirectAlign : rounded) == 0)
    p_ = static_cast<std::uint8_t*>(p);
}
AlignedBytes::~AlignedBytes() {
  std::free(p_);
}

Result<RecordHeader> read_record_file_header(File& f, std::uint64_t* file_bytes) {
  TIERKV_ASSIGN_OR_RETURN(const std::uint64_t size, f.size());
  if (file_bytes != nullptr) *file_bytes = size;
  AlignedBytes first(kRecordAlign);
  if (!first.ok()) return resource_exhausted("no memory for a record header");
  TIERKV_ASSIGN_OR_RETURN(const std::size_t got, read_full(f, 0, first.span()));
  TIERKV_ASSIGN_OR_RETURN(const std::uint32_t hb, peek_record_header_size(first.span().first(got)));
  Result<RecordHeader> h = parse_record_header(first.span().first(got));
  if (hb > kRecordAlign) {  // more than 246 layers: read the whole header
    AlignedBytes all(hb);
    if (!all.ok()) return resource_exhausted("no memory for a record header");
    TIERKV_ASSIGN_OR_RETURN(const std::size_t n, read_full(f, 0, all.span()));
    h = parse_record_header(all.span().first(n));
  }
  if (!h.ok()) return h.status();
  if (size != h->record_bytes())
    return data_loss("corrupt record: the file has " + std::to_string(size) +
                     " bytes, its header says " + std::to_string(h->record_bytes()));
  return h;
}

}  // namespace tierkv::disk
