#pragma once

// The control socket server: Boost.Asio local stream sockets on the
// snapshotter's io_context, so nothing here ever runs on the training
// thread. See control_protocol.h for the protocol.

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

namespace autosnap {
namespace daemon {

using ControlReply = std::function<void(const nlohmann::json&)>;

/// What a control client may ask of the job. Both are called on a background
/// thread; `snapshot`'s reply may come later, from any thread, exactly once.
struct ControlTarget {
  std::function<nlohmann::json()> status;
  std::function<void(const std::string& reason, ControlReply reply)> snapshot;
};

/// Answers one request object (ping, status, snapshot; anything else is an
/// error reply) against `target`.
void dispatch_control_request(const nlohmann::json& request, const ControlTarget& target, ControlReply reply);

class ControlServer {
 public:
  /// Binds `path` (mode 0600). A stale socket file left by a dead process is
  /// replaced; one served by a live process is an Error naming its pid; any
  /// other file at `path` is an Error and is left alone.
  ControlServer(boost::asio::io_context& io, std::string path, ControlTarget target);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  /// Stops accepting, closes every connection, removes the socket file.
  void stop();
  const std::string& path() const { return path_; }

  class Session;

 private:
  void accept();
  friend class Session;
  void forget(Session* session);

  boost::asio::io_context& io_;
  std::string path_;
  ControlTarget target_;
  boost::asio::local::stream_protocol::acceptor acceptor_;
  std::mutex mutex_;
  std::set<std::shared_ptr<Session>> sessions_;
  bool stopped_ = false;
  uint64_t inode_ = 0;
};

}  // namespace daemon
}  // namespace autosnap
