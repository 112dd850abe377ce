#include "tiers/disk/fault_file_system.h"

#include <errno.h>

namespace tierkv::disk {
namespace {

class FaultFile final : public File {
 public:
  FaultFile(std::unique_ptr<File> base, FaultFileSystem& fs, std::string path)
      : base_(std::move(base)), fs_(fs), path_(std::move(path)) {}

  Result<std::size_t> read_at(std::uint64_t offset, std::span<std::uint8_t> dst) override {
    FileFault f;
    if (fs_.next(FileOp::kRead, path_, &f)) return errno_status(f.err, "pread (injected)", path_);
    return base_->read_at(offset, dst);
  }
  Result<std::size_t> write_at(std::uint64_t offset, std::span<const std::uint8_t> src) override {
    FileFault f;
    if (!fs_.next(FileOp::kWrite, path_, &f)) return base_->write_at(offset, src);
    if (f.kind == FileFaultKind::kError) return errno_status(f.err, "pwrite (injected)", path_);
    std::size_t part = src.size() / 2;
    if (base_->direct()) part = part / kDirectAlign * kDirectAlign;
    if (part == 0 && f.kind == FileFaultKind::kShortWrite) return base_->write_at(offset, src);
    std::size_t done = 0;
    if (part > 0) {
      Status s = write_full(*base_, offset, src.first(part));
      if (!s.ok()) return s;
      done = part;
    }
    return f.kind == FileFaultKind::kTornWrite ? src.size() : done;
  }
  Status sync() override {
    FileFault f;
    if (fs_.next(FileOp::kSync, path_, &f)) return errno_status(f.err, "fsync (injected)", path_);
    return base_->sync();
  }
  Status allocate(std::uint64_t bytes) override {
    FileFault f;
    if (fs_.next(FileOp::kAllocate, path_, &f))
      return errno_status(f.err, "fallocate (injected)", path_);
    return base_->allocate(bytes);
  }
  Result<std::uint64_t> size() override { return base_->size(); }
  Result<std::int64_t> mtime_ns() override { return base_->mtime_ns(); }
  bool direct() const override { return base_->direct(); }

 private:
  std::unique_ptr<File> base_;
  FaultFileSystem& fs_;
  const std::string path_;
};

}  // namespace

FaultFileSystem::FaultFileSystem(std::unique_ptr<FileSystem> base) : base_(std::move(base)) {}

void FaultFileSystem::add(const FileFault& fault) {
  std::lock_guard<std::mutex> l(mu_);
  faults_.push_back(fault);
}

void FaultFileSystem::clear() {
  std::lock_guard<std::mutex> l(mu_);
  faults_.clear();
}

std::uint64_t FaultFileSystem::calls(FileOp op) const {
  std::lock_guard<std::mutex> l(mu_);
  return calls_[std::size_t(op)];
}

std::uint64_t FaultFileSystem::injected() const {
  std::lock_guard<std::mutex> l(mu_);
  return injected_;
}

bool FaultFileSystem::next(FileOp op, const std::string& path, FileFault* fired) {
  std::lock_guard<std::mutex> l(mu_);
  const std::uint64_t n = ++calls_[std::size_t(op)];
  for (const FileFault& f : faults_) {
    if (f.op != op || n < f.first_call) continue;
    if (f.times != FileFault::kPersistent && n - f.first_call >= f.times) continue;
    if (!f.path_contains.empty() && path.find(f.path_contains) == std::string::npos) continue;
    if (f.kind != FileFaultKind::kError && op != FileOp::kWrite) continue;
    ++injected_;
    *fired = f;
    return true;
  }
  return false;
}

Result<std::unique_ptr<File>> FaultFileSystem::open(const std::string& path, const OpenOptions& o) {
  FileFault f;
  if (next(FileOp::kOpen, path, &f)) return errno_status(f.err, "open (injected)", path);
  TIERKV_ASSIGN_OR_RETURN(std::unique_ptr<File> file, base_->open(path, o));
  return std::unique_ptr<File>(new FaultFile(std::move(file), *this, path));
}

Status FaultFileSystem::rename(const std::string& from, const std::string& to) {
  FileFault f;
  if (next(FileOp::kRename, from, &f)) return errno_status(f.err, "rename (injected)", from);
  return base_->rename(from, to);
}

Status FaultFileSystem::remove(const std::string& path) {
  FileFault f;
  if (next(FileOp::kRemove, path, &f)) return errno_status(f.err, "unlink (injected)", path);
  return base_->remove(path);
}

Status FaultFileSystem::sync_dir(const std::string& dir) {
  FileFault f;
  if (next(FileOp::kSyncDir, dir, &f)) return errno_status(f.err, "fsync (injected)", dir);
  return base_->sync_dir(dir);
}

Result<std::vector<std::string>> FaultFileSystem::list(const std::string& dir) {
  FileFault f;
  if (next(FileOp::kList, dir, &f)) return errno_status(f.err, "opendir (injected)", dir);
  return base_->list(dir);
}

}  // namespace tierkv::disk
