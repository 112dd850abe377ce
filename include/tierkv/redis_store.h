// The remote tier: a Store over a Redis server or a Redis Cluster, shared by every engine process
// that points at it.
//
// A record (src/core/record.h) is kept as several Redis values under keys namespaced by the
// cache identity, all carrying one hash tag so that a record lives in one cluster slot:
//
//   <prefix>:<identity, 16 hex>:{<chunk key, 64 hex>}:h          the record header
//   <prefix>:<identity, 16 hex>:{<chunk key, 64 hex>}:<l>        layer l's payload, or
//   <prefix>:<identity, 16 hex>:{<chunk key, 64 hex>}:<l>.<p>    part p of layer l when one layer
//                                                                 is larger than max_value_bytes
//
// write() sends the payload values and then the header in one MSET on the record's node (with a
// ttl: one MULTI/EXEC of SET ... PX), so a reader sees all of a record or none of it; read()
// fetches them with one MGET (atomic as well), receiving each value from the socket straight into
// the caller's buffer, and verifies the header and every layer's checksum before it reports a
// hit. Each call is one round trip (plus redirections in a cluster) on one connection, and is
// bounded by command_timeout: a dead, paused or flushed server turns into misses (Unavailable,
// DeadlineExceeded, NotFound), never a hang. Connections are pooled per node and re-made by
// themselves, with exponential backoff while a node stays unreachable (calls to it fail at once
// during the backoff instead of waiting for a timeout each).
//
// Cluster: the slot map comes from CLUSTER SLOTS of any reachable seed; MOVED updates it (and
// refreshes it whole, at most every refresh_interval), ASK is followed with ASKING. Records spread
// over the nodes by their hash tag; while a node is down its records are misses and the others
// keep hitting. Run the cluster with `cluster-require-full-coverage no`, or the surviving nodes
// refuse every request once the cluster notices the dead one. While a slot migrates, records
// already moved are read through ASK, but a new record cannot be written into that slot (Redis
// answers TRYAGAIN to a transaction over keys the target does not hold yet): such a write fails
// as Unavailable and leaves nothing behind.
//
// Ownership: the returned Store owns its connections. Thread safety: every method of the Store
// may be called from any thread at the same time (store.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tierkv/status.h"
#include "tierkv/store.h"

namespace tierkv {

struct RedisEndpoint {
  std::string host = "127.0.0.1";  // a numeric address or a name (names resolve without a timeout)
  int port = 6379;
};

struct RedisStoreOptions {
  // One server, or, when cluster_seeds is not empty, a Redis Cluster reached through any of the
  // seeds (the others are learned from CLUSTER SLOTS); `server` is then ignored.
  RedisEndpoint server;
  std::vector<RedisEndpoint> cluster_seeds;

  // AUTH after every connect when password is not empty; with username, Redis 6 ACL form.
  std::string username;
  std::string password;

  // Records expire this long after they were written (SET ... PX); 0: they never expire (the
  // server's maxmemory policy then decides what goes). Payload values are given a little longer
  // than the header, so that a record's header goes first.
  std::chrono::milliseconds ttl{0};

  // Upper bound of one attempt to connect (TCP and AUTH), and of one whole Store call (all its
  // round trips, redirections and one reconnect included). A call that runs out returns
  // DeadlineExceeded and the connection it used is dropped.
  std::chrono::milliseconds connect_timeout{100};
  std::chrono::milliseconds command_timeout{500};

  // After a node failed (no connection, a timeout, a broken connection), calls to it fail at once
  // as Unavailable until the backoff has passed; the backoff doubles with each further failure,
  // from backoff_min up to backoff_max, and a success resets it.
  std::chrono::milliseconds backoff_min{20};
  std::chrono::milliseconds backoff_max{1000};

  // Largest single Redis value written. 1 MiB: a 256-token chunk of Llama-3.1-8B is 32 MiB (32
  // layers of 1 MiB), far past what Redis serves well: a single-threaded server copies a value
  // while every other client waits, a 32 MiB value holds it for milliseconds, and client and
  // server buffers grow to the largest value. 1 MiB keeps one command's service time near 100 µs
  // and still moves at the link's speed; a Llama-8B layer is one value, a larger layer is split
  // into parts of at most this size. Must be at least 4096.
  std::uint64_t max_value_bytes = std::uint64_t(1) << 20;

  // Namespace of every key (see above). Letters, digits, '-', '_' and '.', at most 32 characters.
  std::string key_prefix = "tkv";

  // Idle connections kept per node (more are opened when more threads call at once; those beyond
  // this are closed when their call returns).
  int pool_size = 8;

  // Whether open_redis_store() must reach the server (or a cluster seed, and read its slot map)
  // before it returns. When false, a store whose server is down opens anyway and its calls miss
  // until the server is up.
  bool connect_at_open = true;

  // Cluster: how often at most the whole slot map is read again (after a MOVED, or when a node
  // stops answering, so that a replica promoted in its place is found).
  std::chrono::milliseconds refresh_interval{1000};
};

// Opens a store over Redis. InvalidArgument for options out of range; with connect_at_open,
// Unavailable when no server could be reached and FailedPrecondition when the server refused the
// password or is not what the options say (a cluster node without cluster_seeds, or the reverse).
Result<std::unique_ptr<Store>> open_redis_store(const RedisStoreOptions& options);

}  // namespace tierkv
