#include "replay/workload.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include <unistd.h>

namespace tierkv::replay {
namespace {

constexpr std::int32_t kVocab = 128256;

void expect_same(const Workload& a, const Workload& b) {
  ASSERT_EQ(a.requests.size(), b.requests.size());
  for (std::size_t i = 0; i < a.requests.size(); ++i) {
    const ReplayRequest& x = a.requests[i];
    const ReplayRequest& y = b.requests[i];
    ASSERT_EQ(x.id, y.id);
    ASSERT_EQ(x.session, y.session);
    ASSERT_EQ(x.turn, y.turn);
    ASSERT_EQ(x.arrival_s, y.arrival_s);  // bit for bit
    ASSERT_EQ(x.think_s, y.think_s);
    ASSERT_EQ(x.extends_session, y.extends_session);
    ASSERT_EQ(x.tokens, y.tokens);
    ASSERT_EQ(x.output_tokens, y.output_tokens);
    ASSERT_EQ(x.tenant, y.tenant);
  }
  EXPECT_EQ(a.dropped_turns, b.dropped_turns);
}

void expect_tokens_below(const Workload& w, std::int32_t vocab) {
  for (const ReplayRequest& r : w.requests)
    for (std::int32_t t : r.tokens) {
      ASSERT_GE(t, 0);
      ASSERT_LT(t, vocab);
    }
}

double mean(const std::vector<double>& v) {
  return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// ---- chat ----------------------------------------------------------------------------------

TEST(ChatWorkload, SameOptionsSameRequestsAndSeedMatters) {
  ChatOptions o;
  o.sessions = 40;
  auto a = chat_workload(o, kVocab);
  auto b = chat_workload(o, kVocab);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  ASSERT_TRUE(b.ok());
  expect_same(*a, *b);
  o.seed = 2;
  auto c = chat_workload(o, kVocab);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(a->requests[0].tokens, c->requests[0].tokens);
  EXPECT_NE(a->requests[0].arrival_s, c->requests[0].arrival_s);
}

TEST(ChatWorkload, FewerSessionsAreAPrefixOfMore) {
  ChatOptions o;
  o.sessions = 10;
  auto small = chat_workload(o, kVocab);
  o.sessions = 20;
  auto big = chat_workload(o, kVocab);
  ASSERT_TRUE(small.ok() && big.ok());
  ASSERT_LT(small->requests.size(), big->requests.size());
  Workload head = *big;
  head.requests.resize(small->requests.size());
  head.dropped_turns = small->dropped_turns;
  expect_same(*small, head);
}

TEST(ChatWorkload, SessionsShareTheSystemPromptAndTurnsExtendTheirSession) {
  ChatOptions o;
  o.sessions = 30;
  auto w = chat_workload(o, kVocab);
  ASSERT_TRUE(w.ok());
  expect_tokens_below(*w, kVocab);
  const auto& reqs = w->requests;
  const std::vector<std::int32_t> system(reqs[0].tokens.begin(),
                                         reqs[0].tokens.begin() + o.system_prompt_tokens);
  std::int64_t expected_session = -1;
  std::int32_t expected_turn = 0;
  double previous_arrival = 0;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    const ReplayRequest& r = reqs[i];
    EXPECT_EQ(r.id, static_cast<std::int64_t>(i));
    EXPECT_GE(r.output_tokens, o.answer_tokens.min);
    EXPECT_LE(r.output_tokens, o.answer_tokens.max);
    if (r.turn == 0) {
      ++expected_session;
      expected_turn = 0;
      EXPECT_EQ(r.session, expected_session);
      EXPECT_FALSE(r.extends_session);
      EXPECT_GE(r.arrival_s, previous_arrival);
      previous_arrival = r.arrival_s;
      ASSERT_GE(r.tokens.size(), system.size() + o.user_tokens.min);
      EXPECT_TRUE(std::equal(system.begin(), system.end(), r.tokens.begin()))
          << "session " << r.session << " does not start with the shared system prompt";
    } else {
      EXPECT_EQ(r.session, expected_session);
      EXPECT_EQ(r.turn, expected_turn);
      EXPECT_TRUE(r.extends_session);
      EXPECT_EQ(r.arrival_s, previous_arrival);  // the session's turn-0 arrival
      EXPECT_GE(r.tokens.size(), static_cast<std::size_t>(o.user_tokens.min));
      EXPECT_LE(r.tokens.size(), static_cast<std::size_t>(o.user_tokens.max));
    }
    ++expected_turn;
  }
  EXPECT_EQ(expected_session, o.sessions - 1);
}

TEST(ChatWorkload, DistributionsAsStated) {
  ChatOptions o;
  o.sessions = 4000;
  o.session_rate_per_s = 2.0;
  o.mean_turns = 4;
  o.max_turns = 100000;
  o.max_context_tokens = 0;
  o.user_tokens = {128, 0.8, 1, 1 << 30};
  o.answer_tokens = {192, 0.7, 1, 1 << 30};
  o.mean_think_s = 5.0;
  auto w = chat_workload(o, kVocab);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  EXPECT_EQ(w->dropped_turns, 0);
  std::vector<double> users, answers, thinks;
  double last_arrival = 0;
  for (const ReplayRequest& r : w->requests) {
    const auto user = static_cast<double>(r.tokens.size()) -
                      (r.turn == 0 ? o.system_prompt_tokens : 0);
    users.push_back(user);
    answers.push_back(r.output_tokens);
    if (r.turn > 0) thinks.push_back(r.think_s);
    last_arrival = std::max(last_arrival, r.arrival_s);
  }
  const double turns = static_cast<double>(w->requests.size()) / o.sessions;
  EXPECT_NEAR(turns, 4.0, 4.0 * 0.05);
  EXPECT_NEAR(last_arrival / o.sessions, 0.5, 0.5 * 0.05);  // Poisson: mean gap 1 / rate
  EXPECT_NEAR(mean(thinks), 5.0, 5.0 * 0.03);
  EXPECT_NEAR(median(users), 128, 128 * 0.03);
  EXPECT_NEAR(mean(users), 128 * std::exp(0.32), 128 * std::exp(0.32) * 0.03);
  EXPECT_NEAR(median(answers), 192, 192 * 0.03);
  EXPECT_NEAR(mean(answers), 192 * std::exp(0.245), 192 * std::exp(0.245) * 0.03);
}

TEST(ChatWorkload, EveryTurnFitsTheContextAndDroppedTurnsAreCounted) {
  ChatOptions o;
  o.sessions = 200;
  o.mean_turns = 10;
  auto w = chat_workload(o, kVocab);
  ASSERT_TRUE(w.ok());
  EXPECT_GT(w->dropped_turns, 0);
  std::map<std::int64_t, std::int64_t> history;  // session -> previous prompt + answer
  for (const ReplayRequest& r : w->requests) {
    const std::int64_t prompt =
        (r.extends_session ? history[r.session] : 0) + static_cast<std::int64_t>(r.tokens.size());
    EXPECT_LE(prompt + r.output_tokens, o.max_context_tokens) << "request " << r.id;
    history[r.session] = prompt + r.output_tokens;
  }
  o.max_context_tokens = 0;
  auto unlimited = chat_workload(o, kVocab);
  ASSERT_TRUE(unlimited.ok());
  EXPECT_EQ(unlimited->dropped_turns, 0);
  EXPECT_EQ(static_cast<std::int64_t>(unlimited->requests.size()),
            static_cast<std::int64_t>(w->requests.size()) + w->dropped_turns);
}

TEST(ChatWorkload, SeveralSystemPromptsAreDrawnUniformly) {
  ChatOptions o;
  o.sessions = 3000;
  o.system_prompts = 3;
  o.system_prompt_tokens = 16;
  o.mean_turns = 1;
  auto w = chat_workload(o, 1000);
  ASSERT_TRUE(w.ok());
  expect_tokens_below(*w, 1000);
  std::map<std::vector<std::int32_t>, int> count;
  for (const ReplayRequest& r : w->requests)
    ++count[std::vector<std::int32_t>(r.tokens.begin(), r.tokens.begin() + 16)];
  ASSERT_EQ(count.size(), 3u);
  for (const auto& [prefix, n] : count) EXPECT_NEAR(n, 1000, 100);
}

TEST(ChatWorkload, RejectsBadOptions) {
  ChatOptions o;
  o.sessions = 0;
  auto w = chat_workload(o, kVocab);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(w.status().message().find("sessions"), std::string::npos);

  o = ChatOptions();
  o.max_context_tokens = 1000;  // below 512 + 1024 + 1024
  w = chat_workload(o, kVocab);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("max_context_tokens"), std::string::npos);

  o = ChatOptions();
  o.user_tokens.min = 10;
  o.user_tokens.max = 5;
  EXPECT_FALSE(chat_workload(o, kVocab).ok());
  EXPECT_FALSE(chat_workload(ChatOptions(), 0).ok());
}

// ---- document QA ---------------------------------------------------------------------------

// Which document each prompt starts with, from its first 32 tokens.
std::vector<int> documents_of(const Workload& w, std::map<std::vector<std::int32_t>, int>* docs) {
  std::vector<int> out;
  for (const ReplayRequest& r : w.requests) {
    std::vector<std::int32_t> head(r.tokens.begin(), r.tokens.begin() + 32);
    const auto [it, added] = docs->emplace(head, static_cast<int>(docs->size()));
    out.push_back(it->second);
  }
  return out;
}

TEST(DocQaWorkload, DeterministicAndEveryPromptIsADocumentThenAQuestion) {
  DocQaOptions o;
  auto a = docqa_workload(o, kVocab);
  auto b = docqa_workload(o, kVocab);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  ASSERT_TRUE(b.ok());
  expect_same(*a, *b);
  expect_tokens_below(*a, kVocab);
  EXPECT_EQ(a->requests.size(), static_cast<std::size_t>(o.questions));

  // Prompts on the same document share exactly the document, then differ.
  std::map<std::vector<std::int32_t>, int> heads;
  const std::vector<int> doc = documents_of(*a, &heads);
  EXPECT_LE(heads.size(), static_cast<std::size_t>(o.documents));
  std::map<int, std::vector<const ReplayRequest*>> by_doc;
  for (std::size_t i = 0; i < doc.size(); ++i) by_doc[doc[i]].push_back(&a->requests[i]);
  double previous_arrival = 0;
  for (const ReplayRequest& r : a->requests) {
    EXPECT_GE(r.arrival_s, previous_arrival);
    previous_arrival = r.arrival_s;
    EXPECT_EQ(r.session, -1);
    EXPECT_FALSE(r.extends_session);
    EXPECT_LE(static_cast<std::int64_t>(r.tokens.size()) + r.output_tokens, 4096);
  }
  for (const auto& [d, reqs] : by_doc) {
    if (reqs.size() < 2) continue;
    const auto& x = reqs[0]->tokens;
    const auto& y = reqs[1]->tokens;
    const auto mismatch = std::mismatch(x.begin(), x.end(), y.begin(), y.end());
    const auto shared = mismatch.first - x.begin();
    EXPECT_GE(shared, o.document_tokens.min);
    EXPECT_LE(shared, o.document_tokens.max + 2);  // the questions may agree on a token by chance
  }
}

TEST(DocQaWorkload, ZipfAndUniformChoiceAndArrivals) {
  DocQaOptions o;
  o.questions = 20000;
  o.documents = 8;
  o.document_tokens = {64, 0.2, 48, 96};
  o.question_rate_per_s = 4.0;
  auto w = docqa_workload(o, kVocab);
  ASSERT_TRUE(w.ok());
  std::map<std::vector<std::int32_t>, int> heads;
  std::vector<int> doc = documents_of(*w, &heads);
  ASSERT_EQ(heads.size(), 8u);
  // The most frequent document carries 1 / H_8 of the questions under Zipf s = 1.
  std::map<int, int> count;
  for (int d : doc) ++count[d];
  int top = 0;
  for (const auto& [d, n] : count) top = std::max(top, n);
  double h8 = 0;
  for (int k = 1; k <= 8; ++k) h8 += 1.0 / k;
  EXPECT_NEAR(static_cast<double>(top) / o.questions, 1.0 / h8, 0.015);
  EXPECT_NEAR(w->requests.back().arrival_s / o.questions, 0.25, 0.25 * 0.05);

  o.zipf_s = 0;
  w = docqa_workload(o, kVocab);
  ASSERT_TRUE(w.ok());
  heads.clear();
  doc = documents_of(*w, &heads);
  count.clear();
  for (int d : doc) ++count[d];
  ASSERT_EQ(count.size(), 8u);
  for (const auto& [d, n] : count) EXPECT_NEAR(static_cast<double>(n) / o.questions, 0.125, 0.012);
}

TEST(DocQaWorkload, StatedDocumentLengthsAndLengthDistributions) {
  DocQaOptions o;
  o.document_lengths = {100, 200, 300};
  o.zipf_s = 0;
  o.questions = 6000;
  o.question_tokens = {48, 0.5, 1, 1 << 30};
  o.answer_tokens = {64, 0.6, 1, 1 << 30};
  auto w = docqa_workload(o, 50);
  ASSERT_TRUE(w.ok());
  expect_tokens_below(*w, 50);
  std::map<std::vector<std::int32_t>, int> heads;
  const std::vector<int> doc = documents_of(*w, &heads);
  ASSERT_EQ(heads.size(), 3u);
  // Recover each document's length from two prompts on it: they share the document.
  std::map<int, std::vector<std::size_t>> on;
  for (std::size_t i = 0; i < doc.size(); ++i) on[doc[i]].push_back(i);
  std::vector<std::int64_t> doc_len(3);
  std::vector<double> questions, answers;
  for (const auto& [d, idx] : on) {
    std::int64_t shared = 1 << 30;
    for (std::size_t k = 1; k < std::min<std::size_t>(idx.size(), 20); ++k) {
      const auto& x = w->requests[idx[0]].tokens;
      const auto& y = w->requests[idx[k]].tokens;
      shared = std::min<std::int64_t>(shared, std::mismatch(x.begin(), x.end(), y.begin(), y.end()).first - x.begin());
    }
    doc_len[static_cast<std::size_t>(d)] = shared;
  }
  std::sort(doc_len.begin(), doc_len.end());
  EXPECT_EQ(doc_len, (std::vector<std::int64_t>{100, 200, 300}));
  for (const ReplayRequest& r : w->requests) answers.push_back(r.output_tokens);
  EXPECT_NEAR(median(answers), 64, 64 * 0.04);
  EXPECT_NEAR(mean(answers), 64 * std::exp(0.18), 64 * std::exp(0.18) * 0.04);

  o.document_lengths = {100, 0};
  EXPECT_FALSE(docqa_workload(o, 50).ok());
}

// ---- the trace -----------------------------------------------------------------------------

const char* kTrace =
    "{\"timestamp\": 0, \"input_length\": 1000, \"output_length\": 10, \"hash_ids\": [0, 1]}\n"
    "{\"timestamp\": 1500, \"input_length\": 1200, \"output_length\": 20, \"hash_ids\": [0, 1, 2]}\n"
    "\n"
    "{\"timestamp\": 3000.5, \"input_length\": 512, \"output_length\": 0, \"hash_ids\": [3],"
    " \"extra\": true}\n";

TEST(TraceWorkload, ParsesBlocksIntoSharedTokens) {
  TraceOptions o;
  auto w = parse_trace(kTrace, o, kVocab);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  ASSERT_EQ(w->requests.size(), 3u);
  EXPECT_EQ(w->block_tokens, 512);
  const auto& r = w->requests;
  EXPECT_EQ(r[0].tokens.size(), 1000u);
  EXPECT_EQ(r[1].tokens.size(), 1200u);
  EXPECT_EQ(r[2].tokens.size(), 512u);
  EXPECT_EQ(r[0].arrival_s, 0.0);
  EXPECT_DOUBLE_EQ(r[1].arrival_s, 1.5);
  EXPECT_DOUBLE_EQ(r[2].arrival_s, 3.0005);
  EXPECT_EQ(r[0].output_tokens, 10);
  EXPECT_EQ(r[2].output_tokens, 1);  // output_length 0: at least one token
  EXPECT_EQ(r[0].session, -1);
  // Blocks 0 and 1 are shared: r0 (blocks 0 and the first 488 tokens of 1) is a prefix of r1.
  EXPECT_TRUE(std::equal(r[0].tokens.begin(), r[0].tokens.end(), r[1].tokens.begin()));
  // A different id gives different tokens.
  EXPECT_NE(std::vector<std::int32_t>(r[2].tokens.begin(), r[2].tokens.begin() + 512),
            std::vector<std::int32_t>(r[1].tokens.begin(), r[1].tokens.begin() + 512));
  expect_tokens_below(*w, kVocab);
  EXPECT_EQ(w->trace_blocks, 6);
  EXPECT_EQ(w->trace_repeated_blocks, 2);

  auto again = parse_trace(kTrace, o, kVocab);
  ASSERT_TRUE(again.ok());
  expect_same(*w, *again);
  o.seed = 7;
  auto reseeded = parse_trace(kTrace, o, kVocab);
  ASSERT_TRUE(reseeded.ok());
  EXPECT_NE(reseeded->requests[0].tokens, r[0].tokens);
}

TEST(TraceWorkload, LengthScaleKeepsTheBlockStructure) {
  TraceOptions o;
  o.length_scale = 1.0 / 32;
  o.time_scale = 0.5;
  auto w = parse_trace(kTrace, o, 1000);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  EXPECT_EQ(w->block_tokens, 16);
  const auto& r = w->requests;
  EXPECT_EQ(r[0].tokens.size(), 16u + 15u);  // 488 * 16 / 512 = 15.25
  EXPECT_EQ(r[1].tokens.size(), 32u + 6u);   // 176 * 16 / 512 = 5.5, rounded away from zero
  EXPECT_EQ(r[2].tokens.size(), 16u);
  EXPECT_EQ(r[0].output_tokens, 1);
  EXPECT_EQ(r[1].output_tokens, 1);
  EXPECT_DOUBLE_EQ(r[1].arrival_s, 0.75);
  EXPECT_TRUE(std::equal(r[0].tokens.begin(), r[0].tokens.end(), r[1].tokens.begin()));
  // The full-size workload's blocks, cut to 16 tokens, are not what matters; the sharing is.
  auto s = summarize(*w);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->block_tokens, 16);
  EXPECT_EQ(s->shared_tokens, 31);
  EXPECT_EQ(s->blocks, 2 + 3 + 1);
  EXPECT_EQ(s->shared_blocks, 1);
}

TEST(TraceWorkload, LimitsSkipsAndClamps) {
  TraceOptions o;
  o.max_requests = 2;
  auto w = parse_trace(kTrace, o, kVocab);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->requests.size(), 2u);

  o = TraceOptions();
  o.max_minutes = 2.4 / 60;  // 2400 ms: the first two requests
  w = parse_trace(kTrace, o, kVocab);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->requests.size(), 2u);

  o = TraceOptions();
  o.max_prompt_tokens = 1100;
  o.max_output_tokens = 15;
  w = parse_trace(kTrace, o, kVocab);
  ASSERT_TRUE(w.ok());
  ASSERT_EQ(w->requests.size(), 2u);
  EXPECT_EQ(w->skipped_requests, 1);
  EXPECT_EQ(w->clamped_prompts, 0);
  EXPECT_EQ(w->requests[1].tokens.size(), 512u);  // the third line
  EXPECT_EQ(w->requests[1].id, 1);

  o.over_length = OverLength::kClamp;
  w = parse_trace(kTrace, o, kVocab);
  ASSERT_TRUE(w.ok());
  ASSERT_EQ(w->requests.size(), 3u);
  EXPECT_EQ(w->skipped_requests, 0);
  EXPECT_EQ(w->clamped_prompts, 1);
  EXPECT_EQ(w->clamped_outputs, 1);
  EXPECT_EQ(w->requests[1].tokens.size(), 1100u);
  EXPECT_EQ(w->requests[1].output_tokens, 15);
  auto full = parse_trace(kTrace, TraceOptions(), kVocab);
  ASSERT_TRUE(full.ok());
  EXPECT_TRUE(std::equal(w->requests[1].tokens.begin(), w->requests[1].tokens.end(),
                         full->requests[1].tokens.begin()));
}

struct BadTrace {
  std::string text;
  std::string expect;  // in the message, after "line N"
};

TEST(TraceWorkload, MalformedLinesNameTheLine) {
  const std::string good =
      "{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 5, \"hash_ids\": [0, 1]}\n";
  const std::vector<BadTrace> bad = {
      {"{\"timestamp\": 1, \"input_length\": 600", "not valid JSON"},
      {"[1, 2, 3]", "not a JSON object"},
      {"{\"timestamp\": 1, \"output_length\": 5, \"hash_ids\": [0, 1]}", "missing \"input_length\""},
      {"{\"timestamp\": 1, \"input_length\": \"600\", \"output_length\": 5, \"hash_ids\": [0, 1]}",
       "\"input_length\" must be an integer"},
      {"{\"timestamp\": 1, \"input_length\": 600.5, \"output_length\": 5, \"hash_ids\": [0, 1]}",
       "\"input_length\" must be an integer"},
      {"{\"timestamp\": 1, \"input_length\": 0, \"output_length\": 5, \"hash_ids\": []}",
       "\"input_length\" must be in"},
      {"{\"timestamp\": -1, \"input_length\": 600, \"output_length\": 5, \"hash_ids\": [0, 1]}",
       "\"timestamp\" must be a number"},
      {"{\"input_length\": 600, \"output_length\": 5, \"hash_ids\": [0, 1]}", "missing \"timestamp\""},
      {"{\"timestamp\": 1, \"input_length\": 600, \"output_length\": 5, \"hash_ids\": [0]}",
       "needs 2 blocks"},
      {"{\"timestamp\": 1, \"input_length\": 600, \"output_length\": 5, \"hash_ids\": [0, -4]}",
       "hash_ids must hold integers"},
      {"{\"timestamp\": 1, \"input_length\": 600, \"output_length\": 5, \"hash_ids\": 7}",
       "\"hash_ids\" must be an array"},
      {"{\"timestamp\": 1, \"input_length\": 600, \"output_length\": 5, \"hash_ids\": [0, \"a\"]}",
       "hash_ids must hold integers"},
  };
  for (const BadTrace& b : bad) {
    // Line 3: a good line, a blank line, then the bad one.
    TraceOptions o;
    o.path = "t.jsonl";
    auto w = parse_trace(good + "\n" + b.text + "\n" + good, o, kVocab);
    ASSERT_FALSE(w.ok()) << b.text;
    EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
    const std::string m = w.status().message();
    EXPECT_NE(m.find("trace t.jsonl line 3: "), std::string::npos) << m;
    EXPECT_NE(m.find(b.expect), std::string::npos) << m;
  }
  // Time must not run backwards.
  const std::string later =
      "{\"timestamp\": 50, \"input_length\": 600, \"output_length\": 5, \"hash_ids\": [0, 1]}\n";
  auto w = parse_trace(later + good, TraceOptions(), kVocab);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("line 2"), std::string::npos) << w.status().message();
  EXPECT_NE(w.status().message().find("time order"), std::string::npos);
}

TEST(TraceWorkload, ReadsAFileAndSaysWhenItIsMissing) {
  TraceOptions o;
  o.path = "/nonexistent/trace.jsonl";
  auto missing = trace_workload(o, kVocab);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);

  const auto path = std::filesystem::temp_directory_path() /
                    ("tierkv_workload_test_" + std::to_string(::getpid()) + ".jsonl");
  {
    std::ofstream out(path);
    out << kTrace;
  }
  o.path = path.string();
  auto from_file = trace_workload(o, kVocab);
  std::filesystem::remove(path);
  ASSERT_TRUE(from_file.ok()) << from_file.status().to_string();
  auto from_text = parse_trace(kTrace, o, kVocab);
  ASSERT_TRUE(from_text.ok());
  expect_same(*from_file, *from_text);
}

TEST(TraceWorkload, RejectsBadOptions) {
  TraceOptions o;
  o.length_scale = 0;
  EXPECT_FALSE(parse_trace(kTrace, o, kVocab).ok());
  o.length_scale = 1.5;
  EXPECT_FALSE(parse_trace(kTrace, o, kVocab).ok());
  o = TraceOptions();
  o.time_scale = 0;
  EXPECT_FALSE(parse_trace(kTrace, o, kVocab).ok());
}

// The trace from the project's shared folder (beside the repository), or where
// TIERKV_MOONCAKE_TRACE points; empty when it is absent.
std::string mooncake_trace_path() {
  if (const char* env = std::getenv("TIERKV_MOONCAKE_TRACE")) return env;
  const std::filesystem::path root = std::filesystem::path(__FILE__).parent_path().parent_path();
  for (const auto& p : {root / "bench/traces/mooncake-conversation.jsonl",
                        root / "../shared/traces/mooncake-conversation.jsonl"}) {
    std::error_code ec;
    if (std::filesystem::exists(p, ec)) return p.string();
  }
  return "";
}

TEST(TraceWorkload, TheMooncakeTraceRepeatsItsStatedShareOfBlocks) {
  const std::string path = mooncake_trace_path();
  if (path.empty()) GTEST_SKIP() << "mooncake-conversation.jsonl not found";
  TraceOptions o;
  o.path = path;
  o.length_scale = 1.0 / 32;  // 16-token blocks: the sharing structure, at 1/32 of the memory
  auto w = trace_workload(o, kVocab);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  EXPECT_EQ(w->requests.size(), 12031u);
  EXPECT_EQ(w->trace_blocks, 288500);
  // The README: "36.6% of all blocks repeat a block seen earlier in the trace".
  const double repeated =
      static_cast<double>(w->trace_repeated_blocks) / static_cast<double>(w->trace_blocks);
  EXPECT_NEAR(repeated, 0.366, 0.0005);
  auto s = summarize(*w);
  ASSERT_TRUE(s.ok());
  std::printf("%s", format_summary(*w, *s).c_str());
  // From the tokens: a block whose earlier copy was a shorter last block counts as not shared,
  // so the token-derived block figure sits a little below the id figure.
  EXPECT_LE(s->shared_block_fraction(), repeated);
  EXPECT_NEAR(s->shared_block_fraction(), repeated, 0.01);
  EXPECT_NEAR(s->shared_token_fraction(), 0.37, 0.01);
  EXPECT_NEAR(s->last_arrival_s, 3537, 1);
}

// ---- summary -------------------------------------------------------------------------------

ReplayRequest request(std::vector<std::int32_t> tokens, std::int64_t session = -1,
                      std::int32_t turn = 0, bool extends = false, std::int32_t output = 1) {
  ReplayRequest r;
  r.tokens = std::move(tokens);
  r.session = session;
  r.turn = turn;
  r.extends_session = extends;
  r.output_tokens = output;
  return r;
}

TEST(Summary, CountsSharedPrefixesInTokensAndBlocks) {
  Workload w;
  w.requests = {request({1, 2, 3, 4, 5, 6}), request({1, 2, 3, 4, 9}),
                request({1, 2, 3, 4, 5, 6}), request({7})};
  auto s = summarize(w, 2);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->requests, 4);
  EXPECT_EQ(s->sessions, 0);
  EXPECT_EQ(s->prompt_tokens, 18);
  EXPECT_EQ(s->shared_tokens, 0 + 4 + 6 + 0);
  EXPECT_EQ(s->blocks, 3 + 3 + 3 + 1);
  EXPECT_EQ(s->shared_blocks, 0 + 2 + 3 + 0);
  EXPECT_EQ(s->prompt_p50, 5);
  EXPECT_EQ(s->prompt_p90, 6);
  EXPECT_EQ(s->prompt_max, 6);
  EXPECT_EQ(s->output_tokens, 4);
  EXPECT_FALSE(summarize(w, -1).ok());
}

TEST(Summary, ASessionTurnSharesItsHistoryButNotTheGeneratedTokens) {
  Workload w;
  w.requests = {request({1, 2, 3}, 0, 0, false, 2), request({4}, 0, 1, true, 1),
                request({1, 2, 3}, 1, 0, false, 2), request({5}, 1, 1, true, 1)};
  auto s = summarize(w, 256);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->sessions, 2);
  EXPECT_EQ(s->prompt_tokens, 3 + 6 + 3 + 6);
  // Turn 1 shares its previous prompt; session 1's turn 0 shares all of session 0's; session 1's
  // turn 1 shares only [1, 2, 3]: the generated stand-ins are its own.
  EXPECT_EQ(s->shared_tokens, 0 + 3 + 3 + 3);

  Workload orphan;
  orphan.requests = {request({4}, 3, 1, true)};
  auto bad = summarize(orphan);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

TEST(Summary, ChatAndDocQaShareWhatTheyAreBuiltToShare) {
  ChatOptions c;
  c.sessions = 50;
  auto chat = chat_workload(c, kVocab);
  ASSERT_TRUE(chat.ok());
  auto s = summarize(*chat);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->sessions, 50);
  // Every session after the first shares the system prompt; every later turn its history.
  std::int64_t at_least = 49LL * c.system_prompt_tokens;
  EXPECT_GE(s->shared_tokens, at_least);
  EXPECT_GT(s->shared_token_fraction(), 0.3);

  DocQaOptions d;
  d.documents = 2;
  d.document_lengths = {1000, 2000};
  d.questions = 100;
  auto qa = docqa_workload(d, kVocab);
  ASSERT_TRUE(qa.ok());
  s = summarize(*qa);
  ASSERT_TRUE(s.ok());
  // All but the first question on each document share that document.
  EXPECT_GE(s->shared_tokens, 98 * 1000);
  EXPECT_NE(format_summary(*qa, *s).find("workload docqa: 100 requests"), std::string::npos);
}

}  // namespace
}  // namespace tierkv::replay
