// The Redis store (tierkv/redis_store.h): records as one header value plus per-layer values
// (layout.h), written in one MULTI/EXEC and read with one MGET on the record's node (router.h).
#include "tierkv/redis_store.h"

#include <hiredis/hiredis.h>

#include <array>
#include <atomic>
#include <cctype>
#include <cstring>
#include <mutex>

#include "core/record.h"
#include "tiers/redis/layout.h"
#include "tiers/redis/resp.h"
#include "tiers/redis/router.h"

namespace tierkv {
namespace {

using redis::Clock;
using redis::CommandBatch;
using redis::Deadline;
using redis::RecordLayout;
using redis::ReplyPtr;

constexpr std::uint64_t kMinValueBytes = 4096;
constexpr std::uint64_t kMaxValueBytes = std::uint64_t(512) << 20;  // Redis's proto-max-bulk-len
constexpr std::chrono::milliseconds kPayloadTtlMargin{1000};

double micros_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

std::string human_bytes(std::uint64_t b) {
  if (b % (1u << 20) == 0) return std::to_string(b >> 20) + " MiB";
  if (b % (1u << 10) == 0) return std::to_string(b >> 10) + " KiB";
  return std::to_string(b) + " B";
}

// The miss a failed exchange with the server is.
MissReason transport_reason(const Status& s) {
  return s.code() == StatusCode::kDeadlineExceeded ? MissReason::kTimeout
                                                   : MissReason::kUnavailable;
}

// What a failed exchange returns to the caller: DeadlineExceeded stays, anything else (refused
// connections, a refused password, a misconfigured cluster) is Unavailable, message kept.
Status unreachable(const Status& s) {
  if (s.ok() || s.code() == StatusCode::kDeadlineExceeded || s.code() == StatusCode::kUnavailable)
    return s;
  return unavailable(s.message());
}

// A reply that says the server cannot serve now (loading, cluster down, out of memory, ...).
Status server_error(const redisReply* r, const std::string& what) {
  std::string_view t = redis::reply_text(r);
  if (t.starts_with("OOM"))
    return resource_exhausted(what + ": redis is out of memory (" + std::string(t) +
                              "); raise maxmemory or set an eviction policy or a ttl");
  return unavailable(what + ": redis answered " + redis::describe(r));
}

void put_u64(std::vector<std::uint8_t>& v, std::uint64_t x) {
  for (int i = 0; i < 8; ++i)
    v.push_back(std::uint8_t(x >> (8 * i)));
}

std::uint64_t get_u64(const char* p) {
  std::uint64_t x = 0;
  for (int i = 7; i >= 0; --i)
    x = (x << 8) | std::uint8_t(p[i]);
  return x;
}

Status check_write_replies(const std::vector<ReplyPtr>& replies, std::size_t sets);

class RedisStore final : public Store {
 public:
  explicit RedisStore(const RedisStoreOptions& o) : options_(o), router_(o) {
    caps_.name = router_.cluster() ? "redis-cluster" : "redis";
    caps_.description = caps_.name + " " + endpoints() + " (values of at most " +
                        human_bytes(o.max_value_bytes) + ", ttl " +
                        (o.ttl.count() ? std::to_string(o.ttl.count()) + " ms" : "none") + ")";
    caps_.persistent = true;  // outlives the process; the server's own persistence is its config
    caps_.shared = true;
    caps_.max_value_bytes = o.max_value_bytes;
  }

  Status connect() {
    return router_.connect(Clock::now() + options_.connect_timeout + options_.command_timeout);
  }

  const StoreCapabilities& capabilities() const override { return caps_; }
  Result<bool> contains(const RecordId& id) override;
  Status read(const RecordId& id, std::span<std::uint8_t> payload) override;
  Status write(const RecordId& id, std::span<const std::uint8_t> payload) override;
  Status erase(const RecordId& id) override;
  StoreStats stats() const override;

 private:
  std::string endpoints() const;
  Deadline deadline() const { return Clock::now() + options_.command_timeout; }
  RecordLayout layout(const RecordId& id) const {
    return RecordLayout(id, options_.key_prefix,
                        RecordLayout::parts_for(id.layer_bytes, options_.max_value_bytes));
  }
  void write_transaction(const RecordLayout& lay, std::span<const std::uint8_t> payload,
                         std::span<const std::uint8_t> header, CommandBatch* batch) const;
  Status read_once(const RecordId& id, const RecordLayout& layout, std::span<std::uint8_t> payload,
                   Deadline deadline, MissReason* reason, std::uint64_t* writer_parts);
  Status check_values(const redisReply* reply, const RecordId& id, const RecordLayout& layout,
                      std::span<std::uint8_t> payload, MissReason* reason,
                      std::uint64_t* writer_parts);
  Status remove(const RecordLayout& layout, Deadline deadline);
  Status miss(MissReason reason, Status why, Clock::time_point t0);
  void count_write(bool ok, std::uint64_t bytes, Clock::time_point t0);

  const RedisStoreOptions options_;
  redis::Router router_;
  StoreCapabilities caps_;

  // Counters: relaxed atomics, each an independent tally read only for reporting.
  std::atomic<std::uint64_t> hits_{0}, writes_{0}, write_failures_{0}, erases_{0};
  std::atomic<std::uint64_t> bytes_read_{0}, bytes_written_{0};
  std::array<std::atomic<std::uint64_t>, std::size_t(MissReason::kCount)> misses_{};
  mutable std::mutex latency_mu_;
  LatencyHistogram read_latency_, write_latency_;  // GUARDED_BY(latency_mu_)
};

std::string RedisStore::endpoints() const {
  if (!router_.cluster()) return options_.server.host + ":" + std::to_string(options_.server.port);
  std::string s = "seeds";
  for (const RedisEndpoint& e : options_.cluster_seeds)
    s += " " + e.host + ":" + std::to_string(e.port);
  return s;
}

// ---- write -----------------------------------------------------------------------------------

Status RedisStore::write(const RecordId& id, std::span<const std::uint8_t> payload) {
  const auto t0 = Clock::now();
  TIERKV_RETURN_IF_ERROR(validate_record_id(id));
  if (payload.size() != id.payload_bytes())
    return invalid_argument("redis store write: payload of " + std::to_string(payload.size()) +
                            " bytes for a record of " + std::to_string(id.payload_bytes()));
  Result<std::vector<std::uint8_t>> header = encode_record_header(id, payload);
  if (!header.ok()) return header.status();
  const RecordLayout lay = layout(id);
  put_u64(*header, lay.parts_per_layer());

  // Payload values first, the header last, in one atomic command (MSET) or, with a ttl, one
  // transaction: a reader (MGET, atomic as well) sees the whole record or nothing of it.
  CommandBatch batch;
  if (options_.ttl.count() > 0) {
    write_transaction(lay, payload, *header, &batch);
  } else {
    batch.begin(int(2 * lay.values() + 3));
    batch.arg("MSET");
    for (std::size_t v = 0; v < lay.values(); ++v) {
      batch.arg(lay.value_key(v));
      batch.arg_ref(lay.value_bytes(payload, v));
    }
    batch.arg(lay.header_key());
    batch.arg_ref(*header);
  }
  std::vector<ReplyPtr> replies;
  Status s = unreachable(router_.execute(lay.slot(), batch, deadline(), &replies));
  if (s.ok()) s = check_write_replies(replies, lay.values() + 1);
  count_write(s.ok(), payload.size(), t0);
  return s;
}

// MULTI, SET ... PX for every value and then the header (which expires first), EXEC.
void RedisStore::write_transaction(const RecordLayout& lay, std::span<const std::uint8_t> payload,
                                   std::span<const std::uint8_t> header,
                                   CommandBatch* batch) const {
  const std::int64_t payload_ttl = (options_.ttl + kPayloadTtlMargin).count();
  batch->command({"MULTI"});
  for (std::size_t v = 0; v <= lay.values(); ++v) {
    const bool head = v == lay.values();
    batch->begin(5);
    batch->arg("SET");
    batch->arg(head ? lay.header_key() : lay.value_key(v));
    batch->arg_ref(head ? header : lay.value_bytes(payload, v));
    batch->arg("PX");
    batch->arg(head ? std::int64_t(options_.ttl.count()) : payload_ttl);
  }
  batch->command({"EXEC"});
}

// OK when the write's replies say every value was stored: +OK for an MSET, or an EXEC array of
// `sets` +OKs for a transaction.
Status check_write_replies(const std::vector<ReplyPtr>& replies, std::size_t sets) {
  const redisReply* last = replies.back().get();
  if (replies.size() == 1)
    return redis::is_status(last, "OK") ? Status::Ok() : server_error(last, "redis store write");
  if (last->type != REDIS_REPLY_ARRAY || last->elements != sets) {
    for (const ReplyPtr& r : replies)  // the queued command that failed says more than EXEC
      if (redis::is_error(r.get())) return server_error(r.get(), "redis store write");
    return server_error(last, "redis store write");
  }
  for (std::size_t i = 0; i < last->elements; ++i)
    if (!redis::is_status(last->element[i], "OK"))
      return server_error(last->element[i], "redis store write");
  return Status::Ok();
}

void RedisStore::count_write(bool ok, std::uint64_t bytes, Clock::time_point t0) {
  if (ok) {
    writes_.fetch_add(1, std::memory_order_relaxed);
    bytes_written_.fetch_add(bytes, std::memory_order_relaxed);
  } else {
    write_failures_.fetch_add(1, std::memory_order_relaxed);
  }
  std::lock_guard<std::mutex> lock(latency_mu_);
  write_latency_.add(micros_since(t0));
}

// ---- read ------------------------------------------------------------------------------------

Status RedisStore::read(const RecordId& id, std::span<std::uint8_t> payload) {
  const auto t0 = Clock::now();
  TIERKV_RETURN_IF_ERROR(validate_record_id(id));
  if (payload.size() != id.payload_bytes())
    return invalid_argument("redis store read: buffer of " + std::to_string(payload.size()) +
                            " bytes for a record of " + std::to_string(id.payload_bytes()));
  const Deadline dl = deadline();
  MissReason reason = MissReason::kAbsent;
  std::uint64_t writer_parts = 0;
  RecordLayout lay = layout(id);
  Status s = read_once(id, lay, payload, dl, &reason, &writer_parts);
  if (!s.ok() && writer_parts != 0) {
    // Written by a store with another max_value_bytes: read again with the writer's split.
    lay = RecordLayout(id, options_.key_prefix, std::uint32_t(writer_parts));
    s = read_once(id, lay, payload, dl, &reason, &writer_parts);
  }
  if (!s.ok()) {
    if (reason == MissReason::kCorrupt || reason == MissReason::kForeign ||
        reason == MissReason::kEvicted)
      remove(lay, dl).ignore();  // best effort: a later read finds it broken again otherwise
    return miss(reason, s, t0);
  }
  hits_.fetch_add(1, std::memory_order_relaxed);
  bytes_read_.fetch_add(payload.size(), std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(latency_mu_);
  read_latency_.add(micros_since(t0));
  return Status::Ok();
}

Status RedisStore::miss(MissReason reason, Status why, Clock::time_point t0) {
  misses_[std::size_t(reason)].fetch_add(1, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(latency_mu_);
  read_latency_.add(micros_since(t0));
  return why;
}

// One MGET of the header and every value, the values landing in `payload` as they arrive. On a
// miss, `reason` says why; `writer_parts` is set (non-zero) only when the record is there but was
// split into another number of parts than `layout` has.
Status RedisStore::read_once(const RecordId& id, const RecordLayout& layout,
                             std::span<std::uint8_t> payload, Deadline deadline, MissReason* reason,
                             std::uint64_t* writer_parts) {
  *writer_parts = 0;
  CommandBatch batch;
  batch.begin(int(layout.values() + 2));
  batch.arg("MGET");
  batch.arg(layout.header_key());
  for (std::size_t v = 0; v < layout.values(); ++v)
    batch.arg(layout.value_key(v));
  redis::ReplySink sink;
  sink.targets.reserve(layout.values() + 1);
  sink.targets.emplace_back();  // the header is an ordinary reply
  for (std::size_t v = 0; v < layout.values(); ++v)
    sink.targets.push_back(layout.value_bytes(payload, v));

  std::vector<ReplyPtr> replies;
  Status s = router_.execute(layout.slot(), batch, deadline, &replies, &sink);
  if (!s.ok()) {
    *reason = transport_reason(s);
    return unreachable(s);
  }
  return check_values(replies[0].get(), id, layout, payload, reason, writer_parts);
}

Status RedisStore::check_values(const redisReply* reply, const RecordId& id,
                                const RecordLayout& layout, std::span<std::uint8_t> payload,
                                MissReason* reason, std::uint64_t* writer_parts) {
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != layout.values() + 1) {
    *reason = MissReason::kUnavailable;
    return server_error(reply, "redis store read");
  }
  const redisReply* head = reply->element[0];
  std::size_t present = 0;
  for (std::size_t v = 0; v < layout.values(); ++v)
    present += !redis::is_nil(reply->element[v + 1]);
  if (redis::is_nil(head)) {
    // Values without a header: what eviction (maxmemory, or ttl) left of a record.
    *reason = present ? MissReason::kEvicted : MissReason::kAbsent;
    return not_found(present ? "redis record partly evicted" : "not in redis");
  }
  *reason = MissReason::kCorrupt;
  std::string_view hv = redis::reply_text(head);
  if (hv.size() < redis::kPartTrailerBytes) return data_loss("redis record header too short");
  const auto* hb = reinterpret_cast<const std::uint8_t*>(hv.data());
  Result<RecordHeader> header = parse_record_header({hb, hv.size() - redis::kPartTrailerBytes});
  if (!header.ok()) return header.status();
  if (hv.size() != header->header_bytes + redis::kPartTrailerBytes)
    return data_loss("redis record header value has " + std::to_string(hv.size()) + " bytes");
  Status who = check_record_id(*header, id);
  if (!who.ok()) {
    *reason = MissReason::kForeign;
    return who;
  }
  const std::uint64_t parts = get_u64(hv.data() + header->header_bytes);
  if (!RecordLayout::valid_parts(id.layer_bytes, parts))
    return data_loss("redis record header names " + std::to_string(parts) + " parts per layer");
  if (parts != layout.parts_per_layer()) {
    *reason = MissReason::kAbsent;
    *writer_parts = parts;
    return not_found("redis record split into another number of parts");
  }
  for (std::size_t v = 0; v < layout.values(); ++v) {
    const redisReply* e = reply->element[v + 1];
    if (redis::is_nil(e)) {
      *reason = MissReason::kEvicted;
      return not_found("redis record value " + std::to_string(v) + " evicted");
    }
    std::span<std::uint8_t> dst = layout.value_bytes(payload, v);
    if (redis::delivered(e)) continue;
    if (e->type != REDIS_REPLY_STRING || e->len != dst.size())
      return data_loss("redis record value " + std::to_string(v) + " is " + redis::describe(e) +
                       ", not " + std::to_string(dst.size()) + " bytes");
  }
  return verify_record_payload(*header, payload);
}

// ---- erase, contains, stats --------------------------------------------------------------------

Status RedisStore::remove(const RecordLayout& layout, Deadline deadline) {
  CommandBatch batch;
  batch.begin(int(layout.values() + 2));
  batch.arg("DEL");
  batch.arg(layout.header_key());
  for (std::size_t v = 0; v < layout.values(); ++v)
    batch.arg(layout.value_key(v));
  std::vector<ReplyPtr> replies;
  TIERKV_RETURN_IF_ERROR(unreachable(router_.execute(layout.slot(), batch, deadline, &replies)));
  if (redis::is_error(replies[0].get())) return server_error(replies[0].get(), "redis store erase");
  return Status::Ok();
}

Status RedisStore::erase(const RecordId& id) {
  TIERKV_RETURN_IF_ERROR(validate_record_id(id));
  TIERKV_RETURN_IF_ERROR(remove(layout(id), deadline()));
  erases_.fetch_add(1, std::memory_order_relaxed);
  return Status::Ok();
}

Result<bool> RedisStore::contains(const RecordId& id) {
  TIERKV_RETURN_IF_ERROR(validate_record_id(id));
  const RecordLayout lay = layout(id);
  CommandBatch batch;
  batch.command({"EXISTS", lay.header_key()});
  std::vector<ReplyPtr> replies;
  TIERKV_RETURN_IF_ERROR(unreachable(router_.execute(lay.slot(), batch, deadline(), &replies)));
  const redisReply* r = replies[0].get();
  if (r->type != REDIS_REPLY_INTEGER) return server_error(r, "redis store contains");
  return r->integer > 0;
}

StoreStats RedisStore::stats() const {
  StoreStats s;
  s.hits = hits_.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < s.misses.size(); ++i)
    s.misses[i] = misses_[i].load(std::memory_order_relaxed);
  s.writes = writes_.load(std::memory_order_relaxed);
  s.write_failures = write_failures_.load(std::memory_order_relaxed);
  s.erases = erases_.load(std::memory_order_relaxed);
  s.bytes_read = bytes_read_.load(std::memory_order_relaxed);
  s.bytes_written = bytes_written_.load(std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(latency_mu_);
  s.read_latency = read_latency_;
  s.write_latency = write_latency_;
  return s;
}

// ---- options -----------------------------------------------------------------------------------

Status check_endpoint(const RedisEndpoint& e, const char* what) {
  if (e.host.empty()) return invalid_argument(std::string(what) + ": empty host");
  if (e.port <= 0 || e.port > 65535)
    return invalid_argument(std::string(what) + ": port " + std::to_string(e.port) +
                            " is not in 1..65535");
  return Status::Ok();
}

Status check_options(const RedisStoreOptions& o) {
  if (o.cluster_seeds.empty()) TIERKV_RETURN_IF_ERROR(check_endpoint(o.server, "redis server"));
  for (const RedisEndpoint& e : o.cluster_seeds)
    TIERKV_RETURN_IF_ERROR(check_endpoint(e, "redis cluster seed"));
  if (o.connect_timeout.count() <= 0 || o.command_timeout.count() <= 0)
    return invalid_argument("redis store: connect_timeout and command_timeout must be positive");
  if (o.backoff_min.count() <= 0 || o.backoff_max < o.backoff_min)
    return invalid_argument("redis store: need 0 < backoff_min <= backoff_max");
  if (o.ttl.count() < 0) return invalid_argument("redis store: negative ttl");
  if (o.max_value_bytes < kMinValueBytes || o.max_value_bytes > kMaxValueBytes)
    return invalid_argument("redis store: max_value_bytes " + std::to_string(o.max_value_bytes) +
                            " is not in 4 KiB..512 MiB");
  if (o.pool_size < 1 || o.pool_size > 1024)
    return invalid_argument("redis store: pool_size must be in 1..1024");
  if (o.key_prefix.empty() || o.key_prefix.size() > 32)
    return invalid_argument("redis store: key_prefix must have 1 to 32 characters");
  for (char c : o.key_prefix)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.')
      return invalid_argument("redis store: key_prefix '" + o.key_prefix +
                              "' may hold only letters, digits, '-', '_' and '.'");
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<Store>> open_redis_store(const RedisStoreOptions& options) {
  TIERKV_RETURN_IF_ERROR(check_options(options));
  auto store = std::make_unique<RedisStore>(options);
  if (options.connect_at_open) TIERKV_RETURN_IF_ERROR(store->connect());
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace tierkv
