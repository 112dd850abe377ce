// The CPU backend's streams and events: each stream is a worker thread draining an in-order queue,
// so operations are asynchronous exactly as on a device stream.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "tierkv/backend.h"

namespace tierkv::cpu {

// An event's state lives in a shared block that queued tasks hold on to, so an event may be
// destroyed while work that records or waits on it is still queued (as CUDA allows).
//
// Errors: a record completes with the pending error of its stream (the first failure since that
// stream's last synchronize()), so the event reports the error as a device event would, and a
// stream that waits on it fails with it.
class CpuEvent final : public Event {
 public:
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    std::uint64_t recorded = 0;   // GUARDED_BY(mu): generations handed out by record()
    std::uint64_t completed = 0;  // GUARDED_BY(mu): highest generation reached
    std::chrono::steady_clock::time_point when;  // GUARDED_BY(mu)
    Status error;  // GUARDED_BY(mu): what the work before generation `completed` ended with

    // Marks `generation` reached (a no-op for an older one), with the error its work ended with.
    void complete(std::uint64_t generation, Status work_error);
    // Blocks until `generation` is reached; returns the error of the generation reached then.
    Status wait_for(std::uint64_t generation);
  };

  Status synchronize() override;
  Result<bool> done() override;

  // Hands out the generation a record() will complete.
  std::uint64_t next_generation();
  // The generation of the last record(), 0 if never recorded.
  std::uint64_t last_generation() const;
  // Completion time of the last record(); empty until it completed.
  std::optional<std::chrono::steady_clock::time_point> completed_at() const;
  // The error the last record() completed with; OK while incomplete or clean.
  Status error() const;
  const std::shared_ptr<Shared>& shared() const { return shared_; }

 private:
  std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
};

class CpuStream final : public Stream {
 public:
  using Task = std::function<Status()>;

  CpuStream();
  ~CpuStream() override;

  Status copy(void* dst, const void* src, std::size_t bytes) override;
  Status fill(void* dst, std::uint8_t value, std::size_t bytes) override;
  Status record(Event& event) override;
  Status wait(const Event& event) override;
  Status synchronize() override;
  Status begin_capture() override;
  Result<std::unique_ptr<Graph>> end_capture() override;
  void* native_handle() override { return nullptr; }

  // Queues `task` (or adds it to the graph being captured). Its error, if any, becomes the
  // stream's pending error (when none is pending): events recorded after it carry it, and the
  // next synchronize() returns and clears it. Tasks after a failed one still run.
  void enqueue(Task task);

 private:
  void run();
  Status pending_error();

  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable idle_cv_;
  std::deque<Task> queue_;                    // GUARDED_BY(mu_)
  bool busy_ = false;                         // GUARDED_BY(mu_)
  bool stop_ = false;                         // GUARDED_BY(mu_)
  Status first_error_;                        // GUARDED_BY(mu_): the pending error
  std::optional<std::vector<Task>> capture_;  // touched only by the thread that owns the stream
  std::thread worker_;
};

class CpuGraph final : public Graph {
 public:
  explicit CpuGraph(std::vector<CpuStream::Task> tasks) : tasks_(std::move(tasks)) {}
  Status launch(Stream& stream) override;

 private:
  std::vector<CpuStream::Task> tasks_;
};

}  // namespace tierkv::cpu
