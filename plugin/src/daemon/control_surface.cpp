#include "daemon/control_surface.h"

#include <unistd.h>

#include <algorithm>

#include "autosnap/errors.h"
#include "util/log.h"

namespace autosnap {
namespace daemon {

using nlohmann::json;
using util::log;

ControlSurface::ControlSurface(const Config& config, BackgroundThreads& background, EventLog& events,
                               TriggerPolicy& policy, const SnapshotPipeline& pipeline, bool serve_socket,
                               const Coordinator& coordinator, const SnapshotPipeline* memory_pipeline,
                               const MemoryReplicas* replicas)
    : config_(config),
      events_(events),
      policy_(policy),
      pipeline_(pipeline),
      coordinator_(coordinator),
      memory_pipeline_(memory_pipeline),
      replicas_(replicas) {
  if (serve_socket && config_.control.socket) serve(background);
  listen_for_signals(background);
}

void ControlSurface::serve(BackgroundThreads& background) {
  ControlTarget target;
  target.status = [this] { return status(); };
  target.snapshot = [this](const std::string& reason, ControlReply reply) {
    log()->info("snapshot requested through the control socket ({})", reason);
    policy_.request(reason, [reply](const SnapshotOutcome& outcome) {
      json answer = {{"ok", outcome.committed}, {"step", outcome.step}};
      answer["requested_after_step"] =
          outcome.requested_after_step ? json(*outcome.requested_after_step) : json(nullptr);
      if (outcome.committed) {
        answer["path"] = outcome.path;
      } else {
        answer["error"] = outcome.error;
      }
      reply(answer);
    });
  };
  try {
    server_ =
        std::make_unique<ControlServer>(background.io(), config_.control_socket_path(), std::move(target));
  } catch (const IoError& e) {
    // Training matters more than the socket: say why and go on without it.
    log()->warn("control socket disabled: {}", e.what());
  } catch (const boost::system::system_error& e) {
    log()->warn("control socket disabled: cannot serve '{}': {}", config_.control_socket_path(), e.what());
  }
}

void ControlSurface::listen_for_signals(BackgroundThreads& background) {
  std::vector<int> all = config_.signals.snapshot;
  all.insert(all.end(), config_.signals.snapshot_and_stop.begin(), config_.signals.snapshot_and_stop.end());
  if (all.empty()) return;
  signals_ = std::make_unique<boost::asio::signal_set>(background.io());
  for (int signal_number : all) signals_->add(signal_number);
  wait_for_signal();
}

void ControlSurface::wait_for_signal() {
  // No work in a signal handler: Asio delivers the signal here, on a pool thread.
  signals_->async_wait([this](const boost::system::error_code& error, int signal_number) {
    if (error) return;  // cancelled at shutdown
    on_signal(signal_number);
    wait_for_signal();
  });
}

void ControlSurface::on_signal(int signal_number) {
  const std::string name = signal_name(signal_number);
  const auto& stop_signals = config_.signals.snapshot_and_stop;
  const bool stop = std::find(stop_signals.begin(), stop_signals.end(), signal_number) != stop_signals.end();
  log()->info("{} received: snapshot at the next step boundary{}", name, stop ? ", then stop" : "");
  events_.write("signal", {{"signal", name}, {"stop", stop}});
  policy_.request("signal " + name);
  if (stop) policy_.request_stop();  // after the request: a stop always comes with its snapshot
}

void ControlSurface::stop() {
  if (server_) server_->stop();
  if (signals_) {
    boost::system::error_code ignored;
    signals_->cancel(ignored);
  }
}

json ControlSurface::status() const {
  const auto step = policy_.last_completed_step();
  const auto progress = pipeline_.progress();
  const std::string lost = coordinator_.lost();
  json last = nullptr;
  if (progress.last_committed) {
    last = {{"step", *progress.last_committed}, {"path", progress.last_committed_path}};
  }
  json memory = nullptr;  // no memory tier
  if (memory_pipeline_) {
    const auto tier = memory_pipeline_->progress();
    const std::string off = memory_pipeline_->off_because();
    memory = {{"last_committed", tier.last_committed ? json(*tier.last_committed) : json(nullptr)},
              {"path", tier.last_committed_path},
              {"committed", tier.committed},
              {"skipped", memory_pipeline_->stats().skipped},
              {"off", off.empty() ? json(nullptr) : json(off)}};
    if (replicas_) {
      const std::string replicas_off = replicas_->off_because();
      memory["replicas"] = {{"to", replicas_->holders_text()},
                            {"sent", replicas_->sent()},
                            {"off", replicas_off.empty() ? json(nullptr) : json(replicas_off)}};
    }
  }
  return {{"ok", true},
          {"pid", static_cast<int>(::getpid())},
          {"directory", config_.directory},
          {"step", step ? json(*step) : json(nullptr)},
          {"last_committed", last},
          {"in_flight", progress.in_flight},
          {"committed", progress.committed},
          {"consecutive_failures", progress.consecutive_failures},
          {"last_failure", progress.last_failure.empty() ? json(nullptr) : json(progress.last_failure)},
          {"ranks", coordinator_.world_size()},
          {"lost", lost.empty() ? json(nullptr) : json(lost)},
          {"stopping", policy_.stopping()},
          {"memory", memory}};
}

}  // namespace daemon
}  // namespace autosnap
