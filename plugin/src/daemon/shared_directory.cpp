#include "daemon/shared_directory.h"

#include "autosnap/errors.h"
#include "daemon/agreement.h"
#include "fs/unique_suffix.h"

namespace autosnap {
namespace daemon {
namespace {

std::string probe_path(const std::string& directory, const std::string& token, int rank) {
  return join_path(directory, ".probe-" + token + "-rank-" + std::to_string(rank));
}

void remove_quietly(FileSystem& fs, const std::string& path) {
  try {
    fs.remove_file(path);
  } catch (const IoError&) {
    // A probe left behind is harmless: the store ignores names it did not write.
  }
}

}  // namespace

void check_shared_directory(FileSystem& fs, const std::string& directory, Coordinator& coordinator) {
  const int rank = coordinator.rank();
  RankReport report;
  auto cannot_write = [&](const IoError& e) {
    report.state = RankReport::State::kFailed;
    report.problem = "cannot write in the snapshot directory: " + std::string(e.what());
  };
  try {
    if (rank == 0) create_directories(fs, directory, /*durable=*/true);  // as opening the store would
  } catch (const IoError& e) {
    cannot_write(e);
  }
  const std::string token = coordinator.broadcast(unique_suffix(), Channel::kTraining);  // after the mkdir
  const std::string mine = probe_path(directory, token, rank);
  if (report.state == RankReport::State::kReady) {
    try {
      fs.create_exclusive(mine)->close();
    } catch (const IoError& e) {
      cannot_write(e);
    }
  }
  coordinator.barrier(Channel::kTraining);  // every probe is written before anyone looks
  if (rank != 0 && report.state == RankReport::State::kReady && !fs.status(probe_path(directory, token, 0)).exists) {
    report.state = RankReport::State::kFailed;
    report.problem = "cannot see the files of " + coordinator.where(0) + " in " + directory;
  }
  const Verdict verdict = agree(coordinator, Channel::kTraining, report, [&](const std::vector<RankReport>& reports) {
    Verdict v = first_problem(reports, coordinator);
    if (v.kind != Verdict::Kind::kGo) return v;
    std::string unseen;
    for (int r = 1; r < coordinator.world_size(); ++r)
      if (!fs.status(probe_path(directory, token, r)).exists) unseen += (unseen.empty() ? "" : ", ") + coordinator.where(r);
    if (!unseen.empty()) {
      v.kind = Verdict::Kind::kFailed;
      v.why = coordinator.where(0) + " cannot see the files of " + unseen + " in " + directory;
    }
    return v;
  });
  remove_quietly(fs, mine);
  if (verdict.kind != Verdict::Kind::kGo) {
    throw ConfigError(verdict.why +
                      ": the snapshot directory must be on a file system shared by every node of the job "
                      "(each rank writes its shard there and rank 0 commits them together)");
  }
}

}  // namespace daemon
}  // namespace autosnap
