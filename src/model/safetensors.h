// Reading and writing safetensors files: the weight format of Hugging Face checkpoints.
//
// A file is an 8-byte little-endian header length N, N bytes of JSON naming each tensor's dtype,
// shape and [begin, end) byte offsets into the data section that follows, then the data section.
// Elements are little-endian and row-major. "__metadata__" in the header is a string-to-string map.
//
// SafetensorsFile maps a file read-only (it is never read whole) and checks, once, everything a
// later read depends on: the header lies inside the file and is a JSON object without duplicate
// keys and without a NUL byte (the format pads a header with spaces); every dtype is known; the
// product of every shape's nonzero dims times the element size does not overflow 64 bits (so no
// element count or stride of an accepted shape does) and the element count times the element
// size equals the tensor's byte count; and the tensors' byte ranges tile the data section
// exactly (no overlap, no gap, nothing past the end, nothing after the last tensor). After a
// successful open() every view it hands out lies inside the mapping. Opening takes O(n log n)
// time in the number of tensors n.
//
// Only regular files are read: a FIFO, device, socket or directory where a checkpoint file or
// index is expected is refused without reading from it or blocking on it.
//
// Errors: DataLoss for a file that is corrupt, truncated or not safetensors; IoError (naming the
// path and the system's reason) when opening or mapping fails; InvalidArgument for misuse (a path
// that is not a regular file, named with what it is; a malformed tensor to write); NotFound for
// a tensor that is not there; Unimplemented for a tensor whose dtype tierkv does not compute in.
//
// Lifetime: a TensorView (its name, shape and bytes) points into the SafetensorsFile or
// SafetensorsSet that returned it and stays valid until that object is destroyed; moving the
// object does not invalidate views. The file must not be truncated or rewritten in place while it
// is open (the mapping would fault); write_safetensors() replaces files by rename, which is safe.
//
// Thread safety: SafetensorsFile and SafetensorsSet are immutable after open; their const methods
// may be called concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "tierkv/dtype.h"
#include "tierkv/status.h"

namespace tierkv {

// One tensor of a file, as a non-owning view into the file's mapping.
struct TensorView {
  std::string_view name;
  DType dtype = DType::kF32;
  std::span<const std::int64_t> shape;  // dims, row-major; empty for a scalar
  // numel() * dtype_size(dtype) bytes of little-endian elements. Aligned to the element size in
  // files whose header length is a multiple of 8 and whose tensors are laid out largest element
  // first, as write_safetensors and the Hugging Face writer make them; read through memcpy when
  // that is not known.
  std::span<const std::byte> bytes;

  // Product of the dims: 1 for a scalar, 0 when a dim is 0.
  std::int64_t numel() const;
};
static_assert(std::is_trivially_copyable_v<TensorView>);

// "[4096, 128]"; "[]" for a scalar.
std::string format_shape(std::span<const std::int64_t> shape);

// One mapped file. Move-only; a moved-from object may only be destroyed or assigned to.
class SafetensorsFile {
 public:
  // Maps `path` and validates the header (see the top of this file for what is checked).
  static Result<SafetensorsFile> open(const std::string& path);

  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();  // unmaps the file; views into it become invalid

  // The tensor called `name`. NotFound when there is none; Unimplemented when its dtype is one
  // the format knows but tierkv does not compute in (say I64 or F8_E4M3): it is listed by
  // names() and its bytes were validated all the same.
  Result<TensorView> tensor(std::string_view name) const;
  bool contains(std::string_view name) const;

  // Every tensor name, sorted; the views point into this object.
  std::vector<std::string_view> names() const;
  // The header's "__metadata__" map; empty when there is none.
  const std::map<std::string, std::string>& metadata() const;
  const std::string& path() const;

 private:
  struct Impl;
  explicit SafetensorsFile(std::unique_ptr<const Impl> impl);

  std::unique_ptr<const Impl> impl_;  // null only in a moved-from object
};

// A checkpoint split over several files in one directory, with one lookup over all of them.
// Move-only, like the files it holds.
class SafetensorsSet {
 public:
  // Opens the checkpoint in `dir`. With "model.safetensors.index.json" there, opens the files its
  // "weight_map" names (other .safetensors files in the directory are ignored) and checks that
  // each tensor it lists is in the file it names (DataLoss otherwise); tensors of those files that
  // it does not list are found all the same. Without the index, opens every "*.safetensors" file
  // in `dir`. Either way a tensor name held by two files is DataLoss, a directory with no
  // .safetensors file is NotFound, and an index or listed file that is not a regular file is
  // InvalidArgument naming it. An index over 100 MB is DataLoss.
  static Result<SafetensorsSet> open_dir(const std::string& dir);

  // As SafetensorsFile::tensor, over all files.
  Result<TensorView> tensor(std::string_view name) const;
  bool contains(std::string_view name) const;
  std::vector<std::string_view> names() const;  // sorted
  const std::vector<SafetensorsFile>& files() const { return files_; }
  const std::string& dir() const { return dir_; }

 private:
  struct Slot {
    std::string_view name;  // points into files_[file]
    std::uint32_t file = 0;
  };

  SafetensorsSet(std::string dir, std::vector<SafetensorsFile> files, std::vector<Slot> slots)
      : dir_(std::move(dir)), files_(std::move(files)), slots_(std::move(slots)) {}
  const Slot* find(std::string_view name) const;

  std::string dir_;
  std::vector<SafetensorsFile> files_;
  std::vector<Slot> slots_;  // sorted by name
};

// A tensor to write; `bytes` is only read during write_safetensors().
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;   // empty for a scalar
  std::span<const std::byte> bytes;  // numel * dtype_size little-endian elements, row-major
};

// Writes a safetensors file at `path`: the header padded with spaces to a multiple of 8 bytes, the
// tensors ordered by element size (largest first) then name so that every tensor is aligned to its
// element size. InvalidArgument for a duplicate name, the name "__metadata__", a name or metadata
// string that is not UTF-8, a negative dim or a byte count that differs from the shape (nothing is
// written then); IoError naming the path when writing fails. Writes a temporary file next to
// `path` and renames it over `path` (mode 0644), so readers see the old file or the new one,
// never a part.
Status write_safetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace tierkv
