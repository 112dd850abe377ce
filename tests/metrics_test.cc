// prometheus_text(): the cache's statistics, per tier, in the Prometheus text format. A small
// checker parses the output as a scraper would: every sample line is `name{labels} value`, HELP
// and TYPE come before a family's samples, no series repeats, histogram buckets are cumulative and
// end in +Inf equal to _count.
#include "tierkv/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "cache_harness.h"
#include "store_checks.h"
#include "tierkv/disk_store.h"
#include "tiers/memory/memory_store.h"

namespace tierkv {
namespace {

struct Sample {
  std::string name;
  std::vector<std::pair<std::string, std::string>> labels;
  double value = 0;
};

bool valid_name(const std::string& n) {
  if (n.empty()) return false;
  for (std::size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool ok = std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':' ||
                    (i > 0 && std::isdigit(static_cast<unsigned char>(c)));
    if (!ok) return false;
  }
  return true;
}

// Parses one sample line; an error message, or "" when it is well formed.
std::string parse_sample(const std::string& line, Sample& s) {
  std::size_t i = 0;
  while (i < line.size() && line[i] != '{' && line[i] != ' ')
    ++i;
  s.name = line.substr(0, i);
  if (!valid_name(s.name)) return "bad metric name";
  if (i < line.size() && line[i] == '{') {
    ++i;
    while (i < line.size() && line[i] != '}') {
      std::size_t eq = line.find('=', i);
      if (eq == std::string::npos) return "label without '='";
      const std::string key = line.substr(i, eq - i);
      if (!valid_name(key) || key.find(':') != std::string::npos) return "bad label name";
      i = eq + 1;
      if (i >= line.size() || line[i] != '"') return "label value not quoted";
      std::string value;
      for (++i; i < line.size() && line[i] != '"'; ++i) {
        if (line[i] == '\\') {
          if (++i >= line.size()) return "dangling escape";
          const char e = line[i];
          if (e == 'n') {
            value += '\n';
          } else if (e == '\\' || e == '"') {
            value += e;
          } else {
            return "bad escape";
          }
        } else {
          value += line[i];
        }
      }
      if (i >= line.size()) return "unterminated label value";
      s.labels.emplace_back(key, value);
      ++i;
      if (i < line.size() && line[i] == ',') ++i;
    }
    if (i >= line.size()) return "unterminated labels";
    ++i;
  }
  if (i >= line.size() || line[i] != ' ') return "no space before the value";
  const std::string v = line.substr(i + 1);
  if (v == "+Inf") {
    s.value = INFINITY;
  } else {
    char* end = nullptr;
    s.value = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0') return "value is not a number";
  }
  return "";
}

// Every rule of the format this test relies on; returns the problems found (empty: none) and the
// samples by series.
std::vector<std::string> check_exposition(const std::string& text,
                                          std::map<std::string, double>* series = nullptr) {
  std::vector<std::string> problems;
  const auto problem = [&](std::size_t line_no, const std::string& what) {
    problems.push_back("line " + std::to_string(line_no) + ": " + what);
  };
  std::map<std::string, std::string> type_of;  // family -> type
  std::set<std::string> help_seen, closed, seen_series;
  std::string current;  // the family whose samples are being read
  // Histogram checks: series without `le` -> (le, cumulative) in order, and _count.
  std::map<std::string, std::vector<std::pair<std::string, double>>> buckets;
  std::map<std::string, double> counts;
  if (text.empty() || text.back() != '\n') problem(0, "does not end with a newline");
  std::istringstream in(text);
  std::string line;
  for (std::size_t n = 1; std::getline(in, line); ++n) {
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
      std::istringstream w(line.substr(7));
      std::string family, rest;
      w >> family;
      std::getline(w, rest);
      if (!valid_name(family)) problem(n, "bad family name " + family);
      if (closed.count(family)) problem(n, "family " + family + " declared twice");
      if (line[2] == 'H') {
        help_seen.insert(family);
      } else {
        if (!help_seen.count(family)) problem(n, "TYPE before HELP for " + family);
        const std::string type = rest.empty() ? "" : rest.substr(1);
        if (type != "counter" && type != "gauge" && type != "histogram")
          problem(n, "unknown type " + type);
        type_of[family] = type;
        if (!current.empty()) closed.insert(current);
        current = family;
      }
      continue;
    }
    if (line.empty() || line[0] == '#') {
      problem(n, "unexpected line");
      continue;
    }
    Sample s;
    if (const std::string e = parse_sample(line, s); !e.empty()) {
      problem(n, e + ": " + line);
      continue;
    }
    std::string family = s.name;
    const bool histogram = type_of.count(current) && type_of[current] == "histogram";
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string sx(suffix);
      if (histogram && family.size() > sx.size() &&
          family.compare(family.size() - sx.size(), sx.size(), sx) == 0) {
        family.resize(family.size() - sx.size());
        break;
      }
    }
    if (family != current)
      problem(n, "sample of " + family + " outside its family (" + current + ")");
    std::string key = s.name + "{", base = "{";
    std::string le;
    for (const auto& [k, v] : s.labels) {
      key += k + "=" + v + ",";
      if (k == "le") {
        le = v;
      } else {
        base += k + "=" + v + ",";
      }
    }
    key += "}";
    base += "}";
    if (!seen_series.insert(key).second) problem(n, "series repeated: " + key);
    if (series != nullptr) (*series)[key] = s.value;
    if (histogram) {
      if (s.name == family + "_bucket") {
        if (le.empty()) problem(n, "bucket without le");
        buckets[family + base].emplace_back(le, s.value);
      } else if (s.name == family + "_count") {
        counts[family + base] = s.value;
      }
    } else if (type_of[current] == "counter" && s.value < 0) {
      problem(n, "negative counter");
    }
  }
  for (const auto& [h, bs] : buckets) {
    double last_le = -1, last = 0;
    for (const auto& [le, v] : bs) {
      const double bound = le == "+Inf" ? INFINITY : std::strtod(le.c_str(), nullptr);
      if (bound <= last_le) problems.push_back(h + ": le not increasing at " + le);
      if (v < last) problems.push_back(h + ": buckets not cumulative at le=" + le);
      last_le = bound;
      last = v;
    }
    if (bs.empty() || bs.back().first != "+Inf") problems.push_back(h + ": no +Inf bucket");
    if (!counts.count(h) || counts[h] != last) problems.push_back(h + ": +Inf != _count");
  }
  return problems;
}

TEST(Metrics, ACacheWithTiersExportsAValidExposition) {
  ASSERT_OK_AND_ASSIGN(auto backend, create_backend(BackendKind::kCpu));
  test::CacheHarness h(*backend, 256);
  test::TempDir dir;
  auto mem = MemoryStore::create();
  ASSERT_TRUE(mem.ok());
  auto disk = open_disk_store({.directory = dir.path(), .sync = DiskSync::kNone});
  ASSERT_TRUE(disk.ok()) << disk.status().to_string();
  CacheOptions o = h.options(4);
  o.transfer.calibrate = false;
  o.lower_tiers = {std::shared_ptr<Store>(std::move(mem).value()),
                   std::shared_ptr<Store>(std::move(disk).value())};
  o.write_down.persistent_admit_sightings = 1;
  ASSERT_OK_AND_ASSIGN(auto cache, Cache::create(*backend, o));
  ASSERT_OK_AND_ASSIGN(auto stream, backend->create_stream());
  std::mt19937_64 rng(41);
  const PromptKeys a = h.save_prompt(*cache, *stream, rng, 3);
  ASSERT_OK(cache->flush_lower_tiers());   // the writers' pins are gone
  h.save_prompt(*cache, *stream, rng, 4);  // evicts a from the host tier
  ASSERT_OK(cache->flush_lower_tiers());
  {
    ASSERT_OK_AND_ASSIGN(Promotion p, cache->promote(a, 0, 3 * test::CacheHarness::kChunk));
    ASSERT_OK(p.wait());
  }
  const std::string text = prometheus_text(cache->stats());
  std::map<std::string, double> series;
  const auto problems = check_exposition(text, &series);
  for (const auto& p : problems)
    ADD_FAILURE() << p;
  EXPECT_EQ(series["tierkv_saved_chunks_total{}"], 7);
  EXPECT_EQ(series["tierkv_tier_promoted_chunks_total{tier=memory,level=0,}"], 3);
  EXPECT_EQ(series["tierkv_tier_written_chunks_total{tier=disk,level=1,}"], 7);
  EXPECT_EQ(series["tierkv_tier_misses_total{tier=memory,level=0,reason=dropped,}"], 0);
  EXPECT_EQ(series["tierkv_tier_read_latency_seconds_count{tier=memory,level=0,}"], 3);
  EXPECT_EQ(series["tierkv_tier_info{tier=disk,level=1,experiment=false,persistent=true,}"], 1);
  EXPECT_EQ(series["tierkv_host_slots{}"], 4);
  EXPECT_DOUBLE_EQ(series["tierkv_write_amplification{}"], 1.0);
  std::size_t samples = 0;
  for (char c : text)
    samples += c == '\n';
  std::cout << "metrics: " << text.size() << " bytes, " << samples << " lines, " << series.size()
            << " series, " << problems.size() << " problems\n";
}

TEST(Metrics, LabelsAreEscapedAndPrefixesCleaned) {
  CacheStats st;
  TierStats t;
  t.name = "we\"ird\\tier\nname";
  t.store.read_latency.add(0.5);
  t.store.read_latency.add(3);
  t.store.read_latency.add(1e9);  // past the last bucket
  t.store.misses[std::size_t(MissReason::kCorrupt)] = 2;
  st.lower_tiers = {t, t};  // two tiers of one name stay apart by level
  const std::string text = prometheus_text(st, "my-app.cache");
  std::map<std::string, double> series;
  for (const auto& p : check_exposition(text, &series))
    ADD_FAILURE() << p;
  EXPECT_NE(text.find("my_app_cache_tier_hits_total"), std::string::npos);
  EXPECT_NE(text.find("tier=\"we\\\"ird\\\\tier\\nname\""), std::string::npos);
  EXPECT_EQ(series["my_app_cache_tier_misses_total{tier=" + t.name + ",level=1,reason=corrupt,}"],
            2);
  EXPECT_EQ(series["my_app_cache_tier_read_latency_seconds_bucket{tier=" + t.name +
                   ",level=0,le=1e-06,}"],
            1);
  EXPECT_EQ(
      series["my_app_cache_tier_read_latency_seconds_bucket{tier=" + t.name + ",level=0,le=+Inf,}"],
      3);
  EXPECT_TRUE(check_exposition(prometheus_text(CacheStats{}, "")).empty());
  // The checker itself catches what it must.
  EXPECT_FALSE(check_exposition("x_total 1\n").empty()) << "no TYPE";
  EXPECT_FALSE(check_exposition("# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
                                "h_bucket{le=\"+Inf\"} 1\nh_count 1\n")
                   .empty())
      << "not cumulative";
  EXPECT_FALSE(check_exposition("# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\n"
                                "h_count 1\n")
                   .empty())
      << "no +Inf";
  EXPECT_FALSE(check_exposition("# HELP c x\n# TYPE c counter\nc{a=\"1} 1\n").empty());
}

}  // namespace
}  // namespace tierkv
