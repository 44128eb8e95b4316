#pragma once

// Where this process sits in its job, from the launcher's environment:
// torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
// GROUP_RANK, GROUP_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) first, else
// Slurm's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID, the
// first host of SLURM_JOB_NODELIST, the port from MASTER_PORT or derived
// from SLURM_JOB_ID). Neither: one process.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace autosnap {
namespace cluster {

struct RankInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int node_rank = 0;  ///< GROUP_RANK (torchrun) or SLURM_NODEID
  int nodes = 1;      ///< GROUP_WORLD_SIZE, WORLD_SIZE / LOCAL_WORLD_SIZE, or SLURM_JOB_NODELIST's hosts
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source = "single process";  ///< "torchrun variables", "Slurm", ... for messages
  std::optional<std::string> slurm_job_id;
  std::optional<int> slurm_restart_count;  ///< SLURM_RESTART_COUNT (unset before the first requeue)
  /// What identifies this launch of the job (the launcher's rendezvous, job
  /// id, restart count): ranks meet only ranks of the same launch.
  std::string launch;
};

/// Reads `getenv` (the process environment by default). Error naming the
/// variable and its value when one is malformed or inconsistent (rank out of
/// range, world size < 1, port out of range).
RankInfo discover_rank(const std::function<const char*(const char*)>& getenv = {});

/// "node[01-04,07]" -> "node01"; "a,b" -> "a"; "host" -> "host" (node_list.h).
std::string first_host(const std::string& nodelist);

}  // namespace cluster
}  // namespace autosnap
