// autosnap: inspect, verify, prune and export snapshot directories, and ask
// a running job for a snapshot or its status.
#include <CLI/CLI.hpp>

#include <iostream>
#include <optional>
#include <string>

#include "autosnap/errors.h"
#include "commands.h"
#include "control_client.h"

namespace {

constexpr const char* kExitCodes =
    "Exit status: 0 ok; 1 the snapshot is bad, there is none, or it failed; 2 bad command line;\n"
    "3 no running job; 4 refused; 5 timed out; 6 the directory cannot be read or changed.";

// The command line, as parsed.
struct Arguments {
  std::string directory, socket, reason = "manual", out, memory_directory = "/dev/shm";
  std::optional<int64_t> step;
  bool json = false, all = false, fast = false, dry_run = false, force = false;
  double timeout = 600;
  int64_t keep_last = 0, keep_every_steps = 0;
  int rank = 0;
};

void define_commands(CLI::App& app, Arguments& a) {
  auto add_dir = [&](CLI::App* command) {
    command->add_option("DIR", a.directory, "snapshot directory")->required();
  };
  auto add_step = [&](CLI::App* command, const std::string& help) {
    command->add_option("STEP", a.step, help);
  };

  auto* list =
      app.add_subcommand("list", "Table of the snapshots in DIR: step, epoch, time, size, status, reason");
  add_dir(list);
  list->add_flag("--json", a.json, "print JSON instead of a table");
  auto add_memory_dir = [&](CLI::App* command) {
    command->add_option("--memory-dir", a.memory_directory,
                        "where memory tiers live on this node (config memory.directory; default /dev/shm)");
  };
  add_memory_dir(list);

  auto* verify =
      app.add_subcommand("verify", "Check every file's size and XXH3-64 checksum (default: the newest)");
  add_dir(verify);
  add_step(verify, "the step to verify");
  verify->add_flag("--all", a.all, "verify every committed snapshot");

  auto* inspect = app.add_subcommand(
      "inspect", "Manifest fields and the entries of one snapshot (default: newest valid)");
  add_dir(inspect);
  add_step(inspect, "the step to inspect");
  inspect->add_option("--rank", a.rank, "which rank's shard to show")->check(CLI::NonNegativeNumber);

  auto* snapshot =
      app.add_subcommand("snapshot", "Ask the running job for a snapshot and wait until it is committed");
  add_dir(snapshot);
  snapshot->add_option("--reason", a.reason, "recorded in the manifest and the event log");
  snapshot->add_option("--timeout", a.timeout, "seconds to wait for the commit (default 600)")
      ->check(CLI::PositiveNumber);
  snapshot->add_option("--socket", a.socket, "control socket (default DIR/control.sock)");

  auto* status = app.add_subcommand(
      "status", "The running job's progress (or \"not running\") and the newest valid snapshot");
  add_dir(status);
  status->add_option("--socket", a.socket, "control socket (default DIR/control.sock)");
  status->add_flag("--json", a.json, "print JSON");
  add_memory_dir(status);

  auto* latest = app.add_subcommand("latest", "Print the newest valid step (exit 1 when there is none)");
  add_dir(latest);
  latest->add_flag("--fast", a.fast, "check manifests and sizes only, not checksums");

  auto* prune =
      app.add_subcommand("prune", "Delete old snapshots by a retention rule (never the newest valid one)");
  add_dir(prune);
  prune->add_option("--keep-last", a.keep_last, "keep the newest N valid snapshots")
      ->required()
      ->check(CLI::PositiveNumber);
  prune->add_option("--keep-every-steps", a.keep_every_steps, "also keep steps that are multiples of K")
      ->check(CLI::NonNegativeNumber);
  prune->add_flag("--dry-run", a.dry_run, "only print what would be deleted");

  auto* export_command = app.add_subcommand(
      "export", "Write one rank's dict of a snapshot (rank 0 by default) as a single torch.save file");
  add_dir(export_command);
  add_step(export_command, "the step to export (default: newest valid)");
  export_command->add_option("--out", a.out, "the .pt file to write (atomically)")->required();
  export_command->add_option("--rank", a.rank, "which rank's shard to export (default 0)")
      ->check(CLI::NonNegativeNumber);

  auto* clean = app.add_subcommand(
      "clean",
      "Remove memory-tier files on this node that no process holds and whose disk has all their steps");
  add_memory_dir(clean);
  clean->add_flag("--force", a.force, "also remove those that hold steps newer than their disk (lost then)");
  clean->add_flag("--dry-run", a.dry_run, "only print what would be removed");
}

// "autosnap frobnicate": CLI11 would only say that a subcommand is required.
std::optional<std::string> unknown_command(CLI::App& app, int argc, char** argv) {
  if (argc < 2 || argv[1][0] == '-') return std::nullopt;
  std::string names;
  for (const auto* command : app.get_subcommands([](const CLI::App*) { return true; })) {
    if (command->get_name() == argv[1]) return std::nullopt;
    names += (names.empty() ? "" : ", ") + command->get_name();
  }
  return "unknown command '" + std::string(argv[1]) + "'; the commands are " + names;
}

int run(CLI::App& app, const Arguments& a) {
  using namespace autosnap::cli;
  auto chosen = [&](const char* name) { return app.got_subcommand(name); };
  if (chosen("list")) return list_snapshots(a.directory, a.json, a.memory_directory);
  if (chosen("verify")) return verify_snapshots(a.directory, a.step, a.all);
  if (chosen("inspect")) return inspect_snapshot(a.directory, a.step, a.rank);
  if (chosen("snapshot")) return request_snapshot(a.directory, a.socket, a.reason, a.timeout);
  if (chosen("status")) return show_status(a.directory, a.socket, a.json, a.memory_directory);
  if (chosen("latest")) return print_latest(a.directory, a.fast);
  if (chosen("prune")) return prune_snapshots(a.directory, a.keep_last, a.keep_every_steps, a.dry_run);
  if (chosen("export")) return export_snapshot(a.directory, a.step, a.out, a.rank);
  if (chosen("clean")) return clean_memory_tiers(a.memory_directory, a.force, a.dry_run);
  return kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace autosnap::cli;
  CLI::App app{"autosnap: look after snapshot directories and talk to running jobs"};
  app.footer(kExitCodes);
  app.require_subcommand(1, 1);
  Arguments arguments;
  define_commands(app, arguments);
  if (auto unknown = unknown_command(app, argc, argv)) {
    std::cerr << "autosnap: " << *unknown << " (see autosnap --help)" << std::endl;
    return kExitUsage;
  }
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
    return run(app, arguments);
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
  } catch (const autosnap::UnsupportedFormat& e) {  // not damaged, but not readable by this build either
    std::cerr << "autosnap: " << e.what() << std::endl;
    return kExitBad;
  } catch (const std::exception& e) {
    std::cerr << "autosnap: " << e.what() << std::endl;
    return kExitError;
  }
  return kExitUsage;
}
