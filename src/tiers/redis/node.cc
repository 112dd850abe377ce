#include "tiers/redis/node.h"

#include <algorithm>

namespace tierkv::redis {

// ---- Lease -----------------------------------------------------------------------------------

Lease& Lease::operator=(Lease&& o) noexcept {
  if (this != &o) {
    release();
    node_ = o.node_;
    conn_ = std::move(o.conn_);
    reused_ = o.reused_;
    epoch_ = o.epoch_;
    o.node_ = nullptr;
  }
  return *this;
}

void Lease::release() {
  if (node_ != nullptr && conn_ != nullptr) {
    if (conn_->broken()) {
      std::string why = conn_->error();
      conn_.reset();
      node_->failed(why);
    } else {
      node_->give_back(std::move(conn_), epoch_);
    }
  }
  node_ = nullptr;
  conn_.reset();
}

void Lease::discard_stale() {
  if (node_ != nullptr) node_->stale(epoch_);
  conn_.reset();
  node_ = nullptr;
}

// ---- Node ------------------------------------------------------------------------------------

Node::Node(std::string host, int port, const NodeSettings& settings)
    : host_(std::move(host)),
      port_(port),
      name_(host_ + ":" + std::to_string(port)),
      settings_(settings) {}

Result<Lease> Node::acquire(std::chrono::steady_clock::time_point deadline) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto now = std::chrono::steady_clock::now();
    if (now < retry_at_) {
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(retry_at_ - now).count();
      return unavailable("redis at " + name_ + " is unreachable (" + last_error_ +
                         "); next attempt in " + std::to_string(ms) + " ms");
    }
    if (!idle_.empty()) {
      std::unique_ptr<Connection> c = std::move(idle_.back());
      idle_.pop_back();
      return Lease(this, std::move(c), true, epoch_);
    }
  }
  return connect(deadline);
}

Result<Lease> Node::acquire_fresh(std::chrono::steady_clock::time_point deadline) {
  return connect(deadline);
}

Result<Lease> Node::connect(std::chrono::steady_clock::time_point deadline) {
  std::uint64_t epoch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    epoch = epoch_;
  }
  auto connect_deadline =
      std::min(deadline, std::chrono::steady_clock::now() + settings_.connect_timeout);
  ConnectParams params{host_, port_, settings_.username, settings_.password};
  Result<std::unique_ptr<Connection>> c = Connection::open(params, connect_deadline);
  if (!c.ok()) {
    // A refused password is the caller's configuration, not the node's health; still back off
    // so that a misconfigured client does not hammer the server.
    failed(c.status().message());
    return c.status();
  }
  return Lease(this, std::move(c).value(), false, epoch);
}

void Node::give_back(std::unique_ptr<Connection> c, std::uint64_t epoch) {
  std::unique_ptr<Connection> drop;  // closed outside the lock
  std::lock_guard<std::mutex> lock(mu_);
  failures_ = 0;
  retry_at_ = {};
  if (epoch == epoch_ && int(idle_.size()) < settings_.pool_size) {
    idle_.push_back(std::move(c));
  } else {
    drop = std::move(c);
  }
}

void Node::stale(std::uint64_t epoch) {
  std::vector<std::unique_ptr<Connection>> drop;
  std::lock_guard<std::mutex> lock(mu_);
  if (epoch == epoch_) {
    ++epoch_;
    drop.swap(idle_);
  }
}

void Node::failed(const std::string& why) {
  std::vector<std::unique_ptr<Connection>> drop;
  std::lock_guard<std::mutex> lock(mu_);
  ++epoch_;
  drop.swap(idle_);
  failures_ = std::min(failures_ + 1, 30);
  auto backoff = settings_.backoff_min * (std::int64_t(1) << std::min(failures_ - 1, 20));
  backoff = std::min(backoff, settings_.backoff_max);
  retry_at_ = std::chrono::steady_clock::now() + backoff;
  last_error_ = why;
}

void Node::report_failure(const Status& why) {
  failed(why.message());
}

}  // namespace tierkv::redis
