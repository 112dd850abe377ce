// tierkv-transfer-bench's options: one struct, filled from the command line in one place and
// checked before any device work starts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/memory_check.h"
#include "tierkv/backend.h"

namespace tierkv::transfer_bench {

struct Options {
  BackendKind backend = BackendKind::kCuda;
  int device = 0;
  std::size_t total_mib = 0;          // bytes moved per case [cuda: 256, cpu: 16]
  std::size_t pool_mib = 0;           // device page pool the pages are scattered over
  std::vector<int> page_tokens;       // tokens per page [16, 32, 64]
  std::vector<int> sm_blocks;         // block counts of the SM kernel [1, 8, 16, 132]
  std::vector<std::string> sections;  // pages, bidir, gemm
  int warmup = -1;                    // untimed runs per case [cuda: 3, cpu: 1]
  int reps = 0;                       // timed runs per case [cuda: 20, cpu: 3]
  int gemm_reps = 0;                  // GEMMs per timed window [200]
  std::size_t gemm_load_mib = 0;      // bytes of one load iteration beside the GEMM [32]
  std::uint64_t seed = 1;
  std::string json_path;  // '' = no JSON Lines
  bool quiet = false;

  bool has_section(const std::string& s) const;
  std::size_t total_bytes() const { return total_mib << 20; }
  std::size_t pool_bytes() const { return pool_mib << 20; }
  std::size_t gemm_load_bytes() const { return gemm_load_mib << 20; }
};

// Parses argv into `opts`. Returns the exit code when the program should stop now (help printed:
// 0; a bad flag reported on stderr: bench::kExitUsage), or -1 to go on.
int parse_options(int argc, char** argv, Options& opts);

// Fills what the user left unset with the defaults of `device`'s backend, then checks that the
// sizes fit together. InvalidArgument naming the flag when they do not.
Status finish_options(const DeviceInfo& device, Options& opts);

// What a run of finished `opts` allocates on `backend`: the device page pool (and the GEMM's
// operands and workspace when the gemm section runs on cuda), and pinned host memory for the load
// sources, the save targets and a copy of the pool to check against.
bench::MemoryNeed memory_need(const Options& opts, BackendKind backend);

}  // namespace tierkv::transfer_bench
