// The disk tier's files: names, and reading a record file's header. Shared by the store
// (disk_store.cc) and `tierkv inspect` (inspect.cc).
//
// Thread safety: the functions keep no state.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/record.h"
#include "tierkv/disk_store.h"
#include "tiers/disk/file_system.h"

namespace tierkv::disk {

inline constexpr std::string_view kLockFileName = "LOCK";

// "<identity, first 8 bytes hex>-<chunk key, 64 hex>.rec": 85 characters, from the key only.
std::string record_file_name(const RecordId& id);

struct RecordFileName {
  std::array<std::uint8_t, 8> identity_prefix{};
  Key chunk_key;
};
// The parts of a record file name; nullopt for any other name.
std::optional<RecordFileName> parse_record_file_name(std::string_view name);

// Whether `name` is a temporary file of a write (or an O_DIRECT probe): "*.tmp".
bool is_temporary_file_name(std::string_view name);

// Reads and validates the header of the record file `f` (its first block, then the rest of the
// header if it is longer), and checks that the file's length is the header's record length.
// DataLoss when the record is corrupt or truncated; IoError/NotFound from the file layer.
// `file_bytes` receives the file's length when it could be read.
Result<RecordHeader> read_record_file_header(File& f, std::uint64_t* file_bytes);

// Whether a header belongs under `name` (its identity prefix and chunk key).
bool header_matches_name(const RecordHeader& h, const RecordFileName& name);

// Memory aligned for O_DIRECT, freed when destroyed.
class AlignedBytes {
 public:
  explicit AlignedBytes(std::size_t n);
  ~AlignedBytes();
  AlignedBytes(const AlignedBytes&) = delete;
  AlignedBytes& operator=(const AlignedBytes&) = delete;
  bool ok() const { return p_ != nullptr; }
  std::span<std::uint8_t> span() { return {p_, n_}; }

 private:
  std::uint8_t* p_ = nullptr;
  std::size_t n_ = 0;
};

// The store over a given file layer (tests pass a fault-injecting one). open_disk_store() calls
// this with make_posix_file_system().
Result<std::unique_ptr<Store>> open_disk_store_with(const DiskStoreOptions& options,
                                                    std::shared_ptr<FileSystem> fs,
                                                    DiskRecovery* recovery);

}  // namespace tierkv::disk
