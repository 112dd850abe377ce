#include "tierkv/profile.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace tierkv {
namespace {

using nlohmann::json;

// Linear interpolation of y over ascending x, flat beyond the ends.
double interpolate(const std::vector<std::pair<double, double>>& pts, double x) {
  if (pts.empty()) return 0;
  if (x <= pts.front().first) return pts.front().second;
  if (x >= pts.back().first) return pts.back().second;
  const auto hi = std::lower_bound(pts.begin(), pts.end(), x,
                                   [](const auto& p, double v) { return p.first < v; });
  const auto lo = hi - 1;
  const double t = (x - lo->first) / (hi->first - lo->first);
  return lo->second + t * (hi->second - lo->second);
}

// Index i with axis[i] <= v < axis[i + 1], clamped to [0, size - 2], and the fraction of the way
// from axis[i] to axis[i + 1] (below 0 or above 1 beyond the ends: linear extrapolation).
std::pair<std::size_t, double> locate(const std::vector<std::int32_t>& axis, double v) {
  if (axis.size() == 1) return {0, 0.0};
  std::size_t i = 0;
  while (i + 2 < axis.size() && v >= axis[i + 1])
    ++i;
  return {i, (v - axis[i]) / double(axis[i + 1] - axis[i])};
}

json curve_json(const BandwidthCurve& c) {
  json pts = json::array();
  for (const auto& [bytes, gbps] : c.points)
    pts.push_back({bytes, gbps});
  return {{"fixed_us", c.fixed_us}, {"points", pts}};
}

Status parse_curve(const json& j, BandwidthCurve& c, const char* what) {
  if (!j.is_object() || !j.contains("points") || !j["points"].is_array()) {
    return data_loss(std::string("profile: ") + what + " has no points");
  }
  c.fixed_us = j.value("fixed_us", 0.0);
  c.points.clear();
  for (const json& p : j["points"]) {
    if (!p.is_array() || p.size() != 2 || !p[0].is_number() || !p[1].is_number() ||
        p[0].get<double>() <= 0 || p[1].get<double>() <= 0) {
      return data_loss(std::string("profile: ") + what + " has a point that is not [bytes, GB/s]");
    }
    c.points.emplace_back(p[0].get<double>(), p[1].get<double>());
  }
  if (!std::is_sorted(c.points.begin(), c.points.end()))
    return data_loss(std::string("profile: ") + what + " points are not ascending");
  return Status::Ok();
}

Status parse_axis(const json& j, std::vector<std::int32_t>& axis, const char* what) {
  if (!j.is_array() || j.empty()) return data_loss(std::string("profile: prefill.") + what + " is empty");
  axis.clear();
  for (const json& v : j) {
    if (!v.is_number_integer() || v.get<std::int64_t>() < 0 || v.get<std::int64_t>() > INT32_MAX)
      return data_loss(std::string("profile: prefill.") + what + " holds a value out of range");
    axis.push_back(v.get<std::int32_t>());
  }
  if (!std::is_sorted(axis.begin(), axis.end()) ||
      std::adjacent_find(axis.begin(), axis.end()) != axis.end()) {
    return data_loss(std::string("profile: prefill.") + what + " is not strictly ascending");
  }
  return Status::Ok();
}

Status parse(const json& j, CostProfile& p) {
  if (!j.is_object()) return data_loss("profile: not a JSON object");
  p.version = j.value("version", 0);
  if (p.version != kProfileVersion) {
    return data_loss("profile: version " + std::to_string(p.version) + ", this build reads " +
                     std::to_string(kProfileVersion) + " (run tierkv calibrate again)");
  }
  p.device = j.value("device", "");
  p.backend = j.value("backend", "");
  p.model_shape = j.value("model_shape", "");
  p.measured_at = j.value("measured_at", "");
  p.num_layers = j.value("num_layers", 0);
  const json& t = j.value("transfer", json::object());
  TIERKV_RETURN_IF_ERROR(parse_curve(t.value("h2d_copy_engine", json()), p.host_to_device_copy_engine,
                                     "transfer.h2d_copy_engine"));
  TIERKV_RETURN_IF_ERROR(parse_curve(t.value("h2d_sm_kernel", json()), p.host_to_device_sm_kernel,
                                     "transfer.h2d_sm_kernel"));
  TIERKV_RETURN_IF_ERROR(parse_curve(t.value("d2h_copy_engine", json()), p.device_to_host_copy_engine,
                                     "transfer.d2h_copy_engine"));
  TIERKV_RETURN_IF_ERROR(parse_curve(t.value("d2h_sm_kernel", json()), p.device_to_host_sm_kernel,
                                     "transfer.d2h_sm_kernel"));
  const json& sd = j.value("compute_slowdown", json::object());
  p.copy_engine_compute_slowdown = sd.value("copy_engine", 0.0);
  p.sm_kernel_compute_slowdown = sd.value("sm_kernel", 0.0);
  p.load_slowdown_beside_compute = j.value("load_slowdown_beside_compute", 0.0);
  for (const double f : {p.copy_engine_compute_slowdown, p.sm_kernel_compute_slowdown,
                         p.load_slowdown_beside_compute}) {
    if (!std::isfinite(f) || f < 0 || f > 10)
      return data_loss("profile: a slowdown outside [0, 10]: " + std::to_string(f));
  }
  p.tiers.clear();
  for (const json& tj : j.value("tiers", json::array())) {
    TierCost c;
    c.name = tj.value("name", "");
    c.read_gbps = tj.value("read_gbps", 0.0);
    c.latency_us = tj.value("latency_us", 0.0);
    c.p99_latency_us = tj.value("p99_latency_us", 0.0);
    c.experiment = tj.value("experiment", false);
    c.readers = tj.value("readers", 1);
    if (c.readers < 1) return data_loss("profile: a tier measured with fewer than one reader");
    if (c.name.empty() || c.read_gbps <= 0) return data_loss("profile: a tier without name or bandwidth");
    p.tiers.push_back(c);
  }
  const json& pf = j.value("prefill", json::object());
  TIERKV_RETURN_IF_ERROR(parse_axis(pf.value("new_tokens", json()), p.prefill.new_tokens, "new_tokens"));
  TIERKV_RETURN_IF_ERROR(
      parse_axis(pf.value("prefix_tokens", json()), p.prefill.prefix_tokens, "prefix_tokens"));
  const json& us = pf.value("us", json());
  if (!us.is_array() || us.size() != p.prefill.new_tokens.size())
    return data_loss("profile: prefill.us needs one row per new_tokens value");
  p.prefill.us.clear();
  for (const json& row : us) {
    if (!row.is_array() || row.size() != p.prefill.prefix_tokens.size())
      return data_loss("profile: prefill.us needs one column per prefix_tokens value");
    for (const json& v : row) {
      if (!v.is_number() || v.get<double>() < 0 || !std::isfinite(v.get<double>()))
        return data_loss("profile: prefill.us holds a value that is not a time");
      p.prefill.us.push_back(v.get<double>());
    }
  }
  return Status::Ok();
}

std::string slug(std::string_view s) {
  std::string out;
  for (char c : s) out += std::isalnum(static_cast<unsigned char>(c)) ? char(std::tolower(c)) : '-';
  return out;
}

}  // namespace

double BandwidthCurve::gbps(double run_bytes) const {
  if (points.empty()) return 0;
  std::vector<std::pair<double, double>> logs;
  logs.reserve(points.size());
  for (const auto& [b, g] : points)
    logs.emplace_back(std::log2(b), g);
  return interpolate(logs, std::log2(std::max(run_bytes, 1.0)));
}

double BandwidthCurve::us(double bytes, double run_bytes) const {
  const double g = gbps(run_bytes);
  if (g <= 0) return 0;
  return fixed_us + bytes / (g * 1e3);  // GB/s = 1e3 bytes/µs
}

double PrefillCostGrid::layer_us(std::int32_t n, std::int32_t prefix) const {
  if (new_tokens.empty() || prefix_tokens.empty() || n <= 0) return 0;
  const auto [i, fi] = locate(new_tokens, n);
  const auto [k, fk] = locate(prefix_tokens, prefix);
  const std::size_t cols = prefix_tokens.size();
  const auto at = [&](std::size_t a, std::size_t b) {
    return us[std::min(a, new_tokens.size() - 1) * cols + std::min(b, cols - 1)];
  };
  const std::size_t i1 = new_tokens.size() > 1 ? i + 1 : i, k1 = cols > 1 ? k + 1 : k;
  const double low = at(i, k) + fk * (at(i, k1) - at(i, k));
  const double high = at(i1, k) + fk * (at(i1, k1) - at(i1, k));
  double v = low + fi * (high - low);
  if (new_tokens.size() == 1) v *= double(n) / std::max(1, new_tokens[0]);  // one row: linear in n
  return std::max(v, 0.0);
}

const TierCost* CostProfile::tier(std::string_view name) const {
  for (const TierCost& t : tiers)
    if (t.name == name) return &t;
  return nullptr;
}

bool CostProfile::complete() const {
  return !host_to_device_copy_engine.points.empty() && !prefill.us.empty() && num_layers > 0;
}

std::string model_shape_name(const ModelSpec& m) {
  return m.name + "/" + std::to_string(m.num_layers) + "x" + std::to_string(m.num_kv_heads) + "x" +
         std::to_string(m.head_dim) + "x" + std::string(dtype_name(m.kv_dtype));
}

std::string default_profile_path(const DeviceInfo& device, const ModelSpec& model,
                                 std::string_view home, std::string_view xdg_cache_home) {
  std::string dir = !xdg_cache_home.empty() ? std::string(xdg_cache_home)
                    : !home.empty()          ? std::string(home) + "/.cache"
                                             : std::string(".");
  return dir + "/tierkv/profile-" + slug(device.name) + "-" + slug(model.name) + ".json";
}

Result<CostProfile> load_profile(const std::string& path, const DeviceInfo* device,
                                 const ModelSpec* model) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return not_found("profile: no file at " + path);
  if (!std::filesystem::is_regular_file(path, ec))
    return invalid_argument("profile: " + path + " is not a regular file");
  std::ifstream in(path);
  if (!in) return io_error("profile: cannot read " + path);
  std::stringstream text;
  text << in.rdbuf();
  CostProfile p;
  try {
    const json j = json::parse(text.str());
    TIERKV_RETURN_IF_ERROR(parse(j, p).with_context(path));
  } catch (const json::exception& e) {
    return data_loss("profile: " + path + " is not valid JSON: " + e.what());
  }
  if (device != nullptr && p.device != device->name) {
    return failed_precondition("profile: " + path + " was measured on '" + p.device +
                               "', this is '" + device->name + "' (run tierkv calibrate here)");
  }
  if (model != nullptr && p.model_shape != model_shape_name(*model)) {
    return failed_precondition("profile: " + path + " was measured for " + p.model_shape +
                               ", this model is " + model_shape_name(*model) +
                               " (run tierkv calibrate --model ...)");
  }
  return p;
}

Status save_profile(const CostProfile& p, const std::string& path) {
  json tiers = json::array();
  for (const TierCost& t : p.tiers) {
    tiers.push_back({{"name", t.name},
                     {"read_gbps", t.read_gbps},
                     {"latency_us", t.latency_us},
                     {"p99_latency_us", t.p99_latency_us},
                     {"readers", t.readers},
                     {"experiment", t.experiment}});
  }
  json rows = json::array();
  const std::size_t cols = p.prefill.prefix_tokens.size();
  for (std::size_t i = 0; i < p.prefill.new_tokens.size(); ++i) {
    json row = json::array();
    for (std::size_t k = 0; k < cols; ++k)
      row.push_back(p.prefill.us[i * cols + k]);
    rows.push_back(row);
  }
  const json j = {
      {"version", kProfileVersion},
      {"device", p.device},
      {"backend", p.backend},
      {"model_shape", p.model_shape},
      {"measured_at", p.measured_at},
      {"num_layers", p.num_layers},
      {"transfer",
       {{"h2d_copy_engine", curve_json(p.host_to_device_copy_engine)},
        {"h2d_sm_kernel", curve_json(p.host_to_device_sm_kernel)},
        {"d2h_copy_engine", curve_json(p.device_to_host_copy_engine)},
        {"d2h_sm_kernel", curve_json(p.device_to_host_sm_kernel)}}},
      {"compute_slowdown",
       {{"copy_engine", p.copy_engine_compute_slowdown}, {"sm_kernel", p.sm_kernel_compute_slowdown}}},
      {"load_slowdown_beside_compute", p.load_slowdown_beside_compute},
      {"tiers", tiers},
      {"prefill",
       {{"new_tokens", p.prefill.new_tokens}, {"prefix_tokens", p.prefill.prefix_tokens}, {"us", rows}}}};
  std::error_code ec;
  const std::filesystem::path target(path);
  if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path(), ec);
  if (ec) return io_error("profile: cannot create " + target.parent_path().string() + ": " + ec.message());
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return io_error("profile: cannot write " + tmp);
    out << j.dump(2) << "\n";
    if (!out) return io_error("profile: writing " + tmp + " failed");
  }
  std::filesystem::rename(tmp, target, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    return io_error("profile: cannot rename into " + path);
  }
  return Status::Ok();
}

}  // namespace tierkv
