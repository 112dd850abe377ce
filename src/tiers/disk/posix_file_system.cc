// The real file layer (file_system.h): POSIX calls, large transfers through an IoEngine.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "tiers/disk/file_system.h"
#include "tiers/disk/io_engine.h"

namespace tierkv::disk {

Status errno_status(int err, const std::string& call, const std::string& path) {
  std::string m = call + " " + path + ": " + strerror(err);
  switch (err) {
    case ENOENT:
      return not_found(m);
    case ENOSPC:
    case EDQUOT:
      return resource_exhausted(m +
                                " (the cache's file system is full: free space or lower "
                                "the disk budget)");
    case EEXIST:
      return already_exists(m);
    case EACCES:
    case EPERM:
      return io_error(m + " (check the cache directory's owner and permissions)");
    default:
      return io_error(m);
  }
}

Result<std::size_t> read_full(File& f, std::uint64_t offset, std::span<std::uint8_t> dst) {
  std::size_t done = 0;
  while (done < dst.size()) {
    TIERKV_ASSIGN_OR_RETURN(const std::size_t n, f.read_at(offset + done, dst.subspan(done)));
    if (n == 0) break;
    done += n;
  }
  return done;
}

Status write_full(File& f, std::uint64_t offset, std::span<const std::uint8_t> src) {
  std::size_t done = 0;
  while (done < src.size()) {
    TIERKV_ASSIGN_OR_RETURN(const std::size_t n, f.write_at(offset + done, src.subspan(done)));
    if (n == 0) return io_error("write made no progress");
    done += n;
  }
  return Status::Ok();
}

Status File::write_parts(std::uint64_t offset,
                         std::span<const std::span<const std::uint8_t>> parts,
                         const std::function<void()>& in_flight) {
  if (in_flight) in_flight();
  for (const std::span<const std::uint8_t> p : parts) {
    TIERKV_RETURN_IF_ERROR(write_full(*this, offset, p));
    offset += p.size();
  }
  return Status::Ok();
}

namespace {

class PosixFile final : public File {
 public:
  PosixFile(int fd, std::string path, bool direct, IoEngine& engine, std::uint64_t block)
      : fd_(fd), path_(std::move(path)), direct_(direct), engine_(engine), block_(block) {}
  ~PosixFile() override { ::close(fd_); }

  Result<std::size_t> read_at(std::uint64_t offset, std::span<std::uint8_t> dst) override {
    return transfer(false, offset, dst.data(), dst.size());
  }
  Result<std::size_t> write_at(std::uint64_t offset, std::span<const std::uint8_t> src) override {
    return transfer(true, offset, const_cast<std::uint8_t*>(src.data()), src.size());
  }
  Status write_parts(std::uint64_t offset, std::span<const std::span<const std::uint8_t>> parts,
                     const std::function<void()>& in_flight) override {
    std::vector<IoRequest> reqs;
    for (const std::span<const std::uint8_t> p : parts) {
      add_pieces(reqs, true, offset, const_cast<std::uint8_t*>(p.data()), p.size());
      offset += p.size();
    }
    std::atomic<bool> called{false};
    const auto call_once = [&] {
      if (in_flight && !called.exchange(true)) in_flight();
    };
    engine_.run(reqs, [&](std::size_t) { call_once(); });
    call_once();  // no pieces: nothing was in flight
    for (const IoRequest& r : reqs) {
      if (r.result < 0) return errno_status(int(-r.result), "pwrite", path_);
      if (std::size_t(r.result) != r.len)
        return io_error("pwrite " + path_ + ": a write made no progress");
    }
    return Status::Ok();
  }
  Result<std::size_t> read_at_streaming(std::uint64_t offset, std::span<std::uint8_t> dst,
                                        const std::function<void(std::size_t)>& landed) override {
    // Pieces finish in any order: report the prefix of whole pieces done so far.
    std::mutex m;
    std::vector<bool> done;
    std::size_t prefix = 0, bytes = 0;  // GUARDED_BY(m): pieces and bytes of the whole prefix
    std::span<const IoRequest> reqs;
    const IoEngine::OnDone on_done = [&](std::size_t i) {
      std::lock_guard<std::mutex> l(m);
      done[i] = true;
      const std::size_t before = bytes;
      while (prefix < done.size() && done[prefix] &&
             reqs[prefix].result == std::int64_t(reqs[prefix].len))
        bytes += reqs[prefix++].len;
      if (bytes > before) landed(bytes);
    };
    Result<std::size_t> r = transfer(false, offset, dst.data(), dst.size(), &on_done,
                                     [&](std::span<const IoRequest> all) {
                                       reqs = all;
                                       done.assign(all.size(), false);
                                     });
    if (r.ok()) {
      std::lock_guard<std::mutex> l(m);
      if (*r != bytes) landed(*r);  // a short read at the end of the file
    }
    return r;
  }
  Status sync() override {
    if (::fsync(fd_) != 0) return errno_status(errno, "fsync", path_);
    return Status::Ok();
  }
  Status allocate(std::uint64_t bytes) override {
    if (::fallocate(fd_, 0, 0, off_t(bytes)) == 0) return Status::Ok();
    if (errno == EOPNOTSUPP || errno == ENOSYS) return Status::Ok();
    return errno_status(errno, "fallocate", path_);
  }
  Result<std::uint64_t> size() override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return errno_status(errno, "fstat", path_);
    return std::uint64_t(st.st_size);
  }
  Result<std::int64_t> mtime_ns() override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return errno_status(errno, "fstat", path_);
    return std::int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  }
  bool direct() const override { return direct_; }

 private:
  // Appends [offset, offset + len) as requests of at most block_ bytes.
  void add_pieces(std::vector<IoRequest>& reqs, bool write, std::uint64_t offset, std::uint8_t* buf,
                  std::size_t len) const {
    for (std::size_t at = 0; at < len; at += block_)
      reqs.push_back({fd_, write, offset + at, buf + at, std::min<std::size_t>(block_, len - at)});
  }
  // Splits [offset, offset + len) into pieces of block_ bytes, runs them at once, and returns the
  // bytes moved from `offset` on (a read stops at the end of the file), or the first error.
  // `on_done` (optional) is passed to the engine; `prepared` sees the requests before they run.
  Result<std::size_t> transfer(
      bool write, std::uint64_t offset, std::uint8_t* buf, std::size_t len,
      const IoEngine::OnDone* on_done = nullptr,
      const std::function<void(std::span<const IoRequest>)>& prepared = nullptr) {
    if (len == 0) return std::size_t(0);
    std::vector<IoRequest> reqs;
    reqs.reserve(len / block_ + 1);
    add_pieces(reqs, write, offset, buf, len);
    if (prepared) prepared(reqs);
    engine_.run(reqs, on_done ? *on_done : IoEngine::OnDone());
    std::size_t total = 0;
    for (const IoRequest& r : reqs) {
      if (r.result < 0) return errno_status(int(-r.result), write ? "pwrite" : "pread", path_);
      total += std::size_t(r.result);
      if (std::size_t(r.result) < r.len) break;  // end of file
    }
    return total;
  }

  const int fd_;
  const std::string path_;
  const bool direct_;
  IoEngine& engine_;
  const std::uint64_t block_;
};

class PosixLock final : public DirLock {
 public:
  explicit PosixLock(int fd) : fd_(fd) {}
  ~PosixLock() override { ::close(fd_); }  // closing the descriptor drops the flock

 private:
  const int fd_;
};

class PosixFileSystem final : public FileSystem {
 public:
  PosixFileSystem(std::unique_ptr<IoEngine> engine, std::uint64_t block)
      : engine_(std::move(engine)), block_(block) {}

  Result<std::unique_ptr<File>> open(const std::string& path, const OpenOptions& o) override {
    int flags = O_CLOEXEC | (o.create      ? O_WRONLY | O_CREAT | O_EXCL
                             : o.overwrite ? O_WRONLY
                                           : O_RDONLY);
    if (o.direct) flags |= O_DIRECT;
    const int fd = ::open(path.c_str(), flags, 0600);
    if (fd < 0) return errno_status(errno, "open", path);
    return std::unique_ptr<File>(new PosixFile(fd, path, o.direct, *engine_, block_));
  }
  Status rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) return errno_status(errno, "rename", from);
    return Status::Ok();
  }
  Status remove(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return errno_status(errno, "unlink", path);
    return Status::Ok();
  }
  Status sync_dir(const std::string& dir) override {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno_status(errno, "open", dir);
    const int rc = ::fsync(fd);
    const int err = errno;
    ::close(fd);
    if (rc != 0) return errno_status(err, "fsync", dir);
    return Status::Ok();
  }
  Result<std::vector<std::string>> list(const std::string& dir) override {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return errno_status(errno, "opendir", dir);
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d)) {
      if (e->d_type == DT_REG) {
        names.emplace_back(e->d_name);
      } else if (e->d_type == DT_UNKNOWN) {
        struct stat st;
        const std::string p = dir + "/" + e->d_name;
        if (::lstat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode)) names.emplace_back(e->d_name);
      }
    }
    ::closedir(d);
    return names;
  }
  Status create_dir(const std::string& dir) override {
    for (std::size_t at = 1; at <= dir.size(); ++at) {
      if (at < dir.size() && dir[at] != '/') continue;
      const std::string p = dir.substr(0, at);
      if (::mkdir(p.c_str(), 0700) != 0 && errno != EEXIST) return errno_status(errno, "mkdir", p);
    }
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0) return errno_status(errno, "stat", dir);
    if (!S_ISDIR(st.st_mode)) return io_error(dir + " exists and is not a directory");
    return Status::Ok();
  }
  Result<std::unique_ptr<DirLock>> lock(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return errno_status(errno, "open", path);
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(fd);
      if (err == EWOULDBLOCK)
        return failed_precondition(path +
                                   " is locked: another tierkv disk store (in this or "
                                   "another process) has this cache directory open; "
                                   "give each store its own directory");
      return errno_status(err, "flock", path);
    }
    return std::unique_ptr<DirLock>(new PosixLock(fd));
  }
  Result<bool> probe_direct(const std::string& dir) override;
  std::string describe() const override { return engine_->describe(); }

 private:
  std::unique_ptr<IoEngine> engine_;
  const std::uint64_t block_;
};

// Writes and reads back one aligned block with O_DIRECT. EINVAL (at open or at the first I/O)
// means the file system does not do direct I/O: false, not an error.
Result<bool> PosixFileSystem::probe_direct(const std::string& dir) {
  static std::atomic<std::uint64_t> n{0};
  const std::string path =
      dir + "/.probe." + std::to_string(::getpid()) + "." + std::to_string(n++) + ".tmp";
  void* buf = nullptr;
  if (::posix_memalign(&buf, kDirectAlign, kDirectAlign) != 0)
    return resource_exhausted("no memory for the O_DIRECT probe");
  std::memset(buf, 0x5a, kDirectAlign);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_DIRECT | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int err = errno;
    std::free(buf);
    if (err == EINVAL) return false;  // tmpfs and others refuse O_DIRECT at open
    return errno_status(err, "open", path);
  }
  bool ok = ::pwrite(fd, buf, kDirectAlign, 0) == ssize_t(kDirectAlign);
  ::close(fd);
  if (ok) {
    fd = ::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
    ok = fd >= 0 && ::pread(fd, buf, kDirectAlign, 0) == ssize_t(kDirectAlign);
    if (fd >= 0) ::close(fd);
  }
  ::unlink(path.c_str());
  std::free(buf);
  return ok;
}

}  // namespace

Result<std::unique_ptr<FileSystem>> make_posix_file_system(const PosixFsOptions& o) {
  if (o.io_block_bytes == 0 || o.io_block_bytes % kDirectAlign != 0)
    return invalid_argument("io_block_bytes must be a positive multiple of 4096");
  if (o.io_threads < 1 || o.io_threads > 256)
    return invalid_argument("io_threads must be in [1, 256]");
  if (o.queue_depth < 1 || o.queue_depth > 4096)
    return invalid_argument("queue_depth must be in [1, 4096]");
  std::unique_ptr<IoEngine> engine;
  if (o.io != IoBackend::kThreads) {
    Result<std::unique_ptr<IoEngine>> u = make_uring_engine(o.queue_depth);
    if (u.ok()) {
      engine = std::move(u).value();
    } else if (o.io == IoBackend::kIoUring) {
      return unimplemented("io_uring was asked for and is not available: " + u.status().message());
    } else {
      static std::once_flag said;
      std::call_once(said, [&] {
        std::fprintf(stderr,
                     "tierkv: disk store: io_uring not available (%s); using %d threads with "
                     "pread/pwrite\n",
                     u.status().message().c_str(), o.io_threads);
      });
    }
  }
  if (!engine) engine = make_thread_engine(o.io_threads);
  return std::unique_ptr<FileSystem>(new PosixFileSystem(std::move(engine), o.io_block_bytes));
}

}  // namespace tierkv::disk
