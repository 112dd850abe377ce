// tierkv: the command-line tool. `tierkv <subcommand> --help` for each subcommand's flags; the
// subcommands are listed in subcommands.cc.
#include <CLI/CLI.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/bench_io.h"
#include "subcommands.h"

int main(int argc, char** argv) {
  using tierkv::cli::Runner;
  CLI::App app{"tierkv: a tiered KV cache for LLM inference (GPU, pinned host memory, disk, "
               "Redis)."};
  app.require_subcommand(1, 1);
  std::vector<std::pair<CLI::App*, Runner>> defined;
  for (const tierkv::cli::Subcommand& sc : tierkv::cli::subcommands()) {
    CLI::App* sub = app.add_subcommand(std::string(sc.name), std::string(sc.summary));
    defined.emplace_back(sub, sc.define(*sub));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return tierkv::bench::parse_error_exit(app, e);
  }
  for (auto& [sub, run] : defined) {
    if (sub->parsed()) return run();
  }
  return tierkv::bench::kExitUsage;  // unreachable: require_subcommand(1, 1)
}
