#include "tiers/disk/inspect.h"

#include <algorithm>
#include <vector>

#include "tiers/disk/disk_files.h"
#include "tiers/disk/file_system.h"

namespace tierkv::disk {
namespace {

std::string hex8(const std::uint8_t* p) {
  static const char* kDigits = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 8; ++i) {
    s += kDigits[p[i] >> 4];
    s += kDigits[p[i] & 15];
  }
  return s;
}

InspectedRecord inspect_one(FileSystem& fs, const std::string& dir, const std::string& name,
                            const RecordFileName& parsed) {
  InspectedRecord r;
  r.file = name;
  r.verdict = MissReason::kCorrupt;
  Result<std::unique_ptr<File>> f = fs.open(dir + "/" + name, {});
  if (!f.ok()) {
    r.problem = f.status().to_string();
    return r;
  }
  Result<RecordHeader> h = read_record_file_header(**f, &r.file_bytes);
  if (!h.ok()) {
    r.problem = h.status().message();
    return r;
  }
  r.header_ok = true;
  r.header = *h;
  if (!header_matches_name(*h, parsed)) {
    r.verdict = MissReason::kForeign;
    r.problem = "the header's identity or chunk key is not the file name's";
    return r;
  }
  std::vector<std::uint8_t> payload(h->payload_bytes);
  Result<std::size_t> n = read_full(**f, h->header_bytes, payload);
  if (!n.ok() || *n != payload.size()) {
    r.problem = n.ok() ? "short payload" : n.status().to_string();
    return r;
  }
  if (Status s = verify_record_payload(*h, payload); !s.ok()) {
    r.problem = s.message();
    return r;
  }
  r.verdict = MissReason::kAbsent;
  return r;
}

}  // namespace

Result<InspectReport> inspect_disk_directory(const std::string& dir) {
  TIERKV_ASSIGN_OR_RETURN(std::unique_ptr<FileSystem> fs,
                          make_posix_file_system({.io = IoBackend::kThreads, .io_threads = 2}));
  TIERKV_ASSIGN_OR_RETURN(std::vector<std::string> names, fs->list(dir));
  std::sort(names.begin(), names.end());
  InspectReport rep;
  for (const std::string& name : names) {
    if (name == kLockFileName) continue;
    if (is_temporary_file_name(name)) {
      ++rep.temporary;
      continue;
    }
    const std::optional<RecordFileName> parsed = parse_record_file_name(name);
    if (!parsed) {
      ++rep.other;
      continue;
    }
    InspectedRecord r = inspect_one(*fs, dir, name, *parsed);
    if (r.verdict == MissReason::kAbsent) {
      ++rep.ok;
      rep.bytes += r.file_bytes;
    } else if (r.verdict == MissReason::kForeign) {
      ++rep.foreign;
    } else {
      ++rep.corrupt;
    }
    rep.records.push_back(std::move(r));
  }
  return rep;
}

void print_inspect_report(const InspectReport& rep, std::FILE* out) {
  for (const InspectedRecord& r : rep.records) {
    const char* v = r.verdict == MissReason::kAbsent    ? "ok"
                    : r.verdict == MissReason::kForeign ? "foreign"
                                                        : "corrupt";
    if (r.header_ok) {
      std::fprintf(out, "%-7s %s %s tokens=%u layers=%u bytes=%llu %s", v,
                   hex8(r.header.id.identity.data()).c_str(),
                   hex8(r.header.id.chunk_key.bytes.data()).c_str(), r.header.id.tokens,
                   r.header.id.num_layers, static_cast<unsigned long long>(r.header.payload_bytes),
                   r.file.c_str());
    } else {
      std::fprintf(out, "%-7s %s", v, r.file.c_str());
    }
    if (!r.problem.empty()) std::fprintf(out, "  (%s)", r.problem.c_str());
    std::fprintf(out, "\n");
  }
  std::fprintf(
      out,
      "inspect: %llu ok (%llu bytes), %llu corrupt, %llu foreign, %llu temporary, %llu "
      "other files\n",
      static_cast<unsigned long long>(rep.ok), static_cast<unsigned long long>(rep.bytes),
      static_cast<unsigned long long>(rep.corrupt), static_cast<unsigned long long>(rep.foreign),
      static_cast<unsigned long long>(rep.temporary), static_cast<unsigned long long>(rep.other));
}

}  // namespace tierkv::disk
