// Datasheet figures of known cards, to print beside what this machine measures.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "tierkv/backend.h"

namespace tierkv::bench {

struct CardSpec {
  std::string_view label;  // marketing name
  double hbm_gbps = 0;     // device memory bandwidth, GB/s
  int pcie_gen = 0;
  int pcie_width = 0;
  double nvlink_gbps = 0;  // total NVLink bandwidth, GB/s (0: none)
};

// The datasheet entry for a device name as the driver reports it, if known.
std::optional<CardSpec> find_card_spec(std::string_view device_name);
// The datasheet entry for the device a run used: none on the cpu backend, whose figures are
// never set against a GPU's.
std::optional<CardSpec> find_card_spec(const DeviceInfo& device);

// Theoretical bandwidth of a PCIe link in one direction, GB/s (0 when gen or width is unknown).
double pcie_gbps(int gen, int width);

}  // namespace tierkv::bench
