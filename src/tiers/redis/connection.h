// One connection to one Redis server, with a deadline on everything it does.
//
// hiredis makes the TCP connection (non-blocking) and parses replies; the I/O loop is ours: it
// sends a CommandBatch with vectored non-blocking sends (MSG_NOSIGNAL: a closed peer is an error,
// never SIGPIPE), reads with poll() against the caller's deadline, and feeds hiredis's reader
// (or, for an exchange with a ReplySink, the FlatReader, which receives values straight into the
// sink's targets).
// A connection on which anything failed (a timeout, a broken socket, a protocol error) is
// broken() for good: its replies can no longer be matched to its commands. Error replies from the
// server are replies, not failures.
//
// Thread safety: one thread at a time (the pool hands a connection to one caller).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "tierkv/status.h"
#include "tiers/redis/flat_reader.h"
#include "tiers/redis/resp.h"

struct redisContext;

namespace tierkv::redis {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

struct ConnectParams {
  std::string host;
  int port = 0;
  std::string username;  // with password: AUTH username password
  std::string password;  // empty: no AUTH
};

class Connection {
 public:
  // Connects and authenticates before `deadline`. Unavailable when the server cannot be reached,
  // DeadlineExceeded when it does not answer in time, FailedPrecondition when AUTH is refused.
  static Result<std::unique_ptr<Connection>> open(const ConnectParams& params, Deadline deadline);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Sends `batch` and reads one reply per command into `replies` (replaced), all before
  // `deadline`. With a sink, bulk strings it asks for land in its targets (resp.h), and the
  // replies must be flat (lines, bulk strings, arrays of those: an MGET's). On any error but an
  // error reply the connection is broken() and `replies` is unspecified: DeadlineExceeded on the
  // deadline, Unavailable when the connection was closed or failed or a reply was malformed.
  Status exchange(const CommandBatch& batch, Deadline deadline, std::vector<ReplyPtr>* replies,
                  ReplySink* sink = nullptr);

  bool broken() const { return broken_; }
  // Whether a reply has ever been read on this connection (a connection that never worked and a
  // reused one that went stale fail differently).
  bool used() const { return used_; }
  const std::string& peer() const { return peer_; }
  // What broke the connection; empty while it is not broken().
  const std::string& error() const { return error_; }

 private:
  Connection(redisContext* c, std::string peer);
  Status fail(Status s);
  Status send_some(std::vector<iovec>& iov, std::size_t& first);
  Status receive_some(std::vector<ReplyPtr>* replies, std::size_t want, ReplySink* sink);
  Status take_replies(std::vector<ReplyPtr>* replies, std::size_t want);
  Status wait(short events, Deadline deadline, short* revents);

  redisContext* ctx_;
  FlatReader flat_;
  std::string peer_;  // "host:port", for messages
  std::vector<char> rbuf_;
  std::string error_;
  bool broken_ = false;
  bool used_ = false;
};

}  // namespace tierkv::redis
