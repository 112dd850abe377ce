#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <set>
#include <system_error>

namespace tierkv {
namespace {

static_assert(std::endian::native == std::endian::little,
              "views hand out the file's little-endian bytes as they are");

using json = nlohmann::json;
namespace fs = std::filesystem;

// Larger headers are refused rather than parsed (the Hugging Face reader's limit too).
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;
constexpr std::string_view kMetadataKey = "__metadata__";
constexpr std::string_view kIndexName = "model.safetensors.index.json";

// A dtype the format names; `bits` per element (sub-byte types pack several to a byte).
struct FormatDType {
  std::string_view name;
  std::uint32_t bits;
  std::optional<DType> dtype;  // set for the types tierkv computes in
};

constexpr FormatDType kFormatDTypes[] = {
    {"F32", 32, DType::kF32},     {"F16", 16, DType::kF16},     {"BF16", 16, DType::kBF16},
    {"F64", 64, std::nullopt},    {"C64", 64, std::nullopt},    {"I64", 64, std::nullopt},
    {"U64", 64, std::nullopt},    {"I32", 32, std::nullopt},    {"U32", 32, std::nullopt},
    {"I16", 16, std::nullopt},    {"U16", 16, std::nullopt},    {"I8", 8, std::nullopt},
    {"U8", 8, std::nullopt},      {"BOOL", 8, std::nullopt},    {"F8_E4M3", 8, std::nullopt},
    {"F8_E5M2", 8, std::nullopt}, {"F8_E8M0", 8, std::nullopt}, {"F6_E2M3", 6, std::nullopt},
    {"F6_E3M2", 6, std::nullopt}, {"F4", 4, std::nullopt},
};

const FormatDType* find_format_dtype(std::string_view name) {
  for (const FormatDType& t : kFormatDTypes) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

std::string_view format_dtype_name(DType t) {
  switch (t) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
  }
  return "?";
}

std::string in_quotes(std::string_view s) {
  return "'" + std::string(s) + "'";
}

std::string errno_text(int err) {
  return std::system_category().message(err);
}

// IoError "<action> <path>: <reason for errno>"; reads errno before anything can change it.
Status sys_error(std::string_view action, const std::string& path) {
  const int err = errno;
  return io_error(std::string(action) + " " + path + ": " + errno_text(err));
}

// a * b, or nullopt when it does not fit in 64 bits.
std::optional<std::uint64_t> checked_mul(std::uint64_t a, std::uint64_t b) {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return std::nullopt;
  return a * b;
}

// Bits that `shape` elements of `element_bits` bits take; nullopt when the product of the nonzero
// dims times `element_bits` does not fit in 64 bits. Zero dims are left out of that check (the
// count is 0 all the same) so that any stride or element count of a shape that passes fits too,
// empty or not: element_bits >= 4 leaves every product of dims below 2^62.
std::optional<std::uint64_t> shape_bits(std::span<const std::int64_t> shape,
                                        std::uint64_t element_bits) {
  std::optional<std::uint64_t> bits = element_bits;
  bool empty = false;
  for (std::int64_t d : shape) {
    if (d == 0) empty = true;
    if (bits && d != 0) bits = checked_mul(*bits, static_cast<std::uint64_t>(d));
  }
  if (!bits) return std::nullopt;
  return empty ? 0 : *bits;
}

// A file descriptor closed on destruction.
class UniqueFd {
 public:
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&&) = delete;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // Closes now; -1 with errno set when close fails (a delayed write error shows up here).
  int close() { return ::close(std::exchange(fd_, -1)); }

 private:
  int fd_;
};

std::string_view file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "a special file";
}

// InvalidArgument unless `st` is a regular file's.
Status check_regular(const struct stat& st, const std::string& path) {
  if (S_ISREG(st.st_mode)) return Status::Ok();
  return invalid_argument(path + " is " + std::string(file_kind(st.st_mode)) +
                          ", not a regular file: safetensors files and their index are read "
                          "from regular files only");
}

struct OpenFile {
  UniqueFd fd;
  std::uint64_t size = 0;
};

// Opens `path` for reading when it is a regular file; anything else (a FIFO, a device, a socket,
// a directory) is InvalidArgument naming it, and no call blocks on it. stat() comes first, so a
// special file is not even opened unless it replaced the path since; then O_NONBLOCK keeps open()
// from waiting for a FIFO's writer and fstat() of the open file has the last word. (O_NONBLOCK
// changes nothing for reading or mapping a regular file.)
Result<OpenFile> open_regular(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return sys_error("cannot open", path);
  TIERKV_RETURN_IF_ERROR(check_regular(st, path));
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (fd.get() < 0) return sys_error("cannot open", path);
  if (::fstat(fd.get(), &st) != 0) return sys_error("cannot stat", path);
  TIERKV_RETURN_IF_ERROR(check_regular(st, path));
  return OpenFile{std::move(fd), static_cast<std::uint64_t>(st.st_size)};
}

// A read-only mapping of a whole file, unmapped on destruction.
class Mapping {
 public:
  static Result<Mapping> map(const std::string& path) {
    TIERKV_ASSIGN_OR_RETURN(OpenFile file, open_regular(path));
    if (file.size == 0) return data_loss(path + " is empty: not a safetensors file");
    static_assert(sizeof(std::size_t) >= sizeof(std::uint64_t), "a file's size fits a size_t");
    const auto size = static_cast<std::size_t>(file.size);
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, file.fd.get(), 0);
    if (p == MAP_FAILED) return sys_error("cannot map", path);
    return Mapping(static_cast<const std::byte*>(p), size);
  }

  Mapping(Mapping&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  Mapping& operator=(Mapping&&) = delete;
  ~Mapping() {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
  }

  std::span<const std::byte> bytes() const { return {data_, size_}; }

 private:
  Mapping(const std::byte* data, std::size_t size) : data_(data), size_(size) {}

  const std::byte* data_;
  std::size_t size_;
};

// One header entry. Offsets are relative to the data section.
struct Entry {
  std::string name;
  const FormatDType* type = nullptr;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

// Nesting deeper than any header or index has is refused rather than built.
constexpr std::size_t kMaxJsonDepth = 32;

// Builds the DOM of a JSON text from the parser's events and stops at the first key repeated
// within one object. Each key costs one insertion into its object's ordered map, so a text of n
// keys is parsed in O(n log n). (nlohmann's callback parser, which would also show each key,
// rescans the parent object at the end of every child object: a header of 40,000 tensors took
// 14 s.)
class DomBuilder final : public json::json_sax_t {
 public:
  json root;
  std::optional<std::string> duplicate;  // set when a key repeats
  std::string error;                     // the parser's, or the depth refusal

  bool null() override { return put(nullptr); }
  bool boolean(bool v) override { return put(v); }
  bool number_integer(number_integer_t v) override { return put(v); }
  bool number_unsigned(number_unsigned_t v) override { return put(v); }
  bool number_float(number_float_t v, const string_t&) override { return put(v); }
  bool string(string_t& v) override { return put(std::move(v)); }
  bool binary(binary_t& v) override { return put(json::binary(std::move(v))); }
  bool start_object(std::size_t) override { return open(json::object()); }
  bool start_array(std::size_t) override { return open(json::array()); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }

  bool key(string_t& k) override {
    auto [it, inserted] = stack_.back()->get_ref<json::object_t&>().try_emplace(std::move(k));
    if (!inserted) {
      duplicate = it->first;  // try_emplace leaves `k` alone then; the map's copy is the same
      return false;
    }
    slot_ = &it->second;
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const json::exception& e) override {
    error = e.what();
    return false;
  }

 private:
  // Places `v` where the text puts it: the root, the end of the open array, or the slot of the
  // open object's last key. Pointers stay valid while their container is open: map nodes do not
  // move, and an array grows only after its open child has closed.
  json* place(json&& v) {
    if (stack_.empty()) {
      root = std::move(v);
      return &root;
    }
    json& top = *stack_.back();
    if (top.is_array()) {
      top.push_back(std::move(v));
      return &top.back();
    }
    *slot_ = std::move(v);
    return slot_;
  }
  bool put(json&& v) {
    place(std::move(v));
    return true;
  }
  bool open(json&& v) {
    if (stack_.size() == kMaxJsonDepth) {
      error = "nested deeper than " + std::to_string(kMaxJsonDepth) + " levels";
      return false;
    }
    stack_.push_back(place(std::move(v)));
    return true;
  }
  bool close() {
    stack_.pop_back();
    return true;
  }

  std::vector<json*> stack_;  // the open objects and arrays, innermost last
  json* slot_ = nullptr;      // the value of the open object's last key
};

// Parses a JSON object; a key repeated within one object is an error (which value a reader takes
// would be up to the reader), and so is a NUL byte anywhere (parsers that stop at a NUL would
// ignore what follows it). DataLoss with the reason on failure.
Result<json> parse_json_object(std::string_view text) {
  if (const std::size_t nul = text.find('\0'); nul != std::string_view::npos) {
    return data_loss("NUL byte at offset " + std::to_string(nul) +
                     " in JSON (padding may be spaces, never NULs)");
  }
  DomBuilder dom;
  bool parsed = false;
  try {
    parsed = json::sax_parse(text.begin(), text.end(), &dom);
  } catch (const json::exception& e) {
    return data_loss(std::string("not valid JSON: ") + e.what());
  }
  if (dom.duplicate.has_value()) {
    return data_loss("duplicate key " + in_quotes(*dom.duplicate) + " in JSON");
  }
  if (!parsed) return data_loss("not valid JSON: " + dom.error);
  if (!dom.root.is_object()) return data_loss("JSON is not an object");
  return std::move(dom.root);
}

std::optional<std::uint64_t> as_u64(const json& v) {
  if (!v.is_number_unsigned()) return std::nullopt;
  return v.get<std::uint64_t>();
}

Result<std::vector<std::int64_t>> parse_shape(const json& v) {
  if (!v.is_array()) return data_loss("shape is not an array");
  std::vector<std::int64_t> shape;
  for (const json& d : v) {
    const std::optional<std::uint64_t> dim = as_u64(d);
    if (!dim || *dim > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      return data_loss("shape " + v.dump() +
                       " has a dim that is not a non-negative 64-bit integer");
    }
    shape.push_back(static_cast<std::int64_t>(*dim));
  }
  return shape;
}

// Bytes that `shape` elements of `type` take; DataLoss on overflow or a partial byte.
Result<std::uint64_t> byte_count(std::span<const std::int64_t> shape, const FormatDType& type) {
  const std::optional<std::uint64_t> bits = shape_bits(shape, type.bits);
  if (!bits) {
    return data_loss("shape " + format_shape(shape) + " of " + std::string(type.name) +
                     " overflows 64-bit sizes");
  }
  if (*bits % 8 != 0) {
    return data_loss("shape " + format_shape(shape) + " of " + std::string(type.name) +
                     " does not fill whole bytes");
  }
  return *bits / 8;
}

Status parse_offsets(const json& v, Entry& e) {
  if (v.is_array() && v.size() == 2) {
    const std::optional<std::uint64_t> begin = as_u64(v[0]), end = as_u64(v[1]);
    if (begin && end && *begin <= *end) {
      e.begin = *begin;
      e.end = *end;
      return Status::Ok();
    }
  }
  return data_loss("data_offsets " + v.dump() + " are not [begin, end] with begin <= end");
}

Result<Entry> parse_entry(const std::string& name, const json& v) {
  if (!v.is_object()) return data_loss("entry is not an object");
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!v.contains(field)) return data_loss(std::string("entry has no \"") + field + "\"");
  }
  Entry e;
  e.name = name;
  const json& dtype = v["dtype"];
  e.type = dtype.is_string() ? find_format_dtype(dtype.get<std::string>()) : nullptr;
  if (e.type == nullptr) return data_loss("unknown dtype " + dtype.dump());
  TIERKV_ASSIGN_OR_RETURN(e.shape, parse_shape(v["shape"]));
  TIERKV_RETURN_IF_ERROR(parse_offsets(v["data_offsets"], e));
  TIERKV_ASSIGN_OR_RETURN(const std::uint64_t bytes, byte_count(e.shape, *e.type));
  if (e.end - e.begin != bytes) {
    return data_loss("data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                     ") hold " + std::to_string(e.end - e.begin) + " bytes but shape " +
                     format_shape(e.shape) + " of " + std::string(e.type->name) + " needs " +
                     std::to_string(bytes));
  }
  return e;
}

Result<std::map<std::string, std::string>> parse_metadata(const json& v) {
  if (!v.is_object()) return data_loss(std::string(kMetadataKey) + " is not an object");
  std::map<std::string, std::string> metadata;
  for (const auto& [key, value] : v.items()) {
    if (!value.is_string()) {
      return data_loss(std::string(kMetadataKey) + " value of " + in_quotes(key) +
                       " is not a string");
    }
    metadata.emplace(key, value.get<std::string>());
  }
  return metadata;
}

std::string range_text(const Entry& e) {
  return in_quotes(e.name) + " [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + ")";
}

// The entries' byte ranges must tile [0, data_bytes) exactly, so that no two tensors share bytes,
// none reads past the end and no bytes are unaccounted for.
Status check_tiling(const std::vector<Entry>& entries, std::uint64_t data_bytes) {
  std::vector<const Entry*> by_offset;
  for (const Entry& e : entries)
    by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) {
    return std::pair(a->begin, a->end) < std::pair(b->begin, b->end);
  });
  const Entry* prev = nullptr;
  for (const Entry* e : by_offset) {
    if (e->end > data_bytes) {
      return data_loss("tensor " + range_text(*e) + " runs past the data section's " +
                       std::to_string(data_bytes) + " bytes (truncated?)");
    }
    const std::uint64_t expected_begin = prev ? prev->end : 0;
    if (e->begin < expected_begin) {
      return data_loss("tensor " + range_text(*e) + " overlaps tensor " + range_text(*prev));
    }
    if (e->begin > expected_begin) {
      return data_loss(std::to_string(e->begin - expected_begin) +
                       " unaccounted bytes before tensor " + range_text(*e));
    }
    prev = e;
  }
  const std::uint64_t used = prev ? prev->end : 0;
  if (used != data_bytes) {
    return data_loss(std::to_string(data_bytes - used) + " trailing bytes after the last tensor");
  }
  return Status::Ok();
}

// The header span of `file`; DataLoss when its length field does not fit the file.
Result<std::span<const std::byte>> header_bytes(std::span<const std::byte> file) {
  if (file.size() < 8) {
    return data_loss("file of " + std::to_string(file.size()) +
                     " bytes is shorter than the 8-byte header length (truncated?)");
  }
  std::uint64_t n = 0;
  std::memcpy(&n, file.data(), sizeof n);
  if (n > kMaxHeaderBytes) {
    return data_loss("header length " + std::to_string(n) + " exceeds the " +
                     std::to_string(kMaxHeaderBytes) + "-byte limit (not a safetensors file?)");
  }
  if (n > file.size() - 8) {
    return data_loss("header length " + std::to_string(n) + " runs past the end of the " +
                     std::to_string(file.size()) + "-byte file (truncated?)");
  }
  return file.subspan(8, n);
}

const Entry* find_entry(const std::vector<Entry>& sorted, std::string_view name) {
  auto it = std::lower_bound(sorted.begin(), sorted.end(), name,
                             [](const Entry& e, std::string_view n) { return e.name < n; });
  return it != sorted.end() && it->name == name ? &*it : nullptr;
}

// What a file's header says, checked against the file.
struct Contents {
  std::span<const std::byte> data;  // the data section
  std::vector<Entry> entries;       // sorted by name; every range inside `data`
  std::map<std::string, std::string> metadata;
};

Result<Contents> parse_contents(std::span<const std::byte> file) {
  TIERKV_ASSIGN_OR_RETURN(const std::span<const std::byte> header, header_bytes(file));
  const std::string_view text(reinterpret_cast<const char*>(header.data()), header.size());
  Result<json> parsed = parse_json_object(text);
  if (!parsed.ok()) return parsed.status().with_context("header");
  Contents c;
  c.data = file.subspan(8 + header.size());
  for (const auto& [key, value] : parsed->items()) {
    if (key == kMetadataKey) {
      TIERKV_ASSIGN_OR_RETURN(c.metadata, parse_metadata(value));
      continue;
    }
    Result<Entry> e = parse_entry(key, value);
    if (!e.ok()) return e.status().with_context("tensor " + in_quotes(key));
    c.entries.push_back(std::move(e).value());
  }
  // Keys are unique (parse_json_object) and json objects iterate in key order: already sorted.
  TIERKV_RETURN_IF_ERROR(check_tiling(c.entries, c.data.size()));
  return c;
}

}  // namespace

std::int64_t TensorView::numel() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape)
    n *= d;
  return n;
}

std::string format_shape(std::span<const std::int64_t> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// ---- SafetensorsFile ----------------------------------------------------------------------------

struct SafetensorsFile::Impl {
  std::string path;
  Mapping mapping;
  Contents contents;  // points into `mapping`
};

Result<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  TIERKV_ASSIGN_OR_RETURN(Mapping mapping, Mapping::map(path));
  Result<Contents> contents = parse_contents(mapping.bytes());
  if (!contents.ok()) return contents.status().with_context(path);
  return SafetensorsFile(
      std::make_unique<const Impl>(Impl{path, std::move(mapping), std::move(contents).value()}));
}

SafetensorsFile::SafetensorsFile(std::unique_ptr<const Impl> impl) : impl_(std::move(impl)) {}
SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

Result<TensorView> SafetensorsFile::tensor(std::string_view name) const {
  const Entry* e = find_entry(impl_->contents.entries, name);
  if (e == nullptr) {
    return not_found("no tensor " + in_quotes(name) + " in " + impl_->path + " (" +
                     std::to_string(impl_->contents.entries.size()) + " tensors)");
  }
  if (!e->type->dtype.has_value()) {
    return unimplemented("tensor " + in_quotes(name) + " in " + impl_->path + " is " +
                         std::string(e->type->name) + "; tierkv reads F32, F16 and BF16");
  }
  const std::span<const std::byte> bytes =
      impl_->contents.data.subspan(e->begin, e->end - e->begin);
  return TensorView{e->name, *e->type->dtype, e->shape, bytes};
}

bool SafetensorsFile::contains(std::string_view name) const {
  return find_entry(impl_->contents.entries, name) != nullptr;
}

std::vector<std::string_view> SafetensorsFile::names() const {
  std::vector<std::string_view> names;
  for (const Entry& e : impl_->contents.entries)
    names.push_back(e.name);
  return names;
}

const std::map<std::string, std::string>& SafetensorsFile::metadata() const {
  return impl_->contents.metadata;
}

const std::string& SafetensorsFile::path() const {
  return impl_->path;
}

// ---- SafetensorsSet -----------------------------------------------------------------------------

namespace {

// Larger indexes are refused rather than read (a real one is a few hundred KB).
constexpr std::uint64_t kMaxIndexBytes = 100'000'000;

// The whole of the regular file `path`, at most kMaxIndexBytes.
Result<std::string> read_small_file(const std::string& path) {
  TIERKV_ASSIGN_OR_RETURN(OpenFile file, open_regular(path));
  const auto too_large = [&](std::uint64_t size) {
    return data_loss(path + " has " + std::to_string(size) + " bytes, more than the " +
                     std::to_string(kMaxIndexBytes) + "-byte limit of an index");
  };
  if (file.size > kMaxIndexBytes) return too_large(file.size);
  std::string text;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(file.fd.get(), buf, sizeof buf);
    if (n == 0) return text;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error("cannot read", path);
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > kMaxIndexBytes) return too_large(text.size());  // it grew since fstat
  }
}

bool is_plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos;
}

// The index's weight_map: tensor name -> file name inside the directory.
Result<std::map<std::string, std::string>> read_weight_map(const std::string& index_path) {
  TIERKV_ASSIGN_OR_RETURN(const std::string text, read_small_file(index_path));
  Result<json> index = parse_json_object(text);
  if (!index.ok()) return index.status().with_context(index_path);
  const auto it = index->find("weight_map");
  if (it == index->end() || !it->is_object()) {
    return data_loss(index_path + ": no \"weight_map\" object");
  }
  std::map<std::string, std::string> weight_map;
  for (const auto& [tensor, file] : it->items()) {
    if (!file.is_string() || !is_plain_file_name(file.get<std::string>())) {
      return data_loss(index_path + ": weight_map places " + in_quotes(tensor) + " in " +
                       file.dump() + ", which is not a file name inside the directory");
    }
    weight_map.emplace(tensor, file.get<std::string>());
  }
  return weight_map;
}

// The files an index names, sorted, each once.
Result<std::vector<std::string>> indexed_files(const std::map<std::string, std::string>& weight_map,
                                               const std::string& index_path) {
  std::vector<std::string> names;
  for (const auto& [tensor, file] : weight_map)
    names.push_back(file);
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  if (names.empty()) return not_found(index_path + " lists no tensors");
  return names;
}

// Names in `dir` ending in ".safetensors", sorted. One that cannot be opened (a dangling link of
// an unfinished download) is kept, for open() to name it.
Result<std::vector<std::string>> list_safetensors(const std::string& dir) {
  std::error_code ec;
  std::vector<std::string> names;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() == ".safetensors") names.push_back(it->path().filename().string());
  }
  if (ec) return io_error("cannot list " + dir + ": " + ec.message());
  if (names.empty()) return not_found("no .safetensors files in " + dir);
  std::sort(names.begin(), names.end());
  return names;
}

Status check_index_agrees(const std::map<std::string, std::string>& weight_map,
                          const SafetensorsSet& set, const std::string& index_path) {
  for (const auto& [tensor, file] : weight_map) {
    for (const SafetensorsFile& f : set.files()) {
      if (fs::path(f.path()).filename() == file && !f.contains(tensor)) {
        return data_loss(index_path + " places " + in_quotes(tensor) + " in " + file +
                         ", which does not hold it");
      }
    }
  }
  return Status::Ok();
}

}  // namespace

Result<SafetensorsSet> SafetensorsSet::open_dir(const std::string& dir) {
  const std::string index_path = (fs::path(dir) / kIndexName).string();
  std::error_code ec;
  const bool has_index = fs::exists(index_path, ec);
  if (ec) return io_error("cannot stat " + index_path + ": " + ec.message());
  std::map<std::string, std::string> weight_map;
  std::vector<std::string> file_names;
  if (has_index) {
    TIERKV_ASSIGN_OR_RETURN(weight_map, read_weight_map(index_path));
    TIERKV_ASSIGN_OR_RETURN(file_names, indexed_files(weight_map, index_path));
  } else {
    TIERKV_ASSIGN_OR_RETURN(file_names, list_safetensors(dir));
  }

  std::vector<SafetensorsFile> files;
  std::vector<Slot> slots;
  for (const std::string& name : file_names) {
    TIERKV_ASSIGN_OR_RETURN(SafetensorsFile f,
                            SafetensorsFile::open((fs::path(dir) / name).string()));
    for (std::string_view tensor : f.names()) {
      slots.push_back({tensor, static_cast<std::uint32_t>(files.size())});
    }
    files.push_back(std::move(f));
  }
  std::sort(slots.begin(), slots.end(),
            [](const Slot& a, const Slot& b) { return a.name < b.name; });
  for (std::size_t i = 1; i < slots.size(); ++i) {
    if (slots[i].name == slots[i - 1].name) {
      return data_loss("tensor " + in_quotes(slots[i].name) + " is in both " +
                       files[slots[i - 1].file].path() + " and " + files[slots[i].file].path());
    }
  }
  SafetensorsSet set(dir, std::move(files), std::move(slots));
  TIERKV_RETURN_IF_ERROR(check_index_agrees(weight_map, set, index_path));
  return set;
}

const SafetensorsSet::Slot* SafetensorsSet::find(std::string_view name) const {
  auto it = std::lower_bound(slots_.begin(), slots_.end(), name,
                             [](const Slot& s, std::string_view n) { return s.name < n; });
  return it != slots_.end() && it->name == name ? &*it : nullptr;
}

Result<TensorView> SafetensorsSet::tensor(std::string_view name) const {
  const Slot* s = find(name);
  if (s == nullptr) {
    return not_found("no tensor " + in_quotes(name) + " in " + dir_ + " (" +
                     std::to_string(slots_.size()) + " tensors in " +
                     std::to_string(files_.size()) + " files)");
  }
  return files_[s->file].tensor(name);
}

bool SafetensorsSet::contains(std::string_view name) const {
  return find(name) != nullptr;
}

std::vector<std::string_view> SafetensorsSet::names() const {
  std::vector<std::string_view> names;
  for (const Slot& s : slots_)
    names.push_back(s.name);
  return names;
}

// ---- writing ------------------------------------------------------------------------------------

namespace {

Status check_to_write(std::span<const TensorToWrite> tensors) {
  std::set<std::string_view> seen;
  for (const TensorToWrite& t : tensors) {
    const std::string what = "tensor " + in_quotes(t.name) + ": ";
    if (t.name == kMetadataKey) return invalid_argument(what + "the name is reserved");
    if (!seen.insert(t.name).second) return invalid_argument(what + "the name is used twice");
    for (std::int64_t d : t.shape) {
      if (d < 0) return invalid_argument(what + "negative dim in " + format_shape(t.shape));
    }
    // The reader's rule, so that whatever is written can be read back.
    const std::optional<std::uint64_t> bits = shape_bits(t.shape, 8 * dtype_size(t.dtype));
    if (!bits) return invalid_argument(what + "shape " + format_shape(t.shape) + " overflows");
    const std::uint64_t bytes = *bits / 8;
    if (bytes != t.bytes.size()) {
      return invalid_argument(what + std::to_string(t.bytes.size()) + " bytes given, shape " +
                              format_shape(t.shape) + " of " + std::string(dtype_name(t.dtype)) +
                              " needs " + std::to_string(bytes));
    }
  }
  return Status::Ok();
}

// The JSON header, padded with spaces to a multiple of 8 bytes, for `order` laid out back to back.
Result<std::string> header_text(std::span<const TensorToWrite> tensors,
                                const std::vector<std::size_t>& order,
                                const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header[std::string(kMetadataKey)] = metadata;
  std::uint64_t offset = 0;
  for (std::size_t i : order) {
    const TensorToWrite& t = tensors[i];
    header[t.name] = {{"dtype", format_dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    return invalid_argument(std::string("tensor names and metadata must be UTF-8: ") + e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

Status write_all(int fd, const void* data, std::size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return io_error(errno_text(errno));
    p += n;
    size -= static_cast<std::size_t>(n);
  }
  return Status::Ok();
}

Status write_file(int fd, std::span<const TensorToWrite> tensors,
                  const std::vector<std::size_t>& order, const std::string& header) {
  const std::uint64_t header_len = header.size();
  TIERKV_RETURN_IF_ERROR(write_all(fd, &header_len, sizeof header_len));
  TIERKV_RETURN_IF_ERROR(write_all(fd, header.data(), header.size()));
  for (std::size_t i : order) {
    TIERKV_RETURN_IF_ERROR(write_all(fd, tensors[i].bytes.data(), tensors[i].bytes.size()));
  }
  return Status::Ok();
}

}  // namespace

Status write_safetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                         const std::map<std::string, std::string>& metadata) {
  TIERKV_RETURN_IF_ERROR(check_to_write(tensors));
  std::vector<std::size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const std::size_t sa = dtype_size(tensors[a].dtype), sb = dtype_size(tensors[b].dtype);
    return sa != sb ? sa > sb : tensors[a].name < tensors[b].name;
  });
  TIERKV_ASSIGN_OR_RETURN(const std::string header, header_text(tensors, order, metadata));

  std::string tmp = path + ".XXXXXX";
  UniqueFd fd(::mkstemp(tmp.data()));
  if (fd.get() < 0) return sys_error("cannot create a file next to", path);
  Status s = write_file(fd.get(), tensors, order, header);
  if (s.ok() && ::fchmod(fd.get(), 0644) != 0) s = io_error(errno_text(errno));
  if (fd.close() != 0 && s.ok()) s = io_error(errno_text(errno));
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) s = io_error(errno_text(errno));
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s.with_context("cannot write " + path);
  }
  return Status::Ok();
}

}  // namespace tierkv
