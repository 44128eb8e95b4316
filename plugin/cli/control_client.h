#pragma once

// The client side of the control socket (used by the `autosnap` command and
// tests): one request, one reply, with a deadline.

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "autosnap/errors.h"

namespace autosnap {
namespace control {

class ClientError : public Error {
 public:
  enum class Kind { kNotRunning, kRefused, kTimedOut, kBroken };
  ClientError(Kind kind, const std::string& what) : Error(what), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

/// Sends `request` to the job serving `socket_path` and returns its reply
/// (which may say {"ok": false, ...}). Throws ClientError when there is no
/// job, the connection is refused, or no reply comes within `timeout`.
nlohmann::json send_request(const std::string& socket_path, const nlohmann::json& request,
                            std::chrono::milliseconds timeout);

}  // namespace control
}  // namespace autosnap
