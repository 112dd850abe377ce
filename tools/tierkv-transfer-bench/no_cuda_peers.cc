// Peers in a build without CUDA: none can run.
#include "peers.h"

namespace tierkv::transfer_bench {

Status use_backend_device(const Backend&) {
  return Status::Ok();
}

Status memcpy_each_run(Stream&, std::span<const CopyRun>, bool) {
  return unimplemented("cudaMemcpyAsync per run needs a build with CUDA");
}

Result<std::unique_ptr<Gemm>> make_gemm(Backend&, Stream&, const GemmShape&, std::uint64_t) {
  return unimplemented("the GEMM needs a build with CUDA and cuBLASLt");
}

}  // namespace tierkv::transfer_bench
