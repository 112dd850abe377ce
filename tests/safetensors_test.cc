#include "model/safetensors.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <string>
#include <vector>

#include "backends.h"
#include "model/llama_weights_names.h"
#include "tierkv/model_spec.h"

namespace tierkv {
namespace {

namespace fs = std::filesystem;

// A fresh directory under the system's temp directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() / ("tierkv-safetensors-test-" + std::to_string(::getpid()) +
                                         "-" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

// Replaces `path` with a new file (not truncated in place: ext4 flushes those to disk on close).
void write_bytes(const std::string& path, std::string_view bytes) {
  fs::remove(path);
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A file of `header_len` as the length field, then `header`, then `data`.
std::string raw_file(std::uint64_t header_len, std::string_view header, std::string_view data) {
  std::string bytes(8, '\0');
  std::memcpy(bytes.data(), &header_len, 8);
  return bytes.append(header).append(data);
}
std::string raw_file(std::string_view header, std::string_view data) {
  return raw_file(header.size(), header, data);
}

// Random normal values of `dtype` (never all zeros, so a misplaced byte shows).
std::vector<std::byte> random_values(DType dtype, std::int64_t numel, std::mt19937& rng) {
  std::vector<std::byte> bytes(static_cast<std::size_t>(numel) * dtype_size(dtype));
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (std::int64_t i = 0; i < numel; ++i)
    store_from_float(bytes.data(), i, dtype, dist(rng));
  return bytes;
}

std::int64_t numel_of(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (std::int64_t d : shape)
    n *= d;
  return n;
}

// Tensors to write together with the buffers their bytes point into.
struct Tensors {
  std::vector<std::vector<std::byte>> buffers;
  std::vector<TensorToWrite> list;

  void add(std::string name, DType dtype, std::vector<std::int64_t> shape, std::mt19937& rng) {
    buffers.push_back(random_values(dtype, numel_of(shape), rng));
    list.push_back({std::move(name), dtype, std::move(shape), buffers.back()});
  }
  const TensorToWrite* find(std::string_view name) const {
    for (const TensorToWrite& t : list) {
      if (t.name == name) return &t;
    }
    return nullptr;
  }
};

// Expects `view` to be exactly `want`.
void expect_same(const TensorView& view, const TensorToWrite& want) {
  EXPECT_EQ(view.name, want.name);
  EXPECT_EQ(view.dtype, want.dtype) << want.name;
  EXPECT_TRUE(std::ranges::equal(view.shape, want.shape))
      << want.name << " " << format_shape(view.shape);
  ASSERT_EQ(view.bytes.size(), want.bytes.size()) << want.name;
  EXPECT_TRUE(std::ranges::equal(view.bytes, want.bytes)) << want.name;
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(view.bytes.data()) % dtype_size(view.dtype), 0u)
      << want.name << " is not aligned to its element size";
}

void expect_error(const Status& s, StatusCode code, std::string_view needle) {
  EXPECT_EQ(s.code(), code) << s.to_string();
  EXPECT_NE(s.message().find(needle), std::string::npos)
      << "'" << needle << "' not in: " << s.to_string();
}

class SafetensorsTest : public ::testing::Test {
 protected:
  TempDir dir_;
  std::mt19937 rng_{20240611};
};

// ---- one file ----------------------------------------------------------------------------------

TEST_F(SafetensorsTest, RoundTripsEveryDtypeAndShape) {
  Tensors t;
  t.add("f32.matrix", DType::kF32, {3, 5}, rng_);
  t.add("f16.vector", DType::kF16, {7}, rng_);
  t.add("bf16.4d", DType::kBF16, {2, 1, 3, 2}, rng_);
  t.add("f32.scalar", DType::kF32, {}, rng_);
  t.add("bf16.scalar", DType::kBF16, {}, rng_);
  t.add("f16.empty", DType::kF16, {0}, rng_);
  t.add("f32.empty_rows", DType::kF32, {0, 4}, rng_);
  const std::string path = dir_.file("a.safetensors");
  ASSERT_OK(write_safetensors(path, t.list));

  ASSERT_OK_AND_ASSIGN(const SafetensorsFile f, SafetensorsFile::open(path));
  EXPECT_EQ(f.path(), path);
  EXPECT_TRUE(f.metadata().empty());
  const std::vector<std::string_view> names = f.names();
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  ASSERT_EQ(names.size(), t.list.size());
  for (const TensorToWrite& want : t.list) {
    ASSERT_OK_AND_ASSIGN(const TensorView view, f.tensor(want.name));
    expect_same(view, want);
    EXPECT_EQ(view.numel(), numel_of(want.shape));
    EXPECT_TRUE(f.contains(want.name));
  }
  ASSERT_OK_AND_ASSIGN(const TensorView scalar, f.tensor("f32.scalar"));
  EXPECT_EQ(scalar.numel(), 1);
  EXPECT_EQ(format_shape(scalar.shape), "[]");
}

TEST_F(SafetensorsTest, RoundTripsAFileWithoutTensors) {
  const std::string path = dir_.file("empty.safetensors");
  ASSERT_OK(write_safetensors(path, {}, {{"format", "pt"}}));
  ASSERT_OK_AND_ASSIGN(const SafetensorsFile f, SafetensorsFile::open(path));
  EXPECT_TRUE(f.names().empty());
  EXPECT_EQ(f.metadata().at("format"), "pt");
}

TEST_F(SafetensorsTest, KeepsMetadata) {
  Tensors t;
  t.add("w", DType::kBF16, {4, 4}, rng_);
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"note", "µ \"quoted\"\nline"}, {"empty", ""}};
  const std::string path = dir_.file("m.safetensors");
  ASSERT_OK(write_safetensors(path, t.list, metadata));
  ASSERT_OK_AND_ASSIGN(const SafetensorsFile f, SafetensorsFile::open(path));
  EXPECT_EQ(f.metadata(), metadata);
  EXPECT_FALSE(f.contains("__metadata__"));
  EXPECT_EQ(f.names().size(), 1u);
}

TEST_F(SafetensorsTest, PadsTheHeaderWithSpacesToEightBytes) {
  for (const std::string name : {"a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg"}) {
    Tensors t;
    t.add(name, DType::kF16, {3}, rng_);
    t.add("x", DType::kF32, {1}, rng_);
    const std::string path = dir_.file(name + ".safetensors");
    ASSERT_OK(write_safetensors(path, t.list));
    const std::string bytes = read_bytes(path);
    std::uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    EXPECT_EQ(n % 8, 0u) << name;
    const std::string header = bytes.substr(8, n);
    EXPECT_EQ(header.find_last_not_of(' '), header.rfind('}')) << header;
    ASSERT_OK_AND_ASSIGN(const SafetensorsFile f, SafetensorsFile::open(path));
    for (const TensorToWrite& want : t.list) {
      ASSERT_OK_AND_ASSIGN(const TensorView view, f.tensor(want.name));
      expect_same(view, want);
    }
  }
}

TEST_F(SafetensorsTest, ViewsSurviveMovingTheFile) {
  Tensors t;
  t.add("w", DType::kF32, {16}, rng_);
  const std::string path = dir_.file("w.safetensors");
  ASSERT_OK(write_safetensors(path, t.list));
  ASSERT_OK_AND_ASSIGN(SafetensorsFile f, SafetensorsFile::open(path));
  ASSERT_OK_AND_ASSIGN(const TensorView view, f.tensor("w"));
  SafetensorsFile moved = std::move(f);
  std::vector<SafetensorsFile> holder;
  holder.push_back(std::move(moved));
  expect_same(view, t.list[0]);
  ASSERT_OK_AND_ASSIGN(const TensorView again, holder[0].tensor("w"));
  EXPECT_EQ(again.bytes.data(), view.bytes.data());
}

TEST_F(SafetensorsTest, WriterRejectsMalformedTensorsAndWritesNothing) {
  const std::vector<std::byte> eight(8);
  struct Case {
    std::string what;
    std::vector<TensorToWrite> tensors;
    std::map<std::string, std::string> metadata;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {"duplicate", {{"a", DType::kF32, {2}, eight}, {"a", DType::kF32, {2}, eight}}, {}, "twice"},
      {"reserved", {{"__metadata__", DType::kF32, {2}, eight}}, {}, "reserved"},
      {"negative dim", {{"a", DType::kF32, {-2}, eight}}, {}, "negative"},
      {"byte count", {{"a", DType::kF32, {3}, eight}}, {}, "needs 12"},
      {"overflow", {{"a", DType::kF32, {1LL << 40, 1LL << 40}, eight}}, {}, "overflows"},
      {"overflow around a zero",
       {{"a", DType::kF32, {1LL << 40, 0, 1LL << 40}, {}}},
       {},
       "overflows"},
      {"not UTF-8", {{"a\xff", DType::kF16, {4}, eight}}, {}, "UTF-8"},
      {"metadata not UTF-8", {{"a", DType::kF16, {4}, eight}}, {{"k", "\xc3"}}, "UTF-8"},
  };
  for (const Case& c : cases) {
    const std::string path = dir_.file("bad.safetensors");
    expect_error(write_safetensors(path, c.tensors, c.metadata), StatusCode::kInvalidArgument,
                 c.needle);
    EXPECT_FALSE(fs::exists(path)) << c.what;
  }
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_.str()), fs::directory_iterator()), 0)
      << "a temporary file was left behind";
}

TEST_F(SafetensorsTest, WriterReportsAnUnwritablePath) {
  const std::string path = dir_.file("no/such/dir/x.safetensors");
  expect_error(write_safetensors(path, {}), StatusCode::kIoError, path);
}

TEST_F(SafetensorsTest, OpenNamesThePathAndTheReason) {
  const std::string missing = dir_.file("missing.safetensors");
  Result<SafetensorsFile> f = SafetensorsFile::open(missing);
  expect_error(f.status(), StatusCode::kIoError, missing);
  expect_error(f.status(), StatusCode::kIoError, "No such file or directory");
  expect_error(SafetensorsFile::open(dir_.str()).status(), StatusCode::kInvalidArgument,
               "not a regular file");
}

TEST_F(SafetensorsTest, MissingTensorIsNotFound) {
  Tensors t;
  t.add("present", DType::kF32, {2}, rng_);
  const std::string path = dir_.file("a.safetensors");
  ASSERT_OK(write_safetensors(path, t.list));
  ASSERT_OK_AND_ASSIGN(const SafetensorsFile f, SafetensorsFile::open(path));
  expect_error(f.tensor("absent").status(), StatusCode::kNotFound, "'absent'");
  EXPECT_FALSE(f.contains("absent"));
  EXPECT_FALSE(f.contains("presen"));
}

TEST_F(SafetensorsTest, UnsupportedDtypeIsListedButNotReadable) {
  const std::string header = R"({"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
                             R"("w":{"dtype":"F32","shape":[1],"data_offsets":[16,20]},)"
                             R"("q":{"dtype":"F4","shape":[2,3],"data_offsets":[20,23]}})";
  const std::string path = dir_.file("mixed.safetensors");
  write_bytes(path, raw_file(header, std::string(23, '\x01')));
  ASSERT_OK_AND_ASSIGN(const SafetensorsFile f, SafetensorsFile::open(path));
  EXPECT_EQ(f.names(), (std::vector<std::string_view>{"ids", "q", "w"}));
  expect_error(f.tensor("ids").status(), StatusCode::kUnimplemented, "I64");
  expect_error(f.tensor("q").status(), StatusCode::kUnimplemented, "F4");
  ASSERT_OK_AND_ASSIGN(const TensorView w, f.tensor("w"));
  EXPECT_EQ(w.bytes.size(), 4u);
}

// ---- corrupt files -----------------------------------------------------------------------------

struct Corruption {
  std::string what;
  std::string bytes;
  std::string needle;  // in the message
};

std::vector<Corruption> corruptions() {
  const std::string d8(8, '\x11'), d12(12, '\x22'), d20(20, '\x33');
  auto one = [](std::string entry) { return R"({"a":)" + entry + "}"; };
  return {
      {"empty file", "", "empty"},
      {"shorter than the length field", std::string(5, '\0'), "shorter than the 8-byte"},
      {"header length past the end", raw_file(100, "{}", ""), "runs past the end"},
      {"header length huge", raw_file(~0ULL, "{}", ""), "exceeds"},
      {"bad JSON", raw_file(R"({"a":{"dtype":"F32",)", ""), "not valid JSON"},
      {"not UTF-8", raw_file("{\"\xff\":1}", ""), "not valid JSON"},
      {"JSON array", raw_file("[1,2]", ""), "not an object"},
      {"entry not an object", raw_file(one("5"), ""), "entry is not an object"},
      {"no shape", raw_file(one(R"({"dtype":"F32","data_offsets":[0,8]})"), d8), "no \"shape\""},
      {"unknown dtype", raw_file(one(R"({"dtype":"Q4","shape":[2],"data_offsets":[0,8]})"), d8),
       "unknown dtype \"Q4\""},
      {"dtype not a string", raw_file(one(R"({"dtype":7,"shape":[2],"data_offsets":[0,8]})"), d8),
       "unknown dtype 7"},
      {"negative dim", raw_file(one(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), d8),
       "non-negative"},
      {"fractional dim", raw_file(one(R"({"dtype":"F32","shape":[2.5],"data_offsets":[0,8]})"), d8),
       "non-negative"},
      {"dim beyond int64",
       raw_file(one(R"({"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,8]})"), d8),
       "non-negative"},
      {"shape overflow",
       raw_file(one(R"({"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]})"),
                d8),
       "overflows"},
      {"partial byte", raw_file(one(R"({"dtype":"F4","shape":[3],"data_offsets":[0,2]})"), "xx"),
       "whole bytes"},
      {"wrong byte size", raw_file(one(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})"), d8),
       "needs 12"},
      {"reversed offsets", raw_file(one(R"({"dtype":"F32","shape":[0],"data_offsets":[8,0]})"), d8),
       "begin <= end"},
      {"three offsets", raw_file(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8,8]})"), d8),
       "begin <= end"},
      {"offsets past the end",
       raw_file(one(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})"), d8), "runs past"},
      {"overlapping offsets",
       raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                d12),
       "overlaps"},
      {"empty tensor inside another",
       raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                R"("b":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
                d8),
       "overlaps"},
      {"gap between tensors",
       raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
                d20),
       "unaccounted"},
      {"trailing bytes", raw_file(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})"), d12),
       "4 trailing bytes"},
      {"duplicate tensor",
       raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                d8),
       "duplicate key 'a'"},
      {"duplicate field",
       raw_file(one(R"({"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]})"), d8),
       "duplicate key 'dtype'"},
      {"duplicate tensor far apart",
       raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
                R"("a":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}})",
                d8),
       "duplicate key 'a'"},
      {"dims overflow around a zero",
       raw_file(one(R"({"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]})"),
                ""),
       "overflows"},
      {"nesting too deep", raw_file(std::string(100, '[') + std::string(100, ']'), ""), "deeper"},
      {"metadata not an object", raw_file(R"({"__metadata__":[1]})", ""), "not an object"},
      {"metadata value not a string", raw_file(R"({"__metadata__":{"k":1}})", ""), "not a string"},
  };
}

TEST_F(SafetensorsTest, EachCorruptionIsDataLossNamingFileAndCause) {
  const std::string path = dir_.file("corrupt.safetensors");
  for (const Corruption& c : corruptions()) {
    SCOPED_TRACE(c.what);
    write_bytes(path, c.bytes);
    const Status s = SafetensorsFile::open(path).status();
    expect_error(s, StatusCode::kDataLoss, c.needle);
    expect_error(s, StatusCode::kDataLoss, path);
  }
}

TEST_F(SafetensorsTest, AcceptsEmptyTensorsAndMetadataAnywhereInTheHeader) {
  const std::string path = dir_.file("valid.safetensors");
  write_bytes(path, raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[0],"data_offsets":[8,8]},)"
                             R"("__metadata__":{"k":"v"}})",
                             std::string(8, '\x11')));
  ASSERT_OK_AND_ASSIGN(const SafetensorsFile f, SafetensorsFile::open(path));
  EXPECT_EQ(f.names(), (std::vector<std::string_view>{"a", "b"}));
}

TEST_F(SafetensorsTest, TruncationAtEveryLengthIsDataLoss) {
  Tensors t;
  t.add("a", DType::kF32, {3}, rng_);
  t.add("b", DType::kBF16, {2, 2}, rng_);
  const std::string path = dir_.file("whole.safetensors");
  ASSERT_OK(write_safetensors(path, t.list, {{"k", "v"}}));
  const std::string whole = read_bytes(path);
  const std::string cut = dir_.file("cut.safetensors");
  for (std::size_t len = 0; len < whole.size(); ++len) {
    write_bytes(cut, std::string_view(whole).substr(0, len));
    const Status s = SafetensorsFile::open(cut).status();
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << "cut at " << len << ": " << s.to_string();
  }
}

// Applies one to three random edits to a valid file: a bit flip anywhere, a digit of the header
// changed (shapes and offsets), a JSON character dropped into the header, a byte of the length
// field rewritten, or a truncation.
void mutate(std::string& bytes, std::size_t header_len, std::mt19937& rng) {
  auto below = [&](std::size_t n) {
    return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng);
  };
  const std::string_view json_chars = "{}[]\":,0123456789-.eE \\";
  const std::size_t edits = 1 + below(3);
  for (std::size_t e = 0; e < edits && bytes.size() > 8 + header_len; ++e) {
    char& in_header = bytes[8 + below(header_len)];
    switch (below(5)) {
      case 0:
        bytes[below(bytes.size())] ^= static_cast<char>(1u << below(8));
        break;
      case 1:
        if (in_header >= '0' && in_header <= '9') in_header = static_cast<char>('0' + below(10));
        break;
      case 2:
        in_header = json_chars[below(json_chars.size())];
        break;
      case 3:
        bytes[below(8)] = static_cast<char>(below(256));
        break;
      default:
        bytes.resize(below(bytes.size() + 1));
        break;
    }
  }
}

// Mutated files either fail to open with DataLoss, or every view open() hands out has the size
// its shape says and can be read to its end (a view outside the mapping would fault).
TEST_F(SafetensorsTest, FuzzedFilesOpenInBoundsOrFailCleanly) {
  Tensors t;
  t.add("w", DType::kF32, {3, 2}, rng_);
  t.add("h", DType::kF16, {5}, rng_);
  t.add("s", DType::kBF16, {}, rng_);
  t.add("e", DType::kBF16, {0, 3}, rng_);
  const std::string base_path = dir_.file("base.safetensors");
  ASSERT_OK(write_safetensors(base_path, t.list, {{"format", "pt"}}));
  const std::string base = read_bytes(base_path);
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, base.data(), 8);

  const std::string path = dir_.file("fuzz.safetensors");
  std::mt19937 rng(7);
  int opened = 0, failed = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    std::string bytes = base;
    mutate(bytes, header_len, rng);
    write_bytes(path, bytes);
    Result<SafetensorsFile> f = SafetensorsFile::open(path);
    if (!f.ok()) {
      ++failed;
      ASSERT_EQ(f.status().code(), StatusCode::kDataLoss) << f.status().to_string();
      continue;
    }
    ++opened;
    std::size_t total = 0;
    for (std::string_view name : f->names()) {
      Result<TensorView> v = f->tensor(name);
      if (!v.ok()) {
        ASSERT_EQ(v.status().code(), StatusCode::kUnimplemented) << v.status().to_string();
        continue;
      }
      ASSERT_EQ(v->bytes.size(), static_cast<std::size_t>(v->numel()) * dtype_size(v->dtype));
      const std::vector<std::byte> copy(v->bytes.begin(), v->bytes.end());
      total += copy.size();
    }
    EXPECT_LE(total, bytes.size());
  }
  EXPECT_GT(opened, 200);
  EXPECT_GT(failed, 200);
}

// ---- sets of files ------------------------------------------------------------------------------

// Writes `t` split over `shards` files named like Hugging Face shards; returns the file names.
std::vector<std::string> write_shards(const TempDir& dir, const Tensors& t, int shards) {
  std::vector<std::string> names;
  const std::size_t per = (t.list.size() + shards - 1) / shards;
  for (int s = 0; s < shards; ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, shards);
    const std::size_t begin = std::min(t.list.size(), s * per);
    const std::size_t end = std::min(t.list.size(), begin + per);
    const Status st = write_safetensors(
        dir.file(name), std::span(t.list).subspan(begin, end - begin), {{"format", "pt"}});
    EXPECT_TRUE(st.ok()) << st.to_string();
    names.push_back(name);
  }
  return names;
}

// model.safetensors.index.json placing each of `t`'s tensors in a shard, as write_shards did.
void write_index(const TempDir& dir, const Tensors& t, const std::vector<std::string>& shards) {
  const std::size_t per = (t.list.size() + shards.size() - 1) / shards.size();
  std::string text = R"({"metadata":{"total_size":0},"weight_map":{)";
  for (std::size_t i = 0; i < t.list.size(); ++i) {
    text += (i ? "," : "") + ("\"" + t.list[i].name + "\":\"" + shards[i / per] + "\"");
  }
  write_bytes(dir.file("model.safetensors.index.json"), text + "}}");
}

Tensors some_tensors(std::mt19937& rng) {
  Tensors t;
  for (int i = 0; i < 7; ++i) {
    t.add("t" + std::to_string(i), i % 2 ? DType::kBF16 : DType::kF32, {i + 1, 3}, rng);
  }
  return t;
}

void expect_set_holds(const SafetensorsSet& set, const Tensors& t) {
  EXPECT_EQ(set.names().size(), t.list.size());
  for (const TensorToWrite& want : t.list) {
    ASSERT_OK_AND_ASSIGN(const TensorView view, set.tensor(want.name));
    expect_same(view, want);
  }
}

TEST_F(SafetensorsTest, SetWithoutIndexUnitesAllShards) {
  const Tensors t = some_tensors(rng_);
  write_shards(dir_, t, 3);
  ASSERT_OK_AND_ASSIGN(const SafetensorsSet set, SafetensorsSet::open_dir(dir_.str()));
  EXPECT_EQ(set.files().size(), 3u);
  EXPECT_EQ(set.dir(), dir_.str());
  expect_set_holds(set, t);
  expect_error(set.tensor("nope").status(), StatusCode::kNotFound, "'nope'");
}

TEST_F(SafetensorsTest, SetWithIndexOpensOnlyTheIndexedShards) {
  const Tensors t = some_tensors(rng_);
  write_index(dir_, t, write_shards(dir_, t, 2));
  // A consolidated copy beside the shards, as some repositories ship: the index decides.
  ASSERT_OK(write_safetensors(dir_.file("consolidated.safetensors"), t.list));
  ASSERT_OK_AND_ASSIGN(const SafetensorsSet set, SafetensorsSet::open_dir(dir_.str()));
  EXPECT_EQ(set.files().size(), 2u);
  expect_set_holds(set, t);
}

TEST_F(SafetensorsTest, SetRejectsATensorInTwoFiles) {
  const Tensors t = some_tensors(rng_);
  write_shards(dir_, t, 2);
  ASSERT_OK(write_safetensors(dir_.file("extra.safetensors"), std::span(t.list).first(1)));
  expect_error(SafetensorsSet::open_dir(dir_.str()).status(), StatusCode::kDataLoss,
               "'t0' is in both");
}

TEST_F(SafetensorsTest, SetIndexMustAgreeWithTheShards) {
  const Tensors t = some_tensors(rng_);
  const std::vector<std::string> shards = write_shards(dir_, t, 2);
  const std::string index = dir_.file("model.safetensors.index.json");

  write_bytes(index, R"({"weight_map":{"t0":")" + shards[1] + R"("}})");
  expect_error(SafetensorsSet::open_dir(dir_.str()).status(), StatusCode::kDataLoss,
               "does not hold it");
  write_bytes(index, R"({"weight_map":{"t0":"model-00009-of-00009.safetensors"}})");
  expect_error(SafetensorsSet::open_dir(dir_.str()).status(), StatusCode::kIoError,
               "model-00009-of-00009.safetensors");
  write_bytes(index, R"({"weight_map":{"t0":"../elsewhere.safetensors"}})");
  expect_error(SafetensorsSet::open_dir(dir_.str()).status(), StatusCode::kDataLoss,
               "not a file name inside the directory");
  write_bytes(index, R"({"metadata":{}})");
  expect_error(SafetensorsSet::open_dir(dir_.str()).status(), StatusCode::kDataLoss, "weight_map");
  write_bytes(index, R"({"weight_map":{"t0":"a","t0":"b"}})");
  expect_error(SafetensorsSet::open_dir(dir_.str()).status(), StatusCode::kDataLoss,
               "duplicate key 't0'");
  write_bytes(index, R"({"weight_map":{}})");
  expect_error(SafetensorsSet::open_dir(dir_.str()).status(), StatusCode::kNotFound,
               "lists no tensors");
}

TEST_F(SafetensorsTest, SetNamesAShardItCannotOpen) {
  const Tensors t = some_tensors(rng_);
  write_shards(dir_, t, 2);
  const std::string dangling = dir_.file("model-00003-of-00003.safetensors");
  fs::create_symlink(dir_.file("blob-not-downloaded"), dangling);
  expect_error(SafetensorsSet::open_dir(dir_.str()).status(), StatusCode::kIoError, dangling);
}

TEST_F(SafetensorsTest, SetOfAnEmptyOrMissingDirectoryFails) {
  expect_error(SafetensorsSet::open_dir(dir_.str()).status(), StatusCode::kNotFound,
               "no .safetensors files");
  const std::string missing = dir_.file("missing");
  expect_error(SafetensorsSet::open_dir(missing).status(), StatusCode::kIoError, missing);
}

// ---- special files, NUL bytes and large headers -------------------------------------------------

// Runs `open` on a thread and returns its status, failing the test (instead of hanging it) when
// it is not back within two seconds: it is then taken to be blocked in open() on one of `fifos`
// waiting for a writer, and each is opened for writing until it returns.
template <typename Open>
Status status_within_deadline(const std::vector<std::string>& fifos, Open open) {
  std::future<Status> done = std::async(std::launch::async, [&] { return open().status(); });
  if (done.wait_for(std::chrono::seconds(2)) == std::future_status::ready) return done.get();
  ADD_FAILURE() << "still not back after 2 s: blocked on a FIFO?";
  while (done.wait_for(std::chrono::milliseconds(10)) != std::future_status::ready) {
    for (const std::string& fifo : fifos) {
      const int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
      if (fd >= 0) ::close(fd);
    }
  }
  return done.get();
}

void make_fifo(const std::string& path) {
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0) << path << ": " << std::strerror(errno);
}

TEST_F(SafetensorsTest, OpenRefusesSpecialFilesWithoutBlocking) {
  const std::string fifo = dir_.file("model.safetensors");
  make_fifo(fifo);
  const Status s = status_within_deadline({fifo}, [&] { return SafetensorsFile::open(fifo); });
  expect_error(s, StatusCode::kInvalidArgument, fifo);
  expect_error(s, StatusCode::kInvalidArgument, "is a FIFO, not a regular file");
  expect_error(SafetensorsFile::open("/dev/null").status(), StatusCode::kInvalidArgument,
               "/dev/null is a character device, not a regular file");
}

TEST_F(SafetensorsTest, SetRefusesAFifoNamedLikeAShard) {
  write_shards(dir_, some_tensors(rng_), 2);
  const std::string fifo = dir_.file("model-00003-of-00003.safetensors");
  make_fifo(fifo);
  const Status s =
      status_within_deadline({fifo}, [&] { return SafetensorsSet::open_dir(dir_.str()); });
  expect_error(s, StatusCode::kInvalidArgument, fifo);
  expect_error(s, StatusCode::kInvalidArgument, "FIFO");
}

TEST_F(SafetensorsTest, SetRefusesAnIndexThatIsNotARegularFile) {
  write_shards(dir_, some_tensors(rng_), 2);
  const std::string index = dir_.file("model.safetensors.index.json");
  make_fifo(index);
  const Status s =
      status_within_deadline({index}, [&] { return SafetensorsSet::open_dir(dir_.str()); });
  expect_error(s, StatusCode::kInvalidArgument, index);
  expect_error(s, StatusCode::kInvalidArgument, "is a FIFO, not a regular file");

  fs::remove(index);
  fs::create_directory(index);
  expect_error(SafetensorsSet::open_dir(dir_.str()).status(), StatusCode::kInvalidArgument,
               index + " is a directory, not a regular file");
}

// The format pads a header with spaces; a NUL would end the JSON text early for a parser that
// reads C strings, so whatever follows it would be ignored by some readers and not others.
TEST_F(SafetensorsTest, HeaderMayEndInSpacesButHoldsNoNul) {
  const std::string object = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string d8(8, '\x11');
  const std::string path = dir_.file("nul.safetensors");
  write_bytes(path, raw_file(object + "   ", d8));
  EXPECT_OK(SafetensorsFile::open(path).status());

  const std::string nul(1, '\0');
  for (const std::string& header :
       {object + nul + nul + nul, object + nul + R"(,"b":"ignored?"})", nul + object,
        R"({"a":{"dtype":"F32","shape":[2],)" + nul + R"("data_offsets":[0,8]}})"}) {
    write_bytes(path, raw_file(header, d8));
    const Status s = SafetensorsFile::open(path).status();
    expect_error(s, StatusCode::kDataLoss,
                 "NUL byte at offset " + std::to_string(header.find('\0')));
    expect_error(s, StatusCode::kDataLoss, path);
  }
}

TEST_F(SafetensorsTest, SetRefusesAnIndexWithANulByte) {
  const Tensors t = some_tensors(rng_);
  write_index(dir_, t, write_shards(dir_, t, 2));
  const std::string index = dir_.file("model.safetensors.index.json");
  write_bytes(index, read_bytes(index) + std::string(1, '\0') + "{}");
  expect_error(SafetensorsSet::open_dir(dir_.str()).status(), StatusCode::kDataLoss, "NUL byte");
}

// A header of `n` one-byte tensors "t000000"...; the last is named `last` when given.
std::string many_tensors_header(int n, std::string_view last = {}) {
  std::string header = "{";
  char name[16];
  for (int i = 0; i < n; ++i) {
    std::snprintf(name, sizeof name, "t%06d", i);
    const std::string_view key = i == n - 1 && !last.empty() ? last : std::string_view(name);
    header += (i ? ",\"" : "\"") + std::string(key) + R"(":{"dtype":"U8","shape":[1],)" +
              R"("data_offsets":[)" + std::to_string(i) + "," + std::to_string(i + 1) + "]}";
  }
  return header + "}";
}

// Parsing is O(n log n) in the number of tensors (it was quadratic: 40,000 tensors took 14 s). The
// check is how the time grows, not a wall-clock limit (which a sanitizer build or a busy machine
// breaks): 8x the tensors (about 10x the time at n log n) must take well under the 64x a quadratic
// parser takes. Each size is timed
// as the fastest of three opens.
double fastest_open_ms(const std::string& path, std::string_view expect_error_text = {}) {
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    const auto start = std::chrono::steady_clock::now();
    Result<SafetensorsFile> f = SafetensorsFile::open(path);
    best = std::min(
        best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                  .count());
    if (expect_error_text.empty()) {
      EXPECT_TRUE(f.ok()) << f.status().to_string();
    } else {
      EXPECT_NE(f.status().message().find(expect_error_text), std::string::npos)
          << f.status().to_string();
    }
  }
  return best;
}

TEST_F(SafetensorsTest, OpensAHeaderOf40000TensorsInNearLinearTime) {
  constexpr int kSmall = 5'000, kLarge = 40'000;
  const std::string small = dir_.file("small.safetensors"), large = dir_.file("large.safetensors");
  write_bytes(small, raw_file(many_tensors_header(kSmall), std::string(kSmall, '\x5a')));
  write_bytes(large, raw_file(many_tensors_header(kLarge), std::string(kLarge, '\x5a')));
  Result<SafetensorsFile> f = SafetensorsFile::open(large);
  ASSERT_OK(f.status());
  EXPECT_EQ(f->names().size(), static_cast<std::size_t>(kLarge));
  EXPECT_TRUE(f->contains("t039999"));
  const double t_small = fastest_open_ms(small), t_large = fastest_open_ms(large);
  EXPECT_LT(t_large, 25.0 * std::max(t_small, 0.05))
      << t_small << " ms for " << kSmall << ", " << t_large << " ms for " << kLarge;

  // A duplicate name is found as fast (the last tensor repeats the first).
  write_bytes(small, raw_file(many_tensors_header(kSmall, "t000000"), std::string(kSmall, '\x5a')));
  write_bytes(large, raw_file(many_tensors_header(kLarge, "t000000"), std::string(kLarge, '\x5a')));
  expect_error(SafetensorsFile::open(large).status(), StatusCode::kDataLoss,
               "duplicate key 't000000'");
  const double d_small = fastest_open_ms(small, "duplicate key"),
               d_large = fastest_open_ms(large, "duplicate key");
  EXPECT_LT(d_large, 25.0 * std::max(d_small, 0.05)) << d_small << " ms, " << d_large << " ms";
}

// ---- the Llama layout
// -----------------------------------------------------------------------------

ModelSpec tiny() {
  return *model_preset("tiny");
}

// A checkpoint of random `dtype` values for `spec`, optionally without lm_head.weight.
Tensors llama_checkpoint(const ModelSpec& spec, DType dtype, bool tied, std::mt19937& rng) {
  Tensors t;
  for (const LlamaTensorSpec& s : llama_tensor_specs(spec)) {
    if (!(tied && s.name == kLlamaLmHead)) t.add(s.name, dtype, s.shape, rng);
  }
  return t;
}

TEST(LlamaLayout, NamesAndShapesOfTheTinyPreset) {
  const std::vector<LlamaTensorSpec> specs = llama_tensor_specs(tiny());  // 2 layers, 4/2 heads
  ASSERT_EQ(specs.size(), 1u + 2u * 9u + 2u);
  auto shape_of = [&](std::string_view name) {
    for (const LlamaTensorSpec& s : specs) {
      if (s.name == name) return s.shape;
    }
    return std::vector<std::int64_t>{-1};
  };
  using V = std::vector<std::int64_t>;
  EXPECT_EQ(specs.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(specs.back().name, "lm_head.weight");
  EXPECT_EQ(shape_of("model.embed_tokens.weight"), (V{512, 256}));
  EXPECT_EQ(shape_of("model.layers.1.input_layernorm.weight"), (V{256}));
  EXPECT_EQ(shape_of("model.layers.1.self_attn.q_proj.weight"), (V{256, 256}));
  EXPECT_EQ(shape_of("model.layers.1.self_attn.k_proj.weight"), (V{128, 256}));
  EXPECT_EQ(shape_of("model.layers.1.self_attn.v_proj.weight"), (V{128, 256}));
  EXPECT_EQ(shape_of("model.layers.1.self_attn.o_proj.weight"), (V{256, 256}));
  EXPECT_EQ(shape_of("model.layers.1.post_attention_layernorm.weight"), (V{256}));
  EXPECT_EQ(shape_of("model.layers.1.mlp.gate_proj.weight"), (V{512, 256}));
  EXPECT_EQ(shape_of("model.layers.1.mlp.up_proj.weight"), (V{512, 256}));
  EXPECT_EQ(shape_of("model.layers.1.mlp.down_proj.weight"), (V{256, 512}));
  EXPECT_EQ(shape_of("model.norm.weight"), (V{256}));
  EXPECT_EQ(shape_of("lm_head.weight"), (V{512, 256}));
}

TEST_F(SafetensorsTest, TinyLlamaCheckpointPassesTheCheck) {
  const ModelSpec spec = tiny();
  const Tensors t = llama_checkpoint(spec, DType::kBF16, /*tied=*/false, rng_);
  write_index(dir_, t, write_shards(dir_, t, 3));
  ASSERT_OK_AND_ASSIGN(const SafetensorsSet set, SafetensorsSet::open_dir(dir_.str()));
  ASSERT_OK_AND_ASSIGN(const LlamaCheckpoint w, check_llama_weights(set, spec, DType::kBF16));
  EXPECT_FALSE(w.tied_embeddings);
  ASSERT_EQ(w.layers.size(), 2u);
  expect_same(w.embed_tokens, *t.find("model.embed_tokens.weight"));
  expect_same(w.layers[1].k_proj, *t.find("model.layers.1.self_attn.k_proj.weight"));
  expect_same(w.layers[0].down_proj, *t.find("model.layers.0.mlp.down_proj.weight"));
  expect_same(w.layers[0].post_attn_norm,
              *t.find("model.layers.0.post_attention_layernorm.weight"));
  expect_same(w.final_norm, *t.find("model.norm.weight"));
  expect_same(w.lm_head, *t.find("lm_head.weight"));
}

TEST_F(SafetensorsTest, TiedCheckpointUsesTheEmbeddingsAsLmHead) {
  const ModelSpec spec = tiny();
  ASSERT_OK(write_safetensors(dir_.file("model.safetensors"),
                              llama_checkpoint(spec, DType::kF16, /*tied=*/true, rng_).list));
  ASSERT_OK_AND_ASSIGN(const SafetensorsSet set, SafetensorsSet::open_dir(dir_.str()));
  ASSERT_OK_AND_ASSIGN(const LlamaCheckpoint w, check_llama_weights(set, spec, DType::kF16));
  EXPECT_TRUE(w.tied_embeddings);
  EXPECT_EQ(w.lm_head.bytes.data(), w.embed_tokens.bytes.data());
  EXPECT_EQ(w.lm_head.name, "model.embed_tokens.weight");
}

TEST_F(SafetensorsTest, CheckReportsEveryProblemAtOnce) {
  const ModelSpec spec = tiny();
  Tensors t = llama_checkpoint(spec, DType::kBF16, /*tied=*/false, rng_);
  Tensors bad;
  for (const TensorToWrite& w : t.list) {
    if (w.name == "model.layers.1.mlp.up_proj.weight") continue;  // missing
    if (w.name == "model.layers.0.self_attn.k_proj.weight") {
      bad.add(w.name, DType::kBF16, {256, 256}, rng_);  // wrong shape
    } else if (w.name == "model.norm.weight") {
      bad.add(w.name, DType::kF32, {256}, rng_);  // wrong dtype
    } else if (w.name == "lm_head.weight") {
      bad.add(w.name, DType::kF16, {256, 512}, rng_);  // both
    } else {
      bad.list.push_back(w);
    }
  }
  ASSERT_OK(write_safetensors(dir_.file("model.safetensors"), bad.list));
  ASSERT_OK_AND_ASSIGN(const SafetensorsSet set, SafetensorsSet::open_dir(dir_.str()));
  const Status s = check_llama_weights(set, spec, DType::kBF16).status();
  expect_error(s, StatusCode::kInvalidArgument, "(4 problems)");
  expect_error(s, StatusCode::kInvalidArgument, "missing model.layers.1.mlp.up_proj.weight");
  expect_error(s, StatusCode::kInvalidArgument,
               "model.layers.0.self_attn.k_proj.weight: shape [256, 256], expected [128, 256]");
  expect_error(s, StatusCode::kInvalidArgument, "model.norm.weight: dtype f32, expected bf16");
  expect_error(s, StatusCode::kInvalidArgument,
               "lm_head.weight: shape [256, 512], expected [512, 256]; dtype f16, expected bf16");
}

TEST_F(SafetensorsTest, CheckCapsALongReport) {
  ModelSpec spec = tiny();
  ASSERT_OK(write_safetensors(dir_.file("model.safetensors"),
                              llama_checkpoint(spec, DType::kBF16, /*tied=*/false, rng_).list));
  ASSERT_OK_AND_ASSIGN(const SafetensorsSet set, SafetensorsSet::open_dir(dir_.str()));
  spec.hidden = 128;  // nearly every tensor has the wrong shape now
  const Status s = check_llama_weights(set, spec, DType::kBF16).status();
  expect_error(s, StatusCode::kInvalidArgument, "more");
  EXPECT_EQ(std::count(s.message().begin(), s.message().end(), '\n'), 21) << s.message();
}

TEST_F(SafetensorsTest, CheckReportsUnsupportedDtypesAndBadSpecs) {
  const std::string header = R"({"model.norm.weight":{"dtype":"I32","shape":[256],)"
                             R"("data_offsets":[0,1024]}})";
  write_bytes(dir_.file("model.safetensors"), raw_file(header, std::string(1024, '\0')));
  ASSERT_OK_AND_ASSIGN(const SafetensorsSet set, SafetensorsSet::open_dir(dir_.str()));
  const Status s = check_llama_weights(set, tiny(), DType::kBF16).status();
  expect_error(s, StatusCode::kInvalidArgument, "'model.norm.weight'");
  expect_error(s, StatusCode::kInvalidArgument, "I32");
  ModelSpec no_vocab = tiny();
  no_vocab.vocab = 0;
  expect_error(check_llama_weights(set, no_vocab, DType::kBF16).status(),
               StatusCode::kInvalidArgument, "vocab");
}

}  // namespace
}  // namespace tierkv
