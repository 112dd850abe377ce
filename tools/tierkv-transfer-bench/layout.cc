#include "layout.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>

namespace tierkv::transfer_bench {
namespace {

std::byte* at(const Buffer& b, std::size_t offset) {
  return b.as<std::byte>() + offset;
}

std::string kib(std::size_t bytes) {
  return std::to_string(bytes >> 10) + " KiB";
}

// Whether every byte of [p, p + n) is `value`.
bool all_bytes(const std::byte* p, std::size_t n, std::uint8_t value) {
  std::byte row[4096];
  std::memset(row, value, sizeof row);
  for (std::size_t off = 0; off < n; off += sizeof row) {
    if (std::memcmp(p + off, row, std::min(sizeof row, n - off)) != 0) return false;
  }
  return true;
}

Status bad_run(const char* what, std::size_t run, std::size_t slot) {
  return data_loss(std::string(what) + ": run " + std::to_string(run) + " (pool slot " +
                   std::to_string(slot) + ") holds wrong bytes");
}

}  // namespace

std::string_view layout_case_name(LayoutCase c) {
  switch (c) {
    case LayoutCase::kLarge:
      return "large";
    case LayoutCase::kPages:
      return "pages";
    case LayoutCase::kChunkLayer:
      return "chunk_layer";
  }
  return "?";
}

std::string LayoutSpec::label() const {
  switch (kase) {
    case LayoutCase::kLarge:
      return "one run (" + std::to_string(run_bytes >> 20) + " MiB)";
    case LayoutCase::kPages:
      return "pages " + std::to_string(page_tokens) + " tok (" + kib(run_bytes) + ", K+V " +
             kib(2 * run_bytes) + ")";
    case LayoutCase::kChunkLayer:
      return "chunk layer " + std::to_string(page_tokens) + " tok (" + kib(run_bytes) + ")";
  }
  return "?";
}

Result<Arena> make_arena(Backend& backend, Stream& stream, std::size_t total_bytes,
                         std::size_t pool_bytes, std::uint64_t seed) {
  Arena a;
  a.total_bytes = total_bytes;
  TIERKV_ASSIGN_OR_RETURN(a.pool, backend.allocate(MemoryKind::kDevice, pool_bytes));
  TIERKV_ASSIGN_OR_RETURN(a.host_load, backend.allocate(MemoryKind::kPinnedHost, total_bytes));
  TIERKV_ASSIGN_OR_RETURN(a.host_save, backend.allocate(MemoryKind::kPinnedHost, total_bytes));
  TIERKV_ASSIGN_OR_RETURN(a.check, backend.allocate(MemoryKind::kPinnedHost, pool_bytes));
  // Random bytes made on the device (the same bits on every backend), then brought over.
  TIERKV_RETURN_IF_ERROR(
      backend.fill_uniform(a.pool.data(), total_bytes / 4, DType::kF32, seed, -1.0f, 1.0f, stream));
  TIERKV_RETURN_IF_ERROR(stream.copy(a.host_load.data(), a.pool.data(), total_bytes));
  TIERKV_RETURN_IF_ERROR(stream.synchronize());
  std::memset(a.host_save.data(), kPoison, total_bytes);
  return a;
}

Placement place(const LayoutSpec& layout, std::size_t bytes, std::size_t pool_bytes,
                std::uint64_t seed) {
  Placement p;
  p.run_bytes = layout.run_bytes;
  const std::size_t runs = bytes / layout.run_bytes;
  if (layout.kase == LayoutCase::kLarge) {
    p.load_slots = {0};
    p.save_slots = {1};
    return p;
  }
  std::vector<std::size_t> slots(pool_bytes / layout.run_bytes);
  std::iota(slots.begin(), slots.end(), std::size_t{0});
  std::mt19937_64 rng(seed ^ (layout.run_bytes * 0x9E3779B97F4A7C15ull));
  std::shuffle(slots.begin(), slots.end(), rng);
  p.load_slots.assign(slots.begin(), slots.begin() + static_cast<std::ptrdiff_t>(runs));
  p.save_slots.assign(slots.begin() + static_cast<std::ptrdiff_t>(runs),
                      slots.begin() + static_cast<std::ptrdiff_t>(2 * runs));
  return p;
}

std::vector<CopyRun> load_runs(const Placement& p, const Arena& a) {
  std::vector<CopyRun> runs;
  runs.reserve(p.load_slots.size());
  for (std::size_t i = 0; i < p.load_slots.size(); ++i) {
    runs.push_back(
        {at(a.pool, p.load_slots[i] * p.run_bytes), at(a.host_load, i * p.run_bytes), p.run_bytes});
  }
  return runs;
}

std::vector<CopyRun> save_runs(const Placement& p, const Arena& a) {
  std::vector<CopyRun> runs;
  runs.reserve(p.save_slots.size());
  for (std::size_t i = 0; i < p.save_slots.size(); ++i) {
    runs.push_back(
        {at(a.host_save, i * p.run_bytes), at(a.pool, p.save_slots[i] * p.run_bytes), p.run_bytes});
  }
  return runs;
}

Status poison_pool(Arena& a, Stream& stream) {
  return stream.fill(a.pool.data(), kPoison, a.pool.size());
}

Status randomize_pool(Backend& backend, Arena& a, Stream& stream, std::uint64_t seed) {
  return backend.fill_uniform(a.pool.data(), a.pool.size() / 4, DType::kF32, seed ^ 0x5A5Au, -1.0f,
                              1.0f, stream);
}

Status snapshot_pool(Arena& a, Stream& stream) {
  TIERKV_RETURN_IF_ERROR(stream.copy(a.check.data(), a.pool.data(), a.pool.size()));
  return stream.synchronize();
}

Status verify_load(const Placement& p, Arena& a, Stream& stream, bool untouched_poisoned) {
  TIERKV_RETURN_IF_ERROR(snapshot_pool(a, stream));
  const std::size_t slots = a.pool.size() / p.run_bytes;
  std::vector<bool> target(slots, false);
  for (std::size_t i = 0; i < p.load_slots.size(); ++i) {
    const std::size_t s = p.load_slots[i];
    target[s] = true;
    if (std::memcmp(at(a.check, s * p.run_bytes), at(a.host_load, i * p.run_bytes), p.run_bytes))
      return bad_run("load", i, s);
  }
  if (!untouched_poisoned) return Status::Ok();
  for (std::size_t s = 0; s < slots; ++s) {
    if (!target[s] && !all_bytes(at(a.check, s * p.run_bytes), p.run_bytes, kPoison)) {
      return data_loss("load: pool slot " + std::to_string(s) +
                       " was written although no run targets it");
    }
  }
  return Status::Ok();
}

Status verify_save(const Placement& p, const Arena& a) {
  for (std::size_t i = 0; i < p.save_slots.size(); ++i) {
    const std::size_t s = p.save_slots[i];
    if (std::memcmp(at(a.host_save, i * p.run_bytes), at(a.check, s * p.run_bytes), p.run_bytes))
      return bad_run("save", i, s);
  }
  return Status::Ok();
}

}  // namespace tierkv::transfer_bench
