#include "tiers/redis/connection.h"

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

namespace tierkv::redis {
namespace {

// Replies for hiredis's reader land here first; one recv() moves up to this much. (Record
// values do not come this way: exchanges with a ReplySink use the FlatReader.)
constexpr std::size_t kReadChunk = std::size_t(64) << 10;

std::string errno_text(int e) {
  return std::strerror(e);
}

int poll_ms(Deadline deadline) {
  auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now());
  if (left.count() <= 0) return 0;
  return int(std::min<std::int64_t>((left.count() + 999) / 1000, INT_MAX));
}

}  // namespace

Connection::Connection(redisContext* c, std::string peer)
    : ctx_(c), peer_(std::move(peer)), rbuf_(kReadChunk) {}

Connection::~Connection() {
  redisFree(ctx_);
}

Status Connection::fail(Status s) {
  broken_ = true;
  error_ = s.message();
  return s;
}

Status Connection::wait(short events, Deadline deadline, short* revents) {
  for (;;) {
    int ms = poll_ms(deadline);
    if (ms <= 0) return fail(deadline_exceeded("redis at " + peer_ + " did not answer in time"));
    pollfd p{ctx_->fd, events, 0};
    int n = ::poll(&p, 1, ms);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return fail(unavailable("poll on redis connection " + peer_ + ": " + errno_text(errno)));
    if (n == 0) continue;  // the loop re-checks the deadline
    *revents = p.revents;
    return Status::Ok();
  }
}

Result<std::unique_ptr<Connection>> Connection::open(const ConnectParams& params,
                                                     Deadline deadline) {
  std::string peer = params.host + ":" + std::to_string(params.port);
  redisContext* c = redisConnectNonBlock(params.host.c_str(), params.port);
  if (c == nullptr) return unavailable("connecting to redis at " + peer + ": out of memory");
  if (c->err) {
    std::string why = c->errstr;
    redisFree(c);
    return unavailable("cannot connect to redis at " + peer + ": " + why +
                       " (is redis-server running there?)");
  }
  std::unique_ptr<Connection> conn(new Connection(c, peer));
  short rev = 0;
  TIERKV_RETURN_IF_ERROR(conn->wait(POLLOUT, deadline, &rev));
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err != 0)
    return unavailable("cannot connect to redis at " + peer + ": " + errno_text(err) +
                       " (is redis-server running there?)");
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (!params.password.empty()) {
    CommandBatch auth;
    if (params.username.empty()) {
      auth.command({"AUTH", params.password});
    } else {
      auth.command({"AUTH", params.username, params.password});
    }
    std::vector<ReplyPtr> replies;
    TIERKV_RETURN_IF_ERROR(conn->exchange(auth, deadline, &replies));
    if (!is_status(replies[0].get(), "OK"))
      return failed_precondition("redis at " + peer + " refused AUTH: " +
                                 describe(replies[0].get()) + "; check the password");
  }
  return conn;
}

Status Connection::send_some(std::vector<iovec>& iov, std::size_t& first) {
  while (first < iov.size()) {
    msghdr m{};
    m.msg_iov = &iov[first];
    m.msg_iovlen = std::min<std::size_t>(iov.size() - first, IOV_MAX);
    ssize_t n = ::sendmsg(ctx_->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Status::Ok();
      return fail(unavailable("sending to redis at " + peer_ + ": " + errno_text(errno)));
    }
    std::size_t left = std::size_t(n);
    while (left > 0 && first < iov.size()) {
      if (left >= iov[first].iov_len) {
        left -= iov[first].iov_len;
        ++first;
      } else {
        iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
        iov[first].iov_len -= left;
        left = 0;
      }
    }
  }
  return Status::Ok();
}

Status Connection::receive_some(std::vector<ReplyPtr>* replies, std::size_t want, ReplySink* sink) {
  if (sink != nullptr) {
    bool would_block = false;
    Status s = flat_.pump(ctx_->fd, replies, want, sink, &would_block);
    if (!s.ok()) return fail(unavailable("redis at " + peer_ + ": " + s.message()));
    if (replies->size() == want && !flat_.idle())
      return fail(unavailable("redis at " + peer_ + " sent more than the replies asked for"));
    used_ = used_ || !replies->empty();
    return Status::Ok();
  }
  // Replies are taken after every read, so that the reader's buffer stays small.
  for (int i = 0; i < 64 && replies->size() < want; ++i) {
    ssize_t n = ::recv(ctx_->fd, rbuf_.data(), rbuf_.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Status::Ok();
      return fail(unavailable("reading from redis at " + peer_ + ": " + errno_text(errno)));
    }
    if (n == 0) return fail(unavailable("redis at " + peer_ + " closed the connection"));
    if (redisReaderFeed(ctx_->reader, rbuf_.data(), std::size_t(n)) != REDIS_OK)
      return fail(unavailable("redis reader at " + peer_ + ": out of memory"));
    TIERKV_RETURN_IF_ERROR(take_replies(replies, want));
    if (std::size_t(n) < rbuf_.size()) return Status::Ok();
  }
  return Status::Ok();
}

Status Connection::take_replies(std::vector<ReplyPtr>* replies, std::size_t want) {
  while (replies->size() < want) {
    void* r = nullptr;
    if (redisReaderGetReply(ctx_->reader, &r) != REDIS_OK)
      return fail(
          unavailable("malformed reply from redis at " + peer_ + ": " + ctx_->reader->errstr));
    if (r == nullptr) break;
    replies->emplace_back(static_cast<redisReply*>(r));
    used_ = true;
  }
  return Status::Ok();
}

Status Connection::exchange(const CommandBatch& batch, Deadline deadline,
                            std::vector<ReplyPtr>* replies, ReplySink* sink) {
  replies->clear();
  if (broken_) return unavailable("redis connection to " + peer_ + " failed before");
  const std::size_t want = std::size_t(batch.commands());
  std::vector<iovec> iov = batch.iovecs();
  std::size_t first = 0;
  if (ctx_->reader->pos != ctx_->reader->len || !flat_.idle())
    return fail(internal_error("redis connection to " + peer_ + " has unread bytes"));
  for (;;) {
    TIERKV_RETURN_IF_ERROR(send_some(iov, first));
    if (sink == nullptr) TIERKV_RETURN_IF_ERROR(take_replies(replies, want));
    if (replies->size() == want) return Status::Ok();
    short rev = 0;
    short events = POLLIN | (first < iov.size() ? POLLOUT : 0);
    TIERKV_RETURN_IF_ERROR(wait(events, deadline, &rev));
    if (rev & (POLLIN | POLLERR | POLLHUP))
      TIERKV_RETURN_IF_ERROR(receive_some(replies, want, sink));
  }
}

}  // namespace tierkv::redis
