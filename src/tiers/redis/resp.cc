#include "tiers/redis/resp.h"

#include <hiredis/hiredis.h>

#include <charconv>
#include <cstring>

namespace tierkv::redis {

void ReplyDeleter::operator()(redisReply* r) const {
  freeReplyObject(r);
}

// ---- CommandBatch ----------------------------------------------------------------------------

void CommandBatch::append_small(std::string_view s) {
  if (!segments_.empty() && segments_.back().ext == nullptr &&
      segments_.back().off + segments_.back().len == small_.size()) {
    segments_.back().len += s.size();
  } else {
    segments_.push_back({nullptr, small_.size(), s.size()});
  }
  small_.append(s);
  bytes_ += s.size();
}

void CommandBatch::begin(int argc) {
  char buf[32];
  buf[0] = '*';
  char* end = std::to_chars(buf + 1, buf + sizeof(buf) - 2, argc).ptr;
  *end++ = '\r';
  *end++ = '\n';
  append_small({buf, std::size_t(end - buf)});
  ++commands_;
}

static std::string_view bulk_header(char (&buf)[32], std::size_t len) {
  buf[0] = '$';
  char* end = std::to_chars(buf + 1, buf + sizeof(buf) - 2, len).ptr;
  *end++ = '\r';
  *end++ = '\n';
  return {buf, std::size_t(end - buf)};
}

void CommandBatch::arg(std::string_view s) {
  char buf[32];
  append_small(bulk_header(buf, s.size()));
  append_small(s);
  append_small("\r\n");
}

void CommandBatch::arg(std::int64_t v) {
  char num[24];
  char* end = std::to_chars(num, num + sizeof(num), v).ptr;
  arg(std::string_view(num, std::size_t(end - num)));
}

void CommandBatch::arg_ref(std::span<const std::uint8_t> bytes) {
  char buf[32];
  append_small(bulk_header(buf, bytes.size()));
  if (!bytes.empty()) {
    segments_.push_back({bytes.data(), 0, bytes.size()});
    bytes_ += bytes.size();
  }
  append_small("\r\n");
}

void CommandBatch::command(std::initializer_list<std::string_view> args) {
  begin(int(args.size()));
  for (std::string_view a : args)
    arg(a);
}

void CommandBatch::clear() {
  small_.clear();
  segments_.clear();
  commands_ = 0;
  bytes_ = 0;
}

std::vector<iovec> CommandBatch::iovecs() const {
  std::vector<iovec> v;
  v.reserve(segments_.size());
  for (const Segment& s : segments_) {
    const void* base = s.ext ? static_cast<const void*>(s.ext) : small_.data() + s.off;
    v.push_back({const_cast<void*>(base), s.len});
  }
  return v;
}

bool delivered(const redisReply* r) {
  return r != nullptr && r->type == REDIS_REPLY_STRING && r->str == nullptr && r->integer == 1;
}

// ---- helpers ---------------------------------------------------------------------------------

bool is_error(const redisReply* r) {
  return r != nullptr && r->type == REDIS_REPLY_ERROR;
}
bool is_nil(const redisReply* r) {
  return r != nullptr && r->type == REDIS_REPLY_NIL;
}
bool is_status(const redisReply* r, std::string_view s) {
  return r != nullptr && r->type == REDIS_REPLY_STATUS && reply_text(r) == s;
}

std::string_view reply_text(const redisReply* r) {
  if (r == nullptr || r->str == nullptr) return {};
  if (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS &&
      r->type != REDIS_REPLY_ERROR)
    return {};
  return {r->str, r->len};
}

std::string describe(const redisReply* r) {
  if (r == nullptr) return "no reply";
  switch (r->type) {
    case REDIS_REPLY_ERROR:
      return "error '" + std::string(reply_text(r)) + "'";
    case REDIS_REPLY_STATUS:
      return "status '" + std::string(reply_text(r)) + "'";
    case REDIS_REPLY_STRING:
      return "a string of " + std::to_string(r->len) + " bytes";
    case REDIS_REPLY_INTEGER:
      return "integer " + std::to_string(r->integer);
    case REDIS_REPLY_NIL:
      return "nil";
    case REDIS_REPLY_ARRAY:
      return "an array of " + std::to_string(r->elements);
    default:
      return "reply type " + std::to_string(r->type);
  }
}

bool parse_redirect(const redisReply* r, Redirect* out) {
  if (!is_error(r)) return false;
  std::string_view t = reply_text(r);
  Redirect d;
  if (t.starts_with("MOVED ")) {
    t.remove_prefix(6);
  } else if (t.starts_with("ASK ")) {
    d.ask = true;
    t.remove_prefix(4);
  } else {
    return false;
  }
  std::size_t sp = t.find(' ');
  std::size_t colon = t.rfind(':');
  if (sp == std::string_view::npos || colon == std::string_view::npos || colon < sp) return false;
  auto [p1, e1] = std::from_chars(t.data(), t.data() + sp, d.slot);
  auto [p2, e2] = std::from_chars(t.data() + colon + 1, t.data() + t.size(), d.port);
  if (e1 != std::errc() || e2 != std::errc() || d.slot < 0 || d.slot >= 16384) return false;
  d.host = std::string(t.substr(sp + 1, colon - sp - 1));
  *out = std::move(d);
  return true;
}

}  // namespace tierkv::redis
