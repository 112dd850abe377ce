#include "replay_stats.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace tierkv::cli::replay {
namespace {

void add_to(TierTokens& sum, const std::string& tier, std::int64_t v) {
  for (auto& [name, total] : sum) {
    if (name == tier) {
      total += v;
      return;
    }
  }
  sum.emplace_back(tier, v);
}

}  // namespace

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto rank = std::max<std::size_t>(1, std::size_t(std::ceil(p / 100.0 * double(v.size()))));
  return v[std::min(rank, v.size()) - 1];
}

PolicySummary summarize_run(const PolicyRun& run, const std::string& workload) {
  PolicySummary s;
  s.policy = run.spec.label;
  s.workload = workload;
  s.requests = std::int64_t(run.records.size());
  std::vector<double> ttft, gaps;
  for (const RequestRecord& r : run.records) {
    ttft.push_back(r.ttft_ms());
    for (std::size_t k = 1; k < r.token_s.size(); ++k)
      gaps.push_back((r.token_s[k] - r.token_s[k - 1]) * 1e3);
    s.prompt_tokens += r.prompt_tokens;
    for (const auto& [tier, n] : r.prefill.hit_tokens)
      add_to(s.hit_tokens, tier, n);
    s.loaded_tokens += r.prefill.loaded_tokens;
    s.computed_tokens += r.prefill.computed_tokens;
    s.recomputed_tokens += r.prefill.recomputed_tokens;
    s.fallback_tokens += r.prefill.fallback_tokens;
  }
  s.ttft_p50 = percentile(ttft, 50);
  s.ttft_p90 = percentile(ttft, 90);
  s.ttft_p99 = percentile(ttft, 99);
  s.itl_p50 = percentile(gaps, 50);
  s.itl_p90 = percentile(gaps, 90);
  for (const auto& [tier, n] : s.hit_tokens)
    s.hit_rate.emplace_back(tier, s.prompt_tokens ? double(n) / double(s.prompt_tokens) : 0.0);
  s.bytes_moved = run.usage.bytes_moved;
  s.memory_bytes = run.usage.memory_bytes;
  s.saved_chunks = run.usage.saved_chunks;
  s.dropped_chunks = run.usage.dropped_chunks;
  s.save_errors = run.usage.save_errors;
  s.wall_s = run.wall_s;
  s.virtual_s = run.virtual_s;
  return s;
}

std::vector<Mismatch> compare_outputs(const std::vector<PolicyRun>& runs) {
  std::vector<Mismatch> out;
  if (runs.empty()) return out;
  const PolicyRun& ref = runs.front();
  for (std::size_t p = 1; p < runs.size(); ++p) {
    const PolicyRun& run = runs[p];
    for (std::size_t i = 0; i < ref.records.size() && i < run.records.size(); ++i) {
      const auto& want = ref.records[i].output;
      const auto& got = run.records[i].output;
      if (want == got) continue;
      Mismatch m{ref.records[i].id, run.spec.label, ref.spec.label, 0, -1, -1};
      while (std::size_t(m.position) < want.size() && std::size_t(m.position) < got.size() &&
             want[std::size_t(m.position)] == got[std::size_t(m.position)])
        ++m.position;
      if (std::size_t(m.position) < got.size()) m.got = got[std::size_t(m.position)];
      if (std::size_t(m.position) < want.size()) m.want = want[std::size_t(m.position)];
      out.push_back(m);
    }
  }
  return out;
}

std::string output_digest(const std::vector<std::int32_t>& tokens) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::int32_t t : tokens) {
    for (int b = 0; b < 4; ++b) {
      h ^= (std::uint32_t(t) >> (8 * b)) & 0xff;
      h *= 1099511628211ull;
    }
  }
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace tierkv::cli::replay
