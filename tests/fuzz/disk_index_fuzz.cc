// libFuzzer target for the disk tier's index rebuild: the input becomes the contents of one file in
// an otherwise empty cache directory -- named as the record of a fixed key would be, or, by the
// first byte, as a write's temporary file ("<name>.<pid>.<n>.tmp") -- which the store then opens.
// Whatever the bytes, opening must not crash or hang, a temporary file must be removed, a file that
// fails validation must be removed, and a record the index keeps must read back verified or be
// refused -- never served unverified. Built only with clang (-fsanitize=fuzzer); scripts/fuzz.sh
// runs it for a bounded time.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tiers/disk/disk_files.h"
#include "tierkv/disk_store.h"

namespace {

std::string fuzz_dir() {
  static const std::string dir = [] {
    std::string t = (std::filesystem::temp_directory_path() / "tierkv-index-fuzz-XXXXXX").string();
    if (::mkdtemp(t.data()) == nullptr) std::abort();
    return t;
  }();
  return dir;
}

tierkv::RecordId fuzz_id() {
  tierkv::RecordId id;
  id.identity.fill(0x11);
  id.salt_tag.fill(0x22);
  id.chunk_key.bytes.fill(0x33);
  id.tokens = 16;
  id.num_layers = 2;
  id.layer_bytes = 4096;
  return id;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace fs = std::filesystem;
  const std::string dir = fuzz_dir() + "/cache";
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir, ec);
  const tierkv::RecordId id = fuzz_id();
  const bool temporary = size > 0 && (data[0] & 1) != 0;
  const std::string name =
      temporary ? tierkv::disk::record_file_name(id) + ".1.1.tmp" : tierkv::disk::record_file_name(id);
  {
    std::ofstream f(dir + "/" + name, std::ios::binary);
    f.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  }
  tierkv::DiskStoreOptions o;
  o.directory = dir;
  o.sync = tierkv::DiskSync::kNone;
  o.io = tierkv::IoBackend::kThreads;
  o.direct_io = false;
  tierkv::DiskRecovery rec;
  auto store = tierkv::open_disk_store(o, &rec);
  if (!store.ok()) return 0;
  const bool kept = fs::exists(dir + "/" + name);
  if (temporary && kept) std::abort();  // leftover temporaries are removed at open
  std::vector<std::uint8_t> payload(std::size_t(id.payload_bytes()));
  const tierkv::Status s = (*store)->read(id, payload);
  if (s.ok() && !kept) std::abort();  // a hit from a file the rebuild removed
  if (!s.ok() && s.code() != tierkv::StatusCode::kNotFound &&
      s.code() != tierkv::StatusCode::kDataLoss)
    std::abort();
  return 0;
}
