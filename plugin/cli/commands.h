#pragma once

// The `autosnap` command's subcommands. Each returns the process exit status
// (see kExit*); errors are thrown as autosnap::Error and reported by main.

#include <cstdint>
#include <nlohmann/json.hpp>
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

/// `memory_directory`: where memory tiers live on this node (config memory.directory).
int list_snapshots(const std::string& directory, bool json, const std::string& memory_directory);
int verify_snapshots(const std::string& directory, std::optional<int64_t> step, bool all);
int inspect_snapshot(const std::string& directory, std::optional<int64_t> step, int rank);
int request_snapshot(const std::string& directory, const std::string& socket, const std::string& reason,
                     double timeout_seconds);
int show_status(const std::string& directory, const std::string& socket, bool json,
                const std::string& memory_directory);
int print_latest(const std::string& directory, bool fast);
int prune_snapshots(const std::string& directory, int64_t keep_last, int64_t keep_every_steps, bool dry_run);
/// Rank `rank`'s shard (the whole dict) as one torch.save file.
int export_snapshot(const std::string& directory, std::optional<int64_t> step, const std::string& out,
                    int rank);

// The memory tier on this node (memory_tier_commands.cpp).
/// DIR's memory tiers here (any job), for list and status.
nlohmann::json memory_tiers_json(const std::string& directory, const std::string& memory_directory);
void print_memory_tiers(const std::string& directory, const std::string& memory_directory);
/// Removes memory tiers no process holds whose snapshot directory has all
/// their steps (with `force`: also the others).
int clean_memory_tiers(const std::string& memory_directory, bool force, bool dry_run);

}  // namespace cli
}  // namespace autosnap
