// Timing work beside a load that streams for as long as the work runs.
//
// The load is a sequence of equal iterations on its own stream, each followed by an event; the
// host keeps a few iterations queued until the foreground work's last event has completed, so the
// load covers the whole foreground window however much the two slow each other down. The
// foreground starts only after the load is running. The load's figure counts only iterations
// that began and ended inside the foreground window, over the time from the first one's start to
// the last one's end (queueing gaps included): what the load achieved while the work ran.
#pragma once

#include <functional>
#include <vector>

#include "tierkv/backend.h"

namespace tierkv::transfer_bench {

struct OverlapPlan {
  int foreground_reps = 200;  // foreground calls, each timed by its own pair of events
  int lead_in = 16;           // load iterations queued before the foreground is queued
  int start_after = 2;        // the foreground waits until this many iterations have finished
  int depth = 4;              // load iterations kept queued afterwards
  int max_iterations = 4096;  // beyond this the run fails (the foreground outlasted the plan)
};

struct OverlapTiming {
  std::vector<double> foreground_ms;  // each foreground call's interval
  int iterations_inside = 0;          // load iterations wholly inside the foreground window
  double inside_ms = 0;               // start of the first of them to the end of the last
  int iterations_total = 0;
};

// `load_iteration` queues one load iteration on `load_stream`; `foreground` queues one call on
// `fg_stream`. Both must only queue work. Returns when both streams are idle.
Result<OverlapTiming> run_overlap(Backend& backend, Stream& load_stream, Stream& fg_stream,
                                  const std::function<Status()>& load_iteration,
                                  const std::function<Status()>& foreground,
                                  const OverlapPlan& plan);

}  // namespace tierkv::transfer_bench
