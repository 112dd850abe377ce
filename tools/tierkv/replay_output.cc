#include "replay_output.h"

#include <unistd.h>

#include <algorithm>
#include <map>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/memory_check.h"

namespace tierkv::cli::replay {
namespace {

using Json = nlohmann::ordered_json;

std::string fixed(double v, int digits) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// Milliseconds with three significant figures or more.
std::string ms(double v) {
  return fixed(v, v < 10 ? 2 : v < 100 ? 1 : 0);
}

// Rows of cells, the first row the header: the first column left-aligned, the others right.
std::string render(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()));
    for (std::size_t c = 0; c < row.size(); ++c)
      width[c] = std::max(width[c], row[c].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t c = 0; c < row.size(); ++c) {
      const std::string pad(width[c] - row[c].size(), ' ');
      line += c == 0 ? row[c] + pad : "  " + pad + row[c];
    }
    out += line + "\n";
  }
  return out;
}

const std::int64_t* find(const TierTokens& t, const std::string& tier) {
  for (const auto& [name, v] : t) {
    if (name == tier) return &v;
  }
  return nullptr;
}

// Tiers of every summary, in first-seen order (gpu, host, then the lower tiers).
std::vector<std::string> tiers_of(const std::vector<PolicySummary>& summaries) {
  std::vector<std::string> tiers;
  auto add = [&](const TierTokens& t) {
    for (const auto& kv : t) {
      if (std::find(tiers.begin(), tiers.end(), kv.first) == tiers.end()) tiers.push_back(kv.first);
    }
  };
  for (const PolicySummary& s : summaries) {
    add(s.hit_tokens);
    add(s.memory_bytes);
  }
  return tiers;
}

std::string latency_table(const std::vector<PolicySummary>& summaries) {
  std::vector<std::vector<std::string>> rows{{"policy", "TTFT p50 ms", "p90", "p99",
                                              "ITL p50 ms", "p90", "p50 vs recompute",
                                              "requests", "virtual s", "wall s"}};
  const PolicySummary* base = nullptr;
  for (const PolicySummary& s : summaries) {
    if (s.policy == "recompute") base = &s;
  }
  for (const PolicySummary& s : summaries) {
    std::string speedup = "-";
    if (base != nullptr && s.ttft_p50 > 0) speedup = fixed(base->ttft_p50 / s.ttft_p50, 2) + "x";
    rows.push_back({s.policy, ms(s.ttft_p50), ms(s.ttft_p90), ms(s.ttft_p99), ms(s.itl_p50),
                    ms(s.itl_p90), speedup, std::to_string(s.requests), fixed(s.virtual_s, 1),
                    fixed(s.wall_s, 1)});
  }
  return render(rows);
}

std::string tier_table(const std::vector<PolicySummary>& summaries) {
  const std::vector<std::string> tiers = tiers_of(summaries);
  std::vector<std::string> header{"policy"};
  for (const auto& t : tiers)
    header.push_back("hit " + t);
  for (const auto& t : tiers) {
    if (t != "gpu") header.push_back("read " + t);
  }
  for (const auto& t : tiers)
    header.push_back("memory " + t);
  header.push_back("loaded tok");
  header.push_back("recomputed tok");
  header.push_back("computed tok");
  header.push_back("saved chunks");
  std::vector<std::vector<std::string>> rows{header};
  for (const PolicySummary& s : summaries) {
    std::vector<std::string> row{s.policy};
    for (const auto& t : tiers) {
      const std::int64_t* h = find(s.hit_tokens, t);
      row.push_back(h && s.prompt_tokens ? fixed(100.0 * double(*h) / double(s.prompt_tokens), 1) + "%" : "-");
    }
    for (const auto& t : tiers) {
      if (t == "gpu") continue;
      const std::int64_t* b = find(s.bytes_moved, t);
      row.push_back(b ? bench::format_bytes(std::size_t(*b)) : "-");
    }
    for (const auto& t : tiers) {
      const std::int64_t* m = find(s.memory_bytes, t);
      row.push_back(m ? bench::format_bytes(std::size_t(*m)) : "-");
    }
    row.push_back(std::to_string(s.loaded_tokens));
    row.push_back(std::to_string(s.recomputed_tokens));
    row.push_back(std::to_string(s.computed_tokens));
    row.push_back(std::to_string(s.saved_chunks) +
                  (s.dropped_chunks + s.save_errors ? " (" + std::to_string(s.dropped_chunks) +
                                                          " dropped, " + std::to_string(s.save_errors) +
                                                          " failed)"
                                                    : ""));
    rows.push_back(std::move(row));
  }
  return render(rows);
}

Json tier_map(const TierTokens& t) {
  Json j = Json::object();
  for (const auto& [name, v] : t)
    j[name] = v;
  return j;
}

}  // namespace

ProgressBar::ProgressBar(bool quiet) : quiet_(quiet), tty_(isatty(STDERR_FILENO) != 0) {}

void ProgressBar::start(const std::string& workload, const std::string& policy,
                        std::int64_t total) {
  label_ = workload + " " + policy;
  last_quarter_ = -1;
  update(0, total, 0);
}

void ProgressBar::update(std::int64_t done, std::int64_t total, double virtual_s) {
  if (quiet_) return;
  if (tty_) {
    draw(done, total, virtual_s, false);
    return;
  }
  const int quarter = total > 0 ? int(4 * done / total) : 4;
  if (quarter == last_quarter_) return;
  last_quarter_ = quarter;
  draw(done, total, virtual_s, true);
}

void ProgressBar::draw(std::int64_t done, std::int64_t total, double virtual_s, bool newline) {
  constexpr int kWidth = 24;
  const int filled = total > 0 ? int(kWidth * done / total) : kWidth;
  std::string bar(std::size_t(filled), '#');
  bar += std::string(std::size_t(kWidth - filled), '.');
  std::fprintf(stderr, "%s[replay] %-44s [%s] %lld/%lld requests, virtual %.1f s%s",
               tty_ ? "\r\033[K" : "", label_.c_str(), bar.c_str(),
               static_cast<long long>(done), static_cast<long long>(total), virtual_s,
               newline ? "\n" : "");
  std::fflush(stderr);
}

void ProgressBar::finish(double wall_s) {
  if (quiet_) return;
  if (tty_) std::fprintf(stderr, "  done in %.1f s\n", wall_s);
  std::fflush(stderr);
}

std::string format_tables(const RunHeader& h, const std::string& workload,
                          const std::vector<PolicySummary>& summaries,
                          const std::vector<std::string>& tier_lines) {
  std::ostringstream o;
  o << "== " << workload << " on the " << h.backend << " backend (" << h.device << "), model "
    << h.model << ", " << h.weights;
  if (h.small) o << "; small sizes: no GPU here, so the tiny model on the CPU backend";
  o << " ==\n";
  o << "Tiers:\n";
  for (const std::string& t : tier_lines)
    o << "  " << t << "\n";
  o << "\nTime to first token (arrival to first token) and inter-token latency, virtual time:\n";
  o << latency_table(summaries);
  o << "\nHits (share of prompt tokens per tier), bytes read from each tier, tier budgets:\n";
  o << tier_table(summaries);
  return o.str();
}

std::string format_mismatches(const std::vector<Mismatch>& mm, std::size_t policies,
                              std::size_t requests) {
  std::ostringstream o;
  if (mm.empty()) {
    o << "Outputs: identical across " << policies << " policies for all " << requests
      << " requests (greedy tokens compared one by one).\n";
    return o.str();
  }
  o << "Outputs: " << mm.size() << " MISMATCHES against " << mm.front().reference << ":\n";
  for (std::size_t k = 0; k < mm.size() && k < 20; ++k) {
    const Mismatch& m = mm[k];
    o << "  request " << m.id << " under " << m.policy << ": token " << m.position << " is "
      << m.got << ", expected " << m.want << "\n";
  }
  if (mm.size() > 20) o << "  ... and " << mm.size() - 20 << " more\n";
  return o.str();
}

std::string format_agreement(const std::vector<PolicyRun>& runs) {
  std::ostringstream o;
  if (runs.size() < 2) return o.str();
  const PolicyRun& ref = runs.front();
  o << "Outputs against " << ref.spec.label
    << " (reported, not checked, on this backend: bf16 results depend on the batch and chunk\n"
       "shapes each policy's schedule makes, and random weights leave the logits nearly flat,\n"
       "so greedy tokens part ways even where no KV was reused; the cache's copies are\n"
       "byte-exact and its KV is checked against the CPU reference with tolerances by the GPU\n"
       "test suite):\n";
  for (std::size_t p = 1; p < runs.size(); ++p) {
    const PolicyRun& run = runs[p];
    std::size_t same = 0, first = 0, cold = 0, cold_same = 0;
    const std::size_t n = std::min(ref.records.size(), run.records.size());
    for (std::size_t i = 0; i < n; ++i) {
      const auto& want = ref.records[i].output;
      const auto& got = run.records[i].output;
      same += want == got;
      first += !want.empty() && !got.empty() && want[0] == got[0];
      std::int64_t hits = 0;
      for (const auto& [tier, t] : run.records[i].prefill.hit_tokens)
        hits += t;
      if (hits == 0) {
        ++cold;
        cold_same += want == got;
      }
    }
    o << "  " << run.spec.label << ": " << same << " of " << n << " outputs identical, first token "
      << first << " of " << n << "; requests with no hit: " << cold_same << " of " << cold
      << " identical\n";
  }
  return o.str();
}

std::string request_json(const RequestRecord& r, const std::string& policy,
                         const std::string& workload) {
  Json j;
  j["kind"] = "request";
  j["policy"] = policy;
  j["workload"] = workload;
  j["id"] = r.id;
  j["session"] = r.session;
  j["turn"] = r.turn;
  j["arrival_s"] = r.arrival_s;
  j["prompt_tokens"] = r.prompt_tokens;
  j["hit_tokens"] = tier_map(r.prefill.hit_tokens);
  j["loaded_tokens"] = r.prefill.loaded_tokens;
  j["recomputed_tokens"] = r.prefill.recomputed_tokens;
  j["computed_tokens"] = r.prefill.computed_tokens;
  j["ttft_ms"] = std::max(0.0, r.ttft_ms());
  const double itl = r.mean_itl_ms();
  j["itl_ms"] = itl < 0 ? Json(nullptr) : Json(itl);
  j["output_tokens"] = r.output.size();
  j["plan"] = r.prefill.plan;
  j["why"] = r.prefill.why;
  j["prefill_ms"] = r.prefill_ms;
  j["fallback_tokens"] = r.prefill.fallback_tokens;
  j["output_digest"] = output_digest(r.output);
  return j.dump();
}

std::string summary_json(const PolicySummary& s, const RunHeader& h) {
  Json j;
  j["kind"] = "summary";
  j["policy"] = s.policy;
  j["workload"] = s.workload;
  j["requests"] = s.requests;
  j["ttft_ms"] = {{"p50", s.ttft_p50}, {"p90", s.ttft_p90}, {"p99", s.ttft_p99}};
  j["itl_ms"] = {{"p50", s.itl_p50}, {"p90", s.itl_p90}};
  Json rate = Json::object();
  for (const auto& [tier, v] : s.hit_rate)
    rate[tier] = v;
  j["hit_rate"] = rate;
  j["bytes"] = tier_map(s.bytes_moved);
  j["memory_bytes"] = tier_map(s.memory_bytes);
  j["wall_s"] = s.wall_s;
  j["backend"] = h.backend;
  j["model"] = h.model;
  j["device"] = h.device;
  j["virtual_s"] = s.virtual_s;
  j["loaded_tokens"] = s.loaded_tokens;
  j["recomputed_tokens"] = s.recomputed_tokens;
  j["computed_tokens"] = s.computed_tokens;
  j["fallback_tokens"] = s.fallback_tokens;
  j["saved_chunks"] = s.saved_chunks;
  j["small"] = h.small;
  return j.dump();
}

std::vector<std::string> timeline_json(const RequestRecord& r, const std::string& policy) {
  std::vector<std::string> out;
  for (const TimelineEntry& e : r.prefill.timeline) {
    Json j;
    j["kind"] = "timeline";
    j["policy"] = policy;
    j["id"] = r.id;
    j["lane"] = e.lane == TimelineEntry::Lane::kLoad ? "load" : "compute";
    j["layer"] = e.layer;
    j["chunk"] = e.chunk;
    j["start_ms"] = e.start_ms;
    j["end_ms"] = std::max(e.start_ms, e.end_ms);
    out.push_back(j.dump());
  }
  return out;
}

std::string max_rate_json(const MaxRate& m, const RunHeader& h) {
  Json j;
  j["kind"] = "max_rate";
  j["policy"] = m.policy;
  j["workload"] = m.workload;
  j["ttft_p90_threshold_ms"] = m.threshold_ms;
  j["max_rate_scale"] = m.max_scale;
  j["failed_rate_scale"] = m.failed_scale;
  Json probes = Json::array();
  for (const auto& [scale, p90] : m.probes)
    probes.push_back({{"rate_scale", scale}, {"ttft_p90_ms", p90}});
  j["probes"] = probes;
  j["backend"] = h.backend;
  j["model"] = h.model;
  j["device"] = h.device;
  return j.dump();
}

std::string format_max_rates(const std::vector<MaxRate>& rates) {
  std::vector<std::vector<std::string>> rows{
      {"policy", "max arrival-rate scale", "p90 TTFT there ms", "first scale over", "probes"}};
  for (const MaxRate& m : rates) {
    double p90 = 0;
    for (const auto& [scale, v] : m.probes) {
      if (scale == m.max_scale) p90 = v;
    }
    rows.push_back({m.policy, m.max_scale > 0 ? fixed(m.max_scale, 2) + "x" : "< " + fixed(m.failed_scale, 2) + "x",
                    m.max_scale > 0 ? ms(p90) : "-",
                    m.failed_scale > 0 ? fixed(m.failed_scale, 2) + "x" : "none tried",
                    std::to_string(m.probes.size())});
  }
  std::string threshold = rates.empty() ? "" : ms(rates.front().threshold_ms);
  return "Highest arrival-rate scale (x the workload's arrival rate) at which p90 TTFT stays under " +
         threshold + " ms:\n" + render(rows);
}

namespace {

std::string escape_label(const std::string& v) {
  std::string out;
  for (char ch : v) {
    if (ch == '\\' || ch == '"') out += '\\';
    if (ch == '\n') {
      out += "\\n";
      continue;
    }
    out += ch;
  }
  return out;
}

}  // namespace

std::string merge_prometheus(
    const std::vector<std::pair<std::vector<std::pair<std::string, std::string>>, std::string>>&
        expositions) {
  struct Family {
    std::string help, type;
    std::vector<std::string> samples;
  };
  std::vector<std::string> order;
  std::map<std::string, Family> families;
  for (const auto& [labels, text] : expositions) {
    std::string extra;
    for (const auto& [k, v] : labels)
      extra += (extra.empty() ? "" : ",") + k + "=\"" + escape_label(v) + "\"";
    std::string family;  // the family of the samples that follow (its last TYPE line)
    std::size_t at = 0;
    while (at < text.size()) {
      const std::size_t end = std::min(text.find('\n', at), text.size());
      const std::string line = text.substr(at, end - at);
      at = end + 1;
      if (line.empty()) continue;
      if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
        const std::size_t name_end = line.find(' ', 7);
        family = line.substr(7, name_end == std::string::npos ? std::string::npos : name_end - 7);
        if (!families.count(family)) order.push_back(family);
        Family& f = families[family];
        (line[2] == 'H' ? f.help : f.type) = line;
        continue;
      }
      if (line[0] == '#') continue;
      const std::size_t brace = line.find('{'), space = line.find(' ');
      std::string sample;
      if (brace != std::string::npos && brace < space) {
        sample = line.substr(0, brace + 1) + extra + (line[brace + 1] == '}' ? "" : ",") +
                 line.substr(brace + 1);
      } else {
        sample = line.substr(0, space) + "{" + extra + "}" + line.substr(space);
      }
      if (!families.count(family)) order.push_back(family);
      families[family].samples.push_back(std::move(sample));
    }
  }
  std::string out;
  for (const std::string& name : order) {
    const Family& f = families[name];
    if (!f.help.empty()) out += f.help + "\n";
    if (!f.type.empty()) out += f.type + "\n";
    for (const std::string& s : f.samples)
      out += s + "\n";
  }
  return out;
}

}  // namespace tierkv::cli::replay
