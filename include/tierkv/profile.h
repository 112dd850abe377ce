// What this machine costs: the measured figures the warm-prefill planner and the transfer engine
// read, written by `tierkv calibrate` into a profile file so that they are measured once, not at
// every start.
//
// A profile holds, for one backend device and one model shape:
//   - each host<->device path's bandwidth by run size (the transfer engine's cost curves);
//   - each lower tier's read bandwidth and latency (its median and p99), by tier name;
//   - prefill compute time per layer as a function of new tokens and prefix length, on a grid;
//   - the fraction by which a load beside prefill slows that prefill down.
// Figures between grid points are interpolated; beyond the grid they are extrapolated linearly
// in the number of new tokens and in the prefix length (the costs of GEMMs and of attention).
//
// File format: JSON (docs/profile-format.md), with a version, the device name and the model shape
// it was measured for; loading a profile of another device or model shape is refused
// (FailedPrecondition), so stale figures are never used silently.
//
// Default location: $XDG_CACHE_HOME/tierkv/profile-<device>-<model>.json, or
// ~/.cache/tierkv/profile-<device>-<model>.json (default_profile_path). Tools take --profile PATH to
// name another; the library itself reads no environment.
//
// Thread safety: a CostProfile is a value; its const methods may be called from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tierkv/backend.h"
#include "tierkv/model_spec.h"
#include "tierkv/status.h"

namespace tierkv {

inline constexpr std::int32_t kProfileVersion = 1;

// Bandwidth by run size: (run bytes, GB/s), run bytes ascending; interpolated in log2(bytes).
struct BandwidthCurve {
  std::vector<std::pair<double, double>> points;
  double fixed_us = 0;  // per transfer
  double gbps(double run_bytes) const;
  // Microseconds to move `bytes` in runs of `run_bytes`.
  double us(double bytes, double run_bytes) const;
};

// A tier below host memory, as measured: reading a chunk of `chunk_bytes` into a host slot.
struct TierCost {
  std::string name;        // the store's capabilities().name
  double read_gbps = 0;    // sustained, `readers` chunks in flight at once
  std::int32_t readers = 1;  // reads in flight when measured (the cache's promote_threads)
  double latency_us = 0;   // median time to first byte of a chunk read
  double p99_latency_us = 0;
  bool experiment = false;  // the bandwidth-limited stand-in, not a real tier
};

// Prefill compute per layer, in microseconds, on a grid of (new tokens, prefix tokens).
struct PrefillCostGrid {
  std::vector<std::int32_t> new_tokens;     // ascending
  std::vector<std::int32_t> prefix_tokens;  // ascending
  std::vector<double> us;                   // [new][prefix], row-major
  // One layer of `n` new tokens over `prefix` cached tokens: bilinear inside the grid, linear in
  // n and in prefix beyond it. 0 for an empty grid.
  double layer_us(std::int32_t n, std::int32_t prefix) const;
};

struct CostProfile {
  std::int32_t version = kProfileVersion;
  std::string device;       // DeviceInfo::name of the device measured
  std::string backend;      // "cpu" / "cuda"
  std::string model_shape;  // ModelSpec::name plus its KV shape, e.g. "llama-3.1-8b/32x8x128xbf16"
  std::string measured_at;  // ISO 8601 date
  BandwidthCurve host_to_device_copy_engine, host_to_device_sm_kernel;
  BandwidthCurve device_to_host_copy_engine, device_to_host_sm_kernel;
  double copy_engine_compute_slowdown = 0;  // a load on the copy engines beside prefill
  double sm_kernel_compute_slowdown = 0;
  // The fraction by which a copy-engine load is slower while prefill runs beside it (the
  // compute's memory traffic competes with the copies). 0 in profiles written before it existed.
  double load_slowdown_beside_compute = 0;
  std::vector<TierCost> tiers;  // lower tiers, by name
  PrefillCostGrid prefill;
  std::int32_t num_layers = 0;  // of the model measured

  // The tier of that name, or nullptr.
  const TierCost* tier(std::string_view name) const;
  // Whether the figures a planner needs are there (non-empty curves and grid).
  bool complete() const;
};

// "<name>/<layers>x<kv heads>x<head dim>x<dtype>": what a profile's prefill figures depend on.
std::string model_shape_name(const ModelSpec& model);

// The default path for this device and model (see the top of this file). `home` and
// `xdg_cache_home` are the caller's environment ("" when unset).
std::string default_profile_path(const DeviceInfo& device, const ModelSpec& model,
                                 std::string_view home, std::string_view xdg_cache_home);

// Reads a profile. NotFound when the file is absent; DataLoss for a malformed file (naming what
// is wrong); FailedPrecondition when it was measured on another device or for another model shape
// than `device` / `model` (pass nullptr to skip that check).
Result<CostProfile> load_profile(const std::string& path, const DeviceInfo* device,
                                 const ModelSpec* model);
// Writes it atomically (a temporary file renamed over `path`), creating the directory.
Status save_profile(const CostProfile& profile, const std::string& path);

}  // namespace tierkv
