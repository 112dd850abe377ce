#include "common/bench_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>
#include <system_error>
#include <utility>

namespace tierkv::bench {
namespace {

std::string errno_text(int err) {
  return std::system_category().message(err);
}

}  // namespace

int report_error(std::string_view tool, const Status& s, int exit_code) {
  std::fprintf(stderr, "%.*s: %s\n", static_cast<int>(tool.size()), tool.data(),
               s.to_string().c_str());
  return exit_code;
}

int parse_error_exit(const CLI::App& app, const CLI::ParseError& e) {
  return app.exit(e) == 0 ? 0 : kExitUsage;
}

std::string utc_date() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &utc);
  return buf;
}

Result<BackendKind> backend_from_flag(std::string_view flag) {
  if (flag == "auto") return cuda_device_count() > 0 ? BackendKind::kCuda : BackendKind::kCpu;
  return parse_backend_kind(flag);
}

// ---- OutputFile ---------------------------------------------------------------------------------

OutputFile::OutputFile(OutputFile&& o) noexcept
    : path_(std::move(o.path_)),
      fd_(std::exchange(o.fd_, -1)),
      created_(std::exchange(o.created_, false)) {}

OutputFile& OutputFile::operator=(OutputFile&& o) noexcept {
  if (this != &o) {
    discard();
    path_ = std::move(o.path_);
    fd_ = std::exchange(o.fd_, -1);
    created_ = std::exchange(o.created_, false);
  }
  return *this;
}

OutputFile::~OutputFile() {
  discard();
}

void OutputFile::discard() {
  if (fd_ < 0) return;
  ::close(std::exchange(fd_, -1));
  if (created_) ::unlink(path_.c_str());
  created_ = false;
}

Result<OutputFile> OutputFile::open(const std::string& path, std::string_view flag) {
  OutputFile f;
  if (path.empty()) return f;
  f.path_ = path;
  // Created here (and so removed again if the run fails), or there already and left as it is
  // until commit(): nothing is truncated before there is something to write.
  f.fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  f.created_ = f.fd_ >= 0;
  if (f.fd_ < 0 && errno == EEXIST) f.fd_ = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (f.fd_ < 0) {
    const int err = errno;
    return io_error(std::string(flag) + " " + path +
                    ": cannot open for writing: " + errno_text(err) +
                    " (choose a path in a directory that exists and is writable)");
  }
  return f;
}

Status OutputFile::commit(std::string_view text) {
  if (fd_ < 0) return Status::Ok();
  const auto fail = [&](int err) {
    discard();
    return io_error("writing " + path_ + " failed: " + errno_text(err));
  };
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return fail(errno);
  if (S_ISREG(st.st_mode) && ::ftruncate(fd_, 0) != 0) return fail(errno);
  while (!text.empty()) {
    const ssize_t n = ::write(fd_, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(errno);
    text.remove_prefix(static_cast<std::size_t>(n));
  }
  created_ = false;  // the file now holds this run's results: keep it
  if (::close(std::exchange(fd_, -1)) != 0) {
    return io_error("writing " + path_ + " failed: " + errno_text(errno));
  }
  return Status::Ok();
}

Status OutputFile::commit_lines(const std::vector<std::string>& lines) {
  std::string text;
  for (const std::string& l : lines)
    text.append(l).push_back('\n');
  return commit(text);
}

}  // namespace tierkv::bench
