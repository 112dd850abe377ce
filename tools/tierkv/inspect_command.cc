// `tierkv inspect DIR`: lists the chunk records of a disk-tier cache directory and verifies each
// one (src/tiers/disk/inspect.h). Read-only. Exit status: 0 when every record verified, 1 when
// some are corrupt or foreign, 2 when the directory cannot be listed.
#include <cstdio>
#include <memory>
#include <string>

#include "common/bench_io.h"
#include "subcommands.h"
#include "tiers/disk/inspect.h"

namespace tierkv::cli {

Runner define_inspect(CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  app.add_option("DIR", *dir, "the cache directory (the disk tier's DiskStoreOptions::directory)")
      ->required();
  app.footer(
      "Prints one line per record (verdict, identity, chunk key, tokens, layers, bytes, file) and "
      "a summary. Takes no lock and removes nothing: it may run beside a store using the "
      "directory.");
  return [dir]() -> int {
    auto report = disk::inspect_disk_directory(*dir);
    if (!report.ok()) {
      return bench::report_error("tierkv inspect", report.status(), bench::kExitUsage);
    }
    disk::print_inspect_report(*report, stdout);
    return report->corrupt + report->foreign == 0 ? 0 : bench::kExitFailure;
  };
}

}  // namespace tierkv::cli
