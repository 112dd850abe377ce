#include "copy_impl.h"

#include "peers.h"

namespace tierkv::transfer_bench {

std::string ImplSpec::name(BackendKind backend) const {
  const bool cpu = backend != BackendKind::kCuda;
  switch (impl) {
    case CopyImpl::kLargeCopy:
      return "one-large-copy";
    case CopyImpl::kMemcpyEach:
      return cpu ? "cpu-copy-per-run" : "cudaMemcpyAsync";
    case CopyImpl::kCopyEngine:
      return cpu ? "cpu-copy-engine-path" : "tierkv-copy-engine";
    case CopyImpl::kSmKernel:
      return (cpu ? "cpu-sm-kernel-path-" : "tierkv-sm-kernel-") + std::to_string(blocks);
    case CopyImpl::kEngine:
      return cpu ? "cpu-engine" : "tierkv-engine";
  }
  return "?";
}

std::string_view ImplSpec::path(BackendKind backend) const {
  if (backend != BackendKind::kCuda) return "cpu";
  if (impl == CopyImpl::kEngine) return copy_path_name(chosen);
  return impl == CopyImpl::kSmKernel ? "sm-kernel" : "copy-engine";
}

ImplSpec ImplSpec::resolved_for(std::span<const CopyRun> runs) const {
  ImplSpec r = *this;
  if (impl == CopyImpl::kEngine && engine != nullptr)
    r.chosen = engine->choose(runs, compute_beside);
  return r;
}

std::vector<ImplSpec> scattered_impls(const std::vector<int>& sm_blocks, TransferEngine* engine) {
  std::vector<ImplSpec> out = {{CopyImpl::kMemcpyEach, 0}, {CopyImpl::kCopyEngine, 0}};
  for (int b : sm_blocks)
    out.push_back({CopyImpl::kSmKernel, b});
  if (engine != nullptr) out.push_back({CopyImpl::kEngine, 0, engine, false});
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
    case CopyImpl::kEngine:
      if (impl.engine == nullptr) return internal_error("tierkv-engine needs an engine");
      return impl.engine->copy(runs, impl.compute_beside, stream).status();
  }
  return invalid_argument("unknown copy implementation " +
                          std::to_string(static_cast<int>(impl.impl)));
}

}  // namespace tierkv::transfer_bench
