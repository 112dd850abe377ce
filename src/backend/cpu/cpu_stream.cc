#include "backend/cpu/cpu_stream.h"

#include <cstring>

namespace tierkv::cpu {

// ---- CpuEvent ----------------------------------------------------------------------------------

void CpuEvent::Shared::complete(std::uint64_t generation, Status work_error) {
  {
    std::lock_guard lock(mu);
    if (generation <= completed) return;
    completed = generation;
    when = std::chrono::steady_clock::now();
    error = std::move(work_error);
  }
  cv.notify_all();
}

Status CpuEvent::Shared::wait_for(std::uint64_t generation) {
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return completed >= generation; });
  return error;
}

std::uint64_t CpuEvent::next_generation() {
  std::lock_guard lock(shared_->mu);
  return ++shared_->recorded;
}

std::uint64_t CpuEvent::last_generation() const {
  std::lock_guard lock(shared_->mu);
  return shared_->recorded;
}

Status CpuEvent::synchronize() {
  return shared_->wait_for(last_generation());
}

Result<bool> CpuEvent::done() {
  std::lock_guard lock(shared_->mu);
  if (shared_->completed < shared_->recorded) return false;
  if (!shared_->error.ok()) return shared_->error;
  return true;
}

Status CpuEvent::error() const {
  std::lock_guard lock(shared_->mu);
  if (shared_->completed < shared_->recorded) return Status::Ok();
  return shared_->error;
}

std::optional<std::chrono::steady_clock::time_point> CpuEvent::completed_at() const {
  std::lock_guard lock(shared_->mu);
  if (shared_->recorded == 0 || shared_->completed < shared_->recorded) return std::nullopt;
  return shared_->when;
}

// ---- CpuStream ---------------------------------------------------------------------------------

CpuStream::CpuStream() : worker_([this] { run(); }) {}

CpuStream::~CpuStream() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  worker_.join();  // drains the queue first
}

void CpuStream::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_ and drained
    Task task = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    Status s = task();
    lock.lock();
    busy_ = false;
    if (!s.ok() && first_error_.ok()) first_error_ = std::move(s);
    if (queue_.empty()) idle_cv_.notify_all();
  }
}

Status CpuStream::pending_error() {
  std::lock_guard lock(mu_);
  return first_error_;
}

void CpuStream::enqueue(Task task) {
  if (capture_) {
    capture_->push_back(std::move(task));
    return;
  }
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(task));
  }
  work_cv_.notify_one();
}

Status CpuStream::copy(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return Status::Ok();
  if (dst == nullptr || src == nullptr) return invalid_argument("copy: null pointer");
  enqueue([=] {
    std::memmove(dst, src, bytes);
    return Status::Ok();
  });
  return Status::Ok();
}

Status CpuStream::fill(void* dst, std::uint8_t value, std::size_t bytes) {
  if (bytes == 0) return Status::Ok();
  if (dst == nullptr) return invalid_argument("fill: null pointer");
  enqueue([=] {
    std::memset(dst, value, bytes);
    return Status::Ok();
  });
  return Status::Ok();
}

Status CpuStream::record(Event& event) {
  auto* e = dynamic_cast<CpuEvent*>(&event.base());
  if (e == nullptr) return invalid_argument("record: event of another backend");
  if (capture_) return unimplemented("record: events inside a graph capture (CPU backend)");
  const std::uint64_t gen = e->next_generation();
  // Records are never captured, so the task runs on this stream's worker, after every task queued
  // before it: the pending error it reads is that of the work the event covers.
  enqueue([this, shared = e->shared(), gen] {
    shared->complete(gen, pending_error());
    return Status::Ok();
  });
  return Status::Ok();
}

Status CpuStream::wait(const Event& event) {
  const auto* e = dynamic_cast<const CpuEvent*>(&event.base());
  if (e == nullptr) return invalid_argument("wait: event of another backend");
  if (capture_) return unimplemented("wait: events inside a graph capture (CPU backend)");
  const std::uint64_t gen = e->last_generation();
  if (gen == 0) return Status::Ok();
  enqueue([shared = e->shared(), gen] {
    const Status s = shared->wait_for(gen);
    if (!s.ok()) return s.with_context("stream wait: the awaited event's work failed");
    return s;
  });
  return Status::Ok();
}

Status CpuStream::synchronize() {
  if (capture_) return failed_precondition("synchronize: the stream is capturing a graph");
  std::unique_lock lock(mu_);
  idle_cv_.wait(lock, [&] { return queue_.empty() && !busy_; });
  Status s = std::move(first_error_);
  first_error_ = Status::Ok();
  return s;
}

Status CpuStream::begin_capture() {
  if (capture_) return failed_precondition("begin_capture: already capturing");
  capture_.emplace();
  return Status::Ok();
}

Result<std::unique_ptr<Graph>> CpuStream::end_capture() {
  if (!capture_) return failed_precondition("end_capture: not capturing");
  std::vector<Task> tasks = std::move(*capture_);
  capture_.reset();
  return std::unique_ptr<Graph>(std::make_unique<CpuGraph>(std::move(tasks)));
}

Status CpuGraph::launch(Stream& stream) {
  auto* s = dynamic_cast<CpuStream*>(&stream.base());
  if (s == nullptr) return invalid_argument("graph launch: stream of another backend");
  for (const CpuStream::Task& t : tasks_)
    s->enqueue(t);
  return Status::Ok();
}

}  // namespace tierkv::cpu
