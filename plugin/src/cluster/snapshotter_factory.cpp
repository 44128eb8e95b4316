// The Snapshotter's constructors that look at the job it runs in: the
// launcher's environment decides between one process and a c10d job, and a
// Slurm job can be requeued after a stop. They live in the cluster layer so
// the daemon never sees c10d.
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "autosnap/cluster.h"
#include "autosnap/errors.h"
#include "autosnap/snapshotter.h"
#include "cluster/c10d_coordinator.h"
#include "cluster/gloo_device.h"
#include "cluster/rank_discovery.h"
#include "daemon/snapshotter_impl.h"
#include "util/log.h"

namespace autosnap {
namespace cluster {
namespace {

// `scontrol requeue JOB`: Slurm stops every task of the job and queues it again.
void requeue_slurm_job(const std::string& job_id) {
  const pid_t child = ::fork();
  if (child < 0) throw IoError("start", "scontrol", errno);
  if (child == 0) {
    ::execlp("scontrol", "scontrol", "requeue", job_id.c_str(), static_cast<char*>(nullptr));
    std::fprintf(stderr, "[autosnap] cannot run scontrol: %s\n", std::strerror(errno));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
    throw Error(
        "signals.after_stop: requeue: cannot run `scontrol requeue " + job_id +
        "`: scontrol is not installed or not on PATH (Slurm's client commands, Debian package slurm-client)");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw Error("signals.after_stop: requeue: `scontrol requeue " + job_id + "` failed (exit status " +
                std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)) +
                "); is the job submitted with --requeue?");
  }
}

daemon::JobContext job_context(const Config& config, const std::shared_ptr<const autosnap::JobStore>& lent) {
  daemon::JobContext job;
  const RankInfo info = discover_rank();
  if (info.slurm_job_id) job.labels.emplace_back("slurm_job_id", *info.slurm_job_id);
  if (info.slurm_restart_count)
    job.labels.emplace_back("slurm_restart_count", std::to_string(*info.slurm_restart_count));
  if (info.slurm_job_id) job.requeue = [id = *info.slurm_job_id] { requeue_slurm_job(id); };

  const auto backend = config.distributed.backend;
  if (backend == DistributedBackend::kNone) {
    if (info.world_size > 1) {
      throw ConfigError(config.source + ": distributed.backend: none, but the " + info.source +
                        " say this is rank " + std::to_string(info.rank) + " of " +
                        std::to_string(info.world_size) +
                        "; every rank would write the same files: use backend auto or gloo");
    }
    return job;
  }
  if (backend == DistributedBackend::kAuto && info.world_size == 1) return job;
  C10dCoordinator::Options options;
  options.timeout = std::chrono::seconds(config.distributed.timeout_seconds);
  options.port = config.distributed.port;
  options.directory = config.directory;
  if (lent) options.lent = lent->store;
  const auto start = std::chrono::steady_clock::now();
  auto coordinator = std::make_unique<C10dCoordinator>(info, options);
  util::log()->info("rank {} of {} ({}): coordination group formed in {:.2f} s ({})", info.rank,
                    info.world_size, info.source,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                    coordinator->describe());
  job.coordinator = std::move(coordinator);
  return job;
}

}  // namespace
}  // namespace cluster

std::shared_ptr<::gloo::transport::Device> gloo_device() {
  const auto info = cluster::discover_rank();
  return cluster::choose_gloo_device(info.master_addr, info.nodes == 1).device;
}

Snapshotter Snapshotter::from_config(const std::string& path, const Options& options) {
  return Snapshotter(Config::from_file(path), options);
}

Snapshotter Snapshotter::from_env(const Options& options) {
  const char* path = std::getenv("AUTOSNAP_CONFIG");
  if (path == nullptr || *path == '\0') {
    util::log()->info("AUTOSNAP_CONFIG is not set: snapshots are disabled");
    return disabled();
  }
  return from_config(path, options);
}

Snapshotter::Snapshotter(Config config, const Options& options) {
  FileSystem& fs = options.file_system ? *options.file_system : default_file_system();
  config.check_environment(fs);
  auto job = cluster::job_context(config, options.job_store);
  impl_ = daemon::make_active_snapshotter(std::move(config), fs, std::move(job));
}

}  // namespace autosnap
