#include "tiers/disk/io_engine.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#if TIERKV_HAVE_LIBURING
#include <liburing.h>
#endif

namespace tierkv::disk {
namespace {

// One request, to completion, with pread/pwrite on the calling thread.
void run_sync(IoRequest& r) {
  std::size_t done = 0;
  while (done < r.len) {
    const ssize_t n = r.write ? ::pwrite(r.fd, r.buf + done, r.len - done, off_t(r.offset + done))
                              : ::pread(r.fd, r.buf + done, r.len - done, off_t(r.offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      r.result = -errno;
      return;
    }
    if (n == 0) {
      if (r.write) {  // no progress and no error: do not spin
        r.result = -EIO;
        return;
      }
      break;  // end of file
    }
    done += std::size_t(n);
  }
  r.result = std::int64_t(done);
}

class ThreadEngine final : public IoEngine {
 public:
  // The threads start with the first call that has several requests: a store that never moves
  // a large transfer (or a process that forks before it does) has none.
  explicit ThreadEngine(int threads) : threads_(std::max(1, threads)) {}
  ~ThreadEngine() override {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_)
      t.join();
  }

  void run(std::span<IoRequest> reqs, const OnDone& on_done) override {
    if (reqs.size() == 1) {
      run_sync(reqs[0]);
      if (on_done) on_done(0);
      return;
    }
    std::call_once(started_, [this] {
      for (int i = 0; i < threads_; ++i)
        workers_.emplace_back([this] { work(); });
    });
    Batch batch;
    batch.pending = reqs.size();
    batch.on_done = on_done ? &on_done : nullptr;
    batch.first = reqs.data();
    {
      std::lock_guard<std::mutex> l(mu_);
      for (IoRequest& r : reqs)
        queue_.push_back({&r, &batch});
    }
    cv_.notify_all();
    std::unique_lock<std::mutex> l(batch.mu);
    batch.cv.wait(l, [&] { return batch.pending == 0; });
  }

  std::string describe() const override {
    return "threads (" + std::to_string(threads_) + ", pread/pwrite)";
  }

 private:
  struct Batch {
    std::mutex mu;
    std::condition_variable cv;
    std::size_t pending = 0;  // GUARDED_BY(mu)
    const OnDone* on_done = nullptr;
    const IoRequest* first = nullptr;
  };
  struct Job {
    IoRequest* req;
    Batch* batch;
  };

  void work() {
    for (;;) {
      Job j;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stop_ and nothing left
        j = queue_.front();
        queue_.pop_front();
      }
      run_sync(*j.req);
      if (j.batch->on_done) (*j.batch->on_done)(std::size_t(j.req - j.batch->first));
      std::lock_guard<std::mutex> l(j.batch->mu);
      // Notify under the lock: the waiter may destroy the batch as soon as it sees pending == 0.
      if (--j.batch->pending == 0) j.batch->cv.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;  // GUARDED_BY(mu_)
  bool stop_ = false;      // GUARDED_BY(mu_)
  const int threads_;
  std::once_flag started_;
  std::vector<std::thread> workers_;  // written once, under started_
};

#if TIERKV_HAVE_LIBURING
class UringEngine final : public IoEngine {
 public:
  explicit UringEngine(int depth) : depth_(unsigned(std::max(1, depth))) {}
  ~UringEngine() override {
    for (auto& r : free_)
      io_uring_queue_exit(&r->ring);
  }

  // Makes the first ring and runs a no-op through it: the kernel may allow io_uring_setup and
  // still refuse operations (seccomp, io_uring_disabled).
  Status probe() {
    auto r = std::make_unique<Ring>();
    if (int e = io_uring_queue_init(depth_, &r->ring, 0); e < 0)
      return unavailable(std::string("io_uring_queue_init: ") + strerror(-e));
    io_uring_sqe* sqe = io_uring_get_sqe(&r->ring);
    io_uring_prep_nop(sqe);
    int e = io_uring_submit_and_wait(&r->ring, 1);
    io_uring_cqe* cqe = nullptr;
    if (e >= 0) e = io_uring_peek_cqe(&r->ring, &cqe);
    if (e >= 0 && cqe != nullptr) {
      e = cqe->res;
      io_uring_cqe_seen(&r->ring, cqe);
    }
    if (e < 0) {
      io_uring_queue_exit(&r->ring);
      return unavailable(std::string("io_uring no-op: ") + strerror(-e));
    }
    free_.push_back(std::move(r));
    return Status::Ok();
  }

  void run(std::span<IoRequest> reqs, const OnDone& on_done) override {
    std::unique_ptr<Ring> ring = acquire();
    if (!ring) {  // no ring could be made now (memory): do the work here
      for (std::size_t i = 0; i < reqs.size(); ++i) {
        run_sync(reqs[i]);
        if (on_done) on_done(i);
      }
      return;
    }
    run_on(ring->ring, reqs, on_done);
    std::lock_guard<std::mutex> l(mu_);
    free_.push_back(std::move(ring));
  }

  std::string describe() const override {
    return "io_uring (queue depth " + std::to_string(depth_) + ")";
  }

 private:
  struct Ring {
    io_uring ring;
  };

  std::unique_ptr<Ring> acquire() {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!free_.empty()) {
        auto r = std::move(free_.back());
        free_.pop_back();
        return r;
      }
    }
    auto r = std::make_unique<Ring>();
    if (io_uring_queue_init(depth_, &r->ring, 0) < 0) return nullptr;
    return r;
  }

  void run_on(io_uring& ring, std::span<IoRequest> reqs, const OnDone& on_done) {
    std::vector<std::size_t> done(reqs.size(), 0);
    std::deque<std::size_t> todo;
    for (std::size_t i = 0; i < reqs.size(); ++i)
      todo.push_back(i);
    std::size_t inflight = 0, finished = 0;
    while (finished < reqs.size()) {
      while (inflight < depth_ && !todo.empty()) {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);
        if (sqe == nullptr) break;
        const std::size_t i = todo.front();
        todo.pop_front();
        IoRequest& r = reqs[i];
        if (r.write)
          io_uring_prep_write(sqe, r.fd, r.buf + done[i], unsigned(r.len - done[i]),
                              r.offset + done[i]);
        else
          io_uring_prep_read(sqe, r.fd, r.buf + done[i], unsigned(r.len - done[i]),
                             r.offset + done[i]);
        io_uring_sqe_set_data64(sqe, i);
        ++inflight;
      }
      int e = io_uring_submit_and_wait(&ring, 1);
      if (e < 0 && e != -EINTR && e != -EAGAIN && e != -EBUSY) {
        fail_rest(ring, reqs, todo, inflight, finished, e, on_done);
        return;
      }
      io_uring_cqe* cqe = nullptr;
      while (io_uring_peek_cqe(&ring, &cqe) == 0 && cqe != nullptr) {
        const std::size_t i = std::size_t(io_uring_cqe_get_data64(cqe));
        const int res = cqe->res;
        io_uring_cqe_seen(&ring, cqe);
        --inflight;
        IoRequest& r = reqs[i];
        bool over = true;
        if (res == -EAGAIN || res == -EINTR) {
          todo.push_back(i);
          over = false;
        } else if (res < 0) {
          r.result = res;
        } else if (res == 0) {
          r.result = r.write ? -EIO : std::int64_t(done[i]);  // a read at the end of the file
        } else if ((done[i] += std::size_t(res)) == r.len) {
          r.result = std::int64_t(r.len);
        } else {
          todo.push_back(i);  // short: continue from where it stopped
          over = false;
        }
        if (over) {
          ++finished;
          if (on_done) on_done(i);
        }
      }
    }
  }

  // The ring failed as a whole: reap what is in flight, fail everything not finished.
  void fail_rest(io_uring& ring, std::span<IoRequest> reqs, std::deque<std::size_t>& todo,
                 std::size_t inflight, std::size_t& finished, int err, const OnDone& on_done) {
    while (inflight > 0) {
      io_uring_cqe* cqe = nullptr;
      if (io_uring_wait_cqe(&ring, &cqe) < 0) break;
      const std::size_t i = std::size_t(io_uring_cqe_get_data64(cqe));
      io_uring_cqe_seen(&ring, cqe);
      --inflight;
      reqs[i].result = err;
      if (on_done) on_done(i);
    }
    for (std::size_t i : todo) {
      reqs[i].result = err;
      if (on_done) on_done(i);
    }
    finished = reqs.size();
  }

  const unsigned depth_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Ring>> free_;  // GUARDED_BY(mu_)
};
#endif  // TIERKV_HAVE_LIBURING

}  // namespace

Result<std::unique_ptr<IoEngine>> make_uring_engine(int queue_depth) {
#if TIERKV_HAVE_LIBURING
  auto e = std::make_unique<UringEngine>(queue_depth);
  TIERKV_RETURN_IF_ERROR(e->probe());
  return std::unique_ptr<IoEngine>(std::move(e));
#else
  (void)queue_depth;
  return unimplemented("this build has no io_uring (liburing-dev was not found at configure time)");
#endif
}

std::unique_ptr<IoEngine> make_thread_engine(int threads) {
  return std::make_unique<ThreadEngine>(threads);
}

}  // namespace tierkv::disk
