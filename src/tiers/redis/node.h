// One Redis server (a standalone server or a cluster node): a small pool of idle connections and
// the node's health.
//
// A call takes a connection with acquire() and gives it back by dropping the Lease. A healthy
// connection goes back to the pool (up to pool_size idle ones); a broken one is closed and counts
// as a failure of the node. After a failure the node backs off: acquire() fails at once with
// Unavailable until the backoff has passed (backoff_min, doubling per further failure up to
// backoff_max), then the next acquire() tries to connect again; any success resets it. A failure
// also closes the idle connections, which are most likely dead too (a restarted server).
//
// Thread safety: every method may be called from any thread at the same time. A Lease is used by
// one thread at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tierkv/status.h"
#include "tiers/redis/connection.h"

namespace tierkv::redis {

struct NodeSettings {
  std::string username, password;
  std::chrono::milliseconds connect_timeout{100};
  std::chrono::milliseconds backoff_min{20};
  std::chrono::milliseconds backoff_max{1000};
  int pool_size = 8;
};

class Node;

// A connection lent to one call. Move-only; returns the connection to its node when dropped.
class Lease {
 public:
  Lease() = default;
  Lease(Lease&& o) noexcept { *this = std::move(o); }
  Lease& operator=(Lease&& o) noexcept;
  ~Lease() { release(); }

  Connection* operator->() const { return conn_.get(); }
  Connection& operator*() const { return *conn_; }
  // Whether the connection came from the pool (it may have gone stale while it waited there).
  bool reused() const { return reused_; }
  // Closes the connection without counting a failure of the node: for a pooled connection that
  // turned out stale, so that the call can retry once on a fresh one. Idle connections of the
  // same age are closed too.
  void discard_stale();

 private:
  friend class Node;
  Lease(Node* node, std::unique_ptr<Connection> c, bool reused, std::uint64_t epoch)
      : node_(node), conn_(std::move(c)), reused_(reused), epoch_(epoch) {}
  void release();

  Node* node_ = nullptr;
  std::unique_ptr<Connection> conn_;
  bool reused_ = false;
  std::uint64_t epoch_ = 0;
};

class Node {
 public:
  Node(std::string host, int port, const NodeSettings& settings);
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  const std::string& host() const { return host_; }
  int port() const { return port_; }
  const std::string& name() const { return name_; }  // "host:port"

  // A connection, pooled or new, before `deadline` (a new one also within connect_timeout).
  // Unavailable at once while the node backs off; otherwise Connection::open's errors.
  Result<Lease> acquire(std::chrono::steady_clock::time_point deadline);
  // A new connection, even when idle ones are pooled.
  Result<Lease> acquire_fresh(std::chrono::steady_clock::time_point deadline);

  // Counts a failure that happened outside a connection (e.g. a reply that makes no sense).
  void report_failure(const Status& why);

 private:
  friend class Lease;
  void give_back(std::unique_ptr<Connection> c, std::uint64_t epoch);
  void stale(std::uint64_t epoch);
  void failed(const std::string& why);
  Result<Lease> connect(std::chrono::steady_clock::time_point deadline);

  const std::string host_;
  const int port_;
  const std::string name_;
  const NodeSettings settings_;

  std::mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_;  // GUARDED_BY(mu_)
  std::uint64_t epoch_ = 0;  // GUARDED_BY(mu_): bumped when pooled connections are dropped
  int failures_ = 0;         // GUARDED_BY(mu_): consecutive failures
  std::chrono::steady_clock::time_point retry_at_{};  // GUARDED_BY(mu_)
  std::string last_error_;                            // GUARDED_BY(mu_)
};

}  // namespace tierkv::redis
