// Where a command goes: the one server, or in a Redis Cluster the master of the keys' slot.
//
// The cluster's slot map is read with CLUSTER SLOTS from any seed or known node that answers. A
// MOVED reply points the slot at the node it names at once and re-reads the whole map (at most
// every refresh_interval); an ASK reply sends the batch once to the node it names, preceded by
// ASKING; TRYAGAIN (a multi-key command during a slot migration) is retried shortly until the
// deadline. A pooled connection that turns out stale (the server restarted) is retried once on a
// fresh connection. A node that fails also prompts a re-read of the map (at most every
// refresh_interval), so that a replica promoted in its place is found.
//
// Ownership: the Router owns its nodes; a Node lives as long as the Router (nodes are never
// removed, so a Node* taken from the map stays valid).
// Thread safety: every method may be called from any thread at the same time.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "tierkv/redis_store.h"
#include "tierkv/status.h"
#include "tiers/redis/connection.h"
#include "tiers/redis/node.h"
#include "tiers/redis/resp.h"
#include "tiers/redis/slots.h"

namespace tierkv::redis {

class Router {
 public:
  explicit Router(const RedisStoreOptions& options);

  bool cluster() const { return cluster_; }

  // Reaches the server (single) or reads the slot map (cluster) before `deadline`, and checks
  // that the server is what the options say. See open_redis_store() for the errors.
  Status connect(Deadline deadline);

  // Sends `batch`, all of whose keys are in `slot` (ignored for a single server), to the node that
  // serves the slot and reads one reply per command into `replies`, following redirections (see
  // above). Error replies other than redirections are the caller's to read. Unavailable or
  // DeadlineExceeded when no node answered in time.
  Status execute(int slot, const CommandBatch& batch, Deadline deadline,
                 std::vector<ReplyPtr>* replies, ReplySink* sink = nullptr);

  // "host:port" of the node that serves `slot` now ("" when none is known).
  std::string node_name(int slot);
  // The nodes known now, "host:port" each.
  std::vector<std::string> node_names();

 private:
  Node* node_for(int slot);
  Node* node_at(const std::string& host, int port);
  Status refresh(Deadline deadline);
  void maybe_refresh(Deadline deadline);
  Status refresh_from(Node* node, Deadline deadline);
  Status run(Node* node, bool fresh, bool asking, const CommandBatch& batch, Deadline deadline,
             std::vector<ReplyPtr>* replies, ReplySink* sink, bool* stale);
  Status check_single(Deadline deadline);

  const bool cluster_;
  const NodeSettings settings_;
  const std::vector<RedisEndpoint> seeds_;
  const Clock::duration refresh_interval_;

  std::shared_mutex mu_;
  std::map<std::string, std::unique_ptr<Node>> nodes_;  // GUARDED_BY(mu_), by "host:port"
  std::vector<Node*> slots_;                            // GUARDED_BY(mu_); nullptr: unknown
  // Nanoseconds since the clock's epoch of the last whole-map refresh; a relaxed atomic suffices:
  // it only rate-limits refreshes, and a refresh too many is harmless.
  std::atomic<std::int64_t> last_refresh_ns_{0};
};

}  // namespace tierkv::redis
