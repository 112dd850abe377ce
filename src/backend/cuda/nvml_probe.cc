// Reads the PCIe link through NVML, loaded at run time: the library ships with the driver, so a
// build must not depend on it, and machines without a driver simply get zeros.
#include <dlfcn.h>

#include "backend/cuda/cuda_backend.h"

namespace tierkv::cuda {
namespace {

using NvmlDevice = void*;
using NvmlInit = int (*)();
using NvmlShutdown = int (*)();
using NvmlByBusId = int (*)(const char*, NvmlDevice*);
using NvmlUint = int (*)(NvmlDevice, unsigned int*);

template <typename F>
F sym(void* lib, const char* name) {
  return reinterpret_cast<F>(dlsym(lib, name));
}

}  // namespace

PcieLink probe_pcie_link(const char* pci_bus_id) {
  PcieLink link;
  void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) return link;
  auto init = sym<NvmlInit>(lib, "nvmlInit_v2");
  auto shutdown = sym<NvmlShutdown>(lib, "nvmlShutdown");
  auto by_bus = sym<NvmlByBusId>(lib, "nvmlDeviceGetHandleByPciBusId_v2");
  auto gen = sym<NvmlUint>(lib, "nvmlDeviceGetCurrPcieLinkGeneration");
  auto width = sym<NvmlUint>(lib, "nvmlDeviceGetCurrPcieLinkWidth");
  auto max_gen = sym<NvmlUint>(lib, "nvmlDeviceGetMaxPcieLinkGeneration");
  auto max_width = sym<NvmlUint>(lib, "nvmlDeviceGetMaxPcieLinkWidth");
  if (init && shutdown && by_bus && gen && width && max_gen && max_width && init() == 0) {
    NvmlDevice dev = nullptr;
    if (by_bus(pci_bus_id, &dev) == 0) {
      unsigned int v = 0;
      if (gen(dev, &v) == 0) link.gen = static_cast<int>(v);
      if (width(dev, &v) == 0) link.width = static_cast<int>(v);
      if (max_gen(dev, &v) == 0) link.max_gen = static_cast<int>(v);
      if (max_width(dev, &v) == 0) link.max_width = static_cast<int>(v);
    }
    shutdown();
  }
  dlclose(lib);
  return link;
}

}  // namespace tierkv::cuda
