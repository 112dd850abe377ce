#include "copy_impl.h"

#include "peers.h"

namespace tierkv::transfer_bench {

std::string ImplSpec::name() const {
  switch (impl) {
    case CopyImpl::kLargeCopy:
      return "one-large-copy";
    case CopyImpl::kMemcpyEach:
      return "cudaMemcpyAsync";
    case CopyImpl::kCopyEngine:
      return "tierkv-copy-engine";
    case CopyImpl::kSmKernel:
      return "tierkv-sm-kernel-" + std::to_string(blocks);
  }
  return "?";
}

std::string_view ImplSpec::path() const {
  return impl == CopyImpl::kSmKernel ? "sm-kernel" : "copy-engine";
}

std::vector<ImplSpec> scattered_impls(const std::vector<int>& sm_blocks) {
  std::vector<ImplSpec> out = {{CopyImpl::kMemcpyEach, 0}, {CopyImpl::kCopyEngine, 0}};
  for (int b : sm_blocks)
    out.push_back({CopyImpl::kSmKernel, b});
  return out;
}

Status enqueue_copy(Backend& backend, Stream& stream, const ImplSpec& impl,
                    std::span<const CopyRun> runs, bool to_device) {
  switch (impl.impl) {
    case CopyImpl::kLargeCopy:
      if (runs.size() != 1) return internal_error("one-large-copy needs exactly one run");
      return stream.copy(runs[0].dst, runs[0].src, runs[0].bytes);
    case CopyImpl::kMemcpyEach:
      if (backend.kind() == BackendKind::kCuda) return memcpy_each_run(stream, runs, to_device);
      for (const CopyRun& r : runs)
        TIERKV_RETURN_IF_ERROR(stream.copy(r.dst, r.src, r.bytes));
      return Status::Ok();
    case CopyImpl::kCopyEngine:
      return backend.copy_runs(runs, CopyPath::kCopyEngine, 1, stream);
    case CopyImpl::kSmKernel:
      return backend.copy_runs(runs, CopyPath::kSmKernel, impl.blocks, stream);
  }
  return invalid_argument("unknown copy implementation " +
                          std::to_string(static_cast<int>(impl.impl)));
}

}  // namespace tierkv::transfer_bench
