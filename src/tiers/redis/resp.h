// RESP for the Redis tier: commands encoded for one vectored send, replies as owned hiredis
// objects, and a reply sink that lets bulk strings land straight in a caller's buffer.
//
// Commands are encoded here rather than by hiredis so that payload values go from the host slot
// to the socket without being copied (hiredis copies every argument into its output buffer,
// twice); replies are parsed by hiredis's reader.
//
// Thread safety: values; one object is used by one thread at a time.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

struct redisReply;

namespace tierkv::redis {

struct ReplyDeleter {
  void operator()(redisReply* r) const;
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

// A pipeline of commands. Small arguments (names, keys, numbers) are copied into the batch; large
// ones given to arg_ref() are referenced and must stay valid and unchanged until the exchange that
// sends the batch returns.
class CommandBatch {
 public:
  // Starts a command of `argc` arguments; exactly `argc` arg()/arg_ref() calls must follow.
  void begin(int argc);
  void arg(std::string_view s);
  void arg(std::int64_t v);
  void arg_ref(std::span<const std::uint8_t> bytes);
  // begin() + arg() for each.
  void command(std::initializer_list<std::string_view> args);

  int commands() const { return commands_; }
  std::size_t bytes() const { return bytes_; }
  bool empty() const { return commands_ == 0; }
  void clear();

  // The encoded batch as I/O vectors. Valid until the batch changes.
  std::vector<iovec> iovecs() const;

 private:
  struct Segment {
    const std::uint8_t* ext;  // nullptr: [off, off + len) of small_
    std::size_t off, len;
  };
  void append_small(std::string_view s);

  std::string small_;
  std::vector<Segment> segments_;
  int commands_ = 0;
  std::size_t bytes_ = 0;
};

// Where the bulk strings of one array reply go: element i of a top-level array reply of exactly
// `targets.size()` elements is received straight into targets[i] when its length equals that
// target's size (and kept as an ordinary reply otherwise). Such a delivered element's reply has
// str == nullptr, its len, and integer == 1. (flat_reader.h does the receiving.)
struct ReplySink {
  std::vector<std::span<std::uint8_t>> targets;
};

// Whether a reply element was delivered into a ReplySink target.
bool delivered(const redisReply* r);

// Reply helpers.
bool is_error(const redisReply* r);
bool is_nil(const redisReply* r);
bool is_status(const redisReply* r, std::string_view s);
std::string_view reply_text(const redisReply* r);  // string, status or error text; "" otherwise
std::string describe(const redisReply* r);         // for messages

// A MOVED or ASK redirection ("MOVED 3999 127.0.0.1:6381").
struct Redirect {
  bool ask = false;
  int slot = -1;
  std::string host;
  int port = 0;
};
// The redirection an error reply carries, if any.
bool parse_redirect(const redisReply* r, Redirect* out);

}  // namespace tierkv::redis
