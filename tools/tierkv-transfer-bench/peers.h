// The peers tierkv's copy paths are measured against, called directly on the CUDA runtime and
// cuBLASLt (cuda_peers.cc). Builds without CUDA get stubs that return Unimplemented
// (no_cuda_peers.cc). Every CUDA or cuBLAS error becomes a Status naming the call, file and line.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "tierkv/backend.h"

namespace tierkv::transfer_bench {

// Makes the backend's device current for the calling thread (the CUDA runtime keeps it per
// thread); OK at once on other backends. Call it first in a thread that queues CUDA peer calls.
Status use_backend_device(const Backend& backend);

// One cudaMemcpyAsync per run on `stream` (a CUDA backend stream), kind host-to-device when
// `to_device`, else device-to-host.
Status memcpy_each_run(Stream& stream, std::span<const CopyRun> runs, bool to_device);

// C[m x n] = A[m x k] . B[n x k]^T in bf16 with fp32 accumulation (the "TN" GEMM of a linear
// layer: rows of A are tokens, rows of B are output features).
struct GemmShape {
  int m = 2048;
  int n = 4096;
  int k = 14336;
  double flops() const { return 2.0 * m * n * k; }
};

class Gemm {
 public:
  virtual ~Gemm() = default;
  // Queues one GEMM on `stream`. Allocation-free.
  virtual Status enqueue(Stream& stream) = 0;
  // Runs one GEMM and compares `samples` entries of C with an fp64 dot product of the bf16
  // inputs. Returns ||C - ref|| / ||ref|| over the samples; DataLoss on NaN.
  virtual Result<double> check(Stream& stream, int samples) = 0;
  virtual const GemmShape& shape() const = 0;
};

// A cuBLASLt GEMM over fresh random bf16 inputs in [-1, 1), with the algorithm cuBLASLt's
// heuristic picks for a 32 MiB workspace. Unimplemented without CUDA or on another backend.
Result<std::unique_ptr<Gemm>> make_gemm(Backend& backend, Stream& stream, const GemmShape& shape,
                                        std::uint64_t seed);

}  // namespace tierkv::transfer_bench
