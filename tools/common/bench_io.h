// Small pieces every benchmark tool needs: the run's date, the backend named by a flag, writing
// JSON Lines or a report to a file.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tierkv/backend.h"
#include "tierkv/status.h"

namespace tierkv::bench {

// Today in UTC, YYYY-MM-DD.
std::string utc_date();

// "cpu", "cuda", or "auto" (cuda when a device is visible, else cpu).
Result<BackendKind> backend_from_flag(std::string_view flag);

// Writes `lines`, each followed by a newline, to `path` (replacing it).
Status write_lines(const std::string& path, const std::vector<std::string>& lines);

}  // namespace tierkv::bench
