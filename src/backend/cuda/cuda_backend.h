#pragma once

#include <memory>

#include "tierkv/backend.h"

namespace tierkv::cuda {

// Unavailable when device `device` does not exist or no driver is loaded.
Result<std::unique_ptr<Backend>> create_cuda_backend(int device);
// Visible CUDA devices; 0 when there is no driver or no device.
int device_count();

// PCIe link of the device with this PCI bus id ("0000:00:00.0"), read through NVML when the
// driver's library is present. Zeros when unknown.
struct PcieLink {
  int gen = 0, width = 0, max_gen = 0, max_width = 0;
};
PcieLink probe_pcie_link(const char* pci_bus_id);

}  // namespace tierkv::cuda

namespace tierkv {
class Ops;
}

namespace tierkv::cuda {

// The model operations on the CUDA backend (engine/ops.h). REQUIRES: backend is a CUDA backend.
Result<std::unique_ptr<Ops>> create_cuda_ops(Backend& backend);

}  // namespace tierkv::cuda
