#include "common/measure.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>

namespace tierkv::bench {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  const std::size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid), v.end());
  if (v.size() % 2 == 1) return v[mid];
  const double hi = v[mid];
  return (hi + *std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid))) / 2;
}

Result<Timing> time_events(Backend& backend, Stream& stream, int warmup, int reps,
                           const std::function<Status()>& enqueue) {
  if (reps < 1) return invalid_argument("time_events: reps must be >= 1");
  for (int i = 0; i < warmup; ++i)
    TIERKV_RETURN_IF_ERROR(enqueue());
  TIERKV_RETURN_IF_ERROR(stream.synchronize());
  std::vector<std::unique_ptr<Event>> events;
  for (int i = 0; i <= reps; ++i) {
    TIERKV_ASSIGN_OR_RETURN(auto e, backend.create_event());
    events.push_back(std::move(e));
  }
  TIERKV_RETURN_IF_ERROR(stream.record(*events[0]));
  for (int i = 0; i < reps; ++i) {
    TIERKV_RETURN_IF_ERROR(enqueue());
    TIERKV_RETURN_IF_ERROR(stream.record(*events[static_cast<std::size_t>(i) + 1]));
  }
  TIERKV_RETURN_IF_ERROR(stream.synchronize());
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    TIERKV_ASSIGN_OR_RETURN(const double t, backend.elapsed_ms(*events[i], *events[i + 1]));
    ms.push_back(t);
  }
  Timing t;
  t.reps = reps;
  t.min_ms = *std::min_element(ms.begin(), ms.end());
  t.max_ms = *std::max_element(ms.begin(), ms.end());
  t.median_ms = median(std::move(ms));
  return t;
}

Progress::Progress(std::string tool, bool quiet)
    : tool_(std::move(tool)), quiet_(quiet), tty_(isatty(STDERR_FILENO) != 0) {}

void Progress::step(const std::string& what) {
  ++done_;
  if (quiet_) return;
  std::fprintf(stderr, "%s[%s %d/%d] %s%s", tty_ ? "\r\033[K" : "", tool_.c_str(), done_, total_,
               what.c_str(), tty_ ? "" : "\n");
  std::fflush(stderr);
}

void Progress::finish() {
  if (!quiet_ && tty_) std::fprintf(stderr, "\r\033[K");
}

}  // namespace tierkv::bench
