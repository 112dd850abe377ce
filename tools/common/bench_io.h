// Small pieces every benchmark tool needs: one meaning for each exit code, the run's date, the
// backend named by a flag, and output files that are opened before anything is measured.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "tierkv/backend.h"
#include "tierkv/status.h"

namespace tierkv::bench {

// Exit codes, the same in every tool:
//   0             the run finished and wrote everything it was asked to;
//   kExitUsage    the command line asks for what cannot be done here, found before anything is
//                 measured: an unknown flag or a bad value (CLI11's parse errors included), an
//                 output file that cannot be opened, a backend or device that is not available,
//                 sizes this machine's memory cannot hold;
//   kExitFailure  something failed while measuring or writing the results, or a result was wrong.
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// Prints "<tool>: <status>" on stderr and returns `exit_code`.
int report_error(std::string_view tool, const Status& s, int exit_code);

// After app.parse() threw `e`: prints what CLI11 prints (help, or the error and a hint) and returns
// 0 for --help, kExitUsage for anything else.
int parse_error_exit(const CLI::App& app, const CLI::ParseError& e);

// Today in UTC, YYYY-MM-DD.
std::string utc_date();

// "cpu", "cuda", or "auto" (cuda when a device is visible, else cpu).
Result<BackendKind> backend_from_flag(std::string_view flag);

// A results file named on the command line. Open it before measuring, so that a path that cannot
// be written ends the run before any time is spent; commit() fills it when the results are in.
// Until then an existing file keeps its contents, and a file that open() created is removed again
// when the object is destroyed without a commit() (a failed run leaves no empty file behind).
// Move-only; not thread-safe.
class OutputFile {
 public:
  OutputFile() = default;  // writes nowhere
  OutputFile(OutputFile&& o) noexcept;
  OutputFile& operator=(OutputFile&& o) noexcept;
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  ~OutputFile();

  // Opens `path` for writing, creating it (mode 0644 less the umask) when missing. An empty path
  // gives an object that writes nowhere. IoError naming `flag`, the path and the system's reason.
  static Result<OutputFile> open(const std::string& path, std::string_view flag);

  bool enabled() const { return fd_ >= 0; }
  const std::string& path() const { return path_; }

  // Replaces the file's contents with `text` and closes it (a regular file is truncated first;
  // /dev/stdout and pipes are written to). OK and nothing written when not enabled. IoError naming
  // the path when writing fails. At most one commit per object.
  Status commit(std::string_view text);
  // commit() of `lines`, each followed by a newline.
  Status commit_lines(const std::vector<std::string>& lines);

 private:
  void discard();  // closes, and removes the file when open() created it

  std::string path_;
  int fd_ = -1;
  bool created_ = false;  // open() created the file: remove it unless committed
};

}  // namespace tierkv::bench
