#include "tiers/redis/router.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <mutex>
#include <thread>

namespace tierkv::redis {
namespace {

constexpr int kMaxHops = 6;
constexpr auto kTryAgainPause = std::chrono::milliseconds(5);

NodeSettings node_settings(const RedisStoreOptions& o) {
  NodeSettings s;
  s.username = o.username;
  s.password = o.password;
  s.connect_timeout = o.connect_timeout;
  s.backoff_min = o.backoff_min;
  s.backoff_max = o.backoff_max;
  s.pool_size = o.pool_size;
  return s;
}

// The first redirection among the replies (a MULTI's queued commands carry them one each).
bool find_redirect(const std::vector<ReplyPtr>& replies, Redirect* out) {
  for (const ReplyPtr& r : replies)
    if (parse_redirect(r.get(), out)) return true;
  return false;
}

bool has_error_prefix(const std::vector<ReplyPtr>& replies, std::string_view prefix) {
  for (const ReplyPtr& r : replies)
    if (is_error(r.get()) && reply_text(r.get()).starts_with(prefix)) return true;
  return false;
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

}  // namespace

Router::Router(const RedisStoreOptions& options)
    : cluster_(!options.cluster_seeds.empty()),
      settings_(node_settings(options)),
      seeds_(cluster_ ? options.cluster_seeds : std::vector<RedisEndpoint>{options.server}),
      refresh_interval_(options.refresh_interval),
      slots_(kClusterSlots, nullptr) {
  for (const RedisEndpoint& e : seeds_)
    node_at(e.host, e.port);
  if (!cluster_) std::fill(slots_.begin(), slots_.end(), node_at(seeds_[0].host, seeds_[0].port));
}

Node* Router::node_at(const std::string& host, int port) {
  std::string name = host + ":" + std::to_string(port);
  {
    std::shared_lock lock(mu_);
    auto it = nodes_.find(name);
    if (it != nodes_.end()) return it->second.get();
  }
  std::unique_lock lock(mu_);
  std::unique_ptr<Node>& slot = nodes_[name];
  if (!slot) slot = std::make_unique<Node>(host, port, settings_);
  return slot.get();
}

Node* Router::node_for(int slot) {
  std::shared_lock lock(mu_);
  return slots_[std::size_t(slot)];
}

std::string Router::node_name(int slot) {
  Node* n = node_for(slot);
  return n ? n->name() : std::string();
}

std::vector<std::string> Router::node_names() {
  std::shared_lock lock(mu_);
  std::vector<std::string> names;
  for (const auto& [name, node] : nodes_)
    names.push_back(name);
  return names;
}

// ---- connecting and the slot map ---------------------------------------------------------------

Status Router::connect(Deadline deadline) {
  if (cluster_) return refresh(deadline);
  return check_single(deadline);
}

Status Router::check_single(Deadline deadline) {
  Node* node = node_for(0);
  TIERKV_ASSIGN_OR_RETURN(Lease lease, node->acquire(deadline));
  CommandBatch batch;
  batch.command({"PING"});
  batch.command({"CLUSTER", "MYID"});
  std::vector<ReplyPtr> replies;
  TIERKV_RETURN_IF_ERROR(lease->exchange(batch, deadline, &replies));
  if (is_error(replies[0].get()))
    return failed_precondition("redis at " + node->name() + " answered PING with " +
                               describe(replies[0].get()));
  if (!is_error(replies[1].get()))
    return failed_precondition("redis at " + node->name() +
                               " is a cluster node; list it in cluster_seeds instead of server");
  return Status::Ok();
}

Status Router::refresh_from(Node* node, Deadline deadline) {
  TIERKV_ASSIGN_OR_RETURN(Lease lease, node->acquire(deadline));
  CommandBatch batch;
  batch.command({"CLUSTER", "SLOTS"});
  std::vector<ReplyPtr> replies;
  TIERKV_RETURN_IF_ERROR(lease->exchange(batch, deadline, &replies));
  if (is_error(replies[0].get()))
    return failed_precondition("redis at " + node->name() + " answered CLUSTER SLOTS with " +
                               describe(replies[0].get()) +
                               "; is it a cluster node? (a single server goes in `server`)");
  TIERKV_ASSIGN_OR_RETURN(std::vector<SlotRange> ranges,
                          parse_cluster_slots(replies[0].get(), node->host()));
  if (ranges.empty())
    return unavailable("redis at " + node->name() +
                       " serves no slots: the cluster is not created yet");
  std::vector<Node*> map(kClusterSlots, nullptr);
  for (const SlotRange& r : ranges) {
    Node* n = node_at(r.host, r.port);
    std::fill(map.begin() + r.first, map.begin() + r.last + 1, n);
  }
  std::unique_lock lock(mu_);
  slots_.swap(map);
  return Status::Ok();
}

Status Router::refresh(Deadline deadline) {
  last_refresh_ns_.store(now_ns(), std::memory_order_relaxed);
  std::vector<Node*> candidates;
  for (const RedisEndpoint& e : seeds_)
    candidates.push_back(node_at(e.host, e.port));
  {
    std::shared_lock lock(mu_);
    for (const auto& [name, node] : nodes_)
      if (std::find(candidates.begin(), candidates.end(), node.get()) == candidates.end())
        candidates.push_back(node.get());
  }
  Status last = unavailable("no cluster node is known");
  for (Node* n : candidates) {
    if (Clock::now() >= deadline) break;
    last = refresh_from(n, deadline);
    if (last.ok() || last.code() == StatusCode::kFailedPrecondition) return last;
  }
  return last.with_context("reading the cluster slot map");
}

void Router::maybe_refresh(Deadline deadline) {
  if (Clock::now() >= deadline) return;
  std::int64_t last = last_refresh_ns_.load(std::memory_order_relaxed);
  if (now_ns() - last < std::chrono::nanoseconds(refresh_interval_).count()) return;
  if (!last_refresh_ns_.compare_exchange_strong(last, now_ns(), std::memory_order_relaxed)) return;
  refresh(deadline).ignore();  // the redirection itself was applied; a later MOVED tries again
}

// ---- running a batch ---------------------------------------------------------------------------

Status Router::run(Node* node, bool fresh, bool asking, const CommandBatch& batch,
                   Deadline deadline, std::vector<ReplyPtr>* replies, ReplySink* sink,
                   bool* stale) {
  *stale = false;
  Result<Lease> lease = fresh ? node->acquire_fresh(deadline) : node->acquire(deadline);
  if (!lease.ok()) return lease.status();
  if (asking) {
    CommandBatch ask;
    ask.command({"ASKING"});
    TIERKV_RETURN_IF_ERROR((*lease)->exchange(ask, deadline, replies));
  }
  Status s = (*lease)->exchange(batch, deadline, replies, sink);
  if (!s.ok() && s.code() == StatusCode::kUnavailable && lease->reused() && !asking) {
    lease->discard_stale();
    *stale = true;
  }
  return s;
}

Status Router::execute(int slot, const CommandBatch& batch, Deadline deadline,
                       std::vector<ReplyPtr>* replies, ReplySink* sink) {
  if (!cluster_) slot = 0;
  Node* ask_node = nullptr;
  bool fresh = false;
  for (int hop = 0; hop < kMaxHops; ++hop) {
    Node* node = ask_node ? ask_node : node_for(slot);
    if (node == nullptr) {
      maybe_refresh(deadline);
      node = node_for(slot);
      if (node == nullptr)
        return unavailable("no redis cluster node serves slot " + std::to_string(slot));
    }
    bool stale = false;
    Status s = run(node, fresh, ask_node != nullptr, batch, deadline, replies, sink, &stale);
    if (stale && !fresh) {
      fresh = true;  // once: the pooled connection had gone stale, try a new one
      continue;
    }
    if (!s.ok()) {
      // A node that stopped answering may have been replaced (a replica promoted): look again.
      if (cluster_) maybe_refresh(deadline);
      return s;
    }
    Redirect r;
    if (find_redirect(*replies, &r)) {
      if (!cluster_)
        return failed_precondition("redis at " + node->name() +
                                   " redirected a command: it is a cluster node; list it in "
                                   "cluster_seeds instead of server");
      Node* target = node_at(r.host, r.port);
      if (r.ask) {
        ask_node = target;
        continue;
      }
      ask_node = nullptr;
      {
        std::unique_lock lock(mu_);
        slots_[std::size_t(r.slot)] = target;
      }
      maybe_refresh(deadline);
      continue;
    }
    if (cluster_ && has_error_prefix(*replies, "TRYAGAIN")) {
      if (Clock::now() + kTryAgainPause >= deadline) break;
      std::this_thread::sleep_for(kTryAgainPause);
      ask_node = nullptr;
      continue;
    }
    return Status::Ok();
  }
  return unavailable("redis cluster slot " + std::to_string(slot) +
                     ": still redirected or migrating after " + std::to_string(kMaxHops) +
                     " tries");
}

}  // namespace tierkv::redis
