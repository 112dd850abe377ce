// How much host memory a pinned host tier may take: the machine's available memory and the
// container's limit, read from /proc and the cgroup file system, and the check of a budget against
// them.
//
// The reading is split from the check so that tests can feed any figures: parse_host_memory()
// takes the files' texts, read_host_memory() reads them under a root directory ("/" normally; a
// test may point it at a directory tree it wrote), and check_host_budget() only compares numbers.
// Nothing here reads the environment.
//
// Thread safety: every function may be called from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "tierkv/status.h"

namespace tierkv {

struct HostMemory {
  // /proc/meminfo MemAvailable: what the kernel can give without swapping. 0: unknown.
  std::uint64_t available = 0;
  // The container's memory limit: the smallest of cgroup v2 memory.max and cgroup v1
  // memory.limit_in_bytes found ("max" and v1's "no limit" value, 2^63 rounded to a page, mean
  // none). 0: no limit, or unknown.
  std::uint64_t limit = 0;
  std::string limit_source;  // the file that set `limit`, for messages
};

// The margin a host tier leaves below each figure: 1/16 of it, at least 256 MiB, for the rest of
// the process (the engine's own host buffers, the page cache it needs to read weights, the
// allocator's slack), which the budget does not count.
std::uint64_t host_memory_margin(std::uint64_t figure);

// From the texts of /proc/meminfo and of the cgroup limit files (each may be empty: unknown).
// Malformed text counts as unknown, never as a limit.
HostMemory parse_host_memory(std::string_view meminfo, std::string_view cgroup_v2_max,
                             std::string_view cgroup_v1_limit);

// Reads <root>/proc/meminfo and the cgroup limits of this process: for cgroup v2,
// <root>/sys/fs/cgroup<path>/memory.max of the process's cgroup (from <root>/proc/self/cgroup) and
// of each of its ancestors up to <root>/sys/fs/cgroup/memory.max; for cgroup v1 the same walk under
// <root>/sys/fs/cgroup/memory with memory.limit_in_bytes. The smallest limit found wins (a parent's
// limit binds its children). Files that are missing or unreadable are unknown.
HostMemory read_host_memory(const std::string& root = "/");

// OK when `bytes` of host memory fit under each known figure of `mem` minus its margin;
// ResourceExhausted naming the budget, the figure, its source and the margin otherwise. `what`
// names the consumer in the message ("host tier").
Status check_host_budget(std::uint64_t bytes, const HostMemory& mem, std::string_view what);

}  // namespace tierkv
