// autosnap: inspect, verify, prune and export snapshot directories, and ask
// a running job for a snapshot or its status.
#include <CLI/CLI.hpp>

#include <iostream>

#include "autosnap/errors.h"
#include "commands.h"
#include "control_client.h"

namespace {

constexpr const char* kExitCodes =
    "Exit status: 0 ok; 1 the snapshot is bad, there is none, or it failed; 2 bad command line;\n"
    "3 no running job; 4 refused; 5 timed out; 6 the directory cannot be read or changed.";

}  // namespace

int main(int argc, char** argv) {
  using namespace autosnap::cli;
  CLI::App app{"autosnap: look after snapshot directories and talk to running jobs"};
  app.footer(kExitCodes);
  app.require_subcommand(1, 1);

  std::string directory, socket, reason = "manual", out;
  std::optional<int64_t> step;
  bool json = false, all = false, fast = false, dry_run = false;
  double timeout = 600;
  int64_t keep_last = 0, keep_every_steps = 0;
  int rank = 0;
  auto add_dir = [&](CLI::App* command) {
    command->add_option("DIR", directory, "snapshot directory")->required();
  };
  auto add_step = [&](CLI::App* command, const std::string& help) {
    command->add_option("STEP", step, help);
  };

  auto* list =
      app.add_subcommand("list", "Table of the snapshots in DIR: step, epoch, time, size, status, reason");
  add_dir(list);
  list->add_flag("--json", json, "print JSON instead of a table");

  auto* verify =
      app.add_subcommand("verify", "Check every file's size and XXH3-64 checksum (default: the newest)");
  add_dir(verify);
  add_step(verify, "the step to verify");
  verify->add_flag("--all", all, "verify every committed snapshot");

  auto* inspect = app.add_subcommand(
      "inspect", "Manifest fields and the entries of one snapshot (default: newest valid)");
  add_dir(inspect);
  add_step(inspect, "the step to inspect");
  inspect->add_option("--rank", rank, "which rank's shard to show")->check(CLI::NonNegativeNumber);

  auto* snapshot =
      app.add_subcommand("snapshot", "Ask the running job for a snapshot and wait until it is committed");
  add_dir(snapshot);
  snapshot->add_option("--reason", reason, "recorded in the manifest and the event log");
  snapshot->add_option("--timeout", timeout, "seconds to wait for the commit (default 600)")
      ->check(CLI::PositiveNumber);
  snapshot->add_option("--socket", socket, "control socket (default DIR/control.sock)");

  auto* status = app.add_subcommand(
      "status", "The running job's progress (or \"not running\") and the newest valid snapshot");
  add_dir(status);
  status->add_option("--socket", socket, "control socket (default DIR/control.sock)");
  status->add_flag("--json", json, "print JSON");

  auto* latest = app.add_subcommand("latest", "Print the newest valid step (exit 1 when there is none)");
  add_dir(latest);
  latest->add_flag("--fast", fast, "check manifests and sizes only, not checksums");

  auto* prune =
      app.add_subcommand("prune", "Delete old snapshots by a retention rule (never the newest valid one)");
  add_dir(prune);
  prune->add_option("--keep-last", keep_last, "keep the newest N valid snapshots")
      ->required()
      ->check(CLI::PositiveNumber);
  prune->add_option("--keep-every-steps", keep_every_steps, "also keep steps that are multiples of K")
      ->check(CLI::NonNegativeNumber);
  prune->add_flag("--dry-run", dry_run, "only print what would be deleted");

  auto* export_command = app.add_subcommand(
      "export", "Write one rank's dict of a snapshot (rank 0 by default) as a single torch.save file");
  add_dir(export_command);
  add_step(export_command, "the step to export (default: newest valid)");
  export_command->add_option("--out", out, "the .pt file to write (atomically)")->required();
  export_command->add_option("--rank", rank, "which rank's shard to export (default 0)")
      ->check(CLI::NonNegativeNumber);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "autosnap: " << e.what() << " (see autosnap --help)" << std::endl;
    return kExitUsage;
  }

  try {
    if (*list) return list_snapshots(directory, json);
    if (*verify) return verify_snapshots(directory, step, all);
    if (*inspect) return inspect_snapshot(directory, step, rank);
    if (*snapshot) return request_snapshot(directory, socket, reason, timeout);
    if (*status) return show_status(directory, socket, json);
    if (*latest) return print_latest(directory, fast);
    if (*prune) return prune_snapshots(directory, keep_last, keep_every_steps, dry_run);
    if (*export_command) return export_snapshot(directory, step, out, rank);
  } catch (const autosnap::control::ClientError& e) {
    std::cerr << "autosnap: " << e.what() << std::endl;
    switch (e.kind()) {
      case autosnap::control::ClientError::Kind::kNotRunning: return kExitNotRunning;
      case autosnap::control::ClientError::Kind::kRefused: return kExitRefused;
      case autosnap::control::ClientError::Kind::kTimedOut: return kExitTimedOut;
      case autosnap::control::ClientError::Kind::kBroken: return kExitError;
    }
  } catch (const autosnap::CorruptSnapshot& e) {
    std::cerr << "autosnap: " << e.what() << std::endl;
    return kExitBad;
  } catch (const std::exception& e) {
    std::cerr << "autosnap: " << e.what() << std::endl;
    return kExitError;
  }
  return kExitUsage;
}
