// Checking what a run will allocate against what the machine has, before allocating any of it,
// so that a request too large for this machine is refused with the sizes instead of exhausting
// the machine (or failing after part of the run).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "tierkv/backend.h"
#include "tierkv/status.h"

namespace tierkv::bench {

// What a run (or one case of it) will hold at once, by kind of memory.
struct MemoryNeed {
  std::size_t device = 0;  // MemoryKind::kDevice
  std::size_t host = 0;    // pinned and pageable host memory, and the tool's own host copies
};

// Host memory available for new allocations now: MemAvailable of /proc/meminfo (which counts
// reclaimable page cache), else the free pages sysconf reports. Unavailable when neither answers.
Result<std::size_t> host_available_bytes();

// Checks `need` against what is available now, keeping a tenth of it spare: device bytes against
// backend.free_memory(), host bytes against host_available_bytes(). On the cpu backend device
// memory is host memory, so the two are added and checked against the larger of free_memory()
// and host_available_bytes(). ResourceExhausted when it does not fit, naming `what`, the bytes
// needed, available and in all, and `advice` (the flags that make the run smaller).
Status check_memory(Backend& backend, const MemoryNeed& need, std::string_view what,
                    std::string_view advice);

// "1.50 GiB", "12.0 MiB", "512 B".
std::string format_bytes(std::size_t bytes);

}  // namespace tierkv::bench
