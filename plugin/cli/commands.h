#pragma once

// The `autosnap` command's subcommands. Each returns the process exit status
// (see kExit*); errors are thrown as autosnap::Error and reported by main.

#include <cstdint>
#include <optional>
#include <string>

namespace autosnap {
namespace cli {

// Exit statuses, documented in the README and in --help.
constexpr int kExitOk = 0;
constexpr int kExitBad = 1;         // the checked snapshot is bad, there is none, or the snapshot failed
constexpr int kExitUsage = 2;       // bad command line
constexpr int kExitNotRunning = 3;  // no running job serves the directory
constexpr int kExitRefused = 4;     // the job refused the request (permissions)
constexpr int kExitTimedOut = 5;    // no reply in time
constexpr int kExitError = 6;       // the directory cannot be read or changed

int list_snapshots(const std::string& directory, bool json);
int verify_snapshots(const std::string& directory, std::optional<int64_t> step, bool all);
int inspect_snapshot(const std::string& directory, std::optional<int64_t> step, int rank);
int request_snapshot(const std::string& directory, const std::string& socket, const std::string& reason,
                     double timeout_seconds);
int show_status(const std::string& directory, const std::string& socket, bool json);
int print_latest(const std::string& directory, bool fast);
int prune_snapshots(const std::string& directory, int64_t keep_last, int64_t keep_every_steps, bool dry_run);
/// Rank `rank`'s shard (the whole dict) as one torch.save file.
int export_snapshot(const std::string& directory, std::optional<int64_t> step, const std::string& out,
                    int rank);

}  // namespace cli
}  // namespace autosnap
