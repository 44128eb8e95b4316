#include "cluster/rank_discovery.h"

#include <cctype>
#include <cstdlib>

#include "autosnap/errors.h"
#include "cluster/node_list.h"

namespace autosnap {
namespace cluster {
namespace {

class Environment {
 public:
  explicit Environment(const std::function<const char*(const char*)>& getenv) : getenv_(getenv) {}

  std::optional<std::string> text(const char* name) const {
    const char* value = getenv_ ? getenv_(name) : std::getenv(name);
    if (value == nullptr || *value == '\0') return std::nullopt;
    return std::string(value);
  }

  std::optional<int64_t> integer(const char* name, int64_t minimum, int64_t maximum) const {
    auto value = text(name);
    if (!value) return std::nullopt;
    size_t end = 0;
    int64_t number = 0;
    try {
      number = std::stoll(*value, &end);
    } catch (const std::exception&) {
      end = 0;
    }
    if (end != value->size() || number < minimum || number > maximum) {
      throw ConfigError("environment variable " + std::string(name) + "='" + *value +
                        "': expected an integer from " + std::to_string(minimum) + " to " +
                        std::to_string(maximum));
    }
    return number;
  }

 private:
  const std::function<const char*(const char*)>& getenv_;
};

}  // namespace

std::string first_host(const std::string& nodelist) {
  return expand_node_list(nodelist, "SLURM_JOB_NODELIST").front();
}

RankInfo discover_rank(const std::function<const char*(const char*)>& getenv) {
  const Environment env(getenv);
  RankInfo info;
  constexpr int64_t kMaxRanks = 1 << 20;
  if (auto world = env.integer("WORLD_SIZE", 1, kMaxRanks)) {
    info.source = "torchrun variables";
    info.world_size = static_cast<int>(*world);
    auto rank = env.integer("RANK", 0, kMaxRanks);
    if (!rank) throw ConfigError("environment variable WORLD_SIZE is set but RANK is not");
    info.rank = static_cast<int>(*rank);
    info.local_rank = static_cast<int>(env.integer("LOCAL_RANK", 0, kMaxRanks).value_or(0));
    info.node_rank = static_cast<int>(env.integer("GROUP_RANK", 0, kMaxRanks).value_or(0));
    if (auto nodes = env.integer("GROUP_WORLD_SIZE", 1, kMaxRanks)) {
      info.nodes = static_cast<int>(*nodes);
    } else if (auto local = env.integer("LOCAL_WORLD_SIZE", 1, kMaxRanks)) {
      info.nodes = static_cast<int>((info.world_size + *local - 1) / *local);
    } else if (info.world_size > 1) {
      info.nodes = 0;  // unknown
    }
    info.master_addr = env.text("MASTER_ADDR").value_or(info.master_addr);
    info.master_port = static_cast<int>(env.integer("MASTER_PORT", 1, 65535).value_or(info.master_port));
  } else if (auto tasks = env.integer("SLURM_NTASKS", 1, kMaxRanks)) {
    info.source = "Slurm";
    info.world_size = static_cast<int>(*tasks);
    info.rank = static_cast<int>(env.integer("SLURM_PROCID", 0, kMaxRanks).value_or(0));
    info.local_rank = static_cast<int>(env.integer("SLURM_LOCALID", 0, kMaxRanks).value_or(0));
    info.node_rank = static_cast<int>(env.integer("SLURM_NODEID", 0, kMaxRanks).value_or(0));
    if (auto nodes = env.text("SLURM_JOB_NODELIST")) {
      const auto hosts = expand_node_list(*nodes, "environment variable SLURM_JOB_NODELIST");
      info.master_addr = hosts.front();
      info.nodes = static_cast<int>(hosts.size());
    }
    if (auto nodes = env.integer("SLURM_STEP_NUM_NODES", 1, kMaxRanks)) info.nodes = static_cast<int>(*nodes);
    if (auto port = env.integer("MASTER_PORT", 1, 65535)) {
      info.master_port = static_cast<int>(*port);
    } else if (auto job = env.integer("SLURM_JOB_ID", 0, INT64_MAX)) {
      // Jobs sharing a node get different ports (the formula scripts/slurm/train.sbatch uses
      // too), below Linux's ephemeral range (32768-60999) where Gloo's sockets listen.
      info.master_port = static_cast<int>(20000 + (*job % 6000) * 2);
    }
  }
  info.slurm_job_id = env.text("SLURM_JOB_ID");
  if (auto restarts = env.integer("SLURM_RESTART_COUNT", 0, INT32_MAX))
    info.slurm_restart_count = static_cast<int>(*restarts);
  for (const char* name : {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "TORCHELASTIC_RUN_ID",
                           "TORCHELASTIC_RESTART_COUNT", "SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_RESTART_COUNT"}) {
    if (auto value = env.text(name)) info.launch += std::string(name) + "=" + *value + ";";
  }
  if (info.rank >= info.world_size) {
    throw ConfigError("rank " + std::to_string(info.rank) + " from the " + info.source +
                      " is not below the world size " + std::to_string(info.world_size));
  }
  return info;
}

}  // namespace cluster
}  // namespace autosnap
