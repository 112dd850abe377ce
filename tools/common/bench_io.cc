#include "common/bench_io.h"

#include <ctime>
#include <fstream>

namespace tierkv::bench {

std::string utc_date() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &utc);
  return buf;
}

Result<BackendKind> backend_from_flag(std::string_view flag) {
  if (flag == "auto") return cuda_device_count() > 0 ? BackendKind::kCuda : BackendKind::kCpu;
  return parse_backend_kind(flag);
}

Status write_lines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream out(path, std::ios::trunc);
  if (!out) return io_error("cannot open '" + path + "' for writing");
  for (const std::string& l : lines)
    out << l << '\n';
  out.flush();
  if (!out) return io_error("writing '" + path + "' failed");
  return Status::Ok();
}

}  // namespace tierkv::bench
