#include "replay_plots.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

namespace tierkv::cli::replay {
namespace {

// Runs argv[0] (searched on PATH) and returns its exit status (-1 when it could not run). With
// `quiet`, its stdout and stderr go to /dev/null.
int run(const std::vector<std::string>& args, bool quiet) {
  std::fflush(stdout);
  std::fflush(stderr);
  std::vector<char*> argv;
  for (const std::string& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (quiet) {
      const int null = ::open("/dev/null", O_WRONLY);
      if (null >= 0) {
        ::dup2(null, STDOUT_FILENO);
        ::dup2(null, STDERR_FILENO);
      }
    }
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string command_text(const std::vector<std::string>& args) {
  std::string s;
  for (const std::string& a : args)
    s += (s.empty() ? "" : " ") + a;
  return s;
}

}  // namespace

std::string python_with_matplotlib() {
  for (const char* python : {"python3", "/usr/bin/python3"}) {
    if (run({python, "-c", "import matplotlib"}, true) == 0) return python;
  }
  return "";
}

// Draws the timelines after the first in one more Python process, through the plot script's own
// functions (one process per timeline would import matplotlib each time).
constexpr const char* kMoreTimelines = R"(import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[1])))
import plot_replay as p
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
data = p.load([sys.argv[2]])
for policy, rid in zip(sys.argv[4::2], sys.argv[5::2]):
    recs = [r for r in data["timeline"] if r["policy"] == policy and r["id"] == int(rid)]
    if recs:
        for path in p.plot_timeline(plt, recs, policy, int(rid), sys.argv[3], ["png", "svg"]):
            print("wrote " + path)
)";

Status draw_plots(const std::string& python, const std::string& script, const std::string& jsonl,
                  const std::string& dir,
                  const std::vector<std::pair<std::string, std::int64_t>>& timelines) {
  std::vector<std::string> args{python, script, jsonl, "--out", dir};
  if (!timelines.empty()) {
    args.insert(args.end(), {"--timeline-policy", timelines[0].first, "--timeline-id",
                             std::to_string(timelines[0].second)});
  }
  int rc = run(args, false);
  if (rc != 0) {
    return internal_error("plots: `" + command_text(args) + "` exited with status " +
                          std::to_string(rc));
  }
  if (timelines.size() < 2) return Status::Ok();
  args = {python, "-c", kMoreTimelines, script, jsonl, dir};
  for (std::size_t k = 1; k < timelines.size(); ++k) {
    args.push_back(timelines[k].first);
    args.push_back(std::to_string(timelines[k].second));
  }
  rc = run(args, false);
  if (rc != 0) {
    return internal_error("plots: drawing the other timelines with " + python + " (through " +
                          script + ") exited with status " + std::to_string(rc));
  }
  return Status::Ok();
}

}  // namespace tierkv::cli::replay
