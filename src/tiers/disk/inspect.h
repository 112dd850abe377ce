// `tierkv inspect DIR`: lists the records of a disk-tier directory and verifies every one (header,
// name, length, every layer's checksum). Read-only: it takes no lock, removes nothing, and may run
// beside a store that has the directory open (a record replaced or evicted meanwhile shows as
// missing or as whatever was read).
//
// Thread safety: the functions keep no state.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/record.h"
#include "tierkv/status.h"

namespace tierkv::disk {

struct InspectedRecord {
  std::string file;  // name inside the directory
  std::uint64_t file_bytes = 0;
  bool header_ok = false;  // `header` is valid only then
  RecordHeader header;
  MissReason verdict = MissReason::kAbsent;  // kAbsent: ok; kCorrupt; kForeign (name mismatch)
  std::string problem;                       // what failed, empty when ok
};

struct InspectReport {
  std::vector<InspectedRecord> records;  // sorted by file name
  std::uint64_t ok = 0, corrupt = 0, foreign = 0;
  std::uint64_t temporary = 0;  // *.tmp files (writes in flight, or left by a crash)
  std::uint64_t other = 0;      // files that are not tierkv's
  std::uint64_t bytes = 0;      // bytes of the ok records' files
};

// IoError/NotFound when `dir` cannot be listed. A record that cannot be read counts as corrupt.
Result<InspectReport> inspect_disk_directory(const std::string& dir);

// One line per record ("<ok|corrupt|foreign> <identity 16 hex> <chunk key 16 hex> tokens=N
// layers=L bytes=B <file> [problem]"), then a summary line.
void print_inspect_report(const InspectReport& report, std::FILE* out);

}  // namespace tierkv::disk
