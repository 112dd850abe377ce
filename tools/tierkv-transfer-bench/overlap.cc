#include "overlap.h"

#include <chrono>
#include <memory>
#include <string>
#include <thread>

namespace tierkv::transfer_bench {
namespace {

using Events = std::vector<std::unique_ptr<Event>>;

Result<Events> make_events(Backend& backend, int n) {
  Events out;
  out.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    TIERKV_ASSIGN_OR_RETURN(auto e, backend.create_event());
    out.push_back(std::move(e));
  }
  return out;
}

// Queues load iterations whenever fewer than plan.depth are pending, until the foreground's last
// event completes. `queued` counts the iterations queued so far; load[j + 1] ends iteration j.
Status keep_loading(const OverlapPlan& plan, const std::function<Status()>& queue_one,
                    const Events& load, Event& fg_done, int& queued) {
  for (;;) {
    TIERKV_ASSIGN_OR_RETURN(const bool finished, fg_done.done());
    if (finished) return Status::Ok();
    const int oldest_kept = queued - plan.depth + 1;  // its end event must be done to queue more
    bool room = oldest_kept < 1;
    if (!room) {
      TIERKV_ASSIGN_OR_RETURN(room, load[static_cast<std::size_t>(oldest_kept)]->done());
    }
    if (!room) {
      std::this_thread::sleep_for(std::chrono::microseconds(20));
      continue;
    }
    if (queued == plan.max_iterations) {
      return resource_exhausted("the load ran " + std::to_string(queued) +
                                " iterations before the foreground finished: use fewer "
                                "foreground repetitions or a larger load iteration");
    }
    TIERKV_RETURN_IF_ERROR(queue_one());
  }
}

// Reads the events back into the figures.
Result<OverlapTiming> collect(Backend& backend, const Events& load, const Events& fg, int queued) {
  OverlapTiming t;
  t.iterations_total = queued;
  for (std::size_t i = 0; i + 1 < fg.size(); ++i) {
    TIERKV_ASSIGN_OR_RETURN(const double ms, backend.elapsed_ms(*fg[i], *fg[i + 1]));
    t.foreground_ms.push_back(ms);
  }
  TIERKV_ASSIGN_OR_RETURN(const double fg_begin, backend.elapsed_ms(*load[0], *fg.front()));
  TIERKV_ASSIGN_OR_RETURN(const double fg_end, backend.elapsed_ms(*load[0], *fg.back()));
  double first = -1, last = -1, begin = 0;
  for (int j = 0; j < queued; ++j) {
    TIERKV_ASSIGN_OR_RETURN(const double end,
                            backend.elapsed_ms(*load[0], *load[static_cast<std::size_t>(j) + 1]));
    if (begin >= fg_begin && end <= fg_end) {
      if (first < 0) first = begin;
      last = end;
      ++t.iterations_inside;
    }
    begin = end;
  }
  if (t.iterations_inside == 0) {
    return failed_precondition(
        "no load iteration fit inside the foreground window: use more foreground repetitions "
        "or a smaller load iteration");
  }
  t.inside_ms = last - first;
  return t;
}

}  // namespace

Result<OverlapTiming> run_overlap(Backend& backend, Stream& load_stream, Stream& fg_stream,
                                  const std::function<Status()>& load_iteration,
                                  const std::function<Status()>& foreground,
                                  const OverlapPlan& plan) {
  if (plan.foreground_reps < 1 || plan.start_after < 1 || plan.start_after > plan.lead_in ||
      plan.depth < 1 || plan.max_iterations < plan.lead_in)
    return invalid_argument("run_overlap: inconsistent plan");
  TIERKV_ASSIGN_OR_RETURN(const Events load, make_events(backend, plan.max_iterations + 1));
  TIERKV_ASSIGN_OR_RETURN(const Events fg, make_events(backend, plan.foreground_reps + 1));
  int queued = 0;
  auto queue_one = [&]() -> Status {
    TIERKV_RETURN_IF_ERROR(load_iteration());
    TIERKV_RETURN_IF_ERROR(load_stream.record(*load[static_cast<std::size_t>(queued) + 1]));
    ++queued;
    return Status::Ok();
  };

  TIERKV_RETURN_IF_ERROR(load_stream.record(*load[0]));
  for (int i = 0; i < plan.lead_in; ++i)
    TIERKV_RETURN_IF_ERROR(queue_one());
  TIERKV_RETURN_IF_ERROR(fg_stream.wait(*load[static_cast<std::size_t>(plan.start_after)]));
  TIERKV_RETURN_IF_ERROR(fg_stream.record(*fg[0]));
  for (int i = 0; i < plan.foreground_reps; ++i) {
    TIERKV_RETURN_IF_ERROR(foreground());
    TIERKV_RETURN_IF_ERROR(fg_stream.record(*fg[static_cast<std::size_t>(i) + 1]));
  }
  const Status loading = keep_loading(plan, queue_one, load, *fg.back(), queued);
  const Status fg_sync = fg_stream.synchronize();
  const Status load_sync = load_stream.synchronize();
  TIERKV_RETURN_IF_ERROR(loading);
  TIERKV_RETURN_IF_ERROR(fg_sync);
  TIERKV_RETURN_IF_ERROR(load_sync);
  return collect(backend, load, fg, queued);
}

}  // namespace tierkv::transfer_bench
