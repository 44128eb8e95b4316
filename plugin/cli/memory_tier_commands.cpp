// The memory tier as the command line sees it: what `list` and `status`
// show of this node's memory snapshots, and `clean`.
#include <iostream>

#include "autosnap/fs.h"
#include "commands.h"
#include "daemon/memory_tier.h"
#include "util/human_bytes.h"

namespace autosnap {
namespace cli {

using nlohmann::json;

json memory_tiers_json(const std::string& directory, const std::string& memory_directory) {
  json out = json::array();
  for (const auto& tier : daemon::memory_tiers_of(default_file_system(), memory_directory, directory)) {
    out.push_back({{"path", tier.path},
                   {"job", tier.job},
                   {"steps", tier.steps},
                   {"bytes", tier.bytes},
                   {"held", tier.held},
                   {"disk_newest", tier.disk_newest ? json(*tier.disk_newest) : json(nullptr)}});
  }
  return out;
}

void print_memory_tiers(const std::string& directory, const std::string& memory_directory) {
  for (const auto& tier : daemon::memory_tiers_of(default_file_system(), memory_directory, directory)) {
    std::string steps;
    for (int64_t step : tier.steps) steps += (steps.empty() ? "" : ", ") + std::to_string(step);
    std::cout << "memory tier on this node (job " << tier.job << ", " << util::human_bytes(tier.bytes)
              << (tier.held ? ", in use by a running process" : ", no process holds it")
              << "): " << (steps.empty() ? std::string("no snapshots") : "steps " + steps);
    if (tier.newest() && *tier.newest() > tier.disk_newest.value_or(-1))
      std::cout << " (newer than the disk: the next start on this node resumes from it)";
    std::cout << "\n     " << tier.path << "\n";
  }
}

int clean_memory_tiers(const std::string& memory_directory, bool force, bool dry_run) {
  FileSystem& fs = default_file_system();
  int removed = 0;
  for (const auto& tier : daemon::find_memory_leftovers(fs, memory_directory)) {
    std::string why_not;
    if (tier.held) {
      why_not = "a running process holds it";
    } else if (!tier.removable() && !force) {
      why_not =
          "it holds step " + std::to_string(*tier.newest()) + ", newer than " +
          (tier.directory.empty() ? std::string("its unknown snapshot directory")
                                  : tier.directory + (tier.disk_newest ? " has" : " (which has none)")) +
          "; --force removes it";
    }
    if (!why_not.empty()) {
      std::cout << "kept " << tier.path << ": " << why_not << "\n";
      continue;
    }
    if (!dry_run) remove_tree(fs, tier.path);
    ++removed;
    std::cout << (dry_run ? "would remove " : "removed ") << tier.path << " (job " << tier.job
              << ", snapshot directory " << tier.directory << ", " << util::human_bytes(tier.bytes) << ")\n";
  }
  if (removed == 0)
    std::cout << "nothing to remove in " << daemon::MemoryTier::root(memory_directory) << "\n";
  std::cout << std::flush;
  return kExitOk;
}

}  // namespace cli
}  // namespace autosnap
