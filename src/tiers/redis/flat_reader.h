// A RESP reader for flat replies that puts payload bytes straight where they belong.
//
// hiredis's reader copies every byte twice on its way to a caller (into its buffer, then into a
// reply object), after the copy out of the socket. For the replies of a record read (an MGET: one
// array of bulk strings and nils, maybe after a +OK for ASKING) this reader receives the body of a
// bulk string that a ReplySink asks for with recv() straight into the sink's target, so a value
// crosses memory once, from the socket into the host slot. Everything else it builds as the same
// reply objects hiredis would (freeReplyObject frees them).
//
// It understands top-level lines (+, -, :), bulk strings ($) and arrays (*) of those; a nested
// array is a protocol error (the caller uses hiredis's reader for batches whose replies nest).
//
// Thread safety: one thread at a time (it belongs to one Connection).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tierkv/status.h"
#include "tiers/redis/resp.h"

namespace tierkv::redis {

class FlatReader {
 public:
  FlatReader();

  // Reads from non-blocking socket `fd` and parses until `replies` holds `want` replies or the
  // socket has nothing more now (*would_block). Unavailable when the peer closed or the socket
  // failed, DataLoss on a malformed or nested reply; the reader is then unusable.
  Status pump(int fd, std::vector<ReplyPtr>* replies, std::size_t want, ReplySink* sink,
              bool* would_block);

  // Whether bytes are left over or a reply is half read (none should be between exchanges).
  bool idle() const {
    return begin_ == end_ && state_ == State::kLine && array_ == nullptr && pending_ == nullptr;
  }

 private:
  enum class State { kLine, kBulk, kBulkEnd };

  Status parse(std::vector<ReplyPtr>* replies, ReplySink* sink, bool* progress);
  Status parse_line(std::string_view line, std::vector<ReplyPtr>* replies, ReplySink* sink);
  Status start_bulk(long long len, std::vector<ReplyPtr>* replies, ReplySink* sink);
  void finish(redisReply* r, std::vector<ReplyPtr>* replies);
  Status receive(int fd, char* dst, std::size_t n, std::size_t* got, bool* would_block);

  std::vector<char> buf_;
  std::size_t begin_ = 0, end_ = 0;  // unparsed bytes: buf_[begin_, end_)

  State state_ = State::kLine;
  std::uint8_t* bulk_dst_ = nullptr;  // where the body of the bulk string being read goes
  std::size_t bulk_len_ = 0, bulk_got_ = 0;
  ReplyPtr pending_;  // that bulk string, when it is not an array's element

  ReplyPtr array_;  // the array being filled (owns its elements, the one being read included)
  std::size_t array_next_ = 0;
};

}  // namespace tierkv::redis
