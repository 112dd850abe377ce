#include "tiers/host/host_memory.h"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>
#include <vector>

namespace tierkv {
namespace {

constexpr std::uint64_t kMiB = std::uint64_t{1} << 20;
// cgroup v1 writes "no limit" as 2^63 rounded down to a page; anything this large is no limit.
constexpr std::uint64_t kNoLimit = std::uint64_t{1} << 62;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

// A whole decimal number, or nothing.
bool parse_u64(std::string_view s, std::uint64_t& out) {
  s = trim(s);
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

// A cgroup limit file's value in bytes; 0 for "max", no limit or anything unreadable.
std::uint64_t parse_limit(std::string_view text) {
  std::uint64_t v = 0;
  if (!parse_u64(text, v) || v >= kNoLimit) return 0;
  return v;
}

std::string read_file(const std::string& path, bool& found) {
  std::ifstream f(path);
  found = f.good();
  if (!found) return {};
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string mib(std::uint64_t bytes) {
  return std::to_string(bytes / kMiB) + " MiB";
}

// The cgroup paths of this process from /proc/self/cgroup: v2's ("0::/path") and v1's memory
// controller's ("N:...memory...:/path"); empty when absent.
void cgroup_paths(std::string_view text, std::string& v2, std::string& v1) {
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    const std::size_t a = line.find(':');
    const std::size_t b = a == std::string_view::npos ? a : line.find(':', a + 1);
    if (b == std::string_view::npos) continue;
    const std::string_view id = line.substr(0, a), controllers = line.substr(a + 1, b - a - 1);
    const std::string_view path = trim(line.substr(b + 1));
    if (path.empty() || path.front() != '/') continue;
    if (id == "0" && controllers.empty()) {
      v2 = std::string(path);
      continue;
    }
    std::string_view rest = controllers;
    while (!rest.empty()) {
      const std::size_t comma = rest.find(',');
      if (rest.substr(0, comma) == "memory") v1 = std::string(path);
      rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    }
  }
}

// `path` ("/a/b") and its ancestors, deepest first, ending with "" (the mount's root).
std::vector<std::string> with_ancestors(std::string path) {
  std::vector<std::string> out;
  while (!path.empty() && path != "/") {
    if (path.find("/..") == std::string::npos) out.push_back(path);
    path.resize(path.rfind('/'));
  }
  out.emplace_back();
  return out;
}

}  // namespace

std::uint64_t host_memory_margin(std::uint64_t figure) {
  return std::max<std::uint64_t>(256 * kMiB, figure / 16);
}

HostMemory parse_host_memory(std::string_view meminfo, std::string_view cgroup_v2_max,
                             std::string_view cgroup_v1_limit) {
  HostMemory m;
  for (std::string_view rest = meminfo; !rest.empty();) {
    const std::size_t nl = rest.find('\n');
    const std::string_view line = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
    constexpr std::string_view kField = "MemAvailable:";
    if (line.substr(0, kField.size()) != kField) continue;
    std::string_view v = trim(line.substr(kField.size()));
    std::uint64_t scale = 1;
    if (v.size() > 2 && v.substr(v.size() - 2) == "kB") {
      scale = 1024;
      v = trim(v.substr(0, v.size() - 2));
    }
    std::uint64_t n = 0;
    if (parse_u64(v, n) && n <= ~std::uint64_t{0} / scale) m.available = n * scale;
  }
  const std::uint64_t v2 = parse_limit(cgroup_v2_max), v1 = parse_limit(cgroup_v1_limit);
  if (v2 > 0) {
    m.limit = v2;
    m.limit_source = "cgroup v2 memory.max";
  }
  if (v1 > 0 && (m.limit == 0 || v1 < m.limit)) {
    m.limit = v1;
    m.limit_source = "cgroup v1 memory.limit_in_bytes";
  }
  return m;
}

HostMemory read_host_memory(const std::string& root) {
  const std::string base =
      root.empty() || root.back() != '/' ? root : root.substr(0, root.size() - 1);
  bool found = false;
  HostMemory m = parse_host_memory(read_file(base + "/proc/meminfo", found), {}, {});
  std::string v2_path, v1_path;
  cgroup_paths(read_file(base + "/proc/self/cgroup", found), v2_path, v1_path);
  const auto consider = [&](const std::string& file) {
    const std::uint64_t limit = parse_limit(read_file(file, found));
    if (found && limit > 0 && (m.limit == 0 || limit < m.limit)) {
      m.limit = limit;
      m.limit_source = file;
    }
  };
  for (const std::string& p : with_ancestors(v2_path))
    consider(base + "/sys/fs/cgroup" + p + "/memory.max");
  for (const std::string& p : with_ancestors(v1_path))
    consider(base + "/sys/fs/cgroup/memory" + p + "/memory.limit_in_bytes");
  return m;
}

Status check_host_budget(std::uint64_t bytes, const HostMemory& mem, std::string_view what) {
  const auto check = [&](std::uint64_t figure, const std::string& name) -> Status {
    if (figure == 0) return Status::Ok();
    const std::uint64_t margin = host_memory_margin(figure);
    const std::uint64_t allowed = figure > margin ? figure - margin : 0;
    if (bytes <= allowed) return Status::Ok();
    return resource_exhausted(std::string(what) + ": " + std::to_string(bytes) + " bytes (" +
                              mib(bytes) + ") do not fit in " + name + " of " + mib(figure) +
                              " less a margin of " + mib(margin) + " (at most " + mib(allowed) +
                              "): lower the budget");
  };
  TIERKV_RETURN_IF_ERROR(check(mem.available, "the available memory (MemAvailable)"));
  return check(mem.limit, "the container's memory limit (" + mem.limit_source + ")");
}

}  // namespace tierkv
