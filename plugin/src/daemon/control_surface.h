#pragma once

// What the outside world reaches while a job trains: the control socket
// (status, snapshot requests) and the configured signals (snapshot;
// snapshot and stop). Both only queue requests with the trigger policy;
// the snapshot itself is taken at the next step boundary on the training
// thread. No work runs in a signal handler: Asio delivers signals here.
//
// Thread-safety: constructed and stopped by the daemon's owner; handlers run
// on the background threads.

#include <boost/asio/signal_set.hpp>

#include <memory>
#include <nlohmann/json.hpp>

#include "autosnap/config.h"
#include "daemon/background.h"
#include "daemon/control_server.h"
#include "daemon/coordinator.h"
#include "daemon/event_log.h"
#include "daemon/memory_replicas.h"
#include "daemon/snapshot_pipeline.h"
#include "daemon/trigger_policy.h"

namespace autosnap {
namespace daemon {

class ControlSurface {
 public:
  /// Serves the socket (with `serve_socket`, rank 0's, unless control.socket
  /// is off; a socket that cannot be served is logged and left out, training
  /// matters more) and listens for the configured signals.
  ControlSurface(const Config& config, BackgroundThreads& background, EventLog& events, TriggerPolicy& policy,
                 const SnapshotPipeline& pipeline, bool serve_socket, const Coordinator& coordinator,
                 const SnapshotPipeline* memory_pipeline = nullptr, const MemoryReplicas* replicas = nullptr);
  ~ControlSurface() { stop(); }
  ControlSurface(const ControlSurface&) = delete;
  ControlSurface& operator=(const ControlSurface&) = delete;

  /// Stops serving and listening; handlers already running may still finish.
  void stop();
  /// The reply to {"cmd": "status"}.
  nlohmann::json status() const;

 private:
  void serve(BackgroundThreads& background);
  void listen_for_signals(BackgroundThreads& background);
  void wait_for_signal();
  void on_signal(int signal_number);

  const Config& config_;
  EventLog& events_;
  TriggerPolicy& policy_;
  const SnapshotPipeline& pipeline_;
  const Coordinator& coordinator_;
  const SnapshotPipeline* memory_pipeline_;  // null: no memory tier
  const MemoryReplicas* replicas_;           // null: no replicas configured
  std::unique_ptr<ControlServer> server_;
  std::unique_ptr<boost::asio::signal_set> signals_;
};

}  // namespace daemon
}  // namespace autosnap
