#include "tiers/fault/fault_store.h"

#include <cstring>
#include <thread>

namespace tierkv {

FaultStore::FaultStore(std::unique_ptr<Store> inner) : inner_(std::move(inner)) {
  caps_ = inner_->capabilities();
  caps_.name = "fault(" + caps_.name + ")";
  caps_.description = "fault-injecting wrapper of: " + caps_.description;
}

FaultStore::~FaultStore() = default;

Status FaultStore::add_rule(const FaultRule& rule) {
  if (rule.op >= FaultOp::kCount) return invalid_argument("fault rule for an unknown operation");
  if ((rule.kind == FaultKind::kCorrupt || rule.kind == FaultKind::kCorruptSilently) &&
      rule.op != FaultOp::kRead)
    return invalid_argument("corruption faults apply to read() only");
  if ((rule.kind == FaultKind::kFail || rule.kind == FaultKind::kFailAfter) &&
      rule.code == StatusCode::kOk)
    return invalid_argument("a failing fault rule needs a code other than OK");
  if (rule.times == 0 || rule.first_call == 0)
    return invalid_argument("fault rule needs first_call >= 1 and times >= 1");
  std::lock_guard<std::mutex> l(mu_);
  rules_.push_back({rule, 0});
  return Status::Ok();
}

void FaultStore::clear_rules() {
  std::lock_guard<std::mutex> l(mu_);
  rules_.clear();
}

std::uint64_t FaultStore::calls(FaultOp op) const {
  std::lock_guard<std::mutex> l(mu_);
  return op < FaultOp::kCount ? calls_[std::size_t(op)] : 0;
}

std::uint64_t FaultStore::injected() const {
  std::lock_guard<std::mutex> l(mu_);
  return injected_;
}

FaultStore::Fired FaultStore::next_call(FaultOp op, const RecordId& id) {
  std::lock_guard<std::mutex> l(mu_);
  const std::uint64_t n = ++calls_[std::size_t(op)];
  for (Armed& a : rules_) {
    const FaultRule& r = a.rule;
    if (r.op != op || n < r.first_call) continue;
    if (r.record) {
      if (*r.record != id) continue;
      if (r.times != FaultRule::kPersistent && a.fired >= r.times) continue;
      ++a.fired;
    } else if (r.times != FaultRule::kPersistent && n - r.first_call >= r.times) {
      continue;
    }
    ++injected_;
    return {true, r};
  }
  return {};
}

Status FaultStore::injected_status(const FaultRule& rule, const char* what) {
  if (rule.code == StatusCode::kOk) return Status::Ok();
  return Status(rule.code, std::string("injected fault in ") + what);
}

const StoreCapabilities& FaultStore::capabilities() const {
  return caps_;
}

Result<bool> FaultStore::contains(const RecordId& id) {
  const Fired f = next_call(FaultOp::kContains, id);
  if (f.any && f.rule.kind == FaultKind::kDelay) std::this_thread::sleep_for(f.rule.delay);
  if (f.any && f.rule.kind == FaultKind::kFail && f.rule.code != StatusCode::kOk)
    return injected_status(f.rule, "contains");
  Result<bool> r = inner_->contains(id);
  if (f.any && f.rule.kind == FaultKind::kFailAfter && f.rule.code != StatusCode::kOk)
    return injected_status(f.rule, "contains");
  return r;
}

Status FaultStore::read(const RecordId& id, std::span<std::uint8_t> payload) {
  const Fired f = next_call(FaultOp::kRead, id);
  if (!f.any) return inner_->read(id, payload);
  switch (f.rule.kind) {
    case FaultKind::kFail:
      return injected_status(f.rule, "read");
    case FaultKind::kDelay:
      std::this_thread::sleep_for(f.rule.delay);
      return inner_->read(id, payload);
    case FaultKind::kFailAfter:
      inner_->read(id, payload).ignore();
      return injected_status(f.rule, "read");
    case FaultKind::kCorrupt: {
      inner_->read(id, payload).ignore();
      std::memset(payload.data(), 0xa5, payload.size());
      return data_loss("injected fault in read: payload corrupted");
    }
    case FaultKind::kCorruptSilently: {
      Status s = inner_->read(id, payload);
      if (s.ok() && !payload.empty()) payload[payload.size() / 2] ^= 0x01;
      return s;
    }
  }
  return internal_error("unknown fault kind");
}

Status FaultStore::write(const RecordId& id, std::span<const std::uint8_t> payload) {
  const Fired f = next_call(FaultOp::kWrite, id);
  if (f.any && f.rule.kind == FaultKind::kDelay) std::this_thread::sleep_for(f.rule.delay);
  if (f.any && f.rule.kind == FaultKind::kFail) return injected_status(f.rule, "write");
  Status s = inner_->write(id, payload);
  if (f.any && f.rule.kind == FaultKind::kFailAfter) return injected_status(f.rule, "write");
  return s;
}

Status FaultStore::erase(const RecordId& id) {
  const Fired f = next_call(FaultOp::kErase, id);
  if (f.any && f.rule.kind == FaultKind::kDelay) std::this_thread::sleep_for(f.rule.delay);
  if (f.any && f.rule.kind == FaultKind::kFail) return injected_status(f.rule, "erase");
  Status s = inner_->erase(id);
  if (f.any && f.rule.kind == FaultKind::kFailAfter) return injected_status(f.rule, "erase");
  return s;
}

StoreStats FaultStore::stats() const {
  return inner_->stats();
}

}  // namespace tierkv
