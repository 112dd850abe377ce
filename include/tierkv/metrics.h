// The cache's statistics in the Prometheus text exposition format (version 0.0.4), for a /metrics
// endpoint or a file a node exporter collects.
//
// Every metric family has its # HELP and # TYPE lines before its samples. Names are
// <prefix>_<what>, with _total for counters and _bytes / _seconds for units. What is exported:
//
//   cache:      matches, loads, loaded and missing tokens, saves, saved / present / dropped /
//               failed chunks, load and save errors (counters); bytes loaded and saved (counters);
//               transfers by path (counter, label path="copy-engine" | "sm-kernel");
//               write amplification (gauge)
//   host tier:  budget, allocated and usable (pinned so far) bytes; slots, ready (committed) and
//               pinned slots (gauges)
//   per lower tier, labels tier="<StoreCapabilities::name>" and level="<index in
//   CacheOptions::lower_tiers, 0 = fastest>" (two tiers of one kind stay apart):
//               store hits and misses (counters; misses by reason="absent" | "evicted" |
//               "corrupt" | "foreign" | "timeout" | "unavailable" | "dropped"), store writes,
//               write failures, erases, evictions, bytes read and written (counters); records and
//               bytes held, budget (gauges); read and write latency (histograms in seconds, one
//               bucket per power-of-two microseconds: le = 1e-06, 2e-06, ... , 4.194304, +Inf;
//               the store's buckets are half-open, so an operation of exactly le is counted in
//               the next bucket); promoted
//               chunks, promote failures, write-down queued / dropped / not admitted / present /
//               evicted / written / failed chunks (counters); queue depth (gauge); and an info
//               gauge tierkv_tier_info{..., experiment, persistent} = 1.
//
// Label values are escaped as the format requires (backslash, double quote, newline).
// Thread safety: a pure function of its arguments.
#pragma once

#include <string>
#include <string_view>

#include "tierkv/cache.h"

namespace tierkv {

// The text of `stats` with every name prefixed by `prefix` (letters, digits, '_' and ':'; another
// character is replaced by '_'; empty gives "tierkv"). Ends with a newline. Empty when out of
// memory (a valid exposition without samples).
std::string prometheus_text(const CacheStats& stats, std::string_view prefix = "tierkv");

}  // namespace tierkv
