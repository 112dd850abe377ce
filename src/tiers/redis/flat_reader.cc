#include "tiers/redis/flat_reader.h"

#include <hiredis/hiredis.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>

namespace tierkv::redis {
namespace {

constexpr std::size_t kBufferBytes = std::size_t(256) << 10;
// A bulk body with at least this much left goes from the socket straight to its destination;
// a shorter rest goes through the buffer with what follows it (fewer system calls).
constexpr std::size_t kDirectBytes = std::size_t(32) << 10;

redisReply* new_reply(int type) {
  auto* r = static_cast<redisReply*>(std::calloc(1, sizeof(redisReply)));
  if (r) r->type = type;
  return r;
}

bool parse_int(std::string_view s, long long* v) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
  return ec == std::errc() && p == s.data() + s.size();
}

Status out_of_memory() {
  return unavailable("redis reply: out of memory");
}

}  // namespace

FlatReader::FlatReader() : buf_(kBufferBytes) {}

Status FlatReader::receive(int fd, char* dst, std::size_t n, std::size_t* got, bool* would_block) {
  *got = 0;
  for (;;) {
    ssize_t r = ::recv(fd, dst, n, MSG_DONTWAIT);
    if (r > 0) {
      *got = std::size_t(r);
      return Status::Ok();
    }
    if (r == 0) return unavailable("the server closed the connection");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      *would_block = true;
      return Status::Ok();
    }
    return unavailable(std::string("recv: ") + std::strerror(errno));
  }
}

Status FlatReader::pump(int fd, std::vector<ReplyPtr>* replies, std::size_t want, ReplySink* sink,
                        bool* would_block) {
  *would_block = false;
  while (replies->size() < want) {
    bool progress = false;
    TIERKV_RETURN_IF_ERROR(parse(replies, sink, &progress));
    if (replies->size() >= want) break;
    if (progress) continue;
    std::size_t got = 0;
    const std::size_t rest = bulk_len_ - bulk_got_;
    if (state_ == State::kBulk && rest >= kDirectBytes) {  // the buffer is empty here
      TIERKV_RETURN_IF_ERROR(
          receive(fd, reinterpret_cast<char*>(bulk_dst_) + bulk_got_, rest, &got, would_block));
      bulk_got_ += got;
    } else {
      if (begin_ > 0) {  // keep the unparsed bytes at the front
        std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
      }
      if (end_ == buf_.size()) return data_loss("redis reply line longer than 256 KiB");
      TIERKV_RETURN_IF_ERROR(
          receive(fd, buf_.data() + end_, buf_.size() - end_, &got, would_block));
      end_ += got;
    }
    if (*would_block) return Status::Ok();
  }
  return Status::Ok();
}

Status FlatReader::parse(std::vector<ReplyPtr>* replies, ReplySink* sink, bool* progress) {
  for (;;) {
    if (begin_ == end_) begin_ = end_ = 0;
    switch (state_) {
      case State::kLine: {
        const char* start = buf_.data() + begin_;
        const auto* nl = static_cast<const char*>(std::memchr(start, '\n', end_ - begin_));
        if (nl == nullptr) return Status::Ok();
        if (nl == start || nl[-1] != '\r') return data_loss("redis reply line without CRLF");
        std::string_view line(start, std::size_t(nl - 1 - start));
        begin_ += line.size() + 2;
        *progress = true;
        TIERKV_RETURN_IF_ERROR(parse_line(line, replies, sink));
        break;
      }
      case State::kBulk: {
        std::size_t n = std::min(end_ - begin_, bulk_len_ - bulk_got_);
        if (n > 0) {
          std::memcpy(bulk_dst_ + bulk_got_, buf_.data() + begin_, n);
          begin_ += n;
          bulk_got_ += n;
          *progress = true;
        }
        if (bulk_got_ < bulk_len_) return Status::Ok();
        state_ = State::kBulkEnd;
        *progress = true;
        break;
      }
      case State::kBulkEnd: {
        if (end_ - begin_ < 2) return Status::Ok();
        if (buf_[begin_] != '\r' || buf_[begin_ + 1] != '\n')
          return data_loss("redis bulk string not followed by CRLF");
        begin_ += 2;
        state_ = State::kLine;
        *progress = true;
        if (array_) {
          ++array_next_;
          if (array_next_ == array_->elements) replies->push_back(std::move(array_));
        } else {
          replies->push_back(std::move(pending_));
        }
        break;
      }
    }
  }
}

void FlatReader::finish(redisReply* r, std::vector<ReplyPtr>* replies) {
  if (!array_) {
    replies->emplace_back(r);
    return;
  }
  array_->element[array_next_++] = r;
  if (array_next_ == array_->elements) replies->push_back(std::move(array_));
}

Status FlatReader::parse_line(std::string_view line, std::vector<ReplyPtr>* replies,
                              ReplySink* sink) {
  if (line.empty()) return data_loss("empty redis reply line");
  const char type = line[0];
  std::string_view rest = line.substr(1);
  long long n = 0;
  switch (type) {
    case '+':
    case '-': {
      redisReply* r = new_reply(type == '+' ? REDIS_REPLY_STATUS : REDIS_REPLY_ERROR);
      if (r == nullptr || (r->str = static_cast<char*>(std::malloc(rest.size() + 1))) == nullptr) {
        std::free(r);
        return out_of_memory();
      }
      std::memcpy(r->str, rest.data(), rest.size());
      r->str[rest.size()] = '\0';
      r->len = rest.size();
      finish(r, replies);
      return Status::Ok();
    }
    case ':': {
      if (!parse_int(rest, &n)) return data_loss("bad redis integer reply");
      redisReply* r = new_reply(REDIS_REPLY_INTEGER);
      if (r == nullptr) return out_of_memory();
      r->integer = n;
      finish(r, replies);
      return Status::Ok();
    }
    case '$':
      if (!parse_int(rest, &n)) return data_loss("bad redis bulk length");
      return start_bulk(n, replies, sink);
    case '*': {
      if (!parse_int(rest, &n)) return data_loss("bad redis array length");
      if (array_) return data_loss("nested redis array where a flat reply was expected");
      if (n < 0) {
        redisReply* r = new_reply(REDIS_REPLY_NIL);
        if (r == nullptr) return out_of_memory();
        finish(r, replies);
        return Status::Ok();
      }
      ReplyPtr a(new_reply(REDIS_REPLY_ARRAY));
      if (!a) return out_of_memory();
      if (n > 0) {
        a->element = static_cast<redisReply**>(std::calloc(std::size_t(n), sizeof(redisReply*)));
        if (a->element == nullptr) return out_of_memory();
      }
      a->elements = std::size_t(n);
      if (n == 0) {
        replies->push_back(std::move(a));
      } else {
        array_ = std::move(a);
        array_next_ = 0;
      }
      return Status::Ok();
    }
    default:
      return data_loss("unexpected redis reply type '" + std::string(1, type) + "'");
  }
}

Status FlatReader::start_bulk(long long len, std::vector<ReplyPtr>* replies, ReplySink* sink) {
  if (len < 0) {
    redisReply* r = new_reply(REDIS_REPLY_NIL);
    if (r == nullptr) return out_of_memory();
    finish(r, replies);
    return Status::Ok();
  }
  redisReply* r = new_reply(REDIS_REPLY_STRING);
  if (r == nullptr) return out_of_memory();
  r->len = std::size_t(len);
  std::span<std::uint8_t>* target = nullptr;
  if (array_ && sink && sink->targets.size() == array_->elements &&
      sink->targets[array_next_].size() == std::size_t(len))
    target = &sink->targets[array_next_];
  if (target) {
    bulk_dst_ = target->data();
    r->integer = 1;  // delivered (resp.h)
  } else {
    r->str = static_cast<char*>(std::malloc(std::size_t(len) + 1));
    if (r->str == nullptr) {
      std::free(r);
      return out_of_memory();
    }
    r->str[len] = '\0';
    bulk_dst_ = reinterpret_cast<std::uint8_t*>(r->str);
  }
  if (array_) {
    array_->element[array_next_] = r;  // owned by the array from now on
  } else {
    pending_.reset(r);
  }
  bulk_len_ = std::size_t(len);
  bulk_got_ = 0;
  state_ = State::kBulk;
  return Status::Ok();
}

}  // namespace tierkv::redis
