// What `tierkv replay` shows and writes: the progress bar on stderr, the tables on stdout, and
// the JSON Lines records of bench/replay/README.md (request, summary, timeline; plus max_rate,
// which the plot script skips).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "replay_loop.h"
#include "replay_stats.h"

namespace tierkv::cli::replay {

// One bar per policy run, rewritten in place on a terminal; on anything else a line at the start,
// at every quarter and at the end. Silent when quiet.
class ProgressBar {
 public:
  explicit ProgressBar(bool quiet);
  void start(const std::string& workload, const std::string& policy, std::int64_t total);
  void update(std::int64_t done, std::int64_t total, double virtual_s);
  void finish(double wall_s);

 private:
  void draw(std::int64_t done, std::int64_t total, double virtual_s, bool newline);
  bool quiet_, tty_;
  std::string label_;
  int last_quarter_ = -1;
};

// What the tables' header says about the run.
struct RunHeader {
  std::string backend;  // "cpu" / "cuda"
  std::string device;   // the device's name
  std::string model;    // preset name
  std::string weights;  // "random weights (seed 1)" or the checkpoint directory
  bool small = false;   // the CPU backend's small sizes
};

// The table of one workload: latency per policy, then tiers per policy.
std::string format_tables(const RunHeader& header, const std::string& workload,
                          const std::vector<PolicySummary>& summaries,
                          const std::vector<std::string>& tier_lines);

// On a backend whose outputs are not reproducible across schedules (CUDA, bf16): per policy,
// how many requests' outputs and first tokens equal the reference run's, and the same among the
// requests that hit nothing (which shows the schedule's own share of the differences).
std::string format_agreement(const std::vector<PolicyRun>& runs);
std::string format_mismatches(const std::vector<Mismatch>& mismatches, std::size_t policies,
                              std::size_t requests);

// JSON Lines.
std::string request_json(const RequestRecord& r, const std::string& policy,
                         const std::string& workload);
std::string summary_json(const PolicySummary& s, const RunHeader& header);
std::vector<std::string> timeline_json(const RequestRecord& r, const std::string& policy);

// The max-rate search of one policy: probes are (arrival-rate scale, p90 TTFT ms).
struct MaxRate {
  std::string policy, workload;
  double threshold_ms = 0;
  double max_scale = 0;      // highest scale with p90 under the threshold; 0: none found
  double failed_scale = 0;   // lowest scale found over it; 0: none found
  std::vector<std::pair<double, double>> probes;
};
std::string max_rate_json(const MaxRate& m, const RunHeader& header);

// Several expositions in the Prometheus text format (prometheus_text) as one: each metric
// family's HELP and TYPE once, then its samples from every exposition, each sample given the
// exposition's labels (e.g. {workload="chat",policy="warm"}) in front of its own.
std::string merge_prometheus(
    const std::vector<std::pair<std::vector<std::pair<std::string, std::string>>, std::string>>&
        expositions);
std::string format_max_rates(const std::vector<MaxRate>& rates);

}  // namespace tierkv::cli::replay
