// The body of the record-header fuzzer (tests/fuzz/record_header_fuzz.cc), shared with the unit
// test that runs it over random inputs where libFuzzer is not built. Whatever the bytes, parsing
// must not crash, must not read past `size`, and a header it accepts must re-encode consistently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "core/record.h"

namespace tierkv::test {

inline void fuzz_record_header_once(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  (void)peek_record_header_size(bytes);
  Result<RecordHeader> h = parse_record_header(bytes);
  if (!h.ok()) return;
  // An accepted header is internally consistent.
  if (h->header_bytes % kRecordAlign != 0 || h->header_bytes > size ||
      h->layer_checksums.size() != h->id.num_layers || h->payload_bytes != h->id.payload_bytes() ||
      record_header_size(h->id.num_layers) != h->header_bytes)
    std::abort();
  if (!check_record_id(*h, h->id).ok()) std::abort();
  // A payload that is present is verified (small payloads only: keep each input fast).
  if (h->payload_bytes <= (1u << 20) && size >= h->record_bytes())
    (void)verify_record_payload(*h, bytes.subspan(h->header_bytes, h->payload_bytes));
  if (h->payload_bytes <= (1u << 20)) {
    std::vector<std::uint8_t> out(h->payload_bytes);
    (void)decode_record(bytes, h->id, out);
  }
}

}  // namespace tierkv::test
