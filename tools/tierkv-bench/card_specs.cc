#include "card_specs.h"

#include <array>

namespace tierkv::bench {
namespace {

struct Entry {
  std::string_view match;  // substring of the driver's device name; first match wins
  CardSpec spec;
};

constexpr std::array kCards = {
    Entry{"GH200", {"GH200 (H100 96GB HBM3)", 4000, 5, 16, 900}},
    Entry{"H200", {"H200 SXM 141GB", 4800, 5, 16, 900}},
    Entry{"H100 80GB HBM3", {"H100 SXM5 80GB", 3350, 5, 16, 900}},
    Entry{"H100 NVL", {"H100 NVL 94GB", 3900, 5, 16, 600}},
    Entry{"H100 PCIe", {"H100 PCIe 80GB", 2000, 5, 16, 600}},
    Entry{"A100-SXM4-80GB", {"A100 SXM4 80GB", 2039, 4, 16, 600}},
    Entry{"A100-SXM4-40GB", {"A100 SXM4 40GB", 1555, 4, 16, 600}},
    Entry{"A100 80GB PCIe", {"A100 PCIe 80GB", 1935, 4, 16, 600}},
    Entry{"A100-PCIE-40GB", {"A100 PCIe 40GB", 1555, 4, 16, 600}},
    Entry{"L40S", {"L40S", 864, 4, 16, 0}},
    Entry{"NVIDIA L4", {"L4", 300, 4, 16, 0}},
    Entry{"RTX 4090", {"GeForce RTX 4090", 1008, 4, 16, 0}},
};

}  // namespace

std::optional<CardSpec> find_card_spec(std::string_view name) {
  for (const Entry& e : kCards) {
    if (name.find(e.match) != std::string_view::npos) return e.spec;
  }
  return std::nullopt;
}

std::optional<CardSpec> find_card_spec(const DeviceInfo& device) {
  if (device.backend != BackendKind::kCuda) return std::nullopt;
  return find_card_spec(device.name);
}

double pcie_gbps(int gen, int width) {
  // Transfer rate per lane (GT/s) and line-code efficiency of each generation.
  double rate = 0, efficiency = 128.0 / 130.0;
  switch (gen) {
    case 1:
      rate = 2.5, efficiency = 0.8;
      break;
    case 2:
      rate = 5.0, efficiency = 0.8;
      break;
    case 3:
      rate = 8.0;
      break;
    case 4:
      rate = 16.0;
      break;
    case 5:
      rate = 32.0;
      break;
    case 6:
      rate = 64.0, efficiency = 242.0 / 256.0;
      break;
    default:
      return 0;
  }
  return rate * width * efficiency / 8.0;
}

}  // namespace tierkv::bench
