// Honest timing on a backend stream: device events around each repetition, recorded back to back
// so the host stays ahead of the device and launch gaps stay out of the figures; warm-up first;
// the median reported.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "tierkv/backend.h"

namespace tierkv::bench {

struct Timing {
  double median_ms = 0;
  double min_ms = 0;
  double max_ms = 0;
  int reps = 0;
};

double median(std::vector<double> v);

// Runs `enqueue` `warmup` times, then `reps` times between consecutive events, and returns the
// statistics of those intervals. `enqueue` only queues work on `stream`.
Result<Timing> time_events(Backend& backend, Stream& stream, int warmup, int reps,
                           const std::function<Status()>& enqueue);

// One progress line on stderr, rewritten in place on a terminal.
class Progress {
 public:
  Progress(std::string tool, bool quiet);
  void set_total(int total) { total_ = total; }
  void step(const std::string& what);
  void finish();

 private:
  std::string tool_;
  bool quiet_;
  bool tty_;
  int total_ = 0;
  int done_ = 0;
};

}  // namespace tierkv::bench
