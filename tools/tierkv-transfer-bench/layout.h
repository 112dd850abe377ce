// The KV shapes and memory layouts the transfer cases move, and the buffers they move them in.
//
// A "page" is one layer's K (or V) for page_tokens tokens of Llama-3.1-8B: page_tokens x 8 KV
// heads x 128 dims x 2 B, so 32 KiB at 16 tokens. The device side is a pool of equal slots; a
// case's runs sit at slots drawn from a seeded random permutation, so neighbouring runs are never
// neighbours in the pool. The host side is contiguous, as in one chunk slot of the host tier.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tierkv/backend.h"

namespace tierkv::transfer_bench {

// Llama-3.1-8B: bytes of one token of one layer's K (or V): 8 KV heads x 128 dims x bf16.
inline constexpr std::size_t kKOrVBytesPerToken = 8 * 128 * 2;
// Tokens of one chunk, the unit of the tiers below the GPU (16 pages of 16 tokens).
inline constexpr int kChunkTokens = 256;

enum class LayoutCase : std::uint8_t {
  kLarge,       // one contiguous run of all the bytes: the ceiling
  kPages,       // pages at random pool slots
  kChunkLayer,  // one chunk's layer of K (or V), 256 tokens contiguous on both sides
};
std::string_view layout_case_name(LayoutCase c);  // "large", "pages", "chunk_layer"

struct LayoutSpec {
  LayoutCase kase = LayoutCase::kPages;
  int page_tokens = 0;        // tokens per run (0 for kLarge)
  std::size_t run_bytes = 0;  // bytes per run

  static LayoutSpec large(std::size_t total_bytes) { return {LayoutCase::kLarge, 0, total_bytes}; }
  static LayoutSpec pages(int tokens) {
    return {LayoutCase::kPages, tokens, static_cast<std::size_t>(tokens) * kKOrVBytesPerToken};
  }
  static LayoutSpec chunk_layer() {
    return {LayoutCase::kChunkLayer, kChunkTokens, std::size_t{kChunkTokens} * kKOrVBytesPerToken};
  }
  // Runs of `bytes` bytes, as pages (used where the brief's size is not a token count).
  static LayoutSpec runs_of(std::size_t bytes) {
    return {LayoutCase::kPages, static_cast<int>(bytes / kKOrVBytesPerToken), bytes};
  }
  // "pages 16 tok (32 KiB)" and the like.
  std::string label() const;
};

// The buffers every case shares. The pool holds at least two cases' worth of slots, so a load
// and a save can use disjoint slots at the same time.
struct Arena {
  Buffer pool;       // device: the page pool, pool_bytes
  Buffer host_load;  // pinned: random bytes that loads read, total_bytes
  Buffer host_save;  // pinned: where saves write, total_bytes
  Buffer check;      // pinned: copy of the pool for checking, pool_bytes
  std::size_t total_bytes = 0;
};

// Allocates the arena and fills host_load with random bytes (seeded).
Result<Arena> make_arena(Backend& backend, Stream& stream, std::size_t total_bytes,
                         std::size_t pool_bytes, std::uint64_t seed);

// Where a case's runs sit: run i of the load side is at pool slot load_slots[i], run i of the
// save side at save_slots[i]; both sides' host bytes are [i * run_bytes, (i+1) * run_bytes).
struct Placement {
  std::size_t run_bytes = 0;
  std::vector<std::size_t> load_slots;
  std::vector<std::size_t> save_slots;
};

// `bytes / run_bytes` runs each side. kLarge puts the load at slot 0 and the save at slot 1.
// REQUIRES: run_bytes divides bytes and pool_bytes; pool_bytes >= 2 * bytes.
Placement place(const LayoutSpec& layout, std::size_t bytes, std::size_t pool_bytes,
                std::uint64_t seed);

// host_load -> pool (a load) and pool -> host_save (a save) for a placement.
std::vector<CopyRun> load_runs(const Placement& p, const Arena& a);
std::vector<CopyRun> save_runs(const Placement& p, const Arena& a);

// Byte written over memory that a copy is expected to replace (or leave alone).
inline constexpr std::uint8_t kPoison = 0xA5;

// Sets the whole pool to kPoison (on `stream`).
Status poison_pool(Arena& a, Stream& stream);
// Fills the pool with random bytes unlike host_load's (on `stream`).
Status randomize_pool(Backend& backend, Arena& a, Stream& stream, std::uint64_t seed);
// Copies the pool into a.check and waits for it.
Status snapshot_pool(Arena& a, Stream& stream);

// After a load of p's load side: the pool (read back into a.check) holds host_load at every load
// slot and, when `untouched_poisoned`, kPoison everywhere else. DataLoss naming the first bad run.
Status verify_load(const Placement& p, Arena& a, Stream& stream, bool untouched_poisoned);
// After a save of p's save side: host_save equals a.check (a snapshot of the pool) at every save
// slot. DataLoss naming the first bad run.
Status verify_save(const Placement& p, const Arena& a);

}  // namespace tierkv::transfer_bench
