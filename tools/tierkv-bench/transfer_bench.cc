#include "transfer_bench.h"

#include <algorithm>
#include <cstring>
#include <memory>

namespace tierkv::bench {
namespace {

// Times `bytes` from src to dst and checks that the bytes arrived.
Result<double> time_copy(Backend& backend, Stream& stream, const Options& opts, void* dst,
                         const void* src, std::size_t bytes) {
  TIERKV_ASSIGN_OR_RETURN(const Timing t, time_events(backend, stream, opts.warmup, opts.reps, [&] {
                            return stream.copy(dst, src, bytes);
                          }));
  return t.median_ms * 1e3;
}

Status fill_random(Backend& backend, Stream& stream, void* p, std::size_t bytes,
                   std::uint64_t seed) {
  return backend.fill_uniform(p, bytes / 4, DType::kF32, seed, -1.0f, 1.0f, stream);
}

// Compares device memory with host memory by copying it back.
Status expect_equal(Backend& backend, Stream& stream, const void* device, const void* host,
                    std::size_t bytes) {
  TIERKV_ASSIGN_OR_RETURN(Buffer back, backend.allocate(MemoryKind::kPinnedHost, bytes));
  TIERKV_RETURN_IF_ERROR(stream.copy(back.data(), device, bytes));
  TIERKV_RETURN_IF_ERROR(stream.synchronize());
  if (std::memcmp(back.data(), host, bytes) != 0)
    return internal_error("a timed copy delivered wrong bytes");
  return Status::Ok();
}

}  // namespace

std::string_view row_name(const TransferMeasurement& m, BackendKind backend) {
  if (backend == BackendKind::kCuda) return m.what;
  if (m.what == "hbm_copy") return "device_copy";
  if (m.what == "pcie_h2d") return "h2d_copy";
  if (m.what == "pcie_d2h") return "d2h_copy";
  if (m.what == "pcie_bidir") return "bidir_copy";
  return m.what;
}

Result<std::vector<TransferMeasurement>> measure_kv_transfers(Backend& backend, Stream& stream,
                                                              const Options& opts) {
  std::vector<TransferMeasurement> out;
  const std::size_t per_token = opts.model.kv_bytes_per_token_layer();
  const std::size_t max_bytes = per_token * std::size_t(opts.kv_lens.back());
  TIERKV_ASSIGN_OR_RETURN(Buffer pinned, backend.allocate(MemoryKind::kPinnedHost, max_bytes));
  TIERKV_ASSIGN_OR_RETURN(Buffer pageable, backend.allocate(MemoryKind::kPageableHost, max_bytes));
  TIERKV_ASSIGN_OR_RETURN(Buffer device, backend.allocate(MemoryKind::kDevice, max_bytes));
  TIERKV_RETURN_IF_ERROR(fill_random(backend, stream, device.data(), max_bytes, opts.seed));
  TIERKV_RETURN_IF_ERROR(stream.copy(pinned.data(), device.data(), max_bytes));
  TIERKV_RETURN_IF_ERROR(stream.synchronize());
  std::memcpy(pageable.data(), pinned.data(), max_bytes);  // touches every page before timing

  for (std::int32_t kv : opts.kv_lens) {
    const std::size_t bytes = per_token * std::size_t(kv);
    for (const Buffer* src : {&pinned, &pageable}) {
      TIERKV_RETURN_IF_ERROR(stream.fill(device.data(), 0, bytes));
      TIERKV_ASSIGN_OR_RETURN(const double us,
                              time_copy(backend, stream, opts, device.data(), src->data(), bytes));
      TIERKV_RETURN_IF_ERROR(expect_equal(backend, stream, device.data(), src->data(), bytes));
      out.push_back({"kv_layer", std::string(memory_kind_name(src->kind())), "h2d", bytes, kv, us});
    }
  }
  return out;
}

Result<TransferMeasurement> measure_hbm_copy(Backend& backend, Stream& stream,
                                             const Options& opts) {
  const bool gpu = backend.kind() == BackendKind::kCuda;
  TIERKV_ASSIGN_OR_RETURN(const std::size_t free, backend.free_memory());
  // A device-to-device copy, counting bytes read plus bytes written.
  const std::size_t hbm =
      std::min<std::size_t>(gpu ? std::size_t{1} << 30 : std::size_t{64} << 20, free / 4);
  TIERKV_ASSIGN_OR_RETURN(Buffer a, backend.allocate(MemoryKind::kDevice, hbm));
  TIERKV_ASSIGN_OR_RETURN(Buffer b, backend.allocate(MemoryKind::kDevice, hbm));
  TIERKV_RETURN_IF_ERROR(fill_random(backend, stream, a.data(), hbm, opts.seed + 1));
  TIERKV_ASSIGN_OR_RETURN(const double us,
                          time_copy(backend, stream, opts, b.data(), a.data(), hbm));
  return TransferMeasurement{"hbm_copy", "device", "d2d", 2 * hbm, 0, us};
}

Result<std::vector<TransferMeasurement>> measure_ceilings(Backend& backend, Stream& stream,
                                                          const Options& opts) {
  std::vector<TransferMeasurement> out;
  const bool gpu = backend.kind() == BackendKind::kCuda;
  TIERKV_ASSIGN_OR_RETURN(const std::size_t free, backend.free_memory());
  TIERKV_ASSIGN_OR_RETURN(TransferMeasurement hbm, measure_hbm_copy(backend, stream, opts));
  out.push_back(std::move(hbm));

  // PCIe: one large pinned copy each way, then both at once on two streams.
  const std::size_t pcie =
      std::min<std::size_t>(gpu ? std::size_t{256} << 20 : std::size_t{64} << 20, free / 8);
  TIERKV_ASSIGN_OR_RETURN(Buffer host_a, backend.allocate(MemoryKind::kPinnedHost, pcie));
  TIERKV_ASSIGN_OR_RETURN(Buffer host_b, backend.allocate(MemoryKind::kPinnedHost, pcie));
  TIERKV_ASSIGN_OR_RETURN(Buffer dev_a, backend.allocate(MemoryKind::kDevice, pcie));
  TIERKV_ASSIGN_OR_RETURN(Buffer dev_b, backend.allocate(MemoryKind::kDevice, pcie));
  TIERKV_RETURN_IF_ERROR(fill_random(backend, stream, dev_b.data(), pcie, opts.seed + 2));
  TIERKV_RETURN_IF_ERROR(stream.copy(host_a.data(), dev_b.data(), pcie));
  TIERKV_ASSIGN_OR_RETURN(const double h2d,
                          time_copy(backend, stream, opts, dev_a.data(), host_a.data(), pcie));
  TIERKV_RETURN_IF_ERROR(expect_equal(backend, stream, dev_a.data(), host_a.data(), pcie));
  out.push_back({"pcie_h2d", "pinned", "h2d", pcie, 0, h2d});
  TIERKV_ASSIGN_OR_RETURN(const double d2h,
                          time_copy(backend, stream, opts, host_b.data(), dev_b.data(), pcie));
  out.push_back({"pcie_d2h", "pinned", "d2h", pcie, 0, d2h});

  TIERKV_ASSIGN_OR_RETURN(auto other, backend.create_stream());
  TIERKV_ASSIGN_OR_RETURN(auto forked, backend.create_event());
  TIERKV_ASSIGN_OR_RETURN(auto joined, backend.create_event());
  auto both_ways = [&]() -> Status {
    TIERKV_RETURN_IF_ERROR(stream.record(*forked));
    TIERKV_RETURN_IF_ERROR(other->wait(*forked));
    TIERKV_RETURN_IF_ERROR(stream.copy(dev_a.data(), host_a.data(), pcie));
    TIERKV_RETURN_IF_ERROR(other->copy(host_b.data(), dev_b.data(), pcie));
    TIERKV_RETURN_IF_ERROR(other->record(*joined));
    return stream.wait(*joined);
  };
  TIERKV_ASSIGN_OR_RETURN(const Timing bidir,
                          time_events(backend, stream, opts.warmup, opts.reps, both_ways));
  out.push_back({"pcie_bidir", "pinned", "bidir", 2 * pcie, 0, bidir.median_ms * 1e3});
  return out;
}

}  // namespace tierkv::bench
