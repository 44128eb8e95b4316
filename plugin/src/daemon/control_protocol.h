#pragma once

// The control socket's line protocol, shared by the server (in the training
// process) and the `autosnap` command.
//
// One JSON object per line each way. Requests:
//   {"cmd": "ping"}
//   {"cmd": "status"}
//   {"cmd": "snapshot", "reason": "before upgrade"}   (reason optional)
// Replies: {"ok": true, ...} or {"ok": false, "error": "..."}.
//   ping     -> {"ok": true, "pid": 1234}
//   status   -> {"ok": true, "pid", "directory", "step", "last_committed": {"step", "path"} | null,
//                "in_flight", "committed", "stopping"}
//   snapshot -> sent once the snapshot is committed:
//               {"ok": true, "step": 1200, "path": "...", "requested_after_step": 1199}
// Requests longer than kMaxRequestBytes are refused and the connection closed.
// A client of another uid (unless root) is refused.

#include <cstddef>
#include <string>

#include "autosnap/fs.h"

namespace autosnap {
namespace control {

/// Where a job serves its socket unless control.socket_path says otherwise.
inline std::string default_socket_path(const std::string& directory) {
  return join_path(directory, "control.sock");
}

constexpr size_t kMaxRequestBytes = 4096;
constexpr int kIdleTimeoutSeconds = 30;
constexpr size_t kMaxSessions = 64;

}  // namespace control
}  // namespace autosnap
