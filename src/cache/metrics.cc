#include "tierkv/metrics.h"

#include <cstdint>
#include <cstdio>
#include <functional>
#include <new>
#include <string>
#include <tuple>
#include <vector>

namespace tierkv {
namespace {

std::string escape_label(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char ch : v) {
    if (ch == '\\') {
      out += "\\\\";
    } else if (ch == '"') {
      out += "\\\"";
    } else if (ch == '\n') {
      out += "\\n";
    } else {
      out += ch;
    }
  }
  return out;
}

std::string clean_prefix(std::string_view p) {
  if (p.empty()) return "tierkv";
  std::string out(p);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const char ch = out[i];
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' ||
                    ch == ':' || (i > 0 && ch >= '0' && ch <= '9');
    if (!ok) out[i] = '_';
  }
  return out;
}

std::string number(double v, int digits = 15) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

using Labels = std::vector<std::pair<std::string, std::string>>;

class Text {
 public:
  explicit Text(std::string_view prefix) : prefix_(clean_prefix(prefix)) {}

  void family(const std::string& name, const char* type, const char* help) {
    out_ += "# HELP " + prefix_ + "_" + name + " " + help + "\n";
    out_ += "# TYPE " + prefix_ + "_" + name + " " + type + "\n";
  }
  void sample(const std::string& name, const Labels& labels, const std::string& value) {
    out_ += prefix_ + "_" + name;
    if (!labels.empty()) {
      out_ += '{';
      for (std::size_t i = 0; i < labels.size(); ++i) {
        if (i > 0) out_ += ',';
        out_ += labels[i].first + "=\"" + escape_label(labels[i].second) + "\"";
      }
      out_ += '}';
    }
    out_ += ' ' + value + '\n';
  }
  void sample(const std::string& name, const Labels& labels, std::uint64_t v) {
    sample(name, labels, std::to_string(v));
  }
  // A family with one unlabelled sample.
  void single(const std::string& name, const char* type, const char* help, std::uint64_t v) {
    family(name, type, help);
    sample(name, {}, v);
  }
  // Latency in µs buckets (LatencyHistogram) as a Prometheus histogram in seconds.
  void histogram(const std::string& name, const Labels& labels, const LatencyHistogram& h) {
    std::uint64_t cumulative = 0;
    for (int i = 0; i + 1 < LatencyHistogram::kBuckets; ++i) {
      cumulative += h.counts[std::size_t(i)];
      Labels with_le = labels;
      // 2^i µs in seconds: at most 7 significant digits, so 9 print it exactly ("1e-06").
      with_le.emplace_back("le", number(double(std::uint64_t{1} << i) * 1e-6, 9));
      sample(name + "_bucket", with_le, cumulative);
    }
    Labels inf = labels;
    inf.emplace_back("le", "+Inf");
    sample(name + "_bucket", inf, h.count());
    sample(name + "_sum", labels, number(double(h.total_us) * 1e-6));
    sample(name + "_count", labels, h.count());
  }

  std::string take() { return std::move(out_); }

 private:
  std::string prefix_;
  std::string out_;
};

void cache_families(Text& t, const CacheStats& s) {
  t.single("matches_total", "counter", "Calls of Cache::match.", s.matches);
  t.single("loads_total", "counter", "Loads started (Cache::load).", s.loads);
  t.single("loaded_tokens_total", "counter", "Tokens loaded from the host tier.", s.loaded_tokens);
  t.single("missing_tokens_total", "counter",
           "Tokens a load asked for that had left the host tier (recomputed).", s.missing_tokens);
  t.single("load_errors_total", "counter", "Loads whose copies failed.", s.load_errors);
  t.single("loaded_bytes_total", "counter", "Bytes copied from the host tier into GPU pages.",
           s.bytes_loaded);
  t.single("shared_chunks_total", "counter",
           "Chunks loads copied device to device from a load in flight instead of over PCIe.",
           s.shared_chunks);
  t.single("shared_bytes_total", "counter", "Bytes of those chunks.", s.bytes_shared);
  t.single("saves_total", "counter", "Saves started (Cache::save).", s.saves);
  t.single("saved_chunks_total", "counter", "Chunks saves committed to the host tier.",
           s.saved_chunks);
  t.single("present_chunks_total", "counter", "Chunks saves found in the host tier already.",
           s.present_chunks);
  t.single("dropped_chunks_total", "counter", "Chunks saves dropped: no host slot was free.",
           s.dropped_chunks);
  t.single("failed_chunks_total", "counter", "Chunks of saves whose copies failed.",
           s.failed_chunks);
  t.single("save_errors_total", "counter", "Saves whose copies failed.", s.save_errors);
  t.single("saved_bytes_total", "counter", "Bytes copied from GPU pages into the host tier.",
           s.bytes_saved);
  t.family("transfers_total", "counter", "Host<->device transfers by the path that served them.");
  t.sample("transfers_total", {{"path", "copy-engine"}}, s.copy_engine_transfers);
  t.sample("transfers_total", {{"path", "sm-kernel"}}, s.sm_kernel_transfers);
  t.family("write_amplification", "gauge",
           "Bytes written to persistent lower tiers per byte saved into the host tier.");
  t.sample("write_amplification", {}, number(s.write_amplification));
}

void host_families(Text& t, const CacheStats& s) {
  t.single("host_budget_bytes", "gauge", "Host tier budget.", s.host_budget_bytes);
  t.single("host_allocated_bytes", "gauge", "Host tier slab size when fully pinned.",
           s.host_allocated_bytes);
  t.single("host_usable_bytes", "gauge", "Host tier bytes pinned and in use so far.",
           s.host_usable_bytes);
  t.single("host_slots", "gauge", "Host tier chunk slots.", std::uint64_t(s.host_slots));
  t.single("host_ready_slots", "gauge", "Host tier slots holding a committed chunk.",
           std::uint64_t(s.host_ready_slots));
  t.single("host_pinned_slots", "gauge", "Host tier slots pinned by loads, saves or promotions.",
           std::uint64_t(s.host_pinned_slots));
}

// One family over every lower tier: `value(tier)` per tier.
void per_tier(Text& t, const CacheStats& s, const std::string& name, const char* type,
              const char* help, const std::function<std::uint64_t(const TierStats&)>& value) {
  t.family(name, type, help);
  for (std::size_t i = 0; i < s.lower_tiers.size(); ++i) {
    const TierStats& ts = s.lower_tiers[i];
    t.sample(name, {{"tier", ts.name}, {"level", std::to_string(i)}}, value(ts));
  }
}

void tier_families(Text& t, const CacheStats& s) {
  if (s.lower_tiers.empty()) return;
  t.family("tier_info", "gauge", "Lower tiers, fastest first (level), and what they are.");
  for (std::size_t i = 0; i < s.lower_tiers.size(); ++i) {
    const TierStats& ts = s.lower_tiers[i];
    t.sample("tier_info",
             {{"tier", ts.name},
              {"level", std::to_string(i)},
              {"experiment", ts.experiment ? "true" : "false"},
              {"persistent", ts.persistent ? "true" : "false"}},
             1);
  }
  per_tier(t, s, "tier_hits_total", "counter", "Reads that found a verified record.",
           [](const TierStats& x) { return x.store.hits; });
  t.family("tier_misses_total", "counter", "Reads that found no usable record, by reason.");
  for (std::size_t i = 0; i < s.lower_tiers.size(); ++i) {
    const TierStats& ts = s.lower_tiers[i];
    for (std::size_t r = 0; r < std::size_t(MissReason::kCount); ++r) {
      t.sample("tier_misses_total",
               {{"tier", ts.name},
                {"level", std::to_string(i)},
                {"reason", miss_reason_name(MissReason(r))}},
               ts.store.misses[r]);
    }
  }
  const auto u = [](std::uint64_t TierStats::*f) {
    return [f](const TierStats& x) { return x.*f; };
  };
  const auto st = [](std::uint64_t StoreStats::*f) {
    return [f](const TierStats& x) { return x.store.*f; };
  };
  per_tier(t, s, "tier_writes_total", "counter", "Records the store wrote.",
           st(&StoreStats::writes));
  per_tier(t, s, "tier_store_write_failures_total", "counter", "Writes the store failed.",
           st(&StoreStats::write_failures));
  per_tier(t, s, "tier_erases_total", "counter", "Records erased.", st(&StoreStats::erases));
  per_tier(t, s, "tier_evictions_total", "counter", "Records the store's budget or TTL dropped.",
           st(&StoreStats::evictions));
  per_tier(t, s, "tier_read_bytes_total", "counter", "Payload bytes read.",
           st(&StoreStats::bytes_read));
  per_tier(t, s, "tier_written_bytes_total", "counter", "Payload bytes written.",
           st(&StoreStats::bytes_written));
  per_tier(t, s, "tier_records", "gauge", "Records held (0 when the store cannot tell).",
           st(&StoreStats::records));
  per_tier(t, s, "tier_held_bytes", "gauge", "Payload bytes held (0 when the store cannot tell).",
           st(&StoreStats::bytes_held));
  per_tier(t, s, "tier_budget_bytes", "gauge", "Store budget (0: unbounded or unknown).",
           st(&StoreStats::budget_bytes));
  for (const auto& [name, help, which] :
       {std::tuple{"tier_read_latency_seconds", "Latency of the store's reads.", 0},
        std::tuple{"tier_write_latency_seconds", "Latency of the store's writes.", 1}}) {
    t.family(name, "histogram", help);
    for (std::size_t i = 0; i < s.lower_tiers.size(); ++i) {
      const TierStats& ts = s.lower_tiers[i];
      t.histogram(name, {{"tier", ts.name}, {"level", std::to_string(i)}},
                  which == 0 ? ts.store.read_latency : ts.store.write_latency);
    }
  }
  per_tier(t, s, "tier_promoted_chunks_total", "counter",
           "Chunks read from the tier into host slots by promotions.",
           u(&TierStats::promoted_chunks));
  per_tier(t, s, "tier_promote_failures_total", "counter",
           "Reads of promotions that failed (each ended its promotion).",
           u(&TierStats::promote_failures));
  per_tier(t, s, "tier_write_queued_total", "counter", "Chunks handed to the write-down queue.",
           u(&TierStats::write_queued));
  per_tier(t, s, "tier_write_dropped_total", "counter",
           "Chunks dropped because the write-down queue was full.", u(&TierStats::write_dropped));
  per_tier(t, s, "tier_write_not_admitted_total", "counter",
           "Chunks a persistent tier did not take: seen fewer times than required.",
           u(&TierStats::write_not_admitted));
  per_tier(t, s, "tier_write_present_total", "counter",
           "Queued chunks the tier held already (not rewritten).", u(&TierStats::write_present));
  per_tier(t, s, "tier_write_evicted_total", "counter",
           "Queued chunks the host tier evicted before their write.", u(&TierStats::write_evicted));
  per_tier(t, s, "tier_written_chunks_total", "counter", "Chunks written down.",
           u(&TierStats::written_chunks));
  per_tier(t, s, "tier_write_failures_total", "counter", "Chunks whose write-down failed.",
           u(&TierStats::write_failures));
  per_tier(t, s, "tier_queue_depth", "gauge", "Chunks waiting in the write-down queue.",
           [](const TierStats& x) { return std::uint64_t(x.queue_depth); });
}

}  // namespace

std::string prometheus_text(const CacheStats& stats, std::string_view prefix) {
  try {
    Text t(prefix);
    cache_families(t, stats);
    host_families(t, stats);
    tier_families(t, stats);
    return t.take();
  } catch (const std::bad_alloc&) {
    return {};  // an empty exposition: no samples this time
  }
}

}  // namespace tierkv
