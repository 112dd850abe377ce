// Host<->device KV transfers: one layer's KV per length from pinned and from pageable memory, and
// the ceilings of this machine (HBM copy, PCIe each way and both ways at once).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/measure.h"
#include "options.h"

namespace tierkv::bench {

struct TransferMeasurement {
  std::string what;       // kv_layer, hbm_copy, pcie_h2d, pcie_d2h, pcie_bidir
  std::string memory;     // pinned, pageable, device
  std::string direction;  // h2d, d2h, bidir, d2d
  std::size_t bytes = 0;  // bytes moved (for hbm_copy: read + written)
  std::int32_t kv_tokens = 0;
  double us = 0;

  double gbps() const { return us > 0 ? bytes / us / 1e3 : 0; }
};

// The name `m` carries in the report and the JSON Lines. On the cuda backend the internal one
// (kv_layer, hbm_copy, pcie_h2d, pcie_d2h, pcie_bidir); on the cpu backend, which has neither HBM
// nor a PCIe link, the ceilings are device_copy, h2d_copy, d2h_copy and bidir_copy.
std::string_view row_name(const TransferMeasurement& m, BackendKind backend);

// For each length in opts.kv_lens: one layer's KV host->device from pinned, then pageable memory.
Result<std::vector<TransferMeasurement>> measure_kv_transfers(Backend& backend, Stream& stream,
                                                              const Options& opts);

// The HBM ceiling alone: a 1 GiB device-to-device copy (bytes read plus bytes written).
Result<TransferMeasurement> measure_hbm_copy(Backend& backend, Stream& stream, const Options& opts);

// Large copies that give this machine's ceilings.
Result<std::vector<TransferMeasurement>> measure_ceilings(Backend& backend, Stream& stream,
                                                          const Options& opts);

}  // namespace tierkv::bench
