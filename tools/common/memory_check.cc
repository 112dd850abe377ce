#include "common/memory_check.h"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace tierkv::bench {
namespace {

// A tenth of what is available stays spare: allocators round up, and the backend and the
// tool allocate small things of their own.
std::size_t usable(std::size_t available) {
  return available / 10 * 9;
}

std::size_t sysconf_bytes(int pages_name) {
  const long pages = ::sysconf(pages_name);
  const long page_size = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page_size <= 0) return 0;
  return std::size_t(pages) * std::size_t(page_size);
}

// A sum that cannot wrap (sizes come from the command line).
std::size_t add_saturated(std::size_t a, std::size_t b) {
  return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

Status refuse(std::string_view what, std::string_view kind, std::size_t need, std::size_t available,
              std::size_t total, std::string_view advice) {
  std::ostringstream m;
  m << what << " needs " << format_bytes(need) << " of " << kind << "; " << format_bytes(available)
    << " is available";
  if (total > 0) m << " (" << format_bytes(total) << " in all)";
  m << ", and a tenth of it is kept spare.";
  if (!advice.empty()) m << " " << advice;
  return resource_exhausted(m.str());
}

}  // namespace

std::string format_bytes(std::size_t bytes) {
  char buf[32];
  if (bytes >= (std::size_t{1} << 30)) {
    std::snprintf(buf, sizeof buf, "%.2f GiB", double(bytes) / double(std::size_t{1} << 30));
  } else if (bytes >= (std::size_t{1} << 20)) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", double(bytes) / double(std::size_t{1} << 20));
  } else if (bytes >= 1024) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", double(bytes) / 1024.0);
  } else {
    std::snprintf(buf, sizeof buf, "%zu B", bytes);
  }
  return buf;
}

Result<std::size_t> host_available_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  std::size_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  if (const std::size_t free = sysconf_bytes(_SC_AVPHYS_PAGES); free > 0) return free;
  return unavailable("cannot tell how much host memory is available (no /proc/meminfo)");
}

Status check_memory(Backend& backend, const MemoryNeed& need, std::string_view what,
                    std::string_view advice) {
  TIERKV_ASSIGN_OR_RETURN(const std::size_t device_free, backend.free_memory());
  TIERKV_ASSIGN_OR_RETURN(const std::size_t host_free, host_available_bytes());
  const std::size_t host_total = sysconf_bytes(_SC_PHYS_PAGES);
  if (backend.kind() == BackendKind::kCpu) {
    const std::size_t both = add_saturated(need.device, need.host);
    const std::size_t available = std::max(device_free, host_free);
    if (both > usable(available)) {
      return refuse(what, "host memory (the cpu backend's device memory is host memory)", both,
                    available, host_total, advice);
    }
    return Status::Ok();
  }
  if (need.device > usable(device_free)) {
    return refuse(what, "device memory", need.device, device_free, backend.info().total_memory,
                  advice);
  }
  if (need.host > usable(host_free)) {
    return refuse(what, "host memory", need.host, host_free, host_total, advice);
  }
  return Status::Ok();
}

}  // namespace tierkv::bench
