#include "tiers/redis/resp.h"

#include <hiredis/hiredis.h>

#include <charconv>
#include <cstdlib>
#include <cstring>

namespace tierkv::redis {

void ReplyDeleter::operator()(redisReply* r) const { freeReplyObject(r); }

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
  for (std::string_view a : args) arg(a);
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

// ---- reply objects with a sink -----------------------------------------------------------------
// The same objects hiredis's default functions build (freeReplyObject frees them), except that a
// bulk string a ReplySink asks for is copied into its target instead of a fresh allocation.

namespace {

redisReply* new_reply(int type) {
  auto* r = static_cast<redisReply*>(std::calloc(1, sizeof(redisReply)));
  if (r) r->type = type;
  return r;
}

void attach(const redisReadTask* task, redisReply* r) {
  if (task->parent) {
    auto* parent = static_cast<redisReply*>(task->parent->obj);
    parent->element[task->idx] = r;
  }
}

std::span<std::uint8_t>* sink_target(const redisReadTask* task, std::size_t len) {
  auto* sink = static_cast<ReplySink*>(task->privdata);
  if (sink == nullptr || task->type != REDIS_REPLY_STRING || task->parent == nullptr ||
      task->parent->parent != nullptr)
    return nullptr;
  if (std::size_t(task->parent->elements) != sink->targets.size()) return nullptr;
  std::span<std::uint8_t>& t = sink->targets[std::size_t(task->idx)];
  return t.size() == len ? &t : nullptr;
}

void* create_string(const redisReadTask* task, char* str, std::size_t len) {
  redisReply* r = new_reply(task->type);
  if (r == nullptr) return nullptr;
  if (std::span<std::uint8_t>* t = sink_target(task, len)) {
    std::memcpy(t->data(), str, len);
    r->integer = 1;
  } else {
    r->str = static_cast<char*>(std::malloc(len + 1));
    if (r->str == nullptr) {
      std::free(r);
      return nullptr;
    }
    std::memcpy(r->str, str, len);
    r->str[len] = '\0';
  }
  r->len = len;
  attach(task, r);
  return r;
}

void* create_array(const redisReadTask* task, int elements) {
  redisReply* r = new_reply(REDIS_REPLY_ARRAY);
  if (r == nullptr) return nullptr;
  if (elements > 0) {
    r->element = static_cast<redisReply**>(std::calloc(std::size_t(elements), sizeof(redisReply*)));
    if (r->element == nullptr) {
      std::free(r);
      return nullptr;
    }
  }
  r->elements = std::size_t(elements);
  attach(task, r);
  return r;
}

void* create_integer(const redisReadTask* task, long long value) {
  redisReply* r = new_reply(REDIS_REPLY_INTEGER);
  if (r == nullptr) return nullptr;
  r->integer = value;
  attach(task, r);
  return r;
}

void* create_nil(const redisReadTask* task) {
  redisReply* r = new_reply(REDIS_REPLY_NIL);
  if (r == nullptr) return nullptr;
  attach(task, r);
  return r;
}

}  // namespace

redisReplyObjectFunctions* sink_reply_functions() {
#if HIREDIS_MAJOR >= 1
  static redisReplyObjectFunctions fns = {create_string, create_array, create_integer,
                                          nullptr,       create_nil,   nullptr,
                                          freeReplyObject};
#else
  static redisReplyObjectFunctions fns = {create_string, create_array, create_integer, create_nil,
                                          freeReplyObject};
#endif
  return &fns;
}

bool delivered(const redisReply* r) {
  return r != nullptr && r->type == REDIS_REPLY_STRING && r->str == nullptr && r->integer == 1;
}

// ---- helpers ---------------------------------------------------------------------------------

bool is_error(const redisReply* r) { return r != nullptr && r->type == REDIS_REPLY_ERROR; }
bool is_nil(const redisReply* r) { return r != nullptr && r->type == REDIS_REPLY_NIL; }
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
    case REDIS_REPLY_ERROR: return "error '" + std::string(reply_text(r)) + "'";
    case REDIS_REPLY_STATUS: return "status '" + std::string(reply_text(r)) + "'";
    case REDIS_REPLY_STRING: return "a string of " + std::to_string(r->len) + " bytes";
    case REDIS_REPLY_INTEGER: return "integer " + std::to_string(r->integer);
    case REDIS_REPLY_NIL: return "nil";
    case REDIS_REPLY_ARRAY: return "an array of " + std::to_string(r->elements);
    default: return "reply type " + std::to_string(r->type);
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
