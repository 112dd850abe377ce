// The subcommands of the `tierkv` tool.
//
// Each subcommand lives in its own file and is one function, `define`, that adds the subcommand's
// flags to the CLI11 app it is given and returns what runs it once the command line is parsed. The
// table in subcommands.cc lists them in the order `tierkv --help` shows them; main.cc registers
// every entry of the table and runs the one named on the command line. Adding a subcommand adds a
// file and one row of the table; nothing else changes.
//
// A subcommand's runner returns the process's exit status, with one meaning for each code in every
// subcommand (tools/common/bench_io.h): 0 success, 1 (kExitFailure) a failure while running or a
// wrong result, 2 (kExitUsage) a command line that cannot be done here, found before any work.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <span>
#include <string_view>

namespace tierkv::cli {

// Runs a parsed subcommand; returns the exit status.
using Runner = std::function<int()>;

struct Subcommand {
  std::string_view name;     // as typed: `tierkv <name> ...`
  std::string_view summary;  // one line for `tierkv --help`
  // Adds the flags to `app` (the subcommand's own app; it outlives the runner) and returns the
  // runner. Called once, before parsing.
  Runner (*define)(CLI::App& app);
};

// The table (subcommands.cc).
std::span<const Subcommand> subcommands();

// The subcommands, one file each.
Runner define_replay(CLI::App& app);   // replay_command.cc
Runner define_inspect(CLI::App& app);  // inspect_command.cc
Runner define_calibrate(CLI::App& app);  // calibrate_command.cc

}  // namespace tierkv::cli
